"""Application Auto Scaling for an endpoint variant.

Real-time: target tracking on ``SageMakerVariantInvocationsPerInstance`` (invocations per
instance per minute; default 70, as the guide says; ``stygig advise`` prints the target that
matches the measured throughput). Asynchronous: scale to zero, the pattern AWS documents:
minimum capacity 0, target tracking on ``ApproximateBacklogSizePerInstance``, and a step
policy driven by a ``HasBacklogWithoutCapacity`` alarm that starts the first instance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stygig.deploy.sagemaker import call
from stygig.errors import InvalidOptionsError

__all__ = ["Scaling", "enable_async_scaling", "enable_autoscaling", "resource_id"]

DIMENSION = "sagemaker:variant:DesiredInstanceCount"


@dataclass(frozen=True)
class Scaling:
    """Bounds and target of a variant's autoscaling."""

    min_instances: int = 1
    max_instances: int = 4
    target: float = 70.0
    scale_in_cooldown_s: int = 300
    scale_out_cooldown_s: int = 60

    def __post_init__(self) -> None:
        if self.min_instances < 0 or self.max_instances < max(1, self.min_instances):
            raise InvalidOptionsError("need 0 <= --min-instances <= --max-instances, max >= 1")
        if self.target <= 0:
            raise InvalidOptionsError("the scaling target must be > 0")


def resource_id(endpoint_name: str, variant_name: str) -> str:
    """Application Auto Scaling's id of an endpoint variant."""
    return f"endpoint/{endpoint_name}/variant/{variant_name}"


def _register(aas: Any, rid: str, scaling: Scaling) -> None:
    call(
        aas,
        "register_scalable_target",
        ServiceNamespace="sagemaker",
        ResourceId=rid,
        ScalableDimension=DIMENSION,
        MinCapacity=scaling.min_instances,
        MaxCapacity=scaling.max_instances,
    )


def _target_tracking(
    aas: Any, name: str, rid: str, scaling: Scaling, metric: dict[str, Any]
) -> None:
    """A target-tracking policy at ``scaling.target`` on ``metric`` (a metric specification)."""
    call(
        aas,
        "put_scaling_policy",
        PolicyName=name,
        ServiceNamespace="sagemaker",
        ResourceId=rid,
        ScalableDimension=DIMENSION,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": float(scaling.target),
            **metric,
            "ScaleInCooldown": scaling.scale_in_cooldown_s,
            "ScaleOutCooldown": scaling.scale_out_cooldown_s,
        },
    )


def enable_autoscaling(aas: Any, endpoint_name: str, variant_name: str, scaling: Scaling) -> str:
    """Register the variant and attach target tracking on invocations per instance."""
    if scaling.min_instances < 1:
        raise InvalidOptionsError("a real-time endpoint needs --min-instances >= 1")
    rid = resource_id(endpoint_name, variant_name)
    _register(aas, rid, scaling)
    name = f"{endpoint_name}-invocations-per-instance"
    _target_tracking(
        aas,
        name,
        rid,
        scaling,
        {
            "PredefinedMetricSpecification": {
                "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
            }
        },
    )
    return name


def enable_async_scaling(
    aas: Any, cloudwatch: Any, endpoint_name: str, variant_name: str, scaling: Scaling
) -> list[str]:
    """Scale-to-zero for an async endpoint: backlog tracking plus a wake-up step policy."""
    rid = resource_id(endpoint_name, variant_name)
    _register(aas, rid, scaling)
    dims = [{"Name": "EndpointName", "Value": endpoint_name}]
    backlog = f"{endpoint_name}-backlog-per-instance"
    _target_tracking(
        aas,
        backlog,
        rid,
        scaling,
        {
            "CustomizedMetricSpecification": {
                "MetricName": "ApproximateBacklogSizePerInstance",
                "Namespace": "AWS/SageMaker",
                "Dimensions": dims,
                "Statistic": "Average",
            }
        },
    )
    wake = f"{endpoint_name}-wake-from-zero"
    policy = call(
        aas,
        "put_scaling_policy",
        PolicyName=wake,
        ServiceNamespace="sagemaker",
        ResourceId=rid,
        ScalableDimension=DIMENSION,
        PolicyType="StepScaling",
        StepScalingPolicyConfiguration={
            "AdjustmentType": "ChangeInCapacity",
            "MetricAggregationType": "Average",
            "Cooldown": scaling.scale_out_cooldown_s,
            "StepAdjustments": [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}],
        },
    )
    call(
        cloudwatch,
        "put_metric_alarm",
        AlarmName=f"{endpoint_name}-has-backlog-without-capacity",
        MetricName="HasBacklogWithoutCapacity",
        Namespace="AWS/SageMaker",
        Dimensions=dims,
        Statistic="Average",
        Period=60,
        EvaluationPeriods=2,
        DatapointsToAlarm=2,
        Threshold=1.0,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
        TreatMissingData="missing",
        AlarmActions=[policy["PolicyARN"]],
    )
    return [backlog, wake]

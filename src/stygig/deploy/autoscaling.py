"""Application Auto Scaling for an endpoint variant.

Real-time: target tracking on ``SageMakerVariantInvocationsPerInstance`` (invocations per
instance per minute; default 70, as the guide says; ``stygig advise`` prints the target that
matches the measured throughput). Asynchronous: scale to zero, the pattern AWS documents:
minimum capacity 0, target tracking on ``ApproximateBacklogSizePerInstance``, and a step
policy driven by a ``HasBacklogWithoutCapacity`` alarm that starts the first instance.

Blue/green moves scaling between variants: :func:`read_scaling` takes a variant's bounds and
policies, :func:`apply_scaling` puts the same on another variant (and points the alarms that
drove the old policies at the new ones as well), :func:`remove_scaling` takes a variant's off
(policies, alarm actions, scalable target), as AWS requires before the variant is dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from stygig.deploy.alarms import alarm_definition, endpoint_alarms
from stygig.deploy.sagemaker import call
from stygig.errors import InvalidOptionsError

__all__ = [
    "Scaling",
    "ScalingState",
    "apply_scaling",
    "enable_async_scaling",
    "enable_autoscaling",
    "endpoint_scaled_variants",
    "read_scaling",
    "remove_endpoint_scaling",
    "remove_scaling",
    "resource_id",
]

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
        if not (math.isfinite(self.target) and self.target > 0):  # NaN passed "<= 0"
            raise InvalidOptionsError("the scaling target must be a number > 0")


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


# The fields of a described policy that PutScalingPolicy takes back.
_POLICY_CONFIGS = ("TargetTrackingScalingPolicyConfiguration", "StepScalingPolicyConfiguration")
_TRACKING_KEYS = (
    "TargetValue",
    "PredefinedMetricSpecification",
    "CustomizedMetricSpecification",
    "ScaleOutCooldown",
    "ScaleInCooldown",
    "DisableScaleIn",
)


@dataclass(frozen=True)
class ScalingState:
    """A variant's scaling as AWS describes it: bounds and the policies on it."""

    min_capacity: int
    max_capacity: int
    policies: tuple[dict[str, Any], ...]


def _policies(aas: Any, rid: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    token: dict[str, str] = {}
    while True:
        page = call(
            aas,
            "describe_scaling_policies",
            ServiceNamespace="sagemaker",
            ResourceId=rid,
            ScalableDimension=DIMENSION,
            **token,
        )
        # Filter on the exact id: a listing by ResourceId is not an exact match everywhere.
        found += [p for p in page.get("ScalingPolicies", []) if p.get("ResourceId") == rid]
        if not page.get("NextToken"):
            return found
        token = {"NextToken": page["NextToken"]}


def read_scaling(aas: Any, endpoint_name: str, variant_name: str) -> ScalingState | None:
    """The variant's scalable target and policies; None when it does not autoscale."""
    rid = resource_id(endpoint_name, variant_name)
    targets = call(
        aas,
        "describe_scalable_targets",
        ServiceNamespace="sagemaker",
        ResourceIds=[rid],
        ScalableDimension=DIMENSION,
    ).get("ScalableTargets", [])
    target = next((t for t in targets if t.get("ResourceId") == rid), None)
    if target is None:
        return None
    return ScalingState(
        int(target["MinCapacity"]), int(target["MaxCapacity"]), tuple(_policies(aas, rid))
    )


def _policy_body(policy: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {"PolicyType": policy["PolicyType"]}
    for key in _POLICY_CONFIGS:
        if key in policy:
            config = dict(policy[key])
            if key.startswith("TargetTracking"):
                config = {k: v for k, v in config.items() if k in _TRACKING_KEYS}
            body[key] = config
    return body


def _repoint(cloudwatch: Any, endpoint_name: str, arns: dict[str, str | None]) -> list[str]:
    """In the endpoint's alarms, add (``old -> new``) or drop (``old -> None``) actions.

    An alarm left with no action that only drove policies (the async wake-up alarm) is
    deleted; the names touched are returned as ``updated X`` / ``deleted alarm X``.
    """
    done = []
    for alarm in endpoint_alarms(cloudwatch, endpoint_name):
        actions = list(alarm.get("AlarmActions") or [])
        if not any(a in arns for a in actions):
            continue
        new: list[str] = []
        for action in actions:
            if action not in arns:
                new.append(action)
            elif (replacement := arns[action]) is not None:
                new += [action, replacement]
        new = list(dict.fromkeys(new))
        if not new and not alarm.get("OKActions"):
            call(cloudwatch, "delete_alarms", AlarmNames=[alarm["AlarmName"]])
            done.append(f"alarm {alarm['AlarmName']}")
            continue
        definition = alarm_definition(alarm)
        definition["AlarmActions"] = new
        call(cloudwatch, "put_metric_alarm", **definition)
    return done


def apply_scaling(
    aas: Any, cloudwatch: Any, endpoint_name: str, variant_name: str, state: ScalingState
) -> None:
    """Give ``variant_name`` the bounds and policies of ``state`` (read from another variant).

    Alarms that drove one of the source's policies (the async wake-up alarm) drive the new
    variant's copy too.
    """
    rid = resource_id(endpoint_name, variant_name)
    call(
        aas,
        "register_scalable_target",
        ServiceNamespace="sagemaker",
        ResourceId=rid,
        ScalableDimension=DIMENSION,
        MinCapacity=state.min_capacity,
        MaxCapacity=state.max_capacity,
    )
    arns: dict[str, str | None] = {}
    for policy in state.policies:
        made = call(
            aas,
            "put_scaling_policy",
            PolicyName=policy["PolicyName"],
            ServiceNamespace="sagemaker",
            ResourceId=rid,
            ScalableDimension=DIMENSION,
            **_policy_body(policy),
        )
        if policy.get("PolicyARN") and made.get("PolicyARN"):
            arns[policy["PolicyARN"]] = made["PolicyARN"]
    if arns:
        _repoint(cloudwatch, endpoint_name, arns)


def remove_scaling(aas: Any, cloudwatch: Any, endpoint_name: str, variant_name: str) -> list[str]:
    """Take the variant's scaling off: alarm actions, policies, scalable target; what went."""
    state = read_scaling(aas, endpoint_name, variant_name)
    if state is None:
        return []
    rid = resource_id(endpoint_name, variant_name)
    arns: dict[str, str | None] = {p["PolicyARN"]: None for p in state.policies if "PolicyARN" in p}
    done = _repoint(cloudwatch, endpoint_name, arns) if arns else []
    for policy in state.policies:
        call(
            aas,
            "delete_scaling_policy",
            PolicyName=policy["PolicyName"],
            ServiceNamespace="sagemaker",
            ResourceId=rid,
            ScalableDimension=DIMENSION,
        )
        done.append(f"scaling policy {policy['PolicyName']} of {variant_name}")
    call(
        aas,
        "deregister_scalable_target",
        ServiceNamespace="sagemaker",
        ResourceId=rid,
        ScalableDimension=DIMENSION,
    )
    done.append(f"scalable target {rid}")
    return done


def endpoint_scaled_variants(aas: Any, endpoint_name: str) -> list[str]:
    """The endpoint's variants that are scalable targets."""
    prefix = resource_id(endpoint_name, "")
    variants: list[str] = []
    token: dict[str, str] = {}
    while True:
        page = call(
            aas,
            "describe_scalable_targets",
            ServiceNamespace="sagemaker",
            ScalableDimension=DIMENSION,
            **token,
        )
        for target in page.get("ScalableTargets", []):
            rid = str(target.get("ResourceId", ""))
            if rid.startswith(prefix) and "/" not in rid[len(prefix) :]:
                variants.append(rid[len(prefix) :])
        if not page.get("NextToken"):
            return variants
        token = {"NextToken": page["NextToken"]}


def remove_endpoint_scaling(aas: Any, cloudwatch: Any, endpoint_name: str) -> list[str]:
    """:func:`remove_scaling` for every scaled variant of the endpoint (live or left over)."""
    done: list[str] = []
    for variant in endpoint_scaled_variants(aas, endpoint_name):
        done += remove_scaling(aas, cloudwatch, endpoint_name, variant)
    return done

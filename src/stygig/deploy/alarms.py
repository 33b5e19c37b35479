"""CloudWatch alarms for an endpoint variant: model latency, 4XX rate, 5XX rate.

SageMaker reports ``Invocation4XXErrors`` and ``Invocation5XXErrors`` as 0 or 1 per
invocation, so their ``Average`` over a period is the error rate; ``ModelLatency`` is in
microseconds, hence the conversion from the milliseconds on the command line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stygig.deploy.sagemaker import call

__all__ = ["AlarmThresholds", "create_alarms"]


@dataclass(frozen=True)
class AlarmThresholds:
    """When to alarm: p99 model latency, and the share of 4XX and 5XX answers."""

    latency_p99_ms: float = 1000.0
    rate_4xx: float = 0.05
    rate_5xx: float = 0.01
    period_s: int = 60
    evaluation_periods: int = 5


def create_alarms(
    cloudwatch: Any,
    endpoint_name: str,
    variant_name: str,
    thresholds: AlarmThresholds,
    topic_arn: str | None = None,
) -> list[str]:
    """Put the three alarms (idempotent: same names overwrite); their names."""
    dims = [
        {"Name": "EndpointName", "Value": endpoint_name},
        {"Name": "VariantName", "Value": variant_name},
    ]
    actions = {"AlarmActions": [topic_arn], "OKActions": [topic_arn]} if topic_arn else {}
    common = {
        "Namespace": "AWS/SageMaker",
        "Dimensions": dims,
        "Period": thresholds.period_s,
        "EvaluationPeriods": thresholds.evaluation_periods,
        "ComparisonOperator": "GreaterThanThreshold",
        "TreatMissingData": "notBreaching",
        **actions,
    }
    specs: list[tuple[str, dict[str, Any]]] = [
        (
            "model-latency-p99",
            {
                "MetricName": "ModelLatency",
                "ExtendedStatistic": "p99",
                "Threshold": thresholds.latency_p99_ms * 1000.0,
                "Unit": "Microseconds",
            },
        ),
        (
            "4xx-rate",
            {
                "MetricName": "Invocation4XXErrors",
                "Statistic": "Average",
                "Threshold": thresholds.rate_4xx,
            },
        ),
        (
            "5xx-rate",
            {
                "MetricName": "Invocation5XXErrors",
                "Statistic": "Average",
                "Threshold": thresholds.rate_5xx,
            },
        ),
    ]
    names = []
    for suffix, spec in specs:
        name = f"{endpoint_name}-{variant_name}-{suffix}"
        call(
            cloudwatch,
            "put_metric_alarm",
            AlarmName=name,
            AlarmDescription=f"stygig: {suffix} of {endpoint_name}/{variant_name}",
            **common,
            **spec,
        )
        names.append(name)
    return names

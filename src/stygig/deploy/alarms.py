"""CloudWatch alarms for an endpoint variant: model latency, 4XX rate, 5XX rate.

SageMaker reports ``Invocation4XXErrors`` and ``Invocation5XXErrors`` as 0 or 1 per
invocation, so their ``Average`` over a period is the error rate; ``ModelLatency`` is in
microseconds, hence the conversion from the milliseconds on the command line.

An alarm belongs to an endpoint when its name starts with ``<endpoint>-`` and its
``EndpointName`` dimension is the endpoint (:func:`endpoint_alarms`); blue/green moves a
variant's alarms to the variant kept (:func:`move_alarms`), ``deploy delete`` deletes them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stygig.deploy.sagemaker import call

__all__ = [
    "AlarmThresholds",
    "alarm_definition",
    "create_alarms",
    "delete_endpoint_alarms",
    "endpoint_alarms",
    "move_alarms",
]

# The fields of a described alarm that PutMetricAlarm takes back.
_ALARM_FIELDS = (
    "AlarmName",
    "AlarmDescription",
    "ActionsEnabled",
    "OKActions",
    "AlarmActions",
    "InsufficientDataActions",
    "MetricName",
    "Namespace",
    "Statistic",
    "ExtendedStatistic",
    "Dimensions",
    "Period",
    "Unit",
    "EvaluationPeriods",
    "DatapointsToAlarm",
    "Threshold",
    "ComparisonOperator",
    "TreatMissingData",
    "EvaluateLowSampleCountPercentile",
    "Metrics",
    "ThresholdMetricId",
)


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


def _dimension(alarm: dict[str, Any], name: str) -> str | None:
    for dim in alarm.get("Dimensions") or []:
        if dim.get("Name") == name:
            return str(dim.get("Value"))
    return None


def endpoint_alarms(cloudwatch: Any, endpoint_name: str) -> list[dict[str, Any]]:
    """The endpoint's alarms: named ``<endpoint>-...``, on its ``EndpointName`` dimension."""
    found: list[dict[str, Any]] = []
    token: dict[str, str] = {}
    while True:
        page = call(cloudwatch, "describe_alarms", AlarmNamePrefix=f"{endpoint_name}-", **token)
        found += [
            a
            for a in page.get("MetricAlarms", [])
            if _dimension(a, "EndpointName") == endpoint_name
        ]
        if not page.get("NextToken"):
            return found
        token = {"NextToken": page["NextToken"]}


def alarm_definition(alarm: dict[str, Any]) -> dict[str, Any]:
    """A described alarm as ``PutMetricAlarm`` arguments (empty fields left out)."""
    return {k: alarm[k] for k in _ALARM_FIELDS if alarm.get(k) not in (None, [], "")}


def _metric_key(alarm: dict[str, Any]) -> tuple[str, str]:
    return str(alarm.get("MetricName")), str(
        alarm.get("ExtendedStatistic") or alarm.get("Statistic")
    )


def move_alarms(
    cloudwatch: Any, endpoint_name: str, from_variant: str, to_variant: str
) -> list[str]:
    """Recreate ``from_variant``'s alarms on ``to_variant`` (same thresholds), delete them.

    Where ``to_variant`` already has an alarm on the same metric and statistic, its own is
    kept. Returns the names of the alarms created.
    """
    alarms = endpoint_alarms(cloudwatch, endpoint_name)
    old = [a for a in alarms if _dimension(a, "VariantName") == from_variant]
    present = {_metric_key(a) for a in alarms if _dimension(a, "VariantName") == to_variant}
    made = []
    for alarm in old:
        if _metric_key(alarm) in present:
            continue
        definition = alarm_definition(alarm)
        prefix = f"{endpoint_name}-{from_variant}-"
        name = str(alarm["AlarmName"])
        definition["AlarmName"] = (
            f"{endpoint_name}-{to_variant}-{name[len(prefix) :]}"
            if name.startswith(prefix)
            else f"{name}-{to_variant}"
        )
        if "AlarmDescription" in definition:
            definition["AlarmDescription"] = str(definition["AlarmDescription"]).replace(
                f"/{from_variant}", f"/{to_variant}"
            )
        definition["Dimensions"] = [
            {"Name": "VariantName", "Value": to_variant} if d.get("Name") == "VariantName" else d
            for d in alarm["Dimensions"]
        ]
        call(cloudwatch, "put_metric_alarm", **definition)
        made.append(definition["AlarmName"])
    names = [str(a["AlarmName"]) for a in old]
    for start in range(0, len(names), 100):
        call(cloudwatch, "delete_alarms", AlarmNames=names[start : start + 100])
    return made


def delete_endpoint_alarms(cloudwatch: Any, endpoint_name: str) -> list[str]:
    """Delete every alarm of the endpoint (its variants' and the async wake-up alarm)."""
    names = [str(a["AlarmName"]) for a in endpoint_alarms(cloudwatch, endpoint_name)]
    for start in range(0, len(names), 100):
        call(cloudwatch, "delete_alarms", AlarmNames=names[start : start + 100])
    return [f"alarm {n}" for n in names]

"""What CloudWatch saw of an endpoint: invocations, errors and latencies per variant.

``stygig invoke --report`` reads, for each production variant, from the ``AWS/SageMaker``
namespace over one window (one period spanning it, so a percentile is the window's):

* ``Invocations``, ``Invocation4XXErrors``, ``Invocation5XXErrors`` (Sum);
* ``ModelLatency`` (the container's time) and ``OverheadLatency`` (SageMaker's own time),
  p50, p99 and Average, published in microseconds and shown in milliseconds.

One ``GetMetricData`` call per page of queries. SageMaker publishes once a minute, a minute or
two late: after a load test :func:`wait_for_metrics` polls until the invocations counted cover
the requests sent, or a deadline passes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

__all__ = [
    "LATENCIES",
    "VariantMetrics",
    "format_metrics",
    "metric_window",
    "read_endpoint_metrics",
    "wait_for_metrics",
]

NAMESPACE = "AWS/SageMaker"
COUNTS = ("Invocations", "Invocation4XXErrors", "Invocation5XXErrors")
LATENCIES = ("ModelLatency", "OverheadLatency")
_LATENCY_STATS = ("p50", "p99", "Average")
_PAGE = 500  # GetMetricData takes at most 500 queries a call


@dataclass
class VariantMetrics:
    """One variant's figures over the window (``None``: CloudWatch has no datapoint)."""

    variant: str
    counts: dict[str, float | None] = field(default_factory=dict)
    latency_ms: dict[str, dict[str, float | None]] = field(default_factory=dict)

    @property
    def invocations(self) -> float:
        """Invocations counted in the window (0 when none were published)."""
        return self.counts.get("Invocations") or 0.0


def metric_window(started: datetime, ended: datetime) -> tuple[datetime, datetime, int]:
    """(start, end, period): whole minutes around the run, one period covering all of it."""
    start = started.replace(second=0, microsecond=0)
    end = ended.replace(second=0, microsecond=0) + timedelta(minutes=1)
    period = max(60, math.ceil((end - start).total_seconds() / 60) * 60)
    return start, end, period


def _queries(
    endpoint: str, variants: list[str], period: int
) -> list[tuple[tuple[str, str, str], dict[str, Any]]]:
    wanted = [(m, "Sum") for m in COUNTS] + [(m, s) for m in LATENCIES for s in _LATENCY_STATS]
    out = []
    for vi, variant in enumerate(variants):
        dims = [
            {"Name": "EndpointName", "Value": endpoint},
            {"Name": "VariantName", "Value": variant},
        ]
        for mi, (metric, stat) in enumerate(wanted):
            query: dict[str, Any] = {
                "Id": f"v{vi}m{mi}",
                "MetricStat": {
                    "Metric": {"Namespace": NAMESPACE, "MetricName": metric, "Dimensions": dims},
                    "Period": period,
                    "Stat": stat,
                },
                "ReturnData": True,
            }
            out.append(((variant, metric, stat), query))
    return out


def read_endpoint_metrics(
    cw: Any, endpoint: str, variants: list[str], started: datetime, ended: datetime
) -> list[VariantMetrics]:
    """Each variant's counts and latencies between ``started`` and ``ended`` (UTC)."""
    from stygig.deploy.sagemaker import call

    start, end, period = metric_window(started, ended)
    queries = _queries(endpoint, variants, period)
    points: dict[str, list[float]] = {}
    for page in range(0, len(queries), _PAGE):
        batch = [q for _, q in queries[page : page + _PAGE]]
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {
                "MetricDataQueries": batch,
                "StartTime": start,
                "EndTime": end,
            }
            if token:
                kwargs["NextToken"] = token
            response = call(cw, "get_metric_data", **kwargs)
            for result in response.get("MetricDataResults", []):
                got = [float(v) for v in result.get("Values", []) if v is not None]
                points.setdefault(result["Id"], []).extend(got)
            token = response.get("NextToken")
            if not token:
                break
    found = {v: VariantMetrics(v) for v in variants}
    for (variant, metric, stat), query in queries:
        value = _combine(stat, points.get(query["Id"], []))
        if metric in COUNTS:
            found[variant].counts[metric] = value
        else:
            ms = None if value is None else value / 1000.0  # microseconds -> ms
            found[variant].latency_ms.setdefault(metric, {})[stat] = ms
    return [found[v] for v in variants]


def _combine(stat: str, points: list[float]) -> float | None:
    # One period spans the window, so a query has one datapoint; if CloudWatch splits it
    # anyway, sums add and the worst percentile or average is kept (an upper bound).
    if not points:
        return None
    return sum(points) if stat == "Sum" else max(points)


def wait_for_metrics(
    read: Callable[[], list[VariantMetrics]],
    *,
    expected: int,
    deadline_s: float,
    poll_s: float = 15.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[list[VariantMetrics], bool]:
    """Read until the variants' invocations add up to ``expected`` or ``deadline_s`` passes;
    (the last reading, whether it is complete)."""
    end = clock() + deadline_s
    while True:
        found = read()
        if sum(v.invocations for v in found) >= expected:
            return found, True
        if clock() + poll_s > end:
            return found, False
        sleep(poll_s)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _count(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def format_metrics(
    endpoint: str,
    found: list[VariantMetrics],
    started: datetime,
    ended: datetime,
    client_p50_ms: float | None = None,
) -> list[str]:
    """The table ``stygig invoke --report`` prints, with the client/model/overhead split."""
    start, end, _ = metric_window(started, ended)
    lines = [
        f"CloudWatch {NAMESPACE}, endpoint {endpoint}, {start:%Y-%m-%d %H:%M}-{end:%H:%M} UTC:",
        f"  {'variant':<20} {'invocations':>11} {'4XX':>5} {'5XX':>5}  "
        f"{'model p50/p99/avg ms':>22}  {'overhead p50/p99/avg ms':>24}",
    ]
    for v in found:
        model = v.latency_ms.get("ModelLatency", {})
        over = v.latency_ms.get("OverheadLatency", {})
        lines.append(
            f"  {v.variant:<20} {_count(v.counts.get('Invocations')):>11} "
            f"{_count(v.counts.get('Invocation4XXErrors')):>5} "
            f"{_count(v.counts.get('Invocation5XXErrors')):>5}  "
            f"{'/'.join(_ms(model.get(s)) for s in _LATENCY_STATS):>22}  "
            f"{'/'.join(_ms(over.get(s)) for s in _LATENCY_STATS):>24}"
        )
    if not any(v.counts.get("Invocations") for v in found):
        lines.append(
            "  no datapoints yet: SageMaker publishes each minute, a minute or two late; "
            "run `stygig invoke --endpoint-name E --report --minutes N` again shortly"
        )
    busiest = max(found, key=lambda v: v.invocations, default=None)
    if client_p50_ms is not None and busiest is not None:
        model_p50 = busiest.latency_ms.get("ModelLatency", {}).get("p50")
        over_p50 = busiest.latency_ms.get("OverheadLatency", {}).get("p50")
        if model_p50 is not None and over_p50 is not None:
            rest = client_p50_ms - model_p50 - over_p50
            lines.append(
                f"  p50 split ({busiest.variant}): client {client_p50_ms:.1f} ms = model "
                f"{model_p50:.1f} + SageMaker overhead {over_p50:.1f} + network and client "
                f"{max(rest, 0.0):.1f}"
            )
    return lines

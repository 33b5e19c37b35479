"""Prometheus metrics, one registry per app (so tests and several apps never collide).

The same observations can also go to CloudWatch as EMF lines on stdout: set
:attr:`ServerMetrics.emf` (``stygig serve --emf``; see :mod:`stygig.serving.emf`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from stygig.answer import TIMING_NAMES

if TYPE_CHECKING:
    from stygig.serving.emf import EmfEmitter

__all__ = ["CONTENT_TYPE", "STAGES", "ServerMetrics", "method_label"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

#: Stages timed per request: every ``timings_ms`` key of a recommendation, one set of names
#: (``vote`` and ``serialise`` were left out: review, session 42).
STAGES = TIMING_NAMES

_LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
_BATCH_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64)


# Metric labels never take a client's text as it came: an invented method is "other", so a
# flood of made-up methods cannot grow /metrics (each label value is a new time series).
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    """The ``method`` label of a request: a standard HTTP method, else ``"other"``."""
    return method if method in _METHODS else "other"


@dataclass
class ServerMetrics:
    """Every metric the server exposes at ``GET /metrics``."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    #: When set, every observation below is also written as CloudWatch EMF (off by default).
    emf: EmfEmitter | None = None

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "stygig_requests",
            "HTTP requests by route template, method and status code.",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "stygig_request_seconds",
            "End-to-end request latency inside the server, by route template.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.stage = Histogram(
            "stygig_stage_seconds",
            "Per-stage latency of recommendation requests (decode, embed, search, score, ...).",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "stygig_batch_size",
            "Photos per encoder call.",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.batch_seconds = Histogram(
            "stygig_batch_seconds",
            "Encoder time per batch.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "stygig_queue_depth", "Requests waiting for the encoder.", registry=r
        )
        self.in_flight = Gauge("stygig_in_flight_requests", "Requests being served.", registry=r)
        self.rejected = Counter(
            "stygig_rejected_requests", "Requests refused with 503 (queue full).", registry=r
        )
        self.inline = Counter(
            "stygig_inline_requests",
            "Recommendations answered on the event loop: alone, a small baseline JPEG or no photo.",
            registry=r,
        )
        self.model_load = Gauge(
            "stygig_model_load_seconds", "Time to load the artifact and encoder.", registry=r
        )
        self.warmup = Gauge("stygig_warmup_seconds", "Time spent warming up.", registry=r)
        self.ready = Gauge("stygig_ready", "1 when the model is loaded and warm.", registry=r)

    def observe_timings(self, timings_ms: dict[str, float], serving: bool | None = None) -> None:
        """Record a recommendation's ``timings_ms`` per stage. ``serving``: whether the server
        was ready when it was answered (default: now), for a record made after the answer."""
        for stage in STAGES:
            value = timings_ms.get(stage)
            if value is not None:
                self.stage.labels(stage).observe(value / 1e3)
        if self.emf is not None and (self.serving() if serving is None else serving):
            self.emf.observe_timings(timings_ms)

    def observe_batch(self, size: int, seconds: float) -> None:
        """Record one encoder call (and, for EMF, the requests left waiting after it)."""
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)
        if self.emf is not None and self.serving():
            self.emf.observe_batch(size, seconds, _value(self.queue_depth))

    def serving(self) -> bool:
        """Whether the server is ready: warm-up requests run before, and Prometheus keeps
        them, but CloudWatch gets only what clients asked for (``Requests`` counts those)."""
        return _value(self.ready) >= 1.0

    def rejected_total(self) -> float:
        """Requests refused with 503 so far (EMF counts the increase per line)."""
        return _value(self.rejected)

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)


def _value(metric: Counter | Gauge) -> float:
    """A label-less counter's or gauge's current value (a gauge's function is called)."""
    for family in metric.collect():
        for sample in family.samples:
            if not sample.name.endswith("_created"):
                return float(sample.value)
    return 0.0

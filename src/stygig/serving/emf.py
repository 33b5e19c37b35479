"""CloudWatch embedded metric format (EMF): the server's own metrics as JSON lines on stdout.

SageMaker never scrapes ``GET /metrics``; it ships the container's stdout and stderr to
CloudWatch Logs, and CloudWatch Logs turns every line that carries an ``_aws`` metadata object
into metrics (the EMF specification, ``CloudWatch_Embedded_Metric_Format_Specification``). So the
per-stage latencies, batch sizes and queue depth that Prometheus sees also go to stdout, as::

    {"_aws": {"Timestamp": 1767225600000, "CloudWatchMetrics": [{"Namespace": "StyGig",
      "Dimensions": [["Service"]], "Metrics": [{"Name": "TotalLatency", "Unit": "Milliseconds"},
      ...]}]}, "Service": "stygig", "TotalLatency": [12.5, 9.8, ...], "Requests": 2, ...}

Rate: observations are collected, not printed one by one. A line goes out every ``interval_s``
(default 60 s, CloudWatch's standard resolution) when anything was observed, or as soon as one
metric holds 100 values, the most an EMF array may carry; so at most one line per 100 requests,
and while stdout keeps up every observation is kept (the arrays hold the values themselves, so
CloudWatch's percentiles are exact). Lines are written by a background thread, never by the
event loop.

Memory is bounded even when stdout is not drained (a blocked pipe stalls the writing thread
while requests go on): a metric holds at most :data:`MAX_HELD` values between two lines. Beyond,
the values kept are a uniform random sample of all observed (reservoir sampling, so percentiles
stay representative of the whole interval rather than of its start), and the number left out
is written as the count metric ``ObservationsDropped``. Counts (``Requests``, ``Rejected``)
are plain sums and always exact. EMF has no values-with-counts form (CloudWatch's
``PutMetricData`` has), so a sample is the way to stay within 100 values per array.

Names are bounded too: only the metrics of :func:`metric_units` are accepted (their names are
this module's constants), and dimensions are fixed when the server starts (``Service``, plus the
operator's own, e.g. the endpoint and variant names): nothing a client sends (a route, a status
code, a header) ever becomes a metric name or a dimension, so the number of CloudWatch metrics
cannot grow with traffic.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from stygig.errors import InvalidOptionsError

__all__ = [
    "MAX_HELD",
    "MAX_VALUES",
    "NAMESPACE",
    "EmfConfig",
    "EmfEmitter",
    "metric_units",
    "parse_dimensions",
]

NAMESPACE = "StyGig"
MAX_VALUES = 100  # EMF: "Numeric array metric targets MUST NOT have more than 100 members"
#: The most values one metric holds between two lines (10 lines' worth); beyond, a sample.
MAX_HELD = 10 * MAX_VALUES
#: The count of observations left out of the arrays because a metric held MAX_HELD values.
DROPPED = "ObservationsDropped"
_MAX_DIMENSIONS = 9  # EMF: a DimensionSet holds at most 9 keys
_DIMENSION_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,254}$")
_DIMENSION_VALUE = re.compile(r"^[A-Za-z0-9_.:/@\-]{1,255}$")

#: Stage keys of a recommendation's ``timings_ms`` -> metric names.
STAGE_METRICS = {
    "decode": "DecodeLatency",
    "color": "ColorLatency",
    "queue": "QueueLatency",
    "embed": "EmbedLatency",
    "search": "SearchLatency",
    "vote": "VoteLatency",
    "score": "ScoreLatency",
    "rank": "RankLatency",
    "serialise": "SerialiseLatency",
    "total": "TotalLatency",
}
_SAMPLED = {"BatchSize": "Count", "BatchLatency": "Milliseconds", "QueueDepth": "Count"}
_COUNTED = {"Requests": "Count", "Rejected": "Count", DROPPED: "Count"}


def metric_units() -> dict[str, str]:
    """Every metric an :class:`EmfEmitter` may write, with its CloudWatch unit."""
    return {
        **{name: "Milliseconds" for name in STAGE_METRICS.values()},
        **_SAMPLED,
        **_COUNTED,
    }


def parse_dimensions(pairs: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """``["EndpointName=shop", ...]`` (or one comma-separated string each) as checked pairs.

    Raises:
        InvalidOptionsError: a pair without ``=``, a key or value CloudWatch would refuse
            (letters, digits and ``_ . - : / @``), a repeated key or more than 9 in all.
    """
    out: dict[str, str] = {}
    for text in pairs:
        for pair in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = pair.partition("=")
            key, value = key.strip(), value.strip()
            if not sep or not _DIMENSION_KEY.match(key) or not _DIMENSION_VALUE.match(value):
                raise InvalidOptionsError(
                    "an EMF dimension is KEY=VALUE: a key starting with a letter, then letters, "
                    "digits and _ . - ; a value of letters, digits and _ . - : / @"
                )
            if key in out:
                raise InvalidOptionsError(f"EMF dimension {key!r} given twice")
            out[key] = value
    if len(out) > _MAX_DIMENSIONS:
        raise InvalidOptionsError(f"at most {_MAX_DIMENSIONS} EMF dimensions (CloudWatch's limit)")
    return tuple(out.items())


@dataclass(frozen=True)
class EmfConfig:
    """Where and how often the EMF lines go.

    Args:
        namespace: the CloudWatch namespace.
        dimensions: ``(key, value)`` pairs on every metric; default ``Service=stygig``.
        interval_s: a line at least this often while there is traffic.
    """

    namespace: str = NAMESPACE
    dimensions: tuple[tuple[str, str], ...] = (("Service", "stygig"),)
    interval_s: float = 60.0

    def __post_init__(self) -> None:
        if not 0 < self.interval_s <= 3600:
            raise InvalidOptionsError("the EMF interval must be between 0 and 3600 seconds")
        if not 1 <= len(self.namespace) <= 255:
            raise InvalidOptionsError("the EMF namespace must be 1 to 255 characters long")
        if len(self.dimensions) > _MAX_DIMENSIONS:
            raise InvalidOptionsError(f"at most {_MAX_DIMENSIONS} EMF dimensions")


@dataclass
class _Window:
    """What was observed since the last line."""

    values: dict[str, list[float]] = field(default_factory=dict)  # at most MAX_HELD each
    seen: dict[str, int] = field(default_factory=dict)  # observations, kept or not
    counts: dict[str, int] = field(default_factory=dict)

    def empty(self) -> bool:
        return not any(self.values.values()) and not any(self.counts.values())


class EmfEmitter:
    """Collects observations and writes them as EMF lines from a background thread.

    Args:
        config: namespace, dimensions, interval.
        write: where a line goes (default: stdout, flushed); called from the emitter's thread.
        totals: read at each line: running totals whose increase becomes a count metric
            (``{"Rejected": total 503s so far}``), for counters kept elsewhere.
        clock: milliseconds since the epoch, for ``_aws.Timestamp``.
    """

    def __init__(
        self,
        config: EmfConfig | None = None,
        *,
        write: Callable[[str], None] | None = None,
        totals: Callable[[], Mapping[str, float]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config or EmfConfig()
        self._write = write or _stdout
        self._totals = totals
        self._last_totals: dict[str, float] = dict(totals()) if totals else {}
        self._clock = clock
        self._lock = threading.Lock()
        self._window = _Window()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._units = metric_units()
        self._random = random.Random()

    # Observations (any thread; cheap: an append under a lock) ------------------------------

    def observe(self, name: str, value: float) -> None:
        """Record one value of a sampled metric (a latency, a batch size, a queue depth); a
        value that is not finite is ignored (JSON has no NaN). Beyond :data:`MAX_HELD` values
        since the last line, a uniform sample is kept and the rest counted as dropped."""
        self._check(name)
        number = round(float(value), 3)
        if not math.isfinite(number):
            return
        with self._lock:
            window = self._window
            values = window.values.setdefault(name, [])
            seen = window.seen[name] = window.seen.get(name, 0) + 1
            if len(values) < MAX_HELD:
                values.append(number)
            else:  # reservoir sampling: every observation is kept with chance MAX_HELD / seen
                slot = self._random.randrange(seen)
                if slot < MAX_HELD:
                    values[slot] = number
                window.counts[DROPPED] = window.counts.get(DROPPED, 0) + 1
            full = len(values) >= MAX_VALUES
        if full:
            self._wake.set()

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to a count metric (``Requests``)."""
        self._check(name)
        with self._lock:
            self._window.counts[name] = self._window.counts.get(name, 0) + n

    def _check(self, name: str) -> None:
        # A programming error, never a client's: names are this module's constants.
        if name not in self._units:
            raise ValueError(f"{name!r} is not an EMF metric of this server")

    def observe_timings(self, timings_ms: Mapping[str, float]) -> None:
        """One recommendation: its per-stage milliseconds, and one more request."""
        for stage, name in STAGE_METRICS.items():
            value = timings_ms.get(stage)
            if value is not None:
                self.observe(name, value)
        self.count("Requests")

    def observe_batch(self, size: int, seconds: float, queue_depth: float) -> None:
        """One encoder call, and the requests left waiting when it finished."""
        self.observe("BatchSize", size)
        self.observe("BatchLatency", seconds * 1e3)
        self.observe("QueueDepth", queue_depth)

    # Lines ---------------------------------------------------------------------------------

    def lines(self) -> list[str]:
        """Take what was observed and format it: one line per 100 values of the fullest metric;
        none when nothing happened."""
        with self._lock:
            window, self._window = self._window, _Window()
        if self._totals is not None:
            now = dict(self._totals())
            for name, total in now.items():
                delta = int(total - self._last_totals.get(name, 0.0))
                if delta > 0:
                    window.counts[name] = window.counts.get(name, 0) + delta
            self._last_totals = now
        if window.empty():
            return []
        longest = max((len(v) for v in window.values.values()), default=0)
        chunks = max(1, -(-longest // MAX_VALUES))
        timestamp = int(self._clock() * 1000)
        out = []
        for i in range(chunks):
            members: dict[str, object] = {}
            for name, values in window.values.items():
                part = values[i * MAX_VALUES : (i + 1) * MAX_VALUES]
                if part:
                    members[name] = part
            if i == 0:
                members.update({k: v for k, v in window.counts.items() if v})
            if members:
                out.append(self._document(timestamp, members))
        return out

    def _document(self, timestamp: int, members: dict[str, object]) -> str:
        dimensions = dict(self.config.dimensions)
        directive = {
            "Namespace": self.config.namespace,
            "Dimensions": [list(dimensions)],
            "Metrics": [{"Name": name, "Unit": self._units.get(name, "None")} for name in members],
        }
        document = {
            "_aws": {"Timestamp": timestamp, "CloudWatchMetrics": [directive]},
            **dimensions,
            **members,
        }
        return json.dumps(document, separators=(",", ":"))

    def flush(self) -> None:
        """Write what was observed now (also called by the thread)."""
        for line in self.lines():
            self._write(line)

    # The thread ----------------------------------------------------------------------------

    def start(self) -> None:
        """Write lines from a daemon thread: every ``interval_s``, or sooner when one metric
        holds 100 values."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="stygig-emf", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.config.interval_s)
            self._wake.clear()
            try:
                self.flush()
            except (OSError, ValueError):  # stdout closed: metrics are not worth a crash
                return

    def close(self) -> None:
        """Stop the thread and write what is left (at shutdown)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with contextlib.suppress(OSError, ValueError):  # stdout already closed
            self.flush()


def _stdout(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()

"""A load tester for a running StyGig server: real HTTP, many concurrent clients.

``concurrency`` clients, each a thread with its own kept-alive connection (stdlib ``http.client``,
so the load generator spends little of the CPU it shares with the server), send photos (raw
bytes, content type from the file name) until ``requests`` have been answered; each latency is measured from just
before the request is sent to the last byte of the response. The report holds throughput,
latency percentiles, status counts (2xx/4xx/5xx and transport errors) and every latency, so it
can be plotted (:func:`write_histogram`, matplotlib's Agg backend) or compared later.
:class:`PhotoPoster` is the HTTP side, shared with ``stygig invoke --url``
(:class:`stygig.deploy.invoke.UrlClient`).
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import SplitResult, urlsplit

import numpy as np

from stygig.errors import ConfigError, StygigError

__all__ = [
    "LoadTestConfig",
    "LoadTestReport",
    "PhotoPoster",
    "load_photos",
    "print_report",
    "run_load_test",
    "summarise",
    "write_histogram",
]

#: The most of an answer read (a recommendation is a few KB; a server sending more is not
#: one of ours, and must not fill the client's memory).
MAX_ANSWER_BYTES = 16 << 20
_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}


@dataclass(frozen=True)
class LoadTestConfig:
    """What to send, where, and how hard."""

    url: str
    images: Path
    concurrency: int = 100
    requests: int = 1000
    endpoint: str = "/invocations"
    warmup: int = 10
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.requests < 1 or self.warmup < 0:
            raise ConfigError("concurrency and requests must be >= 1, warmup >= 0")


@dataclass
class LoadTestReport:
    """The measured outcome."""

    url: str
    concurrency: int
    requests: int
    seconds: float
    throughput_rps: float
    latency_ms: dict[str, float]
    counts: dict[str, int]
    statuses: dict[str, int]
    latencies_ms: list[float] = field(repr=False, default_factory=list)

    def to_json(self) -> str:
        """The report as indented JSON (latencies included, rounded to 0.01 ms)."""
        data = asdict(self)
        data["latencies_ms"] = [round(v, 2) for v in self.latencies_ms]
        return json.dumps(data, indent=2)


class PhotoPoster:
    """POSTs photos to one path of a server, over one kept-alive connection per thread.

    Standard-library ``http.client``, so the load generator costs little of the CPU it may
    share with the server. A thread's connection is opened on its first request and, after a
    transport error, closed so that ``http.client`` reopens it on the next one. Every request
    carries ``accept: application/json`` and the bearer token of :mod:`stygig.auth`, if set.
    """

    def __init__(self, parts: SplitResult, path: str, *, timeout_s: float) -> None:
        from stygig.auth import bearer_headers

        self.path = path
        self._parts = parts
        self._timeout = timeout_s
        self._headers = {"accept": "application/json", **bearer_headers()}
        self._local = threading.local()
        self._opened: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            kind = (
                http.client.HTTPSConnection
                if self._parts.scheme == "https"
                else http.client.HTTPConnection
            )
            conn = kind(self._parts.hostname or "", self._parts.port, timeout=self._timeout)
            self._local.conn = conn
            with self._lock:
                self._opened.append(conn)
        return conn

    def post(self, body: bytes, content_type: str) -> tuple[str, float, bytes]:
        """POST one photo on this thread's connection: (status, ms, answer).

        The status is the HTTP status (``"200"``) or, for a transport error, the error's class
        name with an empty answer; neither raises. The time runs from just before the request
        is sent to the last byte of the answer.
        """
        conn = self._connection()
        t0 = time.perf_counter()
        try:
            conn.request(
                "POST",
                self.path,
                body=body,
                headers={"content-type": content_type, **self._headers},
            )
            response = conn.getresponse()
            raw = response.read(MAX_ANSWER_BYTES + 1)
            if len(raw) > MAX_ANSWER_BYTES:  # no answer of ours is this large
                conn.close()
                return "AnswerTooLarge", (time.perf_counter() - t0) * 1e3, b""
            status = str(response.status)
        except (OSError, http.client.HTTPException) as e:
            conn.close()  # http.client reopens it on the next request
            return type(e).__name__, (time.perf_counter() - t0) * 1e3, b""
        return status, (time.perf_counter() - t0) * 1e3, raw

    def release(self) -> None:
        """Close this thread's connection (a later request here opens a new one)."""
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            return
        self._local.conn = None
        conn.close()
        with self._lock:
            self._opened.remove(conn)

    def close(self) -> None:
        """Close every connection this poster opened."""
        with self._lock:
            for conn in self._opened:
                conn.close()
            self._opened.clear()


def load_photos(folder: Path) -> list[tuple[bytes, str]]:
    """Every jpg/png/webp under ``folder`` as (bytes, content type), sorted by name."""
    photos = [
        (p.read_bytes(), _TYPES[p.suffix.lower()])
        for p in sorted(Path(folder).rglob("*"))
        if p.suffix.lower() in _TYPES and p.is_file()
    ]
    if not photos:
        raise ConfigError(f"no .jpg/.png/.webp photos under {folder}")
    return photos


def summarise(
    config: LoadTestConfig, latencies_ms: list[float], statuses: list[str], seconds: float
) -> LoadTestReport:
    """Percentiles and counts from raw measurements."""
    lat = np.asarray(latencies_ms, np.float64)
    pct = (
        {f"p{q}": round(float(np.percentile(lat, q)), 2) for q in (50, 90, 95, 99)}
        if lat.size
        else {}
    )
    if lat.size:
        pct |= {"mean": round(float(lat.mean()), 2), "max": round(float(lat.max()), 2)}
        pct |= {"min": round(float(lat.min()), 2)}
    by_status = Counter(statuses)
    counts = {"2xx": 0, "4xx": 0, "5xx": 0, "errors": 0}
    for status, n in by_status.items():
        key = f"{status[0]}xx" if status.isdigit() else "errors"
        counts[key] = counts.get(key, 0) + n
    return LoadTestReport(
        url=config.url + config.endpoint,
        concurrency=config.concurrency,
        requests=len(statuses),
        seconds=round(seconds, 3),
        throughput_rps=round(len(statuses) / seconds, 2) if seconds > 0 else 0.0,
        latency_ms=pct,
        counts=counts,
        statuses=dict(sorted(by_status.items())),
        latencies_ms=latencies_ms,
    )


def _run(config: LoadTestConfig, photos: list[tuple[bytes, str]]) -> LoadTestReport:
    parts = urlsplit(config.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("the load test's URL must be http(s)://host[:port][/prefix]")
    poster = PhotoPoster(
        parts, parts.path.rstrip("/") + config.endpoint, timeout_s=config.timeout_s
    )

    def send(i: int) -> tuple[float, str]:
        body, kind = photos[i % len(photos)]
        status, ms, _ = poster.post(body, kind)
        return ms, status

    for i in range(config.warmup):
        send(i)
    poster.release()  # the warm-up's connection: each client opens its own
    latencies: list[float] = []
    statuses: list[str] = []
    counter = iter(range(config.requests))
    lock = threading.Lock()
    failed: list[BaseException] = []  # a client that died: the run stops and says why

    def client() -> None:
        try:
            while True:
                with lock:
                    i = None if failed else next(counter, None)
                if i is None:
                    return
                ms, status = send(i)
                with lock:
                    latencies.append(ms)
                    statuses.append(status)
        except BaseException as e:  # handed to the main thread, raised there
            with lock:
                failed.append(e)
        finally:
            poster.release()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(config.concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    poster.close()
    if failed:  # not a measurement of the server: a report would hide the missing requests
        raise failed[0]
    return summarise(config, latencies, statuses, seconds)


def run_load_test(config: LoadTestConfig) -> LoadTestReport:
    """Run the load test against ``config.url`` and return its report."""
    return _run(config, load_photos(config.images))


def print_report(report: LoadTestReport) -> None:
    """A short human summary on stdout."""
    lat = report.latency_ms
    print(f"target        {report.url}")
    print(f"requests      {report.requests} at concurrency {report.concurrency}")
    print(f"throughput    {report.throughput_rps:.1f} requests/s over {report.seconds:.1f} s")
    if lat:
        print(
            f"latency (ms)  p50 {lat['p50']:.1f}  p95 {lat['p95']:.1f}  p99 {lat['p99']:.1f}  "
            f"max {lat['max']:.1f}"
        )
    print("responses     " + "  ".join(f"{k} {v}" for k, v in report.counts.items()))
    failed = {k: v for k, v in report.statuses.items() if not k.isdigit()}
    if failed:  # transport errors by kind: "errors 5" alone said nothing of why
        print("errors        " + "  ".join(f"{k} {v}" for k, v in failed.items()))


def write_histogram(report: LoadTestReport, path: Path) -> None:
    """A latency histogram PNG with the percentiles marked (matplotlib, Agg backend)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise StygigError(
            "matplotlib is needed for --png; pip install 'stygig[plot]'", code="missing_extra"
        ) from e
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(report.latencies_ms, bins=60, color="#4a6fa5")
    for name in ("p50", "p95", "p99"):
        value = report.latency_ms.get(name)
        if value is not None:
            ax.axvline(value, linestyle="--", color="#c0392b", linewidth=1)
            ax.text(value, ax.get_ylim()[1] * 0.95, f" {name}", color="#c0392b", fontsize=8)
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("requests")
    ax.set_title(
        f"{report.requests} requests, concurrency {report.concurrency}: "
        f"{report.throughput_rps:.1f} req/s"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)

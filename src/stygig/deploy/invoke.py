"""Call a deployed endpoint with a photo, check the answer, and load it honestly.

The guide's ``test_endpoint.py`` as a library. :class:`UrlClient` (any StyGig server) keeps one
HTTP connection per thread, through ``stygig loadtest``'s :class:`~stygig.loadtest.PhotoPoster`;
:class:`EndpointClient` shares one boto3 client (thread-safe) whose connection pool is as large
as the concurrency. Each :class:`Reply` separates the client's round trip from the server's
own time (the answer's ``timings_ms.total``: first stage to serialised answer).
:func:`check_response` lists what a StyGig response must have and this one lacks (RGB
triples, the top-5 vote, the compatibility boost); :func:`load_check` sends ``requests``
photos from ``concurrency`` threads and summarises them like ``stygig loadtest``, with the
server's share beside the client's.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from stygig.errors import ConfigError, InvalidOptionsError, ServerError, UnsupportedMediaError

__all__ = [
    "EndpointClient",
    "LoadCheck",
    "Reply",
    "UrlClient",
    "budget_verdict",
    "check_response",
    "content_type_of",
    "describe_response",
    "invoke_endpoint",
    "invoke_url",
    "load_check",
    "runtime_client",
    "server_ms_of",
    "shape_problems",
]

_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}
_TIMINGS_KEY = b'"timings_ms":'


def content_type_of(path: str | Path) -> str:
    """The content type a photo is sent with, from its file name."""
    kind = _TYPES.get(Path(path).suffix.lower())
    if kind is None:
        raise UnsupportedMediaError(f"{path}: send a .jpg, .jpeg, .png or .webp photo")
    return kind


def _parse(raw: bytes, where: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as e:  # not JSON, not UTF-8, too deep, huge numbers
        raise ServerError(f"{where} answered with something that is not JSON: {e}") from e
    if not isinstance(data, dict):
        raise ServerError(f"{where} answered with JSON that is not an object")
    return data


def server_ms_of(raw: bytes) -> float | None:
    """The server's own time for a request: ``timings_ms.total`` of its answer, if any.

    StyGig writes ``timings_ms`` last (``Recommendation.to_json``), so only the tail of the body
    is parsed; anything else falls back to parsing the whole answer.
    """
    at = raw.rfind(_TIMINGS_KEY)
    timings: Any = None
    if at >= 0:
        try:
            timings = json.loads(raw[at + len(_TIMINGS_KEY) : -1])
        except (ValueError, RecursionError):
            timings = None
    if not isinstance(timings, dict):
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            return None
        timings = data.get("timings_ms") if isinstance(data, dict) else None
    total = timings.get("total") if isinstance(timings, dict) else None
    if not isinstance(total, int | float):
        return None
    try:
        value = float(total)
    except OverflowError:  # a 400-digit integer
        return None
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class Reply:
    """One request's outcome: status (``"200"``, ``"503"``, or a transport error's name), the
    client's round trip, the server's own time when it said, and the body."""

    status: str
    client_ms: float
    server_ms: float | None
    body: bytes = b""


class UrlClient:
    """POSTs photos to a StyGig server's ``/invocations``, one kept-alive connection per thread.

    The connections are ``stygig loadtest``'s (:class:`~stygig.loadtest.PhotoPoster`): opened on
    first use, reopened after a transport error; :meth:`close` closes every thread's connection.
    """

    def __init__(self, url: str, *, timeout_s: float = 60.0) -> None:
        from stygig.loadtest import PhotoPoster

        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidOptionsError(
                f"--url must be http(s)://host[:port][/prefix], not {_shown(url)!r}"
            )
        self.url = url
        path = parts.path.rstrip("/")
        self.path = path if path.endswith("/invocations") else path + "/invocations"
        self._poster = PhotoPoster(parts, self.path, timeout_s=timeout_s)

    def send(self, body: bytes, content_type: str) -> Reply:
        """POST one photo; never raises for an HTTP status or a transport error."""
        status, ms, raw = self._poster.post(body, content_type)
        return Reply(status, ms, server_ms_of(raw) if status == "200" else None, raw)

    def close(self) -> None:
        """Close every connection this client opened."""
        self._poster.close()


def invoke_url(
    url: str,
    body: bytes,
    content_type: str,
    *,
    timeout_s: float = 60.0,
    client: UrlClient | None = None,
) -> tuple[dict[str, Any], float]:
    """POST the photo to ``url``'s ``/invocations``; (response, round trip in ms)."""
    own = client is None
    sender = client or UrlClient(url, timeout_s=timeout_s)
    try:
        reply = sender.send(body, content_type)
    finally:
        if own:
            sender.close()
    shown = _shown(url)
    if not reply.status.isdigit():
        raise ServerError(f"cannot reach {shown}: {reply.status}")
    if reply.status != "200":
        raise ServerError(f"{shown} answered {reply.status}: {_error_text(reply.body)}")
    return _parse(reply.body, shown), reply.client_ms


def _shown(url: str) -> str:
    """``url`` as messages show it: without user information (a password in it was echoed
    with every error: review, session 53)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _error_text(raw: bytes) -> str:
    """The server's error message (its JSON ``error.message``), else the first 300 bytes."""
    try:
        message = json.loads(raw)["error"]["message"]
        if isinstance(message, str):
            return message[:300]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        pass
    return raw[:300].decode("utf-8", "replace")


def runtime_client(region: str | None, *, pool: int = 10, timeout_s: float = 60.0) -> Any:
    """One ``sagemaker-runtime`` client for every thread, its pool sized to ``pool``.

    boto3 clients are thread-safe; the pool (``max_pool_connections``, botocore's default 10)
    is what bounds the concurrent requests, so it is sized to the concurrency. Retries are off
    so that a throttled or failed request is counted, not hidden in a longer latency.
    """
    try:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import NoRegionError
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ConfigError("AWS commands need boto3: pip install 'stygig[aws]'") from e
    config = Config(
        max_pool_connections=max(10, pool),
        retries={"total_max_attempts": 1, "mode": "standard"},
        read_timeout=timeout_s,
        connect_timeout=min(timeout_s, 10.0),
    )
    try:
        return boto3.client("sagemaker-runtime", region_name=region, config=config)
    except NoRegionError as e:
        raise ConfigError(
            "no AWS region: pass --region or set AWS_DEFAULT_REGION", code="aws_region"
        ) from e


class EndpointClient:
    """``InvokeEndpoint`` from many threads through one shared runtime client."""

    def __init__(self, runtime: Any, endpoint_name: str) -> None:
        self.runtime = runtime
        self.endpoint_name = endpoint_name

    def send(self, body: bytes, content_type: str) -> Reply:
        """Invoke once; never raises for what the endpoint or the network answers."""
        from botocore.exceptions import BotoCoreError, ClientError

        t0 = time.perf_counter()
        try:
            response = self.runtime.invoke_endpoint(
                EndpointName=self.endpoint_name,
                Body=body,
                ContentType=content_type,
                Accept="application/json",
            )
            raw = response["Body"].read()
        except ClientError as e:
            meta = e.response.get("ResponseMetadata", {})
            status = e.response.get("OriginalStatusCode") or meta.get("HTTPStatusCode") or 0
            return Reply(str(status), (time.perf_counter() - t0) * 1e3, None)
        except BotoCoreError as e:
            return Reply(type(e).__name__, (time.perf_counter() - t0) * 1e3, None)
        ms = (time.perf_counter() - t0) * 1e3
        return Reply("200", ms, server_ms_of(raw), raw)


def invoke_endpoint(
    runtime: Any, endpoint_name: str, body: bytes, content_type: str
) -> tuple[dict[str, Any], float]:
    """``InvokeEndpoint`` with the photo; (response, round trip in ms, network included)."""
    from stygig.deploy.sagemaker import call

    t0 = time.perf_counter()
    response = call(
        runtime,
        "invoke_endpoint",
        EndpointName=endpoint_name,
        Body=body,
        ContentType=content_type,
        Accept="application/json",
    )
    raw = response["Body"].read()
    return _parse(raw, f"endpoint {endpoint_name}"), (time.perf_counter() - t0) * 1e3


def _is_rgb(value: Any) -> bool:
    return (
        isinstance(value, list | tuple)
        and len(value) == 3
        and all(isinstance(c, int) and 0 <= c <= 255 for c in value)
    )


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def shape_problems(rec: dict[str, Any]) -> list[str]:
    """Where this JSON answer is not shaped as StyGig's at all (another model's, a broken
    deployment's): lists of objects where StyGig has them, vote counts that are numbers.
    Empty when the shape is StyGig's (its content is :func:`check_response`'s)."""
    problems: list[str] = []
    items, query = rec.get("items"), rec.get("query", [])
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        problems.append("'items' is not a list of objects")
    if not isinstance(query, list) or not all(isinstance(p, dict) for p in query):
        problems.append("'query' is not a list of objects")
    else:
        for part in query:
            votes = part.get("votes")
            if votes is not None and not (
                isinstance(votes, dict) and all(_number(n) for n in votes.values())
            ):
                problems.append("a query part's 'votes' is not a map of counts")
    outfit = rec.get("outfit")
    slots = outfit.get("slots", {}) if isinstance(outfit, dict) else None
    if outfit is not None and not (
        isinstance(slots, dict) and all(isinstance(v, dict) for v in slots.values())
    ):
        problems.append("'outfit' is not an object of slots")
    if not isinstance(rec.get("timings_ms", {}), dict):
        problems.append("'timings_ms' is not an object")
    return [f"not StyGig's answer: {p}" for p in problems]


def check_response(rec: dict[str, Any]) -> list[str]:
    """What this response lacks of StyGig's contract; empty when it is complete."""
    shape = shape_problems(rec)
    if shape:
        return shape
    problems: list[str] = []
    items = rec.get("items")
    if not isinstance(items, list) or not items:
        return ["no recommended items"]
    for item in items:
        if not _is_rgb(item.get("rgb")):
            problems.append(f"item {item.get('id')}: rgb {item.get('rgb')!r} is not [r, g, b]")
        if not isinstance(item.get("boost"), int | float):
            problems.append(f"item {item.get('id')}: no compatibility boost")
    if rec.get("mode", "outfit") == "outfit" and not any(
        isinstance(i.get("boost"), int | float) and i["boost"] > 1.0 for i in items
    ):
        problems.append("outfit mode, yet no item carries the compatibility boost (> 1)")
    for part in rec.get("query") or [{}]:
        votes = part.get("votes")
        if part.get("category_source", "vote") in ("vote", "head"):
            if not isinstance(votes, dict) or not votes:
                problems.append("query: no top-5 category votes")
            elif not 0 < sum(votes.values()) <= 5:
                problems.append(f"query: votes {votes} are not a top-5 vote")
        if not _is_rgb(part.get("rgb")):
            problems.append(f"query: rgb {part.get('rgb')!r} is not [r, g, b]")
    return problems


def _rgb(value: Any) -> str:
    return str(tuple(value)) if _is_rgb(value) else repr(value)[:40]


def describe_response(rec: dict[str, Any], latency_ms: float) -> str:
    """The outfit, the query's vote and the latency (client and server) as a few lines; an
    answer not shaped as StyGig's (:func:`shape_problems`) is shown as its JSON instead."""
    if shape_problems(rec):
        return json.dumps(rec, indent=2)[:4000]
    lines = []
    for part in rec.get("query", []):
        votes = ", ".join(f"{c} {n}" for c, n in (part.get("votes") or {}).items())
        lines.append(
            f"query: {part.get('category')} (votes: {votes or '-'}) rgb {_rgb(part.get('rgb'))}"
        )
    slots = (rec.get("outfit") or {}).get("slots", {})
    if slots:
        lines.append("outfit:")
        for slot, item in slots.items():
            lines.append(
                f"  {slot:<10} {item.get('id')!s:<14} rgb {_rgb(item.get('rgb'))!s:<16} "
                f"boost {item.get('boost', '-')}"
            )
    for item in rec.get("items", [])[:5] if not slots else []:
        lines.append(f"  {item.get('id')} {item.get('category')} rgb {_rgb(item.get('rgb'))}")
    server_ms = (rec.get("timings_ms") or {}).get("total")
    if isinstance(server_ms, int | float):
        lines.append(
            f"latency: {latency_ms:.1f} ms round trip (client), {server_ms:.1f} ms inside the "
            f"server (timings_ms.total), {max(latency_ms - server_ms, 0.0):.1f} ms outside it"
        )
    else:
        lines.append(
            f"latency: {latency_ms:.1f} ms round trip (client); the server gave no timings"
        )
    return "\n".join(lines)


@dataclass
class LoadCheck:
    """A load check's outcome: the client's report (as ``stygig loadtest``'s), the server's own
    times of the answered requests, and the UTC window it ran in (for CloudWatch)."""

    report: Any  # stygig.loadtest.LoadTestReport
    server_ms: dict[str, float]
    started: datetime
    ended: datetime

    def lines(self) -> list[str]:
        """The server's share, beside the client's percentiles ``print_report`` prints."""
        lat = self.report.latency_ms
        if not self.server_ms:
            return ["server time   not reported (the answers carry no timings_ms)"]
        s = self.server_ms
        out = [
            f"server (ms)   p50 {s['p50']:.1f}  p95 {s['p95']:.1f}  p99 {s['p99']:.1f}  "
            f"max {s['max']:.1f}  (timings_ms.total: first stage to serialised answer)"
        ]
        if lat:
            out.append(
                f"outside (ms)  p50 {max(lat['p50'] - s['p50'], 0.0):.1f}  "
                f"p99 {max(lat['p99'] - s['p99'], 0.0):.1f}  (client minus server: network, "
                "HTTP, waiting for a worker)"
            )
        return out


def load_check(
    send: Callable[[], Reply], *, concurrency: int, requests: int, target: str
) -> LoadCheck:
    """Run ``send`` ``requests`` times from ``concurrency`` threads, each pulling the next
    request as soon as its last one is answered (as ``stygig loadtest`` does)."""
    import numpy as np

    from stygig.loadtest import LoadTestConfig, summarise

    if concurrency < 1 or requests < 1:
        raise InvalidOptionsError("--concurrency and --requests must be >= 1")
    latencies: list[float] = []
    statuses: list[str] = []
    server: list[float] = []
    counter = iter(range(requests))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if next(counter, None) is None:
                    return
            try:
                reply = send()
            except Exception as e:  # a load check counts failures, it does not stop on them
                reply = Reply(type(e).__name__, 0.0, None)
            with lock:
                latencies.append(reply.client_ms)
                statuses.append(reply.status)
                if reply.server_ms is not None:
                    server.append(reply.server_ms)

    threads = [
        threading.Thread(target=worker, daemon=True) for _ in range(min(concurrency, requests))
    ]
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    ended = datetime.now(UTC)
    config = LoadTestConfig(
        url=target, images=Path("."), concurrency=concurrency, requests=requests, endpoint=""
    )
    report = summarise(config, latencies, statuses, seconds)
    server_pct: dict[str, float] = {}
    if server:
        arr = np.asarray(server, np.float64)
        server_pct = {f"p{q}": float(np.percentile(arr, q)) for q in (50, 95, 99)}
        server_pct["max"] = float(arr.max())
    return LoadCheck(report, server_pct, started, ended)


def budget_verdict(p99_ms: float, budget_ms: float, what: str) -> tuple[bool, str]:
    """(within budget, the line that says so) for a p99 against ``--max-p99-ms``."""
    if p99_ms <= budget_ms:
        return True, f"latency budget: {what} p99 {p99_ms:.1f} ms <= {budget_ms:g} ms: ok"
    return False, f"latency budget exceeded: {what} p99 {p99_ms:.1f} ms > {budget_ms:g} ms"

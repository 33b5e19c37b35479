"""Call a deployed endpoint with a photo, check the answer, and optionally load it.

The guide's ``test_endpoint.py`` as a library: :func:`invoke_url` (any StyGig server) or
:func:`invoke_endpoint` (the SageMaker runtime) return the parsed response and the round-trip
latency; :func:`check_response` lists what a StyGig response must have and this one lacks
(RGB triples, the top-5 vote, the compatibility boost); :func:`load_check` sends ``requests``
photos from ``concurrency`` threads and summarises them like ``stygig loadtest``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from stygig.deploy.sagemaker import call
from stygig.errors import InvalidOptionsError, ServerError, UnsupportedMediaError

__all__ = [
    "check_response",
    "content_type_of",
    "describe_response",
    "invoke_endpoint",
    "invoke_url",
    "load_check",
]

_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}


def content_type_of(path: str | Path) -> str:
    """The content type a photo is sent with, from its file name."""
    kind = _TYPES.get(Path(path).suffix.lower())
    if kind is None:
        raise UnsupportedMediaError(f"{path}: send a .jpg, .jpeg, .png or .webp photo")
    return kind


def _parse(raw: bytes, where: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ServerError(f"{where} answered with something that is not JSON: {e}") from e
    if not isinstance(data, dict):
        raise ServerError(f"{where} answered with JSON that is not an object")
    return data


def _target(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith("/invocations") else url + "/invocations"


def invoke_url(
    url: str, body: bytes, content_type: str, *, timeout_s: float = 60.0, client: Any = None
) -> tuple[dict[str, Any], float]:
    """POST the photo to ``url``'s ``/invocations``; (response, latency in ms)."""
    import httpx

    from stygig.auth import bearer_headers

    headers = {"content-type": content_type, "accept": "application/json", **bearer_headers()}
    t0 = time.perf_counter()
    try:
        if client is None:
            response = httpx.post(_target(url), content=body, headers=headers, timeout=timeout_s)
        else:
            response = client.post(_target(url), content=body, headers=headers)
    except httpx.HTTPError as e:
        raise ServerError(f"cannot reach {url}: {e}") from e
    ms = (time.perf_counter() - t0) * 1e3
    if response.status_code != 200:
        raise ServerError(f"{url} answered {response.status_code}: {response.text[:300]}")
    return _parse(response.content, url), ms


def invoke_endpoint(
    runtime: Any, endpoint_name: str, body: bytes, content_type: str
) -> tuple[dict[str, Any], float]:
    """``InvokeEndpoint`` with the photo; (response, latency in ms, network included)."""
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


def check_response(rec: dict[str, Any]) -> list[str]:
    """What this response lacks of StyGig's contract; empty when it is complete."""
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
        if part.get("category_source", "vote") == "vote":
            if not isinstance(votes, dict) or not votes:
                problems.append("query: no top-5 category votes")
            elif not 0 < sum(votes.values()) <= 5:
                problems.append(f"query: votes {votes} are not a top-5 vote")
        if not _is_rgb(part.get("rgb")):
            problems.append(f"query: rgb {part.get('rgb')!r} is not [r, g, b]")
    return problems


def describe_response(rec: dict[str, Any], latency_ms: float) -> str:
    """The outfit, the query's vote and the latency as a few readable lines."""
    lines = []
    for part in rec.get("query", []):
        votes = ", ".join(f"{c} {n}" for c, n in (part.get("votes") or {}).items())
        lines.append(
            f"query: {part.get('category')} (votes: {votes or '-'}) rgb {tuple(part.get('rgb', []))}"
        )
    slots = (rec.get("outfit") or {}).get("slots", {})
    if slots:
        lines.append("outfit:")
        for slot, item in slots.items():
            lines.append(
                f"  {slot:<10} {item.get('id')!s:<14} rgb {tuple(item.get('rgb') or [])!s:<16} "
                f"boost {item.get('boost', '-')}"
            )
    for item in rec.get("items", [])[:5] if not slots else []:
        lines.append(f"  {item.get('id')} {item.get('category')} rgb {tuple(item.get('rgb', []))}")
    server_ms = (rec.get("timings_ms") or {}).get("total")
    lines.append(
        f"latency: {latency_ms:.1f} ms round trip"
        + (f", {server_ms:.1f} ms inside the server" if server_ms is not None else "")
    )
    return "\n".join(lines)


def load_check(send: Callable[[], object], *, concurrency: int, requests: int, target: str) -> Any:
    """Run ``send`` ``requests`` times from ``concurrency`` threads; a loadtest report."""
    from stygig.loadtest import LoadTestConfig, summarise

    if concurrency < 1 or requests < 1:
        raise InvalidOptionsError("--concurrency and --requests must be >= 1")
    latencies: list[float] = []
    statuses: list[str] = []
    lock = threading.Lock()

    def one(_: int) -> None:
        t0 = time.perf_counter()
        try:
            send()
            status = "200"
        except ServerError as e:
            status = "500" if "answered 5" in e.message else type(e).__name__
        except Exception as e:  # a load check counts failures, it does not stop on them
            status = type(e).__name__
        with lock:
            latencies.append((time.perf_counter() - t0) * 1e3)
            statuses.append(status)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, range(requests)))
    config = LoadTestConfig(
        url=target, images=Path("."), concurrency=concurrency, requests=requests, endpoint=""
    )
    return summarise(config, latencies, statuses, time.perf_counter() - t0)

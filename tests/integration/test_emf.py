"""CloudWatch EMF lines on a real server's stdout, checked against the EMF specification.

The specification (``CloudWatch_Embedded_Metric_Format_Specification``) gives a JSON schema for
the document and rules the schema cannot say: every metric and dimension a directive names is a
member of the root; a metric member is a number or an array of at most 100 numbers; a
dimension member is a string; a DimensionSet holds at most 9 keys; at most 100 metrics.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from stygig.errors import InvalidOptionsError
from stygig.serving.emf import MAX_HELD, MAX_VALUES, EmfConfig, EmfEmitter, parse_dimensions
from tests.integration.server_fixtures import REPO, free_port, wait_ready

# The schema printed in the specification (units list included), trimmed of titles and ids.
_UNITS = (
    "^(Seconds|Microseconds|Milliseconds|Bytes|Kilobytes|Megabytes|Gigabytes|Terabytes|Bits|"
    "Kilobits|Megabits|Gigabits|Terabits|Percent|Count|Bytes\\/Second|Kilobytes\\/Second|"
    "Megabytes\\/Second|Gigabytes\\/Second|Terabytes\\/Second|Bits\\/Second|Kilobits\\/Second|"
    "Megabits\\/Second|Gigabits\\/Second|Terabits\\/Second|Count\\/Second|None)$"
)
_NAME = {"type": "string", "minLength": 1, "maxLength": 255}
EMF_SCHEMA = {
    "type": "object",
    "required": ["_aws"],
    "properties": {
        "_aws": {
            "type": "object",
            "required": ["Timestamp", "CloudWatchMetrics"],
            "properties": {
                "Timestamp": {"type": "integer"},
                "CloudWatchMetrics": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["Namespace", "Dimensions", "Metrics"],
                        "properties": {
                            "Namespace": _NAME,
                            "Dimensions": {
                                "type": "array",
                                "minItems": 1,
                                "items": {
                                    "type": "array",
                                    "minItems": 0,
                                    "maxItems": 9,
                                    "items": _NAME,
                                },
                            },
                            "Metrics": {
                                "type": "array",
                                "maxItems": 100,
                                "items": {
                                    "type": "object",
                                    "required": ["Name"],
                                    "properties": {
                                        "Name": _NAME,
                                        "Unit": {"type": "string", "pattern": _UNITS},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        }
    },
}


def check_emf(line: str) -> dict[str, Any]:
    """One stdout line as a valid EMF document (schema and target members); the document."""
    document = json.loads(line)  # a whole line is one JSON object, nothing around it
    jsonschema.validate(document, EMF_SCHEMA)
    for directive in document["_aws"]["CloudWatchMetrics"]:
        for dimension_set in directive["Dimensions"]:
            for key in dimension_set:
                assert isinstance(document[key], str), key
        for metric in directive["Metrics"]:
            value = document[metric["Name"]]
            if isinstance(value, list):
                assert 1 <= len(value) <= MAX_VALUES
                assert all(isinstance(v, int | float) for v in value)
            else:
                assert isinstance(value, int | float), metric["Name"]
    return document


_SERVE = (sys.executable, "-m", "stygig.cli", "serve")


@dataclass
class EmfServer:
    process: subprocess.Popen[str]
    url: str
    lines: list[str] = field(default_factory=list)

    def wait_for(self, predicate: Callable[[list[str]], bool], timeout: float = 30.0) -> None:
        """Until ``predicate(lines)`` holds (polled; no fixed sleep stands in for it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(list(self.lines)):
                return
            time.sleep(0.05)
        raise AssertionError(f"not seen within {timeout:.0f} s; stdout so far: {self.lines}")

    def stop(self) -> None:
        """SIGTERM and the graceful exit (uvicorn re-raises the signal once it has shut down)."""
        self.process.terminate()
        assert self.process.wait(60) in (0, -15)


@contextmanager
def emf_server(
    artifact: Path, tmp_path: Path, *extra: str, env: dict[str, str] | None = None
) -> Iterator[EmfServer]:
    """``stygig serve`` with stdout on a pipe (read line by line) and stderr in a file."""
    port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith("STYGIG_EMF")}
    with (tmp_path / "stderr.log").open("w") as stderr:
        process = subprocess.Popen(
            [
                *_SERVE,
                "--artifact",
                str(artifact),
                "--port",
                str(port),
                "--log-level",
                "warning",
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            cwd=REPO,
            env={**base, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
    server = EmfServer(process, f"http://127.0.0.1:{port}")
    assert process.stdout is not None
    reader = threading.Thread(
        target=lambda: server.lines.extend(line.rstrip("\n") for line in process.stdout or ()),
        daemon=True,
    )
    reader.start()
    try:
        wait_ready(server.url, process)
        yield server
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        reader.join(10)
        process.stdout.close()


def _recommend(url: str, photo: bytes, n: int) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        for i in range(n):
            r = client.post(
                f"/invocations?k={1 + i % 3}",
                content=photo,
                headers={
                    "content-type": "image/jpeg",
                    "X-Amzn-SageMaker-Custom-Attributes": "mode=similar",
                    "X-Request-Id": f"client-chosen-{i}",
                },
            )
            assert r.status_code == 200, r.text


def _total(documents: list[dict[str, Any]], name: str) -> int:
    return sum(int(d.get(name, 0)) for d in documents)


@pytest.fixture(scope="module")
def photo(sample: tuple[Path, Path]) -> bytes:
    return sorted((sample[0] / "queries").glob("*.jpg"))[0].read_bytes()


def test_lines_are_emf_rate_limited_and_count_every_request(
    sample: tuple[Path, Path], photo: bytes, tmp_path: Path
) -> None:
    """130 requests, interval of an hour: one line when 100 values are in, the rest at
    shutdown; every request counted once, warm-up excluded."""
    with emf_server(sample[1], tmp_path, "--emf", "--emf-interval", "3600") as server:
        _recommend(server.url, photo, 130)
        server.wait_for(lambda lines: len(lines) >= 1)  # the 100-values line, before shutdown
        server.stop()
    documents = [check_emf(line) for line in server.lines]  # stdout holds EMF lines only
    assert len(documents) == 2
    assert _total(documents, "Requests") == 130
    assert sum(len(d["TotalLatency"]) for d in documents) == 130
    assert sum(len(d["BatchSize"]) for d in documents) == 130
    first = documents[0]
    # The first line went out when one metric (the batch's, observed first) held 100 values.
    assert max(len(v) for v in first.values() if isinstance(v, list)) == MAX_VALUES
    directive = first["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "StyGig"
    assert directive["Dimensions"] == [["Service"]]
    assert first["Service"] == "stygig"
    names = {m["Name"] for m in directive["Metrics"]}
    assert {"DecodeLatency", "EmbedLatency", "TotalLatency", "BatchSize", "QueueDepth"} <= names
    # Nothing a client sent became a dimension or a member.
    for line in server.lines:
        assert "client-chosen" not in line and "similar" not in line


def test_interval_environment_and_operator_dimensions(
    sample: tuple[Path, Path], photo: bytes, tmp_path: Path
) -> None:
    """As the container runs it: STYGIG_EMF=1 from the entrypoint, settings from the env."""
    env = {
        "STYGIG_EMF": "1",
        "STYGIG_EMF_INTERVAL_S": "0.2",
        "STYGIG_EMF_DIMENSIONS": "EndpointName=shop-prod,VariantName=blue",
    }
    with emf_server(sample[1], tmp_path, env=env) as server:
        _recommend(server.url, photo, 3)
        server.wait_for(lambda lines: _total([json.loads(x) for x in lines], "Requests") == 3)
        document = check_emf(server.lines[-1])
        directive = document["_aws"]["CloudWatchMetrics"][0]
        assert directive["Dimensions"] == [["EndpointName", "VariantName"]]
        assert (document["EndpointName"], document["VariantName"]) == ("shop-prod", "blue")
        server.stop()


def test_off_by_flag_or_environment(
    sample: tuple[Path, Path], photo: bytes, tmp_path: Path
) -> None:
    with emf_server(sample[1], tmp_path, "--no-emf", env={"STYGIG_EMF": "1"}) as server:
        _recommend(server.url, photo, 5)
        server.stop()
    assert server.lines == []


def test_bad_settings_stop_the_server_before_it_starts(
    sample: tuple[Path, Path], tmp_path: Path
) -> None:
    done = subprocess.run(
        [*_SERVE, "--artifact", str(sample[1]), "--emf", "--emf-dimension", "Bad Key=x"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert done.returncode == 2
    assert "an EMF dimension is KEY=VALUE" in done.stderr
    assert "Traceback" not in done.stderr


def test_emitter_splits_at_100_values_and_keeps_every_one() -> None:
    written: list[str] = []
    emitter = EmfEmitter(EmfConfig(), write=written.append, clock=lambda: 1767225600.5)
    for i in range(250):
        emitter.observe_timings({"total": float(i), "embed": 1.0})
    emitter.observe_batch(8, 0.004, 3)
    emitter.flush()
    documents = [check_emf(line) for line in written]
    assert [len(d["TotalLatency"]) for d in documents] == [100, 100, 50]
    assert [v for d in documents for v in d["TotalLatency"]] == [float(i) for i in range(250)]
    assert _total(documents, "Requests") == 250
    assert documents[0]["BatchSize"] == [8.0] and documents[0]["QueueDepth"] == [3.0]
    assert all(d["_aws"]["Timestamp"] == 1767225600500 for d in documents)
    written.clear()
    emitter.flush()
    assert written == []  # nothing observed: no line


def test_totals_become_counts_per_line() -> None:
    total = {"Rejected": 0.0}
    written: list[str] = []
    emitter = EmfEmitter(write=written.append, totals=lambda: dict(total))
    total["Rejected"] = 4.0
    emitter.flush()
    total["Rejected"] = 5.0
    emitter.flush()
    assert [json.loads(line)["Rejected"] for line in written] == [4, 1]


def test_dimensions_are_checked() -> None:
    assert parse_dimensions(["EndpointName=a,VariantName=b"]) == (
        ("EndpointName", "a"),
        ("VariantName", "b"),
    )
    for bad in (["novalue"], ["A=1,A=2"], ["x y=1"], [",".join(f"K{i}=v" for i in range(10))]):
        with pytest.raises(InvalidOptionsError):
            parse_dimensions(bad)


def test_a_blocked_stdout_holds_at_most_max_held_values_per_metric() -> None:
    """Review: with the writing thread stuck in a write (stdout not drained), observations
    piled up without bound. Now a metric holds at most MAX_HELD values between lines; the rest
    is counted as ``ObservationsDropped`` and ``Requests`` stays exact."""
    written: list[str] = []
    entered, release = threading.Event(), threading.Event()

    def stuck(line: str) -> None:
        written.append(line)
        entered.set()
        assert release.wait(30)

    emitter = EmfEmitter(EmfConfig(interval_s=3600), write=stuck)
    emitter.start()
    try:
        for _ in range(MAX_VALUES):
            emitter.observe_timings({"total": 1.0})
        assert entered.wait(30)  # the thread took that window and is stuck writing it
        for i in range(20 * MAX_HELD):
            emitter.observe_timings({"total": 1000.0 + i})
        with emitter._lock:
            held = {name: len(v) for name, v in emitter._window.values.items()}
        assert held == {"TotalLatency": MAX_HELD}
    finally:
        release.set()
        emitter.close()
    documents = [check_emf(line) for line in written]
    assert _total(documents, "Requests") == MAX_VALUES + 20 * MAX_HELD
    assert _total(documents, "ObservationsDropped") == 19 * MAX_HELD
    kept = [v for d in documents for v in d.get("TotalLatency", [])]
    assert len(kept) == MAX_VALUES + MAX_HELD
    late = sorted(v for v in kept if v >= 1000.0)
    assert len(set(late)) == MAX_HELD  # a sample of the late ones, each kept once
    # uniform over the whole stretch, not its first MAX_HELD (which end at 1000 + MAX_HELD)
    assert late[-1] > 1000.0 + 10 * MAX_HELD


def test_only_known_metrics_and_finite_values_are_taken() -> None:
    written: list[str] = []
    emitter = EmfEmitter(write=written.append)
    with pytest.raises(ValueError):
        emitter.observe("/client/route", 1.0)
    with pytest.raises(ValueError):
        emitter.count("status_418")
    emitter.observe("TotalLatency", float("nan"))
    emitter.observe("TotalLatency", float("inf"))
    emitter.flush()
    assert written == []


def test_every_timing_name_is_a_metric() -> None:
    """Review, session 42: ``vote`` and ``serialise``, in every ``timings_ms``, were exported
    neither to Prometheus nor to EMF."""
    from stygig.answer import TIMING_NAMES
    from stygig.serving.emf import STAGE_METRICS, metric_units
    from stygig.serving.metrics import STAGES, ServerMetrics

    assert tuple(STAGE_METRICS) == TIMING_NAMES and STAGES == TIMING_NAMES
    assert {"VoteLatency", "SerialiseLatency"} <= set(metric_units())
    metrics = ServerMetrics()
    metrics.observe_timings(dict.fromkeys(TIMING_NAMES, 1.0))
    text = metrics.render().decode()
    for name in TIMING_NAMES:
        assert f'stygig_stage_seconds_count{{stage="{name}"}} 1.0' in text, name

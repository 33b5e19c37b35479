"""Asynchronous jobs end to end: a real server process, real HTTP, real files, kill -9."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from stygig.cli import main as jobs_main
from stygig.engine import Options, Query
from stygig.jobs import JobSpec, JobStore, JobWorker, WorkerConfig
from stygig.jobs.store import TERMINAL, new_owner
from tests.conftest import encode, garment_image
from tests.integration.server_fixtures import REPO, free_port

pytestmark = pytest.mark.slow

# The test's server: the real async app, optionally with a gate on every recommendation: the
# n-th one creates <gate>/started-<n> and then waits until the test creates <gate>/go-<n>. So
# "job n is running" is a state the test holds, not one it samples.
_SERVER = """
import itertools, sys, threading, time
from pathlib import Path
from stygig.engine import Recommender
if sys.argv[1]:
    gate, counter, lock = Path(sys.argv[1]), itertools.count(1), threading.Lock()
    original = Recommender.recommend
    def gated(self, *args, **kwargs):
        with lock:
            n = next(counter)
        (gate / f"started-{n}").touch()
        while not (gate / f"go-{n}").exists():
            time.sleep(0.01)
        return original(self, *args, **kwargs)
    Recommender.recommend = gated
from stygig.cli import main
sys.exit(main(["serve", "--host", "127.0.0.1", *sys.argv[2:]]))
"""


@dataclass
class AsyncServer:
    """A running async server process."""

    process: subprocess.Popen[bytes]
    url: str
    db: Path
    out: Path

    def kill(self) -> None:
        """``kill -9`` and reap."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it hangs."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


@contextmanager
def async_server(
    artifact: Path,
    root: Path,
    *extra: str,
    gate: Path | None = None,
    env: dict[str, str] | None = None,
    output: str | None = None,
) -> Iterator[AsyncServer]:
    """The async API on a free port over ``root/jobs.db``, results in ``root/out``; with
    ``gate``, every recommendation waits for the test's go-ahead (see ``_SERVER``)."""
    script = root / "server.py"
    script.write_text(_SERVER, encoding="utf-8")
    port = free_port()
    db, out = root / "jobs.db", root / "out"
    args = [
        sys.executable,
        str(script),
        str(gate or ""),
        "--artifact",
        str(artifact),
        "--port",
        str(port),
        "--jobs-db",
        str(db),
        "--async-output",
        output or str(out),
        *extra,
    ]
    log = (root / f"server-{port}.log").open("wb")
    process = subprocess.Popen(
        args,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    log.close()
    server = AsyncServer(process, f"http://127.0.0.1:{port}", db, out)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited: {(root / f'server-{port}.log').read_text()}")
            try:
                if httpx.get(server.url + "/ping", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("async server not ready")
            time.sleep(0.05)
        yield server
    finally:
        server.stop()


@dataclass
class Receiver:
    """A local webhook receiver that fails the first ``fail_first`` deliveries of each job."""

    fail_first: int = 0
    calls: list[tuple[str, int, dict[str, Any]]] = field(default_factory=list)
    url: str = ""

    def delivered(self) -> dict[str, dict[str, Any]]:
        """Job id -> the event that was accepted (2xx)."""
        return {i: e for i, status, e in self.calls if status == 200}


@contextmanager
def webhook_receiver(fail_first: int = 0) -> Iterator[Receiver]:
    """A threaded HTTP server on a free port recording POSTs."""
    receiver = Receiver(fail_first)
    seen: dict[str, int] = {}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            event = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                n = seen[event["inferenceId"]] = seen.get(event["inferenceId"], 0) + 1
                status = 500 if n <= receiver.fail_first else 200
                receiver.calls.append((event["inferenceId"], status, event))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def wait_for(check: Any, timeout: float = 30.0, interval: float = 0.05) -> Any:
    """Poll ``check()`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError("condition not met in time")


def job_status(url: str, job_id: str) -> dict[str, Any]:
    """``GET /async/jobs/{id}``."""
    response = httpx.get(f"{url}/async/jobs/{job_id}", timeout=5)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def test_submit_poll_output_failure_and_webhook(
    sample: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    catalog, artifact = sample
    photo = catalog / "queries" / "blue-jeans.jpg"
    inputs = tmp_path / "in"
    inputs.mkdir()
    stored = inputs / "request.json"
    stored.write_text(json.dumps({"item_ids": ["sku-0014"], "k": 2}), encoding="utf-8")
    (inputs / "other.json").write_text(json.dumps({"item_ids": ["sku-0014"]}), encoding="utf-8")
    flags = ("--async-webhook", "--allow-input-prefix", str(inputs), "--async-list-jobs")
    with (
        webhook_receiver(fail_first=1) as hook,
        async_server(artifact, tmp_path, flags[0], hook.url, *flags[1:]) as server,
    ):
        url = server.url
        inline = httpx.post(
            f"{url}/async/invocations",
            content=photo.read_bytes(),
            headers={"Content-Type": "image/jpeg", "X-Amzn-SageMaker-Custom-Attributes": "k=2"},
        )
        assert inline.status_code == 202
        sub = inline.json()
        assert set(sub) >= {"InferenceId", "OutputLocation", "FailureLocation"}
        assert inline.headers["x-amzn-sagemaker-outputlocation"] == sub["OutputLocation"]
        by_location = httpx.post(
            f"{url}/async/invocations",
            headers={
                "X-Amzn-SageMaker-InputLocation": stored.as_uri(),
                "X-Amzn-SageMaker-Inference-Id": "look-42",
            },
        ).json()
        assert by_location["InferenceId"] == "look-42"
        again = httpx.post(
            f"{url}/async/invocations",
            headers={
                "X-Amzn-SageMaker-InputLocation": stored.as_uri(),
                "X-Amzn-SageMaker-Inference-Id": "look-42",
            },
        )
        assert again.status_code == 202 and again.json()["InferenceId"] == "look-42"
        # The same id with another input or other options is someone else's request: 409,
        # never that job's answer (review, session 42).
        for other in (
            {"content": photo.read_bytes(), "headers": {"Content-Type": "image/jpeg"}},
            {"headers": {"X-Amzn-SageMaker-InputLocation": (inputs / "other.json").as_uri()}},
            {
                "headers": {
                    "X-Amzn-SageMaker-InputLocation": stored.as_uri(),
                    "X-Amzn-SageMaker-Custom-Attributes": "k=3",
                }
            },
        ):
            headers = {**other.pop("headers"), "X-Amzn-SageMaker-Inference-Id": "look-42"}
            taken = httpx.post(f"{url}/async/invocations", headers=headers, **other)
            assert taken.status_code == 409, taken.text
            assert taken.json()["error"]["code"] == "inference_id_in_use"
        # Cut after its header: accepted (only decoding shows it), then the job fails.
        cut = photo.read_bytes()
        corrupt = httpx.post(
            f"{url}/async/invocations",
            content=cut[: len(cut) // 2],
            headers={"Content-Type": "image/jpeg"},
        ).json()
        # Bad requests are refused before anything is queued.
        bad = httpx.post(f"{url}/async/invocations?k=0", content=b"x")
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_options"
        # The options of a JSON input too (they were checked only once the job ran); an unknown
        # option's name is a client string, so the answer lists the known ones instead.
        for body, said in (
            ({"item_ids": ["x"], "k": 0}, "k"),
            ({"item_ids": ["x"], "kk": 1}, "known"),
        ):
            bad = httpx.post(f"{url}/async/invocations", json=body)
            assert bad.status_code == 422, bad.text
            assert said in bad.json()["error"]["message"]
        # An input inline and by location: which one was meant? Refused, not one ignored.
        both = httpx.post(
            f"{url}/async/invocations",
            content=photo.read_bytes(),
            headers={
                "Content-Type": "image/jpeg",
                "X-Amzn-SageMaker-InputLocation": stored.as_uri(),
            },
        )
        assert both.status_code == 400 and both.json()["error"]["code"] == "ambiguous_input"
        empty = httpx.post(f"{url}/async/invocations")
        assert empty.status_code == 400
        assert httpx.get(f"{url}/async/jobs/nope").status_code == 404

        ids = [sub["InferenceId"], "look-42", corrupt["InferenceId"]]
        for job_id in ids:
            wait_for(lambda j=job_id: job_status(url, j)["Status"] in ("succeeded", "failed"))
        first = job_status(url, ids[0])
        assert first["Status"] == "succeeded" and first["Attempts"] == 1
        assert first["CreatedAt"] <= first["StartedAt"] <= first["FinishedAt"]
        # A server folder is never shown to clients: its results come through the API.
        assert first["OutputLocation"] == f"/async/jobs/{ids[0]}/output"
        result = json.loads((server.out / f"{ids[0]}.out").read_text())
        assert result["outfit"]["slots"] and result["by_category"]
        assert all(len(v) <= 2 for v in result["by_category"].values())
        item_result = httpx.get(f"{url}/async/jobs/look-42/output").json()
        for route in ("/async/jobs/look-42", "/async/jobs/look-42/output"):  # audit, s47
            assert httpx.get(f"{url}{route}?x=1").status_code == 422, route
        assert item_result["query"][0]["source"] == "item:sku-0014"
        failed = job_status(url, corrupt["InferenceId"])
        assert failed["Status"] == "failed"
        assert failed["Error"]["code"] in ("invalid_image", "not_an_image", "corrupt_image")
        error_body = json.loads((server.out / f"{ids[2]}-error.out").read_text())
        assert error_body["error"]["code"] == failed["Error"]["code"]
        assert not (server.out / f"{ids[2]}.out").exists()

        # Every job notified once it ended, although the receiver refused the first try.
        delivered = wait_for(lambda: len(hook.delivered()) == 3 and hook.delivered())
        assert delivered[ids[0]]["invocationStatus"] == "Completed"
        assert delivered[ids[2]]["invocationStatus"] == "Failed"
        # Like the job views, the message never shows a server folder.
        shown = delivered[ids[0]]["responseParameters"]["outputLocation"]
        assert shown == f"/async/jobs/{ids[0]}/output"
        assert str(server.out) not in json.dumps(delivered)
        assert all(sum(1 for i, s, _ in hook.calls if i == j and s == 500) == 1 for j in ids)

        listing = httpx.get(f"{url}/async/jobs?status=succeeded").json()
        assert listing["counts"]["succeeded"] == 2 and listing["counts"]["failed"] == 1
        assert [j["InferenceId"] for j in listing["jobs"]] == ids[:2]

        # The CLI talks to the same server.
        capsys.readouterr()
        code = jobs_main(["jobs", "submit", "--url", url, "--item", "sku-0001", "--wait"])
        assert code == 0
        assert json.loads(capsys.readouterr().out)["Status"] == "succeeded"
        assert jobs_main(["jobs", "list", "--url", url]) == 0
        assert "succeeded 3" in capsys.readouterr().out
        assert jobs_main(["jobs", "wait", "--url", url, ids[2]]) == 1
        # A photo is sent as what its bytes are, whatever its name (review, session 54:
        # "photo" and "photo.jfif" went as image/ and image/jfif, a 415).
        for name in ("photo", "photo.jfif"):
            (tmp_path / name).write_bytes(photo.read_bytes())
            capsys.readouterr()
            assert jobs_main(["jobs", "submit", "--url", url, str(tmp_path / name), "--wait"]) == 0
            assert json.loads(capsys.readouterr().out)["Status"] == "succeeded", name


def _terminal_events(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT job_id, COUNT(*) FROM events WHERE event IN ('succeeded', 'failed')"
            " GROUP BY job_id"
        ).fetchall()
    conn.close()
    return {r[0]: int(r[1]) for r in rows}


def db_counts(db: Path) -> dict[str, int]:
    """Jobs per status, read straight from the database file."""
    with sqlite3.connect(db) as conn:
        counts = dict(conn.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall())
    conn.close()
    return {s: int(counts.get(s, 0)) for s in ("queued", "running", "succeeded", "failed")}


def test_kill_9_and_restart_loses_and_duplicates_nothing(
    sample: tuple[Path, Path], tmp_path: Path
) -> None:
    catalog, artifact = sample
    photo = (catalog / "queries" / "blue-jeans.jpg").read_bytes()
    n = 30
    gate = tmp_path / "gate"
    gate.mkdir()
    with async_server(artifact, tmp_path, gate=gate) as server:
        ids = []
        for i in range(n):
            r = httpx.post(
                f"{server.url}/async/invocations",
                content=photo,
                headers={"Content-Type": "image/jpeg", "X-Amzn-SageMaker-Inference-Id": f"j{i}"},
            )
            assert r.status_code == 202
            ids.append(r.json()["InferenceId"])
        # Let three jobs through; the fourth is then held inside its computation.
        for k in (1, 2, 3):
            wait_for(lambda k=k: (gate / f"started-{k}").exists())
            (gate / f"go-{k}").touch()
        wait_for(lambda: (gate / "started-4").exists())
        wait_for(lambda: db_counts(server.db)["succeeded"] == 3)
        server.kill()
    assert db_counts(server.db) == {"queued": n - 4, "running": 1, "succeeded": 3, "failed": 0}
    interrupted = [i for i in ids if job_status_db(server.db, i) == "running"]

    with async_server(artifact, tmp_path) as again:
        wait_for(lambda: db_counts(again.db)["succeeded"] == n, timeout=60)
    assert db_counts(server.db) == {"queued": 0, "running": 0, "succeeded": n, "failed": 0}
    outputs = sorted(p.name for p in (tmp_path / "out").iterdir() if p.suffix == ".out")
    assert outputs == sorted(f"{i}.out" for i in ids)  # one result per job, no error files
    for name in outputs:
        assert json.loads((tmp_path / "out" / name).read_text())["outfit"] is not None
    terminal = _terminal_events(tmp_path / "jobs.db")
    assert terminal == dict.fromkeys(ids, 1)  # every job ended exactly once
    with sqlite3.connect(server.db) as conn:
        attempts = dict(conn.execute("SELECT id, attempts FROM jobs").fetchall())
    conn.close()
    assert len(interrupted) == 1 and attempts[interrupted[0]] == 2
    assert all(attempts[i] == 1 for i in ids if i not in interrupted)


def job_status_db(db: Path, job_id: str) -> str:
    """A job's status read straight from the database file."""
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
    conn.close()
    return str(row[0])


class _SlowRecommender:
    """Stands in for the recommender: sleeps, then answers."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.calls = 0

    def recommend(self, query: Query, options: Options) -> Any:
        self.calls += 1
        time.sleep(self.seconds)

        class _Answer:
            def to_json(self) -> bytes:
                return b'{"outfit":null}'

        return _Answer()


def test_time_limit_and_concurrency(tmp_path: Path) -> None:
    slow = _SlowRecommender(0.6)
    store = JobStore(tmp_path / "jobs.db")
    worker = JobWorker(store, lambda: slow, WorkerConfig(concurrency=1, poll_s=0.05))  # type: ignore[arg-type,return-value]
    body = json.dumps({"item_ids": ["x"]}).encode()
    out = tmp_path / "out"
    late, _ = store.submit(
        JobSpec(
            str(out / "{id}.out"),
            str(out / "{id}-error.out"),
            input_body=body,
            content_type="application/json",
            time_limit_s=0.2,
        )
    )
    fine, _ = store.submit(
        JobSpec(str(out / "{id}.out"), str(out / "{id}-error.out"), input_body=body)
    )
    worker.start()
    try:
        wait_for(lambda: store.counts()["queued"] == 0 and store.counts()["running"] == 0, 10)
        # With one slot, the second job only started once the overrun first one really ended.
        assert store.get(fine.id).started_at >= store.get(late.id).started_at + 0.55  # type: ignore[operator]
    finally:
        worker.stop()
        store.close()
    timed_out = JobStore(tmp_path / "jobs.db")
    try:
        assert timed_out.get(late.id).status == "failed"
        assert timed_out.get(late.id).error == {
            "code": "timeout",
            "message": "the job ran past its 0.2-second time limit",
        }
        assert not Path(timed_out.get(late.id).output_location).exists()  # never written late
        assert timed_out.get(fine.id).status == "succeeded"
    finally:
        timed_out.close()


class _StuckRecommender:
    """Stands in for the recommender: a query for item "stuck" never returns on its own (as a
    read that hangs forever would) until ``release`` is set; others answer at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started: list[tuple[str, ...]] = []

    def recommend(self, query: Query, options: Options) -> Any:
        self.started.append(query.item_ids)
        if query.item_ids == ("stuck",):
            self.release.wait()

        class _Answer:
            def to_json(self) -> bytes:
                return b'{"outfit":null}'

        return _Answer()


def test_a_stuck_job_gives_its_slot_back_and_the_queue_goes_on(tmp_path: Path) -> None:
    """The watchdog (security issue item 3): a computation stuck for good after its time limit
    gives its slot back after the grace time, so later jobs still run; abandoned threads are
    capped, and at the cap nothing new starts until one ends."""
    stuck = _StuckRecommender()
    store = JobStore(tmp_path / "jobs.db")
    looked = threading.Semaphore(0)  # one release per time the dispatcher considers claiming

    def should_yield() -> bool:
        looked.release()
        return False

    config = WorkerConfig(concurrency=1, poll_s=0.05, grace_s=0.1, max_abandoned=2)
    worker = JobWorker(store, lambda: stuck, config, should_yield=should_yield)  # type: ignore[arg-type,return-value]
    out = tmp_path / "out"

    def submit(job_id: str, item: str, time_limit_s: float = 60.0) -> None:
        store.submit(
            JobSpec(
                str(out / "{id}.out"),
                str(out / "{id}-error.out"),
                input_body=json.dumps({"item_ids": [item]}).encode(),
                id=job_id,
                time_limit_s=time_limit_s,
            )
        )

    submit("stuck-1", "stuck", 0.2)
    submit("fine-1", "fine")
    worker.start()
    try:
        # One stuck job: failed at its limit, its slot back after the grace time, the next runs.
        wait_for(lambda: store.get("fine-1").status == "succeeded", 10)
        assert store.get("stuck-1").error == {
            "code": "timeout",
            "message": "the job ran past its 0.2-second time limit",
        }
        assert worker.abandoned_count() == 1
        # A second one reaches the cap: nothing more is claimed while both hang.
        submit("stuck-2", "stuck", 0.2)
        wait_for(lambda: worker.abandoned_count() == 2, 10)
        submit("waits", "fine")
        worker.wake()
        for _ in range(3):  # the dispatcher looked at the queue (and refused) three times more
            while looked.acquire(blocking=False):
                pass
            assert looked.acquire(timeout=10)
        assert store.get("waits").status == "queued"
        assert stuck.started == [("stuck",), ("fine",), ("stuck",)]
        # When the stuck threads end, the queue goes on; their late results are never written.
        stuck.release.set()
        wait_for(lambda: store.get("waits").status == "succeeded", 10)
        wait_for(lambda: worker.abandoned_count() == 0, 10)
        assert not (out / "stuck-1.out").exists() and not (out / "stuck-2.out").exists()
        assert store.get("stuck-2").status == "failed"
    finally:
        stuck.release.set()
        worker.stop()
        store.close()


def test_a_submission_is_refused_as_the_real_time_request_is(
    sample: tuple[Path, Path], tmp_path: Path
) -> None:
    """Everything a job would refuse before reading a stored photo is refused before the 202,
    with the real-time route's status and code (it was accepted, then failed as a job), and
    nothing is queued; the same bodies that are valid are accepted."""
    catalog, artifact = sample
    photo = (catalog / "queries" / "blue-jeans.jpg").read_bytes()
    item = {"item_ids": ["sku-0014"]}
    refused = [
        ({}, ""),
        ({"k": 3}, ""),
        ({**item, "filters": {"fabric": "silk"}}, ""),
        ({**item, "gender": "robot"}, ""),
        ({**item, "category": "dress"}, ""),
        ({**item, "include_categories": ["spaceship"]}, ""),
        ({**item, "candidate_ids": ["sku-0014"]}, ""),
        ({"item_ids": ["no-such-item"]}, ""),
        (None, '?filters={"fabric":"silk"}'),
        (None, "?gender=robot"),
    ]
    with async_server(artifact, tmp_path, "--async-list-jobs") as server:
        wait_for(lambda: httpx.get(server.url + "/readyz", timeout=5).status_code == 200)
        for body, query in refused:
            if body is None:
                content, kind = photo, "image/jpeg"
            else:
                content, kind = json.dumps(body).encode(), "application/json"
            headers = {"Content-Type": kind}
            real = httpx.post(f"{server.url}/v1/recommend{query}", content=content, headers=headers)
            late = httpx.post(
                f"{server.url}/async/invocations{query}", content=content, headers=headers
            )
            assert 400 <= real.status_code < 500, (body, query, real.text)
            assert late.status_code == real.status_code, (body, query, late.text)
            assert late.json()["error"]["code"] == real.json()["error"]["code"]
        # What the real-time route refuses before decoding a photo, or by the Accept header
        # (review, s41: these were accepted, then failed as jobs; text/csv even succeeded).
        gif = encode(garment_image(), "GIF")
        raw = [
            (b"hello world" * 10, {"Content-Type": "image/jpeg"}),
            (photo[:2] + b"\x00" * 64, {"Content-Type": "image/jpeg"}),
            (gif, {"Content-Type": "image/jpeg"}),
            (gif, {"Content-Type": "application/octet-stream"}),
            (b"hello world", {"Content-Type": "application/octet-stream"}),
            (b"hello world", {"Content-Type": "image/*"}),
            (b"hello world", {}),
            (json.dumps(item).encode(), {"Content-Type": "application/json", "Accept": "text/csv"}),
            # A JSON input's photos too (review, session 42: a 202, then a failed job).
            (
                json.dumps({"image_b64": base64.b64encode(gif).decode()}).encode(),
                {"Content-Type": "application/json"},
            ),
            (
                json.dumps(
                    {"images_b64": [base64.b64encode(b"hello world" * 9).decode()]}
                ).encode(),
                {"Content-Type": "application/json"},
            ),
        ]
        for content, headers in raw:
            real = httpx.post(f"{server.url}/v1/recommend", content=content, headers=headers)
            late = httpx.post(f"{server.url}/async/invocations", content=content, headers=headers)
            assert 400 <= real.status_code < 500, (content[:20], headers, real.text)
            assert late.status_code == real.status_code, (content[:20], headers, late.text)
            assert late.json()["error"]["code"] == real.json()["error"]["code"]
        ok = httpx.post(
            f"{server.url}/async/invocations",
            content=json.dumps({**item, "gender": "women", "k": 2}).encode(),
            headers={"Content-Type": "application/json"},
        )
        assert ok.status_code == 202, ok.text
        # A photo sent as application/octet-stream (the SageMaker SDK's default) or untyped,
        # and untyped JSON, are told from their bytes and run (review, s41: octet-stream 415).
        submit = f"{server.url}/async/invocations"
        told = [
            httpx.post(submit, content=content, headers=headers).json()["InferenceId"]
            for content, headers in (
                (photo, {"Content-Type": "application/octet-stream"}),
                (photo, {}),
                (json.dumps(item).encode(), {"Content-Type": "binary/octet-stream"}),
                (photo, {"Content-Type": "image/*"}),  # audit: a 415 before
                (json.dumps(item).encode(), {"Content-Type": "image/*"}),
            )
        ]
        for job_id in told:
            view = wait_for(
                lambda j=job_id: (
                    (v := httpx.get(f"{server.url}/async/jobs/{j}").json())["Status"] in TERMINAL
                    and v
                )
            )
            assert view["Status"] == "succeeded", view
        listed = httpx.get(f"{server.url}/async/jobs").json()
        assert {j["InferenceId"] for j in listed["jobs"]} == {ok.json()["InferenceId"], *told}
        # The submission is documented as it is read: its headers, every option, the input
        # as the body (JSON with stored photos' locations too) and the 202's fields.
        document = httpx.get(f"{server.url}/openapi.json").json()
        schemas = document["components"]["schemas"]
        submit = document["paths"]["/async/invocations"]
        params = {p["name"] for p in submit["post"]["parameters"]}
        assert {
            "X-Amzn-SageMaker-InputLocation",
            "X-Amzn-SageMaker-Inference-Id",
            "X-Amzn-SageMaker-InvocationTimeoutSeconds",
            "X-Stygig-Webhook",
            "X-Amzn-SageMaker-Custom-Attributes",
            "k",
            "candidate_ids",
        } <= params
        content = submit["post"]["requestBody"]["content"]
        assert {"image/jpeg", "application/json"} <= set(content)
        assert "image_uris" in content["application/json"]["schema"]["properties"]
        accepted = submit["post"]["responses"]["202"]["content"]["application/json"]["schema"]
        assert set(schemas[accepted["$ref"].rsplit("/", 1)[1]]["required"]) == set(ok.json())
        # The job view's documented fields are the ones it has (review: no schema at all).
        paths = document["paths"]
        view_doc = paths["/async/jobs/{job_id}"]["get"]["responses"]["200"]
        view_ref = view_doc["content"]["application/json"]["schema"]["$ref"]
        documented = set(schemas[view_ref.rsplit("/", 1)[1]]["properties"])
        view = httpx.get(f"{server.url}/async/jobs/{ok.json()['InferenceId']}").json()
        assert documented == set(view)
        assert "409" in paths["/async/jobs/{job_id}/output"]["get"]["responses"]


def test_a_submission_given_a_key_or_option_twice_is_refused_before_the_202(
    sample: tuple[Path, Path], tmp_path: Path
) -> None:
    """Review, session 42: ``{"k": 2, "k": 5}`` ran with k=5, ``?k=5`` beside custom
    attributes ``k=2`` with 5, ``image_uris: false`` as none and ``"item_ids": "x"`` as a
    list. Each is the real-time route's 422 (same code), before the 202; a time limit that is
    not a whole number of seconds too."""
    catalog, artifact = sample
    photo = (catalog / "queries" / "blue-jeans.jpg").read_bytes()
    js = {"Content-Type": "application/json"}
    ca = "X-Amzn-SageMaker-Custom-Attributes"
    cases: list[tuple[str, bytes, dict[str, str], str]] = [
        ("", b'{"item_ids": ["sku-0014"], "k": 2, "k": 5}', js, "duplicate_key"),
        ("?k=5", photo, {"Content-Type": "image/jpeg", ca: "k=2"}, "option_given_twice"),
        ("?k=5", b'{"item_ids": ["sku-0014"], "k": 2}', js, "option_given_twice"),
        ("?k=2&k=5", photo, {"Content-Type": "image/jpeg"}, "duplicate_key"),
        ("", photo, {"Content-Type": "image/jpeg", ca: "k="}, "invalid_options"),
        ("", b'{"item_ids": "sku-0014"}', js, "invalid_options"),
    ]
    with async_server(artifact, tmp_path) as server:
        wait_for(lambda: httpx.get(server.url + "/readyz", timeout=5).status_code == 200)
        for query, content, headers, code in cases:
            real = httpx.post(f"{server.url}/v1/recommend{query}", content=content, headers=headers)
            late = httpx.post(
                f"{server.url}/async/invocations{query}", content=content, headers=headers
            )
            assert real.status_code == late.status_code == 422, (query, content[:40], late.text)
            assert real.json()["error"]["code"] == late.json()["error"]["code"] == code
        for falsy in ("false", "0", '""', "null"):
            body = f'{{"item_ids": ["sku-0014"], "image_uris": {falsy}}}'.encode()
            late = httpx.post(f"{server.url}/async/invocations", content=body, headers=js)
            assert late.status_code == 422 and "image_uris" in late.json()["error"]["message"]
        for limit in ("1.5", "1e2", "0.001"):
            late = httpx.post(
                f"{server.url}/async/invocations",
                content=b'{"item_ids": ["sku-0014"]}',
                headers={**js, "X-Amzn-SageMaker-InvocationTimeoutSeconds": limit},
            )
            assert late.status_code == 422, (limit, late.text)
        ok = httpx.post(
            f"{server.url}/async/invocations?mode=similar",
            content=b'{"item_ids": ["sku-0014"], "k": 2}',
            headers={
                **js,
                ca: "use_color=false",
                "X-Amzn-SageMaker-InvocationTimeoutSeconds": "60",
            },
        )
        assert ok.status_code == 202, ok.text


def test_a_job_whose_outcome_cannot_be_written_is_tried_again_then_ends(tmp_path: Path) -> None:
    """Review, session 49: when neither a job's result nor its failure could be written (its
    output storage failing: here a file where the output folder should be), the job stayed
    ``running``, its lease renewed, until the process restarted. It goes back in line now,
    is tried again after ``retry_s`` (doubled per attempt), and once storage is back it
    succeeds; a job whose storage never comes back is failed at its last attempt, in the
    store alone."""
    answers = _StuckRecommender()  # answers at once for any item but "stuck"
    store = JobStore(tmp_path / "jobs.db")
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the output folder should be")
    config = WorkerConfig(concurrency=1, poll_s=0.05, retry_s=0.2, grace_s=0.1)
    worker = JobWorker(store, lambda: answers, config)  # type: ignore[arg-type,return-value]
    body = json.dumps({"item_ids": ["fine"]}).encode()

    def submit(job_id: str, output: Path, failure: Path, attempts: int) -> None:
        spec = JobSpec(str(output / "{id}.out"), str(failure / "{id}-error.out"), input_body=body)
        store.submit(dataclasses.replace(spec, id=job_id, max_attempts=attempts))

    out = blocked / "out"
    submit("back", out, out, 10)  # attempts enough that its retries outlast any wait here
    never = tmp_path / "never"
    never.write_text("a file for good")
    submit("gone", never, never, 2)
    fine = tmp_path / "failures"
    submit("half", never, fine, 1)  # only its output is broken: its failure document is written
    worker.start()
    try:

        def released(job_id: str, times: int) -> bool:
            return _events(tmp_path / "jobs.db", job_id).count("released") >= times

        wait_for(lambda: released("back", 1) and store.get("gone").status == "failed", 20)
        assert store.get("gone").error == {
            "code": "output_unwritable",
            "message": "the job's outcome could not be stored (2 attempts)",
        }
        assert not list(tmp_path.glob("**/gone*"))  # its failure location is broken too
        wait_for(lambda: store.get("half").status == "failed", 20)
        assert store.get("half").error["code"] == "output_unwritable"  # type: ignore[index]
        assert json.loads((fine / "half-error.out").read_bytes())["error"]["code"] == (
            "output_unwritable"
        )
        assert store.get("gone").attempts == 2
        blocked.unlink()  # storage is back
        wait_for(lambda: store.get("back").status == "succeeded", 20)
        assert (out / "back.out").exists()
        assert 2 <= store.get("back").attempts <= 10
    finally:
        worker.stop()
        store.close()


def _events(db: Path, job_id: str) -> list[str]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT event FROM events WHERE job_id = ? ORDER BY rowid", (job_id,)
        ).fetchall()
    conn.close()
    return [r[0] for r in rows]


def test_a_released_job_waits_out_its_delay_and_only_its_owner_releases_it(
    tmp_path: Path,
) -> None:
    store = JobStore(tmp_path / "jobs.db")
    try:
        store.submit(JobSpec("/out/{id}.out", "/out/{id}-error.out", input_body=b"x", id="a"))
        store.submit(JobSpec("/out/{id}.out", "/out/{id}-error.out", input_body=b"x", id="b"))
        owner = new_owner()
        [first] = store.claim(owner)
        assert not store.release("a", new_owner(), first.attempts, delay_s=0)
        assert store.release("a", owner, first.attempts, delay_s=3600)
        assert store.get("a").status == "queued"
        assert store.renew(owner) == 0
        assert [j.id for j in store.claim(owner, limit=5)] == ["b"]  # "a" waits its hour
        assert store.claim(new_owner(), limit=5) == []
    finally:
        store.close()

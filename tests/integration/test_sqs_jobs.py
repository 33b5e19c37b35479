"""Two real StyGig servers sharing one SQS queue and one S3 prefix (moto's server on localhost).

Jobs are submitted to server A; either server runs them; none is lost and none is done twice
(every result's record names the server that did it: its owner ``host:pid:tag``). A server
killed with ``kill -9`` in the middle of a job loses nothing: its message becomes visible when
its visibility timeout (the lease) runs out, and the other server finishes the job, once.

Every recommendation in the servers goes through a gate (see ``_SERVER``): it creates
``started-<pid>-<n>`` and waits for ``go`` (or ``go-<pid>-<n>``), so "server X is running a
job" is a state the test holds, not one it samples.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from stygig.jobs.sqs_store import SqsJobStore
from tests.integration.server_fixtures import REPO, free_port
from tests.integration.test_jobs import wait_for

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::DeprecationWarning:botocore.*"),
]

BUCKET = "shop"
LEASE_S = 4  # the visibility timeout: how long a killed server's job stays hidden
_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}

# The test's server: ``stygig serve`` (its own flags, ``--job-queue`` among them) with every
# recommendation gated (argv[1]).
_SERVER = """
import itertools, os, sys, threading, time
from pathlib import Path
from stygig.engine import Recommender
gate = Path(sys.argv[1])
counter, lock, pid = itertools.count(1), threading.Lock(), os.getpid()
original = Recommender.recommend
def gated(self, *args, **kwargs):
    with lock:
        n = next(counter)
    (gate / f"started-{pid}-{n}").touch()
    while not ((gate / "go").exists() or (gate / f"go-{pid}-{n}").exists()):
        time.sleep(0.01)
    return original(self, *args, **kwargs)
Recommender.recommend = gated
from stygig.cli import main
sys.exit(main(["serve", "--host", "127.0.0.1", *sys.argv[2:]]))
"""


@dataclass
class Shared:
    """One queue and S3 prefix on the moto server, and the environment pointing at it."""

    env: dict[str, str]
    queue: str
    url: str
    results: str
    sqs: Any
    s3: Any

    def store(self) -> SqsJobStore:
        """A store on the queue for reading records (the test never claims with it)."""
        return SqsJobStore(self.queue, self.results, sqs=self.sqs, s3=self.s3, wait_s=0)

    def queue_url(self) -> str:
        return f"sqs://{self.queue}?results={self.results}&lease={LEASE_S}&wait=1"

    def depth(self) -> int:
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=self.url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
            ],
        )["Attributes"]
        return sum(int(v) for v in attrs.values())


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    url = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=url, **_client_args()).create_bucket(Bucket=BUCKET)
    try:
        yield url
    finally:
        server.stop()


def _client_args() -> dict[str, str]:
    return {
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
        "region_name": "us-east-1",
    }


@pytest.fixture
def shared(moto_endpoint: str) -> Shared:
    sqs = boto3.client("sqs", endpoint_url=moto_endpoint, **_client_args())
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, **_client_args())
    name = f"stygig-{uuid.uuid4().hex[:10]}"
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    env = {**_AWS_ENV, "AWS_ENDPOINT_URL": moto_endpoint}
    return Shared(env, name, url, f"s3://{BUCKET}/{name}/state", sqs, s3)


@dataclass
class Node:
    """One server process."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


@contextmanager
def node(artifact: Path, root: Path, shared: Shared, gate: Path, name: str) -> Iterator[Node]:
    """A StyGig server on the shared queue; results under ``s3://shop/<queue>/out/``."""
    script = root / "server.py"
    script.write_text(_SERVER, encoding="utf-8")
    port = free_port()
    log = root / f"server-{name}.log"
    args = [
        sys.executable,
        str(script),
        str(gate),
        "--job-queue",
        shared.queue_url(),
        "--artifact",
        str(artifact),
        "--port",
        str(port),
        "--async-output",
        f"s3://{BUCKET}/{shared.queue}/out/",
        "--async-concurrency",
        "1",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **shared.env},
        )
    server = Node(process, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server {name} exited: {log.read_text()[-3000:]}")
            try:
                if httpx.get(server.url + "/ping", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"server {name} not ready")
            time.sleep(0.05)
        yield server
    finally:
        server.stop()


def submit(url: str, photo: bytes, job_id: str) -> None:
    r = httpx.post(
        f"{url}/async/invocations",
        content=photo,
        headers={"Content-Type": "image/jpeg", "X-Amzn-SageMaker-Inference-Id": job_id},
        timeout=30,
    )
    assert r.status_code == 202, r.text
    assert r.json()["InferenceId"] == job_id


def status(url: str, job_id: str) -> dict[str, Any]:
    r = httpx.get(f"{url}/async/jobs/{job_id}", timeout=30)
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def started(gate: Path) -> list[tuple[int, int]]:
    """``(pid, n)`` of every recommendation begun so far."""
    found = []
    for p in gate.glob("started-*"):
        _, pid, n = p.name.split("-")
        found.append((int(pid), int(n)))
    return sorted(found)


def owner_pid(owner: str) -> int:
    """The pid in a worker identity ``host:pid:tag``."""
    return int(owner.split(":")[1])


def terminal_events(store: SqsJobStore, job_id: str) -> list[dict[str, Any]]:
    return [e for e in store.events(job_id) if e["event"] in ("succeeded", "failed")]


def settled(check: Any, store: SqsJobStore, ids: list[str], timeout: float = 120) -> None:
    """Wait for ``check``; when it does not come true, say where each job stands."""
    try:
        wait_for(check, timeout)
    except TimeoutError:
        states = {i: [(e["event"], e["owner"]) for e in store.events(i)] for i in ids}
        pytest.fail(f"jobs did not settle: {json.dumps(states, indent=1)}")


def test_two_servers_share_one_queue(
    sample: tuple[Path, Path], tmp_path: Path, shared: Shared
) -> None:
    catalog, artifact = sample
    photo = (catalog / "queries" / "blue-jeans.jpg").read_bytes()
    gate = tmp_path / "gate"
    gate.mkdir()
    store = shared.store()
    with ExitStack() as stack:
        a = stack.enter_context(node(artifact, tmp_path, shared, gate, "a"))
        b = stack.enter_context(node(artifact, tmp_path, shared, gate, "b"))
        # One server holds the first job; with one slot each, the second job must go to the
        # other: both servers work on the queue.
        submit(a.url, photo, "first")
        [(holder, _)] = wait_for(lambda: started(gate))
        submit(a.url, photo, "second")
        both = wait_for(lambda: len(started(gate)) == 2 and started(gate))
        assert {pid for pid, _ in both} == {a.pid, b.pid}
        # A held job keeps its lease: it is renewed past its first expiry, not redelivered.
        claimed_at = float(store.get("first").started_at or 0.0)
        wait_for(
            lambda: float(store.get("first").lease_expires or 0.0) > claimed_at + LEASE_S + 0.5
        )
        (gate / "go").touch()
        ids = ["first", "second"]
        for i in range(14):
            submit(a.url, photo, f"job-{i:02d}")
            ids.append(f"job-{i:02d}")
        # Any server answers for any job.
        settled(lambda: all(status(b.url, i)["Status"] == "succeeded" for i in ids), store, ids)
        views = {i: status(a.url, i) for i in ids}
        assert all(v["Attempts"] == 1 for v in views.values())
        by_server: dict[int, list[str]] = {a.pid: [], b.pid: []}
        for job_id in ids:
            [end] = terminal_events(store, job_id)  # done once
            assert end["event"] == "succeeded"
            by_server[owner_pid(end["owner"])].append(job_id)
            # The result is in S3, written for this job, readable through either server.
            document = shared.s3.get_object(Bucket=BUCKET, Key=f"{shared.queue}/out/{job_id}.out")
            result = json.loads(document["Body"].read())
            assert result["InferenceId"] == job_id and result["outfit"] is not None
            output = httpx.get(f"{b.url}/async/jobs/{job_id}/output", timeout=30)
            assert output.status_code == 200 and output.json()["InferenceId"] == job_id
        assert sorted(i for done in by_server.values() for i in done) == sorted(ids)  # none lost
        assert by_server[a.pid] and by_server[b.pid]  # both did work
        assert holder in (a.pid, b.pid)
        # One computation per job: as many recommendations as jobs, each on the server the
        # record names.
        computed = started(gate)
        assert len(computed) == len(ids)
        assert {pid: sum(1 for p, _ in computed if p == pid) for pid in by_server} == {
            pid: len(done) for pid, done in by_server.items()
        }
        wait_for(lambda: shared.depth() == 0)  # every message deleted


def test_a_killed_servers_job_is_redelivered_and_finished_once(
    sample: tuple[Path, Path], tmp_path: Path, shared: Shared
) -> None:
    catalog, artifact = sample
    photo = (catalog / "queries" / "blue-jeans.jpg").read_bytes()
    gate = tmp_path / "gate"
    gate.mkdir()
    store = shared.store()
    with ExitStack() as stack:
        a = stack.enter_context(node(artifact, tmp_path, shared, gate, "a"))
        b = stack.enter_context(node(artifact, tmp_path, shared, gate, "b"))
        submit(a.url, photo, "doomed")
        [(victim_pid, _)] = wait_for(lambda: started(gate))
        victim, survivor = (a, b) if victim_pid == a.pid else (b, a)
        victim.kill()  # in the middle of the job, holding its message
        (gate / "go").touch()
        submit(survivor.url, photo, "after")
        final = wait_for(
            lambda: (
                status(survivor.url, "doomed")["Status"] in ("succeeded", "failed")
                and status(survivor.url, "doomed")
            ),
            60,
        )
        assert final["Status"] == "succeeded" and final["Attempts"] == 2
        events = [(e["event"], e["owner"]) for e in store.events("doomed")]
        victim_owner, survivor_owner = events[1][1], events[2][1]
        assert owner_pid(victim_owner) == victim.pid
        assert owner_pid(survivor_owner) == survivor.pid
        assert events[:5] == [
            ("submitted", None),
            ("claimed", victim_owner),
            ("requeued", survivor_owner),  # once its visibility timeout ran out
            ("claimed", survivor_owner),
            ("succeeded", survivor_owner),  # finished once, by the survivor
        ]
        assert len(terminal_events(store, "doomed")) == 1
        wait_for(lambda: status(survivor.url, "after")["Status"] == "succeeded", 60)
        computed = started(gate)
        assert [pid for pid, _ in computed].count(victim.pid) == 1  # the interrupted run
        assert [pid for pid, _ in computed].count(survivor.pid) == 2  # "doomed" again, "after"
        document = shared.s3.get_object(Bucket=BUCKET, Key=f"{shared.queue}/out/doomed.out")
        assert json.loads(document["Body"].read())["InferenceId"] == "doomed"
        wait_for(lambda: shared.depth() == 0)

"""The SQS job queue (records in S3) against moto's server mode on localhost.

Each test gets its own queue and S3 prefix on one moto server (``ThreadedMotoServer``, real
HTTP through boto3). Leases are a second or two where a test needs one to run out.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stygig.errors import InvalidOptionsError, NotFoundError, OverloadedError, StygigError
from stygig.jobs.sqs_store import SqsJobStore, open_job_queue, parse_queue_url
from stygig.jobs.store import InferenceIdInUseError, JobSpec, QueueLimits, new_owner
from stygig.jobs.worker import JobWorker, WorkerConfig
from stygig.serving.async_api import AsyncConfig
from tests.integration.server_fixtures import free_port
from tests.integration.test_jobs import wait_for

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:botocore.*"),
    pytest.mark.slow,  # a moto server per test: 1-3 s each, so make test only, not test-fast
]
BUCKET = "jobs"
_CREDENTIALS = {
    "aws_access_key_id": "testing",
    "aws_secret_access_key": "testing",
    "region_name": "us-east-1",
}


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """moto's server on a free localhost port, with the bucket every test uses."""
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    url = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=url, **_CREDENTIALS).create_bucket(Bucket=BUCKET)
    try:
        yield url
    finally:
        # moto's backends are global to the process: leave no queue or bucket to later tests.
        urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"))
        server.stop()


class Queue:
    """One test's queue: its name, prefix, clients, and stores opened on it."""

    def __init__(self, endpoint: str, fifo: bool = False) -> None:
        self.name = f"q-{uuid.uuid4().hex[:12]}" + (".fifo" if fifo else "")
        self.results = f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}/state"
        self.sqs = boto3.client("sqs", endpoint_url=endpoint, **_CREDENTIALS)
        self.s3 = boto3.client("s3", endpoint_url=endpoint, **_CREDENTIALS)
        attributes = {"FifoQueue": "true"} if fifo else {}
        self.url = self.sqs.create_queue(QueueName=self.name, Attributes=attributes)["QueueUrl"]
        self.stores: list[SqsJobStore] = []

    def store(self, **kw: Any) -> SqsJobStore:
        kw.setdefault("wait_s", 0)
        store = SqsJobStore(self.name, self.results, sqs=self.sqs, s3=self.s3, **kw)
        self.stores.append(store)
        return store

    def depth(self) -> tuple[int, int]:
        """(visible, in flight) messages."""
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=self.url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
            ],
        )["Attributes"]
        return (
            int(attrs["ApproximateNumberOfMessages"]),
            int(attrs["ApproximateNumberOfMessagesNotVisible"]),
        )

    def keys(self, kind: str) -> list[str]:
        prefix = self.results.split("/", 3)[3] + f"/{kind}/"
        answer = self.s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
        return [o["Key"][len(prefix) :] for o in answer.get("Contents", [])]


@pytest.fixture
def queue(endpoint: str) -> Iterator[Queue]:
    q = Queue(endpoint)
    yield q
    for store in q.stores:
        store._held.clear()  # nothing to release: the queue is thrown away


def _spec(**kw: Any) -> JobSpec:
    kw.setdefault("input_body", b"x")
    return JobSpec("s3://jobs/out/{id}.out", "s3://jobs/out/{id}-error.out", **kw)


def test_queue_urls_are_parsed_and_mistakes_refused() -> None:
    s = parse_queue_url("sqs://stygig-jobs?results=s3://shop/async/state&lease=30&wait=2")
    assert (s.queue, s.bucket, s.prefix, s.lease_s, s.wait_s) == (
        "stygig-jobs",
        "shop",
        "async/state/",
        30.0,
        2,
    )
    assert parse_queue_url("sqs://jobs.fifo?results=s3://shop").prefix == ""
    for bad in (
        "stygig-jobs",
        "http://q?results=s3://shop/x",
        "sqs://q",  # no results
        "sqs://q?results=/tmp/x",
        "sqs://q?results=s3://shop/x&colour=red",
        "sqs://q?results=s3://shop/x&lease=0",
        "sqs://q?results=s3://shop/x&wait=21",
        "sqs://q?results=s3://shop/x&results=s3://shop/y",
        "sqs://bad name?results=s3://shop/x",
        "sqs://q/path?results=s3://shop/x",
    ):
        with pytest.raises(InvalidOptionsError):
            parse_queue_url(bad)
    # The server's settings refuse a bad URL (or none, or two stores) before anything starts.
    with pytest.raises(InvalidOptionsError):
        AsyncConfig(jobs_db=None, output="s3://shop/out/", job_queue="sqs://q")
    with pytest.raises(InvalidOptionsError):
        AsyncConfig(jobs_db=None, output="s3://shop/out/")
    with pytest.raises(InvalidOptionsError):
        AsyncConfig(Path("j.db"), "s3://shop/out/", job_queue="sqs://q?results=s3://shop/s")


def test_submit_is_idempotent_and_readable_from_any_store(queue: Queue) -> None:
    a, b = queue.store(), queue.store()
    job, created = a.submit(_spec(id="look-1", params={"k": 2}))
    assert created and job.status == "queued" and job.output_location == "s3://jobs/out/look-1.out"
    again, created = b.submit(_spec(id="look-1", params={"k": 2}))
    assert not created and again.token == job.token and again.seq == job.seq
    # The id with another input or other options: someone else's request (review, s42).
    for other in (_spec(id="look-1", input_body=b"other", params={"k": 2}), _spec(id="look-1")):
        with pytest.raises(InferenceIdInUseError):
            b.submit(other)
    assert queue.depth() == (1, 0)  # one message: the second submission sent none
    view = b.view("look-1")
    assert view.status == "queued" and view.to_dict()["OutputLocation"] == job.output_location
    assert b.get("look-1").params == {"k": 2} and b.get("look-1").input_body is None
    for unknown in ("nope", "../jobs/look-1", ""):
        with pytest.raises(NotFoundError):
            b.view(unknown)
    with pytest.raises(InvalidOptionsError):
        a.submit(_spec(id="a/b"))
    second, _ = a.submit(_spec())
    assert [v.id for v in b.list_jobs().jobs] == ["look-1", second.id]
    assert [v.id for v in b.list_jobs(after_seq=job.seq).jobs] == [second.id]
    assert b.list_jobs(status="running").jobs == []
    assert b.counts() == {"queued": 2, "running": 0, "succeeded": 0, "failed": 0}
    assert [e["event"] for e in b.events("look-1")] == ["submitted"]


def test_claims_are_exclusive_and_finish_happens_once(queue: Queue) -> None:
    for i in range(12):
        queue.store().submit(_spec(id=f"j{i:02d}"))
    stores = [queue.store(), queue.store(), queue.store()]
    taken: dict[str, tuple[SqsJobStore, str, int]] = {}
    lock = threading.Lock()

    def work(store: SqsJobStore) -> None:
        owner = new_owner()
        while jobs := store.claim(owner, lease_s=60, limit=2):
            with lock:
                for job in jobs:
                    assert job.id not in taken, "claimed twice"
                    assert job.input_body == b"x" and job.attempts == 1
                    taken[job.id] = (store, owner, job.attempts)

    threads = [threading.Thread(target=work, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(taken) == [f"j{i:02d}" for i in range(12)]
    assert queue.depth() == (0, 12)
    store, owner, attempt = taken["j00"]
    other = next(s for s in stores if s is not store)
    assert not other.finish("j00", "someone-else", attempt, "succeeded")
    assert not store.finish("j00", owner, attempt + 1, "succeeded")
    assert store.finish("j00", owner, attempt, "failed", {"code": "x", "message": "m"})
    assert not store.finish("j00", owner, attempt, "succeeded")  # once
    ended = other.get("j00")
    assert ended.status == "failed" and ended.error == {"code": "x", "message": "m"}
    assert [e["event"] for e in other.events("j00")] == ["submitted", "claimed", "failed"]
    assert queue.depth() == (0, 11)  # its message is gone
    assert not [k for k in queue.keys("inputs") if k.startswith("j00/")]  # and its input
    for job_id, (s, o, n) in taken.items():
        if job_id != "j00":
            assert s.finish(job_id, o, n, "succeeded")
    assert queue.depth() == (0, 0) and queue.keys("inputs") == []
    assert other.counts() == {"queued": 0, "running": 0, "succeeded": 11, "failed": 1}


class _RetriedPuts:
    """An S3 client whose record writes land and whose answers are lost, so the client sends
    them again (as botocore's retries do after a timeout): the retry is refused (412) for the
    first one's record."""

    def __init__(self, real: Any) -> None:
        self._real, self.retried = real, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def put_object(self, **kwargs: Any) -> Any:
        answer = self._real.put_object(**kwargs)
        if "IfMatch" in kwargs or "IfNoneMatch" in kwargs:
            self.retried += 1
            return self._real.put_object(**kwargs)  # the retry: 412
        return answer


def test_a_record_write_retried_after_a_lost_answer_is_its_own_not_anothers(
    queue: Queue,
) -> None:
    """Before, the retry's 412 read as another server's write: the claim was dropped while its
    record said running (the job waited out its lease), the end deleted its own done marker
    ("someone else's job") and answered False."""
    store = queue.store()
    store.submit(_spec(id="lost-1"))
    flaky = _RetriedPuts(store._s3)
    store._s3 = flaky
    owner = new_owner()
    jobs = store.claim(owner, lease_s=60, limit=1)
    assert [j.id for j in jobs] == ["lost-1"] and jobs[0].attempts == 1
    assert store.finish("lost-1", owner, 1, "succeeded")
    assert flaky.retried == 2  # the claim and the end, each refused on its retry
    other = queue.store()
    assert other.get("lost-1").status == "succeeded"
    assert [e["event"] for e in other.events("lost-1")] == ["submitted", "claimed", "succeeded"]
    assert any(k.endswith(".succeeded.lost-1") for k in queue.keys("done"))
    assert other.counts() == {"queued": 0, "running": 0, "succeeded": 1, "failed": 0}


def test_an_expired_lease_is_taken_over_and_only_the_new_owner_finishes(queue: Queue) -> None:
    first, second = queue.store(), queue.store()
    job, _ = first.submit(_spec(id="slow"))
    dead = new_owner()
    [claimed] = first.claim(dead, lease_s=1)
    assert second.claim(new_owner(), lease_s=1) == []  # held: invisible
    alive = new_owner()
    [again] = wait_for(lambda: second.claim(alive, lease_s=30))
    assert again.id == "slow" and again.attempts == 2 and again.token == job.token
    assert again.input_body == b"x"
    events = [(e["event"], e["owner"]) for e in second.events("slow")]
    assert events == [
        ("submitted", None),
        ("claimed", dead),
        ("requeued", alive),
        ("claimed", alive),
    ]
    assert first.renew(dead, lease_s=30) == 0  # not its job any more
    assert not first.finish("slow", dead, claimed.attempts, "succeeded")
    assert second.finish("slow", alive, again.attempts, "succeeded")
    assert first.get("slow").status == "succeeded"
    assert queue.depth() == (0, 0)
    assert queue.keys("done")[0].endswith(".succeeded.slow") and len(queue.keys("done")) == 1


def test_a_released_job_is_no_longer_renewed_and_comes_back_after_its_delay(
    queue: Queue,
) -> None:
    """A job whose outcome could not be written is given back (review, session 49: it was
    renewed for as long as its server lived): its owner renews it no more, and after the
    delay another receiver takes it over as its next attempt."""
    store, other = queue.store(), queue.store()
    store.submit(_spec(id="back"))
    owner = new_owner()
    [claimed] = store.claim(owner, lease_s=30)
    assert not store.release("back", new_owner(), claimed.attempts, delay_s=0)  # not its job
    assert store.release("back", owner, claimed.attempts, delay_s=0)
    assert store.get("back").status == "queued"
    assert store.renew(owner, lease_s=30) == 0
    assert not store.finish("back", new_owner(), claimed.attempts, "succeeded")
    taker = new_owner()
    [again] = wait_for(lambda: other.claim(taker, lease_s=30))
    assert again.id == "back" and again.attempts == 2
    events = [(e["event"], e["owner"]) for e in other.events("back")]
    assert events[-2:] == [("released", owner), ("claimed", taker)]
    assert other.get("back").status == "running"
    assert other.finish("back", taker, again.attempts, "succeeded")


def test_renew_extends_the_lease_and_duplicates_wait_for_it(queue: Queue) -> None:
    store, other = queue.store(), queue.store()
    job, _ = store.submit(_spec(id="dup"))
    owner = new_owner()
    [claimed] = store.claim(owner, lease_s=30)
    before = store.get("dup").lease_expires
    assert store.renew(owner, lease_s=60) == 1
    assert store.get("dup").lease_expires > before  # type: ignore[operator]
    # SQS delivers at least once: a second message for a job that is running under a live
    # lease is hidden again, not claimed.
    queue.sqs.send_message(
        QueueUrl=queue.url, MessageBody=json.dumps({"id": "dup", "token": job.token})
    )
    assert other.claim(new_owner(), lease_s=30) == []
    assert queue.depth() == (0, 2)
    assert store.get("dup").attempts == 1
    # A message naming another token (a submission that lost a race) is dropped.
    queue.sqs.send_message(QueueUrl=queue.url, MessageBody=json.dumps({"id": "dup", "token": "t"}))
    assert other.claim(new_owner(), lease_s=30) == []
    assert queue.depth() == (0, 2)
    assert store.finish("dup", owner, claimed.attempts, "succeeded")


def test_a_message_that_arrives_before_its_record_is_claimed(
    queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The message is sent before the record is written: a receiver that finds no record yet
    looks again, and never drops the job."""
    store = queue.store()
    store.submit(_spec(id="early"))
    real = store._read
    misses = iter([True])  # the first read of the record finds nothing, as if still on its way

    def read(key: str) -> Any:
        return None if key.endswith("/early.json") and next(misses, False) else real(key)

    monkeypatch.setattr(store, "_read", read)
    [job] = store.claim(new_owner())
    assert job.id == "early" and job.attempts == 1


def test_messages_without_a_job_are_dropped_once_old(queue: Queue) -> None:
    patient, strict = queue.store(), queue.store(orphan_message_s=0.0)
    body = json.dumps({"id": "ghost", "token": "t"})
    queue.sqs.send_message(QueueUrl=queue.url, MessageBody=body)
    queue.sqs.send_message(QueueUrl=queue.url, MessageBody="not json")
    assert patient.claim(new_owner(), limit=10) == []
    assert queue.depth() == (0, 1)  # the ghost's record may still be on its way: kept
    strict_claim = wait_for(lambda: strict.claim(new_owner()) == [] and queue.depth() == (0, 0))
    assert strict_claim


def test_a_claim_reads_past_messages_without_a_job(queue: Queue) -> None:
    """Messages whose job has no record (yet) are put back for a while, and the same claim
    reads on: a claim that came back empty idled its worker for every such message, so 21 of
    them held 5 real jobs back 50-57 s on moto (session 35; 9.5-9.8 s now)."""
    store = queue.store()
    for n in range(3):
        body = json.dumps({"id": f"ghost-{n}", "token": "t"})
        queue.sqs.send_message(QueueUrl=queue.url, MessageBody=body)
    store.submit(_spec(id="real"))
    [job] = store.claim(new_owner())  # one claim: past the three ghosts to the real job
    assert job.id == "real"
    assert queue.depth() == (0, 4)  # the ghosts are kept (their records may be on the way)


def test_a_claim_that_fails_stops_reading(queue: Queue, monkeypatch: pytest.MonkeyPatch) -> None:
    """A message whose record cannot be read (S3 down) ends the claim: reading on would hide
    every message of the queue for a lease, each with a traceback (code review, session 35)."""
    store = queue.store()
    for n in range(5):
        store.submit(_spec(id=f"job-{n}"))

    def down(*args: Any, **kwargs: Any) -> Any:
        raise StygigError("S3 is unreachable", code="storage_error")

    monkeypatch.setattr(store, "_update", down)
    assert store.claim(new_owner()) == []
    assert queue.depth() == (4, 1)  # one message taken and failed; the others still visible


def test_close_releases_held_jobs_to_other_servers(queue: Queue) -> None:
    leaving, staying = queue.store(), queue.store()
    leaving.submit(_spec(id="handover"))
    [job] = leaving.claim(new_owner(), lease_s=300)
    leaving.close()
    [taken] = wait_for(lambda: staying.claim(new_owner(), lease_s=30), timeout=10)
    assert taken.id == job.id and taken.attempts == 2


def test_the_queue_is_bounded(queue: Queue) -> None:
    store = queue.store()
    limits = QueueLimits(max_jobs=2, max_bytes=10)
    store.submit(_spec(id="a", input_body=b"12345"), limits)
    with pytest.raises(OverloadedError) as bytes_full:
        store.submit(_spec(id="b", input_body=b"123456"), limits)
    assert bytes_full.value.code == "queue_full"
    store.submit(_spec(id="b", input_body=None, input_location="s3://jobs/in/x.jpg"), limits)
    with pytest.raises(OverloadedError) as jobs_full:
        store.submit(_spec(id="c"), limits)
    assert jobs_full.value.code == "queue_full"
    # an existing id is still answered
    assert store.submit(_spec(id="a", input_body=b"12345"), limits)[1] is False
    with pytest.raises(NotFoundError):
        store.get("c")  # nothing of the refused job was kept


def test_notifications_and_retention(queue: Queue) -> None:
    here = queue.store()
    elsewhere = queue.store(notify_scan_s=0.0, notify_takeover_s=3600.0)
    rescuer = queue.store(notify_scan_s=0.0, notify_takeover_s=0.0)
    here.submit(_spec(id="n1"))
    owner = new_owner()
    [job] = here.claim(owner)
    assert here.finish("n1", owner, job.attempts, "succeeded")
    assert [j.id for j in here.pending_notifications()] == ["n1"]  # from memory
    assert elsewhere.pending_notifications() == []  # left to the server that finished it
    assert [j.id for j in rescuer.pending_notifications()] == ["n1"]  # unless it is late
    assert here.purge(time.time() + 1) == 0  # not before it was notified
    here.mark_notified("n1", "sent")
    assert here.pending_notifications() == [] and rescuer.pending_notifications() == []
    assert here.get("n1").notify_state == "sent"
    assert here.purge(time.time() - 3600) == 0  # too recent
    assert here.purge(time.time() + 1) == 1
    with pytest.raises(NotFoundError):
        here.get("n1")
    assert queue.keys("done") == [] and queue.keys("index") == [] and queue.keys("jobs") == []


def test_fifo_queues_work_too(endpoint: str) -> None:
    queue = Queue(endpoint, fifo=True)
    store = queue.store()
    store.submit(_spec(id="f1"))
    store.submit(_spec(id="f2"))
    owner = new_owner()
    claimed = wait_for(lambda: store.claim(owner, limit=2) or None)
    claimed += wait_for(lambda: store.claim(owner, limit=2) or None) if len(claimed) < 2 else []
    assert sorted(j.id for j in claimed) == ["f1", "f2"]
    for job in claimed:
        assert store.finish(job.id, owner, job.attempts, "succeeded")


def test_aws_failures_are_503_queue_unavailable(queue: Queue) -> None:
    from botocore.config import Config

    dead = f"http://127.0.0.1:{free_port()}"
    config = Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=1)
    s3 = boto3.client("s3", endpoint_url=dead, config=config, **_CREDENTIALS)
    store = SqsJobStore(queue.name, queue.results, sqs=queue.sqs, s3=s3, wait_s=0)
    with pytest.raises(OverloadedError) as e:
        store.submit(_spec())
    assert e.value.code == "queue_unavailable" and dead not in e.value.message
    with pytest.raises(OverloadedError):
        store.view("x")


def test_open_job_queue_reads_the_standard_aws_settings(
    queue: Queue, endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with open_job_queue(f"sqs://{queue.name}?results={queue.results}&region=us-east-1") as s:
        assert s.submit(_spec(id="env"))[1]
    with pytest.raises(Exception) as missing:
        open_job_queue(f"sqs://no-such-queue?results={queue.results}&region=us-east-1")
    assert getattr(missing.value, "code", "") == "queue_not_found"


class _Answer:
    def to_json(self) -> bytes:
        return b'{"outfit":null}'


class _Recommender:
    """Stands in for the recommender; counts calls per worker."""

    def __init__(self) -> None:
        self.calls = 0

    def recommend(self, query: Any, options: Any) -> _Answer:
        self.calls += 1
        return _Answer()


def test_two_workers_share_one_queue(
    queue: Queue, endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real worker over two stores: every job done once, by one of them, results in S3."""
    from stygig import storage

    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setattr(storage, "_clients", {})
    recommenders = [_Recommender(), _Recommender()]
    stores = [queue.store(), queue.store()]
    config = WorkerConfig(concurrency=2, poll_s=0.05, lease_s=30)
    workers = [
        JobWorker(s, lambda r=r: r, config)  # type: ignore[misc]
        for s, r in zip(stores, recommenders, strict=True)
    ]
    body = json.dumps({"item_ids": ["x"]}).encode()
    ids = [
        stores[0].submit(_spec(input_body=body, content_type="application/json"))[0].id
        for _ in range(10)
    ]
    for w in workers:
        w.start()
    try:
        wait_for(lambda: all(stores[1].view(i).status == "succeeded" for i in ids), 60)
    finally:
        for w in workers:
            w.stop(10)
    assert sum(r.calls for r in recommenders) == 10
    for job_id in ids:
        events = stores[0].events(job_id)
        assert [e["event"] for e in events if e["event"] in ("succeeded", "failed")] == [
            "succeeded"
        ]
        document = json.loads(storage.read_bytes(f"s3://jobs/out/{job_id}.out"))
        assert document["InferenceId"] == job_id
    assert queue.depth() == (0, 0)


def test_listing_and_counting_read_a_bounded_number_of_objects_per_call(
    queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review: ``status=running`` over jobs none of which runs read every record in one call
    (one S3 read each), and ``counts`` listed every ``done`` marker. Now a call reads at most
    ``scan_limit`` records and hands back a cursor; ``counts`` lists at most ``count_limit``
    markers and says the numbers are lower bounds."""
    writer = queue.store()
    ids = [writer.submit(_spec(id=f"l{i}"))[0].id for i in range(7)]
    reader = queue.store(scan_limit=3, count_limit=4)
    reads: list[str] = []
    read = reader._read

    def counted(key: str) -> Any:
        reads.append(key)
        return read(key)

    monkeypatch.setattr(reader, "_read", counted)
    per_call: list[int] = []
    after: int | None = 0
    while after is not None:
        reads.clear()
        page = reader.list_jobs(status="running", after_seq=after)
        assert page.jobs == []
        per_call.append(len(reads))
        after = page.next_after
    assert per_call == [3, 3, 1]
    listed: list[str] = []
    after = 0
    while after is not None:
        page = reader.list_jobs(limit=100, after_seq=after)
        listed += [v.id for v in page.jobs]
        after = page.next_after
    assert listed == ids
    prefix = queue.results.split("/", 3)[3]
    for i in range(6):
        key = f"{prefix}/done/{i:015d}.{'failed' if i == 5 else 'succeeded'}.x{i}"
        queue.s3.put_object(Bucket=BUCKET, Key=key, Body=b"")
    counts = reader.counts()
    assert counts["queued"] == 7 and counts["succeeded"] == 4 and counts["failed"] == 0
    assert not counts.complete
    exact = writer.counts()
    assert (exact["succeeded"], exact["failed"], exact.complete) == (5, 1, True)
    with pytest.raises(InvalidOptionsError):
        queue.store(scan_limit=0)


def test_a_submission_that_fails_half_way_leaves_nothing_behind(
    queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hole: an input and an index entry written before SendMessage failed stayed for ever
    and counted against the byte limit: after 4 such failures a 30 KB limit refused every
    inline submission on an empty queue."""
    store = queue.store()
    limits = QueueLimits(max_jobs=10, max_bytes=10)

    def down(**_: Any) -> None:
        raise RuntimeError("SQS is down")

    monkeypatch.setattr(store._sqs, "send_message", down)
    for n in range(3):
        with pytest.raises(OverloadedError) as e:
            store.submit(_spec(id=f"lost-{n}", input_body=b"12345678"), limits)
        assert e.value.code == "queue_unavailable"
    assert queue.keys("inputs") == [] and queue.keys("index") == [] and queue.keys("jobs") == []
    monkeypatch.undo()
    job, created = store.submit(_spec(id="after", input_body=b"12345678"), limits)
    assert created and job.status == "queued"


def test_a_corrupt_record_is_stepped_over_not_failed_on_for_ever(queue: Queue) -> None:
    """Hole: one record edited into non-JSON made every purge raise (and with it the
    notifications after it, 78 tracebacks in 20 s), and its message came back for ever."""
    store = queue.store(notify_scan_s=0.0, notify_takeover_s=0.0)
    owner = new_owner()
    for job_id in ("bad", "good"):
        store.submit(_spec(id=job_id))
    prefix = queue.results.split("/", 3)[3]
    queue.s3.put_object(Bucket=BUCKET, Key=f"{prefix}/jobs/bad.json", Body=b"{not json")
    claimed = wait_for(lambda: [j.id for j in store.claim(owner, limit=10)] or None)
    assert claimed == ["good"]
    assert wait_for(lambda: queue.depth() == (0, 1))  # the bad one's message is gone
    assert store.finish("good", owner, 1, "succeeded")
    assert [j.id for j in store.pending_notifications()] == ["good"]
    store.mark_notified("good", "sent")
    assert store.purge(time.time() + 1) == 1
    assert [v.id for v in store.list_jobs().jobs] == []
    with pytest.raises(StygigError) as e:
        store.view("bad")
    assert e.value.code == "corrupt_record" and prefix not in e.value.message


def test_an_inline_input_deleted_before_its_job_runs_is_input_lost(
    queue: Queue, tmp_path: Path
) -> None:
    """It was read as an empty body: ``empty_image``, the client's mistake."""
    from stygig.jobs.worker import run_job

    store = queue.store()
    out = tmp_path / "out"
    spec = JobSpec(str(out / "{id}.out"), str(out / "{id}-error.out"), input_body=b"\xffphoto")
    store.submit(dataclasses.replace(spec, id="lost"))
    prefix = queue.results.split("/", 3)[3]
    [key] = queue.keys("inputs")
    queue.s3.delete_object(Bucket=BUCKET, Key=f"{prefix}/inputs/{key}")
    owner = new_owner()
    [job] = wait_for(lambda: store.claim(owner) or None)
    assert job.input_body is None
    status, error = run_job(job, recommender=None)  # type: ignore[arg-type]
    assert status == "failed" and error is not None and error["code"] == "input_lost"


def test_retention_deletes_the_jobs_own_documents(queue: Queue, tmp_path: Path) -> None:
    from stygig.jobs.worker import _document

    store = queue.store()
    out = tmp_path / "out"
    spec = JobSpec(str(out / "{id}.out"), str(out / "{id}-error.out"), input_body=b"x")
    job, _ = store.submit(dataclasses.replace(spec, id="kept-then-gone"))
    out.mkdir()
    Path(job.output_location).write_bytes(_document(job, b'{"outfit":null}'))
    owner = new_owner()
    [claimed] = wait_for(lambda: store.claim(owner) or None)
    assert store.finish(claimed.id, owner, claimed.attempts, "succeeded")
    store.mark_notified(claimed.id, "none")
    assert store.purge(time.time() + 1) == 1
    assert not Path(job.output_location).exists()


def test_finished_jobs_lose_their_options_and_are_bounded_in_number(queue: Queue) -> None:
    """Review, session 40 (F3), on the shared queue as in SQLite: a finished job's record kept
    its options (up to a request head's 64 KB) for the retention time, and only age bounded
    the finished jobs kept. Now the options are emptied at the end, and beyond
    ``max_finished`` the oldest finished jobs are purged whatever their age."""
    store = queue.store(max_finished=2)
    options = {"exclude_ids": [f"x{'y' * 50}{i:04d}" for i in range(200)]}
    for i in range(4):
        store.submit(_spec(id=f"j{i}", params=options))
    finished: list[str] = []
    owner = new_owner()
    while len(finished) < 4:
        [job] = wait_for(lambda: store.claim(owner) or None)
        assert job.params == options  # a job to run has them
        assert store.finish(job.id, owner, job.attempts, "succeeded")
        store.mark_notified(job.id, "none")
        finished.append(job.id)
    record = json.loads(
        queue.s3.get_object(Bucket=BUCKET, Key=f"{store.prefix}jobs/{finished[0]}.json")[
            "Body"
        ].read()
    )
    assert record["params"] == {} and store.get(finished[0]).params == {}
    by_end = [key.split(".", 2)[2] for key in sorted(queue.keys("done"))]  # oldest first
    assert sorted(by_end) == sorted(finished)
    assert store.purge(0.0) == 2  # none is past an age; two beyond the number
    assert sorted(k.removesuffix(".json") for k in queue.keys("jobs")) == sorted(by_end[2:])
    assert len(queue.keys("done")) == 2
    assert store.purge(0.0) == 0


def test_pending_notifications_page_past_those_being_sent(queue: Queue) -> None:
    """Review, session 40 (F4): the worker reads the due notifications a page at a time past
    those it is still sending (``after_seq``), here as in SQLite, in submission order."""
    store = queue.store()
    for job_id in ("p1", "p2", "p3"):
        store.submit(_spec(id=job_id))
    owner = new_owner()
    for _ in range(3):
        [job] = wait_for(lambda: store.claim(owner) or None)
        assert store.finish(job.id, owner, job.attempts, "succeeded")
    every = store.pending_notifications()
    assert [j.id for j in every] == ["p1", "p2", "p3"]
    assert [j.id for j in store.pending_notifications(limit=1)] == ["p1"]
    assert [j.id for j in store.pending_notifications(after_seq=every[0].seq)] == ["p2", "p3"]
    assert store.pending_notifications(after_seq=every[2].seq) == []

"""The SQLite job store: claims, leases, exactly-once finish, orphan recovery."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stygig.errors import InvalidOptionsError, NotFoundError
from stygig.jobs.store import InferenceIdInUseError, JobSpec, JobStore, QueueLimits, new_owner
from stygig.serving.async_api import AsyncConfig


def _spec(**kw: object) -> JobSpec:
    kw.setdefault("input_body", b"x")
    return JobSpec("out/{id}.out", "out/{id}-error.out", **kw)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    s = JobStore(tmp_path / "jobs.db", synchronous="NORMAL")
    yield s
    s.close()


def test_submit_is_idempotent_by_id_and_fills_locations(store: JobStore) -> None:
    job, created = store.submit(_spec(id="a1"))
    assert created and job.status == "queued" and job.output_location == "out/a1.out"
    again, created = store.submit(_spec(id="a1"))
    assert not created and again.seq == job.seq
    # The id with another input, type or options is another request: refused, 409 (review,
    # session 42: it was told "queued" and given the first request's answer).
    for other in (
        _spec(id="a1", input_body=b"other"),
        _spec(id="a1", content_type="image/png"),
        _spec(id="a1", params={"k": 3}),
    ):
        with pytest.raises(InferenceIdInUseError) as taken:
            store.submit(other)
        assert taken.value.http_status == 409
    store.submit(_spec(id="a1", webhook="https://example.test/h"))  # where to tell: the same
    # A set-like list option in another order is the same request; the query's items are not.
    sets = {"include_categories": ["shoes", "bag"], "item_ids": ["a", "b"]}
    store.submit(_spec(id="s1", params=sets))
    again = {"include_categories": ["bag", "shoes"], "item_ids": ["a", "b"]}
    assert store.submit(_spec(id="s1", params=again))[1] is False
    with pytest.raises(InferenceIdInUseError):
        store.submit(_spec(id="s1", params={**sets, "item_ids": ["b", "a"]}))
    # A job stored before fingerprints were (no fingerprint): taken as the same request.
    store._db.execute("UPDATE jobs SET fingerprint = NULL WHERE id = 'a1'")
    assert store.submit(_spec(id="a1", params={"k": 3}))[1] is False
    assert store.counts() == {"queued": 2, "running": 0, "succeeded": 0, "failed": 0}
    with pytest.raises(NotFoundError):
        store.get("nope")
    with pytest.raises(InvalidOptionsError):
        JobSpec("o", "f")  # neither a body nor a location


def test_claims_are_exclusive_across_threads(store: JobStore) -> None:
    for i in range(200):
        store.submit(_spec(id=f"j{i:03d}"))
    taken: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        owner = new_owner()
        while jobs := store.claim(owner, limit=3):
            with lock:
                taken.extend(j.id for j in jobs)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(taken) == [f"j{i:03d}" for i in range(200)]  # each once, none twice


def test_finish_only_once_and_only_by_the_holder(store: JobStore) -> None:
    store.submit(_spec(id="a"))
    me, other = new_owner(), new_owner()
    (job,) = store.claim(me)
    assert job.attempts == 1 and job.status == "running" and job.started_at is not None
    assert not store.finish("a", other, 1, "succeeded")
    assert not store.finish("a", me, 2, "succeeded")
    assert store.finish("a", me, 1, "failed", {"code": "x", "message": "y"})
    assert not store.finish("a", me, 1, "succeeded")
    done = store.get("a")
    assert done.status == "failed" and done.error == {"code": "x", "message": "y"}
    assert [e["event"] for e in store.events("a")] == ["submitted", "claimed", "failed"]
    assert [j.id for j in store.pending_notifications()] == ["a"]
    store.mark_notified("a", "sent")
    assert store.pending_notifications() == []


def test_expired_lease_is_requeued_and_attempts_counted(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.submit(_spec(id="a"))
    slow = "otherhost:1:abcd"  # on another machine: only the lease tells
    store.claim(slow, lease_s=60)
    me = new_owner()
    assert store.requeue_orphans(me) == []
    later = time.time() + 61  # the clock moves past the lease (no race with a short one)
    monkeypatch.setattr(time, "time", lambda: later)
    assert store.requeue_orphans(me) == ["a"]
    (again,) = store.claim(me)
    assert again.attempts == 2
    assert not store.finish("a", slow, 1, "succeeded")  # the presumed-dead worker is too late
    assert store.finish("a", me, 2, "succeeded")


def test_dead_local_process_is_requeued_at_once(store: JobStore) -> None:
    store.submit(_spec(id="a"))
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()

    dead = f"{socket.gethostname()}:{proc.pid}:dead0000"
    store.claim(dead, lease_s=3600)
    alive = f"{socket.gethostname()}:{os.getppid()}:x"
    assert store.requeue_orphans(alive) == ["a"]  # the lease is long, but its owner is gone
    assert store.list_jobs(status="queued").jobs[0].id == "a"


def test_renew_extends_only_my_leases(store: JobStore) -> None:
    store.submit(_spec(id="a"))
    store.submit(_spec(id="b"))
    me, other = new_owner(), "otherhost:1:x"
    store.claim(me, lease_s=0.05)
    store.claim(other, lease_s=0.05)
    assert store.renew(me, lease_s=60) == 1
    time.sleep(0.1)
    assert store.requeue_orphans(me) == ["b"]


def test_purge_keeps_unfinished_and_unnotified_jobs(store: JobStore) -> None:
    for job_id in ("done", "pending", "queued"):
        store.submit(_spec(id=job_id))
    me = new_owner()
    for job_id in ("done", "pending"):
        (job,) = store.claim(me)
        assert job.id == job_id and store.finish(job_id, me, 1, "succeeded")
    store.mark_notified("done", "sent")
    assert store.purge(time.time() - 3600) == 0  # nothing is that old
    assert store.purge(time.time() + 1, batch=1) == 1  # the notification of "pending" is due
    assert [v.id for v in store.list_jobs().jobs] == ["pending", "queued"]
    assert store.events("pending") and store.events("queued")
    with pytest.raises(NotFoundError):  # its events went with it
        store.events("done")


def test_queue_limits_must_be_positive(tmp_path: Path) -> None:
    for jobs, held in ((0, 1), (1, 0)):
        with pytest.raises(InvalidOptionsError):
            QueueLimits(max_jobs=jobs, max_bytes=held)
    with pytest.raises(InvalidOptionsError):
        AsyncConfig(jobs_db=tmp_path / "jobs.db", output="out", max_queued=0)
    limits = AsyncConfig(jobs_db=tmp_path / "jobs.db", output="out").queue_limits()
    assert limits == QueueLimits(max_jobs=10_000, max_bytes=1024**3)


def test_listing_pages_with_a_cursor_and_counts_stop_at_the_limit(tmp_path: Path) -> None:
    """Review: every read a client can ask for does bounded work. A page stops at ``limit``
    with ``next_after`` to go on from (``None`` at the end); a status is counted up to
    ``count_limit`` and beyond is reported as "at least" (``complete`` false)."""
    store = JobStore(tmp_path / "jobs.db", synchronous="NORMAL", count_limit=3)
    try:
        for i in range(5):
            store.submit(_spec(id=f"j{i}"))
        me = new_owner()
        (job,) = store.claim(me)
        assert store.finish(job.id, me, 1, "failed")
        seen: list[str] = []
        after: int | None = 0
        pages = 0
        while after is not None:
            page = store.list_jobs(limit=2, after_seq=after)
            seen += [v.id for v in page.jobs]
            after, pages = page.next_after, pages + 1
        assert seen == [f"j{i}" for i in range(5)] and pages == 3
        failed = store.list_jobs(status="failed")
        assert [v.id for v in failed.jobs] == ["j0"] and failed.next_after is None
        counts = store.counts()
        assert counts == {"queued": 3, "running": 0, "succeeded": 0, "failed": 1}
        assert not counts.complete  # 4 queued: counted up to 3
        store.count_limit = 4
        assert store.counts()["queued"] == 4 and store.counts().complete
        with pytest.raises(NotFoundError):  # as the SQS store answers
            store.events("nope")
        with pytest.raises(InvalidOptionsError):
            JobStore(tmp_path / "other.db", count_limit=0)
    finally:
        store.close()


def test_pending_notifications_page_past_those_being_sent(store: JobStore) -> None:
    """Review, session 40 (F4): the worker reads the due notifications a page at a time past
    those it is still sending (``after_seq``), in submission order."""
    owner = new_owner()
    for job_id in ("p1", "p2", "p3"):
        store.submit(_spec(id=job_id))
        (job,) = store.claim(owner)
        assert store.finish(job_id, owner, job.attempts, "succeeded")
    every = store.pending_notifications()
    assert [j.id for j in every] == ["p1", "p2", "p3"]
    assert [j.id for j in store.pending_notifications(1, after_seq=every[0].seq)] == ["p2"]
    assert store.pending_notifications(after_seq=every[2].seq) == []

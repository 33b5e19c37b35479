"""What the async side keeps, and for how long: the job store and the output folder.

In-process, on real SQLite files and real folders. Every test names the hole of the security
issue it covers.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request, Response
from fastapi.testclient import TestClient

from stygig.errors import OverloadedError, StygigError
from stygig.jobs import Job, JobSpec, JobStore, JobWorker, WorkerConfig
from stygig.jobs.store import QueueLimits, new_owner
from stygig.serving.async_api import AsyncConfig, AsyncJobs
from stygig.serving.responses import error_response
from tests.integration.test_jobs import wait_for


def _spec(job_id: str, body: bytes = b"x" * 1000) -> JobSpec:
    return JobSpec("out/{id}.out", "out/{id}-error.out", input_body=body, id=job_id)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    s = JobStore(tmp_path / "jobs.db", synchronous="NORMAL")
    yield s
    s.close()


def _finish(store: JobStore, job_id: str, *, ended_ago_s: float = 0.0) -> None:
    owner = new_owner()
    (job,) = store.claim(owner)
    assert job.id == job_id
    assert store.finish(job_id, owner, job.attempts, "succeeded")
    store.mark_notified(job_id, "none")
    with sqlite3.connect(store.path) as db:
        db.execute(
            "UPDATE jobs SET finished_at = ? WHERE id = ?", (time.time() - ended_ago_s, job_id)
        )
    db.close()


def _rows(store: JobStore, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(store.path) as db:
        rows = db.execute(sql).fetchall()
    db.close()
    return rows


def test_bodies_are_dropped_when_a_job_finishes(store: JobStore) -> None:
    """Item 10: the store kept every inline body (up to 6 MB each) forever."""
    store.submit(_spec("a"))
    store.submit(_spec("b"))
    _finish(store, "a")
    bodies = dict(_rows(store, "SELECT id, length(input_body) FROM jobs"))
    assert bodies == {"a": None, "b": 1000}  # the queued job still has its input


def test_retention_deletes_old_finished_jobs_and_their_events(store: JobStore) -> None:
    """Item 10: jobs and their events were never deleted; the worker's housekeeping now does it
    for finished jobs past the retention time (queued ones and recent ones stay)."""
    for job_id in ("old", "recent", "queued"):
        store.submit(_spec(job_id))
    _finish(store, "old", ended_ago_s=3 * 3600)
    _finish(store, "recent", ended_ago_s=60)
    worker = JobWorker(store, lambda: None, WorkerConfig(poll_s=0.05), retention_s=3600)
    worker.start()
    try:
        wait_for(lambda: not _rows(store, "SELECT 1 FROM jobs WHERE id = 'old'"), 10)
    finally:
        worker.stop()
    assert sorted(r[0] for r in _rows(store, "SELECT id FROM jobs")) == ["queued", "recent"]
    assert {r[0] for r in _rows(store, "SELECT job_id FROM events")} == {"queued", "recent"}


def test_reads_for_views_never_load_inputs(store: JobStore) -> None:
    """Items 4 and 10: ``GET /async/jobs`` ran ``SELECT *`` over every job, bodies included, and
    showed input locations; a status view loaded the input too."""
    store.submit(_spec("a"))
    store.submit(JobSpec("o/{id}", "f/{id}", input_location="s3://shop/in/secret.jpg", id="b"))
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    views = store.list_jobs().jobs
    one = store.view("b")
    job = store.get("a")
    store._db.set_trace_callback(None)
    assert [v.id for v in views] == ["a", "b"]
    assert all("input" not in v.to_dict() and "InputLocation" not in v.to_dict() for v in views)
    assert "secret" not in str(one.to_dict())
    assert job.input_body is None  # only a claim hands the input to the worker
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 3
    assert all("*" not in s and "input_body FROM" not in s for s in selects), selects
    assert all("input_body," not in s.replace("NULL AS input_body,", "") for s in selects)


def test_a_store_from_before_tokens_gets_them(tmp_path: Path) -> None:
    """Item 7: job documents now carry a per-job token; an existing job file is migrated
    (a column added) and its old jobs keep working, new jobs get a token each."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,"
            " status TEXT NOT NULL, input_location TEXT, input_body BLOB, content_type TEXT,"
            " params TEXT NOT NULL DEFAULT '{}', output_location TEXT NOT NULL,"
            " failure_location TEXT NOT NULL, webhook TEXT, time_limit_s REAL NOT NULL,"
            " attempts INTEGER NOT NULL DEFAULT 0, max_attempts INTEGER NOT NULL, owner TEXT,"
            " lease_expires REAL, created_at REAL NOT NULL, started_at REAL, finished_at REAL,"
            " error TEXT, notify_state TEXT)"
        )
        db.execute(
            "INSERT INTO jobs (id, status, input_body, output_location, failure_location,"
            " time_limit_s, max_attempts, created_at) VALUES ('legacy', 'queued', x'00', 'o',"
            " 'f', 60, 3, 0)"
        )
    db.close()
    with JobStore(path) as migrated:
        legacy = migrated.get("legacy")
        fresh, _ = migrated.submit(_spec("fresh"))
        other, _ = migrated.submit(_spec("other"))
    assert legacy.token is None and legacy.owns({"outfit": None})
    # ... and the documents this version writes for it (a null token: found in session 41,
    # its own result was "not found" and a retry did not know it was written)
    assert legacy.owns({"outfit": None, "InferenceId": "legacy", "JobToken": None})
    assert not legacy.owns({"outfit": None, "InferenceId": "other", "JobToken": None})
    assert not legacy.owns({"outfit": None, "InferenceId": "legacy", "JobToken": "t"})
    assert fresh.token and fresh.token != other.token
    assert fresh.owns({"InferenceId": "fresh", "JobToken": fresh.token})
    assert not fresh.owns({"InferenceId": "fresh", "JobToken": other.token})
    assert not fresh.owns({"outfit": None})


def test_leftover_temp_files_are_cleaned_at_start(tmp_path: Path) -> None:
    """Item 13: a crash between a result's write and its rename left ``.<name>.*.tmp`` files
    that were never removed. Old ones go when the async side starts; fresh ones (a write in
    progress elsewhere) and other files stay."""
    out = tmp_path / "out"
    out.mkdir()
    stale, fresh = out / ".a.out.abcd1234.tmp", out / ".b.out.efgh5678.tmp"
    other = out / ".notes.tmp"
    for path in (stale, fresh, other):
        path.write_bytes(b"partial")
    hour_ago = time.time() - 3600
    os.utime(stale, (hour_ago, hour_ago))
    os.utime(other, (hour_ago, hour_ago))
    jobs = AsyncJobs(AsyncConfig(jobs_db=tmp_path / "jobs.db", output=str(out)), lambda: None)
    jobs.start()
    jobs.stop(1.0)
    assert sorted(p.name for p in out.iterdir()) == [fresh.name, other.name]


class _RaisingNotifier:
    """Stands in for the notifier: wants to send, and sending raises (a bug, an unexpected
    error from a library)."""

    def __init__(self) -> None:
        self.calls = 0

    def wants(self, job: Job) -> bool:
        return True

    def wants_operator(self, job: Job) -> bool:
        return True

    def send_operator(self, job: Job) -> bool:
        self.calls += 1
        raise RuntimeError("boom")

    def close(self) -> None:
        pass


def test_a_notifier_that_raises_is_recorded_not_retried_forever(store: JobStore) -> None:
    """Item 10 (bounded work): when sending raised, the notification stayed pending and was
    sent again about four times a second, forever."""
    store.submit(_spec("a"))
    owner = new_owner()
    (job,) = store.claim(owner)
    assert store.finish("a", owner, job.attempts, "succeeded")
    notifier = _RaisingNotifier()
    worker = JobWorker(store, lambda: None, WorkerConfig(poll_s=0.05), notifier=notifier)  # type: ignore[arg-type]
    worker.start()
    try:
        wait_for(lambda: _rows(store, "SELECT notify_state FROM jobs") == [("failed",)], 10)
    finally:
        worker.stop()
    assert notifier.calls == 1
    assert store.pending_notifications() == []


def test_unfinished_jobs_are_bounded_in_number_even_under_concurrent_submissions(
    tmp_path: Path,
) -> None:
    """Review item 6: nothing limited queued jobs; each keeps up to 6 MB inline until it runs,
    and retention purges finished jobs only. Submissions past ``max_jobs`` are refused, counted
    in the insert's own transaction: 8 threads on two connections never overshoot."""
    limits = QueueLimits(max_jobs=40, max_bytes=10**9)
    stores = [JobStore(tmp_path / "jobs.db", synchronous="NORMAL") for _ in range(2)]
    created: list[str] = []
    refused: list[str] = []
    lock = threading.Lock()

    def submit_many(store: JobStore, thread: int) -> None:
        for i in range(15):
            job_id = f"t{thread}-{i}"
            try:
                _, new = store.submit(_spec(job_id), limits)
            except OverloadedError as e:
                assert e.code == "queue_full" and e.http_status == 503
                with lock:
                    refused.append(job_id)
                continue
            assert new
            with lock:
                created.append(job_id)

    threads = [threading.Thread(target=submit_many, args=(stores[t % 2], t)) for t in range(8)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(created) == 40 and len(refused) == 8 * 15 - 40
        assert stores[0].counts()["queued"] == 40
        # A resubmission of an existing id still answers with that job, full or not.
        again, new = stores[1].submit(_spec(created[0]), limits)
        assert not new and again.id == created[0]
        # A finished job makes room again.
        owner = new_owner()
        (oldest,) = stores[0].claim(owner)
        assert stores[0].finish(oldest.id, owner, 1, "succeeded")
        stores[0].submit(_spec("after"), limits)
    finally:
        for store in stores:
            store.close()


def test_the_options_of_unfinished_jobs_count_against_the_byte_bound(store: JobStore) -> None:
    """Known since s40, fixed in s41: a job's options (up to the 64 KB request head, e.g. a
    list of 1,000 ids in the custom attributes) were not counted, so 10,000 queued jobs could
    hold 640 MB beyond the inputs' bound."""
    limits = QueueLimits(max_jobs=100, max_bytes=50_000)
    ids = ",".join(f"item-{n:05d}" for n in range(1000))  # ~11 KB of options a job
    stored = "s3://in/x.jpg"
    for n in range(4):
        store.submit(
            JobSpec("o/{id}", "f/{id}", input_location=stored, id=f"p{n}", params={"x": ids}),
            limits,
        )
    with pytest.raises(OverloadedError) as full:
        store.submit(
            JobSpec("o/{id}", "f/{id}", input_location=stored, id="p4", params={"x": ids}),
            limits,
        )
    assert full.value.code == "queue_full"


def test_inline_bytes_held_by_unfinished_jobs_are_bounded(store: JobStore) -> None:
    """Review item 6: the inline inputs of queued jobs had no total bound. Running jobs count
    too (their bodies stay until they finish); a finished job's body is dropped, and with it
    its share."""
    limits = QueueLimits(max_jobs=100, max_bytes=2500)
    store.submit(_spec("a"), limits)  # 1000 bytes each
    store.submit(_spec("b"), limits)
    with pytest.raises(OverloadedError) as full:
        store.submit(_spec("c"), limits)
    assert full.value.code == "queue_full"
    store.submit(JobSpec("o/{id}", "f/{id}", input_location="s3://in/x.jpg", id="d"), limits)
    store.claim(new_owner())  # "a" runs: it still holds its body
    with pytest.raises(OverloadedError):
        store.submit(_spec("c"), limits)
    owner = new_owner()
    store.claim(owner)  # "b"
    assert store.finish("b", owner, 1, "succeeded")
    store.submit(_spec("c"), limits)


def test_a_full_queue_is_a_503_with_retry_after(tmp_path: Path) -> None:
    """Review item 6, over HTTP: a submission to a full queue is answered 503 ``queue_full``
    with ``Retry-After`` (the server's own error mapping), nothing is stored, and resubmitting
    a known id still answers 202 with that job."""
    config = AsyncConfig(jobs_db=tmp_path / "jobs.db", output=str(tmp_path / "out"), max_queued=2)
    jobs = AsyncJobs(config, lambda: None)  # not started: what is queued stays queued
    app = FastAPI()
    app.include_router(jobs.router)

    @app.exception_handler(StygigError)
    async def _error(request: Request, exc: StygigError) -> Response:
        return error_response(exc)

    def submit(job_id: str) -> Any:
        return client.post(
            "/async/invocations",
            content=b'{"item_ids": ["sku-0001"]}',
            headers={"Content-Type": "application/json", "X-Amzn-SageMaker-Inference-Id": job_id},
        )

    try:
        with TestClient(app) as client:
            assert [submit(i).status_code for i in ("a", "b")] == [202, 202]
            full = submit("c")
            assert full.status_code == 503 and full.headers["Retry-After"]
            assert full.json()["error"]["code"] == "queue_full"
            again = submit("a")
            assert again.status_code == 202 and again.json()["InferenceId"] == "a"
            assert jobs.store.counts()["queued"] == 2
    finally:
        jobs.store.close()


def test_a_locked_store_is_503_and_an_end_it_could_not_take_is_recorded_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Holes: while another connection held the database's write lock, a submission was a 500
    after 30 s, and a job whose end could not be recorded stayed ``running`` for good (its
    lease renewed, the error never logged)."""
    from tests.integration.test_jobs import _SlowRecommender

    store = JobStore(tmp_path / "jobs.db", synchronous="NORMAL")
    store._db.execute("PRAGMA busy_timeout = 200")  # the test waits 0.2 s, not 30
    holder = sqlite3.connect(tmp_path / "jobs.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(OverloadedError) as e:
            store.submit(_spec("while-locked"))
        assert e.value.code == "queue_unavailable" and str(tmp_path) not in e.value.message
    finally:
        holder.execute("ROLLBACK")
    # The end of a job fails twice (as a locked or full database makes it), then goes through.
    finish, failures = store.finish, []

    def flaky(*args: Any) -> bool:
        if len(failures) < 2:
            failures.append(args[0])
            raise OverloadedError("the job queue cannot be reached now", code="queue_unavailable")
        return finish(*args)

    monkeypatch.setattr(store, "finish", flaky)
    out = tmp_path / "out"
    job, _ = store.submit(
        JobSpec(
            str(out / "{id}.out"),
            str(out / "{id}-error.out"),
            input_body=b'{"item_ids": ["x"]}',
            content_type="application/json",
        )
    )
    worker = JobWorker(store, lambda: _SlowRecommender(0.0), WorkerConfig(poll_s=0.05))  # type: ignore[arg-type,return-value]
    worker.start()
    try:
        wait_for(lambda: store.get(job.id).status == "succeeded", 30)
    finally:
        worker.stop()
        store.close()
    assert failures == [job.id, job.id]


def test_a_store_file_that_is_not_a_database_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    path.write_bytes(b"SQLite format 3\x00" + os.urandom(4000))
    with pytest.raises(StygigError) as e:
        JobStore(path)
    assert "cannot be opened as a SQLite database" in e.value.message


def test_a_corrupt_row_fails_its_job_and_stalls_nothing(store: JobStore) -> None:
    """Hole: a queued job whose params were not JSON made every claim roll back and select
    it again (the queue stalled, 2 tracebacks a second); a finished job whose error was not
    JSON was a 500 on its view and on the whole listing."""
    store.submit(_spec("done"))
    _finish(store, "done")
    for job_id in ("bad", "good-1"):
        store.submit(_spec(job_id))
    with store._transaction() as db:
        db.execute("UPDATE jobs SET params = '{bad' WHERE id = 'bad'")
        db.execute("UPDATE jobs SET error = 'not json' WHERE id = 'done'")
    owner = new_owner()
    claimed = store.claim(owner, limit=1)
    claimed += store.claim(owner, limit=1) if not claimed else []
    assert [j.id for j in claimed] == ["good-1"]
    bad = store.view("bad")
    assert bad.status == "failed" and bad.error == {
        "code": "corrupt_record",
        "message": "the job's record cannot be read",
    }
    assert store.view("done").error is not None  # shown as unreadable, not a 500
    assert {v.id for v in store.list_jobs().jobs} == {"done", "bad", "good-1"}
    assert "bad" in {j.id for j in store.pending_notifications()}


def test_retention_deletes_the_jobs_own_documents_too(tmp_path: Path) -> None:
    """Hole: purged jobs' result files stayed in a local output folder for ever (no route
    reached them: the disk grew ~17 KB a job). A document that is not the job's (another
    job of the same id, written later) stays."""
    from stygig.jobs.worker import _document

    store = JobStore(tmp_path / "jobs.db", synchronous="NORMAL")
    out = tmp_path / "out"
    try:
        job, _ = store.submit(
            JobSpec(str(out / "{id}.out"), str(out / "{id}-error.out"), input_body=b"x", id="r")
        )
        storage_out, storage_err = Path(job.output_location), Path(job.failure_location)
        out.mkdir()
        storage_out.write_bytes(_document(job, b'{"outfit":null}'))
        storage_err.write_bytes(b'{"InferenceId": "r", "JobToken": "someone-else"}')
        owner = new_owner()
        (claimed,) = store.claim(owner)
        assert store.finish("r", owner, claimed.attempts, "succeeded")
        store.mark_notified("r", "none")
        assert store.purge(time.time() + 1) == 1
        assert not storage_out.exists()
        assert storage_err.exists()  # not this job's: kept
    finally:
        store.close()


def test_a_finished_jobs_options_are_dropped(tmp_path: Path) -> None:
    """Review, session 40 (F3): a finished job kept its options (the custom attributes or query
    string, up to the 64 KB request head) for the whole retention time; one client grew the
    file ~74 KB a job. A queued job keeps them (it needs them to run); nothing a client reads
    of a finished job changes."""
    config = AsyncConfig(jobs_db=tmp_path / "jobs.db", output=str(tmp_path / "out"))
    jobs = AsyncJobs(config, lambda: None)  # not started: the test finishes the job itself
    app = FastAPI()
    app.include_router(jobs.router)
    ids = ",".join(f"x{'y' * 50}{i:04d}" for i in range(1000))  # ~55 KB of valid options
    store = jobs.store
    assert isinstance(store, JobStore)
    try:
        with TestClient(app) as client:
            for job_id in ("done", "waiting"):
                answer = client.post(
                    "/async/invocations",
                    content=b'{"item_ids": ["sku-0001"]}',
                    headers={
                        "Content-Type": "application/json",
                        "X-Amzn-SageMaker-Inference-Id": job_id,
                        "X-Amzn-SageMaker-Custom-Attributes": f"exclude_ids={ids}",
                    },
                )
                assert answer.status_code == 202, answer.text
            view_before = client.get("/async/jobs/done").json()
            owner = new_owner()
            (job,) = store.claim(owner)
            assert job.id == "done" and len(job.params["exclude_ids"]) == 1000
            assert store.finish("done", owner, job.attempts, "succeeded")
            kept = dict(_rows(store, "SELECT id, length(params) FROM jobs"))
            assert kept["done"] <= 2 and kept["waiting"] > 50_000
            view = client.get("/async/jobs/done").json()
            assert view["Status"] == "succeeded"
            unchanged = ("InferenceId", "OutputLocation", "FailureLocation", "CreatedAt")
            assert {k: view[k] for k in unchanged} == {k: view_before[k] for k in unchanged}
            assert store.get("done").params == {}
    finally:
        store.close()


def _finished(store: JobStore, job_id: str, out: Path, *, notified: bool = True) -> Path:
    """Submit, run and finish ``job_id`` with a result document in ``out``; its path."""
    from stygig.jobs.worker import _document

    job, _ = store.submit(
        JobSpec(str(out / "{id}.out"), str(out / "{id}-error.out"), input_body=b"x", id=job_id)
    )
    result = Path(job.output_location)
    result.write_bytes(_document(job, b'{"outfit":null}'))
    owner = new_owner()
    (claimed,) = store.claim(owner)
    assert claimed.id == job_id and store.finish(job_id, owner, claimed.attempts, "succeeded")
    if notified:
        store.mark_notified(job_id, "none")
    return result


def test_finished_jobs_kept_are_bounded_in_number_oldest_first(tmp_path: Path) -> None:
    """Review, session 40 (F3): only age bounded the finished jobs kept (7 days by default);
    at 35 jobs/s that is millions of rows and result documents. Beyond ``max_finished`` the
    oldest finished ones go first, whatever their age, with their events and documents; one
    whose notification is still due stays (it is sent first), unfinished ones are not
    counted."""
    out = tmp_path / "out"
    out.mkdir()
    store = JobStore(tmp_path / "jobs.db", synchronous="NORMAL", max_finished=3)
    try:
        _finished(store, "j0", out, notified=False)
        for i in range(1, 6):
            _finished(store, f"j{i}", out)
        store.submit(_spec("running"))
        assert [j.id for j in store.claim(new_owner())] == ["running"]  # not finished: stays
        assert store.purge(0.0, batch=1) == 3  # none is past an age; three beyond the number
        kept = sorted(r[0] for r in _rows(store, "SELECT id FROM jobs"))
        assert kept == ["j0", "j4", "j5", "running"]  # j0: still to notify, and counted
        assert {r[0] for r in _rows(store, "SELECT job_id FROM events")} == set(kept)
        assert sorted(p.name for p in out.iterdir()) == ["j0.out", "j4.out", "j5.out"]
        store.mark_notified("j0", "sent")
        assert store.purge(0.0) == 0  # at the bound
        _finished(store, "j6", out)
        assert store.purge(0.0) == 1  # the oldest goes
        assert sorted(r[0] for r in _rows(store, "SELECT id FROM jobs")) == [
            "j4",
            "j5",
            "j6",
            "running",
        ]
        assert store.purge(0.0) == 0  # at the bound: nothing more
    finally:
        store.close()


def test_the_number_kept_is_the_operators_to_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review, session 40 (F3): ``$STYGIG_ASYNC_MAX_FINISHED`` sets the bound for the store a
    server opens (``--jobs-db``); a value that is not a whole number of at least 1 is a clear
    error at start, not a silent default."""
    from stygig.errors import ConfigError
    from stygig.jobs.store import MAX_FINISHED

    monkeypatch.delenv("STYGIG_ASYNC_MAX_FINISHED", raising=False)
    with JobStore(tmp_path / "a.db") as store:
        assert store.max_finished == MAX_FINISHED
    monkeypatch.setenv("STYGIG_ASYNC_MAX_FINISHED", "250_000")
    config = AsyncConfig(jobs_db=tmp_path / "b.db", output=str(tmp_path / "out"))
    opened, _ = config.open_store()
    try:
        assert isinstance(opened, JobStore) and opened.max_finished == 250_000
    finally:
        opened.close()
    for bad in ("0", "-5", "1e6", "lots", "١٢"):
        monkeypatch.setenv("STYGIG_ASYNC_MAX_FINISHED", bad)
        with pytest.raises(ConfigError, match="STYGIG_ASYNC_MAX_FINISHED"):
            JobStore(tmp_path / "c.db")
    # `stygig serve --async-max-finished N` reaches the store, over the environment's.
    import argparse

    from stygig.serving.command import add_async_arguments, async_config_from_args

    parser = argparse.ArgumentParser()
    add_async_arguments(parser)
    flags = ["--jobs-db", str(tmp_path / "d.db"), "--async-output", str(tmp_path / "out")]
    args = parser.parse_args([*flags, "--async-max-finished", "7"])
    from_flag = async_config_from_args(args)
    assert from_flag is not None
    opened, _ = from_flag.open_store()
    try:
        assert isinstance(opened, JobStore) and opened.max_finished == 7
    finally:
        opened.close()
    with pytest.raises(SystemExit):
        parser.parse_args([*flags, "--async-max-finished", "0"])


def test_the_worker_keeps_finished_jobs_within_the_bound(tmp_path: Path) -> None:
    """Review, session 40 (F3): the worker's housekeeping applies the bound, not only the age
    (here the retention time is far off)."""
    out = tmp_path / "out"
    out.mkdir()
    store = JobStore(tmp_path / "jobs.db", synchronous="NORMAL", max_finished=2)
    for i in range(5):
        _finished(store, f"j{i}", out)
    worker = JobWorker(store, lambda: None, WorkerConfig(poll_s=0.05), retention_s=7 * 24 * 3600)
    worker.start()
    try:
        wait_for(lambda: len(_rows(store, "SELECT id FROM jobs")) == 2, 30)
    finally:
        worker.stop()
        store.close()
    with sqlite3.connect(tmp_path / "jobs.db") as db:
        assert sorted(r[0] for r in db.execute("SELECT id FROM jobs")) == ["j3", "j4"]
    db.close()

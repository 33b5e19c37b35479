"""A damaged job store (``jobs.db`` and its WAL): refused at start, or said once while running.

Before (session 52): a store whose WAL held a damaged page (valid frames, malformed content) or
whose file had a damaged page opened without a word; the server started, the housekeeping logged
"database disk image is malformed" with a traceback every minute, and the requests that met the
damage were 500s. A WAL torn by a crash is no damage: SQLite drops the unfinished transaction.

Real SQLite files, damaged byte by byte; a real ``stygig serve`` process under a memory cap.
"""

from __future__ import annotations

import logging
import os
import resource
import shutil
import sqlite3
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request, Response
from fastapi.testclient import TestClient

from stygig.errors import StorageError, StygigError
from stygig.jobs import worker as worker_module
from stygig.jobs.store import JobSpec, JobStore, JobStoreDamagedError, new_owner
from stygig.serving.async_api import AsyncConfig, AsyncJobs
from stygig.serving.responses import error_response
from tests.integration.server_fixtures import free_port, start_process
from tests.integration.test_jobs import wait_for

_MEMORY_CAP = 3 * 1024**3  # a server with the tiny encoder takes about 0.8 GB of address space


def _spec(job_id: str) -> JobSpec:
    return JobSpec("out/{id}.out", "out/{id}-error.out", input_body=b"x" * 500, id=job_id)


def _fill(store: JobStore, n: int, *, finished: int = 0) -> None:
    for i in range(n):
        store.submit(_spec(f"job-{i}"))
    owner = new_owner()
    for job in store.claim(owner, limit=finished):
        assert store.finish(job.id, owner, job.attempts, "succeeded")


def _ids(path: Path) -> set[str]:
    db = sqlite3.connect(path)
    try:
        return {r[0] for r in db.execute("SELECT id FROM jobs")}
    finally:
        db.close()


# -- the WAL, frame by frame (https://sqlite.org/fileformat2.html#walformat) ---------------------


def _checksum(data: bytes, s0: int, s1: int, big_endian: bool) -> tuple[int, int]:
    words = struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data)
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1


def _frames(wal: bytes) -> tuple[int, list[tuple[int, int]]]:
    """The page size and each whole frame's (offset, page number)."""
    page_size = struct.unpack(">I", wal[8:12])[0]
    size = 24 + page_size
    count = (len(wal) - 32) // size
    offsets = [32 + i * size for i in range(count)]
    return page_size, [(at, struct.unpack(">I", wal[at : at + 4])[0]) for at in offsets]


def _damage_page_in_wal(wal: bytes, page: int) -> bytes:
    """``wal`` with the last frame of ``page`` filled with a malformed b-tree page, every
    checksum from there on written again: a WAL SQLite takes as valid, holding a damaged page."""
    out = bytearray(wal)
    big_endian = bool(struct.unpack(">I", wal[:4])[0] & 1)
    page_size, frames = _frames(wal)
    salts = wal[16:24]
    assert all(wal[at + 8 : at + 16] == salts for at, _ in frames), "one generation of frames"
    at = max(a for a, p in frames if p == page)
    out[at + 24 : at + 24 + page_size] = b"\x0d" + b"\xff" * (page_size - 1)
    s0, s1 = struct.unpack(">II", wal[24:32])
    for at, _ in frames:
        s0, s1 = _checksum(bytes(out[at : at + 8]), s0, s1, big_endian)
        s0, s1 = _checksum(bytes(out[at + 24 : at + 24 + page_size]), s0, s1, big_endian)
        out[at + 16 : at + 24] = struct.pack(">II", s0, s1)
    return bytes(out)


def _crash_image(store: JobStore, where: Path) -> Path:
    """What a ``kill -9`` of the process holding ``store`` open leaves: its file and its WAL
    (not checkpointed) copied as they are now, into ``where``."""
    where.mkdir()
    shutil.copyfile(store.path, where / "jobs.db")
    shutil.copyfile(f"{store.path}-wal", where / "jobs.db-wal")
    return where / "jobs.db"


def _root_page(path: Path, name: str) -> tuple[int, int]:
    db = sqlite3.connect(path)
    try:
        (root,) = db.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = ?", (name,)
        ).fetchone()
        (page_size,) = db.execute("PRAGMA page_size").fetchone()
    finally:
        db.close()
    return int(root), int(page_size)


def _damage_page_in_file(path: Path, name: str) -> None:
    """Overwrite the root page of table or index ``name`` in the database file itself."""
    root, page_size = _root_page(path, name)
    with path.open("r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(b"\x0d" + b"\xff" * (page_size - 1))


# -- at start ------------------------------------------------------------------------------------


def test_a_wal_holding_a_damaged_page_is_refused_at_open(tmp_path: Path) -> None:
    """The WAL's frames are valid (checksums and salts), one page in them is malformed: the
    store is refused when it is opened, as a storage error (exit 6) naming the file."""
    live = JobStore(tmp_path / "live" / "jobs.db", synchronous="NORMAL")
    try:
        _fill(live, 40)
        jobs_root, _ = _root_page(live.path, "jobs")
        path = _crash_image(live, tmp_path / "crashed")
    finally:
        live.close()
    wal = Path(f"{path}-wal")
    wal.write_bytes(_damage_page_in_wal(wal.read_bytes(), jobs_root))

    with pytest.raises(JobStoreDamagedError) as e:
        JobStore(path)
    assert isinstance(e.value, StorageError) and e.value.exit_code == 6
    assert str(path) in e.value.message and "damaged" in e.value.message
    assert "restore it from a backup" in e.value.message


def test_a_damaged_page_in_the_file_is_refused_at_open(tmp_path: Path) -> None:
    """The report's case: the index the retention purge reads (every minute) is malformed, the
    rest reads fine. Nothing is written to the damaged file: it is as it was."""
    path = tmp_path / "jobs.db"
    with JobStore(path, synchronous="NORMAL") as store:
        _fill(store, 60, finished=30)
    _damage_page_in_file(path, "jobs_finished")
    before = path.read_bytes()

    with pytest.raises(JobStoreDamagedError) as e:
        JobStore(path)
    assert e.value.exit_code == 6 and str(path) in e.value.message
    assert "quick_check" in e.value.message
    assert path.read_bytes() == before


@pytest.mark.parametrize("how", ["torn", "garbage_after"])
def test_a_torn_wal_is_recovered_with_every_committed_job(tmp_path: Path, how: str) -> None:
    """A ``kill -9`` mid-commit leaves the WAL's last frames cut short (or stale bytes after
    the last valid frame): normal, not damage. The store opens, keeps every job committed
    before, drops the torn one only, and takes work again."""
    live = JobStore(tmp_path / "live" / "jobs.db", synchronous="NORMAL")
    try:
        _fill(live, 30)
        committed = Path(f"{live.path}-wal").read_bytes()
        live.submit(_spec("torn-job"))
        path = _crash_image(live, tmp_path / "crashed")
    finally:
        live.close()
    wal = Path(f"{path}-wal")
    full = wal.read_bytes()
    assert full.startswith(committed) and len(full) > len(committed)  # appended, not restarted
    page_size, _ = _frames(full)
    if how == "torn":  # the torn commit's frames end half way through one of them
        wal.write_bytes(full[: len(committed) + 24 + page_size // 2])
    else:  # its frames never reached the disk; what is there is not theirs
        wal.write_bytes(committed + os.urandom(2 * (24 + page_size)))

    with JobStore(path) as store:
        assert {v.id for v in store.list_jobs(limit=1000).jobs} == {f"job-{i}" for i in range(30)}
        assert store.submit(_spec("after"))[1]
        owner = new_owner()
        (first,) = store.claim(owner)
        assert first.id == "job-0" and store.finish(first.id, owner, first.attempts, "succeeded")
    assert _ids(path) == {f"job-{i}" for i in range(30)} | {"after"}


def test_serve_refuses_to_start_on_a_damaged_store(
    sample: tuple[Path, Path], tmp_path: Path
) -> None:
    """``stygig serve --jobs-db`` on a damaged store stops before it listens: exit 6, one line
    naming the store (it started and logged "malformed" every minute)."""
    path = tmp_path / "jobs.db"
    with JobStore(path, synchronous="NORMAL") as store:
        _fill(store, 60, finished=30)
    _damage_page_in_file(path, "jobs_finished")
    log_path = tmp_path / "serve.log"
    args = ["serve", "--artifact", str(sample[1]), "--host", "127.0.0.1"]
    args += ["--port", str(free_port()), "--jobs-db", str(path)]
    args += ["--async-output", str(tmp_path / "out")]
    process = start_process(
        args,
        log_path,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (_MEMORY_CAP, _MEMORY_CAP)),
    )
    try:
        # Exited, or (the defect) started: whichever comes first, within the deadline.
        wait_for(
            lambda: process.poll() is not None or "startup complete" in log_path.read_text(),
            60,
        )
        assert process.poll() is not None, "the server started on a damaged job store"
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)
    text = log_path.read_text()
    assert process.returncode == 6, text
    errors = [line for line in text.splitlines() if line.startswith("stygig: error:")]
    assert len(errors) == 1 and f"the job store {path} is damaged" in errors[0], text
    assert "Traceback" not in text


# -- while running -------------------------------------------------------------------------------


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def job_log() -> Iterator[_Records]:
    handler, logger = _Records(), logging.getLogger("stygig.jobs")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def test_damage_found_while_running_is_logged_once_and_answered_503(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, job_log: _Records
) -> None:
    """The file is damaged under a running server (a disk fault): the purge meets it. It is
    logged once, naming the file, however often the housekeeping tries again; requests are
    answered 503 ``job_store_damaged``, never with the file's path; nothing is a 500."""
    path = tmp_path / "jobs.db"
    with JobStore(path, synchronous="NORMAL") as store:
        _fill(store, 60, finished=30)
    config = AsyncConfig(jobs_db=path, output=str(tmp_path / "out"), list_jobs=True)
    jobs = AsyncJobs(config, lambda: None)  # opened intact; no model: nothing is claimed
    # Damaged now, under the open store; another connection's commit makes it read the file
    # again (its page cache is dropped), as a second process's would.
    _damage_page_in_file(path, "jobs_finished")
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("PRAGMA user_version = 1")
    other.close()

    purges: list[Any] = []
    purge = jobs.store.purge

    def counted(*args: Any, **kwargs: Any) -> int:
        purges.append(args)
        return purge(*args, **kwargs)

    monkeypatch.setattr(jobs.store, "purge", counted)
    monkeypatch.setattr(worker_module, "_PURGE_EVERY_S", 0.0)  # every tick, not every minute
    app = FastAPI()
    app.include_router(jobs.router)

    @app.exception_handler(StygigError)
    async def _error(request: Request, exc: StygigError) -> Response:
        return error_response(exc)

    jobs.worker.start()
    try:
        wait_for(lambda: len(purges) >= 4, 60)
        with TestClient(app, raise_server_exceptions=False) as client:
            answers = [
                client.get("/async/jobs/job-1"),
                client.get("/async/jobs"),
                client.post(
                    "/async/invocations",
                    content=b'{"item_ids": ["sku-0001"]}',
                    headers={"Content-Type": "application/json"},
                ),
            ]
    finally:
        jobs.stop(5)
    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"]["code"] == "job_store_damaged"
        assert str(tmp_path) not in answer.text and "jobs.db" not in answer.text
    said = [r for r in job_log.records if r.levelno >= logging.WARNING]
    assert len(said) == 1, [r.getMessage()[:200] for r in said]
    assert str(path) in said[0].getMessage() and "damaged" in said[0].getMessage()
    assert said[0].exc_info is None  # one line, not a traceback

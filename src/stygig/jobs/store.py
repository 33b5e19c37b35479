"""The durable job table: asynchronous jobs recorded in SQLite before anyone is told they exist.

A job moves ``queued -> running -> succeeded | failed``. Every move is one SQLite transaction
(WAL journal, ``BEGIN IMMEDIATE``), and every move is also appended to an ``events`` journal in
the same transaction, so a job's history can be audited: exactly one terminal event per job.

Claims are leases. :meth:`JobStore.claim` marks a queued job ``running`` for one *owner* (host,
pid and a random tag) and counts the attempt; the owner renews its leases while it works.
A ``running`` job whose owner is gone goes back to ``queued`` (:meth:`JobStore.requeue_orphans`):
at once when the owner was a process on this host that no longer exists (a server killed with
``kill -9`` and restarted), otherwise when its lease expires. :meth:`JobStore.finish` only
succeeds for the owner and attempt that hold the job, so a job that was taken away from a slow
or presumed-dead worker cannot be finished twice.

The order of steps that makes a crash harmless lives in :mod:`stygig.jobs.worker`: write the
result (atomically) first, then record the terminal state here. A crash in between re-queues the
job; the next attempt finds the result already written and only records it. Each job has a
random ``token`` that its result and failure documents carry, so a document found at its
location proves it was written for this job (not for an earlier job of the same id, or another).

What the store keeps is bounded: :meth:`JobStore.submit` refuses a job once the unfinished
ones reach a count or hold a total of inline input bytes (:class:`QueueLimits`, checked in the
insert's own transaction); a job's inline input and its options (``params``, up to a request
head's size, which no view or notification shows) are dropped when it finishes; and
:meth:`JobStore.purge` deletes finished jobs (and their events) older than the retention time,
and the oldest beyond ``max_finished`` (:data:`MAX_FINISHED`, ``$STYGIG_ASYNC_MAX_FINISHED``)
whatever their age, so a client submitting fast cannot grow the file for the whole retention.
Public views (:class:`JobView`) hold neither the input nor the webhook, and a job's locations
are shown to clients only as :func:`shown_location` gives them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, NotRequired, cast

from pydantic import ConfigDict, Field, WithJsonSchema
from typing_extensions import TypedDict  # pydantic reads typing's only from Python 3.12

from stygig import storage
from stygig.errors import (
    ConfigError,
    InputError,
    InvalidOptionsError,
    NotFoundError,
    OverloadedError,
    StorageError,
    StygigError,
)

log = logging.getLogger("stygig.jobs")

__all__ = [
    "COUNT_LIMIT",
    "MAX_FINISHED",
    "MAX_FINISHED_ENV",
    "MAX_PAGE",
    "MAX_TIME_LIMIT_S",
    "STATUSES",
    "InferenceIdInUseError",
    "Job",
    "JobCounts",
    "JobError",
    "JobPage",
    "JobSpec",
    "JobState",
    "JobStore",
    "JobStoreDamagedError",
    "JobView",
    "QueueLimits",
    "Status",
    "check_same_request",
    "iso_time",
    "max_finished_from_env",
    "new_owner",
    "shown_location",
]

Status = Literal["queued", "running", "succeeded", "failed"]
STATUSES: tuple[Status, ...] = ("queued", "running", "succeeded", "failed")
_Status = Status  # JobState's field of that name hides the type in its class body
TERMINAL = ("succeeded", "failed")
UNFINISHED = ("queued", "running")
#: The most jobs one ``list_jobs`` call returns (and the most an SQS store reads for it).
MAX_PAGE = 1000
#: The longest time limit a job may have (a day): a job's own, and a server's default.
MAX_TIME_LIMIT_S = 24 * 3600.0
#: How far one ``counts`` call counts a status (the jobs kept can reach millions).
COUNT_LIMIT = 10_000
#: Finished jobs a store keeps at most (the oldest beyond are purged first, whatever the
#: retention time): with its events about 1-4 KB a job in SQLite, plus its result document.
MAX_FINISHED = 100_000
#: The environment variable an operator sets the bound with (a whole number, at least 1).
MAX_FINISHED_ENV = "STYGIG_ASYNC_MAX_FINISHED"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    input_location TEXT,
    input_body BLOB,
    content_type TEXT,
    params TEXT NOT NULL DEFAULT '{}',
    output_location TEXT NOT NULL,
    failure_location TEXT NOT NULL,
    webhook TEXT,
    time_limit_s REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    owner TEXT,
    lease_expires REAL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    error TEXT,
    notify_state TEXT,
    token TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, seq);
CREATE INDEX IF NOT EXISTS jobs_notify ON jobs (notify_state);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_at);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    at REAL NOT NULL,
    event TEXT NOT NULL,
    owner TEXT,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS events_job ON events (job_id);
"""
# Columns added after the first release: (name, type), added to older files on open.
_MIGRATIONS = (("token", "TEXT"), ("fingerprint", "TEXT"))
_COLUMNS = (
    "seq, id, status, input_location, input_body, content_type, params, output_location,"
    " failure_location, webhook, time_limit_s, attempts, max_attempts, owner, lease_expires,"
    " created_at, started_at, finished_at, error, notify_state, token"
)
# A row without its input: only a claim hands the input to the worker.
_NO_BODY = _COLUMNS.replace("input_body", "NULL AS input_body")
_VIEW_COLUMNS = (
    "seq, id, status, output_location, failure_location, created_at, started_at, finished_at,"
    " attempts, error"
)


def shown_location(job_id: str, location: str) -> str:
    """A job's output or failure ``location`` as a client may see it (job views, the submission's
    answer, notifications): an ``s3://`` URI as it is (the client reads it there, as on
    SageMaker); a server folder never, the route ``/async/jobs/<id>/output`` instead."""
    return location if storage.is_remote(location) else f"/async/jobs/{job_id}/output"


@dataclass(frozen=True)
class QueueLimits:
    """How much unfinished work (queued or running jobs) the store accepts.

    Attributes:
        max_jobs: unfinished jobs at most; a submission beyond is refused.
        max_bytes: inline input bytes all unfinished jobs may hold together (each keeps its
            body in the store until it finishes), with their options in SQLite.
    """

    max_jobs: int
    max_bytes: int

    def __post_init__(self) -> None:
        if self.max_jobs < 1 or self.max_bytes < 1:
            raise InvalidOptionsError("the queue limits must be at least 1")


def max_finished_from_env() -> int:
    """The finished jobs a store keeps: ``$STYGIG_ASYNC_MAX_FINISHED``, else
    :data:`MAX_FINISHED` (:class:`~stygig.errors.ConfigError` when it is not a whole number of
    at least 1: a bound mistyped by the operator is said at start, never silently replaced)."""
    text = os.environ.get(MAX_FINISHED_ENV, "").strip().replace("_", "")
    if not text:
        return MAX_FINISHED
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise ConfigError(
            f"{MAX_FINISHED_ENV} must be a whole number of finished jobs to keep, at least 1"
        )
    return int(text)


def new_owner() -> str:
    """A worker identity: ``host:pid:tag`` (the tag tells two lives of one pid apart)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _owner_is_dead(owner: str, me: str) -> bool:
    """Whether ``owner`` is a process on this host that no longer runs (a crash or kill -9)."""
    host, _, rest = owner.partition(":")
    pid_text, _, _ = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False  # another machine: only its lease expiry can tell
    if owner == me:
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return True  # our pid, another tag: an earlier life of this very process slot
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


#: Options whose values are a set: their order does not make another request.
_SET_OPTIONS = frozenset(
    {"include_categories", "exclude_categories", "exclude_ids", "candidate_ids"}
)


@dataclass(frozen=True)
class JobSpec:
    """What a client asked for: where the input is (or the input itself) and where to write."""

    output_location: str
    failure_location: str
    input_location: str | None = None
    input_body: bytes | None = None
    content_type: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)  # recommendation options
    webhook: str | None = None
    time_limit_s: float = 900.0
    max_attempts: int = 3
    id: str | None = None  # client-chosen (idempotent submit); else a fresh uuid

    def __post_init__(self) -> None:
        if (self.input_location is None) == (self.input_body is None):
            raise InvalidOptionsError("a job needs exactly one of an input location or a body")
        if not 0 < self.time_limit_s <= MAX_TIME_LIMIT_S:
            raise InvalidOptionsError(
                f"the time limit must be within (0, {MAX_TIME_LIMIT_S:.0f}] seconds"
            )
        if self.max_attempts < 1:
            raise InvalidOptionsError("max_attempts must be at least 1")

    def fingerprint(self) -> str:
        """What makes two submissions of one id the same request: the input (its location, or
        its bytes' digest), its content type and the options; not where to write or whom to
        tell. A resubmission of an id with another fingerprint is refused
        (:class:`InferenceIdInUseError`)."""
        body = None if self.input_body is None else hashlib.sha256(self.input_body).hexdigest()
        # A list option's values in any order are the same request (categories, ids to leave
        # out, candidates: sets; review of session 42's fixes); the query's item_ids keep theirs.
        params = {
            k: sorted(map(str, v)) if isinstance(v, list) and k in _SET_OPTIONS else v
            for k, v in self.params.items()
        }
        what = [self.input_location, body, self.content_type, params]
        text = json.dumps(what, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(text.encode()).hexdigest()


class InferenceIdInUseError(InputError):
    """A job id (``X-Amzn-SageMaker-Inference-Id``) submitted again with another input or
    other options: the first job stands, and answering it would give this client someone
    else's result (review, session 42)."""

    http_status = 409
    code = "inference_id_in_use"


def check_same_request(job_id: str, stored: str | None, spec: JobSpec) -> None:
    """Raise :class:`InferenceIdInUseError` when job ``job_id``'s stored fingerprint is not
    ``spec``'s (a job submitted before fingerprints were stored has none: taken as the same)."""
    if stored is not None and stored != spec.fingerprint():
        raise InferenceIdInUseError(
            "this Inference-Id names a job submitted with another input or other options: "
            "give each request its own id (resubmitting the same request returns its job)"
        )


@dataclass(frozen=True)
class Job:
    """One row of the job table."""

    seq: int
    id: str
    status: Status
    input_location: str | None
    input_body: bytes | None
    content_type: str | None
    params: dict[str, Any]
    output_location: str
    failure_location: str
    webhook: str | None
    time_limit_s: float
    attempts: int
    max_attempts: int
    owner: str | None
    lease_expires: float | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    error: dict[str, Any] | None
    notify_state: str | None
    token: str | None  # None: a job from before tokens existed

    @classmethod
    def from_row(cls, row: sqlite3.Row, *, strict: bool = False) -> Job:
        """A job from a row of every column (``input_body`` may be selected as NULL).
        Params that are not a JSON object are ``ValueError`` when ``strict`` (a job about to
        run), else empty (a job to show or notify about)."""
        data = dict(row)
        try:
            data["params"] = json.loads(data["params"] or "{}")
        except (ValueError, RecursionError):
            data["params"] = None
        if not isinstance(data["params"], dict):
            if strict:
                raise ValueError("a job's params are not an object")
            data["params"] = {}
        data["error"] = _error_column(data["error"])
        return cls(**data)

    def owns(self, document: Any) -> bool:
        """Whether a result or failure ``document`` (parsed JSON) was written for this job: it
        carries this job's id and token. A job from before tokens accepts token-less ones:
        written before tokens, or by this version for it (a null token and its id)."""
        if not isinstance(document, dict):
            return False
        if self.token is None:
            return (
                document.get("JobToken") is None and document.get("InferenceId", self.id) == self.id
            )
        return document.get("JobToken") == self.token and document.get("InferenceId") == self.id

    def read_own(self, uri: str) -> tuple[bytes, dict[str, Any]] | None:
        """The document at ``uri`` (bytes and parsed) if it was written for this job; ``None``
        when it is not JSON or another job's. Storage errors (absent included) propagate."""
        raw = storage.read_bytes(uri)
        try:
            document = json.loads(raw)
        except ValueError:
            return None
        return (raw, document) if self.owns(document) else None

    def shown_locations(self) -> tuple[str, str]:
        """The output and failure locations as a client may see them (:func:`shown_location`)."""
        return (
            shown_location(self.id, self.output_location),
            shown_location(self.id, self.failure_location),
        )


@dataclass(frozen=True)
class JobView:
    """What a client may see of a job: status and times, never its input or webhook."""

    seq: int
    id: str
    status: Status
    output_location: str
    failure_location: str
    created_at: float
    started_at: float | None
    finished_at: float | None
    attempts: int
    error: dict[str, Any] | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> JobView:
        """A view from a row of the view's columns."""
        data = dict(row)
        data["error"] = _error_column(data["error"])
        return cls(**data)

    def state(self) -> JobState:
        """``GET /async/jobs/{id}``: SageMaker-style names, ISO timestamps, locations as a
        client may see them (:func:`shown_location`)."""
        return JobState(
            InferenceId=self.id,
            Status=self.status,
            OutputLocation=shown_location(self.id, self.output_location),
            FailureLocation=shown_location(self.id, self.failure_location),
            CreatedAt=iso_time(self.created_at),
            StartedAt=iso_time(self.started_at),
            FinishedAt=iso_time(self.finished_at),
            Attempts=self.attempts,
            Error=cast("JobError | None", self.error),
        )

    def to_dict(self) -> dict[str, Any]:
        """:meth:`state` as JSON-ready objects: what ``GET /async/jobs/{id}`` sends."""
        return asdict(self.state())


#: A time as :func:`iso_time` writes it.
_When = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]


class JobError(TypedDict):
    """Why a job failed: a stable ``code`` and, for people, a ``message`` (the failure
    document's ``error``)."""

    code: str
    message: NotRequired[str]


@dataclass(frozen=True, slots=True)
class JobState:
    """What a client sees of a job (``GET /async/jobs/{id}``, an item of ``GET /async/jobs``):
    never its input or webhook, and a server folder never."""

    __pydantic_config__ = ConfigDict(use_attribute_docstrings=True)

    InferenceId: str
    """the job's id"""
    Status: _Status
    """queued, running, succeeded or failed"""
    OutputLocation: str
    """where the result is once it succeeded (``/async/jobs/{id}/output`` for a server
    folder)"""
    FailureLocation: str
    """where the error is once it failed"""
    CreatedAt: _When | None
    """when it was submitted (ISO 8601, UTC, milliseconds)"""
    StartedAt: _When | None
    """when its last attempt started (``null``: not yet)"""
    FinishedAt: _When | None
    """when it finished (``null``: not yet)"""
    Attempts: Annotated[int, Field(ge=0)]
    """attempts started so far"""
    Error: JobError | None
    """why it failed (``null`` unless it did)"""


@dataclass(frozen=True)
class JobPage:
    """One page of a job listing.

    Attributes:
        jobs: the views found, in submission order (at most the ``limit`` asked for; fewer, even
            none, when the store stopped looking before the end: see ``next_after``).
        next_after: ``None`` when the listing reached the last job; else the ``after_seq`` to
            ask for the next page with (the page stopped at ``limit`` jobs, or at the most
            records one call examines).
    """

    jobs: list[JobView]
    next_after: int | None


class JobCounts(dict[str, int]):
    """Jobs per status, every status present (a ``dict``), and whether they are exact.

    ``complete`` false: a status was counted only up to the store's ``count_limit``, so its
    number (and that of any status counted alongside it) is a lower bound, "at least".
    """

    def __init__(self, counts: Mapping[str, int], *, complete: bool = True) -> None:
        super().__init__({s: int(counts.get(s, 0)) for s in STATUSES})
        self.complete = complete


def iso_time(ts: float | None) -> str | None:
    """``ts`` (seconds since the epoch) as ISO 8601 UTC with milliseconds; ``None`` stays."""
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


#: What a job whose stored error cannot be read shows, and what a job that cannot be read
#: at all fails with (a row edited by hand, a damaged file).
CORRUPT_RECORD = {"code": "corrupt_record", "message": "the job's record cannot be read"}


def _error_column(text: str | None) -> dict[str, Any] | None:
    """A job's stored error, or :data:`CORRUPT_RECORD` when it is not a JSON object."""
    if not text:
        return None
    try:
        error = json.loads(text)
    except (ValueError, RecursionError):
        error = None
    return error if isinstance(error, dict) else dict(CORRUPT_RECORD)


def delete_own_document(where: str | None, job_id: str, token: str | None) -> None:
    """Delete the document at ``where`` if it is job ``job_id``'s (its id and token: never a
    later job's of the same id); best effort, logged."""
    if not where or token is None:
        return
    try:
        document = json.loads(storage.read_bytes(where, max_bytes=64 << 20))
    except (StygigError, ValueError, RecursionError):
        return  # absent, unreadable or not JSON: nothing of this job's to delete
    if (
        isinstance(document, dict)
        and document.get("InferenceId") == job_id
        and document.get("JobToken") == token
    ):
        try:
            storage.delete(where)
        except (StygigError, OSError):
            log.warning("job %s: its document could not be deleted", job_id, exc_info=True)


class JobStoreDamagedError(StorageError):
    """The job store's file is damaged: SQLite finds it malformed (a damaged page in the file
    or in a WAL whose frames are otherwise valid), not merely out of reach. Refused when the
    store is opened (exit 6, naming the file); found later, it is logged once and every call
    after it is refused with this (503 ``job_store_damaged``, which never names the file)."""

    http_status = 503
    code = "job_store_damaged"


#: What a client is told while the store is damaged (never the file's path: the log has it).
_DAMAGED = "the job store is damaged and cannot be used until the server's operator restores it"
#: SQLite's primary result codes for a file that is damaged (SQLITE_CORRUPT, SQLITE_NOTADB).
_DAMAGE_CODES = (11, 26)


def _is_damage(error: sqlite3.Error) -> bool:
    """Whether SQLite says the file itself is damaged (malformed, not a database), as opposed
    to out of reach now (locked, a full disk, an I/O error: :class:`sqlite3.OperationalError`)."""
    code = getattr(error, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in _DAMAGE_CODES
    return type(error) is sqlite3.DatabaseError


def _restore_advice(path: Path) -> str:
    return (
        f"restore it from a backup, or stop every server using it and move {path.name}, "
        f"{path.name}-wal and {path.name}-shm aside to start with an empty store "
        "(its jobs are then forgotten)"
    )


def _unavailable(error: sqlite3.OperationalError) -> OverloadedError:
    """A write the database could not take (locked past its timeout, a full disk): 503
    ``queue_unavailable`` for a client, the detail in the log."""
    log.error("the job store could not be written: %s", error)
    return OverloadedError(
        "the job queue cannot be reached now; retry later", code="queue_unavailable"
    )


class JobStore:
    """The job table in one SQLite file; safe for many threads and for several processes.

    It is the one-host :class:`~stygig.jobs.queue.JobQueue` (checked by mypy in that module);
    :class:`~stygig.jobs.sqs_store.SqsJobStore` is the one several servers share.

    Args:
        path: the database file (created with its folder).
        synchronous: SQLite's ``synchronous`` pragma. ``FULL`` (default) makes a commit survive
            power loss, not just a process crash; ``NORMAL`` is faster and survives ``kill -9``.
        count_limit: how far :meth:`counts` counts one status.
        max_finished: finished jobs kept at most: :meth:`purge` deletes the oldest beyond it
            (``None``: :func:`max_finished_from_env`).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "FULL",
        count_limit: int = COUNT_LIMIT,
        max_finished: int | None = None,
    ) -> None:
        if synchronous not in ("OFF", "NORMAL", "FULL"):
            raise InvalidOptionsError("synchronous must be OFF, NORMAL or FULL")
        if count_limit < 1:
            raise InvalidOptionsError("count_limit must be at least 1")
        if max_finished is not None and max_finished < 1:
            raise InvalidOptionsError("max_finished must be at least 1")
        self.path = Path(path)
        self.count_limit = count_limit
        self.max_finished = max_finished_from_env() if max_finished is None else max_finished
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # What SQLite said of the damage, once it was found while running: from then on every
        # call is refused (JobStoreDamagedError) without touching the file again.
        self._damage: str | None = None
        self._opened = False
        self._db = sqlite3.connect(
            self.path, timeout=30.0, isolation_level=None, check_same_thread=False
        )
        self._db.row_factory = sqlite3.Row
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._check_intact()  # before anything is written to a damaged file
            with self._transaction() as db:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                present = {r["name"] for r in db.execute("PRAGMA table_info(jobs)")}
                for name, kind in _MIGRATIONS:
                    if name not in present:
                        db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")
        except (OverloadedError, sqlite3.OperationalError) as e:
            # Locked by another process past the 30 s timeout, or another operational failure
            # (a full disk, no permission): the file may be fine, never advise moving it.
            self._db.close()
            if isinstance(e, sqlite3.OperationalError) and "locked" not in str(e):
                raise ConfigError(f"the job store {self.path} cannot be used: {e}") from e
            raise ConfigError(
                f"the job store {self.path} is locked by another process (waited 30 s); "
                "start again when it is free"
            ) from e
        except JobStoreDamagedError as e:
            self._db.close()
            if e.__cause__ is None:
                raise  # the quick check's own, naming the file
            raise JobStoreDamagedError(
                f"the job store {self.path} is damaged ({e.__cause__}); "
                + _restore_advice(self.path)
            ) from e.__cause__
        except sqlite3.DatabaseError as e:
            self._db.close()
            raise JobStoreDamagedError(
                f"the job store {self.path} cannot be opened as a SQLite database ({e}); "
                + _restore_advice(self.path)
            ) from e
        self._opened = True

    def _check_intact(self) -> None:
        """Refuse a damaged file now rather than fail jobs later: SQLite's ``quick_check``
        (every page's structure, the WAL's frames included; not the indexes against their
        tables). It reads the whole file, through SQLite's own connection: never through a
        file of ours, whose closing would drop the locks SQLite holds on it in this process
        (another connection would then checkpoint and delete the WAL under this one). Opening
        a store of 10,000 finished jobs (15 MB) takes about 12 ms with the file in the page
        cache, 0.2-0.5 s from a cold disk; one of 100,000 (the default most kept, 150 MB) about
        0.1 s, 2-3.5 s cold. A WAL torn by a crash (its last frames cut short) is no damage:
        SQLite drops the unfinished transaction when it opens the file, and the check finds it
        fine."""
        rows = self._db.execute("PRAGMA quick_check(1)").fetchall()
        found = "; ".join(str(r[0]) for r in rows).replace("\n", "; ") or "ok"
        if found != "ok":
            raise JobStoreDamagedError(
                f"the job store {self.path} is damaged (SQLite's quick_check: {found[:300]}); "
                + _restore_advice(self.path)
            )

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> JobStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """The connection, under its lock. Damage SQLite reports (a malformed page) is
        :class:`JobStoreDamagedError`: logged once, with the file's path, and from then on
        every call is refused at once (writing on into a damaged file can spread the damage;
        the operator restores it)."""
        with self._lock:
            if self._damage is not None:
                raise JobStoreDamagedError(_DAMAGED)
            try:
                yield self._db
            except sqlite3.DatabaseError as e:
                if not _is_damage(e):
                    raise
                self._damage = str(e)
                if self._opened:  # at open the error itself says it, naming the file
                    log.error(
                        "the job store %s is damaged (%s): every job request is refused (503 "
                        "job_store_damaged) until it is restored; %s",
                        self.path,
                        e,
                        _restore_advice(self.path),
                    )
                raise JobStoreDamagedError(_DAMAGED) from e

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` .. ``COMMIT`` (or ``ROLLBACK``) under the connection lock. A
        database that cannot take the write (locked by another process past the 30 s timeout,
        a full disk) is :class:`~stygig.errors.OverloadedError` ``queue_unavailable`` (503 to
        a client; the detail goes to the log); a damaged one is :class:`JobStoreDamagedError`
        (:meth:`_connection`)."""
        with self._connection() as db:
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as e:
                raise _unavailable(e) from e
            try:
                yield db
            except BaseException as e:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                if isinstance(e, sqlite3.OperationalError):
                    raise _unavailable(e) from e
                raise
            try:
                db.execute("COMMIT")
            except sqlite3.OperationalError as e:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise _unavailable(e) from e

    @staticmethod
    def _event(
        db: sqlite3.Connection, job_id: str, event: str, owner: str | None, detail: Any = None
    ) -> None:
        db.execute(
            "INSERT INTO events (job_id, at, event, owner, detail) VALUES (?, ?, ?, ?, ?)",
            (job_id, time.time(), event, owner, None if detail is None else json.dumps(detail)),
        )

    # -- writes ----------------------------------------------------------------------------------

    def submit(self, spec: JobSpec, limits: QueueLimits | None = None) -> tuple[Job, bool]:
        """Record a queued job (committed before this returns); ``(job, created)``.

        Submitting an id that already exists returns the existing job and ``created=False``,
        so a client that retries a submission never creates a duplicate; with another input
        or other options it is refused (:class:`InferenceIdInUseError`, 409).

        Raises:
            OverloadedError: ``queue_full`` when the unfinished jobs, with this one, would go
                over ``limits`` (``None``: no limit). Counted in the insert's transaction, so
                concurrent submissions cannot overshoot together.
        """
        job_id = spec.id or uuid.uuid4().hex
        now = time.time()
        select = f"SELECT {_NO_BODY} FROM jobs WHERE id = ?"
        with self._transaction() as db:
            existing = db.execute(select, (job_id,)).fetchone()
            if existing is not None:
                stored = db.execute("SELECT fingerprint FROM jobs WHERE id = ?", (job_id,))
                check_same_request(job_id, stored.fetchone()["fingerprint"], spec)
                return Job.from_row(existing), False
            params = json.dumps(dict(spec.params))
            if limits is not None:
                self._check_room(db, limits, len(spec.input_body or b"") + len(params))
            db.execute(
                "INSERT INTO jobs (id, status, input_location, input_body, content_type, params,"
                " output_location, failure_location, webhook, time_limit_s, max_attempts,"
                " created_at, token, fingerprint)"
                " VALUES (?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    spec.input_location,
                    spec.input_body,
                    spec.content_type,
                    params,
                    spec.output_location.replace("{id}", job_id),
                    spec.failure_location.replace("{id}", job_id),
                    spec.webhook,
                    spec.time_limit_s,
                    spec.max_attempts,
                    now,
                    uuid.uuid4().hex,
                    spec.fingerprint(),
                ),
            )
            self._event(db, job_id, "submitted", None)
            row = db.execute(select, (job_id,)).fetchone()
        return Job.from_row(row), True

    @staticmethod
    def _check_room(db: sqlite3.Connection, limits: QueueLimits, body_bytes: int) -> None:
        # length() of a BLOB reads the row header only, not the body; the status index
        # finds the unfinished rows. A job's options count too (up to the 64 KB request head
        # each: 10,000 queued jobs' options were 640 MB beyond the inputs' bound).
        jobs, held = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(length(input_body)), 0)"
            " + COALESCE(SUM(length(params)), 0) FROM jobs"
            f" WHERE status IN ({', '.join('?' * len(UNFINISHED))})",
            UNFINISHED,
        ).fetchone()
        if jobs + 1 > limits.max_jobs or held + body_bytes > limits.max_bytes:
            raise OverloadedError(
                "the job queue is full; retry after Retry-After seconds", code="queue_full"
            )

    def claim(self, owner: str, *, lease_s: float = 60.0, limit: int = 1) -> list[Job]:
        """Take up to ``limit`` queued jobs (oldest first) for ``owner``; counts the attempt."""
        now = time.time()
        with self._transaction() as db:
            # A queued job's lease_expires, when set, is when it may run again (release).
            rows = db.execute(
                "SELECT id FROM jobs WHERE status = 'queued'"
                " AND (lease_expires IS NULL OR lease_expires <= ?) ORDER BY seq LIMIT ?",
                (now, limit),
            ).fetchall()
            ids = [r["id"] for r in rows]
            for job_id in ids:
                db.execute(
                    "UPDATE jobs SET status = 'running', attempts = attempts + 1, owner = ?,"
                    " lease_expires = ?, started_at = ? WHERE id = ?",
                    (owner, now + lease_s, now, job_id),
                )
                self._event(db, job_id, "claimed", owner)
            claimed = []
            for job_id in ids:
                row = db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
                try:
                    claimed.append(Job.from_row(row, strict=True))
                except (ValueError, TypeError, RecursionError):
                    # It can never run: failed now, so it does not stall every job behind it.
                    log.error("job %s cannot be read (a corrupt row); it is failed", job_id)
                    db.execute(
                        "UPDATE jobs SET status = 'failed', finished_at = ?, error = ?,"
                        " lease_expires = NULL, notify_state = 'pending', input_body = NULL,"
                        " params = '{}' WHERE id = ?",
                        (now, json.dumps(CORRUPT_RECORD), job_id),
                    )
                    self._event(db, job_id, "failed", owner, CORRUPT_RECORD)
        return claimed

    def renew(self, owner: str, *, lease_s: float = 60.0) -> int:
        """Extend the leases of every job ``owner`` runs; how many."""
        with self._transaction() as db:
            cur = db.execute(
                "UPDATE jobs SET lease_expires = ? WHERE owner = ? AND status = 'running'",
                (time.time() + lease_s, owner),
            )
            return cur.rowcount

    def finish(
        self,
        job_id: str,
        owner: str,
        attempt: int,
        status: Literal["succeeded", "failed"],
        error: Mapping[str, Any] | None = None,
    ) -> bool:
        """Record the terminal state, once: only the owner of this attempt can; whether it did.
        The job's inline input and its options are dropped in the same transaction: they are
        never needed again (no view, listing or notification shows them), and the options
        alone can be a request head's worth (64 KB) kept for the whole retention time."""
        with self._transaction() as db:
            cur = db.execute(
                "UPDATE jobs SET status = ?, finished_at = ?, error = ?, lease_expires = NULL,"
                " notify_state = 'pending', input_body = NULL, params = '{}'"
                " WHERE id = ? AND status = 'running' AND owner = ? AND attempts = ?",
                (
                    status,
                    time.time(),
                    json.dumps(dict(error)) if error else None,
                    job_id,
                    owner,
                    attempt,
                ),
            )
            if cur.rowcount != 1:
                return False
            self._event(db, job_id, status, owner, dict(error) if error else None)
        return True

    def release(self, job_id: str, owner: str, attempt: int, *, delay_s: float = 0.0) -> bool:
        """Give back a job ``owner`` runs (``attempt``) but cannot finish: queued again, to be
        claimed from ``delay_s`` on (its ``lease_expires`` says when); whether it did."""
        with self._transaction() as db:
            cur = db.execute(
                "UPDATE jobs SET status = 'queued', owner = NULL, lease_expires = ?"
                " WHERE id = ? AND status = 'running' AND owner = ? AND attempts = ?",
                (time.time() + max(delay_s, 0.0), job_id, owner, attempt),
            )
            if cur.rowcount != 1:
                return False
            self._event(db, job_id, "released", owner, {"delay_s": round(delay_s, 3)})
        return True

    def requeue_orphans(self, owner: str) -> list[str]:
        """Put ``running`` jobs whose owner is gone (dead here, or lease expired) back in line."""
        now = time.time()
        with self._transaction() as db:
            rows = db.execute(
                "SELECT id, owner, lease_expires FROM jobs WHERE status = 'running'"
            ).fetchall()
            orphans = [
                r["id"]
                for r in rows
                if r["owner"] != owner
                and (
                    (r["lease_expires"] or 0.0) < now
                    or _owner_is_dead(str(r["owner"] or ""), owner)
                )
            ]
            for job_id in orphans:
                db.execute(
                    "UPDATE jobs SET status = 'queued', owner = NULL, lease_expires = NULL"
                    " WHERE id = ?",
                    (job_id,),
                )
                self._event(db, job_id, "requeued", owner)
        return orphans

    def purge(self, finished_before: float, *, batch: int = 500) -> int:
        """Delete finished jobs (and their events and documents) that have nothing left to
        notify and ended before ``finished_before``, then the oldest of them beyond
        ``max_finished`` finished jobs, whatever their age; how many. Deletes in short
        transactions of ``batch``."""
        if batch < 1:
            raise InvalidOptionsError("batch must be at least 1")
        removed = 0
        while True:
            deleted = self._delete_finished("finished_at < ?", (finished_before,), batch)
            removed += deleted
            if deleted < batch:
                break
        with self._connection() as db:
            (finished,) = db.execute(
                "SELECT COUNT(*) FROM jobs WHERE finished_at IS NOT NULL"
            ).fetchone()
        excess = int(finished) - self.max_finished
        while excess > 0:
            # The oldest first (the finished_at index), skipping those still to notify.
            deleted = self._delete_finished(
                "finished_at IS NOT NULL ORDER BY finished_at, seq", (), min(batch, excess)
            )
            if deleted == 0:
                break  # the rest are still to be notified
            removed += deleted
            excess -= deleted
        return removed

    def _delete_finished(self, where: str, args: tuple[Any, ...], limit: int) -> int:
        """Delete up to ``limit`` finished jobs whose notification is not pending, chosen by
        ``where`` (with ``args``; may end in an ``ORDER BY``), with their events, then their
        own documents (a folder's disk is bounded too); how many."""
        with self._transaction() as db:
            rows = db.execute(
                "SELECT id, token, output_location, failure_location FROM jobs"
                " WHERE status IN (?, ?) AND (notify_state IS NULL OR notify_state != 'pending')"
                f" AND {where} LIMIT ?",
                (*TERMINAL, *args, limit),
            ).fetchall()
            ids = [r["id"] for r in rows]
            marks = ", ".join("?" * len(ids))
            db.execute(f"DELETE FROM events WHERE job_id IN ({marks})", ids)
            db.execute(f"DELETE FROM jobs WHERE id IN ({marks})", ids)
        for row in rows:
            for where_to in (row["output_location"], row["failure_location"]):
                delete_own_document(where_to, row["id"], row["token"])
        return len(ids)

    def mark_notified(self, job_id: str, state: str) -> None:
        """Record the notification outcome: ``sent``, ``failed`` or ``none`` (nothing to send)."""
        with self._transaction() as db:
            db.execute("UPDATE jobs SET notify_state = ? WHERE id = ?", (state, job_id))
            self._event(db, job_id, f"notify_{state}", None)

    # -- reads -----------------------------------------------------------------------------------

    def _one(self, columns: str, job_id: str) -> sqlite3.Row:
        with self._connection() as db:
            row = db.execute(f"SELECT {columns} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFoundError("no job has this InferenceId", code="unknown_job")
        assert isinstance(row, sqlite3.Row)
        return row

    def get(self, job_id: str) -> Job:
        """One job, without its inline input (:class:`~stygig.errors.NotFoundError` when
        unknown)."""
        return Job.from_row(self._one(_NO_BODY, job_id))

    def view(self, job_id: str) -> JobView:
        """One job's public view (:class:`~stygig.errors.NotFoundError` when unknown)."""
        return JobView.from_row(self._one(_VIEW_COLUMNS, job_id))

    def list_jobs(
        self, *, status: str | None = None, limit: int = 100, after_seq: int = 0
    ) -> JobPage:
        """Public views of jobs in submission order, optionally of one status, at most ``limit``
        (up to :data:`MAX_PAGE`) after ``after_seq``; only the viewed columns are read, through
        the status index, so a call's work is bounded by ``limit`` whatever the table holds.
        ``next_after`` is set when the page is full (:class:`JobPage`)."""
        if status is not None and status not in STATUSES:
            raise InvalidOptionsError(f"status must be one of {', '.join(STATUSES)}")
        limit = max(1, min(limit, MAX_PAGE))
        sql = f"SELECT {_VIEW_COLUMNS} FROM jobs WHERE seq > ?"
        args: list[Any] = [max(0, after_seq)]
        if status is not None:
            sql += " AND status = ?"
            args.append(status)
        sql += " ORDER BY seq LIMIT ?"
        args.append(limit)
        with self._connection() as db:
            rows = db.execute(sql, args).fetchall()
        views = [JobView.from_row(r) for r in rows]
        return JobPage(views, views[-1].seq if len(views) == limit else None)

    def pending_notifications(self, limit: int = 100, *, after_seq: int = 0) -> list[Job]:
        """Finished jobs whose notification has not been sent yet, in submission order after
        ``after_seq`` (the caller pages past those it is already sending)."""
        with self._connection() as db:
            rows = db.execute(
                f"SELECT {_NO_BODY} FROM jobs WHERE notify_state = 'pending' AND seq > ?"
                " ORDER BY seq LIMIT ?",
                (max(0, after_seq), limit),
            ).fetchall()
        return [Job.from_row(r) for r in rows]

    def counts(self) -> JobCounts:
        """Jobs per status, each counted up to ``count_limit`` (default :data:`COUNT_LIMIT`):
        one bounded index range per status, so a call's work does not grow with the jobs kept.
        Beyond the limit the number is ``count_limit`` and ``complete`` is false ("at least")."""
        found: dict[str, int] = {}
        with self._connection() as db:
            for status in STATUSES:
                (n,) = db.execute(
                    "SELECT COUNT(*) FROM (SELECT 1 FROM jobs WHERE status = ? LIMIT ?)",
                    (status, self.count_limit + 1),
                ).fetchone()
                found[status] = int(n)
        complete = all(n <= self.count_limit for n in found.values())
        return JobCounts({s: min(n, self.count_limit) for s, n in found.items()}, complete=complete)

    def events(self, job_id: str) -> list[dict[str, Any]]:
        """One job's journal, oldest first (:class:`~stygig.errors.NotFoundError` when unknown:
        every job has its ``submitted`` event). An audit of every job pages with
        :meth:`list_jobs` and reads each one's."""
        with self._connection() as db:
            rows = db.execute(
                "SELECT job_id, at, event, owner, detail FROM events WHERE job_id = ? ORDER BY seq",
                (job_id,),
            ).fetchall()
        if not rows:
            raise NotFoundError("no job has this InferenceId", code="unknown_job")
        return [dict(r) for r in rows]

"""Run queued jobs: a bounded number at a time, each within its time limit, none twice.

One dispatcher thread claims a job whenever a slot is free (``concurrency`` slots), a supervisor
thread waits for it with the job's time limit, and the recommendation itself runs in a fresh
compute thread. A slot is given back when the computation ends, so a job that overran its limit
a little still counts against the concurrency until it stops. Python cannot kill a thread, so a
computation stuck for good (a read that never returns) is abandoned ``grace_s`` after its limit:
the job is already failed, its slot is given back and its thread left to end on its own. At
most ``max_abandoned`` such threads may exist; at the cap the worker stops claiming (and says so
in the log) until one ends, so a flood of stuck reads cannot grow threads without bound.

Per job, the order of steps is what makes a crash harmless::

    claim (store: running, attempt n)
      -> result already at the output / failure location, with this job's token?
           (an earlier attempt wrote it)  yes: record that outcome, done
      -> read input, recommend
      -> write the result to the output location (atomic put / rename), through the job's
         write gate: after its time limit the supervisor shuts the gate and nothing more is
         written (the result or failure is written at most once)
      -> record succeeded in the store (only the owner of attempt n can)

A crash before the write re-runs the job; a crash after it finds the result and only records it.
A job whose attempts run past ``max_attempts`` (it crashes the process every time) is failed
with ``code: "crashed"`` instead of being tried again.

Client-named inputs (``X-Amzn-SageMaker-InputLocation``, ``image_uri(s)``) are read through an
:class:`~stygig.locations.InputLocations` policy: refused unless the operator allowed them, and
never more than its byte limit.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, cast

from stygig import storage
from stygig.engine import Options, Query, Recommender
from stygig.errors import (
    InvalidImageError,
    InvalidOptionsError,
    NotFoundError,
    OverloadedError,
    StorageError,
    StygigError,
)
from stygig.jobs.documents import Failure, JobProof
from stygig.jobs.notify import Notifier, WebhookDeliveries, event_for
from stygig.jobs.queue import JobQueue
from stygig.jobs.store import Job, JobError, JobStoreDamagedError, new_owner
from stygig.locations import InputLocations
from stygig.recommendation import (
    OPAQUE_CONTENT_TYPES,
    check_part_count,
    merge_option_sources,
    opens_a_json_object,
    parse_json_object,
    split_json_request,
)

__all__ = [
    "JobWorker",
    "WorkerConfig",
    "WriteGate",
    "check_job_input",
    "parse_job_input",
    "run_job",
]

log = logging.getLogger("stygig.jobs")
_JSON_TYPES = ("application/json", "text/json")
_PURGE_EVERY_S = 60.0
_PURGE_BATCH = 500
#: Notifications being sent at once besides clients' webhook backlog (the operator's
#: channels are fast, so these are few; the bound keeps a stuck operator receiver finite).
_MAX_NOTIFYING = 1000


@dataclass(frozen=True)
class WorkerConfig:
    """How the worker shares the machine.

    Attributes:
        concurrency: jobs computed at once in this process (keep it below the cores so that
            real-time requests always find one).
        lease_s: how long a claim holds without renewal (renewed every ``lease_s / 3``).
        poll_s: how often an idle worker looks for work (a submission wakes it at once).
        notify_threads: threads sending the operator's channels (``--async-webhook``, SNS);
            a job's own webhook never takes one (see :class:`~stygig.jobs.notify.WebhookDeliveries`).
        webhook_concurrency: clients' webhook attempts in flight at once (tasks on one event
            loop, not threads).
        webhooks_per_host: of those, at most this many to one webhook host.
        webhook_backlog: clients' webhook deliveries waiting or running at most; beyond, a
            job's own webhook is not sent (its notification is recorded failed).
        webhook_host_backlog: the same, for one webhook host.
        grace_s: how long past its time limit a job's computation may go on holding its slot;
            after that its thread is abandoned and the slot given back.
        max_abandoned: abandoned threads allowed at once; at the cap nothing new is claimed.
        retry_s: how long a job whose outcome could not be written (its output storage
            failing) waits before it is tried again, doubled per attempt; its last attempt's
            failure is recorded in the store alone (see :meth:`JobWorker._give_back`).
    """

    concurrency: int = 1
    lease_s: float = 60.0
    poll_s: float = 0.5
    notify_threads: int = 4
    webhook_concurrency: int = 32
    webhooks_per_host: int = 2
    webhook_backlog: int = 1000
    webhook_host_backlog: int = 100
    grace_s: float = 5.0
    max_abandoned: int = 4
    retry_s: float = 30.0

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise InvalidOptionsError("async concurrency must be at least 1")
        if self.lease_s <= 0 or self.poll_s <= 0:
            raise InvalidOptionsError("lease_s and poll_s must be positive")
        if self.grace_s < 0 or self.max_abandoned < 1:
            raise InvalidOptionsError("grace_s must be >= 0 and max_abandoned at least 1")
        limits = (
            self.notify_threads,
            self.webhook_concurrency,
            self.webhooks_per_host,
            self.webhook_backlog,
            self.webhook_host_backlog,
        )
        if min(limits) < 1:
            raise InvalidOptionsError("notification threads and webhook limits must be at least 1")


def _split_json_input(
    body: bytes,
) -> tuple[list[bytes], tuple[str, ...], list[str], dict[str, Any]]:
    """A JSON input as (photos, item ids, stored photo locations, options), its parts counted
    against the query limit before any location is read."""
    images, item_ids, rest = split_json_request(
        parse_json_object(body, what="the JSON input"), locations=True
    )
    uris = [rest.pop("image_uri")] if "image_uri" in rest else []
    more = rest.pop("image_uris", [])  # false, 0, "" and null are no list (review, session 42)
    if not isinstance(more, list):
        raise InvalidOptionsError("image_uris must be a list of strings")
    uris += more
    if not all(isinstance(u, str) for u in uris):
        raise InvalidOptionsError("image_uri(s) must be strings")
    check_part_count(len(images) + len(item_ids) + len(uris), len(images) + len(uris))
    return images, item_ids, uris, rest


def _job_options(params: Mapping[str, Any], rest: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON input's options beside the submission's: one option in both is an error naming
    it (``option_given_twice``), never one silently over the other (review, session 42)."""
    return merge_option_sources(
        ("the submission's parameters (query string or custom attributes)", params),
        ("the JSON input", rest),
    )


def _is_json(body: bytes, content_type: str | None) -> bool:
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind in OPAQUE_CONTENT_TYPES:  # no type, or application/octet-stream: by the bytes
        return opens_a_json_object(body)
    return kind in _JSON_TYPES


def check_job_input(
    body: bytes,
    content_type: str | None,
    locations: InputLocations,
    params: Mapping[str, Any] | None = None,
) -> tuple[Query, Options]:
    """Refuse at submission what the job would refuse later: a JSON input that is malformed,
    has too many parts or none, names a location ``locations`` does not allow, or whose
    options (beside the submission's ``params``; one option in both is an error) fail
    validation. The query and options it
    describes, stored photos as their (unread) locations, for the catalogue's own checks
    (:meth:`stygig.engine.Recommender.check`)."""
    if not _is_json(body, content_type):
        return Query(images=(body,)), Options.from_dict(dict(params or {}))
    images, item_ids, uris, rest = _split_json_input(body)
    for uri in uris:
        locations.check(uri)
    options = Options.from_dict(_job_options(params or {}, rest))
    return Query(images=(*images, *uris), item_ids=item_ids), options


def parse_job_input(
    body: bytes,
    content_type: str | None,
    params: Mapping[str, Any],
    locations: InputLocations | None = None,
) -> tuple[Query, Options]:
    """A job's input as a query: a photo, or a JSON request like ``POST /invocations`` takes.

    JSON: ``image_b64`` / ``images_b64`` / ``item_ids`` as in the real-time API, plus
    ``image_uri`` / ``image_uris`` naming stored photos, read through ``locations`` (``None``:
    none may be named), with options beside them. ``params`` (the submission's options) count
    too; an option both there and in the body is an error naming it.
    """
    if not _is_json(body, content_type):
        if not body:
            raise InvalidImageError("the input is empty", code="empty_image")
        return Query(images=(body,)), Options.from_dict(dict(params))
    images, item_ids, uris, rest = _split_json_input(body)
    policy = locations or InputLocations()
    images.extend(policy.read(u) for u in uris)
    options = _job_options(params, rest)
    return Query(images=tuple(images), item_ids=item_ids), Options.from_dict(options)


Outcome = tuple[Literal["succeeded", "failed"], dict[str, Any] | None]
_TIMED_OUT: Outcome = ("failed", {"code": "timeout", "message": "cancelled after the time limit"})


class WriteGate:
    """Lets one job's outcome be written at most once, and not after the job was given up.

    The computation writes through :meth:`write`; the supervisor, at the time limit, calls
    :meth:`close`. Whichever comes first wins, under one lock: a result is never written after
    the job was failed for its time limit, and a result written just before it is kept.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open = True
        self._written: Outcome | None = None

    def write(self, outcome: Outcome, write: Callable[[], object]) -> bool:
        """Run ``write`` (which records ``outcome``) unless the gate is shut; whether it ran."""
        with self._lock:
            if not self._open:
                return False
            write()
            self._open = False
            self._written = outcome
            return True

    def close(self) -> Outcome | None:
        """Shut the gate; the outcome written before, if any (``None``: nothing was, and from
        now on nothing will be)."""
        with self._lock:
            self._open = False
            return self._written


def _document(job: Job, data: Failure | bytes) -> bytes:
    """A result or failure document: ``data`` (a :class:`Failure`, or a JSON object's bytes, as
    an answer's ``to_json`` writes it) with the job's id and token (its proof): a
    :class:`~stygig.jobs.documents.JobResult` or :class:`~stygig.jobs.documents.JobFailure`."""
    proof = json.dumps(asdict(JobProof(job.id, job.token)), separators=(",", ":")).encode()
    if not isinstance(data, bytes):
        data = json.dumps(asdict(data), separators=(",", ":")).encode()
    if data == b"{}":
        return proof
    return data[:-1] + b"," + proof[1:]


def _write_outcome(gate: WriteGate, outcome: Outcome, location: str, document: bytes) -> Outcome:
    """Write ``document`` to ``location`` through ``gate``: ``outcome``, or a timeout when the
    gate was already shut."""

    def write() -> None:
        storage.write_bytes(location, document, content_type="application/json")

    return outcome if gate.write(outcome, write) else _TIMED_OUT


def _failure(job: Job, error: dict[str, Any], gate: WriteGate | None = None) -> Outcome:
    document = _document(job, Failure(cast(JobError, error), job.attempts))
    return _write_outcome(gate or WriteGate(), ("failed", error), job.failure_location, document)


def _own_document(job: Job, uri: str) -> dict[str, Any] | None:
    """The document at ``uri`` if it was written for ``job`` (its token), else ``None``."""
    try:
        own = job.read_own(uri)
    except NotFoundError:  # nothing there yet
        return None
    return None if own is None else own[1]


def run_job(
    job: Job,
    recommender: Recommender,
    gate: WriteGate | None = None,
    locations: InputLocations | None = None,
) -> Outcome:
    """Compute one job and write its result or failure; the outcome to record.

    Idempotent: a result or failure an earlier attempt of this job wrote (it carries the job's
    token) is taken as the outcome; a document of any other job at that place is ignored and
    overwritten. Everything is written through ``gate`` (nothing once it is shut). Inputs named
    by the client are read through ``locations`` (``None``: none may be).
    """
    if _own_document(job, job.output_location) is not None:
        return "succeeded", None
    written = _own_document(job, job.failure_location)
    if written is not None:
        return "failed", dict(written.get("error") or {"code": "failed"})
    if job.attempts > job.max_attempts:
        message = (
            f"the job was running when the process stopped, {job.attempts - 1} times; not retried"
        )
        return _failure(job, {"code": "crashed", "message": message}, gate)
    policy = locations or InputLocations()
    gate = gate or WriteGate()
    try:
        body = job.input_body
        if body is None and job.input_location is None:
            error = {
                "code": "input_lost",
                "message": "the job's input is no longer stored (deleted before the job ran)",
            }
            return _failure(job, error, gate)
        if body is None:
            body = policy.read(str(job.input_location))
        query, options = parse_job_input(body, job.content_type, job.params, policy)
        result = recommender.recommend(query, options).to_json()  # serialised once
    except StygigError as e:
        return _failure(job, {"code": e.code, "message": e.message}, gate)
    except Exception:  # a library's failure on client bytes, or a bug: that job fails
        # What went wrong is for the log: the exception's text may name server paths.
        log.warning("job %s failed", job.id, exc_info=True)
        error = {"code": "job_failed", "message": "the job could not be completed"}
        return _failure(job, error, gate)
    return _write_outcome(gate, ("succeeded", None), job.output_location, _document(job, result))


@dataclass
class _Notice:
    """A notification being sent: its parts still out (the operator's channels, the job's own
    webhook), and whether every part so far went out."""

    job: Job
    parts: int
    ok: bool = True


@dataclass
class _Running:
    job: Job
    gate: WriteGate = field(default_factory=WriteGate)
    # The watchdog gave up waiting for its thread and gave its slot back; otherwise the
    # computation gives the slot back when it ends.
    abandoned: bool = False


#: While a chore keeps failing, how often (seconds) it is logged again: once with its
#: traceback when it starts, then one line per period with the count, then its recovery.
REPEAT_LOG_S = 60.0


def _clock() -> float:
    return time.monotonic()


@dataclass
class _Trouble:
    logged: float  # when a line about the chore was last written
    quiet: int = 0  # failures since, not written
    failing: bool = True  # the last try failed
    said_recovered: bool = False


class _Failures:
    """How often a chore's failure is logged while it repeats (review, session 54: a job
    store on a full disk logged a traceback every 0.25 s, 8 KB/s, onto that same disk). At
    most one line a :data:`REPEAT_LOG_S` period per chore, a chore that alternates between
    failing and working included; forgotten once it has worked for a whole period."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._chores: dict[str, _Trouble] = {}

    def failed(self, what: str, error: BaseException) -> None:
        now = _clock()
        with self._lock:
            trouble = self._chores.get(what)
            if trouble is None:
                self._chores[what] = _Trouble(now)
                log.error("job housekeeping failed: %s", what, exc_info=error)
            elif now - trouble.logged >= REPEAT_LOG_S:
                log.error(
                    "job housekeeping still failing: %s (%d more times in %.0f s): %s",
                    what,
                    trouble.quiet + 1,
                    now - trouble.logged,
                    error,
                )
                self._chores[what] = _Trouble(now)
            else:
                trouble.quiet += 1
                trouble.failing = True

    def succeeded(self, what: str) -> None:
        now = _clock()
        with self._lock:
            trouble = self._chores.get(what)
            if trouble is None:
                return
            if trouble.failing and not trouble.said_recovered:
                log.warning("job housekeeping works again: %s", what)
                trouble.said_recovered = True
            trouble.failing = False
            if now - trouble.logged >= REPEAT_LOG_S:
                del self._chores[what]  # a whole period without a line: forgotten


_FAILURES = _Failures()


@contextlib.contextmanager
def _chore(what: str) -> Iterator[None]:
    """Run one housekeeping chore; a failure is logged, not raised: the first with its
    traceback, then while it repeats one line a minute (:data:`REPEAT_LOG_S`), and its
    recovery. A damaged job store is not: the store said so once, when it found the damage (a
    chore tried every minute logged "malformed" every minute)."""
    try:
        yield
    except JobStoreDamagedError:
        pass
    except Exception as e:
        _FAILURES.failed(what, e)
    else:
        _FAILURES.succeeded(what)


class JobWorker:
    """Claims and runs jobs from a job store (a :class:`~stygig.jobs.queue.JobQueue`: SQLite
    on one host, or an SQS queue several servers share) in background threads.

    Args:
        store: the job table or shared queue.
        recommender: returns the recommender, or ``None`` while it is loading (nothing is
            claimed until it is there).
        config: concurrency, leases, polling, the watchdog.
        notifier: where finished jobs are announced (``None``: only per-job webhooks).
        should_yield: when it returns true, no new job is claimed (e.g. the real-time queue is
            busy); running jobs go on.
        locations: which client-named inputs jobs may read (``None``: none).
        retention_s: finished jobs older than this are deleted from the store (``None``: kept
            whatever their age). Either way the store's own bound on the finished jobs it keeps
            (``max_finished``) is applied at the same pace.
    """

    def __init__(
        self,
        store: JobQueue,
        recommender: Callable[[], Recommender | None],
        config: WorkerConfig | None = None,
        *,
        notifier: Notifier | None = None,
        should_yield: Callable[[], bool] | None = None,
        locations: InputLocations | None = None,
        retention_s: float | None = None,
    ) -> None:
        self.store = store
        self.config = config or WorkerConfig()
        self.notifier = notifier or Notifier()  # closed by stop(): one worker's for life
        self.locations = locations or InputLocations()
        self.retention_s = retention_s
        self.owner = new_owner()
        self.current_recommender = recommender  # the loaded one, or None while loading
        self._should_yield = should_yield
        self._slots = threading.BoundedSemaphore(self.config.concurrency)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._supervisors = ThreadPoolExecutor(
            self.config.concurrency, thread_name_prefix="stygig-job"
        )
        # The operator's channels on threads of their own; clients' webhooks on an event loop
        # (made at start); outcomes recorded on one more thread, never the event loop's.
        self._notify_pool = ThreadPoolExecutor(
            self.config.notify_threads, thread_name_prefix="stygig-notify"
        )
        self._record_pool = ThreadPoolExecutor(1, thread_name_prefix="stygig-notified")
        self._webhooks: WebhookDeliveries | None = None
        self._notifying: dict[str, _Notice] = {}
        self._notify_after = 0  # where the next look for pending notifications starts
        # Retention runs on a thread of its own: deleting many jobs' documents (a storage call
        # or two each) must never hold up lease renewal on the housekeeping thread.
        self._purge_pool = ThreadPoolExecutor(1, thread_name_prefix="stygig-purge")
        self._purging: Future[None] | None = None
        self._running: dict[str, _Running] = {}
        self._abandoned = 0
        self._at_cap = False
        self._lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Re-queue jobs orphaned by a dead process, then start dispatching."""
        requeued = self.store.requeue_orphans(self.owner)
        if requeued:
            log.info("re-queued %d job(s) left running by a stopped process", len(requeued))
        self._webhooks = WebhookDeliveries(
            self.notifier,
            concurrency=self.config.webhook_concurrency,
            per_host=self.config.webhooks_per_host,
            backlog=self.config.webhook_backlog,
            host_backlog=self.config.webhook_host_backlog,
        )
        for target, name in ((self._dispatch, "dispatch"), (self._housekeep, "housekeeping")):
            thread = threading.Thread(target=target, name=f"stygig-jobs-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 25.0) -> None:
        """Stop claiming; wait up to ``timeout`` for running jobs (unfinished ones stay leased
        and are re-queued by the next process)."""
        self._stopping.set()
        self._wake.set()
        self.notifier.close()  # a backoff pause ends now; the notification stays pending
        if self._webhooks is not None:
            self._webhooks.close()  # clients' deliveries too (their pauses included)
        for thread in self._threads:
            thread.join(timeout)
        deadline = time.monotonic() + timeout
        while self.running_count() and time.monotonic() < deadline:
            time.sleep(0.05)
        self._supervisors.shutdown(wait=False, cancel_futures=True)
        self._notify_pool.shutdown(wait=False, cancel_futures=True)
        self._record_pool.shutdown(wait=False, cancel_futures=True)
        self._purge_pool.shutdown(wait=False, cancel_futures=True)

    def wake(self) -> None:
        """Look for work now (called after a submission)."""
        self._wake.set()

    def running_count(self) -> int:
        """Jobs being computed by this process (abandoned threads not counted)."""
        with self._lock:
            return len(self._running)

    def abandoned_count(self) -> int:
        """Computations given up after their time limit whose threads have not ended yet."""
        with self._lock:
            return self._abandoned

    # -- threads ---------------------------------------------------------------------------------

    def _idle(self) -> None:
        self._wake.wait(self.config.poll_s)
        self._wake.clear()

    def _may_claim(self) -> bool:
        if self.current_recommender() is None or (self._should_yield and self._should_yield()):
            return False
        with self._lock:
            at_cap = self._abandoned >= self.config.max_abandoned
            changed, self._at_cap = at_cap != self._at_cap, at_cap
        if at_cap and changed:
            log.error(
                "%d job threads are stuck past their time limits: no new job is started until "
                "one of them ends (look for a hanging storage read)",
                self.config.max_abandoned,
            )
        return not at_cap

    def _dispatch(self) -> None:
        while not self._stopping.is_set():
            if not self._slots.acquire(timeout=self.config.poll_s):
                continue
            claimed: list[Job] = []
            with _chore("claiming a job"):  # a damaged store: said once, by the store
                if self._may_claim():
                    claimed = self.store.claim(self.owner, lease_s=self.config.lease_s)
            if not claimed:
                self._slots.release()
                self._idle()
                continue
            run = _Running(claimed[0])
            with self._lock:
                self._running[run.job.id] = run
            self._supervisors.submit(self._supervise, run)

    def _supervise(self, run: _Running) -> None:
        job = run.job
        rec = self.current_recommender()
        assert rec is not None
        future: Future[Outcome] = Future()
        threading.Thread(
            target=self._compute_job,
            args=(run, rec, future),
            name=f"stygig-job-compute-{job.seq}",
            daemon=True,  # an abandoned computation must not keep the process from exiting
        ).start()
        remaining = job.time_limit_s - (time.time() - (job.started_at or time.time()))
        timed_out = False
        outcome: Outcome | None
        try:
            outcome = future.result(timeout=max(0.0, remaining))
        except FutureTimeout:
            timed_out = True
            # From here on the computation cannot write; if it did just in time, that stands.
            outcome = run.gate.close()
            if outcome is None:
                message = f"the job ran past its {job.time_limit_s:g}-second time limit"
                outcome = self._fail(job, {"code": "timeout", "message": message})
        except StorageError:  # the outcome's storage failing (or its earlier documents
            # unreadable): not the job's fault, so not its end (review, session 49)
            log.exception("job %s: its outcome could not be written", job.id)
            outcome = None
        except Exception:
            log.exception("job %s: unexpected failure", job.id)
            internal = {"code": "internal_error", "message": "the job failed on the server"}
            outcome = self._fail(job, internal)
        if outcome is not None:
            self._record_end(job, outcome)
        else:
            self._give_back(job)
        self._wake.set()
        if timed_out:
            self._await_or_abandon(run, future)

    def _record_end(self, job: Job, outcome: Outcome) -> None:
        """Record ``job``'s end in the store (see :meth:`_store_retried`)."""

        def finish() -> None:
            if not self.store.finish(job.id, self.owner, job.attempts, *outcome):
                log.warning("job %s was taken over before it finished here", job.id)

        self._store_retried(job, "its end", finish)

    def _give_back(self, job: Job) -> None:
        """A job whose outcome could not be written (neither its result nor its failure: the
        output storage failing) goes back in line, to be tried again after :attr:`retry_s
        <WorkerConfig.retry_s>` doubled per attempt. Its last attempt (``max_attempts``) is
        failed in the store alone, since no document can be written, so the job ends and its
        client is told (review, session 49: it stayed ``running`` with its lease renewed, and
        was never tried again, until the process restarted)."""
        if job.attempts >= job.max_attempts:
            error = {
                "code": "output_unwritable",
                "message": f"the job's outcome could not be stored ({job.attempts} attempts)",
            }
            # Its failure document where that location is writable (only the output may be
            # broken), else the store alone says so.
            self._record_end(job, self._fail(job, error) or ("failed", error))
            return
        # Never sooner than an overrun computation of this attempt may still hold its slot
        # (grace_s), so the next attempt never runs beside it.
        delay = max(self.config.retry_s * 2 ** max(job.attempts - 1, 0), self.config.grace_s)

        def release() -> None:
            if not self.store.release(job.id, self.owner, job.attempts, delay_s=delay):
                log.warning("job %s was taken over before it was given back", job.id)

        self._store_retried(job, "its return to the queue", release)

    def _store_retried(self, job: Job, what: str, call: Callable[[], None]) -> None:
        """``call`` (a write to the store about ``job``), retried with backoff, up to 30 s
        apart, while the store cannot take it (unreachable, locked, a full disk): an end
        never recorded left the job ``running`` for good, its lease renewed. Other errors are
        logged and not retried (they would hold this worker's thread for ever). Stopping
        gives up (the lease runs out and another worker runs the job again)."""
        delay = 0.5
        while True:
            try:
                call()
                return
            except JobStoreDamagedError:
                return  # said once, by the store: the job runs again once it is restored
            except (OverloadedError, StorageError):  # the store unreachable, locked, full
                log.exception("job %s: %s could not be recorded; retrying", job.id, what)
            except Exception:  # never going to work (a corrupt record, a bug): not retried
                log.exception("job %s: %s cannot be recorded; given up", job.id, what)
                return
            if self._stopping.wait(delay):
                return
            delay = min(2 * delay, 30.0)

    def _fail(self, job: Job, error: dict[str, Any]) -> Outcome | None:
        """Write ``job``'s failure; ``None`` when storage is down (then the job is given back:
        :meth:`_give_back`)."""
        try:
            return _failure(job, error)
        except Exception:
            log.exception("job %s: its failure could not be written", job.id)
            return None

    def _await_or_abandon(self, run: _Running, future: Future[Outcome]) -> None:
        """Wait ``grace_s`` more for an overrun computation; then give its slot back."""
        try:
            future.result(timeout=self.config.grace_s)
            return
        except FutureTimeout:
            pass
        except Exception:
            return  # it ended (badly): its own thread gave the slot back
        with self._lock:
            if future.done():
                return
            run.abandoned = True
            self._abandoned += 1
            self._running.pop(run.job.id, None)
            abandoned = self._abandoned
        log.error(
            "job %s is still running %g s past its time limit: its slot is given back and its "
            "thread abandoned (%d abandoned now, at most %d)",
            run.job.id,
            self.config.grace_s,
            abandoned,
            self.config.max_abandoned,
        )
        self._slots.release()

    def _compute_job(self, run: _Running, rec: Recommender, future: Future[Outcome]) -> None:
        try:
            future.set_result(run_job(run.job, rec, run.gate, self.locations))
        except BaseException as e:
            future.set_exception(e)
        finally:
            with self._lock:
                abandoned = run.abandoned
                if abandoned:
                    self._abandoned -= 1
                else:
                    self._running.pop(run.job.id, None)
            if abandoned:
                log.warning("the abandoned computation of job %s ended", run.job.id)
            else:
                self._slots.release()  # an abandoned one's slot was given back already

    def _housekeep(self) -> None:
        last_renew = last_orphans = time.monotonic()
        last_purge = -_PURGE_EVERY_S
        while not self._stopping.wait(min(self.config.poll_s, 0.25)):
            now = time.monotonic()
            # Each chore on its own: one that fails (a record it cannot read, the store down)
            # is logged and tried again at its own pace, never holding up the others.
            if now - last_renew >= self.config.lease_s / 3:
                with _chore("renewing leases"):
                    self.store.renew(self.owner, lease_s=self.config.lease_s)
                    last_renew = now  # a failed renewal is tried again at the next tick
            if now - last_orphans >= max(5.0, self.config.lease_s / 3):
                with _chore("requeueing orphaned jobs"):
                    if self.store.requeue_orphans(self.owner):
                        self._wake.set()
                last_orphans = now
            if now - last_purge >= _PURGE_EVERY_S:
                last_purge = now
                if self._purging is None or self._purging.done():
                    self._purging = self._purge_pool.submit(self._purge, self.retention_s)
            with _chore("sending notifications"):
                self._notify_pending()

    def _purge(self, retention_s: float | None) -> None:
        with _chore("deleting finished jobs past the retention time or the number kept"):
            before = 0.0 if retention_s is None else time.time() - retention_s
            purged = 0
            while not self._stopping.is_set():
                # A store may delete a batch per call (SQS): again while batches come back full.
                n = self.store.purge(before, batch=_PURGE_BATCH)
                purged += n
                if n < _PURGE_BATCH:
                    break
            if purged:
                log.info(
                    "deleted %d finished job(s) past the retention time or the number kept", purged
                )

    def _notify_pending(self) -> None:
        """Start sending the notifications that are due and not being sent already.

        The operator's channels go to the notification threads at once; a job's own webhook
        goes to :class:`~stygig.jobs.notify.WebhookDeliveries`, where a slow receiver holds no
        thread. The store is read a page at a time past the jobs already being sent, so a page
        full of slow deliveries never hides the jobs behind it. How many are being sent is
        bounded: clients' by the webhook backlog, the rest by ``_MAX_NOTIFYING`` beyond it.
        """
        webhooks = self._webhooks
        if webhooks is None:
            return
        limit = 200
        jobs = self.store.pending_notifications(limit=limit, after_seq=self._notify_after)
        self._notify_after = jobs[-1].seq if len(jobs) == limit else 0
        most = self.config.webhook_backlog + _MAX_NOTIFYING
        for job in jobs:
            if not self.notifier.wants(job):
                self.store.mark_notified(job.id, "none")
                continue
            operator = self.notifier.wants_operator(job)
            notice = _Notice(job, int(operator) + int(bool(job.webhook)))
            with self._lock:
                if job.id in self._notifying:
                    continue
                if len(self._notifying) >= most:
                    self._notify_after = 0
                    return
                self._notifying[job.id] = notice
            if operator:
                self._notify_pool.submit(self._send_operator, notice)
            if job.webhook and not webhooks.submit(
                job.webhook, event_for(job), functools.partial(self._part_sent, notice)
            ):
                self._part_sent(notice, False)
                if self._stopping.is_set():
                    continue  # refused because closed: stays pending for the next process
                log.warning(
                    "job %s: its webhook is not sent: %d client webhook notifications are "
                    "waiting already (at most %d, %d for one host)",
                    job.id,
                    webhooks.pending(),
                    webhooks.backlog,
                    webhooks.host_backlog,
                )

    def _send_operator(self, notice: _Notice) -> None:
        try:
            sent = self.notifier.send_operator(notice.job)
        except Exception:  # any failure is recorded: a pending one would be retried forever
            log.exception("notification for job %s failed", notice.job.id)
            sent = False
        self._part_sent(notice, sent)

    def _part_sent(self, notice: _Notice, sent: bool) -> None:
        """One part of ``notice`` is over; the last one has the outcome recorded (on the
        recording thread: this may be the webhooks' event loop, which must not block)."""
        with self._lock:
            notice.ok = notice.ok and sent
            notice.parts -= 1
            last = notice.parts == 0
        if last:
            try:
                self._record_pool.submit(self._record_notice, notice)
            except RuntimeError:  # stopped: it stays pending, the next process sends it
                with self._lock:
                    self._notifying.pop(notice.job.id, None)

    def _record_notice(self, notice: _Notice) -> None:
        job = notice.job
        try:
            if not notice.ok and self._stopping.is_set():
                return  # cut short by stop(): still pending, the next process sends it
            self.store.mark_notified(job.id, "sent" if notice.ok else "failed")
        except JobStoreDamagedError:
            pass  # said once, by the store; still pending once it is restored
        except Exception:
            log.exception("recording the notification of job %s failed", job.id)
        finally:
            with self._lock:
                self._notifying.pop(job.id, None)

"""Run queued jobs: a bounded number at a time, each within its time limit, none twice.

One dispatcher thread claims a job whenever a slot is free (``concurrency`` slots), a supervisor
thread waits for it with the job's time limit, and the recommendation itself runs in a compute
thread. A slot is only given back when the computation really ends, so even a job that overran
its limit (Python cannot kill a thread) keeps counting against the concurrency until it stops:
the limit on CPU use is exact.

Per job, the order of steps is what makes a crash harmless::

    claim (store: running, attempt n)
      -> result already at the output / failure location?  (an earlier attempt wrote it)
           yes: record that outcome, done
      -> read input, recommend
      -> write the result to the output location (atomic put / rename)
      -> record succeeded in the store (only the owner of attempt n can)

A crash before the write re-runs the job; a crash after it finds the result and only records it.
A job whose attempts run past ``max_attempts`` (it crashes the process every time) is failed
with ``code: "crashed"`` instead of being tried again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Literal

from stygig import storage
from stygig.engine import Options, Query, Recommender
from stygig.errors import InvalidImageError, InvalidOptionsError, NotFoundError, StygigError
from stygig.jobs.notify import Notifier
from stygig.jobs.store import Job, JobStore, new_owner
from stygig.recommendation import parse_json_object, split_json_request

__all__ = ["JobWorker", "WorkerConfig", "parse_job_input", "run_job"]

log = logging.getLogger("stygig.jobs")
_JSON_TYPES = ("application/json", "text/json")


@dataclass(frozen=True)
class WorkerConfig:
    """How the worker shares the machine.

    Attributes:
        concurrency: jobs computed at once in this process (keep it below the cores so that
            real-time requests always find one).
        lease_s: how long a claim holds without renewal (renewed every ``lease_s / 3``).
        poll_s: how often an idle worker looks for work (a submission wakes it at once).
        notify_threads: notifications delivered in parallel (a slow webhook blocks one).
    """

    concurrency: int = 1
    lease_s: float = 60.0
    poll_s: float = 0.5
    notify_threads: int = 4

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise InvalidOptionsError("async concurrency must be at least 1")
        if self.lease_s <= 0 or self.poll_s <= 0:
            raise InvalidOptionsError("lease_s and poll_s must be positive")


def parse_job_input(
    body: bytes, content_type: str | None, params: Mapping[str, Any]
) -> tuple[Query, Options]:
    """A job's input as a query: a photo, or a JSON request like ``POST /invocations`` takes.

    JSON: ``image_b64`` / ``images_b64`` / ``item_ids`` as in the real-time API, plus
    ``image_uri`` / ``image_uris`` naming stored photos, with options beside them. ``params``
    (the submission's options) apply under the body's own.
    """
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if not kind:
        kind = "application/json" if body.lstrip()[:1] == b"{" else "image/*"
    if kind not in _JSON_TYPES:
        if not body:
            raise InvalidImageError("the input is empty", code="empty_image")
        return Query(images=(body,)), Options.from_dict(dict(params))
    images, item_ids, rest = split_json_request(parse_json_object(body, what="the JSON input"))
    uris = [rest.pop("image_uri")] if "image_uri" in rest else []
    uris += list(rest.pop("image_uris", None) or [])
    if not all(isinstance(u, str) for u in uris):
        raise InvalidOptionsError("image_uri(s) must be strings")
    images.extend(storage.read_bytes(u) for u in uris)
    options = {**params, **rest}
    return Query(images=tuple(images), item_ids=item_ids), Options.from_dict(options)


Outcome = tuple[Literal["succeeded", "failed"], dict[str, Any] | None]


def _failure(job: Job, error: dict[str, Any]) -> Outcome:
    body = {"InferenceId": job.id, "error": error, "attempts": job.attempts}
    storage.write_bytes(
        job.failure_location, json.dumps(body).encode(), content_type="application/json"
    )
    return "failed", error


def run_job(
    job: Job,
    recommender: Recommender,
    cancelled: threading.Event | None = None,
    lock: threading.Lock | None = None,
) -> Outcome:
    """Compute one job and write its result or failure; the outcome to record.

    Idempotent: a result an earlier attempt already wrote is taken as the outcome. When
    ``cancelled`` is set (under ``lock``) before the result is written, nothing is written.
    """
    if storage.exists(job.output_location):
        return "succeeded", None
    try:
        written = json.loads(storage.read_bytes(job.failure_location))
    except NotFoundError:
        pass  # no earlier outcome: compute it
    else:
        return "failed", dict(written.get("error") or {"code": "failed"})
    if job.attempts > job.max_attempts:
        return _failure(
            job,
            {
                "code": "crashed",
                "message": f"the job was running when the process stopped, "
                f"{job.attempts - 1} times; not retried",
            },
        )
    try:
        body = (
            job.input_body
            if job.input_body is not None
            else storage.read_bytes(str(job.input_location))
        )
        query, options = parse_job_input(body, job.content_type, job.params)
        result = recommender.recommend(query, options).to_dict()
    except StygigError as e:
        return _failure(job, dict(e.to_dict()["error"]))  # type: ignore[call-overload]
    except Exception as e:  # a decoder's failure on client bytes, or a bug: that job fails
        log.warning("job %s failed", job.id, exc_info=True)
        return _failure(job, {"code": "invalid_image", "message": f"job failed: {e}"})
    body = json.dumps(result, separators=(",", ":")).encode()
    with lock or threading.Lock():
        if cancelled is not None and cancelled.is_set():
            return "failed", {"code": "timeout", "message": "cancelled after the time limit"}
        storage.write_bytes(job.output_location, body, content_type="application/json")
    return "succeeded", None


@dataclass
class _Running:
    job: Job
    lock: threading.Lock = field(default_factory=threading.Lock)
    cancelled: threading.Event = field(default_factory=threading.Event)


class JobWorker:
    """Claims and runs jobs from a :class:`JobStore` in background threads.

    Args:
        store: the job table.
        recommender: returns the recommender, or ``None`` while it is loading (nothing is
            claimed until it is there).
        config: concurrency, leases, polling.
        notifier: where finished jobs are announced (``None``: only per-job webhooks).
        should_yield: when it returns true, no new job is claimed (e.g. the real-time queue is
            busy); running jobs go on.
    """

    def __init__(
        self,
        store: JobStore,
        recommender: Callable[[], Recommender | None],
        config: WorkerConfig | None = None,
        *,
        notifier: Notifier | None = None,
        should_yield: Callable[[], bool] | None = None,
    ) -> None:
        self.store = store
        self.config = config or WorkerConfig()
        self.notifier = notifier or Notifier()
        self.owner = new_owner()
        self._recommender = recommender
        self._should_yield = should_yield
        self._slots = threading.BoundedSemaphore(self.config.concurrency)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        n = self.config.concurrency
        self._supervisors = ThreadPoolExecutor(n, thread_name_prefix="stygig-job")
        self._compute = ThreadPoolExecutor(n, thread_name_prefix="stygig-job-compute")
        self._notify_pool = ThreadPoolExecutor(
            self.config.notify_threads, thread_name_prefix="stygig-notify"
        )
        self._notifying: set[str] = set()
        self._running: dict[str, _Running] = {}
        self._lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Re-queue jobs orphaned by a dead process, then start dispatching."""
        requeued = self.store.requeue_orphans(self.owner)
        if requeued:
            log.info("re-queued %d job(s) left running by a stopped process", len(requeued))
        for target, name in ((self._dispatch, "dispatch"), (self._housekeep, "housekeeping")):
            thread = threading.Thread(target=target, name=f"stygig-jobs-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 25.0) -> None:
        """Stop claiming; wait up to ``timeout`` for running jobs (unfinished ones stay leased
        and are re-queued by the next process)."""
        self._stopping.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout)
        deadline = time.monotonic() + timeout
        while self.running_count() and time.monotonic() < deadline:
            time.sleep(0.05)
        self._supervisors.shutdown(wait=False, cancel_futures=True)
        self._compute.shutdown(wait=False, cancel_futures=True)
        self._notify_pool.shutdown(wait=False, cancel_futures=True)

    def wake(self) -> None:
        """Look for work now (called after a submission)."""
        self._wake.set()

    def running_count(self) -> int:
        """Jobs being computed by this process."""
        with self._lock:
            return len(self._running)

    # -- threads ---------------------------------------------------------------------------------

    def _idle(self) -> None:
        self._wake.wait(self.config.poll_s)
        self._wake.clear()

    def _dispatch(self) -> None:
        while not self._stopping.is_set():
            if not self._slots.acquire(timeout=self.config.poll_s):
                continue
            claimed: list[Job] = []
            try:
                ready = self._recommender() is not None
                if ready and not (self._should_yield and self._should_yield()):
                    claimed = self.store.claim(self.owner, lease_s=self.config.lease_s)
            except Exception:
                log.exception("claiming a job failed")
            if not claimed:
                self._slots.release()
                self._idle()
                continue
            job = claimed[0]
            run = _Running(job)
            with self._lock:
                self._running[job.id] = run
            self._supervisors.submit(self._supervise, run)

    def _supervise(self, run: _Running) -> None:
        job = run.job
        rec = self._recommender()
        assert rec is not None
        future: Future[Outcome] = self._compute.submit(self._compute_job, run, rec)
        remaining = job.time_limit_s - (time.time() - (job.started_at or time.time()))
        try:
            status, error = future.result(timeout=max(0.0, remaining))
        except FutureTimeout:
            with run.lock:  # the compute thread cannot write its result from now on
                run.cancelled.set()
            message = f"the job ran past its {job.time_limit_s:g}-second time limit"
            status, error = _failure(job, {"code": "timeout", "message": message})
        except Exception as e:
            log.exception("job %s: unexpected failure", job.id)
            try:
                status, error = _failure(job, {"code": "internal_error", "message": str(e)})
            except Exception:
                return  # storage is down: the lease runs out and the job is tried again
        if not self.store.finish(job.id, self.owner, job.attempts, status, error):
            log.warning("job %s was taken over before it finished here", job.id)
        self._wake.set()

    def _compute_job(self, run: _Running, rec: Recommender) -> Outcome:
        try:
            return run_job(run.job, rec, run.cancelled, run.lock)
        finally:
            with self._lock:
                self._running.pop(run.job.id, None)
            self._slots.release()

    def _housekeep(self) -> None:
        last_renew = last_orphans = time.monotonic()
        while not self._stopping.wait(min(self.config.poll_s, 0.25)):
            now = time.monotonic()
            try:
                if now - last_renew >= self.config.lease_s / 3:
                    self.store.renew(self.owner, lease_s=self.config.lease_s)
                    last_renew = now
                if now - last_orphans >= max(5.0, self.config.lease_s / 3):
                    if self.store.requeue_orphans(self.owner):
                        self._wake.set()
                    last_orphans = now
                self._notify_pending()
            except Exception:
                log.exception("job housekeeping failed")

    def _notify_pending(self) -> None:
        for job in self.store.pending_notifications(limit=200):
            if not self.notifier.wants(job):
                self.store.mark_notified(job.id, "none")
                continue
            with self._lock:
                if job.id in self._notifying:
                    continue
                self._notifying.add(job.id)
            self._notify_pool.submit(self._notify, job)

    def _notify(self, job: Job) -> None:
        try:
            sent = self.notifier.send(job)
            self.store.mark_notified(job.id, "sent" if sent else "failed")
        except Exception:
            log.exception("notification for job %s failed", job.id)
        finally:
            with self._lock:
                self._notifying.discard(job.id)

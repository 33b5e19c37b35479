"""What the worker and the ``/async`` routes need of a job store: the :class:`JobQueue` protocol.

Two stores satisfy it:

* :class:`stygig.jobs.store.JobStore` — SQLite on one host (the default, ``--jobs-db``);
* :class:`stygig.jobs.sqs_store.SqsJobStore` — an SQS queue with job records in S3, shared by
  several servers (``--job-queue sqs://...``).

The contract both keep (the worker's crash-safe order of steps relies on it):

* ``submit`` records a job before it returns and is idempotent by id; it refuses work beyond
  :class:`~stygig.jobs.store.QueueLimits` with ``OverloadedError`` (``queue_full``).
* ``claim`` hands a queued job to one owner at a time and counts the attempt; the owner keeps it
  with ``renew``; a job whose owner stops renewing comes back (``requeue_orphans`` or the queue's
  own redelivery) and is claimed again with the next attempt number.
* ``finish`` records the terminal state once, only for the owner of the current attempt, and
  drops the job's inline input and options; ``purge`` keeps the finished jobs within an age and
  a number (``max_finished``).
* ``pending_notifications`` / ``mark_notified``: finished jobs whose notification is due.
* ``get`` / ``view`` / ``list_jobs`` / ``counts`` / ``events``: what clients and audits read,
  each with work bounded whatever the store holds: ``list_jobs`` returns a :class:`JobPage`
  that may stop short of ``limit`` (even empty) with a ``next_after`` cursor to go on from;
  ``counts`` counts each status only so far (``JobCounts.complete`` false: "at least");
  ``events`` reads one job's journal (an audit of all pages through ``list_jobs``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, Protocol

from stygig.jobs.store import Job, JobCounts, JobPage, JobSpec, JobView, QueueLimits

__all__ = ["JobQueue"]


class JobQueue(Protocol):
    """A durable queue of asynchronous jobs (see the module's docstring for the contract)."""

    def submit(self, spec: JobSpec, limits: QueueLimits | None = None) -> tuple[Job, bool]:
        """Record a queued job; ``(job, created)`` (an existing id: that job, ``False``)."""
        ...

    def claim(self, owner: str, *, lease_s: float = 60.0, limit: int = 1) -> list[Job]:
        """Take up to ``limit`` queued jobs for ``owner`` (with their inline input)."""
        ...

    def renew(self, owner: str, *, lease_s: float = 60.0) -> int:
        """Extend the leases of every job ``owner`` runs; how many."""
        ...

    def finish(
        self,
        job_id: str,
        owner: str,
        attempt: int,
        status: Literal["succeeded", "failed"],
        error: Mapping[str, Any] | None = None,
    ) -> bool:
        """Record the terminal state once (owner and attempt must hold the job); whether it did."""
        ...

    def release(self, job_id: str, owner: str, attempt: int, *, delay_s: float = 0.0) -> bool:
        """Give back a job ``owner`` runs but cannot finish, to be claimed again after
        ``delay_s`` (owner and attempt must hold it); whether it did."""
        ...

    def requeue_orphans(self, owner: str) -> list[str]:
        """Put jobs whose owner is gone back in line (ids); a queue that redelivers on its own
        may return none."""
        ...

    def purge(self, finished_before: float, *, batch: int = 500) -> int:
        """Delete finished, notified jobs that ended before ``finished_before``, and the oldest
        of them beyond the store's ``max_finished``; how many (a store may stop at ``batch``)."""
        ...

    def mark_notified(self, job_id: str, state: str) -> None:
        """Record the notification outcome: ``sent``, ``failed`` or ``none``."""
        ...

    def get(self, job_id: str) -> Job:
        """One job without its inline input (``NotFoundError`` when unknown)."""
        ...

    def view(self, job_id: str) -> JobView:
        """One job's public view (``NotFoundError`` when unknown)."""
        ...

    def list_jobs(
        self, *, status: str | None = None, limit: int = 100, after_seq: int = 0
    ) -> JobPage:
        """Public views in submission order after ``after_seq``; the page's ``next_after``
        (``None`` at the end) is where the next one starts."""
        ...

    def pending_notifications(self, limit: int = 100, *, after_seq: int = 0) -> list[Job]:
        """Finished jobs whose notification has not been sent yet, in submission order after
        ``after_seq`` (so a caller pages past the ones it is still sending)."""
        ...

    def counts(self) -> JobCounts:
        """Jobs per status (every status present), each counted only so far (``complete``)."""
        ...

    def events(self, job_id: str) -> list[dict[str, Any]]:
        """One job's journal, oldest first (``NotFoundError`` when unknown)."""
        ...

    def close(self) -> None:
        """Let go of connections (and, for a shared queue, of the jobs held here)."""
        ...


if TYPE_CHECKING:  # mypy checks that both stores keep the protocol
    from stygig.jobs.sqs_store import SqsJobStore
    from stygig.jobs.store import JobStore

    def _sqlite_store(store: JobStore) -> JobQueue:
        return store

    def _sqs_store(store: SqsJobStore) -> JobQueue:
        return store

"""Durable asynchronous jobs: the SQLite job store, the worker that runs them, notifications.

::

    store = JobStore("jobs.db")                       # committed before anyone hears of a job
    worker = JobWorker(store, lambda: recommender, WorkerConfig(concurrency=1),
                       locations=InputLocations(["s3://shop/in/"]))  # what clients may name
    worker.start()                                     # re-queues jobs a dead process left

The HTTP side is :mod:`stygig.serving.async_api`; batch runs are :mod:`stygig.batch`. The core
(``stygig.engine`` and below) never imports this package.
"""

from __future__ import annotations

from stygig.jobs.notify import Notifier, event_for
from stygig.jobs.store import STATUSES, Job, JobSpec, JobStore, JobView, Status
from stygig.jobs.worker import JobWorker, WorkerConfig, parse_job_input, run_job

__all__ = [
    "STATUSES",
    "Job",
    "JobSpec",
    "JobStore",
    "JobView",
    "JobWorker",
    "Notifier",
    "Status",
    "WorkerConfig",
    "event_for",
    "parse_job_input",
    "run_job",
]

"""Asynchronous invocations over HTTP, in the shape of SageMaker asynchronous inference.

Routes (an ``APIRouter`` the app includes)::

    POST /async/invocations        submit; 202 {"InferenceId", "OutputLocation", "FailureLocation"}
    GET  /async/jobs/{id}          status (queued, running, succeeded, failed) and timestamps
    GET  /async/jobs/{id}/output   the result once succeeded (the error body once failed)
    GET  /async/jobs               list (?status=&limit=&after=) with counts per status

A submission names its input with ``X-Amzn-SageMaker-InputLocation`` (a stored photo or JSON
request: path, ``file://`` or ``s3://``) or carries it inline (a photo or JSON body, as
``POST /invocations`` takes). Options come from ``X-Amzn-SageMaker-Custom-Attributes``
(``k=3&mode=similar``) or the query string. Optional headers:
``X-Amzn-SageMaker-Inference-Id`` (a client id: resubmitting it returns the same job, never a
second one), ``X-Amzn-SageMaker-InvocationTimeoutSeconds`` (the job's time limit, default
900), ``X-Amzn-SageMaker-Content-Type`` (the stored input's type) and ``X-Stygig-Webhook``
(this job's notification URL). The job is committed to the store before the 202 is sent.

:class:`AsyncJobs` bundles the store, the worker and the router; ``main`` serves the async API
alone (with ``/ping``) for tests and benchmarks.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from stygig import storage
from stygig.engine import Options, Recommender
from stygig.errors import InvalidImageError, InvalidOptionsError
from stygig.jobs.notify import Notifier
from stygig.jobs.store import TERMINAL, JobSpec, JobStore
from stygig.jobs.worker import JobWorker, WorkerConfig
from stygig.serving import requests as rq
from stygig.serving.responses import JSON, json_response

__all__ = [
    "AsyncConfig",
    "AsyncJobs",
    "make_async_router",
]

log = logging.getLogger("stygig.serving.async")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_MAX_TIME_LIMIT_S = 3600.0  # SageMaker's InvocationTimeoutSeconds maximum


@dataclass(frozen=True)
class AsyncConfig:
    """The asynchronous side of a server.

    Attributes:
        jobs_db: the SQLite job store.
        output: where results go (folder, ``file://`` or ``s3://`` prefix): ``<id>.out``.
        failure: where failures go (default: ``output``): ``<id>-error.out``.
        worker: concurrency, leases, polling.
        time_limit_s: the default per-job limit.
        max_inline_bytes: the largest inline body (bigger inputs go through a location).
        notifier: webhook / SNS topics for every job.
    """

    jobs_db: Path
    output: str
    failure: str | None = None
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    time_limit_s: float = 900.0
    max_inline_bytes: int = 6 * 1024 * 1024
    notifier: Notifier = field(default_factory=Notifier)


def _time_limit(header: str | None, default: float) -> float:
    if not header:
        return default
    try:
        value = float(header)
    except ValueError:
        raise InvalidOptionsError("InvocationTimeoutSeconds must be a number") from None
    if not 0 < value <= _MAX_TIME_LIMIT_S:
        raise InvalidOptionsError(
            f"InvocationTimeoutSeconds must be within (0, {_MAX_TIME_LIMIT_S:g}]"
        )
    return value


async def _spec(request: Request, config: AsyncConfig) -> JobSpec:
    """The job a submission asks for (4xx errors for every mistake)."""
    h = request.headers
    job_id = h.get("x-amzn-sagemaker-inference-id")
    if job_id is not None and not _ID.match(job_id):
        raise InvalidOptionsError("InferenceId: 1-128 letters, digits, '.', '_' or '-'")
    pairs = [
        *rq.custom_attributes(h.get("x-amzn-sagemaker-custom-attributes")),
        *request.query_params.multi_items(),
    ]
    params = rq.params_to_dict(pairs)
    Options.from_dict(dict(params))  # refuse bad options now, not after the 202
    location = h.get("x-amzn-sagemaker-inputlocation")
    body = await request.body()
    content_type = rq.media_type(h.get("x-amzn-sagemaker-content-type") or h.get("content-type"))
    if location:
        storage.parse(location)  # a bad scheme is a 4xx now
        body_arg: bytes | None = None
    else:
        if not body:
            raise InvalidImageError(
                "send the input inline or name it with X-Amzn-SageMaker-InputLocation",
                code="empty_input",
            )
        if len(body) > config.max_inline_bytes:
            raise rq.PayloadTooLargeError(
                f"inline inputs are limited to {config.max_inline_bytes:,} bytes; "
                "store the input and pass X-Amzn-SageMaker-InputLocation"
            )
        if content_type and content_type not in rq.IMAGE_TYPES and content_type != JSON:
            raise rq.unsupported(content_type)
        if content_type == JSON:
            rq.parse_json_object(body, what="the JSON input")
        body_arg = body
    failure = config.failure or config.output
    return JobSpec(
        id=job_id,
        input_location=location or None,
        input_body=body_arg,
        content_type=content_type or None,
        params=params,
        output_location=storage.join(config.output, "{id}.out"),
        failure_location=storage.join(failure, "{id}-error.out"),
        webhook=h.get("x-stygig-webhook"),
        time_limit_s=_time_limit(
            h.get("x-amzn-sagemaker-invocationtimeoutseconds"), config.time_limit_s
        ),
    )


def make_async_router(store: JobStore, worker: JobWorker, config: AsyncConfig) -> APIRouter:
    """The ``/async`` routes over ``store``; ``worker`` is woken on every submission."""
    router = APIRouter(prefix="/async", tags=["async"])

    @router.post("/invocations", status_code=202, summary="Submit an asynchronous inference")
    async def submit(request: Request) -> Response:
        spec = await _spec(request, config)
        job, created = await run_in_threadpool(store.submit, spec)
        if created:
            worker.wake()
        body = {
            "InferenceId": job.id,
            "OutputLocation": job.output_location,
            "FailureLocation": job.failure_location,
            "Status": job.status,
        }
        headers = {
            "X-Amzn-SageMaker-OutputLocation": job.output_location,
            "X-Amzn-SageMaker-FailureLocation": job.failure_location,
            "Location": f"/async/jobs/{job.id}",
        }
        return json_response(body, 202, headers)

    @router.get("/jobs/{job_id}", summary="One job's status and timestamps")
    async def status(job_id: str) -> Response:
        return json_response((await run_in_threadpool(store.get, job_id)).to_dict())

    @router.get("/jobs/{job_id}/output", summary="A finished job's result (or error)")
    async def output(job_id: str) -> Response:
        job = await run_in_threadpool(store.get, job_id)
        if job.status not in TERMINAL:
            return json_response({"InferenceId": job.id, "Status": job.status}, 409)
        where = job.output_location if job.status == "succeeded" else job.failure_location
        data = await run_in_threadpool(storage.read_bytes, where)
        return Response(data, status_code=200, media_type=JSON)

    @router.get("/jobs", summary="Jobs in submission order, with counts per status")
    async def jobs(status: str | None = None, limit: int = 100, after: int = 0) -> Response:
        found = await run_in_threadpool(
            lambda: store.list_jobs(status=status, limit=limit, after_seq=after)
        )
        counts = await run_in_threadpool(store.counts)
        body = {
            "jobs": [j.to_dict() for j in found],
            "counts": counts,
            "next_after": found[-1].seq if found else None,
        }
        return json_response(body)

    return router


class AsyncJobs:
    """The store, the worker and the router of one server, started and stopped together.

    Args:
        config: where jobs and results live, concurrency, limits, notifications.
        recommender: returns the loaded recommender, or ``None`` while loading.
        should_yield: when true, no new async job starts (real-time traffic comes first).
    """

    def __init__(
        self,
        config: AsyncConfig,
        recommender: Callable[[], Recommender | None],
        *,
        should_yield: Callable[[], bool] | None = None,
    ) -> None:
        self.config = config
        self.store = JobStore(config.jobs_db)
        self.worker = JobWorker(
            self.store,
            recommender,
            config.worker,
            notifier=config.notifier,
            should_yield=should_yield,
        )
        self.router = make_async_router(self.store, self.worker, config)

    def start(self) -> None:
        """Re-queue orphaned jobs and start working."""
        self.worker.start()

    def stop(self, timeout: float = 20.0) -> None:
        """Stop claiming, let running jobs finish (up to ``timeout``), close the store."""
        self.worker.stop(timeout)
        self.store.close()

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """``async with jobs.lifespan(): yield`` inside the app's own lifespan."""
        await asyncio.to_thread(self.start)
        try:
            yield
        finally:
            await asyncio.to_thread(self.stop)

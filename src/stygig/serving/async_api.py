"""Asynchronous invocations over HTTP, in the shape of SageMaker asynchronous inference.

Routes (an ``APIRouter`` the app includes)::

    POST /async/invocations        submit; 202 {"InferenceId", "OutputLocation", "FailureLocation"}
    GET  /async/jobs/{id}          status (queued, running, succeeded, failed) and timestamps
    GET  /async/jobs/{id}/output   the result once succeeded (the error body once failed)
    GET  /async/jobs               list (?status=&limit=&after=) with counts per status; only
                                   when the operator turned it on (``list_jobs``), else 404

A listing is paged by the store, with bounded work per request: ``next_after`` is the ``after``
of the next page, ``null`` once the last job was reached. A page may hold fewer jobs than
``limit``, even none, while ``next_after`` is set (a store that reads each record examined,
like the SQS one, stops after a fixed number of them). Each count is exact while
``counts_complete`` is true; false means some were counted only so far ("at least").

A submission names its input with ``X-Amzn-SageMaker-InputLocation`` (a stored photo or JSON
request: path, ``file://`` or ``s3://``, under a prefix the operator allowed:
``allow_input_prefixes``, see :mod:`stygig.locations`) or carries it inline (a photo or JSON
body, as ``POST /invocations`` takes). Options come from ``X-Amzn-SageMaker-Custom-Attributes``
(``k=3&mode=similar``) or the query string. Optional headers:
``X-Amzn-SageMaker-Inference-Id`` (a client id: resubmitting it returns the same job, never a
second one; not ending in ``-error``, so that no result is named like another job's failure),
``X-Amzn-SageMaker-InvocationTimeoutSeconds`` (the job's time limit, default 900),
``X-Amzn-SageMaker-Content-Type`` (the stored input's type) and ``X-Stygig-Webhook`` (this
job's notification URL). The job is committed to the store before the 202 is sent; every
refusal (a location not allowed, too many parts, a bad option) is a 4xx before it, and a full
queue (``max_queued`` unfinished jobs, or ``max_queued_bytes`` of inline inputs held by them) a
503 with ``Retry-After``. Job views show neither the input location nor the webhook, and a
server folder never: locations are shown as :func:`stygig.jobs.store.shown_location` gives them.

:class:`AsyncJobs` bundles the store, the worker and the router.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from stygig import storage
from stygig.engine import Options, Recommender
from stygig.engine import Query as RecommendQuery
from stygig.errors import InputError, InvalidImageError, InvalidOptionsError, NotFoundError
from stygig.images import check_header, check_photos
from stygig.jobs.documents import JobFailure, JobResult
from stygig.jobs.notify import MAX_WEBHOOK_URL_LENGTH, Notifier
from stygig.jobs.queue import JobQueue
from stygig.jobs.store import (
    MAX_PAGE,
    MAX_TIME_LIMIT_S,
    STATUSES,
    TERMINAL,
    Job,
    JobSpec,
    JobState,
    JobStore,
    QueueLimits,
)
from stygig.jobs.worker import JobWorker, WorkerConfig, check_job_input
from stygig.locations import InputLocations, public_errors
from stygig.recommendation import option_parameters
from stygig.serving import requests as rq
from stygig.serving.bodies import JobList, JobSubmitted, JobUnfinished, json_answer
from stygig.serving.responses import JSON, get_and_head, json_response

__all__ = [
    "AsyncConfig",
    "AsyncJobs",
    "SubmissionHeaders",
    "make_async_router",
]

log = logging.getLogger("stygig.serving.async")
# "<id>-error.out" is a failure's name: an id ending in "-error" would name its result like
# the failure of another job (case-insensitive: some file systems are).
_FAILURE_LIKE_ID = re.compile(r"-error$", re.IGNORECASE)
_MAX_TIME_LIMIT_S = 3600  # SageMaker's InvocationTimeoutSeconds maximum
_MAX_LOCATION_CHARS = 2048  # an s3:// or file:// location named by a client


def _not_failure_like(job_id: str) -> str:
    if _FAILURE_LIKE_ID.search(job_id):
        raise ValueError("must not end in '-error'")
    return job_id


def _whole_seconds(value: Any) -> Any:
    if isinstance(value, str):
        if not re.fullmatch(r"[0-9]{1,6}", value.strip()):
            raise ValueError(f"a whole number of seconds, 1 to {_MAX_TIME_LIMIT_S}")
        return int(value)
    return value


class SubmissionHeaders(BaseModel):
    """The parameters of an async submission that SageMaker sends as headers (validated here,
    before the 202; errors name the parameter, never the value)."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    inference_id: (
        Annotated[
            str,
            Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"),
            AfterValidator(_not_failure_like),
        ]
        | None
    ) = Field(None, alias="x-amzn-sagemaker-inference-id")
    # SageMaker's definition: a whole number of seconds, 1 to 3600, in ASCII digits ("1.5",
    # "1e2" and "0.001" were taken: review, session 42)
    time_limit_s: (
        Annotated[
            int, BeforeValidator(_whole_seconds), Field(strict=True, ge=1, le=_MAX_TIME_LIMIT_S)
        ]
        | None
    ) = Field(None, alias="x-amzn-sagemaker-invocationtimeoutseconds")
    input_location: Annotated[str, Field(min_length=1, max_length=_MAX_LOCATION_CHARS)] | None = (
        Field(None, alias="x-amzn-sagemaker-inputlocation")
    )
    webhook: Annotated[str, Field(min_length=1, max_length=MAX_WEBHOOK_URL_LENGTH)] | None = Field(
        None, alias="x-stygig-webhook"
    )

    @classmethod
    def read(cls, headers: Mapping[str, str]) -> SubmissionHeaders:
        try:
            return cls.model_validate(dict(headers))
        except ValidationError as e:
            first = e.errors()[0]
            name = _HEADER_NAMES.get(str(first["loc"][0]), str(first["loc"][0]))
            raise InvalidOptionsError(f"{name}: {first['msg']}") from None


_HEADER_NAMES = {
    "x-amzn-sagemaker-inference-id": "InferenceId (1-128 letters, digits, '.', '_' or '-')",
    "x-amzn-sagemaker-invocationtimeoutseconds": "InvocationTimeoutSeconds",
    "x-amzn-sagemaker-inputlocation": "InputLocation",
    "x-stygig-webhook": "X-StyGig-Webhook",
}
_MAX_SEQ = 2**63 - 1  # SQLite's largest integer


@dataclass(frozen=True)
class AsyncConfig:
    """The asynchronous side of a server.

    Attributes:
        jobs_db: the SQLite job store (one host).
        output: where results go (folder, ``file://`` or ``s3://`` prefix): ``<id>.out``.
        failure: where failures go (default: ``output``): ``<id>-error.out``.
        worker: concurrency, leases, polling.
        time_limit_s: the default per-job limit.
        max_inline_bytes: the largest inline body (bigger inputs go through a location).
        notifier: webhook / SNS topics for every job.
        allow_input_prefixes: the S3 prefixes and local folders clients may name as inputs
            (``InputLocation``, ``image_uri(s)``); empty: every client-chosen location is
            refused (``location_not_allowed``).
        list_jobs: whether ``GET /async/jobs`` lists jobs (off: 404; it shows every client's).
        retention_s: finished jobs older than this are deleted from the store, events too.
        max_input_bytes: the most one read of a client-named location returns.
        max_queued: unfinished (queued or running) jobs at most; more submissions are
            refused with 503 ``queue_full`` until some finish.
        max_queued_bytes: inline input bytes the unfinished jobs may hold in the store
            together; beyond, submissions are refused alike.
        job_queue: instead of ``jobs_db``, a queue several servers share:
            ``sqs://QUEUE?results=s3://BUCKET/PREFIX`` (:mod:`stygig.jobs.sqs_store`).
        max_finished: finished jobs kept at most, the oldest deleted first (``None``:
            ``$STYGIG_ASYNC_MAX_FINISHED``, else 100,000).
    """

    jobs_db: Path | None
    output: str
    failure: str | None = None
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    time_limit_s: float = 900.0
    max_inline_bytes: int = 6 * 1024 * 1024
    notifier: Notifier = field(default_factory=Notifier)
    allow_input_prefixes: tuple[str, ...] = ()
    list_jobs: bool = False
    retention_s: float = 7 * 24 * 3600
    max_input_bytes: int = 6 * 1024 * 1024
    max_queued: int = 10_000
    max_queued_bytes: int = 1024**3
    job_queue: str | None = None
    max_finished: int | None = None

    def __post_init__(self) -> None:
        if (self.jobs_db is None) == (self.job_queue is None):
            raise InvalidOptionsError("async jobs need either a jobs database or a job queue")
        if self.job_queue is not None:
            from stygig.jobs.sqs_store import parse_queue_url

            parse_queue_url(self.job_queue)  # a bad URL is refused now, not at start-up
        if not 0 < self.retention_s < math.inf:
            raise InvalidOptionsError("the job retention time must be positive")
        if not 0 < self.time_limit_s <= MAX_TIME_LIMIT_S:  # as a job's own must be
            raise InvalidOptionsError(
                f"the job time limit must be within (0, {MAX_TIME_LIMIT_S:.0f}] seconds"
            )
        for where in (self.output, self.failure):  # an unsupported scheme: now, not at start
            if where is not None:
                storage.parse(where)
        if self.jobs_db is not None and self.jobs_db.is_dir():
            raise InvalidOptionsError("the jobs database must be a file, not a folder")
        if self.max_finished is not None and self.max_finished < 1:
            raise InvalidOptionsError("the finished jobs kept must be at least 1")
        if self.max_input_bytes < 1 or self.max_inline_bytes < 1:
            raise InvalidOptionsError("the input byte limits must be at least 1")
        self.queue_limits()  # refuses limits below 1 now, not at the first submission

    def queue_limits(self) -> QueueLimits:
        """The store's bound on unfinished work these settings describe."""
        return QueueLimits(max_jobs=self.max_queued, max_bytes=self.max_queued_bytes)

    def input_locations(self) -> InputLocations:
        """The policy for client-named inputs these settings describe."""
        return InputLocations(self.allow_input_prefixes, max_bytes=self.max_input_bytes)

    def open_store(self) -> tuple[JobQueue, WorkerConfig]:
        """The job store these settings name (SQLite, or the shared SQS queue), and the
        worker settings to use with it (an SQS URL's ``lease`` is the visibility timeout)."""
        if self.job_queue is None:
            assert self.jobs_db is not None
            return JobStore(self.jobs_db, max_finished=self.max_finished), self.worker
        from stygig.jobs.sqs_store import open_job_queue, parse_queue_url

        lease_s = parse_queue_url(self.job_queue).lease_s
        worker = self.worker if lease_s is None else replace(self.worker, lease_s=lease_s)
        return open_job_queue(self.job_queue, max_finished=self.max_finished), worker


class _WebhookChecks:
    """At most ``slots`` webhook hosts resolved at once, each within ``timeout_s``.

    The host is the client's choice and the system resolver cannot be interrupted: without a
    bound, submissions naming slow-resolving hosts would hold every thread of the shared pool.
    A check that cannot start or finish in time refuses the webhook (422), never waits longer.
    """

    def __init__(self, notifier: Notifier, slots: int = 4, timeout_s: float = 5.0) -> None:
        self.notifier = notifier
        self.slots = asyncio.Semaphore(slots)
        self.timeout_s = timeout_s

    async def check(self, url: str) -> None:
        deadline = time.monotonic() + self.timeout_s
        try:
            await asyncio.wait_for(self.slots.acquire(), self.timeout_s)
        except TimeoutError:
            raise self._late() from None
        # The slot is given back when the lookup ends, not when this request stops waiting:
        # a lookup stuck in the resolver keeps its slot, so stuck threads stay within `slots`.
        lookup = asyncio.get_running_loop().run_in_executor(None, self.notifier.check_url, url)
        lookup.add_done_callback(self._done)
        try:
            await asyncio.wait_for(asyncio.shield(lookup), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise self._late() from None
        finally:
            del lookup  # no cycle with a failure's traceback (ModelService.run)

    def _done(self, lookup: asyncio.Future[None]) -> None:
        self.slots.release()
        if not lookup.cancelled():
            lookup.exception()  # retrieved here too: a late failure is not logged as lost

    def _late(self) -> InvalidOptionsError:
        return InvalidOptionsError(
            f"the webhook's host did not resolve within {self.timeout_s:g} s",
            code="webhook_unresolvable",
        )


async def _spec(
    request: Request,
    config: AsyncConfig,
    locations: InputLocations,
    webhooks: _WebhookChecks,
    recommender: Callable[[], Recommender | None],
) -> JobSpec:
    """The job a submission asks for (4xx errors for every mistake: everything the job would
    refuse before reading a stored photo, checked against the catalogue when it is loaded, as
    the real-time routes check it)."""
    h = request.headers
    rq.check_accept(h.get("accept"))  # the job's output is JSON, as /invocations answers
    given = SubmissionHeaders.read(h)
    # one option in both places is a 422, as on /invocations (review, session 42)
    outside = rq.outside_options(
        h.get("x-amzn-sagemaker-custom-attributes"), request.query_params.multi_items()
    )
    params = rq.merge_option_sources(*outside)
    options = Options.from_dict(dict(params))  # refuse bad options now, not after the 202
    query: RecommendQuery | None = None
    location = given.input_location
    body = await request.body()
    content_type = rq.read_as(
        rq.media_type(h.get("x-amzn-sagemaker-content-type") or h.get("content-type"))
    )
    if location and body:
        raise InputError(
            "send the input inline or name it with X-Amzn-SageMaker-InputLocation, not both",
            code="ambiguous_input",
        )
    if location:
        # Refused now, before the 202, whether it exists or not (a thread: it touches files).
        await run_in_threadpool(locations.check, location)
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
        if content_type in rq.OPAQUE_CONTENT_TYPES:
            if rq.from_another_site(h):  # a page elsewhere: see parse_request
                raise rq.unsupported(content_type)
            content_type = rq.told_from_bytes(body, content_type)
        elif content_type not in rq.IMAGE_TYPES and content_type != JSON:
            raise rq.unsupported(content_type)
        if content_type != JSON:  # what /invocations refuses before decoding, refused now
            await run_in_threadpool(check_header, body)
        query, options = await run_in_threadpool(
            check_job_input, body, content_type, locations, params
        )
        inline = [i for i in query.images if isinstance(i, bytes)] if query else []
        if inline:  # a JSON input's photos, refused now as /v1/recommend refuses them (review,
            # session 42: a GIF there was a 202, then a failed job)
            await run_in_threadpool(check_photos, inline)
        body_arg = body
    rec = recommender()
    if rec is not None:  # the catalogue it is loaded with; the job checks again when it runs
        ids, photos = (query.item_ids, len(query.images)) if query else ((), None)
        await run_in_threadpool(rec.check, options, ids, photos)
    webhook = given.webhook
    if webhook is not None:
        await webhooks.check(webhook)  # it resolves the host, within a bound
    failure = config.failure or config.output
    return JobSpec(
        id=given.inference_id,
        input_location=location or None,
        input_body=body_arg,
        content_type=content_type or None,
        params=params,
        output_location=storage.join(config.output, "{id}.out"),
        failure_location=storage.join(failure, "{id}-error.out"),
        webhook=webhook,
        time_limit_s=given.time_limit_s or config.time_limit_s,
    )


def _own_output(job: Job) -> bytes:
    """A finished job's result (or failure) document, if it is really this job's."""
    where = job.output_location if job.status == "succeeded" else job.failure_location
    with public_errors("the job's output"):
        own = job.read_own(where)
    if own is None:
        log.error("job %s: the document at its output location is not its own", job.id)
        raise NotFoundError("the job's output does not exist", code="location_not_found")
    return own[0]


_JOB_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: json_answer("the job's status and times", JobState)
}
_OUTPUT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: json_answer(
        "a finished job's document: the answer (as POST /invocations gives it) or its error, "
        "with InferenceId and JobToken",
        JobResult,
        JobFailure,
    ),
    409: json_answer("the job has not finished", JobUnfinished),
}
_LIST_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: json_answer("a page of jobs and the counts per status", JobList)
}
# The submission as SageMaker sends it: the input as the body or a stored location, the
# parameters as headers, the options as the query string or custom attributes.
_ASYNC_JSON_BODY = rq.json_body_schema(
    {
        "image_uri": {"type": "string", "description": "a stored photo"},
        "image_uris": {"type": "array", "items": {"type": "string"}},
    }
)
_SUBMIT_DOC: dict[str, Any] = {
    "parameters": [
        {
            "name": "X-Amzn-SageMaker-InputLocation",
            "in": "header",
            "schema": {"type": "string", "maxLength": _MAX_LOCATION_CHARS},
            "description": "a stored input (a photo, or a JSON request as the body would be) "
            "under a prefix the operator allowed; else send the input as the body",
        },
        {
            "name": "X-Amzn-SageMaker-Inference-Id",
            "in": "header",
            "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"},
            "description": "your id (not ending in -error); resubmitting it returns the same job",
        },
        {
            "name": "X-Amzn-SageMaker-InvocationTimeoutSeconds",
            "in": "header",
            "schema": {"type": "integer", "minimum": 1, "maximum": _MAX_TIME_LIMIT_S},
        },
        {
            "name": "X-Amzn-SageMaker-Content-Type",
            "in": "header",
            "schema": {"type": "string"},
            "description": "the input's content type (else Content-Type)",
        },
        {
            "name": "X-Stygig-Webhook",
            "in": "header",
            "schema": {"type": "string", "maxLength": MAX_WEBHOOK_URL_LENGTH},
            "description": "this job's notification URL (http(s), public addresses unless "
            "the operator allows a network)",
        },
        *option_parameters(),
    ],
    "requestBody": {
        "required": False,
        "content": {
            **{
                t: {"schema": {"type": "string", "format": "binary"}}
                for t in sorted(rq.IMAGE_TYPES)
            },
            JSON: {"schema": _ASYNC_JSON_BODY},
            **rq.opaque_bodies(_ASYNC_JSON_BODY),
        },
    },
    "responses": {"202": json_answer("the job, queued", JobSubmitted)},
}


def make_async_router(store: JobQueue, worker: JobWorker, config: AsyncConfig) -> APIRouter:
    """The ``/async`` routes over ``store``; ``worker`` is woken on every submission, and
    client-named inputs are checked against the policy it reads them with."""
    router = APIRouter(prefix="/async", tags=["async"])
    policy = worker.locations
    limits = config.queue_limits()
    webhooks = _WebhookChecks(config.notifier)

    @router.post(
        "/invocations",
        status_code=202,
        summary="Submit an asynchronous inference",
        openapi_extra=_SUBMIT_DOC,
    )
    async def submit(request: Request) -> Response:
        spec = await _spec(request, config, policy, webhooks, worker.current_recommender)
        job, created = await run_in_threadpool(store.submit, spec, limits)
        if created:
            worker.wake()
        output, failure = job.shown_locations()
        body = JobSubmitted(job.id, output, failure, job.status)
        headers = {
            "X-Amzn-SageMaker-OutputLocation": output,
            "X-Amzn-SageMaker-FailureLocation": failure,
            "Location": f"/async/jobs/{job.id}",
        }
        return json_response(asdict(body), 202, headers)

    @get_and_head(
        router,
        "/jobs/{job_id}",
        summary="One job's status and timestamps",
        dependencies=[Depends(rq.strict_query())],
        responses=_JOB_RESPONSES,
    )
    async def status(job_id: str) -> Response:
        return json_response((await run_in_threadpool(store.view, job_id)).to_dict())

    @get_and_head(
        router,
        "/jobs/{job_id}/output",
        summary="A finished job's result (or error)",
        dependencies=[Depends(rq.strict_query())],
        responses=_OUTPUT_RESPONSES,
    )
    async def output(job_id: str) -> Response:
        job = await run_in_threadpool(store.get, job_id)
        if job.status not in TERMINAL:
            return json_response(asdict(JobUnfinished(job.id, job.status)), 409)
        data = await run_in_threadpool(_own_output, job)
        return Response(data, status_code=200, media_type=JSON)

    @get_and_head(
        router,
        "/jobs",
        summary="Jobs in submission order, with counts per status",
        dependencies=[Depends(rq.strict_query("status", "limit", "after"))],
        responses=_LIST_RESPONSES,
    )
    async def jobs(
        status: str | None = None,
        limit: Annotated[int, rq.query_int(ge=1, le=MAX_PAGE)] = 100,
        after: Annotated[int, rq.query_int(ge=0, le=_MAX_SEQ)] = 0,
    ) -> Response:
        if not config.list_jobs:
            raise NotFoundError("job listing is turned off on this server", code="not_found")
        page = await run_in_threadpool(
            lambda: store.list_jobs(status=status, limit=limit, after_seq=after)
        )
        counts = await run_in_threadpool(store.counts)
        body = JobList(
            jobs=[j.state() for j in page.jobs],
            counts={s: counts[s] for s in STATUSES},
            counts_complete=counts.complete,
            next_after=page.next_after,
        )
        return json_response(await run_in_threadpool(asdict, body))

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
        self.store, worker_config = config.open_store()
        self.worker = JobWorker(
            self.store,
            recommender,
            worker_config,
            notifier=config.notifier,
            should_yield=should_yield,
            locations=config.input_locations(),
            retention_s=config.retention_s,
        )
        self.router = make_async_router(self.store, self.worker, config)

    def start(self) -> None:
        """Clean up temporary files a crashed write left, re-queue orphaned jobs, start working."""
        for prefix in {self.config.output, self.config.failure or self.config.output}:
            removed = storage.remove_stale_temps(prefix)
            if removed:
                log.info("removed %d unfinished temporary file(s) from %s", removed, prefix)
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

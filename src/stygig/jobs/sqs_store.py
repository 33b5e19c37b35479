"""Jobs shared by several servers: an SQS queue, with each job's record and input in S3.

:class:`SqsJobStore` is the multi-host :class:`~stygig.jobs.queue.JobQueue`. Select it with
``--job-queue sqs://QUEUE?results=s3://BUCKET/PREFIX`` (:func:`open_job_queue`); every server
given the same URL (and the same ``--async-output``) serves the same jobs.

Where things live (``P`` is the ``results`` prefix)::

    SQS QUEUE                       one message per job: {"id", "token"}
    P/jobs/<id>.json                the job's record: what the SQLite row holds, plus its events
    P/inputs/<id>/<token>           an inline input, until the job finishes
    P/index/<seq>-<id>              submission order (GET /async/jobs)
    P/notify/<id>                   a finished job whose notification is due
    P/done/<ms>.<status>.<id>       finished jobs by finishing time (retention, counts)

Every change of a record is a conditional ``PutObject`` (``If-None-Match: *`` to create,
``If-Match: <etag>`` to update, re-read and retried on a conflict), so two servers never both
win a claim or a finish. The steps mirror the SQLite store:

* **submit**: the input (if inline) and the message are stored first, then the record is
  created only if none exists; a second submission of an id finds the record and returns it
  (one racing at the same instant loses the create, and its message names another token, so
  it is deleted when received). Depth is bounded like :class:`~stygig.jobs.store.QueueLimits`:
  the queue's message count (approximate, as SQS reports it) and the bytes under ``inputs/``.
* **claim** = ``ReceiveMessage`` with the lease as the visibility timeout, then the record
  goes ``running`` with the attempt counted and a lease (``lease_expires``) for one owner. A
  message whose job is ``running`` under a lease still held is a duplicate: it is hidden
  again until that lease ends. A finished job's message is deleted.
* **renew**: ``ChangeMessageVisibility`` and the record's lease, every ``lease_s / 3``.
* **orphans**: a worker that dies stops renewing; its message becomes visible after the
  visibility timeout and the next receiver takes the job over (attempt n + 1, a ``requeued``
  event) once the record's lease has run out too. ``requeue_orphans`` has nothing to do.
  As with SQLite, a job that was running during more than ``max_attempts`` crashes is failed
  with ``code: crashed`` by the worker instead of being tried again; do not give the queue a
  redrive policy that moves messages to a dead-letter queue sooner than that.
* **finish**: the record goes terminal only for the owner of the current attempt (a second
  finish, or a worker whose job was taken over, is refused), then the message and the input
  are deleted, and the record's options (``params``) are emptied. The ``notify`` and ``done``
  markers are written before the record changes, so a crash after it loses neither the
  notification nor the retention.
* **purge**: finished jobs past the retention time, and the oldest beyond ``max_finished``
  whatever their age (one pass over the ``done`` markers counts them), as in SQLite.

Messages never carry inputs (SQS holds 256 KiB; inline inputs reach 6 MB). Every AWS failure
reaches clients as 503 ``queue_unavailable`` (the detail is in the server's log only).
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields
from functools import partial
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from stygig.errors import (
    InvalidOptionsError,
    NotFoundError,
    OverloadedError,
    StorageError,
    StygigError,
)
from stygig.jobs.store import (
    COUNT_LIMIT,
    MAX_PAGE,
    STATUSES,
    TERMINAL,
    Job,
    JobCounts,
    JobPage,
    JobSpec,
    JobView,
    QueueLimits,
    check_same_request,
    delete_own_document,
    max_finished_from_env,
)

__all__ = ["QueueSettings", "SqsJobStore", "open_job_queue", "parse_queue_url"]

log = logging.getLogger("stygig.jobs.sqs")

_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,75}(\.fifo)?$|^[A-Za-z0-9_-]{1,80}$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_JOB_FIELDS = tuple(f.name for f in fields(Job) if f.name != "input_body")
_VIEW_FIELDS = tuple(f.name for f in fields(JobView))
_MAX_VISIBILITY_S = 12 * 3600  # SQS's limit
#: How long one claim goes on reading the queue past messages that yield no job.
_CLAIM_ROUNDS_S = 3.0
_CAS_TRIES = 20
_NOT_FOUND = ("NoSuchKey", "404", "NotFound")
_CONFLICT = ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")
#: What every job record holds: one without them (edited, truncated) is corrupt
#: (:func:`_is_record`).
_RECORD_KEYS = frozenset({"id", "seq", "status", "attempts", "events", "token"})


class CorruptRecordError(StygigError):
    """A job record that is not one (not JSON, or without a record's fields): the job can
    never run or be shown. A server fault (500, the key in the log only); housekeeping,
    listings and the queue step over it instead of failing on it for ever."""

    code = "corrupt_record"

    def __init__(self, key: str) -> None:
        log.error("job record %s is corrupt (not a job record); it is skipped", key)
        super().__init__("a job's record cannot be read")


@dataclass(frozen=True)
class QueueSettings:
    """What a ``sqs://`` job-queue URL names.

    Attributes:
        queue: the SQS queue's name (``.fifo`` for a FIFO queue).
        results: ``s3://bucket[/prefix]``, where job records and inline inputs are kept.
        region: the AWS region (``None``: boto3's default configuration).
        lease_s: the visibility timeout used as the lease (``None``: the worker's, 60 s).
        wait_s: how long one receive waits for a message (SQS long polling, 0-20 s).
    """

    queue: str
    results: str
    region: str | None = None
    lease_s: float | None = None
    wait_s: int = 1

    @property
    def bucket(self) -> str:
        return self.results[len("s3://") :].partition("/")[0]

    @property
    def prefix(self) -> str:
        """The key prefix under the bucket: ``""`` or ending in ``/``."""
        key = self.results[len("s3://") :].partition("/")[2].strip("/")
        return key + "/" if key else ""


def parse_queue_url(url: str) -> QueueSettings:
    """``sqs://QUEUE?results=s3://BUCKET/PREFIX[&region=R][&lease=S][&wait=S]`` as settings
    (:class:`~stygig.errors.InvalidOptionsError` for anything else); nothing is contacted."""
    parts = urlsplit(url)
    if parts.scheme != "sqs" or not parts.netloc or parts.path not in ("", "/"):
        raise InvalidOptionsError(
            "the job queue must look like sqs://QUEUE?results=s3://BUCKET/PREFIX"
        )
    if not _QUEUE_NAME.match(parts.netloc):
        raise InvalidOptionsError(
            "the SQS queue name must be 1-80 letters, digits, '-' or '_' (optionally ending "
            "in .fifo)"
        )
    try:
        query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise InvalidOptionsError("the job queue's options are not a query string") from None
    unknown = sorted(set(query) - {"results", "region", "lease", "wait"})
    if unknown:
        raise InvalidOptionsError(f"unknown job queue option(s): {', '.join(unknown)}")
    if any(len(v) != 1 for v in query.values()):
        raise InvalidOptionsError("each job queue option may be given once")
    one = {k: v[0] for k, v in query.items()}
    results = one.get("results", "")
    bucket = results[len("s3://") :].partition("/")[0]
    if not results.startswith("s3://") or not _BUCKET.match(bucket):
        raise InvalidOptionsError(
            "the job queue needs results=s3://BUCKET/PREFIX (where job records are kept)"
        )
    lease_s: float | None = None
    if "lease" in one:
        lease_s = _number(one["lease"], "lease", 1, _MAX_VISIBILITY_S)
    wait_s = int(_number(one.get("wait", "1"), "wait", 0, 20))
    region = one.get("region") or None
    if region is not None and not re.fullmatch(r"[a-z0-9-]{1,32}", region):
        raise InvalidOptionsError("region must be an AWS region name, e.g. eu-west-1")
    return QueueSettings(parts.netloc, results, region, lease_s, wait_s)


def _number(text: str, name: str, low: float, high: float) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not low <= value <= high:
        raise InvalidOptionsError(f"the job queue's {name} must be a number in [{low}, {high}]")
    return value


def open_job_queue(url: str, *, max_finished: int | None = None) -> SqsJobStore:
    """The store a ``--job-queue`` URL names (:func:`parse_queue_url`), connected
    (``max_finished``: as :class:`SqsJobStore`'s)."""
    settings = parse_queue_url(url)
    return SqsJobStore(
        settings.queue,
        settings.results,
        region=settings.region,
        wait_s=settings.wait_s,
        max_finished=max_finished,
    )


@dataclass
class _Held:
    """A job this process claimed: who, which attempt, and its message's receipt handle."""

    owner: str
    attempt: int
    receipt: str


def _error_code(e: Exception) -> str:
    response = getattr(e, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def _event(event: str, owner: str | None, at: float, detail: Any = None) -> dict[str, Any]:
    return {
        "at": at,
        "event": event,
        "owner": owner,
        "detail": None if detail is None else json.dumps(detail),
    }


def _new_seq(now: float) -> int:
    """A submission's place in line: microseconds since the epoch and three random digits, so
    submissions on several servers order by time and (almost surely) never share one."""
    return int(now * 1_000_000) * 1000 + random.randrange(1000)


class SqsJobStore:
    """Jobs in an SQS queue with records in S3, shared by every server given the same queue.

    Args:
        queue: the SQS queue's name (it must exist; a ``.fifo`` name uses a FIFO queue).
        results: ``s3://bucket[/prefix]`` for job records and inline inputs.
        region: the AWS region (``None``: boto3's default configuration, ``AWS_DEFAULT_REGION``;
            ``AWS_ENDPOINT_URL`` points both clients at an SQS/S3-compatible server).
        wait_s: how long a claim waits for a message (long polling; 0 polls once).
        orphan_message_s: a message whose job has no record is deleted once it is this old
            (a submission that failed half-way, or a job purged meanwhile); younger, it is
            looked at again a moment later (its submission is still being recorded).
        notify_scan_s: how often S3 is searched for notifications other servers left.
        notify_takeover_s: how long a finished job's notification is left to the server that
            finished it before another sends it (a crash in between).
        scan_limit: the most records one :meth:`list_jobs` call reads (one S3 read each,
            whether the job is listed or skipped by its status).
        count_limit: the most ``done`` markers one :meth:`counts` call lists (1,000 per S3
            list request).
        max_finished: finished jobs kept at most: :meth:`purge` deletes the oldest beyond it
            (``None``: :func:`~stygig.jobs.store.max_finished_from_env`).
        sqs, s3: boto3 clients to use instead of new ones.
    """

    def __init__(
        self,
        queue: str,
        results: str,
        *,
        region: str | None = None,
        wait_s: int = 1,
        orphan_message_s: float = 300.0,
        notify_scan_s: float = 10.0,
        notify_takeover_s: float = 120.0,
        scan_limit: int = MAX_PAGE,
        count_limit: int = COUNT_LIMIT,
        max_finished: int | None = None,
        sqs: Any = None,
        s3: Any = None,
    ) -> None:
        settings = parse_queue_url(f"sqs://{queue}?results={results}")
        self.settings = settings
        self.bucket = settings.bucket
        self.prefix = settings.prefix
        self.fifo = queue.endswith(".fifo")
        self.wait_s = max(0, min(int(wait_s), 20))
        self.orphan_message_s = orphan_message_s
        self.notify_scan_s = notify_scan_s
        self.notify_takeover_s = notify_takeover_s
        if scan_limit < 1 or count_limit < 1:
            raise InvalidOptionsError("scan_limit and count_limit must be at least 1")
        self.scan_limit = scan_limit
        self.count_limit = count_limit
        if max_finished is not None and max_finished < 1:
            raise InvalidOptionsError("max_finished must be at least 1")
        self.max_finished = max_finished_from_env() if max_finished is None else max_finished
        if sqs is None or s3 is None:
            try:
                import boto3
                from botocore.config import Config
            except ImportError as e:  # pragma: no cover - depends on the install
                raise StorageError(
                    "an SQS job queue needs boto3: pip install 'stygig[aws]'", code="missing_extra"
                ) from e
            config = Config(retries={"max_attempts": 5, "mode": "standard"})
            sqs = sqs or boto3.client("sqs", region_name=region, config=config)
            s3 = s3 or boto3.client("s3", region_name=region, config=config)
        self._sqs = sqs
        self._s3 = s3
        try:
            self.queue_url: str = self._sqs.get_queue_url(QueueName=queue)["QueueUrl"]
        except Exception as e:
            if "NonExistentQueue" in _error_code(e) or "QueueDoesNotExist" in _error_code(e):
                raise StorageError(
                    f"the SQS queue {queue!r} does not exist", code="queue_not_found"
                ) from None
            log.error("the SQS queue %r could not be reached", queue, exc_info=True)
            raise StorageError(
                f"the SQS queue {queue!r} could not be reached", code="queue_unavailable"
            ) from None
        self._lock = threading.Lock()
        self._held: dict[str, _Held] = {}
        self._owners: set[str] = set()
        self._due: dict[str, Job] = {}  # finished here, notification not recorded yet
        self._last_scan = -math.inf

    # -- plumbing --------------------------------------------------------------------------------

    def close(self) -> None:
        """Let go of the jobs still held here (their leases end now, their messages become
        visible: another server takes them over at once), then of the clients."""
        with self._lock:
            held, self._held = dict(self._held), {}
        for job_id, h in held.items():
            try:
                self._update(job_id, partial(self._release, held=h))
                self._sqs.change_message_visibility(
                    QueueUrl=self.queue_url, ReceiptHandle=h.receipt, VisibilityTimeout=0
                )
            except Exception:
                log.warning("job %s could not be released; its lease runs out", job_id)
        for client in (self._sqs, self._s3):
            closer = getattr(client, "close", None)
            if callable(closer):
                closer()

    @staticmethod
    def _release(record: dict[str, Any], held: _Held) -> bool:
        if not _holds(record, held.owner, held.attempt):
            return False
        record["lease_expires"] = time.time()
        return True

    def __enter__(self) -> SqsJobStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _aws(self, what: str) -> Iterator[None]:
        """An AWS failure as a 503 ``queue_unavailable`` (details in the log only)."""
        try:
            yield
        except StygigError:
            raise
        except Exception:
            log.error("the job queue could not %s", what, exc_info=True)
            raise OverloadedError(
                "the job queue cannot be reached now; retry later", code="queue_unavailable"
            ) from None

    def _key(self, kind: str, name: str) -> str:
        return f"{self.prefix}{kind}/{name}"

    def _record_key(self, job_id: str) -> str:
        return self._key("jobs", f"{job_id}.json")

    def _read(self, key: str) -> tuple[dict[str, Any], str] | None:
        """A JSON object and its ETag; ``None`` when absent."""
        try:
            answer = self._s3.get_object(Bucket=self.bucket, Key=key)
        except Exception as e:
            if _error_code(e) in _NOT_FOUND:
                return None
            raise
        try:
            data = json.loads(answer["Body"].read())
        except (ValueError, RecursionError):
            data = None
        if not _is_record(data):
            raise CorruptRecordError(key)
        return data, str(answer["ETag"])

    def _write(self, key: str, record: Mapping[str, Any], *, if_match: str | None = None) -> bool:
        """Create (``if_match`` ``None``: only when absent) or replace (only when its ETag is
        still ``if_match``) a record; whether it was written."""
        condition = {"IfMatch": if_match} if if_match else {"IfNoneMatch": "*"}
        body = json.dumps(record, separators=(",", ":")).encode()
        try:
            self._s3.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=body,
                ContentType="application/json",
                **condition,
            )
        except Exception as e:
            if if_match and _error_code(e) in _NOT_FOUND:
                return False
            if _error_code(e) not in _CONFLICT:
                raise
            # Refused, perhaps for this very write: the client retries a put whose answer was
            # lost (a timeout), and the retry finds the first one's record, with a new ETag.
            # Taken for another's, a claim or an end would be dropped while its record holds it.
            return self._holds_body(key, body)
        return True

    def _holds_body(self, key: str, body: bytes) -> bool:
        """Whether the object at ``key`` is exactly ``body`` (records hold a token, times and
        events, so another writer's is never the same bytes)."""
        try:
            found: bytes = self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except Exception as e:
            if _error_code(e) in _NOT_FOUND:
                return False
            raise
        return found == body

    def _update(
        self, job_id: str, change: Callable[[dict[str, Any]], bool]
    ) -> dict[str, Any] | None:
        """Read, ``change`` (in place; false: leave it) and write back a record, retried when
        another server wrote it in between; the record written, or ``None``."""
        key = self._record_key(job_id)
        for _ in range(_CAS_TRIES):
            found = self._read(key)
            if found is None:
                return None
            record, etag = found
            if not change(record):
                return None
            if self._write(key, record, if_match=etag):
                return record
            time.sleep(random.uniform(0.01, 0.05))  # someone else wrote it: read it again
        raise OverloadedError("the job's record is contended; retry later", code="queue_busy")

    def _delete(self, *keys: str | None) -> None:
        """Delete objects, best effort (what is left behind is cleaned up later or harmless)."""
        wanted = [{"Key": k} for k in keys if k]
        if not wanted:
            return
        try:
            self._s3.delete_objects(Bucket=self.bucket, Delete={"Objects": wanted, "Quiet": True})
        except Exception:
            log.warning("could not delete %d object(s) of the job queue", len(wanted))

    def _list(self, kind: str, start_after: str | None = None) -> Iterator[dict[str, Any]]:
        """Objects under ``P/<kind>/`` in key order."""
        args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self._key(kind, "")}
        if start_after:
            args["StartAfter"] = start_after
        for page in self._s3.get_paginator("list_objects_v2").paginate(**args):
            yield from page.get("Contents", [])

    def _set_visibility(self, receipt: str, seconds: float) -> None:
        try:
            self._sqs.change_message_visibility(
                QueueUrl=self.queue_url,
                ReceiptHandle=receipt,
                VisibilityTimeout=_visibility(seconds),
            )
        except Exception:
            log.warning("could not change a message's visibility", exc_info=True)

    def _delete_message(self, receipt: str) -> None:
        try:
            self._sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=receipt)
        except Exception:  # it comes back; its job is finished, so it is deleted then
            log.warning("could not delete a finished job's message", exc_info=True)

    def _queue_depth(self) -> dict[str, int]:
        names = (
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        )
        answer = self._sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=names)
        return {n: int(answer.get("Attributes", {}).get(n, 0)) for n in names}

    @staticmethod
    def _job(record: Mapping[str, Any], body: bytes | None = None) -> Job:
        data: dict[str, Any] = {k: record.get(k) for k in _JOB_FIELDS}
        return Job(**data, input_body=body)

    @staticmethod
    def _view(record: Mapping[str, Any]) -> JobView:
        data: dict[str, Any] = {k: record.get(k) for k in _VIEW_FIELDS}
        return JobView(**data)

    # -- writes ----------------------------------------------------------------------------------

    def submit(self, spec: JobSpec, limits: QueueLimits | None = None) -> tuple[Job, bool]:
        """Record a queued job and send its message; ``(job, created)``.

        Submitting an id that exists returns that job and ``created=False``.

        Raises:
            InvalidOptionsError: an id that cannot name an object (1-128 letters, digits,
                ``.``, ``_``, ``-``).
            OverloadedError: ``queue_full`` beyond ``limits`` (the queue's approximate depth,
                and the inline input bytes held under ``inputs/``); ``queue_unavailable`` when
                SQS or S3 cannot be reached.
        """
        job_id = spec.id or uuid.uuid4().hex
        if not _JOB_ID.match(job_id):
            raise InvalidOptionsError("a job id is 1-128 letters, digits, '.', '_' or '-'")
        key = self._record_key(job_id)
        with self._aws("record a job"):
            existing = self._read(key)
            if existing is not None:
                check_same_request(job_id, existing[0].get("fingerprint"), spec)
                return self._job(existing[0]), False
            if limits is not None:
                self._check_room(limits, len(spec.input_body or b""))
            now = time.time()
            token = uuid.uuid4().hex
            seq = _new_seq(now)
            input_key = None
            index_key = self._key("index", f"{seq:020d}-{job_id}")
            if spec.input_body is not None:
                input_key = self._key("inputs", f"{job_id}/{token}")
        try:
            with self._aws("record a job"):
                return self._create(spec, job_id, key, token, seq, now, input_key, index_key)
        except BaseException:
            # Nothing of a submission that failed half-way stays behind: its input would
            # count against the queue's byte limit for ever (no record ever names it). Unless
            # the record was written after all (its answer lost): then the job stands.
            if not self._recorded(key, token):
                self._delete(input_key, index_key)
            raise

    def _recorded(self, key: str, token: str) -> bool:
        """Whether the record at ``key`` is the one with ``token`` (``False`` when it cannot
        be read either)."""
        try:
            found = self._read(key)
        except Exception:
            return False
        return found is not None and found[0].get("token") == token

    def _create(
        self,
        spec: JobSpec,
        job_id: str,
        key: str,
        token: str,
        seq: int,
        now: float,
        input_key: str | None,
        index_key: str,
    ) -> tuple[Job, bool]:
        """The objects, message and record of a new job (:meth:`submit`)."""
        if input_key is not None:
            self._s3.put_object(Bucket=self.bucket, Key=input_key, Body=spec.input_body)
        self._s3.put_object(Bucket=self.bucket, Key=index_key, Body=b"")
        record: dict[str, Any] = {
            "format": 1,
            "seq": seq,
            "id": job_id,
            "status": "queued",
            "input_location": spec.input_location,
            "input_key": input_key,
            "content_type": spec.content_type,
            "params": dict(spec.params),
            "output_location": spec.output_location.replace("{id}", job_id),
            "failure_location": spec.failure_location.replace("{id}", job_id),
            "webhook": spec.webhook,
            "time_limit_s": spec.time_limit_s,
            "attempts": 0,
            "max_attempts": spec.max_attempts,
            "owner": None,
            "lease_expires": None,
            "created_at": now,
            "started_at": None,
            "finished_at": None,
            "error": None,
            "notify_state": None,
            "token": token,
            "fingerprint": spec.fingerprint(),
            "events": [_event("submitted", None, now)],
        }
        self._send(job_id, token)
        if self._write(key, record):
            return self._job(record), True
        # Another server created this id a moment ago: that job stands; our message names
        # our token, so it is dropped when received.
        self._delete(input_key, index_key)
        existing = self._read(key)
        if existing is None:  # created and purged in between: as good as a full queue
            raise OverloadedError("the job queue is busy; retry later", code="queue_busy")
        check_same_request(job_id, existing[0].get("fingerprint"), spec)
        return self._job(existing[0]), False

    def _send(self, job_id: str, token: str) -> None:
        extra: dict[str, Any] = {}
        if self.fifo:  # one group per job: FIFO order must not make jobs wait on each other
            extra = {"MessageGroupId": job_id, "MessageDeduplicationId": token}
        self._sqs.send_message(
            QueueUrl=self.queue_url,
            MessageBody=json.dumps({"id": job_id, "token": token}),
            **extra,
        )

    def _check_room(self, limits: QueueLimits, body_bytes: int) -> None:
        depth = sum(self._queue_depth().values())
        full = depth + 1 > limits.max_jobs
        if not full and body_bytes:
            # Stop listing once the limit is passed: a request costs at most the pages that
            # limit spans, not one per 1,000 inputs held.
            held = body_bytes
            for obj in self._list("inputs"):
                held += int(obj.get("Size", 0))
                if held > limits.max_bytes:
                    break
            full = held > limits.max_bytes
        if full:
            raise OverloadedError(
                "the job queue is full; retry after Retry-After seconds", code="queue_full"
            )

    def claim(self, owner: str, *, lease_s: float = 60.0, limit: int = 1) -> list[Job]:
        """Receive up to ``limit`` messages (waiting up to ``wait_s``) and claim their jobs for
        ``owner``: attempt counted, a lease of ``lease_s`` (the visibility timeout too)."""
        with self._lock:
            self._owners.add(owner)
        claimed: list[Job] = []
        # Messages that yield no job (a submission's message before its record, a finished
        # job's duplicate) are put back or deleted, and the queue is read again at once: a
        # claim that came back empty would idle its worker while real jobs wait behind them
        # (21 such messages held 5 jobs back 50-57 s on moto, most of it in those idles).
        deadline = time.monotonic() + _CLAIM_ROUNDS_S
        while True:
            with self._aws("receive a job"):
                answer = self._sqs.receive_message(
                    QueueUrl=self.queue_url,
                    MaxNumberOfMessages=max(1, min(limit, 10)),
                    VisibilityTimeout=_visibility(lease_s),
                    WaitTimeSeconds=self.wait_s,
                    MessageSystemAttributeNames=["SentTimestamp", "ApproximateReceiveCount"],
                )
            messages = answer.get("Messages", [])
            failed = False
            for message in messages:
                try:
                    job = self._take(owner, lease_s, message)
                except Exception:  # the message comes back after its visibility timeout
                    log.exception("claiming a job from its message failed")
                    failed = True  # S3 unreachable, say: reading on would hide the queue
                    continue
                if job is not None:
                    claimed.append(job)
            if claimed or failed or not messages or time.monotonic() > deadline:
                return claimed

    def _take(self, owner: str, lease_s: float, message: Mapping[str, Any]) -> Job | None:
        receipt = str(message["ReceiptHandle"])
        try:
            note = json.loads(message["Body"])
            job_id, token = str(note["id"]), str(note["token"])
        except (ValueError, KeyError, TypeError):
            log.warning("deleting a message that names no job")
            self._delete_message(receipt)
            return None
        if not _JOB_ID.match(job_id):
            log.warning("deleting a message that names no job")
            self._delete_message(receipt)
            return None
        # Why the record was left as it is: "drop" (the job is finished, or the message is
        # another job's of this id) or "later" (its owner's lease still holds); none: no record.
        verdict: list[Any] = []

        def take(record: dict[str, Any]) -> bool:
            verdict.clear()
            now = time.time()
            if record.get("token") != token or record["status"] in TERMINAL:
                verdict.append("drop")
                return False
            if record["status"] == "running":
                left = float(record.get("lease_expires") or 0.0) - now
                if left > 0:  # its owner holds it: this message is a duplicate for now
                    verdict.extend(("later", left + 1.0))
                    return False
                record["events"].append(_event("requeued", owner, now))
            record.update(
                status="running",
                attempts=int(record["attempts"]) + 1,
                owner=owner,
                lease_expires=now + lease_s,
                started_at=now,
            )
            record["events"].append(_event("claimed", owner, now))
            return True

        # The message is sent before the record is written: a receiver waiting on the queue
        # often has it first. Look again a few times before putting it back for a while (on
        # its first receipt only: a message back again without a record gets one look).
        attributes = message.get("Attributes", {})
        receipts = int(attributes.get("ApproximateReceiveCount", 1) or 1)
        for pause in (0.0, 0.05, 0.1, 0.2) if receipts <= 1 else (0.0,):
            time.sleep(pause)
            try:
                record = self._update(job_id, take)
            except CorruptRecordError:
                self._delete_message(receipt)  # it can never run: not redelivered for ever
                return None
            if record is not None or verdict:
                break
        if record is None:
            if verdict and verdict[0] == "later":
                self._set_visibility(receipt, min(float(verdict[1]), _MAX_VISIBILITY_S))
                return None
            if not verdict:  # no record
                sent = float(attributes.get("SentTimestamp", 0)) / 1000
                if time.time() - sent < self.orphan_message_s:
                    # Its submission may still be being recorded: back in 2 s, then 4, 8, ...
                    # up to a minute, so that messages whose submission failed (they wait
                    # out orphan_message_s) do not crowd real jobs out of the receiver.
                    self._set_visibility(receipt, min(2 ** min(receipts, 6), 60))
                    return None
            # finished, another job's of this id, or a submission that never completed
            self._delete_message(receipt)
            return None
        body = None
        if record.get("input_key"):
            body = self._read_bytes(str(record["input_key"]))  # None: lost (run_job says so)
        with self._lock:
            self._held[job_id] = _Held(owner, int(record["attempts"]), receipt)
        return self._job(record, body)

    def _read_bytes(self, key: str) -> bytes | None:
        try:
            answer = self._s3.get_object(Bucket=self.bucket, Key=key)
        except Exception as e:
            if _error_code(e) in _NOT_FOUND:
                return None
            raise
        data = answer["Body"].read()
        assert isinstance(data, bytes)
        return data

    def renew(self, owner: str, *, lease_s: float = 60.0) -> int:
        """Extend the leases of ``owner``'s jobs: their messages' visibility and the records'
        ``lease_expires``; how many are still ``owner``'s."""
        with self._lock:
            mine = [(i, h) for i, h in self._held.items() if h.owner == owner]
        renewed = 0
        for job_id, held in mine:
            now = time.time()  # before the visibility: the record's lease never outlasts it

            def extend(record: dict[str, Any], held: _Held = held, now: float = now) -> bool:
                if not _holds(record, held.owner, held.attempt):
                    return False
                record["lease_expires"] = now + lease_s
                return True

            try:
                self._set_visibility(held.receipt, lease_s)
                kept = self._update(job_id, extend) is not None
            except Exception:  # the next renewal tries again; the others go on now
                log.warning("the lease of job %s could not be renewed", job_id, exc_info=True)
                continue
            if not kept:
                with self._lock:  # taken over (or gone): no longer ours to renew
                    if self._held.get(job_id) is held:
                        del self._held[job_id]
                continue
            renewed += 1
        return renewed

    def finish(
        self,
        job_id: str,
        owner: str,
        attempt: int,
        status: Literal["succeeded", "failed"],
        error: Mapping[str, Any] | None = None,
    ) -> bool:
        """Record the terminal state once, only for the owner of this attempt; whether it did.
        Its options are emptied in the record (never needed again; up to a request head's
        size each), then the job's message and inline input are deleted."""
        now = time.time()
        done_key = self._key("done", f"{int(now * 1000):015d}.{status}.{job_id}")

        def end(record: dict[str, Any]) -> bool:
            if not _holds(record, owner, attempt):
                return False
            detail = dict(error) if error else None
            record.update(
                status=status,
                finished_at=now,
                error=detail,
                lease_expires=None,
                notify_state="pending",
                params={},
            )
            record["events"].append(_event(status, owner, now, detail))
            return True

        with self._aws("record a job's end"):
            # The markers first: a crash after the record changed must lose neither.
            self._s3.put_object(Bucket=self.bucket, Key=self._key("notify", job_id), Body=b"")
            self._s3.put_object(Bucket=self.bucket, Key=done_key, Body=b"")
            record = self._update(job_id, end)
        with self._lock:
            held = self._held.get(job_id)
            if held is not None and held.owner == owner and held.attempt == attempt:
                del self._held[job_id]
            else:
                held = None
        if record is None:
            self._delete(done_key)  # the job is someone else's: its finisher writes its own
            return False
        self._delete(record.get("input_key"))
        if held is not None:
            self._delete_message(held.receipt)
        with self._lock:
            self._due[job_id] = self._job(record)
        return True

    def release(self, job_id: str, owner: str, attempt: int, *, delay_s: float = 0.0) -> bool:
        """Give back a job ``owner`` runs but cannot finish: no longer renewed here, its record
        ``queued`` again (so no renewal already under way extends it, and its next receiver
        takes it as a new attempt) and its message visible again after ``delay_s``; whether
        the record was ``owner``'s. Should the store fail meanwhile, the job still comes
        back: its lease runs out."""
        with self._lock:
            held = self._held.get(job_id)
            if held is not None and held.owner == owner and held.attempt == attempt:
                del self._held[job_id]  # renew() leaves it be from now on
            else:
                held = None
        now = time.time()

        def back(record: dict[str, Any]) -> bool:
            if not _holds(record, owner, attempt):
                return False
            record.update(status="queued", owner=None, lease_expires=None)
            record["events"].append(_event("released", owner, now, {"delay_s": delay_s}))
            return True

        with self._aws("give a job back"):
            record = self._update(job_id, back)
            if record is not None and held is not None:
                self._set_visibility(held.receipt, min(max(delay_s, 0.0), _MAX_VISIBILITY_S))
        return record is not None

    def requeue_orphans(self, owner: str) -> list[str]:
        """Nothing to do: a dead owner's message becomes visible again after its visibility
        timeout and the next receiver takes the job over (see :meth:`claim`)."""
        return []

    def purge(self, finished_before: float, *, batch: int = 500) -> int:
        """Delete finished jobs (record, markers, input) that have nothing left to notify and
        ended before ``finished_before``, or are the oldest beyond ``max_finished`` finished
        jobs; how many (at most ``batch`` per call). Each call lists every ``done`` marker
        (one S3 list request per 1,000) to count them."""
        if batch < 1:
            raise InvalidOptionsError("batch must be at least 1")
        cutoff = self._key("done", f"{int(finished_before * 1000):015d}")
        removed = 0
        with self._aws("purge finished jobs"):
            markers = 0
            oldest: list[str] = []  # those a call may delete: some are skipped (to notify)
            for obj in self._list("done"):
                markers += 1
                if len(oldest) < 4 * batch:
                    oldest.append(str(obj["Key"]))
            excess = markers - self.max_finished
            for key in oldest:
                if removed >= batch or (key >= cutoff and excess <= 0):
                    break
                stamp, _, rest = key.rsplit("/", 1)[1].partition(".")
                _, _, job_id = rest.partition(".")
                try:
                    found = self._read(self._record_key(job_id))
                except CorruptRecordError:
                    self._delete(key)  # the record stays for a person to look at
                    excess -= 1
                    continue
                record = found[0] if found else None
                if (
                    record is None
                    or record["status"] not in TERMINAL
                    or f"{int(float(record['finished_at']) * 1000):015d}" != stamp
                ):
                    self._delete(key)  # a marker of an attempt that did not finish the job
                    excess -= 1
                    continue
                if record.get("notify_state") == "pending":
                    continue
                self._delete(
                    self._record_key(job_id),
                    self._key("index", f"{int(record['seq']):020d}-{job_id}"),
                    self._key("notify", job_id),
                    record.get("input_key"),
                    key,
                )
                for where in (record.get("output_location"), record.get("failure_location")):
                    delete_own_document(where, job_id, record.get("token"))
                removed += 1
                excess -= 1
        return removed

    def mark_notified(self, job_id: str, state: str) -> None:
        """Record the notification outcome: ``sent``, ``failed`` or ``none``."""

        def note(record: dict[str, Any]) -> bool:
            record["notify_state"] = state
            record["events"].append(_event(f"notify_{state}", None, time.time()))
            return True

        with self._aws("record a notification"):
            self._update(job_id, note)
            self._delete(self._key("notify", job_id))
        with self._lock:
            self._due.pop(job_id, None)

    # -- reads -----------------------------------------------------------------------------------

    def _record(self, job_id: str) -> dict[str, Any]:
        if not _JOB_ID.match(job_id):
            raise NotFoundError("no job has this InferenceId", code="unknown_job")
        with self._aws("read a job"):
            found = self._read(self._record_key(job_id))
        if found is None:
            raise NotFoundError("no job has this InferenceId", code="unknown_job")
        return found[0]

    def get(self, job_id: str) -> Job:
        """One job, without its inline input (``NotFoundError`` when unknown)."""
        return self._job(self._record(job_id))

    def view(self, job_id: str) -> JobView:
        """One job's public view (``NotFoundError`` when unknown)."""
        return self._view(self._record(job_id))

    def list_jobs(
        self, *, status: str | None = None, limit: int = 100, after_seq: int = 0
    ) -> JobPage:
        """Public views in submission order, optionally of one status, at most ``limit`` after
        ``after_seq``.

        Each record examined costs one S3 read, listed or skipped by ``status``: a call reads at
        most ``scan_limit`` of them and then stops with ``next_after`` set (:class:`JobPage`),
        so ``status=failed`` over a million succeeded jobs costs the caller more calls, never
        one call the whole index.
        """
        if status is not None and status not in STATUSES:
            raise InvalidOptionsError(f"status must be one of {', '.join(STATUSES)}")
        limit = max(1, min(limit, MAX_PAGE, self.scan_limit))
        start = self._key("index", f"{max(0, after_seq):020d}.")  # '.' sorts after '-'
        found: list[JobView] = []
        examined = 0
        with self._aws("list jobs"):
            for obj in self._list("index", start_after=start):
                name = str(obj["Key"]).rsplit("/", 1)[1]
                seq, _, job_id = name.partition("-")
                try:
                    read = self._read(self._record_key(job_id))  # None: purged meanwhile
                except CorruptRecordError:
                    read = None  # logged; a listing shows the jobs it can read
                examined += 1
                if read is not None and (status is None or read[0]["status"] == status):
                    found.append(self._view(read[0]))
                if len(found) >= limit or examined >= self.scan_limit:
                    return JobPage(found, int(seq))
        return JobPage(found, None)

    def pending_notifications(self, limit: int = 100, *, after_seq: int = 0) -> list[Job]:
        """Jobs finished here whose notification is due (from memory), and every
        ``notify_scan_s`` those other servers finished and left unsent for
        ``notify_takeover_s`` (a crash before they sent it); those submitted after
        ``after_seq``, the ones from memory in submission order."""
        with self._lock:
            held = sorted((j for j in self._due.values() if j.seq > after_seq), key=_by_seq)
            due = held[:limit]
            mine = set(self._due)
            scan = time.monotonic() - self._last_scan >= self.notify_scan_s
            if scan:
                self._last_scan = time.monotonic()
        if not scan or len(due) >= limit:
            return due
        with self._aws("look for notifications"):
            for obj in self._list("notify"):
                job_id = str(obj["Key"]).rsplit("/", 1)[1]
                if job_id in mine:
                    continue
                try:
                    found = self._read(self._record_key(job_id))
                except CorruptRecordError:
                    found = None  # nothing this server can send: the marker goes
                record = found[0] if found else None
                if record is None or record.get("notify_state") not in (None, "pending"):
                    self._delete(str(obj["Key"]))  # nothing (more) to send
                    continue
                if record["status"] not in TERMINAL:
                    continue  # a finish that did not happen (yet)
                if time.time() - float(record["finished_at"]) < self.notify_takeover_s:
                    continue  # its server sends it
                if int(record["seq"]) <= after_seq:
                    continue
                due.append(self._job(record))
                if len(due) >= limit:
                    break
        return sorted(due, key=_by_seq)

    def counts(self) -> JobCounts:
        """Jobs per status: ``queued`` and ``running`` as SQS counts messages (approximate:
        visible + delayed, and in flight); ``succeeded`` and ``failed`` from the ``done``
        markers, of which one call lists at most ``count_limit`` (one S3 list request per
        1,000). Beyond that the two are lower bounds and ``complete`` is false: an operator
        sees "at least" rather than a request whose cost grows with the jobs kept."""
        ended = dict.fromkeys(TERMINAL, 0)
        listed = 0
        with self._aws("count jobs"):
            depth = self._queue_depth()
            for obj in self._list("done"):
                listed += 1
                if listed > self.count_limit:
                    break
                status = str(obj["Key"]).rsplit("/", 1)[1].split(".", 2)[1]
                if status in ended:
                    ended[status] += 1
        counts = {
            "queued": depth["ApproximateNumberOfMessages"]
            + depth["ApproximateNumberOfMessagesDelayed"],
            "running": depth["ApproximateNumberOfMessagesNotVisible"],
            **ended,
        }
        return JobCounts(counts, complete=listed <= self.count_limit)

    def events(self, job_id: str) -> list[dict[str, Any]]:
        """One job's journal, oldest first (one S3 read; ``NotFoundError`` when unknown). An
        audit of every job pages with :meth:`list_jobs` and reads each one's."""
        record = self._record(job_id)
        return [{"job_id": record["id"], **e} for e in record.get("events", [])]


def _by_seq(job: Job) -> int:
    return job.seq


def _is_record(data: Any) -> bool:
    """Whether ``data`` is a job record as this module writes it: its fields there, its
    status known, its numbers numbers (a terminal one's end among them). One edited by hand
    is :class:`CorruptRecordError` where it is read, never a failure further on."""
    if not isinstance(data, dict) or not data.keys() >= _RECORD_KEYS:
        return False
    finished = data.get("finished_at")
    return (
        data["status"] in STATUSES
        and isinstance(data["events"], list)
        and isinstance(data["seq"], int)
        and isinstance(data["attempts"], int)
        and (data["status"] not in TERMINAL or _is_time(finished))
        and (finished is None or _is_time(finished))
    )


def _is_time(value: Any) -> bool:
    """A Unix time a record can hold (seconds, a number before the year 5000)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 1e11


def _holds(record: Mapping[str, Any], owner: str, attempt: int) -> bool:
    """Whether ``owner`` runs ``attempt`` of the job ``record`` describes."""
    return (
        record.get("status") == "running"
        and record.get("owner") == owner
        and int(record.get("attempts") or 0) == attempt
    )


def _visibility(seconds: float) -> int:
    """A visibility timeout SQS accepts: whole seconds in [1, 12 h]."""
    return max(1, min(math.ceil(seconds), _MAX_VISIBILITY_S))

"""A client for a SageMaker asynchronous endpoint: submit, follow, report.

::

    endpoint = AsyncEndpoint("shop-async", input_prefix="s3://shop/async-in/")
    job = endpoint.submit(photo_bytes, "image/jpeg", custom_attributes="k=3")
    endpoint.wait([job], timeout_s=900)           # -> {inference id: Outcome}

SageMaker's side of the contract: ``InvokeEndpointAsync`` takes an S3 ``InputLocation`` and a
``ContentType``, answers at once with an ``InferenceId``, an ``OutputLocation`` and (when the
endpoint has a failure path) a ``FailureLocation``, and later writes exactly one of the two
objects; when the endpoint config names SNS topics, it also publishes a notification.

So a job's state lives in S3, and this module reads it there: ``head_object`` on the output and
failure locations, polled with a growing interval up to a deadline, or woken early by the SNS
notifications delivered to an SQS queue (:class:`QueueNotices`; a queue the caller subscribed
to the topics, or a temporary one :func:`temporary_queue` subscribes and removes again).

Every submission leaves a receipt ``<input prefix>/receipts/<InferenceId>.json`` with its
locations, so ``stygig jobs wait|status <id>`` works from any machine that sees the bucket.
An output location (``s3://.../<uuid>.out``) names a job too: its failure location follows
from the endpoint's ``S3FailurePath`` the way SageMaker names it (``<uuid>-error.out``).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any, Literal

from stygig import storage
from stygig.errors import (
    InvalidOptionsError,
    NotFoundError,
    PayloadTooLargeError,
    ServerError,
    StygigError,
)
from stygig.recommendation import opens_a_json_object

__all__ = [
    "MAX_TIME_LIMIT_S",
    "AsyncEndpoint",
    "AsyncInvocation",
    "Outcome",
    "QueueNotices",
    "content_type_for",
    "sniff_content_type",
    "temporary_queue",
]

log = logging.getLogger(__name__)

MAX_TIME_LIMIT_S = 3600  # SageMaker's cap on InvocationTimeoutSeconds
#: The largest answer read back from an output location: no answer of a StyGig endpoint is
#: near it (an outfit is a few KB), so a larger object is not one, and is not read into memory.
MAX_RESULT_BYTES = 16 << 20
_TYPES_BY_SUFFIX = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".json": "application/json",
}
_ACCEPTED = [*sorted(set(_TYPES_BY_SUFFIX.values())), "application/x-image"]
_INFERENCE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_MAX_FAILURE_BYTES = 64 * 1024
_MAX_RECEIPT_BYTES = 64 * 1024  # a receipt is a few hundred bytes

Status = Literal["pending", "succeeded", "failed"]


def content_type_for(name: str, given: str | None = None) -> str | None:
    """The content type to send for a stored input: ``given`` (checked), else the one its
    suffix says (``.jpg`` -> ``image/jpeg``, ``.json`` -> ``application/json``); ``None`` when
    neither says."""
    if given:
        kind = given.split(";", 1)[0].strip().lower()
        if kind not in _ACCEPTED:
            raise InvalidOptionsError(
                f"--content-type {given!r} is not one the server reads: {', '.join(_ACCEPTED)}"
            )
        return kind
    return _TYPES_BY_SUFFIX.get(PurePosixPath(name.split("?", 1)[0]).suffix.lower())


def sniff_content_type(head: bytes) -> str | None:
    """The content type the first bytes of an input show (JPEG, PNG, WebP, a JSON object)."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if opens_a_json_object(head):
        return "application/json"
    return None


@dataclass(frozen=True)
class AsyncInvocation:
    """One ``InvokeEndpointAsync`` call: what went in and where its answer will be."""

    inference_id: str
    endpoint_name: str
    input_location: str
    content_type: str
    output_location: str
    failure_location: str | None
    submitted_at: str

    def to_dict(self) -> dict[str, Any]:
        """SageMaker's field names, plus what was sent."""
        return {
            "InferenceId": self.inference_id,
            "EndpointName": self.endpoint_name,
            "InputLocation": self.input_location,
            "ContentType": self.content_type,
            "OutputLocation": self.output_location,
            "FailureLocation": self.failure_location,
            "SubmittedAt": self.submitted_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AsyncInvocation:
        """Back from :meth:`to_dict` (a receipt). A receipt is read from a bucket, so it is
        checked as any input: an inference id SageMaker would take, and result locations in
        S3 only (a receipt naming a local file would have it read as a job's answer)."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        job_id, output, failure = (
            data.get("InferenceId"),
            data.get("OutputLocation"),
            data.get("FailureLocation"),
        )
        if not isinstance(job_id, str) or not _INFERENCE_ID.match(job_id):
            raise ValueError("no valid InferenceId")
        if not isinstance(output, str) or not output.startswith("s3://"):
            raise ValueError("OutputLocation is not an s3:// location")
        if failure is not None and (
            not isinstance(failure, str) or not failure.startswith("s3://")
        ):
            raise ValueError("FailureLocation is not an s3:// location")
        texts = [
            data.get(k) for k in ("EndpointName", "InputLocation", "ContentType", "SubmittedAt")
        ]
        if not all(v is None or isinstance(v, str) for v in texts):
            raise ValueError("a field that is not text")
        name, input_location, content_type, submitted = (v or "" for v in texts)
        return cls(job_id, name, input_location, content_type, output, failure, submitted)


def read_receipt(body: bytes) -> AsyncInvocation:
    """A receipt's invocation (:class:`ValueError` when the bytes are not a receipt)."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError("not JSON") from e
    return AsyncInvocation.from_dict(data)


@dataclass(frozen=True)
class Outcome:
    """Where a job stands: pending, or its result / its error."""

    invocation: AsyncInvocation
    status: Status
    result: bytes | None = None
    error: StygigError | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON line for ``stygig jobs status|wait``."""
        inv = self.invocation
        out: dict[str, Any] = {
            "InferenceId": inv.inference_id,
            "Status": self.status,
            "OutputLocation": inv.output_location,
            "FailureLocation": inv.failure_location,
        }
        if self.error is not None:
            out["Error"] = {"code": self.error.code, "message": self.error.message}
        return out


def failure_error(body: bytes, where: str) -> StygigError:
    """The error a failure object holds: the server's ``{"error": {code, message}}`` when it is
    one (also inside SageMaker's ``Received client error ... with message "{...}"`` text), else
    a generic one naming the location (its text is not repeated: it may quote the input)."""
    text = body.decode("utf-8", errors="replace")
    start, end = text.find("{"), text.rfind("}")
    candidates = [text, text[start : end + 1], text[start : end + 1].replace('\\"', '"')]
    for candidate in candidates if start >= 0 else [text]:
        try:
            data = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict) and isinstance(err.get("code"), str):
            return StygigError(str(err.get("message") or err["code"]), code=err["code"])
    found = re.search(r'"code"\s*:\s*\\?"([a-z_]{1,64})\\?"', text)
    code = found.group(1) if found else "endpoint_error"
    return StygigError(f"the endpoint failed this input; see {where}", code=code)


def _check_request(
    inference_id: str | None, custom_attributes: str | None, time_limit_s: float | None
) -> None:
    """Refuse what SageMaker would refuse, before anything is uploaded."""
    if inference_id is not None and not _INFERENCE_ID.match(inference_id):
        raise InvalidOptionsError("--id: 1 to 64 characters of letters, digits, '.', '_' and '-'")
    if custom_attributes and len(custom_attributes) > 1024:
        raise InvalidOptionsError("options: at most 1,024 characters as custom attributes")
    if time_limit_s is not None and not 1 <= time_limit_s <= MAX_TIME_LIMIT_S:
        raise InvalidOptionsError(
            f"--time-limit must be 1 to {MAX_TIME_LIMIT_S} seconds (SageMaker's limit)"
        )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class AsyncEndpoint:
    """A deployed asynchronous endpoint, seen from a client: S3 in, S3 out.

    ``input_prefix`` (``s3://``) is where inputs are uploaded and receipts kept. The AWS
    clients come from :func:`stygig.deploy.sagemaker.aws_client` (region from ``region`` or
    the AWS environment); S3 objects go through :mod:`stygig.storage`.
    """

    def __init__(
        self, endpoint_name: str, *, region: str | None = None, input_prefix: str | None = None
    ) -> None:
        from stygig.deploy import sagemaker as sm_api

        if input_prefix is not None and not input_prefix.startswith("s3://"):
            raise InvalidOptionsError(
                f"--input-prefix must be an s3:// prefix (SageMaker reads inputs from S3), "
                f"not {input_prefix!r}"
            )
        self.endpoint_name = endpoint_name
        self.region = region
        self.input_prefix = input_prefix.rstrip("/") + "/" if input_prefix else None
        self._sm_api = sm_api
        self._runtime = sm_api.aws_client("sagemaker-runtime", region)
        self._failure_path: str | None = None
        self._config_read = False
        self._lock = threading.Lock()

    # -- submitting ---------------------------------------------------------------------------

    def require_prefix(self) -> str:
        """The input prefix; a clear error when none was given."""
        if self.input_prefix is None:
            raise InvalidOptionsError(
                "no input prefix: pass --input-prefix s3://bucket/prefix/ or set "
                "STYGIG_ASYNC_INPUT_PREFIX",
                code="missing_setting",
            )
        return self.input_prefix

    def upload(self, body: bytes, content_type: str, name: str) -> str:
        """Store ``body`` as ``<input prefix>/<name>``; its location."""
        return storage.write_bytes(
            storage.join(self.require_prefix(), name), body, content_type=content_type
        )

    def invoke(
        self,
        input_location: str,
        content_type: str,
        *,
        inference_id: str | None = None,
        custom_attributes: str | None = None,
        time_limit_s: float | None = None,
        receipt: bool = True,
    ) -> AsyncInvocation:
        """``InvokeEndpointAsync`` on a stored input; the receipt is written when there is an
        input prefix to keep it under (and ``receipt``)."""
        if not input_location.startswith("s3://"):
            raise InvalidOptionsError("SageMaker reads inputs from S3: give an s3:// location")
        _check_request(inference_id, custom_attributes, time_limit_s)
        kwargs: dict[str, Any] = {
            "EndpointName": self.endpoint_name,
            "InputLocation": input_location,
            "ContentType": content_type,
        }
        if inference_id:
            kwargs["InferenceId"] = inference_id
        if custom_attributes:
            kwargs["CustomAttributes"] = custom_attributes
        if time_limit_s is not None:
            kwargs["InvocationTimeoutSeconds"] = int(time_limit_s)
        answer = self._sm_api.call(self._runtime, "invoke_endpoint_async", **kwargs)
        inv = AsyncInvocation(
            inference_id=str(answer["InferenceId"]),
            endpoint_name=self.endpoint_name,
            input_location=input_location,
            content_type=content_type,
            output_location=str(answer["OutputLocation"]),
            failure_location=answer.get("FailureLocation"),
            submitted_at=_now(),
        )
        if receipt and self.input_prefix is not None:
            storage.write_bytes(
                self._receipt(inv.inference_id),
                json.dumps(inv.to_dict()).encode(),
                content_type="application/json",
            )
        return inv

    def submit(
        self,
        body: bytes,
        content_type: str,
        *,
        suffix: str,
        inference_id: str | None = None,
        custom_attributes: str | None = None,
        time_limit_s: float | None = None,
    ) -> AsyncInvocation:
        """Upload ``body`` under the input prefix, then invoke on it."""
        _check_request(inference_id, custom_attributes, time_limit_s)  # before the upload
        name = f"{inference_id or uuid.uuid4().hex}{suffix}"
        location = self.upload(body, content_type, name)
        return self.invoke(
            location,
            content_type,
            inference_id=inference_id,
            custom_attributes=custom_attributes,
            time_limit_s=time_limit_s,
        )

    # -- finding a job again ------------------------------------------------------------------

    def _receipt(self, inference_id: str) -> str:
        return storage.join(self.require_prefix(), f"receipts/{inference_id}.json")

    def receipts(self, id_prefix: str) -> dict[str, AsyncInvocation]:
        """Every receipt whose inference id starts with ``id_prefix`` (one listing). One that
        is not a receipt of its own job (unreadable, too large, edited, under another job's
        name) is logged and left out: its job counts as never submitted."""
        out: dict[str, AsyncInvocation] = {}
        receipts = storage.join(self.require_prefix(), f"receipts/{id_prefix}")
        for key in storage.list_keys(receipts, folder=False):
            if not key.endswith(".json"):
                continue
            try:
                inv = read_receipt(storage.read_bytes(key, max_bytes=_MAX_RECEIPT_BYTES))
                if f"{inv.inference_id}.json" != key.rsplit("/", 1)[-1]:
                    raise ValueError(f"it names job {inv.inference_id!r}")
            except (ValueError, PayloadTooLargeError, NotFoundError) as e:
                log.warning("%s is not a job's receipt (%s); it is skipped", key, e)
                continue
            out[inv.inference_id] = inv
        return out

    def failure_path(self) -> str | None:
        """The endpoint's ``S3FailurePath`` (``None`` without one), read once."""
        with self._lock:
            if not self._config_read:
                sm = self._sm_api.aws_client("sagemaker", self.region)
                endpoint = self._sm_api.call(
                    sm, "describe_endpoint", EndpointName=self.endpoint_name
                )
                config = self._sm_api.call(
                    sm,
                    "describe_endpoint_config",
                    EndpointConfigName=endpoint["EndpointConfigName"],
                )
                output = (config.get("AsyncInferenceConfig") or {}).get("OutputConfig") or {}
                self._failure_path = output.get("S3FailurePath")
                self._config_read = True
            return self._failure_path

    def locate(self, ref: str) -> AsyncInvocation:
        """The job ``ref`` names: an inference id (its receipt) or an output location."""
        if ref.startswith("s3://"):
            if not ref.endswith(".out"):
                raise InvalidOptionsError(f"{ref} is not an output location (…/<id>.out)")
            name = ref.rsplit("/", 1)[-1][: -len(".out")]
            failure_path = self.failure_path()
            failure = storage.join(failure_path, f"{name}-error.out") if failure_path else None
            return AsyncInvocation(name, self.endpoint_name, "", "", ref, failure, "")
        if not _INFERENCE_ID.match(ref):
            raise InvalidOptionsError(
                f"{ref!r} is neither an inference id (1 to 64 letters, digits, '.', '_', '-') "
                "nor an output location (s3://…/<id>.out)"
            )
        key = self._receipt(ref)
        try:
            inv = read_receipt(storage.read_bytes(key, max_bytes=_MAX_RECEIPT_BYTES))
            if inv.inference_id != ref:
                raise ValueError(f"it names job {inv.inference_id!r}")
        except NotFoundError:
            raise NotFoundError(
                f"no receipt for job {ref!r} under {self.require_prefix()}receipts/; "
                "name it by its output location instead",
                code="job_not_found",
            ) from None
        except (ValueError, PayloadTooLargeError) as e:
            raise StygigError(
                f"{key} is not a job's receipt ({e}); name the job by its output location instead",
                code="corrupt_record",
            ) from None
        return inv

    # -- following ----------------------------------------------------------------------------

    def outcome(self, inv: AsyncInvocation, *, read_result: bool = True) -> Outcome:
        """Look once: the output object (succeeded), else the failure object (failed, its
        error read), else pending. With ``read_result``, a result is read too."""
        if storage.exists(inv.output_location):
            if not read_result:
                return Outcome(inv, "succeeded")
            try:
                body = storage.read_bytes(inv.output_location, max_bytes=MAX_RESULT_BYTES)
            except PayloadTooLargeError:
                error = StygigError(
                    f"the endpoint's answer is over {MAX_RESULT_BYTES >> 20} MB, so not one "
                    f"(see {inv.output_location})",
                    code="endpoint_error",
                )
                return Outcome(inv, "failed", error=error)
            return Outcome(inv, "succeeded", result=body)
        if inv.failure_location and storage.exists(inv.failure_location):
            # Its first 64 KB only (a ranged read): enough for the server's error document
            # or SageMaker's text around it, never a whole object of any size.
            body = storage.read_head(inv.failure_location, _MAX_FAILURE_BYTES)
            return Outcome(inv, "failed", error=failure_error(body, inv.failure_location))
        return Outcome(inv, "pending")

    def wait(
        self,
        invocations: Sequence[AsyncInvocation],
        *,
        timeout_s: float,
        interval_s: float = 0.5,
        max_interval_s: float = 10.0,
        notices: QueueNotices | None = None,
        stop: threading.Event | None = None,
        read_result: bool = True,
        sleep: Callable[[float], None] = time.sleep,
    ) -> dict[str, Outcome]:
        """Until every job has ended or ``timeout_s`` passed (then those still pending are
        ``pending``): each looked up in S3, the interval growing 1.5x up to ``max_interval_s``.
        With ``notices``, the wait between lookups is a long poll of the queue, and a
        notification for a job looks it up at once. ``stop`` ends the wait early; without
        ``read_result`` results are not read (only whether they are there)."""
        deadline = time.monotonic() + timeout_s
        pending = {inv.inference_id: inv for inv in invocations}
        by_output = {inv.output_location: inv.inference_id for inv in invocations}
        done: dict[str, Outcome] = {}
        interval = interval_s
        check = list(pending)
        while True:
            for job_id in check:
                found = self.outcome(pending[job_id], read_result=read_result)
                if found.status != "pending":
                    done[job_id] = found
                    del pending[job_id]
            remaining = deadline - time.monotonic()
            if not pending or remaining <= 0 or (stop is not None and stop.is_set()):
                break
            pause = min(interval, remaining)
            interval = min(interval * 1.5, max_interval_s)
            if notices is not None:
                t0 = time.monotonic()
                heard = notices.receive(min(remaining, notices.wait_s), set(pending), by_output)
                if heard & pending.keys():  # a notification: look at those jobs now
                    check = [j for j in heard if j in pending]
                    continue
                # Silence: every job is looked up (the backstop for a notice that was lost or
                # came before the queue was subscribed), never more often than the interval.
                pause -= time.monotonic() - t0
            if pause > 0:
                if stop is not None:
                    stop.wait(pause)
                else:
                    sleep(pause)
            check = list(pending)
        for job_id, inv in pending.items():
            done[job_id] = Outcome(inv, "pending")
        return {inv.inference_id: done[inv.inference_id] for inv in invocations}


# -- SNS notifications through SQS ---------------------------------------------------------------


def _notification(body: str) -> dict[str, Any] | None:
    """SageMaker's notification, from an SQS message body (the SNS envelope, or raw)."""
    try:
        data = json.loads(body)
        if isinstance(data, dict) and data.get("Type") == "Notification":
            data = json.loads(data.get("Message") or "{}")
    except (json.JSONDecodeError, TypeError):
        return None
    return data if isinstance(data, dict) else None


class QueueNotices:
    """SageMaker's success/error notifications read from an SQS queue subscribed to the
    endpoint's topics. A message about one of our jobs is deleted once read; any other is
    handed back at once (visibility 0) for whoever else reads the queue."""

    def __init__(self, sqs: Any, queue_url: str, *, wait_s: float = 20.0) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.wait_s = min(max(wait_s, 0.0), 20.0)  # SQS long polls last at most 20 s

    def receive(self, pause_s: float, ids: set[str], by_output: dict[str, str]) -> set[str]:
        """Long-poll up to ``pause_s`` (whole seconds, 0..20); the inference ids heard of."""
        from stygig.deploy.sagemaker import call

        answer = call(
            self.sqs,
            "receive_message",
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=int(min(max(pause_s, 0.0), self.wait_s)),
        )
        heard: set[str] = set()
        for message in answer.get("Messages", []):
            note = _notification(message.get("Body", "")) or {}
            job_id = str(note.get("inferenceId") or "")
            output = str((note.get("responseParameters") or {}).get("outputLocation") or "")
            job_id = job_id if job_id in ids else by_output.get(output, "")
            receipt = message["ReceiptHandle"]
            if job_id:
                heard.add(job_id)
                call(self.sqs, "delete_message", QueueUrl=self.queue_url, ReceiptHandle=receipt)
            else:
                call(
                    self.sqs,
                    "change_message_visibility",
                    QueueUrl=self.queue_url,
                    ReceiptHandle=receipt,
                    VisibilityTimeout=0,
                )
        return heard


@contextmanager
def temporary_queue(sns: Any, sqs: Any, topics: Sequence[str]) -> Iterator[str]:
    """An SQS queue subscribed to ``topics`` for the length of a wait, then unsubscribed and
    deleted (also on errors). Notifications published before it existed are not in it: the
    wait's S3 lookups cover those."""
    from stygig.deploy.sagemaker import call

    if not topics:
        raise InvalidOptionsError("--sns-topic: give at least one topic ARN")
    for arn in topics:
        if not arn.startswith("arn:") or ":sns:" not in arn:
            raise InvalidOptionsError(f"--sns-topic {arn!r} is not an SNS topic ARN")
    name = f"stygig-wait-{uuid.uuid4().hex[:12]}"
    url = call(sqs, "create_queue", QueueName=name)["QueueUrl"]
    subscriptions: list[str] = []
    try:
        arn = call(sqs, "get_queue_attributes", QueueUrl=url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "sns.amazonaws.com"},
                    "Action": "sqs:SendMessage",
                    "Resource": arn,
                    "Condition": {"ArnEquals": {"aws:SourceArn": list(topics)}},
                }
            ],
        }
        call(sqs, "set_queue_attributes", QueueUrl=url, Attributes={"Policy": json.dumps(policy)})
        for topic in topics:
            sub = call(sns, "subscribe", TopicArn=topic, Protocol="sqs", Endpoint=arn)
            subscriptions.append(str(sub["SubscriptionArn"]))
        yield url
    finally:
        for sub_arn in subscriptions:
            # The queue goes below; a subscription left dangling delivers nowhere.
            with suppress(StygigError):
                call(sns, "unsubscribe", SubscriptionArn=sub_arn)
        call(sqs, "delete_queue", QueueUrl=url)


def wait_error(outcomes: dict[str, Outcome], timeout_s: float) -> ServerError | None:
    """The error to raise when jobs were still pending at the deadline."""
    pending = [o for o in outcomes.values() if o.status == "pending"]
    if not pending:
        return None
    return ServerError(
        f"{len(pending)} job(s) not finished after {timeout_s:g} s; "
        "`stygig jobs wait` again later picks them up",
        code="wait_timeout",
    )

"""``stygig jobs submit|status|wait --endpoint-name E`` and ``stygig batch --endpoint-name E``.

The SageMaker side of :mod:`stygig.jobs.command`: the same commands, with a deployed
asynchronous endpoint (S3 in, S3 out, SNS notices) in place of a StyGig server's ``/async``
API. Loaded only when ``--endpoint-name`` is given.
"""

from __future__ import annotations

import argparse
import json
import urllib.parse
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from stygig import storage
from stygig.batch import BatchSummary
from stygig.errors import InvalidOptionsError
from stygig.jobs.command import batch_source
from stygig.jobs.sagemaker_async import (
    AsyncEndpoint,
    AsyncInvocation,
    Outcome,
    QueueNotices,
    content_type_for,
    sniff_content_type,
    temporary_queue,
    wait_error,
)
from stygig.recommendation import merge_option_sources, params_to_dict, parse_json_object

__all__ = ["run_endpoint_batch_command", "run_endpoint_jobs"]

_SUFFIX = {
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/webp": ".webp",
    "application/json": ".json",
    "application/x-image": ".img",
}


def _endpoint(args: argparse.Namespace) -> AsyncEndpoint:
    return AsyncEndpoint(args.endpoint_name, region=args.region, input_prefix=args.input_prefix)


def _options(args: argparse.Namespace) -> list[tuple[str, str]]:
    from stygig.jobs.command import _pairs

    return _pairs(args.option)


#: The most a local input of ``jobs submit --endpoint-name`` may hold: a request of 8 photos at
#: the image limit, base64 in JSON, fits. Read bounded and only from a regular file (a FIFO
#: hung for ever, ``/dev/zero`` grew the process until the machine ran out of memory, a 3 GB
#: file was read whole: review, session 49).
MAX_LOCAL_INPUT_BYTES = 256 << 20


def _local_input(path: str, given: str | None) -> tuple[bytes, str]:
    """A local photo or JSON request and its content type (suffix, else its first bytes)."""
    body = storage.read_bytes(Path(path), max_bytes=MAX_LOCAL_INPUT_BYTES)
    kind = content_type_for(path, given) or sniff_content_type(body[:16])
    if kind is None:
        raise InvalidOptionsError(
            f"cannot tell what {Path(path).name} is: give --content-type "
            "(image/jpeg, image/png, image/webp or application/json)"
        )
    return body, kind


def _with_options(body: bytes, pairs: list[tuple[str, str]], what: str) -> bytes:
    if not pairs:
        return body
    request = parse_json_object(body, what=what)
    merged = merge_option_sources((what, request), ("--option", params_to_dict(pairs)))
    return json.dumps(merged).encode()


def _submit(endpoint: AsyncEndpoint, args: argparse.Namespace) -> AsyncInvocation:
    sources = [bool(args.photo), bool(args.input_location), bool(args.json), bool(args.item)]
    if sum(sources) != 1:
        raise InvalidOptionsError("give exactly one of PHOTO, --input-location, --json, --item")
    if args.webhook:
        raise InvalidOptionsError(
            "SageMaker tells of results through SNS, not webhooks: deploy the endpoint with "
            "--sns-success-topic/--sns-error-topic and wait with --sns-topic"
        )
    pairs = _options(args)
    attrs = urllib.parse.urlencode(pairs) or None
    common: dict[str, Any] = {"inference_id": args.id, "time_limit_s": args.time_limit}
    location = args.input_location
    if location and storage.is_remote(location):
        kind = content_type_for(location, args.content_type)
        if kind is None:
            raise InvalidOptionsError(
                f"cannot tell the content type of {location} from its name: give --content-type"
            )
        if kind == "application/json" and pairs:
            raise InvalidOptionsError(
                "a stored JSON request carries its own options: put them in it, not in --option"
            )
        return endpoint.invoke(location, kind, custom_attributes=attrs, **common)
    if args.photo or location:
        body, kind = _local_input(args.photo or location, args.content_type)
        if kind == "application/json":
            body, attrs = _with_options(body, pairs, "the JSON request"), None
    else:
        # read as the server reads a body (a key given twice is refused, not "the last wins")
        request = (
            parse_json_object(args.json.encode(), what="--json")
            if args.json
            else {"item_ids": args.item}
        )
        merged = merge_option_sources(("--json", request), ("--option", params_to_dict(pairs)))
        body = json.dumps(merged).encode()
        kind, attrs = "application/json", None
    return endpoint.submit(
        body, kind, suffix=_SUFFIX.get(kind, ".bin"), custom_attributes=attrs, **common
    )


def _follow(
    endpoint: AsyncEndpoint, invocations: list[AsyncInvocation], args: argparse.Namespace
) -> dict[str, Outcome]:
    """Wait for the jobs: S3 lookups, woken by SNS notices when a queue or topics are given."""
    from stygig.deploy.sagemaker import aws_client

    with ExitStack() as stack:
        notices = None
        queue_url = args.sns_queue_url
        if args.sns_topic and not queue_url:
            sns, sqs = aws_client("sns", args.region), aws_client("sqs", args.region)
            queue_url = stack.enter_context(temporary_queue(sns, sqs, args.sns_topic))
        if queue_url:
            sqs = aws_client("sqs", args.region)
            notices = QueueNotices(sqs, queue_url, wait_s=args.max_interval)
        return endpoint.wait(
            invocations,
            timeout_s=args.timeout,
            interval_s=args.interval,
            max_interval_s=args.max_interval,
            notices=notices,
            read_result=False,
        )


def run_endpoint_jobs(args: argparse.Namespace) -> int:
    """``stygig jobs submit|status|wait --endpoint-name E``: JSON out; exit 1 when a job
    waited for failed."""
    if args.jobs_command == "list":
        raise InvalidOptionsError(
            "jobs list needs a StyGig server (--url): SageMaker lists no async invocations; "
            "name them with `stygig jobs status --endpoint-name E ID ...`"
        )
    endpoint = _endpoint(args)
    if args.jobs_command == "submit":
        inv = _submit(endpoint, args)
        if not args.wait:
            print(json.dumps(inv.to_dict(), indent=2))
            return 0
        outcome = _follow(endpoint, [inv], args)[inv.inference_id]
        print(json.dumps({**inv.to_dict(), **outcome.to_dict()}, indent=2))
        error = wait_error({inv.inference_id: outcome}, args.timeout)
        if error is not None:
            raise error
        return 0 if outcome.status == "succeeded" else 1
    invocations = [endpoint.locate(ref) for ref in args.ids]
    if args.jobs_command == "status":
        for inv in invocations:
            print(json.dumps(endpoint.outcome(inv, read_result=False).to_dict()))
        return 0
    outcomes = _follow(endpoint, invocations, args)
    for outcome in outcomes.values():
        print(json.dumps(outcome.to_dict()))
    error = wait_error(outcomes, args.timeout)
    if error is not None:
        raise error
    return 0 if all(o.status == "succeeded" for o in outcomes.values()) else 1


def run_endpoint_batch_command(args: argparse.Namespace, options: dict[str, Any]) -> BatchSummary:
    """``stygig batch --endpoint-name E``: the run's summary."""
    from stygig.jobs.endpoint_batch import run_endpoint_batch

    if args.all_items and args.artifact is None:
        raise InvalidOptionsError(
            "--all-items with --endpoint-name needs --artifact: a local copy of the deployed "
            "artifact, to list its items"
        )
    endpoint = _endpoint(args)
    endpoint.require_prefix()
    src, kind = batch_source(args)
    return run_endpoint_batch(
        endpoint,
        src,
        args.output,
        options=options,
        kind=kind,
        by_photo=args.by_photo,
        artifact=args.artifact,
        concurrency=args.concurrency,
        time_limit_s=args.time_limit,
        timeout_s=args.timeout,
        interval_s=args.interval,
        max_interval_s=args.max_interval,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )

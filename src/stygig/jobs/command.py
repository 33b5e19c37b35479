"""``stygig jobs submit|status|wait|list`` (a server's async API over HTTP) and ``stygig batch``.

::

    stygig jobs submit --url http://127.0.0.1:8080 photo.jpg --option k=3
    stygig jobs submit --input-location s3://bucket/in/photo.jpg --id look-42
    stygig jobs wait <id> [<id> ...] --timeout 900
    stygig jobs list --status failed                 # when the server has --async-list-jobs
    stygig jobs submit --endpoint-name shop-async --input-prefix s3://b/in/ photo.jpg --wait
    stygig jobs wait --endpoint-name shop-async --input-prefix s3://b/in/ <id> --sns-topic ARN
    stygig batch --endpoint-name shop-async --input-prefix s3://b/in/ --input photos/ --output r.jsonl
    stygig batch --artifact A --input photos/ --output recs.jsonl      # resumable
    stygig batch --artifact A --all-items --output s3://bucket/recs/   # the nightly refresh
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from stygig.arguments import positive
from stygig.auth import bearer_headers
from stygig.errors import InvalidOptionsError, NotFoundError, ServerError
from stygig.jobs.store import TERMINAL
from stygig.recommendation import merge_option_sources, params_to_dict, parse_json_object

__all__ = ["register", "run_batch_command", "run_jobs"]


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Never follow a redirect: urllib would send every header but ``Content-*`` (the bearer
    token included) to whatever host the ``Location`` names. The 3xx comes back as it is."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


# Every handler urllib installs by default (proxies from the environment included), but
# the redirect handler.
_OPENER = urllib.request.build_opener(_NoRedirects)


def _request(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> tuple[int, dict[str, Any]]:
    """One request to a StyGig server with its token (when one is set); ``(status, JSON)``.

    A redirect is never followed (the token would go with it to another host) and is a
    :class:`~stygig.errors.ServerError` naming its status: a StyGig server never answers one.
    """
    headers = {**bearer_headers(), **(headers or {})}  # the server's token, when one is set
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with _OPENER.open(req, timeout=timeout) as response:
            return int(response.status), json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as e:
        if 300 <= e.code < 400:
            e.close()
            raise ServerError(
                f"{url} answered HTTP {e.code}, a redirect; not followed (the request would "
                "carry the auth token to another address): give --url the server's own address"
            ) from None
        try:
            data = json.loads(e.read() or b"{}")
        except json.JSONDecodeError:
            data = {"error": {"code": "http_error", "message": f"HTTP {e.code}"}}
        finally:
            e.close()
        return int(e.code), data
    except (urllib.error.URLError, OSError) as e:
        raise ServerError(f"cannot reach {url}: {e}") from e


def _checked(status: int, data: dict[str, Any]) -> dict[str, Any]:
    if status == 404:
        raise NotFoundError(str(data.get("error", {}).get("message", "not found")))
    if status >= 400:
        err = data.get("error", {})
        raise ServerError(f"HTTP {status}: {err.get('code')}: {err.get('message')}")
    return data


def _pairs(values: list[str] | None) -> list[tuple[str, str]]:
    out = []
    for pair in values or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidOptionsError(f"--option expects key=value, not {pair!r}")
        out.append((key, value))
    return out


def _submit(args: argparse.Namespace) -> dict[str, Any]:
    headers: dict[str, str] = {}
    body: bytes | None = None
    sources = [bool(args.photo), bool(args.input_location), bool(args.json), bool(args.item)]
    if sum(sources) != 1:
        raise InvalidOptionsError("give exactly one of PHOTO, --input-location, --json, --item")
    if args.photo:
        from stygig.jobs.sagemaker_async import sniff_content_type

        body = Path(args.photo).read_bytes()
        # What the bytes are, not the name: "photo" or "photo.jfif" went as "image/" or
        # "image/jfif" and got a 415 (review, session 54); the server tells the rest apart.
        headers["Content-Type"] = sniff_content_type(body[:64]) or "application/octet-stream"
    elif args.input_location:
        headers["X-Amzn-SageMaker-InputLocation"] = args.input_location
        # Without it the server guesses from the first bytes, and a stored JSON request that
        # does not start with "{" (a byte-order mark) was read as a photo: not_an_image.
        kind = _stored_type(args.input_location, args.content_type)
        if kind:
            headers["X-Amzn-SageMaker-Content-Type"] = kind
    else:
        # the text as given (a key twice is the server's 422 to say, not "the last one wins")
        body = args.json.encode() if args.json else json.dumps({"item_ids": args.item}).encode()
        headers["Content-Type"] = "application/json"
    if args.option:
        headers["X-Amzn-SageMaker-Custom-Attributes"] = urllib.parse.urlencode(_pairs(args.option))
    if args.id:
        headers["X-Amzn-SageMaker-Inference-Id"] = args.id
    if args.time_limit:
        headers["X-Amzn-SageMaker-InvocationTimeoutSeconds"] = str(args.time_limit)
    if args.webhook:
        headers["X-Stygig-Webhook"] = args.webhook
    return _checked(*_request("POST", f"{args.url}/async/invocations", body or b"", headers))


def _status(url: str, job_id: str) -> dict[str, Any]:
    return _checked(*_request("GET", f"{url}/async/jobs/{urllib.parse.quote(job_id)}"))


def _wait(url: str, ids: list[str], timeout: float, interval: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    pending = list(ids)
    done: dict[str, dict[str, Any]] = {}
    while pending:
        for job_id in list(pending):
            info = _status(url, job_id)
            if info["Status"] in TERMINAL:
                done[job_id] = info
                pending.remove(job_id)
        if pending:
            if time.monotonic() > deadline:
                raise ServerError(f"{len(pending)} job(s) not finished after {timeout:g} s")
            time.sleep(interval)
    return [done[i] for i in ids]


def _stored_type(location: str, given: str | None) -> str | None:
    from stygig.jobs.sagemaker_async import content_type_for

    return content_type_for(location, given)


def run_jobs(args: argparse.Namespace) -> int:
    """``stygig jobs ...``: print JSON; exit 1 when a waited-for job failed."""
    if getattr(args, "endpoint_name", None):
        if args.url is not None:
            raise InvalidOptionsError("give --url (a StyGig server) or --endpoint-name, not both")
        from stygig.jobs.endpoint_command import run_endpoint_jobs

        return run_endpoint_jobs(args)
    url = (args.url or _default_url()).rstrip("/")
    if args.jobs_command == "submit":
        info = _submit(args)
        if args.wait:
            info = _wait(url, [info["InferenceId"]], args.timeout, args.interval)[0]
        print(json.dumps(info, indent=2))
        return 0 if info.get("Status") != "failed" else 1
    if args.jobs_command == "status":
        if len(args.ids) == 1:
            print(json.dumps(_status(url, args.ids[0]), indent=2))
        for job_id in args.ids if len(args.ids) > 1 else []:
            print(json.dumps(_status(url, job_id)))
        return 0
    if args.jobs_command == "wait":
        infos = _wait(url, args.ids, args.timeout, args.interval)
        for info in infos:
            print(json.dumps(info))
        return 0 if all(i["Status"] == "succeeded" for i in infos) else 1
    query = urllib.parse.urlencode(
        {
            k: v
            for k, v in (("status", args.status), ("limit", args.limit), ("after", args.after))
            if v is not None
        }
    )
    data = _checked(*_request("GET", f"{url}/async/jobs?{query}"))
    if args.json_out:
        print(json.dumps(data, indent=2))
        return 0
    at_least = "" if data.get("counts_complete", True) else "at least "
    print("counts: " + ", ".join(f"{k} {at_least}{v}" for k, v in data["counts"].items()))
    for job in data["jobs"]:
        error = (job.get("Error") or {}).get("code") or ""
        print(f"{job['InferenceId']:<34} {job['Status']:<10} {job['CreatedAt']}  {error}")
    if data.get("next_after") is not None:
        print(f"more: --after {data['next_after']}")
    return 0


def batch_source(args: argparse.Namespace) -> tuple[str, str]:
    """``(source, kind)`` of ``stygig batch``'s inputs: the artifact's own catalogue with
    ``--all-items``, else ``--input`` as ``--kind`` says (every engine reads them alike)."""
    if args.all_items:
        return str(args.artifact), "artifact"
    return args.input, args.kind


def run_batch_command(args: argparse.Namespace) -> int:
    """``stygig batch``: run (or resume) a batch and print its summary."""
    if (args.input is None) == (not args.all_items):
        raise InvalidOptionsError("give --input SRC or --all-items (the artifact's catalogue)")
    options = merge_option_sources(  # one option in both is an error, as on the server
        ("--options", parse_json_object(args.options.encode(), what="--options"))
        if args.options
        else ("--options", {}),
        ("--option", params_to_dict(_pairs(args.option))),  # typed like the server's options
    )
    ray = getattr(args, "engine", "local") == "ray"
    if args.endpoint_name and not ray:  # (--engine ray refuses an endpoint itself)
        if args.change_log or args.no_change_log:
            raise InvalidOptionsError(
                "--change-log and --no-change-log are for in-process runs: an endpoint answers "
                "with its own catalogue"
            )
        from stygig.jobs.endpoint_command import run_endpoint_batch_command

        return _print_summary(run_endpoint_batch_command(args, options), args.json_out)
    if args.artifact is None:
        raise InvalidOptionsError("give --artifact (in-process) or --endpoint-name (SageMaker)")
    from stygig.serving.catalog_command import answer_change_log, apply_answer_change_log

    change_log = answer_change_log(args.artifact, args.change_log, use=not args.no_change_log)
    if ray:
        from stygig.distributed.command import run_batch_ray_command

        return _print_summary(run_batch_ray_command(args, options, change_log), args.json_out)
    from stygig.artifact import Artifact
    from stygig.batch import run_batch
    from stygig.engine import Recommender

    recommender = Recommender(Artifact.load(args.artifact, verify=not args.no_verify))
    if note := apply_answer_change_log(recommender, args.artifact, change_log):
        print(note, file=sys.stderr)  # before the run, so that it is seen before hours of work
    src, kind = batch_source(args)
    summary = run_batch(
        recommender,
        src,
        args.output,
        options=options,
        kind=kind,
        by_photo=args.by_photo,
        batch_size=args.batch_size,
        workers=args.workers,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    return _print_summary(summary, args.json_out)


def _print_summary(summary: Any, json_out: bool) -> int:
    """A batch summary as text (or JSON); 0."""
    if json_out:
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        print(
            f"output: {summary.output}\n"
            f"inputs: {summary.total}  written now: {summary.processed}  "
            f"already done: {summary.skipped}  errors: {summary.errors}\n"
            f"time: {summary.seconds:.1f}s  throughput: {summary.items_per_second:.1f} items/s"
        )
        for code, n in sorted(summary.errors_by_code.items()):
            print(f"  error {code}: {n}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``jobs`` and ``batch`` to ``stygig``'s argparse subparsers."""
    jobs = subparsers.add_parser(
        "jobs", help="asynchronous jobs on a running server or a SageMaker async endpoint"
    )
    jobs.set_defaults(func=run_jobs)
    sub = jobs.add_subparsers(dest="jobs_command", required=True)

    def with_url(p: argparse.ArgumentParser, follow: bool = False) -> argparse.ArgumentParser:
        p.add_argument("--url", help="server (default $STYGIG_URL or :8080)")
        _endpoint_flags(p, follow=follow)
        return p

    p = with_url(
        sub.add_parser("submit", help="submit a job; prints its id and locations"), follow=True
    )
    p.add_argument("photo", nargs="?", help="a photo sent inline")
    p.add_argument(
        "--input-location",
        help="a stored photo or JSON request (path, s3://) under a prefix the server allows",
    )
    p.add_argument(
        "--content-type",
        help="the stored input's type (default: from its suffix: image/jpeg|png|webp, "
        "application/json)",
    )
    p.add_argument("--json", help="an inline JSON request")
    p.add_argument("--item", action="append", help="a catalogue item id (repeat)")
    p.add_argument("--option", action="append", help="option key=value (repeat)")
    p.add_argument(
        "--id", help="your inference id (resubmitting it never duplicates; not ending in -error)"
    )
    p.add_argument(
        "--time-limit", type=float, help="seconds (default: the server's; SageMaker: 1..3600)"
    )
    p.add_argument("--webhook", help="notify this URL when the job ends")
    p.add_argument("--wait", action="store_true", help="wait for the job to end")
    p.add_argument("--timeout", type=float, default=900.0, help="with --wait: give up after")
    p.add_argument("--interval", type=float, default=0.5, help="with --wait: poll interval")

    p = with_url(sub.add_parser("status", help="jobs' status (and timestamps on a server)"))
    p.add_argument("ids", nargs="+", metavar="id", help="job id (SageMaker: or output location)")

    p = with_url(
        sub.add_parser("wait", help="wait until the jobs end; exit 1 if one failed"), follow=True
    )
    p.add_argument("ids", nargs="+", metavar="id", help="job id (SageMaker: or output location)")
    p.add_argument("--timeout", type=float, default=900.0)
    p.add_argument("--interval", type=float, default=0.5)

    p = with_url(
        sub.add_parser("list", help="jobs and counts per status (servers with --async-list-jobs)")
    )
    p.add_argument("--status", choices=["queued", "running", "succeeded", "failed"])
    p.add_argument("--limit", type=int, default=50)
    p.add_argument(
        "--after", type=int, help="the next page: the 'more: --after N' the last page printed"
    )
    p.add_argument("--json", dest="json_out", action="store_true")

    p = subparsers.add_parser("batch", help="recommendations for many inputs (resumable)")
    p.add_argument(
        "--artifact",
        help="the artifact (in-process); with --endpoint-name, a local copy of the deployed one "
        "(for --all-items, and catalogue rows by item id)",
    )
    p.add_argument("--input", help="catalogue file, photo folder, manifest .jsonl, or artifact")
    p.add_argument(
        "--all-items", action="store_true", help="every item of the artifact (nightly refresh)"
    )
    p.add_argument("--output", required=True, help=".jsonl, .parquet, or an s3:// prefix")
    p.add_argument(
        "--kind", default="auto", choices=["auto", "artifact", "catalog", "photos", "manifest"]
    )
    p.add_argument(
        "--by-photo", action="store_true", help="catalogue rows by photo even when known by id"
    )
    p.add_argument("--option", action="append", help="option key=value for every input")
    p.add_argument("--options", help="options for every input as a JSON object")
    p.add_argument("--batch-size", type=positive, default=32)
    p.add_argument("--workers", type=positive, default=None, help="threads (default: cores)")
    p.add_argument("--overwrite", action="store_true", help="discard an earlier run's output")
    p.add_argument("--no-verify", action="store_true", help="skip artifact checksums")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", dest="json_out", action="store_true", help="summary as JSON")
    from stygig.distributed.command import add_engine_flags
    from stygig.serving.catalog_command import add_answer_flags

    add_answer_flags(p)

    add_engine_flags(p, "batch")
    g = p.add_argument_group("through a SageMaker async endpoint instead of in-process")
    g.add_argument("--endpoint-name", help="the deployed asynchronous endpoint")
    g.add_argument("--region", help="AWS region (default: the AWS environment)")
    g.add_argument("--input-prefix", default=os.environ.get(INPUT_PREFIX_ENV), help=_PREFIX_HELP)
    g.add_argument("--concurrency", type=int, default=4, help="inputs in flight at once")
    g.add_argument("--time-limit", type=float, help="seconds per input on the endpoint (1..3600)")
    g.add_argument(
        "--timeout", type=float, default=3600.0, help="seconds to wait for one input's result"
    )
    g.add_argument("--interval", type=float, default=1.0, help="first S3 poll interval")
    g.add_argument("--max-interval", type=float, default=10.0, help="longest S3 poll interval")
    p.set_defaults(func=run_batch_command)


INPUT_PREFIX_ENV = "STYGIG_ASYNC_INPUT_PREFIX"
_PREFIX_HELP = f"s3:// prefix the inputs are uploaded to (default ${INPUT_PREFIX_ENV})"


def _default_url() -> str:
    return os.environ.get("STYGIG_URL", "http://127.0.0.1:8080")


def _endpoint_flags(p: argparse.ArgumentParser, *, follow: bool) -> None:
    g = p.add_argument_group("a SageMaker async endpoint instead of a StyGig server")
    g.add_argument("--endpoint-name", help="the deployed asynchronous endpoint")
    g.add_argument("--region", help="AWS region (default: the AWS environment)")
    g.add_argument("--input-prefix", default=os.environ.get(INPUT_PREFIX_ENV), help=_PREFIX_HELP)
    if follow:
        g.add_argument(
            "--sns-queue-url", help="an SQS queue subscribed to the endpoint's SNS topics"
        )
        g.add_argument(
            "--sns-topic",
            action="append",
            help="an SNS topic ARN of the endpoint (repeat): a queue is subscribed for the wait",
        )
        g.add_argument("--max-interval", type=float, default=10.0, help="longest poll interval")

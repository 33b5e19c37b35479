"""``stygig invoke | advise`` and the CPU guard of ``deploy sync``: checking an endpoint and sizing it.

The guard and ``advise`` read the same figures (``stygig.deploy.advisor.figures_for``) for the
same model key: the encoder named by the manifest of ``--artifact`` (or of the archive, when
the caller knows it), else ``--encoder``/``--model``, else the advisor's default.
Only the standard library is imported here; boto3 and the rest load when a command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stygig.arguments import count, real

__all__ = ["SYNC_DEFAULT_INSTANCE", "cpu_guard", "register_checks"]

SYNC_DEFAULT_INSTANCE = "ml.g4dn.xlarge"


def register_checks(subparsers: Any) -> None:
    """Add ``invoke`` and ``advise`` to ``stygig``."""
    p = subparsers.add_parser("invoke", help="send a photo to an endpoint and check the answer")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--endpoint-name", help="a SageMaker endpoint")
    target.add_argument("--url", help="a StyGig server, e.g. http://127.0.0.1:8080")
    p.add_argument("--image", help="the photo (jpg/png/webp); needed unless only --report")
    p.add_argument("--region", help="AWS region (default: the AWS environment)")
    p.add_argument("--concurrency", type=int, help="also run a load check with N clients")
    p.add_argument("--requests", type=int, default=100, help="requests of the load check")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    p.add_argument(
        "--max-p99-ms",
        type=float,
        help="latency budget: exit 1 when the client's p99 (the load check's, else the one "
        "request's) is above it",
    )
    p.add_argument(
        "--report",
        action="store_true",
        help="--endpoint-name: read the endpoint's CloudWatch metrics (after the load check, "
        "for its window; alone, for the last --minutes)",
    )
    p.add_argument("--minutes", type=float, default=15.0, help="--report alone: window length")
    p.add_argument(
        "--report-wait",
        type=float,
        default=300.0,
        help="after a load check: seconds to wait for CloudWatch to count its requests",
    )
    p.add_argument("--json", action="store_true", help="print the whole response")
    p.set_defaults(func=run_invoke)

    p = subparsers.add_parser("advise", help="instance type, count and cost for a load")
    p.add_argument("--mode", required=True, choices=["sync", "async"])
    # Finite and in range as they are read (review, session 53: nan and inf were tracebacks).
    p.add_argument("--requests-per-hour", type=real(0.0), required=True)
    p.add_argument(
        "--latency-target-ms", type=real(0.0, above=True), help="p99 every request must meet"
    )
    p.add_argument(
        "--model",
        "--encoder",
        dest="model",
        help="model key of the matrix, e.g. efficientnet-lite0 (default: --artifact's "
        "encoder, else efficientnet-lite0, what build builds)",
    )
    p.add_argument("--artifact", help="artifact folder: its manifest names the encoder")
    p.add_argument("--utilisation", type=float, default=0.7, help="share of throughput used")
    p.add_argument("--min-instances", type=count, default=1)
    p.add_argument("--active-hours-per-day", type=float, default=24.0, help="async: busy hours")
    p.add_argument("--matrix", help="instance matrix YAML (default: the packaged one)")
    p.add_argument(
        "--live-prices",
        action="store_true",
        help="prices from the AWS Price List API (typed-in table when it cannot be reached)",
    )
    p.add_argument("--region", help="--live-prices: the region to price (default: AWS env)")
    p.set_defaults(func=run_advise)


def cpu_guard(args: argparse.Namespace, encoder: Mapping[str, Any] | str | None = None) -> None:
    """Refuse real-time on a CPU instance without --allow-cpu; quote the advisor's figures.

    The figures are those ``stygig advise`` prints for the same instance type and model key:
    ``encoder`` when the caller knows it (the manifest's ``encoder`` block, or a model key such
    as one recorded with the uploaded archive), else the encoder of ``args.artifact`` (a local
    folder), else ``args.encoder``/``args.model``, else the advisor's default, which the
    message then names as an assumption.
    """
    from stygig.deploy import advisor
    from stygig.errors import InvalidOptionsError

    if args.mode != "sync" or advisor.is_gpu_instance(args.instance_type):
        return
    if isinstance(encoder, str):
        model, why = encoder, "the artifact's encoder"
    elif encoder is not None:
        model, why = advisor.model_key(encoder), "the artifact's encoder"
    else:
        chosen = getattr(args, "encoder", None) or getattr(args, "model", None)
        model, why = advisor.resolve_model(chosen, getattr(args, "artifact", None))
    figures = advisor.figures_for(advisor.load_matrix(), args.instance_type, model)
    note = f"{advisor.cpu_realtime_note(args.instance_type, figures, model)} [{why}]"
    if not args.allow_cpu:
        raise InvalidOptionsError(
            f"{args.instance_type} is a CPU instance; {note}. Pass --allow-cpu to deploy anyway, "
            f"or keep the GPU default {SYNC_DEFAULT_INSTANCE} (compare: `stygig advise --mode "
            f"sync --model {model} --requests-per-hour N`)",
            code="cpu_realtime",
        )
    print(note)


def run_invoke(args: argparse.Namespace) -> int:
    """``invoke``: one request and its checks, the optional load check, latency budget and
    CloudWatch report; 1 on a problem."""
    from stygig.errors import InvalidOptionsError

    if args.report and not args.endpoint_name:
        raise InvalidOptionsError("--report reads CloudWatch: it needs --endpoint-name")
    if args.image is None:
        if args.report and not args.concurrency:
            return _report_only(args)
        raise InvalidOptionsError("--image is needed (only --report alone goes without it)")
    return _invoke(args)


def _invoke(args: argparse.Namespace) -> int:
    from stygig.deploy import invoke as inv
    from stygig.errors import InvalidOptionsError

    photo = Path(args.image)
    if not photo.is_file():
        raise InvalidOptionsError(f"--image {photo.name}: no such file")
    if args.concurrency is not None and (args.concurrency < 1 or args.requests < 1):
        raise InvalidOptionsError("--concurrency and --requests must be >= 1")
    body, kind = photo.read_bytes(), inv.content_type_of(photo)
    sender: Any
    if args.url:
        sender = inv.UrlClient(args.url, timeout_s=args.timeout)
        target = args.url
    else:
        runtime = inv.runtime_client(
            args.region, pool=args.concurrency or 1, timeout_s=args.timeout
        )
        sender = inv.EndpointClient(runtime, args.endpoint_name)
        target = f"endpoint {args.endpoint_name}"
    try:
        if isinstance(sender, inv.UrlClient):
            rec, ms = inv.invoke_url(args.url, body, kind, client=sender)
        else:
            rec, ms = inv.invoke_endpoint(sender.runtime, args.endpoint_name, body, kind)
        print(json.dumps(rec, indent=2) if args.json else inv.describe_response(rec, ms))
        problems = inv.check_response(rec)
        for problem in problems:
            print(f"check failed: {problem}", file=sys.stderr)
        if not problems:
            print("checks: rgb triples, top-5 votes, compatibility boost: ok")
        failed = bool(problems)
        p99, what = ms, "the request's"
        check = None
        if args.concurrency:
            from stygig.loadtest import print_report

            check = inv.load_check(
                lambda: sender.send(body, kind),
                concurrency=args.concurrency,
                requests=args.requests,
                target=target,
            )
            print_report(check.report)
            for line in check.lines():
                print(line)
            failed = failed or check.report.counts.get("2xx", 0) != check.report.requests
            p99, what = check.report.latency_ms.get("p99", 0.0), "the load check's"
    finally:
        if isinstance(sender, inv.UrlClient):
            sender.close()
    if args.max_p99_ms is not None:
        ok, line = inv.budget_verdict(p99, args.max_p99_ms, what)
        print(line, file=sys.stdout if ok else sys.stderr)
        failed = failed or not ok
    if args.report and check is not None:
        _report(args, check.started, check.ended, check.report.requests,
                check.report.latency_ms.get("p50"))  # fmt: skip
    elif args.report:
        _report_only(args)
    return 1 if failed else 0


def _variants(args: argparse.Namespace) -> list[str]:
    from stygig.deploy.sagemaker import aws_client, call

    sm = aws_client("sagemaker", args.region)
    info = call(sm, "describe_endpoint", EndpointName=args.endpoint_name)
    return [v["VariantName"] for v in info.get("ProductionVariants", [])]


def _report(
    args: argparse.Namespace,
    started: Any,
    ended: Any,
    expected: int,
    client_p50_ms: float | None,
) -> None:
    from stygig.deploy import endpoint_metrics as em
    from stygig.deploy.sagemaker import aws_client

    variants = _variants(args)
    cw = aws_client("cloudwatch", args.region)
    found, complete = em.wait_for_metrics(
        lambda: em.read_endpoint_metrics(cw, args.endpoint_name, variants, started, ended),
        expected=expected,
        deadline_s=args.report_wait,
    )
    for line in em.format_metrics(args.endpoint_name, found, started, ended, client_p50_ms):
        print(line)
    if not complete:
        counted = sum(v.invocations for v in found)
        print(
            f"CloudWatch counted {counted:.0f} of the {expected} requests within "
            f"{args.report_wait:g} s; the figures above are partial"
        )


def _report_only(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime, timedelta

    from stygig.errors import InvalidOptionsError

    if args.minutes <= 0:
        raise InvalidOptionsError("--minutes must be > 0")
    ended = datetime.now(UTC)
    started = ended - timedelta(minutes=args.minutes)
    args.report_wait = 0.0
    _report(args, started, ended, 0, None)
    return 0


def run_advise(args: argparse.Namespace) -> int:
    """``advise``: print the recommendation, the options considered and the break-even loads."""
    from stygig.deploy.advisor import advise, format_advice, load_matrix, resolve_model

    matrix = load_matrix(args.matrix)
    if args.live_prices:
        matrix = _with_live_prices(matrix, args.region)
    model, why = resolve_model(args.model, args.artifact)
    if why.startswith("the artifact's encoder"):
        note = f"model {model}: the encoder of {Path(args.artifact).name}"
        if args.model and args.model != model:  # said, not silently overruled (review, s51)
            note += f", not --encoder {args.model}"
        print(note)
    advice = advise(
        matrix,
        mode=args.mode,
        requests_per_hour=args.requests_per_hour,
        latency_target_ms=args.latency_target_ms,
        model=model,
        utilisation=args.utilisation,
        min_instances=args.min_instances if args.mode == "sync" else max(1, args.min_instances),
        active_hours_per_day=args.active_hours_per_day,
    )
    print(format_advice(advice))
    return 0 if advice.choice is not None else 1


def _with_live_prices(matrix: Any, region: str | None) -> Any:
    """The matrix with live prices where the Price List API gives them; says what it used."""
    from stygig.deploy.advisor import with_prices
    from stygig.deploy.prices import live_prices, pricing_client

    fallback = f"{matrix.region} on-demand, {matrix.date}, copied by hand"
    try:
        where = region or _session_region() or matrix.region
        client = pricing_client()
    except ImportError:
        note = f"live prices need boto3 (pip install 'stygig[aws]'); typed-in table: {fallback}"
        print(f"prices: {note}", file=sys.stderr)
        return with_prices(matrix, {}, note)
    found = live_prices(client, where, [i.name for i in matrix.instances])
    note = found.note(fallback)
    print(f"prices: {note}", file=sys.stderr if found.problem else sys.stdout)
    if found.problem is not None:
        return with_prices(matrix, {}, note)
    return with_prices(matrix, found.prices, note)


def _session_region() -> str | None:
    import boto3

    region: str | None = boto3.session.Session().region_name
    return region

"""``stygig invoke | advise`` and the CPU guard of ``deploy sync``: checking an endpoint and sizing it.

Only the standard library is imported here; boto3 and the rest load when a command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["SYNC_DEFAULT_INSTANCE", "cpu_guard", "register_checks"]

SYNC_DEFAULT_INSTANCE = "ml.g4dn.xlarge"


def register_checks(subparsers: Any) -> None:
    """Add ``invoke`` and ``advise`` to ``stygig``."""
    p = subparsers.add_parser("invoke", help="send a photo to an endpoint and check the answer")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--endpoint-name", help="a SageMaker endpoint")
    target.add_argument("--url", help="a StyGig server, e.g. http://127.0.0.1:8080")
    p.add_argument("--image", required=True, help="the photo (jpg/png/webp)")
    p.add_argument("--region", help="AWS region (default: the AWS environment)")
    p.add_argument("--concurrency", type=int, help="also run a load check with N clients")
    p.add_argument("--requests", type=int, default=100, help="requests of the load check")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    p.add_argument("--json", action="store_true", help="print the whole response")
    p.set_defaults(func=run_invoke)

    p = subparsers.add_parser("advise", help="instance type, count and cost for a load")
    p.add_argument("--mode", required=True, choices=["sync", "async"])
    p.add_argument("--requests-per-hour", type=float, required=True)
    p.add_argument("--latency-target-ms", type=float, help="p99 every request must meet")
    p.add_argument("--model", default="clip-vit-b-32", help="model key of the matrix")
    p.add_argument("--utilisation", type=float, default=0.7, help="share of throughput used")
    p.add_argument("--min-instances", type=int, default=1)
    p.add_argument("--active-hours-per-day", type=float, default=24.0, help="async: busy hours")
    p.add_argument("--matrix", help="instance matrix YAML (default: the packaged one)")
    p.set_defaults(func=run_advise)


def cpu_guard(args: argparse.Namespace) -> None:
    """Refuse real-time on a CPU instance without --allow-cpu; quote the expected latency."""
    from stygig.deploy.advisor import DEFAULT_MODEL, is_gpu_instance, load_matrix
    from stygig.errors import InvalidOptionsError

    if args.mode != "sync" or is_gpu_instance(args.instance_type):
        return
    matrix = load_matrix()
    expected = "no figures in the instance matrix for it"
    for inst in matrix.instances:
        if inst.name == args.instance_type and DEFAULT_MODEL in inst.models:
            f = inst.models[DEFAULT_MODEL]
            expected = f"p50 {f.p50_ms:g} ms, p99 {f.p99_ms:g} ms for {DEFAULT_MODEL} ({f.source})"
    if not args.allow_cpu:
        raise InvalidOptionsError(
            f"{args.instance_type} is a CPU instance: real-time there answers in {expected}. "
            f"Pass --allow-cpu to deploy anyway, or keep the GPU default {SYNC_DEFAULT_INSTANCE} "
            "(see `stygig advise --mode sync`)",
            code="cpu_realtime",
        )
    print(f"real-time on CPU ({args.instance_type}): expected latency {expected}")


def run_invoke(args: argparse.Namespace) -> int:
    """``invoke``: one request, its checks, then the optional load check; 1 on a problem."""
    from stygig.deploy import invoke as inv
    from stygig.errors import InvalidOptionsError

    photo = Path(args.image)
    if not photo.is_file():
        raise InvalidOptionsError(f"--image {photo}: no such file")
    body, kind = photo.read_bytes(), inv.content_type_of(photo)
    if args.url:
        target = args.url

        def send() -> tuple[dict[str, Any], float]:
            return inv.invoke_url(args.url, body, kind, timeout_s=args.timeout)
    else:
        from stygig.deploy.sagemaker import aws_client

        runtime = aws_client("sagemaker-runtime", args.region)
        target = f"endpoint {args.endpoint_name}"

        def send() -> tuple[dict[str, Any], float]:
            return inv.invoke_endpoint(runtime, args.endpoint_name, body, kind)

    rec, ms = send()
    print(json.dumps(rec, indent=2) if args.json else inv.describe_response(rec, ms))
    problems = inv.check_response(rec)
    for problem in problems:
        print(f"check failed: {problem}", file=sys.stderr)
    if not problems:
        print("checks: rgb triples, top-5 votes, compatibility boost: ok")
    failed = bool(problems)
    if args.concurrency:
        from stygig.loadtest import print_report

        report = inv.load_check(
            send,
            concurrency=args.concurrency,
            requests=args.requests,
            target=target,
        )
        print_report(report)
        failed = failed or report.counts.get("2xx", 0) != report.requests
    return 1 if failed else 0


def run_advise(args: argparse.Namespace) -> int:
    """``advise``: print the recommendation and the options considered."""
    from stygig.deploy.advisor import advise, format_advice, load_matrix

    advice = advise(
        load_matrix(args.matrix),
        mode=args.mode,
        requests_per_hour=args.requests_per_hour,
        latency_target_ms=args.latency_target_ms,
        model=args.model,
        utilisation=args.utilisation,
        min_instances=args.min_instances if args.mode == "sync" else max(1, args.min_instances),
        active_hours_per_day=args.active_hours_per_day,
    )
    print(format_advice(advice))
    return 0 if advice.choice is not None else 1

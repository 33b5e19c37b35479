"""``stygig deploy transform``: a SageMaker Batch Transform job over stored inputs.

::

    stygig deploy transform --endpoint-name shop --input s3://b/photos/ --output s3://b/recs/
    stygig deploy transform --model-name shop-t1 --all-items --artifact A \\
        --input s3://b/refresh/ --output s3://b/recs/            # the nightly refresh

Batch Transform starts instances of the model, POSTs every stored input to the container's
``/invocations`` (which StyGig serves already), writes ``<output>/<input name>.out`` per input
and stops. One job has one content type, so the inputs under ``--input`` are grouped by what
their names say (``.jpg``/``.jpeg``, ``.png``, ``.webp``, ``.json``: one request per file;
``.jsonl``: one JSON request per line, answered line for line) and each group gets its own job,
listing its files in a manifest (``<output>/_manifests/<job>.manifest``). ``--content-type``
sends every file under the prefix as that type instead, in one job.

``--all-items --artifact A`` writes ``<input>/all-items.jsonl`` (one ``{"item_ids": [id]}``
request per catalogue item of the artifact, options beside it) and transforms it: every
item's outfit, computed on the model's instances.

The model is ``--model-name``, or the live variant's model of ``--endpoint-name``. The command
waits (``--timeout``) and prints each job's status and how many outputs it wrote; a failed
job exits 1 with SageMaker's reason. Note: a record the container refuses (a corrupt photo)
fails its whole job; ``stygig batch --endpoint-name`` records such errors per input instead.

Only the standard library is imported here; boto3 and the rest load when the command runs.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stygig.recommendation import JSON_LINES_TYPES

__all__ = ["TransformGroup", "group_inputs", "register_transform", "run_transform"]

_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".json": "application/json",
    ".jsonl": "application/json",
}
_SHORT = {"image/jpeg": "jpeg", "image/png": "png", "image/webp": "webp"}
_DONE = ("Completed", "Failed", "Stopped")
_MAX_NAME = 63


@dataclass
class TransformGroup:
    """The inputs one job takes: one content type, whole files or one record per line."""

    content_type: str
    lines: bool
    keys: list[str] = field(default_factory=list)

    @property
    def tag(self) -> str:
        """A short name for the group, for job names."""
        return "jsonl" if self.lines else _SHORT.get(self.content_type, "json")


def group_inputs(
    keys: list[str], content_type: str | None = None
) -> tuple[list[TransformGroup], int]:
    """The inputs by content type (``content_type``: all of them as that), and how many keys
    were left out (other suffixes, the manifests this command writes)."""
    if content_type:
        # A JSON Lines type: one record per line, as the server reads one per request (the
        # whole file went as one body: a 400 for every file, review session 53).
        lines = content_type.split(";", 1)[0].strip().lower() in JSON_LINES_TYPES
        return [TransformGroup(content_type, lines, list(keys))], 0
    groups: dict[tuple[str, bool], TransformGroup] = {}
    skipped = 0
    for key in keys:
        name = key.rsplit("/", 1)[-1].lower()
        suffix = name[name.rfind(".") :] if "." in name else ""
        kind = _TYPES.get(suffix)
        if kind is None or "/_manifests/" in key:
            skipped += 1
            continue
        lines = suffix == ".jsonl"
        groups.setdefault((kind, lines), TransformGroup(kind, lines)).keys.append(key)
    return sorted(groups.values(), key=lambda g: g.tag), skipped


def _job_name(base: str, tag: str | None) -> str:
    suffix = f"-{tag}" if tag else ""
    return f"{base[: _MAX_NAME - len(suffix)]}{suffix}".strip("-")


def _model_of(sm: Any, endpoint_name: str) -> str:
    """The model behind the endpoint's live variant (the one with the most traffic)."""
    from stygig.deploy import sagemaker as sm_api

    _, variants = sm_api.live_config(sm, endpoint_name)
    return max(variants, key=lambda v: v.weight).model_name


def _all_items_file(args: argparse.Namespace, prefix: str) -> str:
    """Write one item-id request per artifact item under ``prefix``; its location."""
    from stygig import storage
    from stygig.artifact import Artifact
    from stygig.engine import Options
    from stygig.jobs.command import _pairs
    from stygig.recommendation import params_to_dict

    options = params_to_dict(_pairs(args.option))
    Options.from_dict(options)  # the container would refuse every line: refuse now
    items = Artifact.load(args.artifact, verify=False).items
    body = "".join(json.dumps({"item_ids": [item.id], **options}) + "\n" for item in items)
    return storage.write_bytes(
        storage.join(prefix, "all-items.jsonl"), body.encode(), content_type="application/json"
    )


def _job_request(
    args: argparse.Namespace, name: str, model: str, group: TransformGroup, source: dict[str, str]
) -> dict[str, Any]:
    request: dict[str, Any] = {
        "TransformJobName": name,
        "ModelName": model,
        "MaxPayloadInMB": args.max_payload_mb,
        "BatchStrategy": "SingleRecord",
        "TransformInput": {
            "DataSource": {"S3DataSource": source},
            "ContentType": group.content_type,
            "SplitType": "Line" if group.lines else "None",
            "CompressionType": "None",
        },
        "TransformOutput": {
            "S3OutputPath": args.output,
            "Accept": "application/json",
            "AssembleWith": "Line" if group.lines else "None",
        },
        "TransformResources": {
            "InstanceType": args.instance_type,
            "InstanceCount": args.instance_count,
        },
    }
    if args.max_concurrent:
        request["MaxConcurrentTransforms"] = args.max_concurrent
    from stygig.deploy.sagemaker import parse_environment

    env = parse_environment(args.env or [])  # checked as deploy's (a value is never echoed)
    if env:
        request["Environment"] = env
    return request


def wait_for_jobs(
    sm: Any,
    names: list[str],
    *,
    timeout_s: float,
    poll_s: float,
    progress: Callable[[str], None] = print,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, dict[str, Any]]:
    """Poll until every job has ended (Completed, Failed, Stopped); the last descriptions.
    Past ``timeout_s``: a :class:`ServerError` (the jobs keep running)."""
    from stygig.deploy import sagemaker as sm_api
    from stygig.errors import ServerError

    t0 = time.monotonic()
    done: dict[str, dict[str, Any]] = {}
    pause = min(poll_s, 5.0)
    while True:
        for name in [n for n in names if n not in done]:
            info = sm_api.call(sm, "describe_transform_job", TransformJobName=name)
            status = str(info.get("TransformJobStatus"))
            progress(f"transform job {name}: {status} ({time.monotonic() - t0:.0f} s)")
            if status in _DONE:
                done[name] = info
        if len(done) == len(names):
            return {n: done[n] for n in names}
        if time.monotonic() - t0 > timeout_s:
            waiting = ", ".join(n for n in names if n not in done)
            raise ServerError(
                f"transform job(s) {waiting} not finished after {timeout_s:.0f} s; they keep "
                "running (aws sagemaker stop-transform-job --transform-job-name NAME stops one)",
                code="transform_timeout",
            )
        sleep(pause)
        pause = min(pause * 1.5, poll_s)  # quick looks first, then every poll_s


def run_transform(args: argparse.Namespace) -> int:
    """``deploy transform``: one job per content type; 1 when a job did not complete."""
    from stygig import storage
    from stygig.deploy import sagemaker as sm_api
    from stygig.errors import InvalidOptionsError, NotFoundError

    if (args.endpoint_name is None) == (args.model_name is None):
        raise InvalidOptionsError("give --endpoint-name (its live model) or --model-name")
    for flag, uri in (("--input", args.input), ("--output", args.output)):
        if not uri.startswith("s3://"):
            raise InvalidOptionsError(f"{flag} must be an s3:// prefix, not {uri!r}")
    if args.all_items and not args.artifact:
        raise InvalidOptionsError("--all-items needs --artifact (the deployed artifact, locally)")
    if args.option and not args.all_items:
        raise InvalidOptionsError("--option applies to --all-items requests only")
    if args.instance_count < 1 or args.max_payload_mb < 1 or args.max_payload_mb > 100:
        raise InvalidOptionsError("--instance-count >= 1 and --max-payload-mb 1..100")
    if args.max_concurrent and args.max_concurrent * args.max_payload_mb > 100:
        raise InvalidOptionsError(
            "--max-concurrent x --max-payload-mb must be at most 100 (SageMaker's limit)"
        )
    sm = sm_api.aws_client("sagemaker", args.region)
    model = args.model_name or _model_of(sm, args.endpoint_name)
    sm_api.call(sm, "describe_model", ModelName=model)  # a clear error before anything is written
    prefix = args.input.rstrip("/") + "/"
    if args.all_items:
        keys = [_all_items_file(args, prefix)]
    else:
        keys = [k for k in storage.list_keys(prefix) if not k.endswith("/")]
    groups, skipped = group_inputs(keys, args.content_type)
    groups = [g for g in groups if g.keys]
    if not groups:
        raise NotFoundError(
            f"no inputs under {prefix} (.jpg, .jpeg, .png, .webp, .json, .jsonl)",
            code="no_inputs",
        )
    if skipped:
        print(f"left out {skipped} file(s) under {prefix} with other suffixes")
    base = args.job_name or f"{args.endpoint_name or model}-{sm_api.stamp()}"
    names: list[str] = []
    for group in groups:
        name = _job_name(base, group.tag if len(groups) > 1 else None)
        if len(groups) == 1 and args.content_type:
            source = {"S3DataType": "S3Prefix", "S3Uri": prefix}
        else:
            manifest = [{"prefix": prefix}, *(k[len(prefix) :] for k in group.keys)]
            where = storage.join(args.output, f"_manifests/{name}.manifest")
            storage.write_bytes(
                where, json.dumps(manifest).encode(), content_type="application/json"
            )
            source = {"S3DataType": "ManifestFile", "S3Uri": where}
        sm_api.call(sm, "create_transform_job", **_job_request(args, name, model, group, source))
        names.append(name)
        what = "lines of JSON requests" if group.lines else group.content_type
        print(f"transform job {name}: {len(group.keys)} file(s) of {what}, model {model}")
    if args.no_wait:
        print(
            "not waiting; watch with: aws sagemaker describe-transform-job --transform-job-name NAME"
        )
        return 0
    infos = wait_for_jobs(sm, names, timeout_s=args.timeout, poll_s=args.poll)
    outputs = {k for k in storage.list_keys(args.output) if k.endswith(".out")}
    failed = 0
    for group, name in zip(groups, names, strict=True):
        info = infos[name]
        status = str(info["TransformJobStatus"])
        made = sum(
            1 for k in group.keys if storage.join(args.output, k[len(prefix) :] + ".out") in outputs
        )
        print(f"{name}: {status}; outputs {made} of {len(group.keys)} under {args.output}")
        if status != "Completed":
            failed += 1
            print(f"  reason: {info.get('FailureReason', 'none given')}")
    return 1 if failed else 0


def register_transform(deploy_subparsers: Any) -> None:
    """Add ``deploy transform`` to the ``deploy`` subcommands."""
    p = deploy_subparsers.add_parser(
        "transform", help="a Batch Transform job over stored photos or requests"
    )
    p.add_argument("--endpoint-name", help="use the model of this endpoint's live variant")
    p.add_argument("--model-name", help="use this SageMaker model")
    p.add_argument("--region", help="AWS region (default: the AWS environment)")
    p.add_argument("--input", required=True, help="s3:// prefix of the inputs")
    p.add_argument("--output", required=True, help="s3:// prefix for <input name>.out files")
    p.add_argument("--content-type", help="send every file as this type (default: by suffix)")
    p.add_argument("--all-items", action="store_true", help="every item of --artifact")
    p.add_argument("--artifact", help="with --all-items: the deployed artifact, locally")
    p.add_argument("--option", action="append", help="with --all-items: option key=value")
    p.add_argument("--instance-type", default="ml.m5.xlarge", help="default ml.m5.xlarge")
    p.add_argument("--instance-count", type=int, default=1)
    p.add_argument("--max-concurrent", type=int, help="requests at once per instance")
    p.add_argument("--max-payload-mb", type=int, default=6, help="largest input, MB (1..100)")
    p.add_argument("--env", action="append", help="container environment KEY=VALUE (repeat)")
    p.add_argument("--job-name", help="default: <endpoint or model>-<time>[-<type>]")
    p.add_argument("--no-wait", action="store_true", help="return once the jobs are created")
    # Bounded and finite, as deploy sync/async take them (review, session 53: --poll 0 made
    # 719 DescribeTransformJob calls in 2 s, --poll -1 a traceback after the job was created,
    # --timeout nan never timed out).
    from stygig.arguments import real
    from stygig.deploy.command import WAIT_S

    p.add_argument("--timeout", type=WAIT_S, default=6 * 3600.0, help="seconds to wait")
    p.add_argument(
        "--poll",
        type=real(0.05, 3600.0),
        default=30.0,
        help="seconds between status checks (0.05 to 3600)",
    )
    p.set_defaults(func=run_transform)

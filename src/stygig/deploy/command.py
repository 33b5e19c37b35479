"""``stygig package | deploy | alarms``: flags in, AWS calls out, text printed.

Region, role, image and bucket come from flags or the environment: ``AWS_DEFAULT_REGION`` /
``AWS_REGION`` (boto3's own lookup), ``STYGIG_SAGEMAKER_ROLE`` for the execution role and
``STYGIG_IMAGE_URI`` for the container image in ECR. Only the standard library is imported
here; boto3 and the rest load when a command runs.

Every step that creates something runs the preflight first (:mod:`stygig.deploy.preflight`)
and ends by pruning what the endpoint no longer runs on (:func:`stygig.deploy.sagemaker.prune`).
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Any

from stygig.arguments import real
from stygig.deploy.check_command import SYNC_DEFAULT_INSTANCE, cpu_guard, register_checks
from stygig.deploy.transform import register_transform

__all__ = [
    "deploy_from_args",
    "enable_scaling",
    "prune_endpoint",
    "register",
    "scaling_from_args",
]

ASYNC_DEFAULT_INSTANCE = "ml.m5.large"


#: Seconds to wait for an endpoint, and between its status checks: finite, so a NaN neither
#: waits for ever nor, as a poll, ends in a traceback after the endpoint was created (its
#: scaling and clean-up never ran); a poll of at least a second (0 asked AWS in a tight
#: loop). Review, session 49.
WAIT_S = real(0.0, 7 * 24 * 3600.0, above=True)
POLL_S = real(1.0, 3600.0)


#: SageMaker's rule for an endpoint's name (CreateEndpoint): checked before an archive is read
#: or a model made (review, session 49: a name AWS refuses failed after that work).
_ENDPOINT_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")


def endpoint_name(text: str) -> str:
    """An argument type: a name SageMaker takes for an endpoint."""
    if not _ENDPOINT_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"expected 1 to 63 letters, digits and hyphens, starting and ending with a letter "
            f"or digit (SageMaker's rule), got {text[:70]!a}"
        )
    return text


def register(subparsers: Any) -> None:
    """Add ``package``, ``deploy``, ``alarms`` (and, from check_command, ``invoke``, ``advise``)."""
    p = subparsers.add_parser("package", help="pack an artifact as SageMaker's model.tar.gz")
    p.add_argument("--artifact", required=True, help="artifact folder")
    p.add_argument("--out", default="model.tar.gz", help="archive to write")
    p.add_argument("--upload", help="s3://bucket/key (or prefix/) to upload the archive to")
    p.add_argument("--region", help="AWS region (default: the AWS environment)")
    p.set_defaults(func=run_package)

    p = subparsers.add_parser("deploy", help="create, update and delete SageMaker endpoints")
    deploy = p.add_subparsers(dest="deploy_command", required=True)
    _add_deploy_sync(deploy)
    _add_deploy_async(deploy)
    _add_deploy_update(deploy)
    register_transform(deploy)
    for name, text in (
        ("promote", "send all traffic to the candidate variant"),
        ("rollback", "send all traffic back to the live variant"),
        ("delete", "delete the endpoint, its scaling, alarms, configs and models"),
    ):
        q = deploy.add_parser(name, help=text)
        _common(q)
        q.add_argument("--no-wait", action="store_true", help="return without waiting")
        q.set_defaults(func=run_lifecycle, action=name)
    _add_deploy_pipeline(deploy)

    p = subparsers.add_parser("alarms", help="CloudWatch alarms for an endpoint")
    alarms = p.add_subparsers(dest="alarms_command", required=True)
    q = alarms.add_parser("create", help="alarms on ModelLatency p99, 4XX and 5XX rates")
    _common(q)
    q.add_argument("--variant", help="variant name (default: each variant of the endpoint)")
    # Thresholds that can fire (review, session 53: a 4XX rate of 5, a negative 5XX rate and a
    # NaN latency were stored as they came).
    share = real(0.0, 1.0, above=True)
    q.add_argument(
        "--latency-ms", type=real(0.0, above=True), default=1000.0, help="p99 ModelLatency limit"
    )
    q.add_argument("--rate-4xx", type=share, default=0.05, help="share of 4XX answers (0-1]")
    q.add_argument("--rate-5xx", type=share, default=0.01, help="share of 5XX answers (0-1]")
    q.add_argument("--sns-topic", help="SNS topic ARN notified on alarm and recovery")
    q.set_defaults(func=run_alarms)

    register_checks(subparsers)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--endpoint-name", required=True, type=endpoint_name)
    p.add_argument("--region", help="AWS region (default: the AWS environment)")


def _model_flags(p: argparse.ArgumentParser) -> None:
    """The container's settings and the preflight's, shared by sync, async, update, pipeline."""
    p.add_argument("--image-uri", help="container image in ECR (default $STYGIG_IMAGE_URI)")
    p.add_argument("--role", help="execution role ARN (default $STYGIG_SAGEMAKER_ROLE)")
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="the container's environment (repeatable; e.g. STYGIG_SERVE_ARGS='--max-batch 16'); "
        "visible to anyone who may describe the model: no secrets",
    )
    p.add_argument(
        "--verify-archive",
        choices=["auto", "full", "skip"],
        default="auto",
        help="how the preflight checks the model archive (see docs/deploy.md, Preflight)",
    )
    p.add_argument(
        "--verify-max-mb",
        type=real(0.0),
        default=2048.0,
        help="auto: read an archive without an upload record whole up to this size",
    )


def _create_flags(p: argparse.ArgumentParser, instance: str) -> None:
    _common(p)
    p.add_argument("--model-uri", required=True, help="s3://.../model.tar.gz (stygig package)")
    _model_flags(p)
    p.add_argument("--instance-type", default=instance, help=f"default {instance}")
    p.add_argument("--instance-count", type=int, default=1)
    p.add_argument(
        "--update",
        action="store_true",
        help="the endpoint exists: switch it to this model in place (same variant, its scaling "
        "and alarms kept; for a canary use `deploy update`)",
    )
    p.add_argument("--no-wait", action="store_true", help="return once creation has started")
    p.add_argument("--timeout", type=WAIT_S, default=3600.0, help="seconds to wait for InService")
    p.add_argument("--poll", type=POLL_S, default=15.0, help="seconds between status checks")


def _add_deploy_sync(deploy: Any) -> None:
    p = deploy.add_parser("sync", help="real-time endpoint (GPU by default)")
    _create_flags(p, SYNC_DEFAULT_INSTANCE)
    p.add_argument("--allow-cpu", action="store_true", help="real-time on a CPU instance")
    p.add_argument(
        "--encoder",
        help="the artifact's encoder as a matrix key, e.g. efficientnet-lite0 (default: "
        "--artifact's, else efficientnet-lite0): the CPU guard quotes its figures",
    )
    p.add_argument("--artifact", help="the artifact folder the archive was packed from")
    p.add_argument("--max-instances", type=int, help="turn on autoscaling up to N instances")
    p.add_argument("--min-instances", type=int, default=1)
    p.add_argument(
        "--target-invocations",
        type=float,
        help="autoscaling target: invocations per instance per minute (default: 70%% of the "
        "advisor's throughput for the instance type and the encoder named by --encoder or "
        "--artifact, as stygig advise prints it; neither named: the slowest encoder it lists)",
    )
    p.set_defaults(func=run_deploy, mode="sync")


def _add_deploy_async(deploy: Any) -> None:
    p = deploy.add_parser("async", help="asynchronous endpoint (CPU, scales to zero)")
    _create_flags(p, ASYNC_DEFAULT_INSTANCE)
    p.add_argument("--s3-output-path", required=True, help="s3:// prefix for results")
    p.add_argument("--s3-failure-path", help="s3:// prefix for failures")
    p.add_argument("--sns-success-topic", help="SNS topic ARN told of each result")
    p.add_argument("--sns-error-topic", help="SNS topic ARN told of each failure")
    p.add_argument("--max-concurrent", type=int, default=4, help="invocations per instance")
    p.add_argument("--min-instances", type=int, default=0, help="0 = scale to zero when idle")
    p.add_argument("--max-instances", type=int, default=2)
    p.add_argument("--backlog-target", type=float, default=5.0, help="queued requests/instance")
    p.add_argument("--no-autoscale", action="store_true", help="no scaling policies")
    p.set_defaults(func=run_deploy, mode="async")


def _add_deploy_update(deploy: Any) -> None:
    p = deploy.add_parser("update", help="blue/green: a candidate variant with a traffic share")
    _common(p)
    p.add_argument("--model-uri", help="the candidate's model.tar.gz (omit to change --traffic)")
    p.add_argument("--traffic", type=float, required=True, help="candidate's share, percent")
    _model_flags(p)
    p.add_argument("--instance-type", help="default: the live variant's")
    p.add_argument("--instance-count", type=int, help="default: the live variant's")
    p.add_argument("--no-wait", action="store_true")
    p.add_argument("--timeout", type=WAIT_S, default=3600.0)
    p.add_argument("--poll", type=POLL_S, default=15.0)
    p.set_defaults(func=run_update)


def _setting(value: str | None, env: str, what: str, flag: str) -> str:
    from stygig.errors import ConfigError

    found = value or os.environ.get(env)
    if not found:
        raise ConfigError(f"no {what}: pass {flag} or set {env}", code="missing_setting")
    return found


def run_package(args: argparse.Namespace) -> int:
    """Pack (and upload) an artifact; print the archive's checksum."""
    from stygig.deploy.package import package_artifact, upload, upload_target

    if args.upload:  # said before packing, not after: the scheme, bucket name and key
        upload_target(args.upload, Path(args.out).name)
    pkg = package_artifact(args.artifact, args.out)
    print(f"model archive: {pkg.path} ({pkg.bytes / 1e6:.2f} MB, {len(pkg.files)} files)")
    print(f"sha256: {pkg.sha256}")
    if args.upload:
        uri = upload(
            pkg.path,
            args.upload,
            region=args.region,
            sha256=pkg.sha256,
            manifest_sha256=pkg.manifest_sha256,
        )
        print(f"uploaded: {uri}")
        print(f"deploy with: stygig deploy sync --model-uri {uri} --endpoint-name NAME")
    return 0


def run_deploy(args: argparse.Namespace) -> int:
    """``deploy sync`` / ``deploy async``: preflight, model, config, endpoint, scaling."""
    done = deploy_from_args(args)
    if not args.no_wait:
        _print_how_to_invoke(done.endpoint_name, args.mode)
    return 0


def _check_names(aws: Any, image: str, role: str) -> None:
    """The image URI and role ARN, before any AWS call."""
    from stygig.deploy.preflight import check_image_uri, check_role_arn

    check_image_uri(image, getattr(getattr(aws.sm, "meta", None), "region_name", None))
    check_role_arn(role)


def _preflight(args: argparse.Namespace, aws: Any, image: str, role: str) -> None:
    """Image, role and model archive checked before anything is created (see preflight)."""
    from stygig.deploy.preflight import check_archive
    from stygig.deploy.sagemaker import aws_client

    _check_names(aws, image, role)
    archive = check_archive(
        aws_client("s3", args.region),
        args.model_uri,
        verify=args.verify_archive,
        max_bytes=int(args.verify_max_mb * 1024 * 1024),
        expect_sha256=getattr(args, "expect_sha256", None),
    )
    print(f"preflight: image {image} and role ok; {archive.describe()}")


def async_settings_from_args(args: argparse.Namespace) -> Any:
    """An asynchronous deployment's :class:`~stygig.deploy.sagemaker.AsyncSettings`, checked
    before anything is made (None for a real-time one)."""
    from stygig.deploy import sagemaker as sm_api
    from stygig.deploy.preflight import check_async_settings

    if args.mode != "async":
        return None
    settings = sm_api.AsyncSettings(
        args.s3_output_path,
        args.s3_failure_path,
        args.sns_success_topic,
        args.sns_error_topic,
        args.max_concurrent,
    )
    check_async_settings(settings, args.region)
    return settings


def deploy_from_args(args: argparse.Namespace) -> Any:
    """The work of ``deploy sync | async`` (and of the pipeline's deploy step).

    Returns the :class:`~stygig.deploy.sagemaker.Deployment` (InService unless ``--no-wait``).
    """
    from stygig.deploy import sagemaker as sm_api
    from stygig.deploy.preflight import check_endpoint_free
    from stygig.errors import InvalidOptionsError

    cpu_guard(args)
    image = _setting(args.image_uri, "STYGIG_IMAGE_URI", "container image", "--image-uri")
    role = _setting(args.role, "STYGIG_SAGEMAKER_ROLE", "execution role", "--role")
    env = sm_api.parse_environment(args.env)
    async_settings = async_settings_from_args(args)
    scaling_wanted = scaling_from_args(args) is not None  # checked before anything is made
    if scaling_wanted and args.no_wait:
        raise InvalidOptionsError("autoscaling needs the endpoint InService: drop --no-wait")
    if args.update and args.no_wait:
        raise InvalidOptionsError("--update waits to check the switch and clean up: drop --no-wait")
    aws = sm_api.Clients.connect(args.region)
    _check_names(aws, image, role)
    existing = check_endpoint_free(aws.sm, args.endpoint_name, update=args.update)
    _preflight(args, aws, image, role)
    waiting = sm_api.Waiting(args.poll, args.timeout)
    if existing is not None:
        done = sm_api.replace_endpoint(
            aws,
            endpoint_name=args.endpoint_name,
            model_uri=args.model_uri,
            image_uri=image,
            role_arn=role,
            instance_type=args.instance_type,
            instance_count=args.instance_count,
            async_settings=async_settings,
            environment=env,
            waiting=waiting,
        )
        print(
            f"switched {done.endpoint_name} to model {done.model_name} (config {done.config_name})"
        )
    else:
        done = sm_api.deploy_endpoint(
            aws.sm,
            endpoint_name=args.endpoint_name,
            model_uri=args.model_uri,
            image_uri=image,
            role_arn=role,
            instance_type=args.instance_type,
            instance_count=args.instance_count,
            async_settings=async_settings,
            environment=env,
        )
        print(f"created model {done.model_name}, endpoint config {done.config_name}")
    print(f"endpoint {done.endpoint_name}: {args.instance_count} x {args.instance_type}")
    if args.mode == "async":
        print(
            f"async limits: bodies up to {sm_api.ASYNC_MAX_BODY_MB} MB, "
            f"{sm_api.ASYNC_TIMEOUT_S} s per invocation (STYGIG_SERVE_ARGS)"
        )
    if args.no_wait:
        print(
            f"not waiting; watch it with: aws sagemaker describe-endpoint --endpoint-name {done.endpoint_name}"
        )
        return done
    info = sm_api.wait_for_endpoint(
        aws.sm, done.endpoint_name, poll_s=args.poll, timeout_s=args.timeout
    )
    print(f"status: {info['EndpointStatus']}  arn: {info.get('EndpointArn', '-')}")
    if scaling_wanted:
        enable_scaling(args, aws, done)
    prune_endpoint(aws, done.endpoint_name)
    return done


def scaling_from_args(args: argparse.Namespace) -> Any:
    """The autoscaling the flags ask for (a :class:`~stygig.deploy.autoscaling.Scaling`;
    None: none), its bounds and target checked. Called before anything is created: checked
    only once the endpoint was InService (5-10 minutes, billed), a bad bound left it without
    scaling, and the same command then could not run again (review, session 53)."""
    from stygig.deploy.autoscaling import Scaling
    from stygig.errors import InvalidOptionsError

    if args.mode == "sync":
        if args.max_instances is None:
            return None
        target, _ = sync_scaling_target(args)
        scaling = Scaling(args.min_instances, args.max_instances, target)
        if scaling.min_instances < 1:
            raise InvalidOptionsError("a real-time endpoint needs --min-instances >= 1")
        if args.instance_count > scaling.max_instances:
            raise InvalidOptionsError(
                f"--instance-count {args.instance_count} is above --max-instances "
                f"{scaling.max_instances}: autoscaling would take it down at once"
            )
        return scaling
    if getattr(args, "no_autoscale", False):
        return None
    return Scaling(args.min_instances, args.max_instances, args.backlog_target)


def sync_scaling_target(args: argparse.Namespace) -> tuple[float, str]:
    """A real-time endpoint's autoscaling target and where it comes from: ``--target-
    invocations``, else the one ``stygig advise`` prints for the instance type and encoder
    (the SageMaker guide's fixed 70 a minute kept an instance at 1-2 % of what it serves:
    review, session 53)."""
    from stygig.deploy import advisor
    from stygig.errors import InvalidOptionsError

    if args.target_invocations is not None:
        return args.target_invocations, "--target-invocations"
    chosen = getattr(args, "encoder", None) or getattr(args, "model", None)
    artifact = getattr(args, "artifact", None)
    if chosen or artifact:
        model, why = advisor.resolve_model(chosen, artifact)
    else:  # the encoder unknown: the slowest one listed there, so no instance is overloaded
        model, why = None, "the encoder unknown: name it with --encoder or --artifact"
    advised = advisor.scaling_target(advisor.load_matrix(), args.instance_type, model)
    if advised is None:
        raise InvalidOptionsError(
            f"the advisor has no figures for {model or 'any encoder'} on {args.instance_type}: pass "
            "--target-invocations N (invocations per instance per minute the instance serves "
            "at the utilisation you want)"
        )
    target, how = advised
    return target, f"{how}; {why}"


def enable_scaling(args: argparse.Namespace, aws: Any, done: Any) -> None:
    """The autoscaling the flags ask for, on the deployed variant (the endpoint InService)."""
    from stygig.deploy.autoscaling import enable_async_scaling, enable_autoscaling

    scaling = scaling_from_args(args)
    if args.mode == "sync":
        enable_autoscaling(aws.aas, done.endpoint_name, done.variant_name, scaling)
        print(
            f"autoscaling: {scaling.min_instances}..{scaling.max_instances} instances, "
            f"target {scaling.target:g} invocations per instance per minute "
            f"({sync_scaling_target(args)[1]})"
        )
        return
    enable_async_scaling(aws.aas, aws.cw, done.endpoint_name, done.variant_name, scaling)
    print(
        f"autoscaling: {scaling.min_instances}..{scaling.max_instances} instances, "
        f"target backlog {scaling.target:g} per instance, wakes from zero on a backlog"
    )


def prune_endpoint(aws: Any, endpoint_name: str) -> None:
    """Delete the configs and models the endpoint left behind (once it is InService)."""
    from stygig.deploy.sagemaker import prune

    for line in prune(aws.sm, endpoint_name):
        print(f"pruned {line}")


def _print_how_to_invoke(endpoint: str, mode: str) -> None:
    if mode == "async":
        print(
            "invoke: aws sagemaker-runtime invoke-endpoint-async --endpoint-name "
            f"{endpoint} --input-location s3://BUCKET/photo.jpg --content-type image/jpeg"
        )
        return
    print(f"invoke: stygig invoke --endpoint-name {endpoint} --image photo.jpg")
    print(
        f"    or: aws sagemaker-runtime invoke-endpoint --endpoint-name {endpoint} "
        "--content-type image/jpeg --body fileb://photo.jpg out.json"
    )


def run_update(args: argparse.Namespace) -> int:
    """``deploy update``: start a candidate with a traffic share, or change the share."""
    from stygig.deploy import sagemaker as sm_api
    from stygig.errors import InvalidOptionsError

    aws = sm_api.Clients.connect(args.region)
    waiting = None if args.no_wait else sm_api.Waiting(args.poll, args.timeout)
    if args.model_uri:
        image = _setting(args.image_uri, "STYGIG_IMAGE_URI", "container image", "--image-uri")
        role = _setting(args.role, "STYGIG_SAGEMAKER_ROLE", "execution role", "--role")
        env = sm_api.parse_environment(args.env)
        _preflight(args, aws, image, role)
        done = sm_api.start_canary(
            aws,
            endpoint_name=args.endpoint_name,
            model_uri=args.model_uri,
            image_uri=image,
            role_arn=role,
            traffic_percent=args.traffic,
            instance_type=args.instance_type,
            instance_count=args.instance_count,
            environment=env,
            waiting=waiting,
        )
        print(f"candidate variant {done.variant_name} (model {done.model_name}): {args.traffic:g}%")
    else:
        if args.env:
            raise InvalidOptionsError("--env sets a new model's environment: give --model-uri")
        sm_api.set_traffic(aws.sm, args.endpoint_name, args.traffic)
        print(f"candidate's share of {args.endpoint_name}: {args.traffic:g}%")
        if waiting is not None:
            sm_api.wait_for_endpoint(
                aws.sm, args.endpoint_name, poll_s=args.poll, timeout_s=args.timeout
            )
    if waiting is not None:
        print("status: InService")
    prune_endpoint(aws, args.endpoint_name)
    print(
        f"then: stygig deploy promote --endpoint-name {args.endpoint_name}  "
        f"or: stygig deploy rollback --endpoint-name {args.endpoint_name}"
    )
    return 0


def run_lifecycle(args: argparse.Namespace) -> int:
    """``deploy promote | rollback | delete``."""
    from stygig.deploy import sagemaker as sm_api

    aws = sm_api.Clients.connect(args.region)
    if args.action == "delete":
        kept: list[str] = []
        for line in sm_api.delete_endpoint(aws, args.endpoint_name, kept=kept):
            print(f"deleted {line}")
        for line in kept:
            print(f"kept {line}")
        return 0
    waiting = None if args.no_wait else sm_api.Waiting()
    step = sm_api.promote if args.action == "promote" else sm_api.rollback
    keep = step(aws, args.endpoint_name, waiting)
    print(f"{args.action}: all traffic to variant {keep.name} (model {keep.model_name})")
    if waiting is not None:
        print("status: InService")
    prune_endpoint(aws, args.endpoint_name)
    return 0


def _add_deploy_pipeline(deploy: Any) -> None:
    p = deploy.add_parser(
        "pipeline",
        help="build -> package -> upload -> deploy -> wait -> invoke check, resumable",
    )
    _common(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--catalog", help="catalogue to build the artifact from (.csv or .jsonl)")
    src.add_argument("--artifact", help="an artifact folder already built (skips the build)")
    p.add_argument("--images", help="folder the catalogue's image paths are relative to")
    p.add_argument("--format", default="auto", choices=["auto", "generic", "kaggle", "mango"])
    p.add_argument("--encoder", default="efficientnet-lite0")
    p.add_argument("--runtime", default="auto", choices=["auto", "onnx", "numpy", "torch"])
    p.add_argument("--work-dir", help="artifact, archive and state file (default build/pipeline/E)")
    p.add_argument("--upload", required=True, help="s3://bucket/prefix/ for the archive")
    p.add_argument("--check-image", help="photo sent to the endpoint as the last step")
    p.add_argument(
        "--check-timeout",
        type=float,
        default=900.0,
        help="async: seconds to wait for the check's answer (an instance may wake from zero)",
    )
    p.add_argument("--restart", action="store_true", help="ignore the state file: redo each step")
    p.add_argument("--mode", choices=["sync", "async"], default="sync")
    _model_flags(p)
    p.add_argument("--instance-type", help="default ml.g4dn.xlarge (sync) or ml.m5.large (async)")
    p.add_argument("--instance-count", type=int, default=1)
    p.add_argument("--update", action="store_true", help="switch an existing endpoint in place")
    p.add_argument("--allow-cpu", action="store_true", help="sync: real-time on a CPU instance")
    p.add_argument("--max-instances", type=int, help="autoscaling bound (async default 2)")
    p.add_argument("--min-instances", type=int, help="default 1 (sync) or 0 (async)")
    p.add_argument(
        "--target-invocations",
        type=float,
        help="sync: default 70%% of the advisor's throughput for the instance and encoder",
    )
    p.add_argument("--s3-output-path", help="async: s3:// prefix for results (required)")
    p.add_argument("--s3-failure-path")
    p.add_argument("--sns-success-topic")
    p.add_argument("--sns-error-topic")
    p.add_argument("--max-concurrent", type=int, default=4)
    p.add_argument("--backlog-target", type=float, default=5.0)
    p.add_argument("--no-autoscale", action="store_true", help="async: no scaling policies")
    p.add_argument("--timeout", type=WAIT_S, default=3600.0, help="seconds to wait for InService")
    p.add_argument("--poll", type=POLL_S, default=15.0, help="seconds between status checks")
    p.set_defaults(func=run_pipeline)


def run_pipeline(args: argparse.Namespace) -> int:
    """``deploy pipeline``: the V4 guide's run_pipeline.py as one resumable command."""
    from stygig.deploy.pipeline import run_pipeline as run

    return run(args)


def run_alarms(args: argparse.Namespace) -> int:
    """``alarms create``: three alarms per variant."""
    from stygig.deploy import sagemaker as sm_api
    from stygig.deploy.alarms import AlarmThresholds, create_alarms
    from stygig.errors import InvalidOptionsError

    sm = sm_api.aws_client("sagemaker", args.region)
    live = [v.name for v in sm_api.live_config(sm, args.endpoint_name)[1]]
    if args.variant and args.variant not in live:
        # Alarms on a variant that reports nothing stay OK for ever (missing data is not
        # breaching): false assurance (review, session 53).
        raise InvalidOptionsError(
            f"--variant: endpoint {args.endpoint_name} has no such variant; its variants: "
            f"{', '.join(live)}"
        )
    variants = [args.variant] if args.variant else live
    cw = sm_api.aws_client("cloudwatch", args.region)
    thresholds = AlarmThresholds(args.latency_ms, args.rate_4xx, args.rate_5xx)
    for variant in variants:
        for name in create_alarms(cw, args.endpoint_name, variant, thresholds, args.sns_topic):
            print(f"alarm: {name}")
    if not args.sns_topic:
        print("note: no --sns-topic: the alarms change state in CloudWatch and notify nobody")
    return 0

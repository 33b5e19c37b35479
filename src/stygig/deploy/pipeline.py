"""``stygig deploy pipeline``: the V4 guide's ``run_pipeline.py`` as one resumable command.

Six steps, each printed as it runs: **build** (catalogue -> artifact; or ``--artifact``) ->
**package** (``model.tar.gz``) -> **upload** (to ``<prefix>/<sha256[:12]>/model.tar.gz``, so a
new archive never overwrites the one a live endpoint scales out from) -> **deploy** (preflight,
model, config, endpoint; ``--update`` switches an existing endpoint in place) -> **wait**
(InService, then the autoscaling asked for, then pruning) -> **check** (one photo through a
real-time endpoint, the response checked as ``stygig invoke`` does).

The state file (``<work-dir>/pipeline-state.json``) records each step that succeeded with
what went in and what came out (artifact path and manifest checksum, archive path and
sha256, model URI, endpoint, config and model names). A rerun skips a step when its inputs
are the same and its outputs still hold (the artifact still verifies, the archive still has
its checksum, the S3 object still carries it, the endpoint still runs that config); a step
that runs again and produces something new (another checksum, another URI) changes the
inputs of the steps after it, so they run again too. ``wait`` and ``check`` always run:
they are the checks. What the state cannot see: photos changed under ``--images`` without a
change to the catalogue file (``--restart`` redoes everything).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stygig.errors import InvalidOptionsError, StorageError, StygigError
from stygig.storage import parse

__all__ = ["STATE_FILE", "PipelineState", "run_pipeline"]

STATE_FILE = "pipeline-state.json"
_VERSION = 1
STEPS = ("build", "package", "upload", "deploy", "wait", "check")
_PHOTO_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}
_PHOTO_TYPES[".webp"] = "image/webp"


class PipelineState:
    """The steps that succeeded, with their inputs and outputs, kept in a JSON file."""

    def __init__(self, path: Path, steps: dict[str, dict[str, Any]] | None = None) -> None:
        self.path = path
        self.steps: dict[str, dict[str, Any]] = steps or {}

    @classmethod
    def load(cls, path: Path, *, restart: bool = False) -> PipelineState:
        """The state at ``path``; empty when there is none, it is unreadable, or ``restart``."""
        if restart or not path.is_file():
            return cls(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return cls(path)
        if not isinstance(data, dict) or data.get("version") != _VERSION:
            return cls(path)
        steps = data.get("steps")
        return cls(path, steps if isinstance(steps, dict) else {})

    def outputs(
        self, step: str, inputs: dict[str, Any], still_valid: Callable[[dict[str, Any]], bool]
    ) -> dict[str, Any] | None:
        """The recorded outputs of ``step`` when its inputs match and they still hold.

        Otherwise None (the step must run). Later steps need no invalidation here: their
        inputs hold this step's outputs (a checksum, a URI), so a step that produces
        something new changes them, and one that reproduces the same output leaves them be.
        """
        record = self.steps.get(step)
        if isinstance(record, dict) and record.get("inputs") == inputs:
            outputs = record.get("outputs")
            try:
                if isinstance(outputs, dict) and still_valid(outputs):
                    return outputs
            except StygigError:
                pass
        self.steps.pop(step, None)
        return None

    def forget_from(self, step: str) -> None:
        """Forget ``step`` and the steps after it."""
        for later in STEPS[STEPS.index(step) :]:
            self.steps.pop(later, None)

    def record(self, step: str, inputs: dict[str, Any], outputs: dict[str, Any]) -> None:
        """Record a step that succeeded and write the file (atomically)."""
        self.steps[step] = {"inputs": inputs, "outputs": outputs}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.partial")
        text = json.dumps({"version": _VERSION, "steps": self.steps}, indent=2, sort_keys=True)
        try:
            tmp.write_text(text + "\n", encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as e:
            raise StorageError(f"cannot write the pipeline state {self.path.name}: {e}") from e


def _say(n: int, step: str, text: str) -> None:
    print(f"[{n}/{len(STEPS)}] {step}: {text}", flush=True)


def _artifact_holds(artifact: Path, manifest_sha256: str) -> bool:
    from stygig.artifact import file_sha256, read_manifest, verify_files

    verify_files(artifact, read_manifest(artifact))
    return file_sha256(artifact / "manifest.json") == manifest_sha256


def _build(args: argparse.Namespace, work: Path, state: PipelineState) -> dict[str, Any]:
    from stygig.artifact import file_sha256

    if args.artifact:
        artifact = Path(args.artifact).resolve()
        inputs: dict[str, Any] = {"artifact": str(artifact)}
    else:
        catalog = Path(args.catalog)
        if not catalog.is_file():
            raise InvalidOptionsError(f"--catalog {catalog}: no such file")
        artifact = (work / "artifact").resolve()
        inputs = {
            "catalog": str(catalog.resolve()),
            "catalog_sha256": file_sha256(catalog),
            "images": str(Path(args.images).resolve()) if args.images else None,
            "format": args.format,
            "encoder": args.encoder,
            "runtime": args.runtime,
        }
    done = state.outputs(
        "build", inputs, lambda o: _artifact_holds(Path(o["artifact"]), o["manifest_sha256"])
    )
    if done is not None:
        _say(1, "build", f"skipped: {done['artifact']} still verifies")
        return done
    if args.artifact:
        _say(1, "build", f"using {artifact} (checked against its manifest)")
        from stygig.artifact import read_manifest, verify_files

        verify_files(artifact, read_manifest(artifact))
    else:
        from stygig.build import build_artifact, make_build_encoder

        _say(1, "build", f"{args.catalog} with {args.encoder} -> {artifact}")
        with make_build_encoder(args.encoder, runtime=args.runtime) as (encoder, extra_files):
            result = build_artifact(
                args.catalog,
                artifact,
                encoder,
                layout=args.format,
                images_dir=args.images,
                extra_files=extra_files,
                progress=False,
            )
        print(f"    items: {result.items}, rejected: {sum(result.rejects.values())}")
    outputs = {
        "artifact": str(artifact),
        "manifest_sha256": file_sha256(artifact / "manifest.json"),
    }
    state.record("build", inputs, outputs)
    return outputs


def _package(work: Path, built: dict[str, Any], state: PipelineState) -> dict[str, Any]:
    from stygig.artifact import file_sha256
    from stygig.deploy.package import package_artifact

    inputs = {"manifest_sha256": built["manifest_sha256"]}
    archive = (work / "model.tar.gz").resolve()

    def holds(o: dict[str, Any]) -> bool:
        path = Path(o["path"])
        return path.is_file() and file_sha256(path) == o["sha256"]

    done = state.outputs("package", inputs, holds)
    if done is not None:
        _say(2, "package", f"skipped: {done['path']} still has sha256 {done['sha256'][:12]}...")
        return done
    pkg = package_artifact(built["artifact"], archive)
    _say(2, "package", f"{pkg.path} ({pkg.bytes / 1e6:.2f} MB), sha256 {pkg.sha256}")
    outputs = {
        "path": str(pkg.path),
        "sha256": pkg.sha256,
        "manifest_sha256": pkg.manifest_sha256,
    }
    state.record("package", inputs, outputs)
    return outputs


def _model_uri(prefix: str, sha256: str) -> str:
    if not prefix.startswith("s3://"):
        raise InvalidOptionsError(f"--upload must be an s3:// prefix, not {prefix[:200]!r}")
    uri = f"{prefix.rstrip('/')}/{sha256[:12]}/model.tar.gz"
    parse(uri)  # a bucket name or key S3 would refuse: said before anything is built
    return uri


def _upload(args: argparse.Namespace, packed: dict[str, Any], state: PipelineState) -> str:
    from stygig.deploy.package import upload
    from stygig.deploy.preflight import check_archive
    from stygig.deploy.sagemaker import aws_client

    uri = _model_uri(args.upload, packed["sha256"])
    inputs = {"sha256": packed["sha256"], "model_uri": uri}

    def holds(o: dict[str, Any]) -> bool:
        s3 = aws_client("s3", args.region)
        check_archive(s3, o["model_uri"], verify="auto", expect_sha256=packed["sha256"])
        return True

    done = state.outputs("upload", inputs, holds)
    if done is not None:
        _say(3, "upload", f"skipped: {uri} is there with that sha256")
        return uri
    made = upload(
        packed["path"],
        uri,
        region=args.region,
        sha256=packed["sha256"],
        manifest_sha256=packed["manifest_sha256"],
    )
    _say(3, "upload", made)
    state.record("upload", inputs, {"model_uri": made})
    return made


def _deploy_args(args: argparse.Namespace, uri: str, sha256: str) -> argparse.Namespace:
    """The ``deploy sync|async`` arguments of this run, scaling left to the wait step."""
    ns = argparse.Namespace(**vars(args))
    sync = args.mode == "sync"
    ns.model_uri, ns.expect_sha256 = uri, sha256
    if ns.instance_type is None:
        from stygig.deploy.check_command import SYNC_DEFAULT_INSTANCE
        from stygig.deploy.command import ASYNC_DEFAULT_INSTANCE

        ns.instance_type = SYNC_DEFAULT_INSTANCE if sync else ASYNC_DEFAULT_INSTANCE
    if ns.min_instances is None:
        ns.min_instances = 1 if sync else 0
    if ns.max_instances is None and not sync:
        ns.max_instances = 2
    return ns


def _exists(sm: Any, endpoint: str) -> bool:
    from stygig.deploy.sagemaker import call
    from stygig.errors import NotFoundError

    try:
        call(sm, "describe_endpoint", EndpointName=endpoint)
    except NotFoundError:
        return False
    return True


def _runs(sm: Any, endpoint: str, config: str, uri: str) -> bool:
    """The endpoint runs ``config``, whose model serves ``uri``."""
    from stygig.deploy.sagemaker import call, live_config

    current, variants = live_config(sm, endpoint)
    if current["EndpointConfigName"] != config or len(variants) != 1:
        return False
    model = call(sm, "describe_model", ModelName=variants[0].model_name)
    return bool((model.get("PrimaryContainer") or {}).get("ModelDataUrl") == uri)


def _deploy(
    args: argparse.Namespace, ns: argparse.Namespace, aws: Any, state: PipelineState
) -> dict[str, Any]:
    from stygig.deploy.command import deploy_from_args

    inputs = {
        "endpoint": args.endpoint_name,
        "model_uri": ns.model_uri,
        "mode": args.mode,
        "instance_type": ns.instance_type,
        "instance_count": args.instance_count,
        "env": sorted(args.env),
    }
    done = state.outputs(
        "deploy", inputs, lambda o: _runs(aws.sm, o["endpoint"], o["config"], ns.model_uri)
    )
    if done is not None:
        _say(4, "deploy", f"skipped: {done['endpoint']} runs config {done['config']}")
        return done
    _say(4, "deploy", f"{args.mode} endpoint {args.endpoint_name} on {ns.model_uri}")
    step = argparse.Namespace(**vars(ns))
    # --update on an endpoint that does not exist yet creates it: a pipeline's first run.
    step.update = args.update and _exists(aws.sm, args.endpoint_name)
    step.no_wait = not step.update  # an update waits itself; a creation waits in the next step
    step.max_instances = None if args.mode == "sync" else step.max_instances
    step.no_autoscale = True
    deployment = deploy_from_args(step)
    outputs = {
        "endpoint": deployment.endpoint_name,
        "config": deployment.config_name,
        "model": deployment.model_name,
        "variant": deployment.variant_name,
    }
    state.record("deploy", inputs, outputs)
    return outputs


def _wait(
    args: argparse.Namespace,
    ns: argparse.Namespace,
    aws: Any,
    deployed: dict[str, Any],
    state: PipelineState,
) -> None:
    from stygig.deploy.autoscaling import read_scaling
    from stygig.deploy.command import enable_scaling, prune_endpoint
    from stygig.deploy.sagemaker import Deployment, wait_for_endpoint
    from stygig.errors import ServerError

    _say(5, "wait", f"for {deployed['endpoint']} to be InService")
    info = wait_for_endpoint(aws.sm, deployed["endpoint"], poll_s=args.poll, timeout_s=args.timeout)
    if info.get("EndpointConfigName") != deployed["config"]:
        state.forget_from("deploy")
        raise ServerError(
            f"endpoint {deployed['endpoint']} runs {info.get('EndpointConfigName')}, not "
            f"{deployed['config']}: someone changed it; rerun the pipeline",
            code="pipeline_endpoint_changed",
        )
    wanted = (args.mode == "sync" and ns.max_instances) or (
        args.mode == "async" and not args.no_autoscale
    )
    scaling = read_scaling(aws.aas, deployed["endpoint"], deployed["variant"])
    if wanted and (
        scaling is None
        or (scaling.min_capacity, scaling.max_capacity)
        != (
            ns.min_instances,
            ns.max_instances,
        )
    ):
        done = Deployment(
            deployed["endpoint"], deployed["config"], deployed["model"], deployed["variant"]
        )
        enable_scaling(ns, aws, done)
    prune_endpoint(aws, deployed["endpoint"])
    state.record("wait", {"config": deployed["config"]}, {"status": info["EndpointStatus"]})


def _check(args: argparse.Namespace, endpoint: str) -> bool:
    from stygig.deploy.invoke import check_response, invoke_endpoint
    from stygig.deploy.sagemaker import aws_client

    if not args.check_image:
        _say(6, "check", "skipped: no --check-image")
        return True
    photo = Path(args.check_image)
    kind = _PHOTO_TYPES.get(photo.suffix.lower())
    if not photo.is_file() or kind is None:
        raise InvalidOptionsError(f"--check-image {photo.name}: not a .jpg, .png or .webp file")
    if args.mode == "async":
        rec, ms = _check_async(args, endpoint, photo.read_bytes(), kind, photo.suffix.lower())
    else:
        runtime = aws_client("sagemaker-runtime", args.region)
        rec, ms = invoke_endpoint(runtime, endpoint, photo.read_bytes(), kind)
    problems = check_response(rec)
    for problem in problems:
        print(f"    check failed: {problem}")
    verdict = "failed" if problems else "ok (rgb triples, top-5 votes, compatibility boost)"
    _say(
        6, "check", f"{photo.name} -> {len(rec.get('items') or [])} items in {ms:.0f} ms: {verdict}"
    )
    return not problems


def _check_async(
    args: argparse.Namespace, endpoint: str, body: bytes, kind: str, suffix: str
) -> tuple[dict[str, Any], float]:
    """The check photo through the asynchronous endpoint: uploaded beside the outputs
    (``<s3-output-path>/_pipeline-check/``), invoked, its result awaited (at most
    ``--check-timeout`` seconds, an instance may first have to wake from zero)."""
    from stygig.deploy.invoke import _parse
    from stygig.errors import ServerError
    from stygig.jobs.sagemaker_async import AsyncEndpoint

    prefix = args.s3_output_path.rstrip("/") + "/_pipeline-check/"
    client = AsyncEndpoint(endpoint, region=args.region, input_prefix=prefix)
    t0 = time.perf_counter()
    job = client.submit(body, kind, suffix=suffix)
    outcome = client.wait([job], timeout_s=args.check_timeout)[job.inference_id]
    ms = (time.perf_counter() - t0) * 1e3
    if outcome.error is not None:
        raise outcome.error
    if outcome.result is None:
        raise ServerError(
            f"no answer from {endpoint} within {args.check_timeout:g} s (still pending: "
            f"{job.output_location})",
            code="endpoint_timeout",
        )
    return _parse(outcome.result, f"endpoint {endpoint}"), ms


def run_pipeline(args: argparse.Namespace) -> int:
    """Run (or resume) the six steps; 0 when the check passes, 1 when it finds a problem."""
    from stygig.deploy.command import async_settings_from_args, scaling_from_args
    from stygig.deploy.sagemaker import Clients

    _model_uri(args.upload, "0" * 64)  # refuse a bad prefix before building anything
    if args.mode == "async" and not args.s3_output_path:
        raise InvalidOptionsError("--mode async needs --s3-output-path")
    # The deploy and scaling steps' flags, checked before anything is built (its step 5 failed
    # after step 4 had made the endpoint: review, session 53).
    early = _deploy_args(args, "", "0" * 64)
    async_settings_from_args(early)
    scaling_from_args(early)
    if args.check_image and not Path(args.check_image).is_file():  # step 6's photo, now
        raise InvalidOptionsError(f"--check-image {args.check_image}: no such file")
    work = Path(args.work_dir or Path("build") / "pipeline" / args.endpoint_name)
    state = PipelineState.load(work / STATE_FILE, restart=args.restart)
    print(f"pipeline state: {state.path}")
    built = _build(args, work, state)
    packed = _package(work, built, state)
    uri = _upload(args, packed, state)
    ns = _deploy_args(args, uri, packed["sha256"])
    aws = Clients.connect(args.region)
    deployed = _deploy(args, ns, aws, state)
    _wait(args, ns, aws, deployed, state)
    ok = _check(args, deployed["endpoint"])
    if ok:
        state.record("check", {"config": deployed["config"]}, {"ok": True})
    print(f"endpoint {deployed['endpoint']}: {'ready' if ok else 'deployed, but the check failed'}")
    return 0 if ok else 1

"""The ``--engine`` flags of ``stygig build``, ``batch`` and ``serve``, and their Ray dispatch.

Standard library only at import time: ``--engine local`` (the default) never imports Ray, and
``stygig build`` / ``inspect`` keep running on the core install.

::

    stygig build --catalog styles.csv --images photos/ --out art --engine ray [--address auto]
    stygig batch --artifact art --all-items --output s3://b/recs/ --engine ray
    stygig serve --artifact art --engine ray --replicas 2
"""

from __future__ import annotations

import argparse
from typing import Any

from stygig.arguments import positive, real
from stygig.distributed.cluster import RAY_DEVICES
from stygig.errors import InvalidOptionsError

__all__ = [
    "add_engine_flags",
    "run_batch_ray_command",
    "run_build_ray_command",
    "run_serve_ray_command",
    "wants_ray",
]

_COMMANDS = ("build", "batch", "serve")


def add_engine_flags(parser: argparse.ArgumentParser, command: str = "build") -> None:
    """Add ``--engine`` and the Ray flags to ``command``'s parser (build, batch or serve)."""
    if command not in _COMMANDS:
        raise ValueError(f"command must be one of {_COMMANDS}")
    g = parser.add_argument_group("engine (Ray: pip install 'stygig[ray]'; see docs/ray.md)")
    g.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="local: this process (default); ray: a Ray cluster",
    )
    g.add_argument(
        "--address",
        default=None,
        help="with --engine ray: the cluster (auto, host:6379, ray://host:10001; default "
        "$RAY_ADDRESS, else a local cluster of this machine's cores for this run)",
    )
    if command in ("build", "batch"):
        g.add_argument(
            "--ray-actors",
            type=positive,
            default=None,
            help="with --engine ray: encoder actors (default one per GPU when they run on "
            "GPUs, else one per --ray-actor-cpus CPUs of the cluster)",
        )
        g.add_argument(
            "--ray-actor-cpus",
            type=CPUS,
            default=1.0,
            help="with --engine ray: CPUs (and encoder threads) per actor (default 1)",
        )
        g.add_argument(
            "--ray-device",
            choices=RAY_DEVICES,
            default="auto",
            help="with --engine ray: where the encoder actors run: auto (a GPU each when the "
            "cluster has GPUs, else CPUs; default), cpu, or cuda (refused on a cluster without "
            "GPUs)",
        )
    if command == "build":
        g.add_argument(
            "--ray-stage",
            default=None,
            help="with --engine ray: where per-block parts go, reachable from every node "
            "(s3:// prefix or shared folder; default <out>.ray-parts, removed after the build)",
        )
    if command == "serve":
        g.add_argument(
            "--replicas",
            type=positive,
            default=1,
            help="with --engine ray: replicas of the server",
        )
        g.add_argument(
            "--replica-cpus",
            type=CPUS,
            default=1.0,
            help="with --engine ray: CPUs per replica (default 1)",
        )


#: CPUs of a Ray actor or replica: Ray counts them in ten-thousandths, and a NaN or an
#: infinity passed every check to end in a traceback after the run record was written
#: (review, session 49).
CPUS = real(0.001, 1024.0)


def wants_ray(args: argparse.Namespace) -> bool:
    """Whether the command was asked to run on Ray."""
    return getattr(args, "engine", "local") == "ray"


def _positive(value: float | None, flag: str) -> None:
    if value is not None and value <= 0:
        raise InvalidOptionsError(f"{flag} must be positive")


def _check_ray_flags(args: argparse.Namespace) -> None:
    _positive(args.ray_actors, "--ray-actors")
    _positive(args.ray_actor_cpus, "--ray-actor-cpus")
    _positive(args.batch_size, "--batch-size")


def run_build_ray_command(args: argparse.Namespace) -> int:
    """``stygig build --engine ray``: the flags of ``stygig build``, the work on Ray."""
    _check_ray_flags(args)
    from stygig.build import print_build_result
    from stygig.catalog import Taxonomy
    from stygig.cli import build_encoder_from_args, build_options
    from stygig.distributed.cluster import import_ray, ray_session, resources

    import_ray()  # a missing extra is said before any model is exported
    from stygig.distributed.ray_build import build_artifact_ray

    taxonomy = Taxonomy.load(args.taxonomy) if args.taxonomy else None
    with ray_session(args.address):
        # --ray-device cuda on a cluster without GPUs: said before the catalogue is read for an
        # int8 calibration or a model exported (the encoder's own check waits for the build).
        resources().actor_device(args.ray_device)
        with build_encoder_from_args(args, taxonomy) as (encoder, extra_files):
            result = build_artifact_ray(
                args.catalog,
                args.out,
                encoder,
                weights=args.weights,
                random_weights=args.random_weights,
                **build_options(args, taxonomy, extra_files),
                actors=args.ray_actors,
                actor_cpus=args.ray_actor_cpus,
                device=args.ray_device,
                stage=args.ray_stage,
            )
    ray_info = result.manifest.get("build", {}).get("ray", {})
    print_build_result(
        result,
        f"ray: {ray_info.get('actors')} encoder actor(s) on {ray_info.get('device')}, "
        f"{ray_info.get('parts')} parts",
    )
    return 0


def run_batch_ray_command(
    args: argparse.Namespace, options: dict[str, Any], change_log: str | None = None
) -> Any:
    """``stygig batch --engine ray`` (in-process artifact only): the run's summary, answered
    with ``change_log``'s changes applied (``None``: the artifact as built)."""
    if getattr(args, "endpoint_name", None):
        raise InvalidOptionsError(
            "--engine ray runs the artifact on a Ray cluster; it does not go with --endpoint-name"
        )
    if args.artifact is None:
        raise InvalidOptionsError("--engine ray needs --artifact")
    _check_ray_flags(args)
    from stygig.distributed.cluster import import_ray, ray_session
    from stygig.jobs.command import batch_source

    import_ray()
    from stygig.distributed.ray_batch import run_batch_ray

    src, kind = batch_source(args)
    # --json: stdout holds the summary alone (Ray prints a dead worker's notice on stdout)
    with ray_session(args.address, worker_logs=not getattr(args, "json_out", False)):
        return run_batch_ray(
            args.artifact,
            src,
            args.output,
            options=options,
            kind=kind,
            by_photo=args.by_photo,
            batch_size=args.batch_size,
            overwrite=args.overwrite,
            verify=not args.no_verify,
            progress=not args.quiet,
            actors=args.ray_actors,
            actor_cpus=args.ray_actor_cpus,
            device=args.ray_device,
            change_log=change_log,
        )


def run_serve_ray_command(args: argparse.Namespace) -> int:
    """``stygig serve --engine ray``: the server as a Ray Serve deployment; blocks until
    interrupted."""
    from stygig.distributed.cluster import import_ray

    import_ray()
    from stygig.distributed.ray_serve import serve_from_args

    return serve_from_args(args)

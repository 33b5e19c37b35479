"""``stygig serve --engine ray``: the StyGig server as a Ray Serve deployment.

Each replica builds the very app ``stygig serve`` runs (:func:`stygig.serving.app.create_app`):
the same routes (``/ping``, ``/invocations``, ``/v1/recommend``, ...), the same JSON answers and
errors, the same micro-batcher in front of the encoder, the same body limits and bearer token.
Ray Serve adds what SageMaker adds elsewhere: several replicas behind one HTTP proxy, spread over
the cluster's nodes, restarted when they die.

A replica counts as started only once its model is loaded and warm (its ``/ping`` would say
200), so Ray routes no request to a replica still loading; a model that cannot be loaded fails
the deployment with the reason instead of serving 503s.

Not carried over from ``stygig serve``: the asynchronous jobs (a SQLite queue per replica would
split the queue; run them on one host), the EMF lines, and the head-deadline / connection
limits of StyGig's own HTTP protocol (Ray's proxy holds the connections).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stygig.errors import InvalidOptionsError, ServerError, StygigError

__all__ = ["ReadyGate", "config_from_args", "serve_from_args", "start_serve", "stygig_application"]

APP_NAME = "stygig"
_LOAD_TIMEOUT_S = 900.0


class ReadyGate:
    """An ASGI wrapper that finishes lifespan start-up only once the app's model is ready.

    ``create_app`` loads the model in the background (``/healthz`` answers at once, ``/ping``
    turns 200 when warm); under Ray Serve the replica's start-up is the lifespan's, so holding it
    until ``ready`` keeps traffic away from a replica that would only answer 503.
    """

    def __init__(self, app: Any, ready: Callable[[], bool], failed: list[BaseException]) -> None:
        self.app = app
        self._ready = ready
        self._failed = failed

    def __getattr__(self, name: str) -> Any:  # add_exception_handler, state, ...
        return getattr(self.app, name)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def send_when_ready(message: Any) -> None:
            if message["type"] == "lifespan.startup.complete":
                deadline = time.monotonic() + _LOAD_TIMEOUT_S
                while not self._ready():
                    if self._failed:
                        error = self._failed[0]
                        message = {
                            "type": "lifespan.startup.failed",
                            "message": f"the model could not be loaded: {error}",
                        }
                        break
                    if time.monotonic() > deadline:
                        message = {
                            "type": "lifespan.startup.failed",
                            "message": f"the model was not ready after {_LOAD_TIMEOUT_S:.0f} s",
                        }
                        break
                    await asyncio.sleep(0.05)  # the loader runs in the app's worker pool
            await send(message)

        await self.app(scope, receive, send_when_ready)


def stygig_application(
    config: Any,
    *,
    replicas: int = 1,
    replica_cpus: float = 1.0,
    replica_gpus: float = 0.0,
) -> Any:
    """The Ray Serve application: ``replicas`` copies of the StyGig app for ``config`` (a
    :class:`stygig.serving.app.ServerConfig`; its artifact path must exist on every node)."""
    from ray import serve

    max_ongoing = max(8, config.batching.max_queue)

    @serve.deployment(
        name="StyGig",
        num_replicas=replicas,
        max_ongoing_requests=max_ongoing,  # the app's own queue limit answers 503 beyond it
        ray_actor_options={"num_cpus": replica_cpus, "num_gpus": replica_gpus},
        health_check_period_s=10,
        health_check_timeout_s=30,
    )
    @serve.ingress()
    class StyGig:
        def __init__(self, server_config: Any) -> None:
            self.server_config = server_config

        def __serve_build_asgi_app__(self) -> Any:
            from stygig.serving.app import create_app
            from stygig.serving.logging import configure_logging
            from stygig.threads import limit_library_threads

            configure_logging("warning")
            limit_library_threads(1)  # as stygig serve: no BLAS / OpenMP spinning
            failed: list[BaseException] = []
            app = create_app(self.server_config, on_fatal=failed.append)
            service = app.state.service
            return ReadyGate(app, lambda: bool(service.ready), failed)

    return StyGig.bind(config)  # type: ignore[attr-defined]


def start_serve(
    config: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    replicas: int = 1,
    replica_cpus: float = 1.0,
    replica_gpus: float = 0.0,
) -> None:
    """Deploy on the connected cluster and return once every replica is warm."""
    from ray import serve

    serve.start(http_options={"host": host, "port": port})
    try:
        serve.run(
            stygig_application(
                config, replicas=replicas, replica_cpus=replica_cpus, replica_gpus=replica_gpus
            ),
            name=APP_NAME,
            route_prefix="/",
        )
    except RuntimeError as e:
        raise ServerError(
            f"the Ray Serve deployment did not start (the replica log says why): {str(e)[:300]}",
            code="deploy_failed",
        ) from None


def config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`ServerConfig` of ``stygig serve``'s flags, refusing the ones Ray Serve does
    not carry (asynchronous jobs, EMF)."""
    from stygig.auth import load_token
    from stygig.serving.app import ServerConfig
    from stygig.serving.batching import BatcherConfig
    from stygig.serving.command import DEFAULT_ARTIFACT, check_device

    if getattr(args, "jobs_db", None):
        raise InvalidOptionsError(
            "--engine ray serves real-time requests only; run the asynchronous jobs "
            "(--jobs-db) on one host with --engine local"
        )
    if getattr(args, "emf", None):
        raise InvalidOptionsError("--emf is not available with --engine ray (use Ray's metrics)")
    if args.replicas < 1 or args.replica_cpus <= 0:
        raise InvalidOptionsError("--replicas and --replica-cpus must be positive")
    batching = (
        BatcherConfig.off(args.max_queue)
        if args.no_batching
        else BatcherConfig(args.max_batch, args.max_wait_ms, args.max_queue)
    )
    artifact = Path(args.artifact or os.environ.get("STYGIG_ARTIFACT") or DEFAULT_ARTIFACT)
    check_device(args.device, artifact)
    return ServerConfig(
        artifact=artifact.resolve(),
        batching=batching,
        max_body_bytes=int(args.max_body_mb * 1024 * 1024),
        request_timeout_s=args.timeout,
        verify=not args.no_verify,
        device=args.device,
        auth_token=load_token(args.auth_token_file),
        docs=args.docs,
        body_timeout_s=args.body_timeout,
        max_body_bytes_in_flight=int(args.max_bodies_mb * 1024 * 1024),
        **({"threads": args.threads} if args.threads else {}),
    )


def serve_from_args(args: argparse.Namespace) -> int:
    """Run the deployment until SIGINT or SIGTERM, then take it down; the exit code."""
    from ray import serve

    from stygig.distributed.cluster import ray_session
    from stygig.serving.command import default_port

    config = config_from_args(args)
    port = args.port if args.port is not None else default_port()
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with ray_session(args.address):
            try:
                start_serve(
                    config,
                    host=args.host,
                    port=port,
                    replicas=args.replicas,
                    replica_cpus=args.replica_cpus,
                    replica_gpus=1.0 if args.device == "cuda" else 0.0,
                )
                print(
                    f"stygig: serving {config.artifact.name} on http://{args.host}:{port} "
                    f"({args.replicas} Ray Serve replica(s)); Ctrl-C stops",
                    flush=True,
                )
                stop.wait()
            finally:
                try:
                    serve.shutdown()  # type: ignore[no-untyped-call]
                except StygigError:
                    raise
                except Exception:  # already gone with its cluster: nothing left to stop
                    pass
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0

"""``stygig serve --engine ray``: the StyGig server as a Ray Serve deployment.

Each replica builds the very app ``stygig serve`` runs (:func:`stygig.serving.app.create_app`):
the same routes (``/ping``, ``/invocations``, ``/v1/recommend``, ...), the same JSON answers and
errors, the same micro-batcher in front of the encoder, the same body limits and bearer token.
Ray Serve adds what SageMaker adds elsewhere: several replicas behind one HTTP proxy, spread over
the cluster's nodes, restarted when they die.

A replica counts as started only once its model is loaded and warm (its ``/ping`` would say
200), so Ray routes no request to a replica still loading; a model that cannot be loaded fails
the deployment with the reason instead of serving 503s.

The living catalogue is carried over: every replica replays and follows the same change log
(``--change-log``, a folder every node reaches or an ``s3://`` prefix) and watches the same
``--watch`` pointer, as several ``stygig serve`` hosts do. A reload reaches every replica: the
one that takes ``POST /v1/catalog/reload`` (or the driver, on SIGHUP) rings a
:class:`ReloadBell`, an actor every replica asks every :data:`BELL_POLL_S` whether it rang (one
replica reloaded alone before, and SIGHUP ended the deployment: review, session 53).

Not carried over from ``stygig serve``, and refused: the asynchronous jobs (a SQLite queue per
replica would split the queue; run them on one host), the EMF lines, and the head-deadline /
connection limits of StyGig's own HTTP protocol. Ray's proxy holds the connections, and it reads
a request's whole body before a replica sees it: body limits and the bearer token are checked
by the replica, after the proxy has held the body (put a proxy that limits bodies in front).

On a cluster that was already running, only this application is removed at the end (Serve and
other applications stay), and a Serve instance already listening elsewhere is said, not hidden
behind a URL that does not answer.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stygig.errors import InvalidOptionsError, ServerError, StygigError

__all__ = [
    "BELL_POLL_S",
    "ReadyGate",
    "ReloadBell",
    "config_from_args",
    "refuse_taken_name",
    "serve_from_args",
    "start_serve",
    "stygig_application",
]

log = logging.getLogger(__name__)

APP_NAME = "stygig"
_LOAD_TIMEOUT_S = 900.0
#: How often each replica asks the :class:`ReloadBell` whether it rang (a Ray call: ~1 ms).
BELL_POLL_S = 1.0
_BELL_NAMESPACE = "stygig"


class ReloadBell:
    """How many times a reload was asked of the deployment (a Ray actor, one per
    application, owned by the process that deployed it): each replica reloads when the count
    moves (:class:`ReloadAll`)."""

    def __init__(self) -> None:
        self.count = 0

    def ring(self) -> int:
        self.count += 1
        return self.count

    def rung(self) -> int:
        return self.count


def reload_bell() -> Any:
    """The application's :class:`ReloadBell` on the connected cluster (made if it is not
    there)."""
    import ray

    return (
        ray.remote(num_cpus=0)(ReloadBell)
        .options(name=f"{APP_NAME}-reload", namespace=_BELL_NAMESPACE, get_if_exists=True)
        .remote()
    )


class ReloadAll:
    """An ASGI wrapper that makes a replica's reload every replica's: a ``200`` to ``POST
    /v1/catalog/reload`` rings the bell, and from start-up on the replica reloads whenever the
    bell's count moves (the one that rang too: a reload of the version it already serves does
    nothing)."""

    def __init__(self, app: Any, service: Any, bell: Any) -> None:
        self.app = app
        self._service = service
        self._bell = bell
        self._follower: asyncio.Task[None] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, self._starting(send))
            return
        reload = scope["type"] == "http" and scope["method"] == "POST"
        if not reload or scope["path"].rstrip("/") != "/v1/catalog/reload":
            await self.app(scope, receive, send)
            return
        status: list[int] = []

        async def sent(message: Any) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        await self.app(scope, receive, sent)
        if status == [200]:
            await self._bell.ring.remote()

    def _starting(self, send: Any) -> Any:
        async def started(message: Any) -> None:
            if message["type"] == "lifespan.startup.complete" and self._follower is None:
                self._follower = asyncio.create_task(self._follow(), name="stygig-reload-bell")
            await send(message)

        return started

    async def _follow(self) -> None:
        """Reload whenever the bell's count moves (as ``stygig serve`` on SIGHUP)."""
        seen: int | None = None
        while True:
            try:
                count = await self._bell.rung.remote()
            except Exception:  # the deployment is being taken down with its owner
                log.debug("the reload bell did not answer")
                count = seen
            if seen is not None and count != seen:
                if not self._service.ready:  # loading: the ring is taken once it is ready
                    await asyncio.sleep(BELL_POLL_S)
                    continue
                try:
                    await self._service.reload()
                except StygigError as e:  # as stygig serve logs a refused reload
                    log.error(
                        "hot reload refused: %s", e.message, extra={"fields": {"code": e.code}}
                    )
                except Exception:
                    log.exception("hot reload failed")
            seen = count
            await asyncio.sleep(BELL_POLL_S)


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
    log_level: str = "warning",
) -> Any:
    """The Ray Serve application: ``replicas`` copies of the StyGig app for ``config`` (a
    :class:`stygig.serving.app.ServerConfig`; its artifact path must exist on every node)."""
    from ray import serve

    max_ongoing = max(8, config.batching.max_queue)

    @serve.deployment(
        name="StyGig",
        num_replicas=replicas,
        max_ongoing_requests=max_ongoing,  # the app's own queue limit answers 503 beyond it
        # Requests waiting for a replica: the proxy holds each one's body, so their number is
        # bounded (Ray answers 503 beyond it) instead of growing with a burst.
        max_queued_requests=max_ongoing,
        ray_actor_options={"num_cpus": replica_cpus, "num_gpus": replica_gpus},
        health_check_period_s=10,
        health_check_timeout_s=30,
    )
    @serve.ingress()
    class StyGig:
        def __init__(self, server_config: Any, bell: Any) -> None:
            self.server_config = server_config
            self.bell = bell

        def __serve_build_asgi_app__(self) -> Any:
            from stygig.serving.app import create_app
            from stygig.serving.logging import configure_logging
            from stygig.threads import limit_library_threads

            configure_logging(log_level)
            limit_library_threads(1)  # as stygig serve: no BLAS / OpenMP spinning
            failed: list[BaseException] = []
            app = create_app(self.server_config, on_fatal=failed.append)
            service = app.state.service
            return ReloadAll(
                ReadyGate(app, lambda: bool(service.ready), failed), service, self.bell
            )

    return StyGig.bind(config, reload_bell())  # type: ignore[attr-defined]


def start_serve(
    config: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    replicas: int = 1,
    replica_cpus: float = 1.0,
    replica_gpus: float = 0.0,
    log_level: str = "warning",
    check_name: bool = True,
) -> None:
    """Deploy on the connected cluster and return once every replica is warm, on a proxy
    that listens on ``host:port``. An application of this name already there is refused
    (:func:`refuse_taken_name`; ``check_name=False``: the caller checked)."""
    from ray import serve

    if check_name:
        refuse_taken_name()
    serve.start(http_options={"host": host, "port": port})
    try:
        serve.run(
            stygig_application(
                config,
                replicas=replicas,
                replica_cpus=replica_cpus,
                replica_gpus=replica_gpus,
                log_level=log_level,
            ),
            name=APP_NAME,
            route_prefix="/",
        )
    except Exception as e:  # Ray's own errors (a replica that failed, a route taken)
        raise ServerError(
            f"the Ray Serve deployment did not start (the replica log says why): {str(e)[:300]}",
            code="deploy_failed",
        ) from None
    _check_listening(host, port)


def refuse_taken_name() -> None:
    """Refuse a cluster that already runs an application of :data:`APP_NAME`: deploying would
    replace another ``stygig serve --engine ray``'s. Not atomic: two started at the same
    moment both pass, and the later one replaces the first."""
    from ray import serve

    if APP_NAME in serve.status().applications:
        raise ServerError(
            f"the Ray cluster already runs an application named {APP_NAME!r} (another "
            f"stygig serve --engine ray?); stop it first (serve.delete({APP_NAME!r}))",
            code="app_exists",
        )


def _check_listening(host: str, port: int) -> None:
    """That Serve's HTTP proxies listen on ``host:port``: a Serve instance that was already
    running on the cluster keeps its own host and port whatever ``serve.start`` asks. Read from
    Serve's controller (its client's ``http_config``; not a public API: if it cannot be read,
    nothing is said), not by a request from this machine, which may hold no proxy."""
    try:
        from ray.serve.context import _get_global_client

        client = _get_global_client()
        if client is None:
            return
        actual_host, actual_port = str(client.http_config.host), int(client.http_config.port)
    except Exception:  # another Ray version: no check rather than a wrong one
        log.debug("Serve's HTTP settings could not be read; not checked")
        return
    if (actual_host, actual_port) != (host, port):
        raise ServerError(
            f"Ray Serve's HTTP proxies listen on {actual_host}:{actual_port}, not {host}:{port}: "
            "Serve was already running on this cluster with its own host and port, which a new "
            "deployment cannot change (serve on that port, or restart Serve)",
            code="deploy_failed",
        )


def config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`ServerConfig` of ``stygig serve``'s flags, refusing the ones Ray Serve does
    not carry (asynchronous jobs, EMF, the head deadline and connection limit)."""
    from stygig.auth import load_token
    from stygig.serving.app import ServerConfig, allowed_hosts
    from stygig.serving.batching import BatcherConfig
    from stygig.serving.catalog_command import catalog_settings
    from stygig.serving.command import (
        DEFAULT_ARTIFACT,
        HEAD_TIMEOUT_S,
        MAX_CONNECTIONS,
        check_device,
        max_body_mb,
        warn_if_exposed,
    )

    for flag, value in (("--jobs-db", "jobs_db"), ("--job-queue", "job_queue")):
        if getattr(args, value, None):
            raise InvalidOptionsError(
                "--engine ray serves real-time requests only; run the asynchronous jobs "
                f"({flag}) with --engine local"
            )
    if getattr(args, "emf", None):
        raise InvalidOptionsError("--emf is not available with --engine ray (use Ray's metrics)")
    held = [
        flag
        for flag, value, default in (
            ("--head-timeout", getattr(args, "head_timeout", None), HEAD_TIMEOUT_S),
            ("--max-connections", getattr(args, "max_connections", None), MAX_CONNECTIONS),
        )
        if value is not None and value != default
    ]
    if held:
        raise InvalidOptionsError(
            f"{' and '.join(held)}: Ray's HTTP proxy holds the connections with --engine ray; "
            "put a proxy with these limits in front of it"
        )
    if args.replicas < 1 or args.replica_cpus <= 0:
        raise InvalidOptionsError("--replicas and --replica-cpus must be positive")
    batching = (
        BatcherConfig.off(args.max_queue)
        if args.no_batching
        else BatcherConfig(args.max_batch, args.max_wait_ms, args.max_queue)
    )
    artifact = Path(args.artifact or os.environ.get("STYGIG_ARTIFACT") or DEFAULT_ARTIFACT)
    check_device(args.device, artifact)
    catalog = catalog_settings(args)
    if catalog is not None:  # every replica reads these; a relative path would be the node's
        catalog = dataclasses.replace(
            catalog,
            change_log=_absolute(catalog.change_log),
            watch=_absolute(catalog.watch),
            photo_prefixes=tuple(_absolute(p) or p for p in catalog.photo_prefixes),
        )
    hosts = allowed_hosts(args.host, getattr(args, "allowed_host", None) or ())
    token = load_token(args.auth_token_file)
    warn_if_exposed(args.host, hosts, token, catalog, jobs=False)  # as stygig serve says it
    return ServerConfig(
        artifact=artifact.resolve(),
        catalog=catalog,
        examples=Path(args.examples).resolve() if getattr(args, "examples", None) else None,
        batching=batching,
        max_body_bytes=int(max_body_mb(args) * 1024 * 1024),
        request_timeout_s=args.timeout,
        verify=not args.no_verify,
        device=args.device,
        auth_token=token,
        docs=args.docs,
        body_timeout_s=args.body_timeout,
        # Ray's proxy passes the client's Host on: the replicas check it as `stygig serve` does.
        allowed_hosts=hosts,
        max_body_bytes_in_flight=int(args.max_bodies_mb * 1024 * 1024),
        **({"threads": args.threads} if args.threads else {}),
    )


def _absolute(location: str | None) -> str | None:
    """A local path made absolute (a replica's working folder is not the driver's)."""
    from stygig import storage

    if not location or storage.is_remote(location) or location.startswith("file://"):
        return location
    return str(Path(location).resolve())


def serve_from_args(args: argparse.Namespace) -> int:
    """Run the deployment until SIGINT or SIGTERM, then take it down; the exit code. SIGHUP
    reloads every replica (as it reloads ``stygig serve``; its default action ended the
    driver and the deployment with it, leaving Ray's agents behind: review, session 53)."""
    import ray
    from ray import serve

    from stygig.distributed.cluster import ray_session
    from stygig.serving.command import default_port

    config = config_from_args(args)
    port = args.port if args.port is not None else default_port()
    # A cluster this process starts ends with it; on one it joins, Serve and the other
    # applications stay: only this application is taken down at the end.
    stop, hup, wake = threading.Event(), threading.Event(), threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:  # the work is the main loop's, below
        (hup if signum == signal.SIGHUP else stop).set()
        wake.set()

    with ray_session(args.address) as own_cluster:
        # After ray.init: its driver installs a SIGTERM handler of its own, which aborted the
        # process (exit 134, the application never taken down: review, session 53).
        signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        previous = {s: signal.signal(s, on_signal) for s in signals}
        try:
            refuse_taken_name()  # before anything of ours is on the cluster
            try:
                start_serve(
                    config,
                    host=args.host,
                    port=port,
                    replicas=args.replicas,
                    replica_cpus=args.replica_cpus,
                    replica_gpus=1.0 if args.device == "cuda" else 0.0,
                    log_level=getattr(args, "log_level", "warning"),
                    check_name=False,  # checked above, outside the clean-up of ours
                )
                print(
                    f"stygig: serving {config.artifact.name} on http://{args.host}:{port} "
                    f"({args.replicas} Ray Serve replica(s)); Ctrl-C stops",
                    flush=True,
                )
                bell = reload_bell()
                while not stop.is_set():
                    wake.wait()
                    wake.clear()
                    if hup.is_set() and not stop.is_set():
                        hup.clear()
                        try:
                            ray.get(bell.ring.remote(), timeout=30)
                        except Exception as e:  # the deployment goes on serving
                            log.error("SIGHUP: the reload bell did not ring (%s)", type(e).__name__)
                        else:
                            log.warning("SIGHUP: every replica reloads")
            finally:  # deployed or failed after the name check: the app is ours
                _take_down(serve, joined=not own_cluster)
        finally:  # a handler set outside Python (Ray's) cannot be put back: the default
            for s, handler in previous.items():
                signal.signal(s, signal.SIG_DFL if handler is None else handler)
    return 0


def _take_down(serve: Any, *, joined: bool) -> None:
    """This application off the cluster: on a joined cluster only it; on its own cluster
    Serve too."""
    try:
        if joined:
            serve.delete(APP_NAME)
        else:
            serve.shutdown()
    except StygigError:
        raise
    except Exception:  # already gone with its cluster: nothing left to stop
        pass

"""``stygig serve`` and ``stygig loadtest``: flags in, server or load test out.

``serve`` follows the SageMaker inference container contract: port 8080 unless
``SAGEMAKER_BIND_TO_PORT`` or ``--port`` says otherwise, the artifact at ``/opt/ml/model`` unless
``--artifact`` names one, and a graceful shutdown on SIGTERM that finishes in-flight requests
within SageMaker's 30 s grace period. ``--device cuda`` is checked before the port is bound: the
server refuses to start when ONNX Runtime's CUDA provider does not actually start here, instead
of serving from the CPU. ``--emf`` (on in the container) also writes the metrics as CloudWatch
EMF lines on stdout (:mod:`stygig.serving.emf`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stygig.arguments import encoder_device, port, positive, real

if TYPE_CHECKING:
    from stygig.serving.async_api import AsyncConfig
    from stygig.serving.emf import EmfConfig

__all__ = [
    "DEFAULT_ARTIFACT",
    "check_device",
    "default_port",
    "emf_config_from_args",
    "register",
    "run_loadtest",
    "run_serve",
]

DEFAULT_ARTIFACT = "/opt/ml/model"
HEAD_TIMEOUT_S = 10.0  # --head-timeout's default
MAX_CONNECTIONS = 256  # --max-connections' default
_GRACE_S = 25  # SageMaker sends SIGTERM, then SIGKILL 30 s later


def default_port() -> int:
    """``SAGEMAKER_BIND_TO_PORT`` when set, else 8080; a value that is no port (1-65535) is
    refused, naming the variable (review, session 49: ``99999`` and ``²`` were tracebacks,
    ``0`` a random port, ``abc`` a silent 8080)."""
    from stygig.errors import InvalidOptionsError

    value = os.environ.get("SAGEMAKER_BIND_TO_PORT", "").strip()
    if not value:
        return 8080
    try:
        return port(value)  # what --port takes
    except argparse.ArgumentTypeError:
        raise InvalidOptionsError(
            f"SAGEMAKER_BIND_TO_PORT must be a port of 1 to 65535, got {value[:20]!r}"
        ) from None


def default_max_body_mb() -> float:
    """``SAGEMAKER_MAX_PAYLOAD_IN_MB`` when set (a batch transform's ``MaxPayloadInMB``, which
    SageMaker gives its container: a record up to that size must not be refused), else 6 (the
    real-time endpoints' payload limit). ``0``, SageMaker's "records of any size, chunked",
    keeps the 6 MB bound (every body is bounded here). Any other value outside 1-100 whole MB
    is refused, naming the variable, as a bad ``SAGEMAKER_BIND_TO_PORT`` is (review, session
    51: ``101`` was silently 6 MB)."""
    from stygig.errors import InvalidOptionsError
    from stygig.serving.requests import MAX_BODY_BYTES, MAX_PAYLOAD_MB

    value = os.environ.get("SAGEMAKER_MAX_PAYLOAD_IN_MB", "").strip()
    if value in ("", "0"):
        return MAX_BODY_BYTES / (1024 * 1024)
    if value.isascii() and value.isdigit() and 1 <= int(value) <= MAX_PAYLOAD_MB:
        return float(value)
    raise InvalidOptionsError(
        f"SAGEMAKER_MAX_PAYLOAD_IN_MB must be a whole number of MB from 0 to {MAX_PAYLOAD_MB}, "
        f"got {value[:20]!r}"
    )


def batch_strategy_note() -> str | None:
    """A warning for ``SAGEMAKER_BATCH_STRATEGY=MULTI_RECORD`` (None otherwise): a request here
    holds one record, while a transform job of ``BatchStrategy=MultiRecord`` with
    ``SplitType=Line`` sends several lines per request, each refused (400 ``malformed_json``)
    once the instances run. Not refused at start: ``MultiRecord`` over unsplit inputs (a photo
    per file) sends one record each (review, session 53: the job failed with no word before)."""
    value = os.environ.get("SAGEMAKER_BATCH_STRATEGY", "").strip()
    if value.upper().replace("_", "") != "MULTIRECORD":
        return None
    return (
        "SAGEMAKER_BATCH_STRATEGY is MULTI_RECORD: each request must hold one record (a photo "
        "or one JSON object); a transform job that splits its input by line must use "
        "BatchStrategy SingleRecord (as GET /execution-parameters says), or every request of "
        "several lines is refused"
    )


def warn_if_exposed(host: str, hosts: Any, token: str | None, catalog: Any, jobs: bool) -> None:
    """Log :func:`exposure_note` for a server bound beyond loopback (``hosts`` None) without a
    token; ``catalog``: its catalogue settings, ``jobs``: whether it takes async jobs."""
    if hosts is None and token is None:
        changes = catalog is not None and bool(catalog.change_log)
        logging.getLogger("stygig.serving").warning("%s", exposure_note(host, changes, jobs))


def exposure_note(host: str, changes: bool, jobs: bool) -> str:
    """The warning for a server bound beyond loopback without a token (review, session 53:
    it started without a word, and any client that reached it changed the catalogue).
    ``changes``: it takes catalogue changes (a change log); ``jobs``: asynchronous jobs."""
    can = ["ask for recommendations", "reload the catalogue"]
    if changes:
        can.insert(1, "change the catalogue")
    if jobs:
        can.append("submit and cancel jobs")
    return (
        f"serving on {host}, beyond this machine, without a token: every client that reaches "
        f"this port may {', '.join(can)} (a page on another site cannot change anything, but "
        "one reached through DNS rebinding can); require a token with --auth-token-file or "
        "$STYGIG_AUTH_TOKEN, or bind 127.0.0.1 behind a proxy. Inside SageMaker, which forwards "
        "/invocations and /ping only, this is expected"
    )


def max_body_mb(args: argparse.Namespace) -> float:
    """The body limit ``serve``'s flags ask for: ``--max-body-mb``, else
    :func:`default_max_body_mb` (any engine)."""
    given: float | None = getattr(args, "max_body_mb", None)
    return given if given is not None else default_max_body_mb()


def register(subparsers: Any) -> None:
    """Add ``serve`` and ``loadtest`` to ``stygig``'s argparse subparsers."""
    p = subparsers.add_parser("serve", help="run the real-time HTTP server (SageMaker contract)")
    p.add_argument("--artifact", default=None, help=f"artifact folder (default {DEFAULT_ARTIFACT})")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="bind address (default 127.0.0.1, this machine only; the container's entrypoint "
        "binds 0.0.0.0)",
    )
    p.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a name requests may give as their Host, beside this machine's own (repeatable; "
        "bound to loopback, requests addressed to other names are refused: DNS rebinding)",
    )
    p.add_argument(
        "--port", type=port, default=None, help="default $SAGEMAKER_BIND_TO_PORT or 8080"
    )
    p.add_argument("--max-batch", type=positive, default=8, help="photos per encoder call")
    p.add_argument(
        "--max-wait-ms", type=real(0.0, 1000.0), default=2.0, help="batch collection deadline"
    )
    p.add_argument("--max-queue", type=positive, default=256, help="requests in flight before 503")
    p.add_argument("--no-batching", action="store_true", help="one request per encoder call")
    p.add_argument("--threads", type=positive, default=None, help="decode/score threads")
    p.add_argument(
        "--max-body-mb",
        type=real(1.0, 1024.0),
        default=None,
        help="request body limit (MB; default $SAGEMAKER_MAX_PAYLOAD_IN_MB, a batch transform's, "
        "or 6)",
    )
    p.add_argument(
        "--timeout", type=real(0.0, above=True), default=50.0, help="per-request limit in seconds"
    )
    p.add_argument(
        "--body-timeout",
        type=real(0.0, above=True),
        default=60.0,
        help="a request body must arrive within this",
    )
    p.add_argument(
        "--max-bodies-mb",
        type=real(1.0),
        default=256.0,
        help="request bodies being read or held at once, in all (MB); beyond it 503",
    )
    p.add_argument(
        "--head-timeout",
        type=real(0.0, 3600.0, above=True),
        default=HEAD_TIMEOUT_S,
        help="a request's head must arrive within this many seconds (idle sockets are closed)",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=MAX_CONNECTIONS,
        help="open connections and requests at once; beyond it new ones get 503",
    )
    p.add_argument(
        "--auth-token-file",
        help="require 'Authorization: Bearer <token>' (token read from this file; or "
        "$STYGIG_AUTH_TOKEN_FILE / $STYGIG_AUTH_TOKEN) on every route but the health checks "
        "(/ping, /healthz, /execution-parameters) and the page (/, /static/, /favicon.ico)",
    )
    p.add_argument("--docs", action="store_true", help="serve /docs (Swagger UI, from a CDN)")
    p.add_argument(
        "--examples",
        default=os.environ.get("STYGIG_EXAMPLES") or None,
        help="a folder of example photos the page offers as one-click first tries "
        "(default $STYGIG_EXAMPLES or none)",
    )
    p.add_argument("--no-verify", action="store_true", help="skip artifact checksums at start")
    p.add_argument(
        "--device",
        type=encoder_device,
        metavar="{cpu,cuda}",
        default=os.environ.get("STYGIG_DEVICE", "cpu"),
        help="where the encoder runs (default $STYGIG_DEVICE or cpu)",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    add_async_arguments(p)
    add_emf_arguments(p)
    from stygig.serving.catalog_command import add_catalog_flags

    add_catalog_flags(p)
    from stygig.distributed.command import add_engine_flags

    add_engine_flags(p, "serve")
    p.set_defaults(func=run_serve)

    p = subparsers.add_parser("loadtest", help="measure a running server over real HTTP")
    p.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--images", required=True, help="folder of query photos (jpg/png/webp)")
    p.add_argument("--concurrency", type=int, default=100)
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--endpoint", default="/invocations")
    p.add_argument("--warmup", type=int, default=10, help="requests sent first, not measured")
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--json", dest="json_out", help="write the report here")
    p.add_argument("--png", help="write a latency histogram here (needs matplotlib)")
    p.set_defaults(func=run_loadtest)


def run_serve(args: argparse.Namespace) -> int:
    """Start uvicorn (one worker process) on the app; returns the exit code."""
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as e:
        from stygig.errors import StygigError

        raise StygigError(
            f"stygig serve needs the serve extra ({e.name} is missing): "
            "pip install 'stygig[serve]'",
            code="missing_extra",
        ) from None
    if getattr(args, "engine", "local") == "ray":
        from stygig.distributed.command import run_serve_ray_command

        return run_serve_ray_command(args)

    from stygig.artifact import read_manifest
    from stygig.auth import load_token
    from stygig.serving.app import ServerConfig, allowed_hosts, create_app
    from stygig.serving.batching import BatcherConfig
    from stygig.serving.catalog_command import catalog_settings, unapplied_changes_note
    from stygig.serving.logging import configure_logging
    from stygig.serving.protocol import head_deadline_protocol
    from stygig.threads import limit_library_threads

    configure_logging(args.log_level)
    limit_library_threads(1)  # idle BLAS / OpenMP threads spin beside ONNX Runtime
    batching = (
        BatcherConfig.off(args.max_queue)
        if args.no_batching
        else BatcherConfig(args.max_batch, args.max_wait_ms, args.max_queue)
    )
    artifact = Path(args.artifact or os.environ.get("STYGIG_ARTIFACT") or DEFAULT_ARTIFACT)
    emf = emf_config_from_args(args)
    check_device(args.device, artifact)  # before the port is bound: no silent CPU fallback
    catalog = catalog_settings(args)
    if catalog is None or not catalog.watch:
        read_manifest(artifact)  # not an artifact: said in one line, before the port is bound
    bind_port = args.port if args.port is not None else default_port()
    body_mb = max_body_mb(args)
    token = load_token(args.auth_token_file)
    async_jobs = async_config_from_args(args)
    hosts = allowed_hosts(args.host, args.allowed_host)
    # Said before the port is bound, as every check.
    warn_if_exposed(args.host, hosts, token, catalog, async_jobs is not None)
    check_port_free(args.host, bind_port)
    if strategy := batch_strategy_note():
        logging.getLogger("stygig.serving").warning("%s", strategy)
    if (catalog is None or not catalog.change_log) and (note := unapplied_changes_note(artifact)):
        # `stygig catalog ... --artifact A` wrote them; this server answers without them.
        logging.getLogger("stygig.serving").warning(
            "%s; serve with --change-log to answer with them", note
        )
    config = ServerConfig(
        artifact=artifact,
        catalog=catalog,
        examples=Path(args.examples) if args.examples else None,
        batching=batching,
        max_body_bytes=int(body_mb * 1024 * 1024),
        request_timeout_s=args.timeout,
        verify=not args.no_verify,
        device=args.device,
        async_jobs=async_jobs,
        auth_token=token,
        docs=args.docs,
        body_timeout_s=args.body_timeout,
        allowed_hosts=hosts,
        max_body_bytes_in_flight=int(args.max_bodies_mb * 1024 * 1024),
        **({"threads": args.threads} if args.threads else {}),
    )
    failed: list[BaseException] = []
    server: uvicorn.Server | None = None

    def fatal(error: BaseException) -> None:
        failed.append(error)
        if server is not None:
            server.should_exit = True

    app = create_app(config, on_fatal=fatal)
    emitter = None
    if emf is not None:
        from stygig.serving.emf import EmfEmitter

        metrics = app.state.metrics
        emitter = EmfEmitter(emf, totals=lambda: {"Rejected": metrics.rejected_total()})
        metrics.emf = emitter
        emitter.start()

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            await super().shutdown(sockets)
            # After the drain, before uvicorn re-raises the SIGTERM it caught (which ends the
            # process at once): the last interval's EMF line is written here.
            if emitter is not None:
                emitter.close()

    server = Server(
        uvicorn.Config(
            app,
            host=args.host,
            port=bind_port,
            workers=1,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=_GRACE_S,
            timeout_keep_alive=75,  # longer than typical load-balancer idle timeouts
            # uvicorn refuses at >= its limit, counting the connection asking: N + 1 serves N.
            limit_concurrency=args.max_connections + 1,
            ws="none",  # no route is a WebSocket: an upgrade is answered as plain HTTP
            http=head_deadline_protocol(
                args.head_timeout,
                args.body_timeout,
                discard_limit_bytes=4 * int(body_mb * 1024 * 1024),
            ),
            lifespan="on",
        )
    )
    try:
        server.run()
    finally:
        if emitter is not None:
            emitter.close()  # what the last interval saw
    if failed:
        error = failed[0]
        print(f"stygig: error: the model could not be loaded: {error}", file=sys.stderr)
        return int(getattr(error, "exit_code", 1))
    return 0


def check_port_free(host: str, number: int) -> None:
    """Refuse, in one line, a port this host cannot listen on (in use, or not allowed): uvicorn
    only logs it, as a JSON record among others, and exits 3."""
    import socket

    from stygig.errors import ConfigError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, number))
        except OSError as e:
            raise ConfigError(
                f"cannot listen on {host}:{number}: {e.strerror or e} (choose another with "
                "--port, or PORT=... make demo)",
                code="port_unavailable",
            ) from None


def check_device(device: str, artifact: Path) -> None:
    """``--device cuda``: refuse to start unless the artifact's encoder can use the GPU here.

    ONNX encoders: a session on a one-node graph must have ONNX Runtime's CUDA provider
    *active* (``get_providers()``), not merely installed: with CUDA or cuDNN libraries that do
    not match the onnxruntime-gpu build, ORT logs a line and runs everything on the CPU.
    Torch encoders: torch must see a GPU. Encoders with no GPU path (the NumPy ``tiny``) are
    refused. A manifest that cannot be read is left to the model load to report.

    Raises:
        EncoderUnavailableError: ``cuda_unavailable`` (no CUDA provider in this ONNX Runtime),
            ``cuda_inactive`` (installed, but it did not start) or ``cuda_unsupported``.
    """
    if device != "cuda":
        return
    from stygig.artifact import read_manifest
    from stygig.errors import ArtifactError, EncoderUnavailableError

    try:
        encoder = read_manifest(artifact).get("encoder")
    except ArtifactError:
        encoder = None
    runtime = encoder.get("runtime") if isinstance(encoder, dict) else None
    if runtime == "torch":
        from stygig.encoders.base import check_torch_device

        check_torch_device("cuda")
        return
    if runtime not in (None, "onnx"):
        raise EncoderUnavailableError(
            "--device cuda: this artifact's encoder runs on neither ONNX Runtime nor torch, so "
            "nothing would run on the GPU; serve it with --device cpu",
            code="cuda_unsupported",
        )
    from stygig.encoders.onnx import active_providers, check_active

    check_active(active_providers("cuda"), "cuda")


def add_emf_arguments(p: argparse.ArgumentParser) -> None:
    """The ``serve`` flags of the CloudWatch EMF lines (see :mod:`stygig.serving.emf`)."""
    g = p.add_argument_group("CloudWatch metrics (EMF lines on stdout)")
    g.add_argument(
        "--emf",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write the metrics as CloudWatch embedded-metric-format lines on stdout (default: "
        "$STYGIG_EMF=1/0; the container's serve entrypoint sets 1; else off)",
    )
    g.add_argument(
        "--emf-interval",
        type=float,
        default=None,
        help="seconds between lines while there is traffic (default $STYGIG_EMF_INTERVAL_S "
        "or 60; a line also goes out as soon as a metric holds 100 values)",
    )
    g.add_argument(
        "--emf-dimension",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="a dimension on every metric, e.g. EndpointName=shop (repeatable; default "
        "$STYGIG_EMF_DIMENSIONS, comma-separated, or Service=stygig)",
    )
    g.add_argument("--emf-namespace", default="StyGig", help="CloudWatch namespace (StyGig)")


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


def emf_config_from_args(args: argparse.Namespace) -> EmfConfig | None:
    """The EMF settings the flags (or their environment defaults) ask for; ``None`` when off.

    Raises:
        InvalidOptionsError: an unreadable ``STYGIG_EMF*`` value or dimension.
    """
    from stygig.errors import InvalidOptionsError

    enabled = args.emf
    if enabled is None:
        value = os.environ.get("STYGIG_EMF", "").strip().lower()
        if value not in _TRUE | _FALSE:
            raise InvalidOptionsError("STYGIG_EMF must be 1 or 0")
        enabled = value in _TRUE
    if not enabled:
        return None
    from stygig.serving.emf import EmfConfig, parse_dimensions

    interval = args.emf_interval
    if interval is None:
        text = os.environ.get("STYGIG_EMF_INTERVAL_S", "60")
        try:
            interval = float(text)
        except ValueError:
            raise InvalidOptionsError("STYGIG_EMF_INTERVAL_S must be a number of seconds") from None
    pairs = args.emf_dimension
    if pairs is None:
        pairs = [os.environ.get("STYGIG_EMF_DIMENSIONS") or "Service=stygig"]
    return EmfConfig(
        namespace=args.emf_namespace, dimensions=parse_dimensions(pairs), interval_s=interval
    )


def run_loadtest(args: argparse.Namespace) -> int:
    """Run the load test and print its report; non-zero when any request got a 5xx."""
    from stygig.loadtest import LoadTestConfig, print_report, run_load_test, write_histogram

    report = run_load_test(
        LoadTestConfig(
            url=args.url,
            images=Path(args.images),
            concurrency=args.concurrency,
            requests=args.requests,
            endpoint=args.endpoint,
            warmup=args.warmup,
            timeout_s=args.timeout,
        )
    )
    print_report(report)
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(report.to_json(), encoding="utf-8")
        print(f"report written: {args.json_out}")
    if args.png:
        write_histogram(report, Path(args.png))
        print(f"histogram written: {args.png}")
    return 1 if report.counts.get("5xx", 0) or report.counts.get("errors", 0) else 0


def add_async_arguments(p: argparse.ArgumentParser) -> None:
    """The ``serve`` flags of the asynchronous side (off unless ``--jobs-db`` or ``--job-queue``
    is given)."""
    g = p.add_argument_group("asynchronous jobs")
    g.add_argument("--jobs-db", help="SQLite job store; turns on /async/* (e.g. /tmp/jobs.db)")
    g.add_argument(
        "--job-queue",
        help="instead of --jobs-db, a queue several servers share: "
        "sqs://QUEUE?results=s3://BUCKET/PREFIX[&lease=S] (turns on /async/*)",
    )
    g.add_argument("--async-output", help="results prefix: folder, file:// or s3://")
    g.add_argument("--async-failure", help="failures prefix (default: --async-output)")
    g.add_argument("--async-concurrency", type=int, default=1, help="async jobs at once")
    g.add_argument(
        "--async-timeout",
        # stygig.jobs.store.MAX_TIME_LIMIT_S, written out: the jobs package is imported only
        # when async jobs are on (AsyncConfig checks the same bound)
        type=real(0.0, 86400.0, above=True),
        default=900.0,
        help="per-job limit, seconds (at most 86,400)",
    )
    g.add_argument("--async-webhook", help="POST every job's notification here")
    g.add_argument("--async-success-topic", help="SNS topic ARN for successes")
    g.add_argument("--async-error-topic", help="SNS topic ARN for failures")
    g.add_argument(
        "--allow-input-prefix",
        action="append",
        default=[],
        metavar="PREFIX",
        help="a folder or s3://bucket/prefix/ that clients may name as an input location "
        "(repeatable; default: none, every client-chosen location is refused)",
    )
    g.add_argument(
        "--allow-webhook-network",
        action="append",
        default=[],
        metavar="CIDR",
        help="internal addresses clients' webhooks may reach, e.g. 10.1.0.0/16 (repeatable; "
        "default: public addresses only)",
    )
    g.add_argument(
        "--async-list-jobs",
        action="store_true",
        help="answer GET /async/jobs (every job's id and status: off by default)",
    )
    g.add_argument(
        "--async-max-queued",
        type=int,
        default=10_000,
        help="unfinished jobs at most; beyond it a submission gets 503 (default 10,000)",
    )
    g.add_argument(
        "--async-max-queued-mb",
        type=real(0.0, above=True),
        default=1024.0,
        help="inline inputs held by unfinished jobs, in MB; beyond it 503 (default 1024)",
    )
    g.add_argument(
        "--async-retention-hours",
        type=real(0.0, above=True),
        default=168.0,
        help="finished jobs are forgotten after this (default 7 days)",
    )
    g.add_argument(
        "--async-max-finished",
        type=positive,
        default=None,
        help="finished jobs kept at most, the oldest deleted first (default "
        "$STYGIG_ASYNC_MAX_FINISHED, else 100,000)",
    )


def async_config_from_args(args: argparse.Namespace) -> AsyncConfig | None:
    """The :class:`AsyncConfig` the flags describe, or ``None`` when async is off."""
    if not args.jobs_db and not args.job_queue:
        return None
    from stygig.errors import InvalidOptionsError
    from stygig.jobs.notify import Notifier
    from stygig.jobs.worker import WorkerConfig
    from stygig.serving.async_api import AsyncConfig

    if args.jobs_db and args.job_queue:
        raise InvalidOptionsError("give --jobs-db or --job-queue, not both")
    if not args.async_output:
        raise InvalidOptionsError("async jobs need --async-output (where results go)")
    return AsyncConfig(
        jobs_db=Path(args.jobs_db) if args.jobs_db else None,
        job_queue=args.job_queue,
        output=args.async_output,
        failure=args.async_failure,
        worker=WorkerConfig(concurrency=args.async_concurrency),
        time_limit_s=args.async_timeout,
        notifier=Notifier(
            webhook=args.async_webhook,
            success_topic=args.async_success_topic,
            error_topic=args.async_error_topic,
            allow_networks=tuple(args.allow_webhook_network),
        ),
        allow_input_prefixes=tuple(args.allow_input_prefix),
        list_jobs=args.async_list_jobs,
        retention_s=args.async_retention_hours * 3600.0,
        max_queued=args.async_max_queued,
        max_queued_bytes=int(args.async_max_queued_mb * 1024 * 1024),
        max_finished=args.async_max_finished,
    )

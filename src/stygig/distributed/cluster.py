"""Joining a Ray cluster (or starting a local one) and reading what it offers."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any, NoReturn

from stygig import errors
from stygig.errors import InvalidOptionsError, ServerError, StygigError

__all__ = [
    "FORWARDED_ENV",
    "RAY_DEVICES",
    "ClusterResources",
    "device_refusal",
    "import_ray",
    "raise_failure",
    "ray_session",
    "resources",
    "worker_failure",
    "worker_runtime_env",
]

log = logging.getLogger("stygig.distributed")

#: Where S3 is, as this process sees it: set on every Ray task and actor of a build or batch, so
#: workers read the catalogue's photos and write parts at the driver's endpoint (MinIO, a VPC
#: endpoint, moto) and region even on nodes started without them. Credentials are not among
#: them: they would travel in clear through Ray's control store and override the nodes' own
#: roles; every node brings its own (instance role, or ``AWS_*`` set where ``ray start`` runs).
FORWARDED_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")


def import_ray() -> ModuleType:
    """``ray``, or a clear error naming the extra to install."""
    try:
        import ray
        import ray.data
    except ImportError as e:
        raise StygigError(
            f"--engine ray needs the ray extra ({e.name} is missing): pip install 'stygig[ray]'",
            code="missing_extra",
        ) from None
    return ray


@contextmanager
def ray_session(
    address: str | None = None, *, num_cpus: int | None = None, worker_logs: bool = True
) -> Iterator[bool]:
    """Ray, initialised for the block: joined at ``address`` (``auto``, ``ray://host:10001``,
    ``host:6379``; default ``$RAY_ADDRESS``), else a new local cluster of this machine's cores
    that ends with the block (never one a ``ray start`` left running: that takes ``--address
    auto``). A session already initialised in this process (a test's, a notebook's) is used as
    it is and left running. Yields whether the cluster is this block's own (``False``: joined,
    with others on it). ``worker_logs``: Ray prints its workers' and raylets' lines here, some
    on stdout (off where stdout is a machine's to read: ``--json``)."""
    ray = import_ray()
    if ray.is_initialized():
        yield False
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    try:
        ray.init(
            address=address or "local",
            num_cpus=num_cpus if address is None else None,
            include_dashboard=False,
            configure_logging=True,
            logging_level=logging.WARNING,
            log_to_driver=worker_logs,
        )
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = f"at {address}" if address else "on this machine"
        raise ServerError(
            f"cannot start or join a Ray cluster {where}: {type(e).__name__}",
            code="ray_unavailable",
        ) from None
    try:
        yield address is None
    finally:
        ray.shutdown()


def worker_runtime_env() -> dict[str, dict[str, str]]:
    """The ``runtime_env`` of StyGig's Ray tasks and actors: this process's
    :data:`FORWARDED_ENV` variables that are set (nothing else; a node's own settings of the
    others stay)."""
    env = {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}
    return {"env_vars": env} if env else {}


def device_refusal(e: StygigError) -> bool:
    """Whether loading an encoder failed for its device (no CUDA provider or GPU, an encoder
    with no GPU path), rather than for its files: what ``--ray-device cpu`` can help with."""
    return isinstance(e, (errors.EncoderUnavailableError, errors.ConfigError))


def worker_failure(e: StygigError, *, encoder_load: bool = False) -> str:
    """A StyGig error raised in a Ray worker, as a string column of the stage's output. Ray
    hands an exception back only as its text (the worker's traceback, the class lost), so a
    stage returns its failure as data and the driver raises it again (:func:`raise_failure`)."""
    data: dict[str, Any] = {"type": type(e).__name__, "code": e.code, "message": e.message}
    if encoder_load:  # loading the encoder on the actor's device failed
        data["encoder_load"] = True
    return json.dumps(data)


def raise_failure(text: str, *, device: str = "cpu") -> NoReturn:
    """Raise the StyGig error that :func:`worker_failure` described, said as StyGig says it.
    ``device``: where the stage's encoder actors ran; an encoder that a GPU actor could not
    load names the way to run on the CPUs instead."""
    data = json.loads(text)
    cls = getattr(errors, str(data.get("type")), StygigError)
    if not (isinstance(cls, type) and issubclass(cls, StygigError)):
        cls = StygigError
    message = f"on a Ray worker: {data.get('message')}"
    if device == "cuda" and data.get("encoder_load"):
        message += " (each encoder actor had a GPU; --ray-device cpu runs them on the CPUs)"
    raise cls(message, code=str(data.get("code")))


#: ``--ray-device``: where encoder actors run.
RAY_DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class ClusterResources:
    """What the cluster offers now (all nodes together)."""

    cpus: float
    gpus: float

    def actor_device(
        self, requested: str = "auto", *, encoder: Mapping[str, Any] | None = None
    ) -> str:
        """Where encoder actors run (``cpu`` or ``cuda``) for ``--ray-device requested``:
        ``auto``, a GPU each when the cluster has GPUs and the encoder (its ``describe()``) can
        use one, else the CPUs; ``cpu`` whatever the cluster has; ``cuda`` only on a cluster
        with GPUs and for an encoder with a GPU path (refused before any work otherwise)."""
        if requested not in RAY_DEVICES:
            raise InvalidOptionsError(f"--ray-device must be one of {', '.join(RAY_DEVICES)}")
        info = encoder or {}
        numpy_only = info.get("runtime") == "numpy"
        if requested == "auto":
            return "cuda" if self.gpus >= 1 and not numpy_only else "cpu"
        if requested == "cuda" and self.gpus < 1:
            raise InvalidOptionsError(
                "--ray-device cuda: the Ray cluster has no GPUs (ray.cluster_resources() "
                f"reports {self.cpus:g} CPUs and none); use --ray-device auto or cpu, or add "
                "GPU nodes"
            )
        if requested == "cuda" and numpy_only:
            raise InvalidOptionsError(
                f"--ray-device cuda: the {info.get('name')} encoder runs on NumPy, on the "
                "CPU; use --ray-device auto or cpu"
            )
        return requested

    def default_actors(self, actor_cpus: float, device: str) -> int:
        """Encoder actors to run: one per GPU on ``cuda`` (the CPUs decode beside them), else
        as many as the CPUs hold (each decodes and embeds its own batches), at least one."""
        if device == "cuda":
            return max(1, int(self.gpus))
        return max(1, int(self.cpus // max(actor_cpus, 1e-3)))


def resources() -> ClusterResources:
    """The connected cluster's CPUs and GPUs."""
    ray = import_ray()
    total = ray.cluster_resources()
    return ClusterResources(float(total.get("CPU", 0.0)), float(total.get("GPU", 0.0)))

"""The encoder protocol and what every backend shares: batch checks, normalising, hashing.

An encoder turns a preprocessed batch (``float32 (n, 3, S, S)``, made by
:func:`stygig.images.preprocess_batch` with the encoder's own :class:`PreprocessSpec`) into
L2-normalised ``float32 (n, dim)`` rows. Backends differ only in how they compute the rows:

* :class:`~stygig.encoders.tiny.TinyEncoder`: NumPy only, deterministic, for tests;
* :class:`TorchEncoder`: a PyTorch module (EfficientNet-Lite0, CLIP ViT-B/32);
* :class:`~stygig.encoders.onnx.OnnxEncoder`: the same model exported to ONNX, run by ONNX Runtime
  with no torch import (the serving path).

Nothing here imports torch at module level: ``import stygig.encoders`` must work on a machine that
only has the ONNX Runtime serving dependencies.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from stygig.errors import ConfigError, EncoderUnavailableError
from stygig.images import PreprocessSpec

if TYPE_CHECKING:
    import torch

__all__ = [
    "ENCODER_NAMES",
    "TORCH_INSTALL_HINT",
    "Encoder",
    "TorchEncoder",
    "check_batch",
    "check_torch_device",
    "l2_normalize",
    "missing_extra",
    "preprocess_from_dict",
    "sha256_file",
    "sha256_files",
    "state_dict_sha256",
]

ENCODER_NAMES: tuple[str, ...] = (
    "clip-vit-b-32",
    "efficientnet-lite0",
    "efficientnet-lite1",
    "efficientnet-lite2",
    "tiny",
)

TORCH_INSTALL_HINT = (
    "install the torch extra: `pip install torch==2.13.0` (the CPU wheel, first) "
    "then `pip install 'stygig[torch]'`"
)


@runtime_checkable
class Encoder(Protocol):
    """What the build pipeline and the recommender need from an image encoder."""

    name: str
    dim: int
    preprocess: PreprocessSpec
    runtime: str

    def encode(self, batch: np.ndarray) -> np.ndarray:
        """Embed a preprocessed ``float32 (n, 3, S, S)`` batch as L2-normalised ``(n, dim)`` rows."""
        ...

    def describe(self) -> dict[str, object]:
        """A JSON-friendly description for the artifact manifest."""
        ...


def missing_extra(what: str, error: ImportError | None = None) -> EncoderUnavailableError:
    """The error raised when an optional dependency (torch, transformers, onnx...) is missing."""
    detail = f" ({error})" if error is not None else ""
    return EncoderUnavailableError(f"{what} is not installed{detail}; {TORCH_INSTALL_HINT}")


def check_batch(batch: np.ndarray, size: int) -> np.ndarray:
    """Validate a preprocessed batch and return it as contiguous float32.

    Raises:
        ValueError: not a ``(n, 3, size, size)`` array. Batches come from
            :func:`stygig.images.preprocess_batch`, so a wrong shape is a programming error, not
            a client's bad input.
    """
    arr = np.asarray(batch)
    if arr.ndim != 4 or arr.shape[1] != 3 or arr.shape[2] != size or arr.shape[3] != size:
        raise ValueError(
            f"expected a preprocessed batch of shape (n, 3, {size}, {size}), got {arr.shape}"
        )
    return np.ascontiguousarray(arr, dtype=np.float32)


def preprocess_from_dict(data: Mapping[str, Any]) -> PreprocessSpec:
    """Rebuild a :class:`PreprocessSpec` from its :meth:`~PreprocessSpec.to_dict` (a manifest).

    Raises:
        EncoderUnavailableError: the dictionary is not a valid preprocessing description.
    """
    try:
        mean = tuple(float(v) for v in data["mean"])
        std = tuple(float(v) for v in data["std"])
        interpolation, resize = data["interpolation"], data["resize"]
        if interpolation not in ("bicubic", "bilinear") or resize not in (
            "shortest_edge",
            "squash",
        ):
            raise ValueError(f"unknown interpolation/resize {interpolation!r}/{resize!r}")
        if len(mean) != 3 or len(std) != 3:
            raise ValueError("mean and std need 3 channels")
        return PreprocessSpec(
            size=int(data["size"]),
            interpolation=interpolation,
            resize=resize,
            mean=(mean[0], mean[1], mean[2]),
            std=(std[0], std[1], std[2]),
            extra={str(k): str(v) for k, v in (data.get("extra") or {}).items()},
        )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise EncoderUnavailableError(f"invalid preprocessing description {data!r}: {e}") from e


def check_torch_device(device: str) -> None:
    """Refuse a device torch cannot use here, with a message instead of an assertion deep inside.

    Raises:
        EncoderUnavailableError: ``cuda`` without a CUDA build of torch or without a GPU.
        ConfigError: a device name other than ``cpu`` or ``cuda``.
    """
    import torch

    if device == "cpu":
        return
    if device != "cuda" and not device.startswith("cuda:"):
        raise ConfigError(f"unknown device {device!r}; use 'cpu' or 'cuda'")
    if not torch.cuda.is_available():
        raise EncoderUnavailableError(
            f"device {device!r} asked for, but torch {torch.__version__} sees no CUDA GPU here"
        )


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Scale each row to unit L2 norm (all-zero rows stay zero) as float32."""
    out = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return np.ascontiguousarray(out / np.maximum(norms, np.float32(1e-12)), dtype=np.float32)


@lru_cache(maxsize=64)
def _sha256_cached(path: str, _mtime_ns: int, _size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: str | Path) -> str:
    """The hex SHA-256 of a file, cached by path, mtime and size (weights are hashed often)."""
    stat = os.stat(path)
    return _sha256_cached(str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size)


def sha256_files(paths: Iterable[Path]) -> str:
    """One SHA-256 for several files (a sharded checkpoint): the hash of their names and hashes."""
    digest = hashlib.sha256()
    for path in sorted(paths, key=lambda p: p.name):
        digest.update(f"{path.name}:{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def state_dict_sha256(module: torch.nn.Module) -> str:
    """One SHA-256 over a module's tensors (names and bytes): identifies random-init weights."""
    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class TorchEncoder:
    """An encoder backed by a PyTorch module that maps ``(n, 3, S, S)`` to ``(n, dim)`` features.

    The module is built by a backend (:mod:`~stygig.encoders.efficientnet`,
    :mod:`~stygig.encoders.clip`); this class only batches, checks and normalises, and is what
    :func:`~stygig.encoders.onnx.export_onnx` exports.

    Args:
        name: the encoder's name, one of :data:`ENCODER_NAMES`.
        module: the torch module, in eval mode, returning un-normalised features.
        dim: the feature width.
        preprocess: how input images must be prepared.
        weights: where the weights came from (``source`` and more) for the manifest.
        weights_sha256: computes the weights' SHA-256 on first :meth:`describe` (hashing a big
            checkpoint is not free, and loading should not wait for it).
        int8_method: how :func:`~stygig.encoders.onnx.export_onnx` quantizes this model:
            ``"dynamic"`` (transformers: int8 MatMul weights) or ``"static"`` (CNNs: calibrated
            per-channel QDQ, because dynamic int8 convolutions lose too much and run slowly).
        device: ``"cpu"`` or ``"cuda"``.
        pooling: how a feature map becomes the vector, for encoders that have a choice
            (EfficientNet: ``gem-p3`` or ``avg``); recorded in the manifest.
    """

    runtime: str = "torch"

    def __init__(
        self,
        *,
        name: str,
        module: torch.nn.Module,
        dim: int,
        preprocess: PreprocessSpec,
        weights: dict[str, object],
        weights_sha256: Callable[[], str],
        int8_method: str,
        device: str = "cpu",
        pooling: str | None = None,
    ) -> None:
        self.name = name
        self.pooling = pooling
        self.module = module
        self.dim = dim
        self.preprocess = preprocess
        self.int8_method = int8_method
        self.device = device
        self._weights = dict(weights)
        self._weights_sha256 = weights_sha256
        self._sha256: str | None = None

    def encode(self, batch: np.ndarray) -> np.ndarray:
        """Embed a preprocessed batch; see :class:`Encoder`."""
        import torch

        arr = check_batch(batch, self.preprocess.size)
        if arr.shape[0] == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        with torch.inference_mode():
            features = self.module(torch.from_numpy(arr).to(self.device))
            out = features.float().cpu().numpy()
        return l2_normalize(out)

    def weights_info(self) -> dict[str, object]:
        """The weights' provenance, with their SHA-256 (computed once)."""
        if self._sha256 is None:
            self._sha256 = self._weights_sha256()
        return {**self._weights, "sha256": self._sha256}

    def describe(self) -> dict[str, object]:
        """A JSON-friendly description for the artifact manifest."""
        pooling = {} if self.pooling is None else {"pooling": self.pooling}
        return {
            "name": self.name,
            "dim": self.dim,
            "preprocess": self.preprocess.to_dict(),
            **pooling,
            "runtime": self.runtime,
            "weights": self.weights_info(),
            "quantization": None,
            "onnx_file": None,
        }

    def __repr__(self) -> str:
        return f"TorchEncoder(name={self.name!r}, dim={self.dim}, device={self.device!r})"

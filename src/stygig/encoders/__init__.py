"""Image encoders: a photo batch in, L2-normalised embeddings out.

::

    enc = load_encoder("efficientnet-lite0")                 # torch, packaged weights
    enc = load_encoder("clip-vit-b-32", weights="clip-dir")  # local Hugging Face checkpoint
    enc = load_encoder("clip-vit-b-32", runtime="onnx", int8=True, random_weights=True)
    vecs = enc.encode(preprocess_batch(images, enc.preprocess))  # float32 (n, enc.dim)

    export_onnx(enc, Path("artifact/encoder.onnx"))               # build time, needs torch
    enc = load_onnx_encoder(Path("artifact/encoder.onnx"), manifest["encoder"])  # serving, no torch

Importing this package never imports torch; backends import it when they are built.
"""

from __future__ import annotations

import os
from pathlib import Path

from stygig.encoders.base import ENCODER_NAMES, Encoder, TorchEncoder, l2_normalize
from stygig.encoders.onnx import OnnxEncoder, export_onnx, load_onnx_encoder
from stygig.encoders.tiny import TinyEncoder
from stygig.errors import ConfigError

__all__ = [
    "ENCODER_NAMES",
    "Encoder",
    "OnnxEncoder",
    "TinyEncoder",
    "TorchEncoder",
    "export_onnx",
    "l2_normalize",
    "load_encoder",
    "load_onnx_encoder",
]

_RUNTIMES = ("auto", "torch", "onnx", "numpy")


def _onnx_cache_dir() -> Path:
    root = os.environ.get("STYGIG_CACHE_DIR") or Path.home() / ".cache" / "stygig"
    return Path(root) / "onnx"


def _build_torch(
    name: str,
    *,
    weights: str | Path | None,
    random_weights: bool,
    model_id: str | None,
    device: str,
    pooling: str | None,
) -> TorchEncoder:
    from stygig.encoders.efficientnet import (
        DEFAULT_POOLING,
        is_efficientnet,
        load_efficientnet_lite,
    )

    if is_efficientnet(name):
        if model_id is not None:
            raise ConfigError("model_id applies to CLIP encoders only")
        return load_efficientnet_lite(
            name,
            weights,
            random_weights=random_weights,
            device=device,
            pooling=DEFAULT_POOLING if pooling is None else pooling,
        )
    if pooling is not None:
        raise ConfigError("pooling applies to EfficientNet encoders only")
    from stygig.encoders.clip import DEFAULT_MODEL_ID, load_clip

    return load_clip(
        model_id=model_id or DEFAULT_MODEL_ID,
        weights=weights,
        random_weights=random_weights,
        device=device,
    )


def load_encoder(
    name: str,
    *,
    runtime: str = "auto",
    weights: str | Path | None = None,
    int8: bool = False,
    random_weights: bool = False,
    model_id: str | None = None,
    device: str = "cpu",
    threads: int | None = None,
    onnx_dir: str | Path | None = None,
    pooling: str | None = None,
) -> Encoder:
    """Build an encoder by name.

    Args:
        name: one of :data:`ENCODER_NAMES`.
        runtime: ``"torch"``, ``"onnx"``, ``"numpy"`` (tiny only) or ``"auto"``: torch, or ONNX
            when ``int8`` is asked for.
        weights: a local weights file (EfficientNet ``.pth``) or directory (CLIP, Hugging Face
            format); default: the packaged weights / the Hugging Face cache or Hub.
        int8: an int8-quantized ONNX model (needs the ONNX runtime).
        random_weights: seeded random weights, for tests and benchmarks of shape and cost only.
        model_id: another CLIP checkpoint on the Hub or in the cache (e.g. a FashionCLIP
            fine-tune).
        device: ``"cpu"`` or ``"cuda"``.
        threads: ONNX Runtime intra-op threads (default all cores).
        onnx_dir: where the ``runtime="onnx"`` export is written; default a cache directory
            (``$STYGIG_CACHE_DIR`` or ``~/.cache/stygig``) keyed by the weights' hash and the
            pooling, reused.
        pooling: EfficientNet's pool, ``gem-p3`` (default) or ``avg``
            (:data:`~stygig.encoders.efficientnet.POOLINGS`).

    Raises:
        ConfigError: an unknown name or runtime, or options that do not go together.
        EncoderUnavailableError: a missing extra or unreachable weights.
    """
    if name not in ENCODER_NAMES:
        raise ConfigError(f"unknown encoder {name!r}; choose one of {', '.join(ENCODER_NAMES)}")
    if runtime not in _RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r}; choose one of {', '.join(_RUNTIMES)}")
    if name == "tiny":
        if runtime not in ("auto", "numpy") or int8 or weights is not None or pooling is not None:
            raise ConfigError(
                "the tiny encoder runs on NumPy only, with no weights, int8 or pooling"
            )
        if device != "cpu":
            raise ConfigError(f"the tiny encoder runs on NumPy, on the CPU: not on {device!r}")
        return TinyEncoder()
    if runtime == "numpy":
        raise ConfigError(f"{name} runs on torch or onnx, not numpy")
    if runtime == "auto":
        runtime = "onnx" if int8 else "torch"
    if int8 and runtime != "onnx":
        raise ConfigError("int8 is an ONNX Runtime model; use runtime='onnx' (or 'auto')")

    encoder = _build_torch(
        name,
        weights=weights,
        random_weights=random_weights,
        model_id=model_id,
        device=device,
        pooling=pooling,
    )
    if runtime == "torch":
        return encoder
    info = encoder.describe()
    sha = str(encoder.weights_info()["sha256"])
    directory = Path(onnx_dir) if onnx_dir is not None else _onnx_cache_dir()
    pool = f"-{encoder.pooling}" if encoder.pooling else ""
    path = directory / f"{name}{pool}-{sha[:16]}-{'int8' if int8 else 'fp32'}.onnx"
    if not path.is_file():
        export_onnx(encoder, path, int8=int8)
    return load_onnx_encoder(path, info, threads=threads, device=device)

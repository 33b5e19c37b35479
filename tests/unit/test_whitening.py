"""PCA whitening: decorrelates on the kept dims, normalises, round-trips through one .npz."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stygig.errors import ArtifactError, InvalidOptionsError
from stygig.whitening import Whitening


def _correlated(n: int = 2000, d: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((d, d)) * np.linspace(3.0, 0.2, d)
    return (rng.standard_normal((n, d)) @ mixing + 5.0).astype(np.float32)


def test_transform_has_identity_covariance_on_kept_dims() -> None:
    x = _correlated()
    w = Whitening.fit(x, dim=8, shrinkage=0.0, power=1.0)
    y = w.transform(x)
    assert y.shape == (2000, 8)
    np.testing.assert_allclose(y.mean(axis=0), 0.0, atol=1e-3)
    np.testing.assert_allclose(np.cov(y, rowvar=False), np.eye(8), atol=1e-3)


def test_apply_is_l2_normalised_float32() -> None:
    x = _correlated()
    y = Whitening.fit(x).apply(x[:10])
    assert y.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, atol=1e-5)


def test_shrinkage_and_power_soften_the_scaling() -> None:
    x = _correlated()
    full = Whitening.fit(x, dim=None, shrinkage=0.0, power=1.0)
    soft = Whitening.fit(x, dim=None, shrinkage=0.5, power=0.5)

    def ratio(w: Whitening) -> float:
        return float(w.scale.max() / w.scale.min())

    assert ratio(soft) < ratio(full)
    assert full.dim == 16
    assert Whitening.fit(x[:5], dim=256).dim == 4  # capped at n - 1


def test_save_load_round_trip(tmp_path: Path) -> None:
    x = _correlated()
    w = Whitening.fit(x, dim=4, shrinkage=0.2, power=0.5)
    path = w.save(tmp_path / "whitening.npz")
    back = Whitening.load(path)
    np.testing.assert_array_equal(back.apply(x[:5]), w.apply(x[:5]))
    assert back.describe() == w.describe()
    assert back.describe()["dim"] == 4


def test_bad_input_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidOptionsError):
        Whitening.fit(np.zeros((1, 4)))
    with pytest.raises(InvalidOptionsError):
        Whitening.fit(np.zeros((10, 4)), dim=0)
    with pytest.raises(InvalidOptionsError):
        Whitening.fit(_correlated(), shrinkage=2.0)
    with pytest.raises(InvalidOptionsError):
        Whitening.fit(_correlated(), dim=4).apply(np.zeros((2, 3)))
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ArtifactError):
        Whitening.load(tmp_path / "bad.npz")

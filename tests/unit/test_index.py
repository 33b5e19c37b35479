from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stygig.errors import InvalidOptionsError
from stygig.index import FLAT_MAX_ITEMS, build_index, choose_kind, load_index


def _unit(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _clustered(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, d))
    x = centres[rng.integers(0, 20, n)] + 0.3 * rng.normal(size=(n, d))
    x = x.astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_exact_matches_brute_force_with_deterministic_ties() -> None:
    x = _unit(300, 16)
    x[10] = x[20]  # an exact tie: the lower id must come first
    idx = build_index(x, "exact")
    scores, ids = idx.search(x[20], 5)
    assert ids[0, 0] == 10 and ids[0, 1] == 20
    assert scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    brute = np.argsort(-(x @ x[:3].T).T, axis=1, kind="stable")[:, :7]
    assert (idx.search(x[:3], 7)[1][:, 1:] == brute[:, 1:]).all()


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_faiss_agrees_with_exact_oracle(kind: str) -> None:
    x = _clustered(3000, 32)
    q = _clustered(50, 32, seed=1)
    oracle = build_index(x, "exact").search(q, 10)[1]
    got = build_index(x, kind).search(q, 10)[1]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(oracle, got, strict=True)])
    assert recall >= (1.0 if kind == "flat" else 0.9)


@pytest.mark.parametrize("storage", ["fp16", "flat"])
def test_ivf_storage_float16_and_float32(tmp_path: Path, storage: str) -> None:
    """IVF lists in float16 (the default) find the neighbours float32 lists find, with inner
    products within 1e-3 of the exact ones, and survive a save/load round trip."""
    x = _clustered(3000, 32)
    q = _clustered(50, 32, seed=1)
    idx = build_index(x, "ivf", nlist=16, nprobe=16, storage=storage)  # every list: exhaustive
    assert idx.params()["storage"] == storage
    scores, ids = idx.search(q, 10)
    oracle_ids = build_index(x, "exact").search(q, 10)[1]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(oracle_ids, ids, strict=True)])
    assert recall >= 0.98
    exact = np.einsum("ij,ij->i", np.repeat(q, 10, axis=0), x[ids.ravel()]).reshape(ids.shape)
    tolerance = 1e-3 if storage == "fp16" else 1e-5
    assert np.abs(scores - exact).max() <= tolerance
    idx.save(tmp_path)
    loaded = load_index(tmp_path, "ivf", x, idx.params())
    assert (loaded.search(q, 10)[1] == ids).all()


def test_ivf_storage_must_be_known() -> None:
    with pytest.raises(InvalidOptionsError, match="storage"):
        build_index(_unit(500, 8), "ivf", nlist=4, storage="pq")


def test_k_larger_than_index_pads_with_minus_one() -> None:
    x = _unit(4, 8)
    for kind in ("exact", "flat"):
        scores, ids = build_index(x, kind).search(x[0], 6)
        assert ids.shape == (1, 6) and (ids[0, 4:] == -1).all()
        assert np.isneginf(scores[0, 4:]).all()
        assert sorted(ids[0, :4].tolist()) == [0, 1, 2, 3]


@pytest.mark.parametrize("kind", ["exact", "flat", "hnsw"])
def test_remove_hides_items(kind: str) -> None:
    x = _unit(200, 16)
    idx = build_index(x, kind)
    idx.remove(np.array([0, 5]))
    ids = idx.search(x[[0, 5]], 10)[1]
    assert 0 not in ids and 5 not in ids and (ids >= 0).all()


def test_bad_queries() -> None:
    idx = build_index(_unit(10, 8), "exact")
    with pytest.raises(InvalidOptionsError, match="dim"):
        idx.search(np.zeros((1, 4), np.float32), 3)
    with pytest.raises(InvalidOptionsError, match="k must"):
        idx.search(np.zeros((1, 8), np.float32), 0)
    with pytest.raises(InvalidOptionsError, match="unknown index kind"):
        build_index(_unit(10, 8), "annoy")


def test_choose_kind_by_size() -> None:
    assert choose_kind(1000) == "flat"
    assert choose_kind(FLAT_MAX_ITEMS + 1) == "ivf"


@pytest.mark.parametrize("kind", ["flat", "hnsw", "exact"])
def test_save_and_load_round_trip(tmp_path: Path, kind: str) -> None:
    x = _unit(500, 16)
    idx = build_index(x, kind)
    idx.save(tmp_path)
    again = load_index(tmp_path, kind, x, idx.params())
    q = x[:5]
    assert (idx.search(q, 5)[1] == again.search(q, 5)[1]).all()
    assert again.params() == idx.params()

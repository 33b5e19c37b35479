from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stygig.errors import ArtifactError, InvalidOptionsError
from stygig.index import (
    FLAT_MAX_ITEMS,
    PartitionedIndex,
    build_index,
    choose_kind,
    is_exhaustive,
    load_index,
    similarities,
    top_k,
)


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


def test_hnsw_returns_as_many_neighbours_as_asked() -> None:
    """Review (s38): HNSW returned at most efSearch (128) neighbours whatever k asked."""
    x = _clustered(3000, 32)
    index = build_index(x, "hnsw")
    scores, ids = index.search(x[:2], 1000)
    assert (ids >= 0).all() and np.isfinite(scores).all()
    assert index.index.hnsw.efSearch == 128  # widened for that search only


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


def _labels(n: int) -> list[str]:
    return [("top", "bottom", "shoes")[i % 3] if i % 7 else "bag" for i in range(n)]


def test_partitioned_index_merges_to_the_exact_top_k() -> None:
    x = _clustered(1200, 16)
    q = _clustered(20, 16, seed=1)
    labels = _labels(len(x))
    idx = build_index(x, "flat", labels, "slot")
    assert isinstance(idx, PartitionedIndex) and idx.ntotal == len(x)
    assert [p["name"] for p in idx.params()["parts"]] == ["bag", "bottom", "shoes", "top"]
    assert is_exhaustive(idx)  # flat parts: the engine scores every item, as for one flat index
    assert not is_exhaustive(build_index(x, "ivf", labels, "slot", nlist=4))
    oracle_s, oracle_ids = build_index(x, "exact").search(q, 25)
    scores, ids = idx.search(q, 25)
    assert (ids == oracle_ids).all()
    np.testing.assert_allclose(scores, oracle_s, atol=1e-5)


def test_partitioned_index_gives_every_part_its_share() -> None:
    x = _clustered(1200, 16)
    labels = np.array(_labels(len(x)))
    idx = build_index(x, "auto", list(labels), "slot")
    q = x[labels == "top"][:5]  # queries from one part: a global top-k would be mostly tops
    scores, ids = idx.search_each(q, 10)
    assert ids.shape == (5, 40) and (np.diff(scores, axis=1) <= 1e-6).all()
    for row_ids, query in zip(ids, q, strict=True):
        for name in ("bag", "bottom", "shoes", "top"):
            rows = np.flatnonzero(labels == name)
            best = rows[np.argsort(-(x[rows] @ query), kind="stable")[:10]]
            assert set(row_ids[labels[row_ids] == name]) == set(best)


def test_partitioned_index_removes_saves_and_loads(tmp_path: Path) -> None:
    x = _clustered(3000, 16)
    labels = ["big"] * 2000 + ["small"] * 1000
    idx = build_index(x, "ivf", labels, "slot", nlist=8, nprobe=8)
    assert [p["kind"] for p in idx.params()["parts"]] == ["ivf", "ivf"]
    files = idx.save(tmp_path)
    assert sorted(files) == ["index-part0.faiss", "index-part1.faiss", "index-partitions.npy"]
    again = load_index(tmp_path, idx.kind, x, idx.params())
    assert isinstance(again, PartitionedIndex) and again.by == "slot"
    assert (again.search(x[:4], 10)[1] == idx.search(x[:4], 10)[1]).all()
    again.remove(np.array([0, 2500]))
    ids = again.search(x[[0, 2500]], 10)[1]
    assert 0 not in ids and 2500 not in ids and (ids >= 0).all()
    assert again.removed is not None and again.removed.sum() == 2
    bad = dict(idx.params())
    bad["parts"] = [{**bad["parts"][0], "items": 1999}, bad["parts"][1]]
    with pytest.raises(ArtifactError, match="rows"):
        load_index(tmp_path, idx.kind, x, bad)
    with pytest.raises(ArtifactError, match="does not match"):
        load_index(tmp_path, idx.kind, x[:10], idx.params())
    with pytest.raises(InvalidOptionsError, match="one per row"):
        build_index(x, "flat", labels[:10])


def test_partition_probes_follow_the_scan_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small catalogues get more probes for the same work (here: every list), never under 32."""
    import stygig.index as index_module

    x = _unit(12_400, 8)
    labels = ["a"] * 6200 + ["b"] * 6200  # two IVF parts of 6,200 (above PART_FLAT_MAX_ITEMS)
    parts = build_index(x, "auto", labels, "slot").params()["parts"]
    assert [p["kind"] for p in parts] == ["ivf", "ivf"]
    assert all(p["nprobe"] == p["nlist"] == 157 for p in parts)  # 2 sqrt(6200): exhaustive
    monkeypatch.setattr(index_module, "PART_SCAN_BUDGET", 100)
    parts = build_index(x, "auto", labels, "slot").params()["parts"]
    assert all(p["nprobe"] == index_module.PART_MIN_NPROBE for p in parts)


def test_top_k_of_one_query_is_the_sorted_best_with_ties_removed_rows_and_nan() -> None:
    """One query (the photo path): the best k by score, ties to the lower id, removed rows and
    NaN never returned, -1 / -inf padding when fewer than k remain; the same as the general
    path for several queries."""
    rng = np.random.default_rng(5)
    sims = rng.normal(size=(1, 2_000)).astype(np.float32)
    sims[0, [10, 20, 30]] = 5.0  # a three-way tie at the top
    removed = np.zeros(2_000, bool)
    removed[[20, 7, 8]] = True
    sims[0, 9] = np.nan
    scores, ids = top_k(sims, 6, removed)
    alive = np.flatnonzero(~removed & np.isfinite(sims[0]))
    order = alive[np.lexsort((alive, -sims[0, alive]))][:6]
    np.testing.assert_array_equal(ids[0], order)
    assert ids[0, :2].tolist() == [10, 30]
    np.testing.assert_array_equal(scores[0], sims[0, order])
    two = np.vstack([sims, sims])  # the argpartition path gives the same
    np.testing.assert_array_equal(top_k(two, 6, removed)[1], np.vstack([ids, ids]))
    few = np.full((1, 5), -np.inf, np.float32)
    few[0, 3] = 0.5
    scores, ids = top_k(few, 3)
    assert (
        ids.tolist() == [[3, -1, -1]] and scores[0, 0] == 0.5 and np.isneginf(scores[0, 1:]).all()
    )


def test_similarities_match_the_matrix_product_for_one_query_and_several() -> None:
    rng = np.random.default_rng(3)
    matrix = rng.normal(size=(500, 64)).astype(np.float32)
    for m in (1, 3):
        queries = rng.normal(size=(m, 64)).astype(np.float32)
        got = similarities(matrix, queries)
        assert got.shape == (500, m)
        np.testing.assert_allclose(got, matrix @ queries.T, rtol=1e-5, atol=1e-5)


def _claiming(file: Path, marker: bytes, skip: int, value: int) -> None:
    """Rewrite the 8-byte field ``skip`` bytes after ``marker`` in ``file`` with ``value``."""
    data = bytearray(file.read_bytes())
    at = data.index(marker) + skip
    data[at : at + 8] = value.to_bytes(8, "little")
    file.write_bytes(bytes(data))


def test_a_flat_index_claiming_more_than_its_file_holds_is_refused_before_allocating(
    tmp_path: Path,
) -> None:
    """Review (session 41): FAISS allocated (and zero-filled) what a vector's length claimed
    before finding the file short: 1 GiB for a 1 KB file, the OOM killer or ``std::bad_alloc``
    for more. An exact catalogue's flat index is checked against its file first (a header
    whose counts disagree is refused too); FAISS's C++ text stays out of every message."""
    x = _clustered(3000, 32)
    for kind in ("flat", "hnsw"):
        folder = tmp_path / kind
        folder.mkdir()
        idx = build_index(x, kind)
        idx.save(folder)
        found = load_index(folder, kind, x, idx.params()).search(x[:3], 5)[1]
        assert found[:, 0].tolist() == [0, 1, 2]
    flat = tmp_path / "flat" / "index.faiss"
    whole = flat.read_bytes()
    # the codes' float count (after fourcc, d, ntotal, two placeholders, is_trained, metric)
    _claiming(flat, b"IxFI", 37, 1 << 36)
    with pytest.raises(ArtifactError, match=r"index\.faiss claims more than the file holds"):
        load_index(tmp_path / "flat", "flat", x, {})
    flat.write_bytes(whole[:8] + (2999).to_bytes(8, "little") + whole[16:])  # ntotal lies
    with pytest.raises(ArtifactError, match="claims more than the file holds"):
        load_index(tmp_path / "flat", "flat", x, {})
    cut = tmp_path / "hnsw" / "index.faiss"
    cut.write_bytes(cut.read_bytes()[:-100])
    with pytest.raises(ArtifactError) as caught:
        load_index(tmp_path / "hnsw", "hnsw", x, {})
    assert "cut short" in caught.value.message
    assert ".cpp" not in caught.value.message and "Error in" not in caught.value.message


def test_an_index_of_another_dimension_than_the_embeddings_is_refused(tmp_path: Path) -> None:
    """Review (session 41): a 128-d index beside 64-d embeddings loaded, and then refused every
    query as the client's error (exit 2); so did a split index's part."""
    x = _clustered(600, 16)
    wide = _clustered(600, 32)
    for kind in ("flat", "hnsw"):
        folder = tmp_path / kind
        folder.mkdir()
        params = build_index(x, kind).params()
        build_index(wide, kind).save(folder)  # the same rows, another dimension
        with pytest.raises(ArtifactError, match="holds 32-d vectors but the embeddings are 16-d"):
            load_index(folder, kind, x, params)
    labels = ["a"] * 300 + ["b"] * 300
    split = build_index(x, "flat", labels)
    for name in ("split", "part"):
        (tmp_path / name).mkdir()
    split.save(tmp_path / "split")
    build_index(wide[labels.index("b") :], "flat").save(tmp_path / "part")
    (tmp_path / "part" / "index.faiss").replace(tmp_path / "split" / "index-part1.faiss")
    with pytest.raises(ArtifactError, match=r"index-part1\.faiss holds 32-d vectors"):
        load_index(tmp_path / "split", split.kind, x, split.params())


def _tampered_ivf(tmp_path: Path, kind: str, change: str) -> tuple[np.ndarray, dict[str, Any]]:
    """An IVF index saved, one list's ids changed in place, written again (FAISS reads ids as
    written: the artifact's checksums would be re-signed by whoever tampered)."""
    import faiss

    x = _clustered(600, 16)
    params = {"nlist": 8, "nprobe": 8} if kind == "ivf" else {}
    idx = build_index(x, kind, **params)
    codes = idx.index if kind == "ivf" else idx.segments[0].codes
    lists = faiss.extract_index_ivf(codes).invlists
    nlist = int(faiss.extract_index_ivf(codes).nlist)
    first, second = [n for n in range(nlist) if lists.list_size(n)][:2]
    ids = faiss.rev_swig_ptr(lists.get_ids(first), lists.list_size(first))  # a writable view
    if change == "outside":
        ids[0] = len(x) + 5
    elif change == "negative":
        ids[0] = -3
    elif change == "twice":  # one row held twice, another row never
        ids[0] = faiss.rev_swig_ptr(lists.get_ids(second), lists.list_size(second))[0]
    idx.save(tmp_path)
    return x, idx.params()


@pytest.mark.parametrize("kind", ["ivf", "ivfpq"])
@pytest.mark.parametrize("change", ["outside", "negative", "twice"])
def test_an_ivf_list_naming_rows_it_does_not_hold_once_is_refused_at_load(
    tmp_path: Path, kind: str, change: str
) -> None:
    """Review (session 51): an id past the table made every search probing its list an
    IndexError (a 500 per request), and an id held twice answered one item twice."""
    x, params = _tampered_ivf(tmp_path, kind, change)
    with pytest.raises(ArtifactError, match=r"index index\.faiss: (a list|its lists)") as err:
        load_index(tmp_path, kind, x, params)
    assert str(tmp_path) not in str(err.value)


@pytest.mark.parametrize("kind", ["ivf", "ivfpq", "hnsw"])
def test_untampered_indexes_load_and_answer(tmp_path: Path, kind: str) -> None:
    x = _clustered(600, 16)
    idx = build_index(x, kind, **({"nlist": 8, "nprobe": 8} if kind == "ivf" else {}))
    idx.save(tmp_path)
    loaded = load_index(tmp_path, kind, x, idx.params())
    assert (loaded.search(x[:3], 5)[1][:, 0] == [0, 1, 2]).all()


def _edit_graph(hnsw: Any, change: str, n: int) -> None:
    import faiss

    links = faiss.rev_swig_ptr(hnsw.neighbors.data(), hnsw.neighbors.size())
    offsets = faiss.rev_swig_ptr(hnsw.offsets.data(), hnsw.offsets.size())
    levels = faiss.rev_swig_ptr(hnsw.levels.data(), hnsw.levels.size())
    if change == "link":
        links[3] = n + 100
    elif change == "link_negative":
        links[3] = -7
    elif change == "offset":
        offsets[n // 2] += 1
    elif change == "offset_end":
        offsets[-1] += 1_000_000
    elif change == "level":
        levels[5] = 40
    elif change == "entry":
        hnsw.entry_point = n + 1
    elif change == "top":
        hnsw.max_level = 9


@pytest.mark.parametrize(
    "change", ["link", "link_negative", "offset", "offset_end", "level", "entry", "top"]
)
def test_an_hnsw_graph_outside_its_rows_is_refused_at_load(tmp_path: Path, change: str) -> None:
    """An HNSW graph's links and offsets are followed in C++: one past its arrays would be read
    outside them. FAISS's reader checks them (this guards the FAISS floor, pyproject.toml)."""
    import faiss

    x = _clustered(600, 16)
    idx = build_index(x, "hnsw")
    _edit_graph(idx.index.hnsw, change, len(x))
    faiss.write_index(idx.index, str(tmp_path / "index.faiss"))
    with pytest.raises(ArtifactError, match=r"cannot read FAISS index index\.faiss"):
        load_index(tmp_path, "hnsw", x, idx.params())

"""The IVF-PQ index with exact re-ranking from float16 rows on disk (stygig.index_pq)."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from stygig.errors import ArtifactError, InvalidOptionsError
from stygig.index import ExactIndex, PartitionedIndex
from stygig.index_pq import (
    DEFAULT_RERANK_EXTRA,
    PQIndex,
    add_chunk,
    default_nprobe,
    default_pq_params,
    merge_chunks,
    store_rows,
    train_pq,
    write_store,
)

DIM = 32


def clustered(n: int, seed: int = 0, clusters: int = 16) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, DIM))
    x = centres[rng.integers(0, clusters, n)] + 0.5 * rng.normal(size=(n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(autouse=True, scope="module")
def one_faiss_thread() -> Iterator[None]:
    """Training on one thread: OpenMP's spinning threads crawl on shared cores."""
    import faiss

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(threads)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return clustered(4000), clustered(20, seed=1)


@pytest.fixture(scope="module")
def built(data: tuple[np.ndarray, np.ndarray]) -> PQIndex:
    return PQIndex.build(data[0])


def exact_fp16(x: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    return ExactIndex(x.astype(np.float16).astype(np.float32)).search(q, k)


def recall(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([len(set(x) & set(y)) / len(x) for x, y in zip(a, b, strict=True)]))


def test_defaults_follow_size_and_dimension() -> None:
    p = default_pq_params(1_000_000, 512)
    assert (p["nlist"], p["m"], p["nbits"], p["nprobe"]) == (1000, 512, 4, 32)
    assert default_pq_params(0, 8)["nlist"] == 1


def test_probes_fall_with_the_whole_catalogues_size() -> None:
    """32 probes up to 5M items (measured: recall@50 0.986 at 5M), 24 at 10M (measured: 32
    probes miss the 10 ms target there, 24 meet it with recall@50 0.961), never fewer."""
    assert [default_nprobe(n) for n in (0, 1_000_000, 5_000_000)] == [32, 32, 32]
    assert [default_nprobe(n) for n in (6_000_000, 7_000_000, 10_000_000)] == [29, 27, 24]
    assert default_nprobe(100_000_000) == 24
    # A part's lists follow its own size, its probes the catalogue's.
    part = default_pq_params(2_500_000, 512, n_total=10_000_000)
    assert (part["nlist"], part["nprobe"]) == (1581, 24)
    assert default_pq_params(2_500_000, 512)["nprobe"] == 32


def test_a_split_plan_probes_its_ivfpq_parts_by_the_whole_catalogue(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """plan_parts (the local and the Ray build's plan) gives every IVF-PQ part the probes of
    the catalogue's size, and an operator's --nprobe wins."""
    import stygig.index as index_module
    import stygig.index_pq as pq_module
    from stygig.index import plan_parts

    monkeypatch.setattr(index_module, "PQ_MIN_ITEMS", 100)
    monkeypatch.setattr(index_module, "PART_FLAT_MAX_ITEMS", 100)
    monkeypatch.setattr(pq_module, "NPROBE_FULL_ITEMS", 100)  # 400 items: 32 sqrt(1/4) -> 24
    labels = ["a"] * 150 + ["b"] * 250
    _, _, kinds, params = plan_parts(labels, 400, "auto", {})
    assert kinds == ["ivfpq", "ivfpq"] and [p["nprobe"] for p in params] == [24, 24]
    _, _, _, params = plan_parts(labels, 400, "auto", {"nprobe": 40})
    assert [p["nprobe"] for p in params] == [40, 40]
    monkeypatch.setattr(pq_module, "NPROBE_FULL_ITEMS", 1_000)
    _, _, _, params = plan_parts(labels, 400, "auto", {})
    assert [p["nprobe"] for p in params] == [32, 32]


def test_scores_are_exact_float16_inner_products(
    built: PQIndex, data: tuple[np.ndarray, np.ndarray]
) -> None:
    x, q = data
    scores, ids = built.search(q, 10)
    assert ids.shape == (20, 10) and (ids >= 0).all()
    assert recall(exact_fp16(x, q, 10)[1], ids) >= 0.9
    # every returned score is the row's inner product (float16 row, float32 query), best first
    got = np.einsum("qkd,qd->qk", x[ids].astype(np.float16).astype(np.float32), q)
    np.testing.assert_allclose(scores, got, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 0).all()


def test_probing_every_list_with_a_full_shortlist_is_exact(
    data: tuple[np.ndarray, np.ndarray],
) -> None:
    x, q = data
    index = PQIndex.build(x, nlist=16, nprobe=16, rerank_extra=len(x))
    _, ids = index.search(q, 10)
    assert recall(exact_fp16(x, q, 10)[1], ids) == 1.0


def test_remove_hides_rows_and_without_keeps_the_original(
    built: PQIndex, data: tuple[np.ndarray, np.ndarray]
) -> None:
    q = data[1][:3]
    _, ids = built.search(q, 5)
    gone = ids[:, 0]
    copy = built.without(gone)
    _, after = copy.search(q, 5)
    assert not np.isin(after, gone).any() and (after >= 0).all()
    assert built.n_removed == 0 and np.array_equal(built.search(q, 5)[1], ids)


def test_k_beyond_the_index_pads(data: tuple[np.ndarray, np.ndarray]) -> None:
    small = PQIndex.build(data[0][:40], nlist=4)
    scores, ids = small.search(data[1][:2], 50)
    assert ids.shape == (2, 50) and (ids[:, 40:] == -1).all() and np.isinf(scores[:, 40:]).all()
    assert sorted(ids[0, :40].tolist()) == list(range(40))


def test_save_and_load_reads_rows_from_disk(
    tmp_path: Path, built: PQIndex, data: tuple[np.ndarray, np.ndarray]
) -> None:
    x, q = data
    files = built.save(tmp_path, "index-part0.faiss")
    assert files == ["index-part0.faiss", "index-part0-vectors.faiss"]
    loaded = PQIndex.load(tmp_path, "index-part0.faiss", len(x), built.params())
    assert loaded.segments[0].file == tmp_path / "index-part0-vectors.faiss"
    assert loaded.warm() == (tmp_path / "index-part0-vectors.faiss").stat().st_size
    assert built.warm() == 0  # rows in memory: nothing to read
    np.testing.assert_array_equal(loaded.search(q, 10)[1], built.search(q, 10)[1])
    rows = store_rows(tmp_path / "index-part0-vectors.faiss", len(x), DIM)
    np.testing.assert_allclose(rows, x.astype(np.float16), atol=5e-4)  # FAISS rounds ties apart
    # saving where it was loaded from rewrites the codes only, never the mapped rows
    before = (tmp_path / "index-part0-vectors.faiss").stat().st_mtime_ns
    loaded.save(tmp_path, "index-part0.faiss")
    assert (tmp_path / "index-part0-vectors.faiss").stat().st_mtime_ns == before
    with pytest.raises(ArtifactError):
        PQIndex.load(tmp_path, "index-part0.faiss", len(x) + 1, None)
    (tmp_path / "index-part0.faiss").write_bytes(b"not an index")
    with pytest.raises(ArtifactError, match="cannot read"):
        PQIndex.load(tmp_path, "index-part0.faiss", len(x), None)


def rss_file_kb() -> int:
    """This process's resident file-mapped memory (``RssFile`` in /proc/self/status)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    raise AssertionError("no RssFile in /proc/self/status")


def test_gathered_rows_rerank_as_faiss_index_refine_to_the_bit(
    rows_on_disk: tuple[Path, np.ndarray],
) -> None:
    """Re-ranking rows gathered with ``pread`` gives the very floats and ids FAISS's
    ``IndexRefine`` gives over the mapped rows file (how every row was re-ranked before
    ``mapped_rows_mb``, and still is where the rows fit in it)."""
    path, wide = rows_on_disk
    read = PQIndex.load(path, "big.faiss", len(wide), {"mapped_rows_mb": 0}).segments[0]
    mapped = PQIndex.load(path, "big.faiss", len(wide), None).segments[0]
    assert read.held is None
    assert mapped.held is not None and mapped.held.refine is not None
    q = wide[::40] + 0.05
    for k in (10, 50, 293):
        want = mapped.search(q, k, DEFAULT_RERANK_EXTRA, 8)
        got = read.search(q, k, DEFAULT_RERANK_EXTRA, 8)
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[0], want[0])


@pytest.fixture(scope="module")
def rows_on_disk(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A saved index of 8000 256-d rows: a 4 MB rows file."""
    x = clustered(8000, seed=3)
    wide = np.repeat(x, 8, axis=1) / np.sqrt(8)
    path = tmp_path_factory.mktemp("rows")
    PQIndex.build(wide, nlist=16).save(path, "big.faiss")
    return path, wide


def test_unmapped_rows_are_read_never_mapped(rows_on_disk: tuple[Path, np.ndarray]) -> None:
    """With ``mapped_rows_mb`` 0 a loaded index gathers the rows the file holds (runs of
    consecutive ids and single ids) without mapping the rows file: warming and searching leave
    it out of /proc/self/maps and do not grow the process's file-backed resident memory."""
    path, wide = rows_on_disk
    rows_file = path / "big-vectors.faiss"
    size = rows_file.stat().st_size
    loaded = PQIndex.load(path, "big.faiss", len(wide), {"mapped_rows_mb": 0})
    before = rss_file_kb()
    assert loaded.warm() == size
    loaded.search(wide[::40], 50)
    grown_kb = rss_file_kb() - before
    assert str(rows_file) not in Path("/proc/self/maps").read_text()
    assert grown_kb < size / 1024 / 4

    seg = loaded.segments[0]
    ids = np.array([0, 1, 2, 3, 17, 100, 101, 4999, len(wide) - 2, len(wide) - 1])
    on_disk = store_rows(rows_file, len(wide), wide.shape[1])
    np.testing.assert_array_equal(seg.gather(ids), on_disk[ids])
    np.testing.assert_array_equal(seg.gather(np.arange(len(wide))), on_disk)
    del on_disk


def test_mapped_rows_bound_the_resident_rows(rows_on_disk: tuple[Path, np.ndarray]) -> None:
    """``mapped_rows_mb`` of a quarter of the file maps the first quarter of the rows: reading
    every row makes at most that quarter resident, the rows either side of the cut come back
    as the file holds them, and the answers are those of the index with every row mapped."""
    path, wide = rows_on_disk
    size = (path / "big-vectors.faiss").stat().st_size
    mb = len(wide) * wide.shape[1] * 2 / 4 / 2**20
    quarter = PQIndex.load(path, "big.faiss", len(wide), {"mapped_rows_mb": mb})
    everything = PQIndex.load(path, "big.faiss", len(wide), None)  # 4 MB: all mapped
    seg = quarter.segments[0]
    cut = len(wide) // 4
    before = rss_file_kb()
    rows = seg.gather(np.arange(len(wide)))
    assert rss_file_kb() - before < size / 1024 / 2  # everything mapped: the whole file
    on_disk = store_rows(path / "big-vectors.faiss", len(wide), wide.shape[1])
    np.testing.assert_array_equal(rows, on_disk)
    ids = np.array([cut - 2, cut - 1, cut, cut + 1, cut + 900])
    np.testing.assert_array_equal(seg.gather(ids), on_disk[ids])
    del on_disk
    q = wide[::40]
    for got, want in zip(quarter.search(q, 50), everything.search(q, 50), strict=True):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(InvalidOptionsError, match="mapped_rows_mb"):
        PQIndex.load(path, "big.faiss", len(wide), {"mapped_rows_mb": -1})


def test_added_rows_are_found_and_saved(
    tmp_path: Path, built: PQIndex, data: tuple[np.ndarray, np.ndarray]
) -> None:
    x = data[0]
    new = clustered(30, seed=5)
    grown = built.with_added(new[:10]).with_added(new[10:])
    assert built.ntotal == len(x) and grown.ntotal == len(x) + 30
    assert built.with_added(new[:0]).ntotal == len(x)
    assert len(grown.segments) == 2
    scores, ids = grown.search(new, 1)
    assert ids[:, 0].tolist() == list(range(len(x), len(x) + 30))
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=2e-3)
    grown = grown.without([len(x)])
    assert len(x) not in grown.search(new[:1], 5)[1]
    grown.save(tmp_path)
    loaded = PQIndex.load(tmp_path, "index.faiss", len(x) + 30, grown.params())
    assert len(loaded.segments) == 1
    assert loaded.search(new[5:6], 1)[1][0, 0] == len(x) + 5


def test_task_functions_are_pure_and_assemble_the_same_index(
    tmp_path: Path, built: PQIndex, data: tuple[np.ndarray, np.ndarray]
) -> None:
    x, q = data
    params = built.params()
    trained = train_pq(x[::2], **params)
    assert pickle.loads(pickle.dumps(train_pq)) is train_pq
    assert pickle.loads(pickle.dumps(add_chunk)) is add_chunk
    bounds = [(0, 1500), (1500, 2500), (2500, len(x))]
    chunks = [add_chunk(trained, x[a:b], np.arange(a, b)) for a, b in reversed(bounds)]
    assert all(isinstance(c, bytes) for c in chunks)
    codes = merge_chunks(pickle.loads(pickle.dumps(trained)), chunks)
    assert codes.ntotal == len(x)
    write_store(tmp_path / "rows.faiss", (x[a:b] for a, b in bounds), len(x), DIM)
    index = PQIndex.from_parts(trained, codes, tmp_path / "rows.faiss", params)
    one = PQIndex([index.segments[0]], trained, params)
    _, ids = one.search(q, 10)
    assert recall(exact_fp16(x, q, 10)[1], ids) >= 0.9
    with pytest.raises(InvalidOptionsError):
        add_chunk(trained, x[:3], np.arange(2))
    with pytest.raises(InvalidOptionsError):
        write_store(tmp_path / "short.faiss", [x[:3]], 4, DIM)


@pytest.mark.slow
def test_opq_rotation_and_fewer_sub_quantisers(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, q = data
    index = PQIndex.build(x[:2000], nlist=8, m=8, opq=True, rerank_extra=300)
    assert index.params()["m"] == 8 and index.params()["opq"] is True
    _, ids = index.search(q, 10)
    assert recall(exact_fp16(x[:2000], q, 10)[1], ids) >= 0.9


def test_bad_options_and_queries(built: PQIndex, data: tuple[np.ndarray, np.ndarray]) -> None:
    x = data[0]
    with pytest.raises(InvalidOptionsError, match="divide"):
        train_pq(x, m=5)
    with pytest.raises(InvalidOptionsError, match="bits"):
        train_pq(x, nbits=8)
    for few in (0, 1, 15):  # fewer rows than a 4-bit codebook has entries
        with pytest.raises(InvalidOptionsError, match="at least 16 vectors"):
            PQIndex.build(x[:few])
    PQIndex.build(x[:16], nlist=1)
    with pytest.raises(InvalidOptionsError):
        built.search(np.zeros((1, DIM + 1), np.float32), 5)
    with pytest.raises(InvalidOptionsError):
        built.search(x[:1], 0)
    with pytest.raises(InvalidOptionsError):
        PQIndex(built.segments, built.trained, {"rerank_extra": -1})


def test_parts_of_a_split_index(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, q = data
    labels = np.arange(len(x)) % 3
    rows = [np.flatnonzero(labels == i) for i in range(3)]
    parts = [PQIndex.build(x[r], nlist=16) for r in rows]
    split = PartitionedIndex(["a", "b", "c"], parts, rows, "slot")  # type: ignore[arg-type]
    assert split.kind == "ivfpq" and split.ntotal == len(x)
    _, ids = split.search(q, 10)
    assert recall(exact_fp16(x, q, 10)[1], ids) >= 0.9
    _, each = split.search_each(q[:1], 5)
    assert sorted(set(labels[each[0]].tolist())) == [0, 1, 2]


def test_split_index_adds_rows_to_their_slots_part(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = data
    labels = np.arange(len(x)) % 2
    rows = [np.flatnonzero(labels == i) for i in range(2)]
    split = PartitionedIndex(
        ["a", "b"],
        [PQIndex.build(x[r], nlist=8) for r in rows],  # type: ignore[misc]
        rows,
        "slot",
    )
    new = clustered(4, seed=9)
    grown = split.with_added(new, ["b", "a", "b", "a"])
    assert grown.ntotal == len(x) + 4 and split.ntotal == len(x)
    assert grown.search(new, 1)[1][:, 0].tolist() == list(range(len(x), len(x) + 4))


def test_index_module_builds_saves_and_loads_the_kind(
    data: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    """The kind through stygig.index as an artifact uses it: one index and a split one, saved
    (every file named for the checksums) and loaded back with the same answers."""
    from stygig.index import build_index, choose_kind, load_index

    assert choose_kind(1_000) == "flat" and choose_kind(100_000) == "ivf"
    assert choose_kind(5_000_000) == "ivfpq"
    x, q = data
    single = build_index(x, "ivfpq", nlist=16)
    assert single.kind == "ivfpq"
    files = single.save(tmp_path)
    assert all((tmp_path / f).is_file() for f in files) and len(files) == 2
    again = load_index(tmp_path, "ivfpq", x, single.params())
    assert np.array_equal(again.search(q, 10)[1], single.search(q, 10)[1])

    labels = [("top", "bottom", "shoes")[i % 3] for i in range(len(x))]
    split = build_index(x, "ivfpq", partitions=labels, nlist=8)
    split_dir = tmp_path / "split"
    split_dir.mkdir()
    files = split.save(split_dir)
    assert all((split_dir / f).is_file() for f in files)
    assert sum(f.endswith("-vectors.faiss") for f in files) == 3
    loaded = load_index(split_dir, "ivfpq", x, split.params())
    assert loaded.kind == "ivfpq"
    assert np.array_equal(loaded.search(q, 10)[1], split.search(q, 10)[1])


def test_a_deep_search_rerank_its_own_k_and_keeps_the_top_right(
    built: PQIndex, data: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Up to ``RERANK_DEPTH`` a search re-ranks ``k + rerank_extra`` codes; deeper (the
    engine's candidate pool) just its ``k``, which already holds the shallow shortlist: its
    top ``RERANK_DEPTH`` are never worse than a shallow search's, score by score."""
    from stygig import index_pq

    x, q = data
    asked: list[tuple[int, int]] = []
    search = index_pq._Segment.search

    def spy(self: index_pq._Segment, qq: np.ndarray, k: int, extra: int, nprobe: int) -> object:
        asked.append((k, extra))
        return search(self, qq, k, extra, nprobe)

    monkeypatch.setattr(index_pq._Segment, "search", spy)
    depth, extra = index_pq.RERANK_DEPTH, built.rerank_extra
    deep = depth + extra + 40
    for k in (10, depth, depth + extra // 2, deep):
        asked.clear()
        built.search(q, k)
        assert asked == [(k, max(0, min(k, depth) + extra - k))]
    gone = built.without(np.arange(0, 600, 2))  # removed rows never eat into the margin
    asked.clear()
    gone.search(q, 10)
    assert asked == [(10 + 300, extra)]
    shallow, top = built.search(q, depth)[0], built.search(q, deep)[0][:, :depth]
    assert (top >= shallow - 1e-6).all()
    want = exact_fp16(x, q, depth)[1]
    assert recall(built.search(q, deep)[1][:, :depth], want) >= recall(
        built.search(q, depth)[1], want
    )


def test_warming_maps_the_mapped_rows_and_only_them(rows_on_disk: tuple[Path, np.ndarray]) -> None:
    """``warm`` reads the whole rows file (page cache) and makes the mapped quarter resident
    at once, so the first searches fault nothing in; the rows read with ``pread`` never are."""
    path, wide = rows_on_disk
    size = (path / "big-vectors.faiss").stat().st_size
    quarter_kb = size / 1024 / 4
    index = PQIndex.load(path, "big.faiss", len(wide), {"mapped_rows_mb": size / 4 / 2**20})
    before = rss_file_kb()
    assert index.warm() == size
    warmed = rss_file_kb() - before
    assert 0.9 * quarter_kb <= warmed <= 1.5 * quarter_kb
    index.segments[0].gather(np.arange(len(wide)))  # every row: nothing more becomes resident
    assert rss_file_kb() - before <= 1.5 * quarter_kb


def test_a_split_ivfpq_index_keeps_parts_too_small_for_pq_flat() -> None:
    """An explicit ``ivfpq`` split of a small catalogue (the drawn sample: 10 items in some
    slots) failed inside FAISS's k-means; such parts are flat now, in the local and Ray plan."""
    from stygig.index import PQ_MIN_ROWS, plan_parts

    x = np.random.default_rng(4).standard_normal((120, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = ["big"] * 100 + ["tiny"] * (PQ_MIN_ROWS - 1) + ["edge"] * 5
    labels[:PQ_MIN_ROWS] = ["edge"] * PQ_MIN_ROWS  # edge: 16 + 5 rows, still PQ
    names, _, kinds, _ = plan_parts(labels, len(x), "ivfpq", {})
    assert dict(zip(names, kinds, strict=True)) == {"big": "ivfpq", "edge": "ivfpq", "tiny": "flat"}
    index = PartitionedIndex.build(x, labels, "ivfpq", nlist=2)
    assert [p.kind for p in index.parts] == kinds
    _, ids = index.search(x[:3], 1)
    assert ids[:, 0].tolist() == [0, 1, 2]


def mapped_files() -> str:
    return Path("/proc/self/maps").read_text()


@pytest.mark.parametrize("share", [0.25, 1.0], ids=["first-quarter-mapped", "all-mapped"])
@pytest.mark.slow
def test_released_rows_leave_the_process_and_come_back(
    rows_on_disk: tuple[Path, np.ndarray], tmp_path: Path, share: float
) -> None:
    """What a reload does to the version it still serves: its mapped rows are unmapped once
    the last search holding them ends, the same answers come from ``pread``, and a refused
    reload maps them again -- in every index sharing the segments (a living catalogue's
    copies), and from the file the index opened even when the folder was rebuilt in place
    meanwhile. Both kinds of map: part of the rows (NumPy's map of the file) and every row
    (FAISS's map, re-ranked by ``IndexRefine``)."""
    import copy
    import gc
    import shutil

    from stygig.index import release_mapped_rows, restore_mapped_rows

    source, wide = rows_on_disk
    path = tmp_path / "served"
    shutil.copytree(source, path)
    rows_file = path / "big-vectors.faiss"
    size = rows_file.stat().st_size
    index = PQIndex.load(path, "big.faiss", len(wide), {"mapped_rows_mb": share * size / 2**20})
    split = PartitionedIndex(["all"], [index], [np.arange(len(wide))])
    changed = index.without(np.array([3]))  # a change published before the reload
    q = wide[:12] + 0.01
    want, want_rows = index.search(q, 60), index.rows(np.arange(len(wide)))
    index.warm()
    assert str(rows_file) in mapped_files()
    # The folder is rebuilt in place (another build renamed over it): other rows, same name.
    other = tmp_path / "other"
    other.mkdir()
    PQIndex.build(clustered(len(wide), seed=9).repeat(8, axis=1) / np.sqrt(8), nlist=16).save(
        other, "big.faiss"
    )
    (other / "big-vectors.faiss").rename(rows_file)
    in_flight = index.segments[0].held  # what a search that started before the release holds
    assert release_mapped_rows(split) is True
    assert in_flight is not None and in_flight.rows.shape[1] == 256  # still readable
    del in_flight
    gc.collect()
    assert str(path) not in mapped_files()  # neither the old file nor the new one
    got = index.search(q, 60)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_allclose(got[0], want[0], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(index.rows(np.arange(len(wide))), want_rows)  # pread, old file
    assert changed.segments[0].held is None and copy.copy(index).segments[0].held is None
    assert release_mapped_rows(split) is False  # nothing left mapped
    restore_mapped_rows(split)
    np.testing.assert_array_equal(index.search(q, 60)[1], want[1])
    np.testing.assert_array_equal(changed.rows(np.arange(len(wide))), want_rows)  # old file
    assert changed.segments[0].held is not None and str(rows_file) in mapped_files()

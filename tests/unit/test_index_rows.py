"""An index's own copy of its vectors read like the embeddings matrix (stygig.index.IndexRows):
what answers read on an ``ivfpq`` catalogue instead of its on-disk ``embeddings.npy``."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest

from stygig.index import ExactIndex, FaissIndex, IndexRows, LiveIndex, PartitionedIndex
from stygig.index_pq import PQIndex


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    faiss.omp_set_num_threads(1)


def _vectors(n: int = 600, dim: int = 16) -> np.ndarray:
    x = np.random.default_rng(3).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _held(x: np.ndarray, pq_rows: np.ndarray) -> np.ndarray:
    """The rows as the index keeps them: float16 for the ivfpq part, float32 elsewhere."""
    want = x.copy()
    want[pq_rows] = x[pq_rows].astype(np.float16).astype(np.float32)
    return want


def test_a_split_index_reads_each_part_s_own_rows_in_artifact_order(tmp_path: Path) -> None:
    x = _vectors()
    labels = np.arange(len(x)) % 3  # interleaved rows: local order differs from global order
    rows = [np.flatnonzero(labels == p) for p in range(3)]
    pq = PQIndex.build(x[rows[0]], nlist=4, m=8)
    pq.save(tmp_path, "part.faiss")  # loaded: its first 98 rows mapped, the others pread
    loaded = PQIndex.load(tmp_path, "part.faiss", len(rows[0]), {"mapped_rows_mb": 0.003})
    parts = [loaded, FaissIndex.build(x[rows[1]], "flat"), ExactIndex(x[rows[2]])]
    index = PartitionedIndex(["a", "b", "c"], parts, rows)  # type: ignore[arg-type]
    view = IndexRows.of(index)
    assert view is not None
    want = _held(x, rows[0])
    assert view.shape == x.shape and len(view) == len(x) and view.dtype == np.float32
    np.testing.assert_array_equal(view[np.arange(len(x))], want)
    for key in (0, 599, -1, np.int64(7)):
        np.testing.assert_array_equal(view[key], want[key])
    picks = np.array([599, 0, 300, 300, 5, -1, 6])  # unsorted, repeated, negative
    np.testing.assert_array_equal(view[picks], want[picks])
    grid = np.array([[3, 2, 1], [1, 1, 599]])  # the MMR gather: (groups, depth) -> 3-d
    np.testing.assert_array_equal(view[grid], want[grid])
    np.testing.assert_array_equal(view[slice(10, 40, 3)], want[10:40:3])
    assert view[np.array([], np.int64)].shape == (0, 16)
    with pytest.raises(IndexError):
        view[600]


def test_a_live_index_reads_appended_rows_from_the_catalogue() -> None:
    x = _vectors(500)
    base = PQIndex.build(x[:400], nlist=4, m=8)
    live = LiveIndex(base, x)  # rows 400.. appended while serving, not in the base index
    want = x.copy()
    want[:400] = x[:400].astype(np.float16).astype(np.float32)
    picks = np.array([450, 3, 399, 400, 499, 3])
    rows = IndexRows.of(live)
    assert rows is not None
    np.testing.assert_array_equal(rows[picks], want[picks])
    # Past MERGE_ROWS appended rows go into the base's own (in-memory) segment.
    grown = base.with_added(x[400:])
    merged = IndexRows.of(grown)
    assert merged is not None
    np.testing.assert_array_equal(merged[picks], x[picks].astype(np.float16))


def test_an_index_without_readable_rows_has_none() -> None:
    x = _vectors()
    ivf = FaissIndex.build(x, "ivf", nlist=4)
    assert IndexRows.of(ivf) is None
    assert IndexRows.of(PartitionedIndex(["a"], [ivf], [np.arange(len(x))])) is None
    assert IndexRows.of(LiveIndex(ivf, x)) is None

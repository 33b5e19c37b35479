"""Vector search over L2-normalised embeddings: one protocol, a FAISS backend, an exact oracle.

Scores are inner products (cosine similarity for normalised vectors); ids are row positions in
the artifact's item table. Two backends:

* :class:`ExactIndex` — a NumPy matrix product and ``argpartition``. Exact, dependency-free and
  the oracle that tests compare FAISS against.
* :class:`FaissIndex` — FAISS ``IndexFlatIP`` (exact) for small catalogues, ``IVF`` (inverted
  lists, ``nlist = 2 sqrt(n)``, ``nprobe = 64``) for large ones — it builds in under a minute at
  1M x 512-d on 2 cores where HNSW takes many — chosen by :func:`choose_kind` from the catalogue
  size; ``hnsw`` is available on request. IVF lists store the vectors as float16 by default
  (``storage="fp16"``, FAISS's ``IndexIVFScalarQuantizer``): half the memory and bytes scanned
  per query, the same neighbours (recall@50 at 1M: 0.972 either way) and inner products within
  about 1e-4 of float32; ``storage="flat"`` keeps float32.

* :class:`PartitionedIndex` — one of the above per partition (the items' outfit slots), used by
  ``auto`` above 50k items: every slot's own nearest items reach the outfit candidates, not just
  the query's visual neighbourhood (which, at a million items, is all near-copies of the query).

Removal is a tombstone mask applied to every backend alike, so ids stay stable.

* :class:`LiveIndex` — an index under catalogue changes while it serves: the artifact's index
  (never written while readers may search it), rows appended since (searched exactly, per
  partition when the base is split), and tombstones; every change returns a new
  :class:`LiveIndex` (copy-on-write), and past :data:`MERGE_ROWS` appended rows they are added
  to a copy of the base (FAISS ``add``: flat, HNSW, IVF lists with their trained centroids; a
  split index adds each row to its slot's part).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from stygig.errors import ArtifactError, InvalidOptionsError
from stygig.rowfile import gather, row_numbers
from stygig.rows import StackedRows

__all__ = [
    "INDEX_KINDS",
    "ExactIndex",
    "FaissIndex",
    "IndexRows",
    "LiveIndex",
    "PartitionedIndex",
    "VectorIndex",
    "build_index",
    "choose_kind",
    "is_exhaustive",
    "load_index",
    "similarities",
]

INDEX_KINDS = ("exact", "flat", "hnsw", "ivf", "ivfpq")

#: Up to this many items an exact flat search is fast enough (about 1 ms at 512-d on one core).
FLAT_MAX_ITEMS = 50_000
#: From this many items ``auto`` builds :mod:`stygig.index_pq` (0.26 GB per 1M 512-d items in
#: memory against 1 GB of float16 lists; the float16 rows on disk, memory-mapped).
PQ_MIN_ITEMS = 2_000_000

#: IVF probes per partition (each with nlist = 2 sqrt(n) lists) are set so that one query scans
#: about this many vectors over all parts — what 32 probes scan at 1M items (1M synthetic 512-d
#: items in 7 slots: 2.8 ms of FAISS, recall@50 0.985, 0.974 per slot). Smaller catalogues get
#: more probes for the same work, so recall rises as catalogues shrink; never fewer than 32.
PART_SCAN_BUDGET = 32_000
PART_MIN_NPROBE = 32

#: A partition up to this size is searched exactly (every part is searched per query, so the
#: exact parts' sizes add up: 5,000 x 512-d is about 0.3 ms).
PART_FLAT_MAX_ITEMS = 5_000
#: An IVF-PQ index (a part, or a whole one) needs at least this many rows: each 4-bit
#: sub-quantiser trains 16 codebook entries on them.
PQ_MIN_ROWS = 16

#: Rows appended to a live index are searched exactly until there are this many; then they
#: are added to (a copy of) the base index.
MERGE_ROWS = 4_096


class VectorIndex(Protocol):
    """What the recommender needs from a vector index."""

    kind: str
    dim: int
    removed: np.ndarray | None  # tombstones: True for rows excluded from results
    n_removed: int

    @property
    def ntotal(self) -> int: ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ``(scores, ids)`` per query row, best first; missing slots are id -1."""
        ...

    def remove(self, ids: np.ndarray) -> None:
        """Exclude ``ids`` from future results."""
        ...

    def save(self, path: Path) -> list[str]:
        """Write the index under directory ``path``; return the file names written."""
        ...

    def params(self) -> dict[str, Any]:
        """Settings recorded in the artifact manifest."""
        ...


def _check_queries(queries: np.ndarray, dim: int, k: int) -> np.ndarray:
    q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    if q.shape[1] != dim:
        raise InvalidOptionsError(f"query vectors have dim {q.shape[1]}; the index has {dim}")
    if k < 1:
        raise InvalidOptionsError(f"k must be at least 1, not {k}")
    return q


def _pad(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Widen ``(m, <k)`` results to ``k`` columns with id -1 and score -inf."""
    if scores.shape[1] >= k:
        return scores, ids
    pad = ((0, 0), (0, k - scores.shape[1]))
    return np.pad(scores, pad, constant_values=-np.inf), np.pad(ids, pad, constant_values=-1)


def top_k(
    sims: np.ndarray, k: int, removed: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` ``(scores, ids)`` of each row of ``sims`` (m, n), best first.

    Ties go to the lower id; ``removed`` rows never appear; missing slots are id -1.
    """
    if removed is not None:
        sims = np.where(removed[None, :], -np.inf, sims)
    n = sims.shape[1]
    kk = min(k, n)
    if kk < n:
        # One query at 10k rows: ~31 us in all (a FAISS heap for the k-th value, tried for the
        # one-query case, was no faster and opened an OpenMP region per call: stygig.threads).
        part = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        kth = np.take_along_axis(sims, part, 1).min(axis=1)
        # Ties across the k-th place: argpartition kept arbitrary ones, the lowest ids win.
        for r in np.flatnonzero((sims >= kth[:, None]).sum(axis=1) > kk):
            tied = np.flatnonzero(sims[r] >= kth[r])
            part[r] = tied[np.lexsort((tied, -sims[r, tied]))[:kk]]
    else:
        part = np.broadcast_to(np.arange(n), (sims.shape[0], n)).copy()
    part_scores = np.take_along_axis(sims, part, 1)
    order = np.lexsort((part, -part_scores), axis=1)
    ids = np.take_along_axis(part, order, 1).astype(np.int64)
    scores = np.take_along_axis(part_scores, order, 1).astype(np.float32)
    found = np.isfinite(scores)  # removed rows (-inf) and NaN (a NaN input) are not results
    return _pad(np.where(found, scores, -np.inf), np.where(found, ids, -1), k)


def _apply_tombstones(
    scores: np.ndarray, ids: np.ndarray, removed: np.ndarray | None, k: int
) -> tuple[np.ndarray, np.ndarray]:
    if removed is None:
        return scores[:, :k], ids[:, :k]
    dead = np.zeros_like(ids, dtype=bool)
    valid = ids >= 0
    dead[valid] = removed[ids[valid]]
    scores = np.where(dead, -np.inf, scores)
    ids = np.where(dead, -1, ids)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)


class _Tombstones:
    """Removal shared by every index: a mask over row ids (ids stay stable) and its count."""

    removed: np.ndarray | None = None
    n_removed = 0

    @property
    def ntotal(self) -> int:
        raise NotImplementedError

    def remove(self, ids: np.ndarray) -> None:
        """Exclude ``ids`` from future results."""
        if self.removed is None:
            self.removed = np.zeros(self.ntotal, dtype=bool)
        self.removed[np.asarray(ids, dtype=np.int64)] = True
        self.n_removed = int(self.removed.sum())

    def without(self, ids: np.ndarray) -> Any:
        """A copy excluding ``ids`` too; this one is unchanged (readers may be searching it).
        The vectors are shared: only the tombstone mask is new."""
        out = copy.copy(self)
        removed = np.zeros(self.ntotal, bool) if self.removed is None else self.removed.copy()
        removed[np.asarray(ids, dtype=np.int64)] = True
        out.removed, out.n_removed = removed, int(removed.sum())
        return out


def similarities(matrix: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """``matrix @ queries.T``: ``(rows, queries)`` inner products.

    One query streams the matrix once through FAISS's SIMD inner products (10k x 1280 float32,
    one thread: 1.4 ms, where BLAS's matrix-vector product takes 2.8 ms and a matrix product
    with one column, which first copies all of it, 5.2 ms); the sums are the same to 1e-7.
    Measured and not kept (2026-12-01): cutting that scan into one block per core on helper
    threads gave the same sums bit for bit and 1.48 -> 0.86 ms alone, and over HTTP at 10k
    items (efficientnet-lite0 int8, one server at a time) client p50 6.70 -> 6.34 ms with one
    client, but 205 / 201 -> 184 / 184 requests/s with 100 (the hand-offs cost CPU a loaded
    server does not have). Split only when the server had no other request in flight (its
    idle pool thread as the helper): one client 6.65 -> 6.49 ms p50 but p99 8.99 -> 11.93 ms,
    and 100 clients 208 / 202 -> 197 / 192 requests/s: not kept either.
    A mapped matrix with rows added in memory (:class:`~stygig.rows.StackedRows`) is scored
    part by part, never copied whole.
    """
    if isinstance(matrix, StackedRows):
        return np.concatenate(
            [similarities(matrix.base, queries), similarities(matrix.tail, queries)]
        )
    if len(queries) == 1 and matrix.dtype == np.float32 and queries.dtype == np.float32:
        import faiss

        rows = np.ascontiguousarray(matrix)
        query = np.ascontiguousarray(queries[0])
        out = np.empty((len(rows), 1), np.float32)
        faiss.fvec_inner_products_ny(  # type: ignore[attr-defined]
            faiss.swig_ptr(out),
            faiss.swig_ptr(query),
            faiss.swig_ptr(rows),
            rows.shape[1],
            len(rows),
        )
        return out
    product: np.ndarray = matrix @ queries.T
    return product


class ExactIndex(_Tombstones):
    """Brute-force inner-product search in NumPy (the test oracle)."""

    kind = "exact"

    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.dim = int(self.vectors.shape[1])

    @property
    def ntotal(self) -> int:
        return int(self.vectors.shape[0])

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = _check_queries(queries, self.dim, k)
        return top_k(similarities(self.vectors, q).T, k, self.removed)

    def save(self, path: Path) -> list[str]:
        # The exact index *is* the embedding matrix, which the artifact already stores.
        return []

    def with_added(self, vectors: np.ndarray) -> ExactIndex:
        """A new index holding these rows and ``vectors`` after them (tombstones kept)."""
        out = ExactIndex(np.concatenate([self.vectors, np.asarray(vectors, np.float32)]))
        _keep_tombstones(self, out)
        return out

    def params(self) -> dict[str, Any]:
        return {}


class FaissIndex(_Tombstones):
    """A FAISS index (flat, HNSW or IVF) over inner products."""

    def __init__(self, index: Any, kind: str, params: dict[str, Any]) -> None:
        self.index = index
        self.kind = kind
        self.dim = int(index.d)
        self._params = params
        self._apply_search_params()

    def _apply_search_params(self) -> None:
        if self.kind == "hnsw":
            self.index.hnsw.efSearch = int(self._params.get("ef_search", 128))
        elif self.kind == "ivf":
            self.index.nprobe = int(self._params.get("nprobe", 64))

    @classmethod
    def build(cls, vectors: np.ndarray, kind: str, **params: Any) -> FaissIndex:
        """Build a FAISS index of ``kind`` (flat, hnsw, ivf) over ``vectors``."""
        import faiss

        x = np.ascontiguousarray(vectors, dtype=np.float32)
        n, dim = x.shape
        index: Any
        if kind == "flat":
            index = faiss.IndexFlatIP(dim)
        elif kind == "hnsw":
            params.setdefault("m", 32)
            params.setdefault("ef_construction", 80)
            params.setdefault("ef_search", 128)
            index = faiss.IndexHNSWFlat(dim, int(params["m"]), faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = int(params["ef_construction"])
        elif kind == "ivf":
            params.setdefault("nlist", default_nlist(n))
            params.setdefault("nprobe", 64)
            params.setdefault("storage", "fp16")
            quantizer = faiss.IndexFlatIP(dim)
            nlist = int(params["nlist"])
            if params["storage"] == "fp16":
                index = faiss.IndexIVFScalarQuantizer(
                    quantizer, dim, nlist, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
                )
            elif params["storage"] == "flat":
                index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
            else:
                raise InvalidOptionsError(
                    f"IVF storage must be 'fp16' or 'flat', not {params['storage']!r}"
                )
            rng = np.random.default_rng(0)
            sample = x[rng.choice(n, size=min(n, 64 * int(params["nlist"])), replace=False)]
            index.train(sample)
        else:
            raise InvalidOptionsError(f"unknown FAISS index kind {kind!r}")
        index.add(x)
        return cls(index, kind, params)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = _check_queries(queries, self.dim, k)
        fetch = min(max(1, self.ntotal), k + self.n_removed)
        if self.kind == "hnsw" and fetch > self.index.hnsw.efSearch:
            # HNSW returns at most efSearch neighbours: asked for more, it is widened for this
            # search (per call: the index is shared by threads).
            import faiss

            params = faiss.SearchParametersHNSW(efSearch=fetch)  # type: ignore[attr-defined]
            scores, ids = self.index.search(q, fetch, params=params)
        else:
            scores, ids = self.index.search(q, fetch)
        scores = np.where(ids >= 0, scores, -np.inf).astype(np.float32)
        removed = self.removed if self.n_removed else None
        return _pad(*_apply_tombstones(scores, ids.astype(np.int64), removed, k), k)

    def save(self, path: Path, name: str = "index.faiss") -> list[str]:
        import faiss

        faiss.write_index(self.index, str(path / name))
        return [name]

    def with_added(self, vectors: np.ndarray) -> FaissIndex:
        """A copy with ``vectors`` added after these rows (flat and HNSW ``add``; IVF: to the
        lists of the trained centroids, no retraining); this index is never written, so
        searches running on it are safe."""
        import faiss

        clone = faiss.clone_index(self.index)
        clone.add(np.ascontiguousarray(vectors, dtype=np.float32))
        out = FaissIndex(clone, self.kind, dict(self._params))
        _keep_tombstones(self, out)
        return out

    def params(self) -> dict[str, Any]:
        return dict(self._params)


def _keep_tombstones(old: Any, new: Any) -> None:
    """Give ``new`` (``old`` grown) ``old``'s tombstones; the new rows are live."""
    if old.removed is not None and old.n_removed:
        removed = np.zeros(new.ntotal, bool)
        removed[: len(old.removed)] = old.removed
        new.removed, new.n_removed = removed, int(removed.sum())


def default_nlist(n_items: int) -> int:
    """IVF lists for ``n_items`` vectors: 2 sqrt(n), the usual rule."""
    return max(1, min(65536, int(2 * np.sqrt(n_items))))


def choose_kind(n_items: int) -> str:
    """The index kind used for ``auto``: exact flat search when small, IVF when large, IVF-PQ
    with exact re-ranking from disk when very large."""
    if n_items <= FLAT_MAX_ITEMS:
        return "flat"
    return "ivfpq" if n_items >= PQ_MIN_ITEMS else "ivf"


def build_index(
    vectors: np.ndarray,
    kind: str = "auto",
    partitions: Sequence[str] | None = None,
    partition_by: str = "label",
    **params: Any,
) -> VectorIndex:
    """Build an index over L2-normalised ``vectors`` (``auto`` picks by size).

    With ``partitions`` (one label per row, e.g. each item's outfit slot) the result is a
    :class:`PartitionedIndex`: one index per label, each of ``kind`` (``auto``: by its size).
    """
    if partitions is not None:
        return PartitionedIndex.build(vectors, partitions, kind, partition_by, **params)
    if kind == "auto":
        kind = choose_kind(len(vectors))
    if kind == "exact":
        return ExactIndex(vectors)
    if kind not in INDEX_KINDS:
        raise InvalidOptionsError(f"unknown index kind {kind!r}; choose one of {INDEX_KINDS}")
    if kind == "ivfpq":
        from stygig.index_pq import PQIndex  # lazy: index_pq imports this module

        return PQIndex.build(vectors, **params)
    return FaissIndex.build(vectors, kind, **params)


def load_index(
    path: Path, kind: str, vectors: np.ndarray, params: dict[str, Any] | None = None
) -> VectorIndex:
    """Load an index saved by :meth:`VectorIndex.save` (``vectors`` backs the exact kind)."""
    if params and "parts" in params:
        return PartitionedIndex.load(path, vectors, params)
    if kind == "exact":
        return ExactIndex(vectors)
    if kind == "ivfpq":
        return _load_pq(path, "index.faiss", len(vectors), params, _dim(vectors))
    return _load_faiss(path / "index.faiss", kind, len(vectors), params, _dim(vectors))


def _dim(vectors: np.ndarray) -> int:
    return int(vectors.shape[1]) if len(vectors.shape) == 2 else 0


def _check_dim(index: VectorIndex, name: str, dim: int) -> None:
    """An index of another dimension than the embeddings loads, and then refuses every query
    as the client's error (review, session 41): refused here instead."""
    if dim and index.dim != dim:
        raise ArtifactError(
            f"index {name} holds {index.dim}-d vectors but the embeddings are {dim}-d"
        )


def _load_pq(path: Path, name: str, n: int, params: dict[str, Any] | None, dim: int) -> VectorIndex:
    from stygig.index_pq import PQIndex  # lazy: index_pq imports this module

    index = PQIndex.load(path, name, n, params)
    _check_dim(index, name, dim)
    return index


#: FAISS's tags of the flat indexes (inner product, L2), whose layout is fixed: the fourcc,
#: ``d`` (int32), ``ntotal`` (int64), two int64 placeholders, ``is_trained`` (1 byte), the
#: metric (int32), then the codes as a float count (uint64) and the floats.
_FLAT_TAGS = (b"IxFI", b"IxF2")
_FLAT_HEAD = 45


def _check_flat(head: bytes, size: int) -> bool:
    """Whether a flat index's header describes exactly the file's ``size`` bytes (not a flat
    index: nothing to say). FAISS allocates what a vector's length claims before it reads it
    (review, session 41: a 1 KB index claiming 1 GiB of codes was allocated and zero-filled
    before FAISS found the file short), so an exact catalogue's index, the common kind, is
    checked first. Other kinds are read as FAISS reads them: their sizes are spread through
    nested records, and an artifact's files are the operator's (docs/security.md)."""
    if head[:4] not in _FLAT_TAGS:
        return True
    if len(head) < _FLAT_HEAD:
        return False
    d = int.from_bytes(head[4:8], "little", signed=True)
    ntotal = int.from_bytes(head[8:16], "little", signed=True)
    floats = int.from_bytes(head[37:45], "little")
    return d > 0 and ntotal >= 0 and floats == ntotal * d and _FLAT_HEAD + 4 * floats == size


def read_faiss(file: Path, what: str = "FAISS index") -> Any:
    """``faiss.read_index`` of ``file``; a flat index is first checked to hold what its header
    claims (:func:`_check_flat`).

    Raises:
        ArtifactError: the file is short, claims more than it holds, or is no FAISS index;
            FAISS's own (C++) text is not in the message.
    """
    import faiss

    try:
        with file.open("rb") as handle:
            head = handle.read(_FLAT_HEAD)
            size = os.fstat(handle.fileno()).st_size
        if not _check_flat(head, size):
            raise ArtifactError(f"{what} {file.name} claims more than the file holds")
        return faiss.read_index(str(file))
    except (RuntimeError, OSError, MemoryError) as e:
        raise ArtifactError(
            f"cannot read {what} {file.name} ({type(e).__name__}: cut short, or not a FAISS "
            "index this version reads)"
        ) from None


def check_row_ids(index: Any, name: str) -> None:
    """Refuse an IVF index whose lists do not hold each of its rows once.

    FAISS reads the lists' ids as written: an id past the table failed each search that probed
    its list (an IndexError, a 500 per request), and an id held twice answered one item twice.
    So every list's ids must be the rows ``0 .. ntotal - 1``, each once. Linear in the rows:
    about 5 ms a million ids at 1,024 lists, 17 ms at 4,096 (views of FAISS's arrays). An HNSW
    graph needs nothing here: FAISS (1.15, the floor in pyproject.toml) checks its links,
    offsets and levels as it reads it (``test_an_hnsw_graph_outside_its_rows_is_refused_at_load``).

    Raises:
        ArtifactError: naming the index file and what does not hold.
    """
    import faiss

    try:
        ivf: Any = faiss.extract_index_ivf(index)
    except RuntimeError:  # not an IVF index
        return
    n, lists = int(index.ntotal), ivf.invlists
    seen, total = np.zeros(n, bool), 0
    for list_no in range(int(ivf.nlist)):
        size = int(lists.list_size(list_no))
        if not size:
            continue
        total += size
        if total > n:
            raise ArtifactError(f"index {name}: its lists hold more ids than its {n} rows")
        pointer = lists.get_ids(list_no)
        try:
            ids = faiss.rev_swig_ptr(pointer, size)
            if int(ids.min()) < 0 or int(ids.max()) >= n:
                raise ArtifactError(f"index {name}: a list holds a row id outside 0..{n - 1}")
            seen[ids] = True
        finally:
            lists.release_ids(list_no, pointer)
    # n ids in all that reach every row: each row once (an id held twice leaves one unseen).
    if total != n or not seen.all():
        raise ArtifactError(f"index {name}: its lists do not hold each of its {n} rows once")


def _load_faiss(
    file: Path, kind: str, n: int, params: dict[str, Any] | None, dim: int
) -> FaissIndex:
    index = read_faiss(file)
    if index.ntotal != n:
        raise ArtifactError(
            f"index {file.name} holds {index.ntotal} vectors but the item table has {n}"
        )
    check_row_ids(index, file.name)
    loaded = FaissIndex(index, kind, dict(params or {}))
    _check_dim(loaded, file.name, dim)
    return loaded


def _leaves(index: Any) -> list[Any]:
    """The plain indexes inside ``index``: itself, a split's parts, a living index's base."""
    if isinstance(index, LiveIndex):
        return _leaves(index.base)
    if isinstance(index, PartitionedIndex):
        return [leaf for part in index.parts for leaf in _leaves(part)]
    return [index]


def _pq_parts(index: Any) -> list[Any]:
    """The IVF-PQ indexes inside ``index`` (index_pq imports this module: found by kind)."""
    return [leaf for leaf in _leaves(index) if leaf.kind == "ivfpq"]


def warm_index(index: VectorIndex, *, map_rows: bool = True) -> int:
    """Bring what ``index`` keeps on disk into memory before it serves: an IVF-PQ part's
    float16 rows into the page cache and (``map_rows``) its mapped rows into this process
    (:meth:`stygig.index_pq.PQIndex.warm`), so the first requests do not read them from disk.
    Indexes held in memory have nothing to warm. Returns the bytes read."""
    return sum(int(part.warm(map_rows=map_rows)) for part in _pq_parts(index))


def release_mapped_rows(index: VectorIndex) -> bool:
    """Stop reading ``index``'s on-disk rows through memory maps (IVF-PQ parts:
    :meth:`stygig.index_pq.PQIndex.release_mapped_rows`), so they leave the process's memory
    before another version loads. Returns whether any rows were mapped."""
    return any([part.release_mapped_rows() for part in _pq_parts(index)])


def restore_mapped_rows(index: VectorIndex) -> None:
    """Undo :func:`release_mapped_rows` (the rows are mapped again, as loading maps them)."""
    for part in _pq_parts(index):
        part.restore_mapped_rows()


def is_exhaustive(index: VectorIndex) -> bool:
    """Whether ``index`` searches every vector (exact, flat, or a split of those)."""
    if isinstance(index, LiveIndex):
        return is_exhaustive(index.base)
    if isinstance(index, PartitionedIndex):
        return all(is_exhaustive(p) for p in index.parts)
    return index.kind in ("exact", "flat")


def plan_parts(
    partitions: Sequence[str], n: int, kind: str, params: dict[str, Any]
) -> tuple[list[str], list[np.ndarray], list[str], list[dict[str, Any]]]:
    """A split index's parts, one per distinct label (sorted): name, rows, index kind and
    parameters, as :meth:`PartitionedIndex.build` builds them and the Ray build plans them.

    With ``auto``, parts up to :data:`PART_FLAT_MAX_ITEMS` are flat and larger ones ``ivf``
    (``ivfpq`` from :data:`PQ_MIN_ITEMS` items in all), with IVF probes per
    :data:`PART_SCAN_BUDGET` (IVF-PQ parts: per the whole catalogue's size,
    :func:`stygig.index_pq.default_nprobe`). Whatever the kind, a part of fewer than
    :data:`PQ_MIN_ROWS` rows is flat: it cannot train PQ codebooks, and an exact search of so
    few rows costs nothing."""
    labels = np.asarray(list(partitions), dtype=object)
    if len(labels) != n:
        raise InvalidOptionsError(f"{len(labels)} partition labels for {n} vectors: one per row")
    names = sorted({str(v) for v in labels})
    rows = [np.flatnonzero(labels == name) for name in names]
    big = "ivfpq" if n >= PQ_MIN_ITEMS else "ivf"

    def kind_of(size: int) -> str:
        if size < PQ_MIN_ROWS or (kind == "auto" and size <= PART_FLAT_MAX_ITEMS):
            return "flat"
        return big if kind == "auto" else kind

    kinds = [kind_of(len(r)) for r in rows]
    # nprobe x n / nlist vectors scanned per IVF part, with nlist = 2 sqrt(n).
    root_sum = sum(np.sqrt(len(r)) for r, k in zip(rows, kinds, strict=True) if k == "ivf")
    nprobe = max(PART_MIN_NPROBE, int(np.ceil(2 * PART_SCAN_BUDGET / max(root_sum, 1.0))))
    each = []
    for r, part_kind in zip(rows, kinds, strict=True):
        one = dict(params)
        if part_kind == "ivf":
            one.setdefault("nprobe", min(nprobe, default_nlist(len(r))))
        elif part_kind == "ivfpq":
            from stygig.index_pq import default_nprobe  # lazy: index_pq imports this module

            one.setdefault("nprobe", default_nprobe(n))  # by the whole catalogue's size
        each.append(one)
    return names, rows, kinds, each


class PartitionedIndex(_Tombstones):
    """One index per partition of the catalogue (its outfit slots); ids stay artifact rows.

    Why: in outfit mode the candidates are *other* slots' items. A single approximate search
    returns the query's visual neighbourhood — at a million items, thousands of near-copies of
    the query's own kind — so complementary slots could be missing from the pool entirely.
    Searching each slot's own index returns every slot's best items (:meth:`search_each`);
    :meth:`search` merges the parts into the catalogue-wide top ``k`` (for the vote and for
    similar items). With ``auto``, small parts (up to ``PART_FLAT_MAX_ITEMS``) are searched
    exactly, larger ones with IVF (probes per ``PART_SCAN_BUDGET``).
    """

    def __init__(
        self,
        names: list[str],
        parts: list[VectorIndex],
        rows: list[np.ndarray],
        by: str = "label",
    ) -> None:
        if not parts:
            raise ArtifactError("a partitioned index needs at least one part")
        self.names, self.parts, self.rows, self.by = names, parts, rows, by
        self.dim = parts[0].dim
        kinds = {p.kind for p in parts}
        self.kind = next((k for k in ("ivfpq", "ivf") if k in kinds), parts[0].kind)
        n = sum(len(r) for r in rows)
        self._part_of = np.empty(n, np.int64)
        self._local = np.empty(n, np.int64)
        for i, r in enumerate(rows):
            self._part_of[r] = i
            self._local[r] = np.arange(len(r))

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        partitions: Sequence[str],
        kind: str = "auto",
        by: str = "label",
        **params: Any,
    ) -> PartitionedIndex:
        names, rows, kinds, each = plan_parts(partitions, len(vectors), kind, params)
        parts = [
            build_index(vectors[r], part_kind, **part_params)
            for r, part_kind, part_params in zip(rows, kinds, each, strict=True)
        ]
        return cls(names, parts, rows, by)

    @property
    def ntotal(self) -> int:
        return len(self._part_of)

    def search_each(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Every part's top ``k`` per query, concatenated and sorted best first."""
        q = _check_queries(queries, self.dim, k)
        scores, ids = [], []
        for part, rows in zip(self.parts, self.rows, strict=True):
            s, i = part.search(q, min(k, len(rows)))
            scores.append(s)
            ids.append(np.where(i >= 0, rows[np.maximum(i, 0)], -1))
        all_s, all_i = np.concatenate(scores, axis=1), np.concatenate(ids, axis=1)
        order = np.argsort(-all_s, axis=1, kind="stable")
        return np.take_along_axis(all_s, order, 1), np.take_along_axis(all_i, order, 1)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, ids = _pad(*self.search_each(queries, k), k)
        return scores[:, :k], ids[:, :k]

    def remove(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        super().remove(ids)
        for i, part in enumerate(self.parts):
            mine = ids[self._part_of[ids] == i]
            if len(mine):
                part.remove(self._local[mine])

    def without(self, ids: np.ndarray) -> PartitionedIndex:
        ids = np.asarray(ids, dtype=np.int64)
        out: PartitionedIndex = super().without(ids)
        out.parts = list(self.parts)
        for i, part in enumerate(self.parts):
            mine = ids[self._part_of[ids] == i]
            if len(mine):
                out.parts[i] = part.without(self._local[mine])  # type: ignore[attr-defined]
        return out

    def with_added(self, vectors: np.ndarray, labels: Sequence[str]) -> PartitionedIndex:
        """A copy with ``vectors`` added, each to the part of its label (its outfit slot; a
        label no part has gets a new exact part); this index is unchanged."""
        names, parts, rows = list(self.names), list(self.parts), list(self.rows)
        start = self.ntotal
        labels_arr = np.asarray([str(v) for v in labels], dtype=object)
        for name in sorted(set(labels_arr.tolist())):
            mine = np.flatnonzero(labels_arr == name)
            new_rows = start + mine
            if name in names:
                i = names.index(name)
                parts[i] = parts[i].with_added(vectors[mine])  # type: ignore[attr-defined]
                rows[i] = np.concatenate([rows[i], new_rows])
            else:
                names.append(name)
                parts.append(ExactIndex(vectors[mine]))
                rows.append(new_rows)
        out = PartitionedIndex(names, parts, rows, self.by)
        _keep_tombstones(self, out)
        return out

    def save(self, path: Path) -> list[str]:
        files = ["index-partitions.npy"]
        labels = np.empty(self.ntotal, np.int32)
        for i, (part, r) in enumerate(zip(self.parts, self.rows, strict=True)):
            labels[r] = i
            if part.kind != "exact":  # exact parts are the embeddings themselves
                files += part.save(path, f"index-part{i}.faiss")  # type: ignore[call-arg]
        np.save(path / "index-partitions.npy", labels)
        return files

    def params(self) -> dict[str, Any]:
        return {
            "partition_by": self.by,
            "parts": [
                {"name": name, "kind": part.kind, "items": len(rows), **part.params()}
                for name, part, rows in zip(self.names, self.parts, self.rows, strict=True)
            ],
        }

    @classmethod
    def load(cls, path: Path, vectors: np.ndarray, params: dict[str, Any]) -> PartitionedIndex:
        file = path / "index-partitions.npy"
        try:
            labels = np.load(file)
        except (OSError, ValueError) as e:
            raise ArtifactError(f"cannot read {file.name}: {e}") from e
        specs = list(params["parts"])
        if len(labels) != len(vectors) or (len(labels) and labels.max() >= len(specs)):
            raise ArtifactError(f"{file.name} does not match the item table or the manifest")
        names, parts, rows = [], [], []
        for i, spec in enumerate(specs):
            r = np.flatnonzero(labels == i)
            if len(r) != int(spec["items"]):
                raise ArtifactError(
                    f"index part {spec['name']!r}: {len(r)} rows, manifest says {spec['items']}"
                )
            kind = str(spec["kind"])
            extra = {k: v for k, v in spec.items() if k not in ("name", "kind", "items")}
            part: VectorIndex = (
                ExactIndex(vectors[r])
                if kind == "exact"
                else _load_pq(path, f"index-part{i}.faiss", len(r), extra, _dim(vectors))
                if kind == "ivfpq"
                else _load_faiss(path / f"index-part{i}.faiss", kind, len(r), extra, _dim(vectors))
            )
            names.append(str(spec["name"]))
            parts.append(part)
            rows.append(r)
        return cls(names, parts, rows, str(params.get("partition_by", "label")))


class LiveIndex:
    """An artifact's index while its catalogue changes (see the module docstring).

    ``base`` answers for rows ``0 .. base.ntotal - 1`` and is never written; rows after it are
    ``vectors[base.ntotal:]``, searched exactly (per partition ``labels`` when the base is a
    :class:`PartitionedIndex`); ``removed`` marks every dead row. Instances are immutable:
    :meth:`changed` returns a new one, so a search never sees half a change.
    """

    def __init__(
        self,
        base: VectorIndex,
        vectors: np.ndarray,
        removed: np.ndarray | None = None,
        labels: Sequence[str] = (),
    ) -> None:
        self.base = base
        self.vectors = vectors  # every row's vector (the catalogue's embeddings)
        self.dim = base.dim
        self.kind = base.kind
        self.n_base = base.ntotal
        self.labels = tuple(labels)  # partition label of each appended row
        removed = np.zeros(len(vectors), bool) if removed is None else removed
        self.removed: np.ndarray | None = removed
        self.n_removed = int(removed.sum())
        # The appended rows of each partition, made once (instances never change).
        appended = np.arange(self.n_base, len(vectors), dtype=np.int64)
        tags = np.asarray(self.labels, dtype=object)
        self._by_label = {str(label): appended[tags == label] for label in sorted(set(self.labels))}
        if isinstance(base, PartitionedIndex):
            self.parts = base.parts  # what callers that count parts see

    @property
    def ntotal(self) -> int:
        return len(self.vectors)

    @property
    def n_added(self) -> int:
        """Rows appended since the base index was made."""
        return self.ntotal - self.n_base

    @property
    def partitioned(self) -> bool:
        return isinstance(self.base, PartitionedIndex)

    def changed(
        self,
        vectors: np.ndarray,
        removed_rows: Sequence[int] = (),
        labels: Sequence[str] = (),
    ) -> LiveIndex:
        """A new live index over ``vectors`` (these rows, maybe more appended after them, with
        partition ``labels`` for the appended ones), with ``removed_rows`` dead too. Past
        :data:`MERGE_ROWS` appended rows they go into a copy of the base index."""
        n = len(vectors)
        removed = np.zeros(n, bool)
        if self.removed is not None:
            removed[: len(self.removed)] = self.removed
        dead = np.asarray(list(removed_rows), np.int64)
        removed[dead] = True
        all_labels = (*self.labels, *labels)
        base = self.base
        in_base = dead[dead < self.n_base]
        if len(in_base):
            base = base.without(in_base)  # type: ignore[attr-defined]
        if n - self.n_base >= MERGE_ROWS:
            base = self._merged(base, vectors, all_labels, removed)
            all_labels = ()
        return LiveIndex(base, vectors, removed, all_labels)

    def _merged(
        self, base: VectorIndex, vectors: np.ndarray, labels: Sequence[str], removed: np.ndarray
    ) -> VectorIndex:
        new = np.asarray(vectors[self.n_base :], np.float32)
        if isinstance(base, PartitionedIndex):
            grown: VectorIndex = base.with_added(new, labels)
        else:
            grown = base.with_added(new)  # type: ignore[attr-defined]
        dead = np.flatnonzero(removed[self.n_base :]) + self.n_base
        if len(dead):
            grown = grown.without(dead)  # type: ignore[attr-defined]
        return grown

    def _delta(self, q: np.ndarray, k: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact top ``k`` among appended ``rows`` (catalogue ids)."""
        if not len(rows):
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        sims = similarities(self.vectors[rows], q).T
        scores, local = top_k(
            sims, min(k, len(rows)), self.removed[rows] if self.removed is not None else None
        )
        return scores, np.where(local >= 0, rows[np.maximum(local, 0)], -1)

    def _appended(self) -> np.ndarray:
        return np.arange(self.n_base, self.ntotal, dtype=np.int64)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = _check_queries(queries, self.dim, k)
        scores, ids = self.base.search(q, k)
        if self.n_added:
            d_s, d_i = self._delta(q, k, self._appended())
            scores, ids = _merge_best((scores, ids), (d_s, d_i))
        return _pad(scores[:, :k], ids[:, :k], k)

    def search_each(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Every part's top ``k`` (a split base), appended rows counted in their part."""
        base = self.base
        assert isinstance(base, PartitionedIndex)
        q = _check_queries(queries, self.dim, k)
        found = [base.search_each(q, k)]
        for rows in self._by_label.values():
            found.append(self._delta(q, k, rows))
        return _merge_best(*found)

    def remove(self, ids: np.ndarray) -> None:
        """Live indexes change by :meth:`changed` (a new index), never in place."""
        raise ArtifactError("a live index changes through changed(), never in place")

    def save(self, path: Path) -> list[str]:
        raise ArtifactError("a changed catalogue is saved by compaction, not index by index")

    def params(self) -> dict[str, Any]:
        return self.base.params()


def _merge_best(*found: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate ``(scores, ids)`` blocks column-wise and sort each row best first."""
    scores = np.concatenate([s for s, _ in found], axis=1)
    ids = np.concatenate([i for _, i in found], axis=1)
    order = np.argsort(-scores, axis=1, kind="stable")
    return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)


def _row_reader(index: Any) -> Any:
    """A function reading rows ``ids`` (ascending, distinct) of ``index``'s own copy of its
    vectors -- float16 rows of ``ivfpq``, float32 rows of exact and flat indexes, appended rows
    of a live one -- or ``None`` when some part keeps no rows it can read cheaply (IVF lists,
    HNSW)."""
    from stygig.index_pq import PQIndex  # lazy: index_pq imports this module

    if isinstance(index, PQIndex):
        return index.rows
    if isinstance(index, ExactIndex):
        return lambda ids: index.vectors[ids]
    if isinstance(index, FaissIndex) and index.kind == "flat":
        import faiss

        n, held = index.ntotal, index.index
        flat = faiss.rev_swig_ptr(held.get_xb(), n * index.dim) if n else np.zeros(0, np.float32)
        vectors = flat.reshape(n, index.dim)  # a view into the FAISS index's own rows

        def flat_rows(ids: np.ndarray, owner: Any = held) -> np.ndarray:  # owner: keeps them alive
            out: np.ndarray = vectors[ids]
            return out

        return flat_rows
    if isinstance(index, PartitionedIndex):
        readers = [_row_reader(p) for p in index.parts]
        if any(r is None for r in readers):
            return None

        def split(ids: np.ndarray) -> np.ndarray:
            # Each part's rows are ascending artifact rows, so its local ids come out ascending.
            part, local = index._part_of[ids], index._local[ids]
            out = np.empty((len(ids), index.dim), np.float32)
            for p in np.unique(part).tolist():
                mine = part == p
                out[mine] = readers[p](local[mine])
            return out

        return split
    if isinstance(index, LiveIndex):
        base, n_base = _row_reader(index.base), index.n_base
        if base is None:
            return None

        def live(ids: np.ndarray) -> np.ndarray:
            cut = int(np.searchsorted(ids, n_base))
            if cut == len(ids):
                held: np.ndarray = base(ids)
                return held
            added = np.asarray(index.vectors[ids[cut:]], np.float32)
            return np.concatenate([base(ids[:cut]), added]) if cut else added

        return live
    return None


class IndexRows:
    """An index's own copy of the catalogue's vectors, read like the embeddings matrix.

    Why: an ``ivfpq`` catalogue leaves ``embeddings.npy`` on disk (float32, 20 GB at 10M items)
    and keeps float16 rows for re-ranking (10 GB, which must sit in the page cache for search
    to be fast). An answer also reads a few hundred vectors (MMR's redundancy, exact scores of
    a filtered candidate set, an item query's own vector); read from ``embeddings.npy`` they
    need that file in the page cache too (30 GB in all at 10M), or each costs a disk read
    (measured at 300k items with the file evicted: answer p50 11.8 ms against 3.4). Read from
    the rows the index already holds they cost nothing more. float16 rows are within ~5e-4 of
    the float32 inner products, the precision re-ranking already answers with.

    Reads like :class:`~stygig.rowfile.FileRows` (``len``, ``shape``, ``dtype``, an int, a
    slice, row numbers of any shape, a row mask), always as float32.
    """

    __slots__ = ("_read", "dtype", "ndim", "shape")

    def __init__(self, read: Callable[[np.ndarray], np.ndarray], rows: int, dim: int) -> None:
        self._read = read
        self.shape = (rows, dim)
        self.dtype = np.dtype(np.float32)
        self.ndim = 2

    @classmethod
    def of(cls, index: Any) -> IndexRows | None:
        """``index``'s rows, or ``None`` when some part keeps none it can read cheaply."""
        read = _row_reader(index)
        return None if read is None else cls(read, int(index.ntotal), int(index.dim))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        rows = row_numbers(key, self.shape[0])
        if isinstance(rows, int):
            one: np.ndarray = self._take(np.array([rows], np.int64))[0]
            return one
        return self._take(rows)

    def _take(self, rows: np.ndarray) -> np.ndarray:
        return gather(rows, lambda ids: np.asarray(self._read(ids), np.float32), self.shape[1])

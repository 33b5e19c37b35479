"""A compressed index for 10M-100M items: IVF-PQ codes in memory, exact re-ranking from disk.

At ten million 512-d items the float16 IVF lists of :class:`stygig.index.FaissIndex` would hold
10 GB in memory, and one query would stream tens of megabytes of them. :class:`PQIndex` keeps
only a product-quantised code per item in memory (``m`` sub-quantisers of 4 bits: 256 bytes at
512-d, scanned with FAISS's SIMD "fast-scan" kernels, optionally after an OPQ rotation), finds a
shortlist of ``k + rerank_extra`` candidates with it (:data:`RERANK_DEPTH`), and re-ranks the shortlist exactly from the
items' float16 vectors, which stay in a file on disk: only the shortlisted rows are read, so
scores are the same inner products the float16 IVF lists give (within ~1e-4 of float32). The
first ``mapped_rows_mb`` of the rows are read through a memory map, the rest with ``pread``:
mapped pages count in the process's resident memory and random reads end up mapping the whole
mapped range, so resident memory is the codes, the ids and the coarse centroids (about 270 MB
per million 512-d items) plus at most that much of the rows file (1 GB per million items). The
latency figures assume the whole rows file is in the kernel's page cache (:meth:`PQIndex.warm`,
which a server runs before it reports ready):
memory the machine must have beside the process's own.

Building is two pure steps so that a cluster can run them as tasks (see ``docs/scale.md``):
:func:`train_pq` (a sample in, the trained empty index as bytes out) and :func:`add_chunk`
(trained bytes and one chunk of vectors with their row ids in, that chunk's lists as bytes out);
:func:`merge_chunks` assembles the chunks. :meth:`PQIndex.build` does the same in one process,
adding chunk by chunk so the float32 copy is never larger than one chunk.
"""

from __future__ import annotations

import copy
import mmap
import os
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from stygig.errors import ArtifactError, InvalidOptionsError
from stygig.index import (
    PQ_MIN_ROWS,
    _apply_tombstones,
    _check_queries,
    _pad,
    _Tombstones,
    check_row_ids,
    read_faiss,
)
from stygig.rowfile import pread_rows

__all__ = [
    "PQ_KIND",
    "PQIndex",
    "add_chunk",
    "default_nprobe",
    "default_pq_params",
    "fp16_rows",
    "merge_chunks",
    "store_rows",
    "train_pq",
    "training_sample",
    "vectors_file",
    "write_store",
    "zero_padding",
]

PQ_KIND = "ivfpq"

#: Vectors encoded per ``add`` call when building in one process (float32 copy: 200 MB at 512-d).
ADD_CHUNK_ROWS = 100_000

#: Training sample: this many vectors per coarse list, within these bounds.
TRAIN_PER_LIST = 40
TRAIN_MIN, TRAIN_MAX = 20_000, 160_000

#: Defaults (see benchmarks/bench_scale.py and docs/scale.md for how they were chosen): 32
#: probes of sqrt(n) lists per part up to :data:`NPROBE_FULL_ITEMS` items in the catalogue
#: (fewer above: :func:`default_nprobe`), and a shortlist of k + 100 candidates re-ranked
#: exactly (recall@50 at 1M: 0.980 with 100 extra, 0.954 with 50, the same as float16 lists).
DEFAULT_NPROBE = 32
DEFAULT_RERANK_EXTRA = 100

#: Up to this many items in the whole catalogue every part is probed :data:`DEFAULT_NPROBE`
#: times; above it the default falls as ``sqrt(NPROBE_FULL_ITEMS / n)``, never below
#: :data:`MIN_DEFAULT_NPROBE`.
NPROBE_FULL_ITEMS = 5_000_000
MIN_DEFAULT_NPROBE = 24

#: The depth whose order ``rerank_extra`` protects: a search for ``k`` re-ranks a shortlist of
#: ``max(k, min(k, RERANK_DEPTH) + rerank_extra)`` codes. Up to 50 that is ``k + extra``; a
#: deeper search (the engine's candidate pool asks 293 per slot) already holds the 150 codes
#: that make its top 50 right, so it re-ranks just its ``k``. Measured at 1M
#: (``docs/scale.md``): per-slot recall@50 0.9741 with a shortlist of 293 against 0.9744 with
#: 393, and 2,051 rows read per pool search instead of 2,751; ranks 150-293 of the pool are
#: then the PQ order's, re-scored exactly (recall@293 0.81 against 0.90).
RERANK_DEPTH = 50

#: Index parameter ``mapped_rows_mb``: how many MB of each loaded index's (each slot part's)
#: float16 rows are read through a memory map -- fast, but resident in this process once
#: touched -- the first rows of the file; the rest are read with ``pread`` from the page cache.
#: 640 maps every row up to ~650k 512-d items per part (1M items split by slot: all of them;
#: 10M: the three smaller slots whole, a third of the others) and bounds the rows' share of
#: resident memory at 10M items (7 parts) to 4.5 GB beside 2.9 GB of codes: 7.3 GB in all.
#: Each part gets the same share of a query's candidates whatever its size, so a small part's
#: rows are read most often. Measured at 10M (``docs/scale.md``, interleaved): pool search
#: 7.69 ms against 8.18 with 512 and 5.94 with every row mapped (12.7 GB resident).
DEFAULT_MAPPED_ROWS_MB = 640


def default_nprobe(n_total: int) -> int:
    """Probes per part for a catalogue of ``n_total`` items (all parts together).

    Each part has ``sqrt(n_part)`` lists of ``sqrt(n_part)`` codes, so a probe scans more codes
    as the catalogue grows, and every part is searched per query. Up to
    :data:`NPROBE_FULL_ITEMS` items: :data:`DEFAULT_NPROBE`; above, ``32 sqrt(5M / n)`` probes,
    at least :data:`MIN_DEFAULT_NPROBE`. Measured on the synthetic 512-d catalogues split by
    slot (docs/scale.md): 1M and 5M with 32 probes, recall@50 0.987 and 0.986; 10M with 32,
    recall@50 0.978 but search + scoring 10.9 ms p50, over the 10 ms target; 10M with 24 (this
    rule's value there), recall@50 0.961 and 8.4-9.8 ms. Sizes in between are interpolated,
    not measured; ``stygig build --nprobe N`` overrides it.
    """
    if n_total <= NPROBE_FULL_ITEMS:
        return DEFAULT_NPROBE
    scaled = round(DEFAULT_NPROBE * float(np.sqrt(NPROBE_FULL_ITEMS / n_total)))
    return max(MIN_DEFAULT_NPROBE, int(scaled))


def default_pq_params(n_items: int, dim: int, n_total: int | None = None) -> dict[str, Any]:
    """Settings for ``n_items`` vectors of ``dim``: ``nlist = sqrt(n)`` lists (half the flat IVF
    kind's: a code is 4x smaller than a float16 row, so lists may be longer), ``m = dim``
    sub-quantisers of 4 bits (256 bytes at 512-d: at 2 bits a dimension, m = dim / 2, recall@50
    stayed below 0.85 with 300 candidates re-ranked on clustered 512-d vectors), ``nprobe``
    (:func:`default_nprobe` of ``n_total``, the whole catalogue when these vectors are one
    part of it; default ``n_items``) and the candidates re-ranked beyond ``k``."""
    return {
        "nlist": max(1, min(65_536, int(np.sqrt(max(n_items, 1))))),
        "m": dim,
        "nbits": 4,
        "opq": False,
        "nprobe": default_nprobe(n_items if n_total is None else n_total),
        "rerank_extra": DEFAULT_RERANK_EXTRA,
    }


def _factory(dim: int, params: dict[str, Any]) -> str:
    m, nbits, nlist = int(params["m"]), int(params["nbits"]), int(params["nlist"])
    if dim % m:
        raise InvalidOptionsError(f"PQ sub-quantisers m={m} must divide the dimension {dim}")
    if nbits != 4:
        raise InvalidOptionsError(f"PQ codes are 4 bits (FAISS fast-scan), not {nbits}")
    opq = f"OPQ{m}_{dim}," if params.get("opq") else ""
    return f"{opq}IVF{nlist},PQ{m}x4fs"


def _serialize(index: Any) -> bytes:
    import faiss

    return bytes(faiss.serialize_index(index).tobytes())


def _deserialize(data: bytes) -> Any:
    import faiss

    return faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))


def train_pq(sample: np.ndarray, **params: Any) -> bytes:
    """Train an empty IVF-PQ index on ``sample`` (L2-normalised rows); return it as bytes.

    ``params``: ``nlist``, ``m`` (sub-quantisers of 4 bits), ``opq`` (bool), ``seed``;
    missing ones come from :func:`default_pq_params` for the sample's size. Pure and picklable:
    a cluster runs it as one task and ships the bytes to :func:`add_chunk` tasks.
    """
    import faiss

    x = np.ascontiguousarray(sample, dtype=np.float32)
    if x.ndim != 2 or len(x) == 0:
        raise InvalidOptionsError("IVF-PQ training needs a non-empty (n, dim) sample")
    full = {**default_pq_params(len(x), x.shape[1]), **params}
    full["nlist"] = min(int(full["nlist"]), len(x))
    index = faiss.index_factory(x.shape[1], _factory(x.shape[1], full), faiss.METRIC_INNER_PRODUCT)
    ivf: Any = faiss.downcast_index(faiss.extract_index_ivf(index))  # a view: ``index`` owns it
    ivf.cp.niter = 10
    ivf.cp.seed = int(full.get("seed", 0))
    ivf.cp.max_points_per_centroid = 10_000  # use the whole sample we were given
    # Each of the m codebooks has 2^nbits centroids: 128 points per centroid and 10 iterations
    # train as well as FAISS's 256 and 25 (same recall) in a quarter of the time.
    ivf.pq.cp.niter = 10
    ivf.pq.cp.max_points_per_centroid = 128
    index.train(x)
    return _serialize(index)


def add_chunk(trained: bytes, vectors: np.ndarray, ids: np.ndarray) -> bytes:
    """Encode ``vectors`` (rows ``ids`` of the part) into a copy of the ``trained`` index and
    return it as bytes (only this chunk's codes). Pure and picklable, like :func:`train_pq`."""
    index = _deserialize(trained)
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    row_ids = np.ascontiguousarray(ids, dtype=np.int64)
    if len(x) != len(row_ids):
        raise InvalidOptionsError(f"{len(x)} vectors but {len(row_ids)} ids")
    index.add_with_ids(x, row_ids)
    return _serialize(index)


def merge_chunks(trained: bytes, chunks: Iterable[bytes]) -> Any:
    """The FAISS index holding every chunk made by :func:`add_chunk` from ``trained``, with
    the unused block slots zeroed (:func:`zero_padding`)."""
    import faiss

    index = _deserialize(trained)
    ivf = faiss.extract_index_ivf(index)
    for data in chunks:
        chunk = _deserialize(data)  # held: the extracted IVF view does not own it
        ivf.merge_from(faiss.extract_index_ivf(chunk), 0)
        del chunk
    index.ntotal = ivf.ntotal  # an OPQ wrapper keeps its own count
    zero_padding(index)
    return index


def zero_padding(index: Any) -> None:
    """Zero the unused slots of each inverted list's last fast-scan block (32 codes per block).

    FAISS ``merge_from`` leaves those slots as uninitialised memory, which searches never read
    but which would make the codes file differ from build to build; a local build's ``add``
    leaves them zero. Zeroed, the merged index is the local one byte for byte (checked in
    tests/integration/test_ray_build.py). Idempotent."""
    import faiss

    ivf: Any = faiss.extract_index_ivf(index)
    packer = ivf.get_CodePacker()
    per_block, block_size = int(packer.nvec), int(packer.block_size)
    zero = np.zeros(int(packer.code_size), np.uint8)
    lists = ivf.invlists
    for list_no in range(int(ivf.nlist)):
        size = int(lists.list_size(list_no))
        used = size % per_block
        if not used:
            continue
        blocks = -(-size // per_block)
        codes = faiss.rev_swig_ptr(lists.get_codes(list_no), blocks * block_size)  # a view
        last = codes[(blocks - 1) * block_size :].reshape(1, block_size)
        for slot in range(used, per_block):
            packer.pack_1(zero, slot, last)


def fp16_rows(block: np.ndarray) -> np.ndarray:
    """``block`` as float16, rounded by FAISS's fp16 scalar quantizer as a local build's rows
    are (it rounds exact halves away from zero where NumPy's ``astype`` rounds them to even:
    ~1 value in 17,000 of 128-d unit vectors differed by one unit in the last place).
    A float16 block is returned as it is."""
    import faiss

    if block.dtype == np.float16:
        return np.ascontiguousarray(block)
    x = np.ascontiguousarray(block, dtype=np.float32)
    quantizer = faiss.IndexScalarQuantizer(
        x.shape[1], faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
    )
    codes: np.ndarray = quantizer.sa_encode(x)
    return codes.view(np.float16).reshape(len(x), x.shape[1])


def _store_header(n: int, dim: int) -> bytes:
    """The bytes before the rows in a float16 store file: a FAISS ``IndexScalarQuantizer``
    (fp16, inner product) header for ``n`` rows, ending with the rows' byte count."""
    import faiss

    empty = faiss.IndexScalarQuantizer(
        dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
    )
    head = _serialize(empty)
    if head[:4] != b"IxSQ" or np.frombuffer(head[-8:], np.uint64)[0] != 0:
        raise ArtifactError("unexpected FAISS scalar-quantizer file layout")
    count, size = np.int64(n).tobytes(), np.uint64(n * dim * 2).tobytes()
    return head[:8] + count + head[16:-8] + size


def write_store(file: Path, blocks: Iterable[np.ndarray], n: int, dim: int) -> None:
    """Write ``n`` rows (given block by block) as a float16 store file: a FAISS fp16
    ``IndexScalarQuantizer`` that :meth:`PQIndex.load` reads rows from and that
    :func:`store_rows` opens as a NumPy memmap. Never holds more than one block; float32
    blocks are rounded as a local build rounds them (:func:`fp16_rows`)."""
    written = 0
    with open(file, "wb") as f:
        f.write(_store_header(n, dim))
        for block in blocks:
            rows = fp16_rows(block)
            f.write(rows.tobytes())
            written += len(rows)
    if written != n:
        raise InvalidOptionsError(f"store {file.name}: {written} rows written, {n} declared")


def store_rows(file: Path, n: int, dim: int, mode: Literal["r", "w+"] = "r") -> np.ndarray:
    """The rows of a store file as an ``(n, dim)`` float16 memmap; ``mode="w+"`` creates the
    file (header written, rows to be filled), as a build writing rows in place does."""
    head = _store_header(n, dim)
    if mode == "w+":
        with open(file, "wb") as f:
            f.write(head)
            f.truncate(len(head) + n * dim * 2)
    rows: np.ndarray = np.memmap(
        file, dtype=np.float16, mode="r" if mode == "r" else "r+", offset=len(head), shape=(n, dim)
    )
    return rows


def _memory_store(rows: np.ndarray) -> Any:
    import faiss

    dim = rows.shape[1]
    store = faiss.IndexScalarQuantizer(
        dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
    )
    for start in range(0, len(rows), ADD_CHUNK_ROWS):
        store.add(np.ascontiguousarray(rows[start : start + ADD_CHUNK_ROWS], dtype=np.float32))
    return store


def vectors_file(name: str) -> str:
    """The float16 rows file saved beside the codes file ``name``."""
    return (name[: -len(".faiss")] if name.endswith(".faiss") else name) + "-vectors.faiss"


def _inner_products(query: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``query``'s inner products with float16 ``rows``, best first, as (scores, positions in
    ``rows``): FAISS's SIMD fp16 scalar-quantizer kernel, the distance ``IndexRefine`` gives
    over an fp16 store (the same floats, tested), on a throwaway index holding just ``rows``."""
    import faiss

    dim = rows.shape[1]
    scratch = faiss.IndexScalarQuantizer(
        dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
    )
    scratch.add_sa_codes(np.ascontiguousarray(rows).view(np.uint8).reshape(len(rows), 2 * dim))
    scores, positions = scratch.search(query[None, :], len(rows))
    return scores[0], positions[0]


class _Held:
    """The rows a segment reads without ``pread``, in one attribute so a reader takes all of it
    at once and keeps what it points into alive: every row (in memory, or mapped by FAISS,
    re-ranked by ``refine``) or the first ``len(rows)`` rows mapped by this process."""

    __slots__ = ("owner", "refine", "rows")

    def __init__(self, rows: np.ndarray, refine: Any = None, owner: Any = None) -> None:
        self.rows, self.refine, self.owner = rows, refine, owner  # owner: the store or the map


class _Segment:
    """Codes and float16 rows of consecutive ids ``offset ..``: the index's own rows (codes in
    memory, rows in the store ``file`` after loading), or rows built or added in this process
    (both in memory).

    A loaded segment whose rows file holds at most ``mapped_bytes`` of rows memory-maps it
    whole and re-ranks with FAISS's ``IndexRefine``, as an in-memory one does. A larger one
    maps its first ``mapped_bytes`` of rows and reads the others with ``pread``: mapped pages
    count in the process's resident memory, and random re-ranking reads through a map (the
    kernel maps up to 16 neighbouring cached pages on each fault, ``MADV_RANDOM`` or not) make
    the whole mapped range resident over a server's life -- all 10 GB at 10M items with
    everything mapped. So ``mapped_bytes`` bounds the rows' share of resident memory; rows read
    with ``pread`` live only in the kernel's page cache (shared, reclaimable), at the price of
    a page-cache lookup per row (~3 us at 10M items against ~0.2 us through a mapped page;
    ``docs/scale.md``).

    The file is opened once: maps and reads (also after :meth:`release` and :meth:`hold`) go
    through that handle, so a folder rebuilt in place under the same name never mixes into
    the rows this segment serves."""

    def __init__(
        self,
        codes: Any,
        store: Any,
        offset: int,
        file: Path | None = None,
        mapped_bytes: int = 0,
    ) -> None:
        import faiss

        self.codes, self.offset, self.file = codes, offset, file
        self.ivf = faiss.extract_index_ivf(codes)
        self.dim = int(codes.d)
        self.held: _Held | None = None
        if store is not None:  # built or added here: every row in memory
            self.held = self._whole(store)
        if file is not None:
            self._fd = os.open(file, os.O_RDONLY)
            weakref.finalize(self, os.close, self._fd)
            self._start = os.fstat(self._fd).st_size - self.n * 2 * self.dim  # rows end the file
            self.hold(mapped_bytes)

    @property
    def n(self) -> int:
        return int(self.codes.ntotal)

    @property
    def mapped(self) -> bool:
        """Whether some of this segment's file rows are read through a memory map."""
        return self.file is not None and self.held is not None

    def _whole(self, store: Any) -> _Held:
        import faiss

        if self.codes.ntotal != store.ntotal:
            raise ArtifactError(f"IVF-PQ: {self.codes.ntotal} codes but {store.ntotal} stored rows")
        flat = faiss.rev_swig_ptr(store.codes.data(), self.n * 2 * self.dim) if self.n else b""
        rows = np.frombuffer(flat, np.float16).reshape(self.n, self.dim)
        return _Held(rows, faiss.IndexRefine(self.codes, store), store)  # refine holds no refs

    def hold(self, mapped_bytes: int) -> None:
        """Map the file's rows as loading does: the whole file through FAISS's reader (which
        checks it) when its rows fit in ``mapped_bytes``, else its first ``mapped_bytes`` of
        rows (the others read with ``pread``)."""
        import faiss

        assert self.file is not None
        # Through this segment's own handle (the file it opened, whatever the name holds now)
        # where the system names open files (/dev/fd: Linux, macOS), else by the name.
        own = f"/dev/fd/{self._fd}"
        source = own if os.path.exists(own) else str(self.file)
        try:
            store: Any = faiss.read_index(source, faiss.IO_FLAG_MMAP_IFC)
        except RuntimeError as e:
            raise ArtifactError(f"cannot read IVF-PQ rows {self.file.name}: {e}") from e
        if store.d != self.codes.d or store.ntotal != self.codes.ntotal:
            raise ArtifactError(f"IVF-PQ rows {self.file.name} do not match the codes")
        row = 2 * self.dim
        if self.n * row <= mapped_bytes:
            self.held = self._whole(store)
            return
        del store  # unmapped: rows beyond the mapped ones are read with pread
        cut = min(self.n, mapped_bytes // row)
        if not cut:
            self.held = None
            return
        view = mmap.mmap(self._fd, self._start + cut * row, prot=mmap.PROT_READ)
        head = np.frombuffer(view, np.uint8, cut * row, self._start)
        self.held = _Held(head.view(np.float16).reshape(cut, self.dim), None, view)

    def read_file(self, buffer: memoryview) -> int:
        """Read this segment's whole file once, in order, through ``buffer`` (into the page
        cache); returns the bytes read."""
        total = 0
        while got := os.preadv(self._fd, [buffer], total):
            total += got
        return total

    def release(self) -> bool:
        """Read every file row with ``pread`` from now on; the map closes when the last search
        holding it ends. Returns whether anything was mapped."""
        was = self.mapped
        if self.file is not None:
            self.held = None
        return was

    def gather(self, ids: np.ndarray) -> np.ndarray:
        """Rows ``ids`` (ascending, distinct) as an ``(len(ids), dim)`` float16 array: from
        memory or the mapped rows, the others from the store file with one ``pread`` per run
        of consecutive ids."""
        held = self.held  # once: a release between two reads must not change what is read
        if held is None:
            return self._read(ids)
        split = int(np.searchsorted(ids, len(held.rows)))
        kept: np.ndarray = held.rows[ids[:split]]
        if split == len(ids):
            return kept
        return np.concatenate([kept, self._read(ids[split:])]) if split else self._read(ids)

    def _read(self, ids: np.ndarray) -> np.ndarray:
        assert self.file is not None
        data = pread_rows(self._fd, self._start, 2 * self.dim, ids)
        return np.frombuffer(data, np.float16).reshape(len(ids), self.dim)

    def search(self, q: np.ndarray, k: int, extra: int, nprobe: int) -> tuple[Any, Any]:
        """The top ``k`` of a shortlist of ``k + extra`` codes, re-ranked exactly: by FAISS's
        ``IndexRefine`` when every row is in memory or mapped, else over the gathered rows
        with the same kernel (the same floats)."""
        import faiss

        fetch = min(k, self.n)
        params: Any = faiss.SearchParametersIVF()
        params.nprobe = min(nprobe, self.ivf.nlist)
        held = self.held  # kept to the end: it owns the rows the refine reads
        if held is not None and held.refine is not None:
            refine_params: Any = faiss.IndexRefineSearchParameters()
            refine_params.k_factor = min(self.n, fetch + extra) / fetch
            refine_params.base_index_params = params
            found_scores, found = held.refine.search(q, fetch, params=refine_params)
            return found_scores, np.where(found >= 0, found + self.offset, -1)
        _, shortlist = self.codes.search(q, min(self.n, fetch + extra), params=params)
        scores = np.full((len(q), fetch), -np.inf, np.float32)
        ids = np.full((len(q), fetch), -1, np.int64)
        for i, found in enumerate(shortlist):
            rows = np.sort(found[found >= 0])
            if len(rows):
                best, positions = _inner_products(q[i], self.gather(rows))
                scores[i, : len(best[:fetch])] = best[:fetch]
                ids[i, : len(best[:fetch])] = rows[positions[:fetch]] + self.offset
        return scores, ids


class PQIndex(_Tombstones):
    """IVF-PQ (fast-scan, optional OPQ) shortlist + exact re-ranking from float16 rows on disk.

    Row ids are positions in the part. The float16 rows are a FAISS fp16 scalar-quantizer file
    (``<name>-vectors.faiss``), left on disk on load (its first ``mapped_rows_mb`` memory-mapped):
    re-ranking ``k + rerank_extra`` candidates reads only their rows, with FAISS's SIMD float16
    inner products. Rows added by
    :meth:`with_added` live in a second, in-memory segment until the next save.
    """

    kind = PQ_KIND

    def __init__(
        self, segments: list[_Segment], trained: bytes | None, params: dict[str, Any]
    ) -> None:
        if not segments:
            raise ArtifactError("an IVF-PQ index needs at least one segment")
        self.segments, self._trained = segments, trained
        self.dim = int(segments[0].codes.d)
        self._params = dict(params)
        self.nprobe = int(self._params.get("nprobe", DEFAULT_NPROBE))
        self.rerank_extra = int(self._params.get("rerank_extra", DEFAULT_RERANK_EXTRA))
        if self.nprobe < 1 or self.rerank_extra < 0:
            raise InvalidOptionsError("IVF-PQ needs nprobe >= 1 and rerank_extra >= 0")

    @classmethod
    def build(cls, vectors: np.ndarray, **params: Any) -> PQIndex:
        """Train on a sample of ``vectors`` and add them all, :data:`ADD_CHUNK_ROWS` at a time
        (``vectors`` may be a memory-mapped array: it is read chunk by chunk)."""
        n, dim = vectors.shape
        if n < PQ_MIN_ROWS:
            raise InvalidOptionsError(
                f"an IVF-PQ index needs at least {PQ_MIN_ROWS} vectors to train its codebooks, "
                f"not {n}: use --index flat (or auto) for so few items"
            )
        full = {**default_pq_params(n, dim), **params}
        full["nlist"] = min(int(full["nlist"]), n)
        sample = training_sample(vectors, int(full["nlist"]), seed=int(full.get("seed", 0)))
        trained = train_pq(sample, **full)
        codes = _deserialize(trained)
        for start in range(0, n, ADD_CHUNK_ROWS):
            chunk = np.asarray(vectors[start : start + ADD_CHUNK_ROWS], dtype=np.float32)
            codes.add_with_ids(chunk, np.arange(start, start + len(chunk), dtype=np.int64))
        return cls([_Segment(codes, _memory_store(vectors), 0)], trained, full)

    @classmethod
    def from_parts(
        cls, trained: bytes, codes: Any, store_file: Path, params: dict[str, Any]
    ) -> PQIndex:
        """An index from ``merge_chunks``'s codes and a store file (:func:`write_store` or
        :func:`store_rows`), read as a loaded index reads it -- how a distributed build
        assembles one."""
        return cls([_load_segment(codes, store_file, params)], trained, params)

    @property
    def ntotal(self) -> int:
        return sum(s.n for s in self.segments)

    @property
    def trained(self) -> bytes:
        """The trained, empty index (coarse centroids and codebooks) as bytes."""
        if self._trained is None:
            import faiss

            empty = faiss.clone_index(self.segments[0].codes)
            empty.reset()
            self._trained = _serialize(empty)
        return self._trained

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = _check_queries(queries, self.dim, k)
        fetch = min(self.ntotal, k + self.n_removed)
        extra = max(0, min(k, RERANK_DEPTH) + self.rerank_extra - k)  # removed rows aside
        found = [s.search(q, fetch, extra, self.nprobe) for s in self.segments]
        scores = np.concatenate([f[0] for f in found], axis=1).astype(np.float32)
        ids = np.concatenate([f[1] for f in found], axis=1).astype(np.int64)
        scores = np.where(ids >= 0, scores, -np.inf).astype(np.float32)
        order = np.lexsort((ids, -scores), axis=1)
        scores, ids = np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)
        removed = self.removed if self.n_removed else None
        return _pad(*_apply_tombstones(scores, ids, removed, k), k)

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Rows ``ids`` (ascending, distinct) of the float16 store as float16 ``(len(ids),
        dim)``, read as re-ranking reads them (memory, the mapped rows, else ``pread``)."""
        cuts = np.searchsorted(ids, [s.offset for s in self.segments[1:]])
        blocks = [
            seg.gather(part - seg.offset)
            for seg, part in zip(self.segments, np.split(ids, cuts), strict=True)
            if len(part)
        ]
        if len(blocks) == 1:
            return blocks[0]
        return np.concatenate(blocks) if blocks else np.zeros((0, self.dim), np.float16)

    def with_added(self, vectors: np.ndarray) -> PQIndex:
        """A copy with ``vectors`` encoded after these rows (the trained centroids and codebooks,
        no retraining), in an in-memory segment until the next save; this index is never
        written, so searches running on it are safe."""
        import faiss

        x = np.ascontiguousarray(vectors, dtype=np.float32)
        if not len(x):
            return copy.copy(self)
        segments = list(self.segments)
        if len(segments) > 1:  # grow the (small) added segment
            last = segments.pop()
            assert last.held is not None  # an added segment holds its rows in memory
            codes, store = faiss.clone_index(last.codes), faiss.clone_index(last.held.owner)
            start = last.n
        else:
            codes, store, start = _deserialize(self.trained), _memory_store(x[:0]), 0
        codes.add_with_ids(x, np.arange(start, start + len(x), dtype=np.int64))
        store.add(x)
        segments.append(_Segment(codes, store, segments[-1].offset + segments[-1].n))
        grown = PQIndex(segments, self.trained, dict(self._params))
        if self.removed is not None and self.n_removed:  # the new rows are live
            grown.removed = np.zeros(grown.ntotal, bool)
            grown.removed[: len(self.removed)] = self.removed
            grown.n_removed = self.n_removed
        return grown

    def save(self, path: Path, name: str = "index.faiss") -> list[str]:
        """Write the codes (``name``) and the float16 rows (``<name>-vectors.faiss``)."""
        import faiss

        codes = self.segments[0].codes
        if len(self.segments) > 1:
            codes = faiss.clone_index(codes)
            ivf = faiss.extract_index_ivf(codes)
            for seg in self.segments[1:]:
                ivf.merge_from(faiss.clone_index(faiss.extract_index_ivf(seg.codes)), seg.offset)
            codes.ntotal = ivf.ntotal
        faiss.write_index(codes, str(path / name))
        vec_name = vectors_file(name)
        target = path / vec_name
        main = self.segments[0].file
        if not (len(self.segments) == 1 and main is not None and target.exists()
                and main.resolve() == target.resolve()):  # fmt: skip
            # never rewrite the file this index is reading from
            write_store(target, self._row_blocks(), self.ntotal, self.dim)
        return [name, vec_name]

    def _row_blocks(self) -> Iterable[np.ndarray]:
        for seg in self.segments:
            for start in range(0, seg.n, ADD_CHUNK_ROWS):
                yield seg.gather(np.arange(start, min(start + ADD_CHUNK_ROWS, seg.n)))

    @classmethod
    def load(cls, path: Path, name: str, n: int, params: dict[str, Any] | None) -> PQIndex:
        """Load what :meth:`save` wrote: codes read, float16 rows left on disk."""
        file = path / name
        codes = read_faiss(file, "IVF-PQ index")
        if codes.ntotal != n:
            raise ArtifactError(f"IVF-PQ index {name} holds {codes.ntotal} rows, not {n}")
        check_row_ids(codes, name)
        params = dict(params or {})
        return cls([_load_segment(codes, path / vectors_file(name), params)], None, params)

    def warm(self, block: int = 1 << 20, *, map_rows: bool = True) -> int:
        """Read the float16 rows file once, in order, into one reused buffer, so re-ranking
        finds its rows in the kernel's page cache instead of reading each from disk, then
        (``map_rows``) touch each page of the mapped rows (at most ``mapped_rows_mb`` per part)
        so they are mapped now rather than by the first requests' page faults. Rows read with
        ``pread`` are never mapped. A server does this before it reports ready
        (:func:`stygig.index.warm_index`). Returns the bytes read."""
        total = 0
        buffer = memoryview(bytearray(block))
        for seg in self.segments:
            if seg.file is None:
                continue
            total += seg.read_file(buffer)
            held = seg.held
            if map_rows and held is not None and held.rows.size:
                int(held.rows.reshape(-1).view(np.uint8)[:: mmap.PAGESIZE].max())
        return total

    def release_mapped_rows(self) -> bool:
        """Read every row with ``pread`` from now on, so the mapped rows leave this process's
        memory (they stay in the page cache). A server does this to the version it serves
        before it loads the next one, which then never shares the process with the old
        version's mapped rows (``stygig.serving.app``: up to ``mapped_rows_mb`` per part,
        4.4 GB at 10M items). The segments change, and every index sharing them follows (the
        copies a living catalogue's changes make); a search in flight keeps the map it took
        until it ends. :meth:`restore_mapped_rows` undoes it. Returns whether anything was
        mapped."""
        return any([seg.release() for seg in self.segments])

    def restore_mapped_rows(self) -> None:
        """Map the rows again as loading did, through the files these segments opened (requests
        fault the pages in), after :meth:`release_mapped_rows`: a refused reload keeps serving
        this version."""
        for seg in self.segments:
            if seg.file is not None and seg.held is None:
                seg.hold(_mapped_bytes(self._params))

    def params(self) -> dict[str, Any]:
        return {k: v for k, v in self._params.items() if k not in ("seed", "threads")}

    def memory_bytes(self) -> int:
        """Bytes kept in memory: codes, ids and coarse centroids (float16 rows are on disk,
        except in-memory segments; mapped rows, at most ``mapped_rows_mb`` of the file, are not
        counted: they are resident only once read)."""
        total = 0
        for seg in self.segments:
            total += seg.n * (int(seg.ivf.code_size) + 8) + int(seg.ivf.nlist) * self.dim * 4
            if seg.file is None:
                total += seg.n * self.dim * 2
        return total


def _mapped_bytes(params: dict[str, Any]) -> int:
    """The ``mapped_rows_mb`` of ``params`` in bytes (default :data:`DEFAULT_MAPPED_ROWS_MB`)."""
    mapped_mb = float(params.get("mapped_rows_mb", DEFAULT_MAPPED_ROWS_MB))
    if not mapped_mb >= 0:
        raise InvalidOptionsError(f"mapped_rows_mb must be 0 or more, not {mapped_mb}")
    return int(mapped_mb * 2**20)


def _load_segment(codes: Any, store_file: Path, params: dict[str, Any]) -> _Segment:
    """A segment on ``store_file``, checked by FAISS's reader: mapped whole (FAISS's map) when
    its rows fit in ``mapped_rows_mb``, else its first ``mapped_rows_mb`` of rows mapped and
    the others read with ``pread``."""
    return _Segment(codes, None, 0, store_file, _mapped_bytes(params))


def training_sample(vectors: np.ndarray, nlist: int, seed: int = 0) -> np.ndarray:
    """A float32 training sample of ``vectors`` (sorted rows, so a memory-mapped file is read
    in order): :data:`TRAIN_PER_LIST` per coarse list within the bounds."""
    n = len(vectors)
    size = min(n, max(TRAIN_MIN, min(TRAIN_MAX, TRAIN_PER_LIST * nlist)))
    rows = np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))
    return np.asarray(vectors[rows], dtype=np.float32)

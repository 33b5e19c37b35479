"""How an exact catalogue's rows are scored against a query: every row at once from an int8
copy, then the rows whose exact score could change the answer scored again in float32.

An exact (flat) catalogue answers each request by one inner product per row: at 10k x 1280
float32 rows that scan reads 51 MB, more than this machine's 32 MB L3 cache, and took 1.5 ms
of a request's 3 ms outside the encoder. :class:`Int8Scan` holds the rows as int8 codes with
one scale per row (a quarter of the bytes) and runs ONNX Runtime's ``DynamicQuantizeMatMul``
(the query quantised to uint8, the product in int32 with VNNI): 0.4-0.5 ms for the same scan.

Each approximate product comes with a bound on its error. The query's and the row's rounding
errors, each within half a quantisation step, sum over the dimensions; modelled as independent
and uniform, to an error with standard deviation ``sqrt((s_q |r|)^2 + (s_r |q|)^2 / 12)``
(``s_q``, ``s_r`` the two steps). The bound is :data:`SIGMAS` of those: a statistical bound,
not a proof (a Gaussian exceeds 8 of them once in 10^15; on real and synthetic catalogues the
largest error over 3 million products was 4.7). Rows whose rounding errors line up (e.g. a
long flat tail just under half a step) can break the model, so the scan checks itself when it
is made: :data:`CHECK_QUERIES` of the catalogue's own rows as queries against every row, and a
catalogue whose largest error passes :data:`CHECK_SIGMAS` is scanned in float32 instead
(:func:`choose_scan`). :class:`Scores` then recomputes in float32, with the float32 scan's own
kernel (the same sums), every row the bound lets near the nearest neighbours or a category's
ranking, so answers equal the float32 scan's, and every score an answer shows is a float32 one.

Codes use the full int8 range only where ONNX Runtime's kernel adds the products in 32 bits
(x86 VNNI). Without VNNI its AVX2 kernel (``vpmaddubsw``) adds pairs of products into 16 bits
with saturation: codes are then kept within +-63, so a pair (2 x 255 x 63) never saturates, at
twice the rows' rounding error.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from stygig.index import similarities, top_k

__all__ = [
    "CHECK_QUERIES",
    "CHECK_SIGMAS",
    "SCAN_MIN_BYTES",
    "SCAN_THREADS",
    "SIGMAS",
    "Int8Scan",
    "Scan",
    "ScanChoice",
    "Scores",
    "choose_scan",
    "make_scan",
]

log = logging.getLogger(__name__)

Scan = Literal["auto", "int8", "float32"]
#: ``auto`` scans in int8 from this many bytes of float32 rows (16 MiB: 3,277 rows of 1280-d,
#: 8,192 of 512-d). Below, the float32 rows stay in cache and the int8 scan's re-scoring costs
#: what it saves (10k x 512, 20 MB: 2.15 -> 1.95 ms; 5k x 64: 1.9 -> 2.1 ms).
SCAN_MIN_BYTES = 16 << 20
#: The bound on an approximate product, in standard deviations of its rounding error.
SIGMAS = 8.0
#: The check a new scan passes: its largest error with this many of the catalogue's own rows as
#: queries stays within this many standard deviations (a Gaussian: once in 10^10 products).
CHECK_QUERIES = 32
CHECK_SIGMAS = 6.5
#: The int8 scan's threads: the rows split between two cores. A request's scan runs after its
#: encoder, when the second core is free (a lone request's colour is done by then): at 10k x
#: 1280 the scan alone 0.27 -> 0.17 ms warm, and 0.3 ms less outside the encoder over HTTP
#: (``benchmarks/bench_budget.py``, 2026-12-03). More threads split 10k rows too thin.
SCAN_THREADS = 2
#: Below this width FAISS's float32 kernels sum a row differently by its place in the batch
#: (2, 4, 8), so a re-scored row would not be the float32 scan's sum; the scan never pays there.
MIN_DIM = 16


def full_range_codes(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether ONNX Runtime's int8 kernel on this CPU sums in 32 bits (x86 VNNI); unknown: no."""
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    return "avx512_vnni" in flags or "avx_vnni" in flags
    except OSError:
        pass
    return False


class Int8Scan:
    """The rows ``(n, d)`` as int8 codes with a scale per row, and an ONNX Runtime session that
    takes every row's approximate inner product with a batch of queries."""

    def __init__(
        self, rows: np.ndarray, *, levels: int | None = None, threads: int | None = None
    ) -> None:
        """``levels``: the largest code (127, or 63 where the kernel would saturate; default:
        by :func:`full_range_codes`). ``threads``: ONNX Runtime's intra-op threads for the scan
        (default :data:`SCAN_THREADS`, at most the cores); the products are the same sums
        whatever the count (int32, exact)."""
        import onnxruntime as ort

        if levels is None:
            levels = 127 if full_range_codes() else 63
        self.levels = levels
        self.rows, self.dim = rows.shape
        # Block by block: no float copy of the whole matrix, even for a moment.
        codes_t = np.empty((self.dim, self.rows), np.int8)  # the layout the graph takes
        scale = np.empty(self.rows, np.float32)
        norm = np.empty(self.rows, np.float32)
        for lo in range(0, self.rows, 1024):
            x = np.asarray(rows[lo : lo + 1024], np.float32)
            peak = np.abs(x).max(axis=1)
            step = np.where(peak > 0, peak / levels, 1.0).astype(np.float32)
            codes = np.rint(x / step[:, None]).astype(np.int8)
            codes_t[:, lo : lo + len(x)] = codes.T
            scale[lo : lo + len(x)] = step
            norm[lo : lo + len(x)] = np.linalg.norm(codes * step[:, None], axis=1)
        self._row_scale = float(scale.max()) if self.rows else 0.0  # a row's largest step
        self._row_norm = float(norm.max()) if self.rows else 0.0  # decoded rows' largest norm
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or min(SCAN_THREADS, os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        # Idle scan threads sleep: they would busy-wait beside the encoder's between requests.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        # ONNX Runtime packs the codes once for its int8 kernel and drops its unpacked copy.
        self._session = ort.InferenceSession(
            _model(codes_t, scale), options, ["CPUExecutionProvider"]
        )

    def products(self, queries: np.ndarray) -> tuple[np.ndarray, float]:
        """``(rows, m)`` approximate inner products with ``queries`` ``(m, d)``, and the bound
        on each one's error (:data:`SIGMAS` standard deviations)."""
        q = np.ascontiguousarray(queries, np.float32)
        sigma, rounding = self._error_model(q)
        return self._approximate(q), SIGMAS * sigma + rounding

    def _approximate(self, q: np.ndarray) -> np.ndarray:
        (out,) = self._session.run(None, {"q": q})
        return np.asarray(out).T

    def _error_model(self, q: np.ndarray) -> tuple[float, float]:
        """The standard deviation of a product's quantisation error for the query batch ``q``,
        and a bound on the float32 rounding of the sums themselves (both scans)."""
        # ONNX Runtime quantises the whole query batch with one uint8 step over [min, max] (0
        # included): half of that step is each query component's rounding error.
        step = (max(float(q.max()), 0.0) - min(float(q.min()), 0.0)) / 255.0
        q_norm = float(np.linalg.norm(q, axis=1).max())
        sigma = math.hypot(step * self._row_norm, self._row_scale * q_norm) / math.sqrt(12.0)
        return sigma, 1e-6 * max(q_norm, 1.0)

    def check(self, rows: np.ndarray) -> float:
        """The largest error, in standard deviations of the error model, of every row's product
        with probe queries: :data:`CHECK_QUERIES` of ``rows`` (spread evenly, as photos of
        the catalogue's kind look), and the directions a shared rounding bias of the rows
        would line up with: the rows' mean and a random all-positive vector (not the uniform
        one: its equal components would round alike, an error of the probe's own), each with
        its opposite."""
        picks = np.linspace(0, self.rows - 1, min(CHECK_QUERIES, self.rows)).astype(np.int64)
        like_rows = np.asarray(rows[picks], np.float32)
        mean = like_rows.astype(np.float64).mean(axis=0)
        positive = np.abs(np.random.default_rng(0).normal(size=self.dim))
        probes = [v / max(float(np.linalg.norm(v)), 1e-12) for v in (mean, positive)]
        directions = np.array(probes + [-p for p in probes], np.float32)
        worst = 0.0
        for one in (like_rows, directions):  # quantised as batches of their own kind
            approx, (sigma, _) = self._approximate(one), self._error_model(one)
            for lo in range(0, self.rows, 8192):
                exact = np.asarray(rows[lo : lo + 8192], np.float32) @ one.T
                err = float(np.abs(approx[lo : lo + 8192] - exact).max())
                worst = max(worst, err / sigma if sigma > 0 else (0.0 if err == 0 else math.inf))
        return worst


@dataclass(frozen=True)
class ScanChoice:
    """How an exact catalogue's rows are scanned: ``scan`` (``None``: in float32, for
    ``reason``) and the int8 scan's self-check when it ran (:meth:`Int8Scan.check`)."""

    scan: Int8Scan | None
    reason: str = ""
    check: float | None = None


def choose_scan(rows: Any, mode: Scan, *, levels: int | None = None) -> ScanChoice:
    """The int8 scan of an exact catalogue's ``rows`` (``auto``: from :data:`SCAN_MIN_BYTES`),
    or the float32 scan and why: asked for, too few bytes or dimensions, rows not in memory,
    or rows the scan's error model does not fit."""
    if mode == "float32":
        return ScanChoice(None, "scoring.yaml asks exact_scan: float32")
    if not isinstance(rows, np.ndarray) or isinstance(rows, np.memmap) or rows.ndim != 2:
        return ScanChoice(None, "the rows are not in memory (mapped from disk)")
    n, dim = rows.shape
    if mode == "auto" and rows.size * 4 < SCAN_MIN_BYTES:
        return ScanChoice(
            None,
            f"{n:,} items of {dim} dimensions: float32 rows under {SCAN_MIN_BYTES >> 20} MiB "
            "stay in cache",
        )
    if n == 0 or dim < MIN_DIM:
        return ScanChoice(None, f"{n:,} items of {dim} dimensions: below {MIN_DIM} dimensions")
    scan = Int8Scan(rows, levels=levels)
    worst = scan.check(rows)
    if worst > CHECK_SIGMAS:
        reason = (
            f"their int8 rounding errors line up (an error of {worst:.1f} standard deviations "
            f"in the scan's check, more than {CHECK_SIGMAS})"
        )
        return ScanChoice(None, reason, worst)
    return ScanChoice(scan, "", worst)


def make_scan(rows: Any, mode: Scan, *, levels: int | None = None) -> Int8Scan | None:
    """:func:`choose_scan`'s scan; a catalogue whose rows failed the check is logged."""
    choice = choose_scan(rows, mode, levels=levels)
    if choice.scan is None and choice.check is not None:
        log.warning("the catalogue's rows are scanned in float32: %s", choice.reason)
    return choice.scan


class Scores:
    """Every row's inner product with the query vectors ``(rows, m)`` for one request: float32
    where :meth:`exact` has made them so, else within ``slack`` of it.

    Rows past the int8 scan's (items added while serving) are always scanned in float32.
    """

    def __init__(self, rows: Any, queries: np.ndarray, scan: Int8Scan | None) -> None:
        self._rows, self._queries = rows, queries
        if scan is None:
            self.values, self.slack, self._exact = _each_query(rows, queries), 0.0, None
            return
        approx, self.slack = scan.products(queries)
        done = np.zeros(len(rows), bool)
        if len(rows) > scan.rows:  # appended rows: few, exact
            added = _each_query(rows[scan.rows :], queries)
            approx = np.concatenate([approx, added])
            done[scan.rows :] = True
        self.values, self._exact = approx, done

    @property
    def approximate(self) -> bool:
        return self._exact is not None

    def exact(self, ids: np.ndarray) -> np.ndarray:
        """Make rows ``ids`` float32-exact (the same kernel, so the same sums, as a float32
        scan); returns ``values[ids]``."""
        ids = np.asarray(ids, np.int64)
        if self._exact is not None and len(ids):
            todo = ids[~self._exact[ids]]  # a row asked twice is written twice, alike
            if len(todo):
                self.values[todo] = _rows_products(self._rows, todo, self._queries)
                self._exact[todo] = True
        out: np.ndarray = self.values[ids]
        return out

    def nearest(self, k: int, removed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """:func:`stygig.index.top_k` of the exact products, ``(m, k)`` scores and ids."""
        if self._exact is None:
            return top_k(self.values.T, k, removed)
        n, m = self.values.shape
        scores = np.full((m, k), -np.inf, np.float32)
        ids = np.full((m, k), -1, np.int64)
        for r in range(m):
            approx = self.values[:, r]
            if removed is not None:
                approx = np.where(removed, -np.inf, approx)
            kth = -np.inf if k >= n else float(np.partition(approx, n - k)[n - k])
            # Every row whose exact product can reach the k-th: within twice the bound of the
            # approximate k-th (it is at most the bound above the exact k-th).
            near = np.flatnonzero(approx >= kth - 2.0 * self.slack)
            if removed is not None:  # fewer live rows than k: the threshold let all through
                near = near[~removed[near]]
            exact = self.exact(near)[:, r]
            # top_k's order on a few dozen rows in one sort: best first, ties to the lower id;
            # nothing that is not a number (a NaN query) is a result
            best = np.lexsort((near, -exact))[:k]
            best = best[np.isfinite(exact[best])]
            scores[r, : len(best)], ids[r, : len(best)] = exact[best], near[best]
        return scores, ids


def _rows_products(rows: Any, ids: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """``(len(ids), m)`` float32 products of rows ``ids`` with each query, the same sums as
    :func:`_each_query` over all rows: read in place by FAISS's by-index kernel (no gathered
    copy: 200 rows of 10k x 1280 from a cold cache, 0.13 -> 0.08 ms)."""
    if not (isinstance(rows, np.ndarray) and rows.dtype == np.float32 and rows.flags.c_contiguous):
        return _each_query(rows[ids], queries)
    import faiss

    q = np.ascontiguousarray(queries, np.float32)
    picks = np.ascontiguousarray(np.broadcast_to(ids.astype(np.int64), (len(q), len(ids))))
    out = np.empty((len(q), len(ids)), np.float32)
    faiss.fvec_inner_products_by_idx(  # type: ignore[attr-defined]
        faiss.swig_ptr(out),
        faiss.swig_ptr(q),
        faiss.swig_ptr(rows),
        faiss.swig_ptr(picks),
        rows.shape[1],
        len(q),
        len(ids),
    )
    return out.T


def _each_query(rows: Any, queries: np.ndarray) -> np.ndarray:
    """``(len(rows), m)`` float32 products, one query at a time through one kernel, so a row's
    product with a query is the same sum whichever rows and other queries are scanned with it
    (a matrix product of several queries would sum in another order)."""
    if len(queries) == 1:
        return similarities(rows, queries)
    return np.concatenate([similarities(rows, q[None, :]) for q in queries], axis=1)


# -- the ONNX graph, written without the onnx package (not a serving dependency) --------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key_len(field: int, n_bytes: int) -> bytes:
    """A length-delimited field's key and length, its ``n_bytes`` to follow."""
    return _varint(field << 3 | 2) + _varint(n_bytes)


def _len(field: int, payload: bytes) -> bytes:
    return _key_len(field, len(payload)) + payload


def _int(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value)


def _tensor_head(name: str, shape: Sequence[int], elem_type: int, n_bytes: int) -> bytes:
    """A tensor's fields up to its raw data, whose ``n_bytes`` follow."""
    dims = b"".join(_int(1, d) for d in shape)
    return dims + _int(2, elem_type) + _len(8, name.encode()) + _key_len(9, n_bytes)


def _tensor(name: str, array: np.ndarray, elem_type: int) -> bytes:
    data = array.tobytes()
    return _tensor_head(name, array.shape, elem_type, len(data)) + data


def _value_info(name: str, elem_type: int, dims: Sequence[int | str]) -> bytes:
    shape = b"".join(
        _len(1, _int(1, d) if isinstance(d, int) else _len(2, d.encode())) for d in dims
    )
    tensor_type = _int(1, elem_type) + _len(2, shape)
    return _len(1, name.encode()) + _len(2, _len(1, tensor_type))


_FLOAT, _INT8 = 1, 3


def _model(codes_t: np.ndarray, scale: np.ndarray) -> bytes:
    """A one-node ONNX model ``y = DynamicQuantizeMatMul(q, codes_t, scale)``: ``q`` ``(m, d)``
    float32, ``codes_t`` ``(d, n)`` int8 (constant, so packed once), ``y`` ``(m, n)``.

    The codes are the model's last bytes, copied once into it: every length before them is
    worked out from their size (no nested copies of a matrix that may be 64 MB)."""
    d, n = codes_t.shape
    node = (
        b"".join(_len(1, s.encode()) for s in ("q", "W", "scale"))
        + _len(2, b"y")
        + _len(3, b"scan")
        + _len(4, b"DynamicQuantizeMatMul")
        + _len(7, b"com.microsoft")
    )
    graph_head = (
        _len(1, node)
        + _len(2, b"stygig-int8-scan")
        + _len(5, _tensor("scale", scale, _FLOAT))
        + _len(11, _value_info("q", _FLOAT, ["m", d]))
        + _len(12, _value_info("y", _FLOAT, ["m", n]))
    )
    raw = np.ascontiguousarray(codes_t).data.cast("B")
    w_head = _tensor_head("W", codes_t.shape, _INT8, len(raw))
    w_field = _key_len(5, len(w_head) + len(raw)) + w_head
    graph_len = len(graph_head) + len(w_field) + len(raw)
    opsets = _len(8, _len(1, b"") + _int(2, 13)) + _len(8, _len(1, b"com.microsoft") + _int(2, 1))
    head = _int(1, 8) + opsets + _key_len(7, graph_len) + graph_head + w_field
    return b"".join((head, raw))

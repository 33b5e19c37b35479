"""Rows of a large matrix on disk, read without making the file resident.

A catalogue of millions of items keeps its embeddings (``embeddings.npy``, 20 GB at 10M 512-d
float32 rows) and its index's float16 rows on disk. Reading a few hundred random rows per request
through a memory map is fast, but every page it touches stays mapped -- and counted in the
process's resident memory -- for the rest of its life, and the kernel maps whole folios of the
page cache on each fault (up to hundreds of kilobytes around one 2 KB row): measured on a
300k-item artifact, one answer left 134 MB of ``embeddings.npy`` resident, 2,000 answers all of
it. So at scale rows are read with ``pread`` instead: the file stays in the kernel's page cache
(shared, reclaimable), and this process holds only the rows it asked for.

:func:`pread_rows` is the read (one call per run of consecutive rows); :class:`FileRows` reads a
``.npy`` matrix like an array (``len``, ``shape``, a row, a slice, row numbers of any shape, a
row mask).
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from stygig.errors import ArtifactError

__all__ = ["FileRows", "gather", "pread_rows", "row_numbers"]


#: When no run of consecutive rows is longer than this, each is read with one ``pread`` and
#: the reads are joined (the fastest for scattered rows: 1.9 us a row against 2.2 us for reads
#: into one buffer); otherwise every run is read straight into the result, at most
#: :data:`_MAX_READ` per call (Linux returns at most ~2 GiB per read, and may return less).
_SMALL_RUN = 1 << 16
_MAX_READ = 1 << 30


def pread_rows(fd: int, start: int, row_bytes: int, rows: np.ndarray) -> bytes | bytearray:
    """The bytes of ``rows`` (ascending, distinct row numbers) of a file whose row 0 begins at
    byte ``start``: one read per run of consecutive rows (long runs in several, straight into
    a writable buffer; when every run is short, the joined reads, as ``bytes``). Raises
    :class:`~stygig.errors.ArtifactError` when the file is shorter than the rows asked."""
    if not len(rows):
        return b""
    runs = np.flatnonzero(np.diff(rows, prepend=-2) != 1)
    sizes = (np.diff(runs, append=len(rows)) * row_bytes).tolist()
    offsets = (start + rows[runs] * row_bytes).tolist()
    if max(sizes) <= _SMALL_RUN:  # the request path: a few hundred scattered rows
        data = b"".join([os.pread(fd, s, o) for s, o in zip(sizes, offsets, strict=True)])
        if len(data) != len(rows) * row_bytes:
            raise ArtifactError("a rows file is shorter than its header says")
        return data
    out = bytearray(len(rows) * row_bytes)
    view, pos = memoryview(out), 0
    for size, offset in zip(sizes, offsets, strict=True):
        done = 0
        while done < size:
            step = min(size - done, _MAX_READ)
            n = os.preadv(fd, [view[pos + done : pos + done + step]], offset + done)
            if n <= 0:
                raise ArtifactError("a rows file is shorter than its header says")
            done += n
        pos += size
    return out


def gather(rows: np.ndarray, read: Callable[[np.ndarray], np.ndarray], width: int) -> np.ndarray:
    """Row numbers ``rows`` (in range, any shape) as ``rows.shape + (width,)``, where ``read``
    gives the rows of ascending, distinct row numbers: ascending ones are read as asked, others
    once each (a repeated or unsorted request, like MMR's ``(groups, depth)`` table)."""
    flat = rows.ravel()
    if len(flat) < 2 or bool((flat[1:] > flat[:-1]).all()):
        return read(flat).reshape(*rows.shape, width)
    wanted, inverse = np.unique(flat, return_inverse=True)
    return read(wanted)[inverse].reshape(*rows.shape, width)


def row_numbers(key: Any, n: int) -> int | np.ndarray:
    """``key`` as row numbers of an ``n``-row matrix, refused as numpy would refuse it: an int
    for one row, else an int64 array of any shape from a slice, an array of row numbers
    (negatives count from the end) or a row mask. Raises ``TypeError`` for another kind of key
    and ``IndexError`` for a row out of range or a mask of another length."""
    if isinstance(key, tuple | bool | np.bool_):
        raise TypeError("rows are taken by a row, a slice, row numbers or a row mask")
    if isinstance(key, int | np.integer):
        k = int(key) + (n if key < 0 else 0)
        if not 0 <= k < n:
            raise IndexError("row out of range")
        return k
    if isinstance(key, slice):
        return np.arange(*key.indices(n), dtype=np.int64)
    rows = np.asarray(key)
    if rows.dtype == bool:
        if rows.shape != (n,):
            raise IndexError("a row mask must have one entry per row")
        return np.flatnonzero(rows)
    if rows.dtype.kind not in "iu" and rows.size:
        raise TypeError("row numbers must be integers")
    rows = np.where(rows < 0, rows + n, rows).astype(np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= n):
        raise IndexError("row out of range")
    return rows


class FileRows:
    """A 2-d ``.npy`` file's rows, each read from disk when asked (see the module's docstring).

    Reads like the array :func:`numpy.load` would return, for what the catalogue's readers
    use: ``len``, ``shape``, ``dtype``, ``ndim``, an int, a slice, an array of row numbers of
    any shape (a ``(g, k)`` array gives ``(g, k, dim)``), a row mask. ``np.asarray`` reads the
    whole matrix into memory (nothing on a request path does). Safe to share between threads:
    reads are positional, nothing is cached.
    """

    __slots__ = ("__weakref__", "_fd", "_row_bytes", "_start", "dtype", "file", "ndim", "shape")

    def __init__(self, file: str | Path) -> None:
        self.file = Path(file)
        with open(self.file, "rb") as f:
            try:
                fmt = np.lib.format
                major, _ = fmt.read_magic(f)
                read_header = fmt.read_array_header_1_0 if major == 1 else fmt.read_array_header_2_0
                shape, fortran, dtype = read_header(f)
            except ValueError as e:
                raise ArtifactError(f"{self.file.name} is not a .npy matrix: {e}") from e
            start = f.tell()
        if len(shape) != 2 or fortran or dtype.hasobject:
            raise ArtifactError(f"{self.file.name}: expected a C-ordered 2-d numeric array")
        self.shape: tuple[int, int] = (int(shape[0]), int(shape[1]))
        self.dtype = np.dtype(dtype)
        self.ndim = 2
        self._row_bytes = self.shape[1] * self.dtype.itemsize
        self._start = start
        size = os.stat(self.file).st_size
        if size < start + self.shape[0] * self._row_bytes:
            raise ArtifactError(f"{self.file.name} is shorter than its header says")
        self._fd = os.open(self.file, os.O_RDONLY)
        weakref.finalize(self, os.close, self._fd)

    def __len__(self) -> int:
        return self.shape[0]

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` (int64, in range, any shape) as ``rows.shape + (dim,)``."""
        out = gather(rows, self._read, self.shape[1])
        return out if out.flags.writeable else out.copy()  # the caller's own array

    def _read(self, rows: np.ndarray) -> np.ndarray:
        data = pread_rows(self._fd, self._start, self._row_bytes, rows)
        return np.frombuffer(data, self.dtype).reshape(len(rows), self.shape[1])

    def __getitem__(self, key: Any) -> Any:
        rows = row_numbers(key, self.shape[0])
        if isinstance(rows, int):
            return self.take(np.array([rows], np.int64))[0]
        return self.take(rows)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        if copy is False:
            raise ValueError("FileRows cannot be viewed without a copy")
        whole = self.take(np.arange(self.shape[0], dtype=np.int64))  # one buffer, same fd
        return whole if dtype is None else whole.astype(dtype, copy=False)

"""Copy-on-write containers for a catalogue that changes while it is read.

A living catalogue (:mod:`stygig.snapshot`) publishes a new snapshot per change while requests
still read the old one, so nothing a published snapshot holds may ever be written. Copying the
item list and the id -> row map on every change costs O(catalogue) per change (at 1M items,
~45 ms of CPU for one added item); these containers make a change cost what it changes:

* :class:`Rows` (the items, their colours): a list shared by every snapshot that only ever
  grows at its end (each snapshot sees its own prefix), plus a small overlay of rows replaced
  in place (a stock update);
* :class:`Overlay` (the id -> row map, changed items' thumbnails): a dict never written once
  shared, plus a small overlay of changed keys (and removals).

An overlay is copied per change, so it is folded into a fresh base once it holds about
``sqrt(n)`` entries: O(sqrt(n)) per change, amortised. Both read like the ``list`` / ``dict``
they replace (:class:`collections.abc.Sequence` / :class:`~collections.abc.Mapping`).
Thread safety: only one writer makes the next container (the change writer's lock); readers
never see a write (a base list is appended past every published prefix only by the container
holding its longest prefix; a base dict is never written).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Generic, TypeVar, overload

import numpy as np

from stygig.rowfile import row_numbers

__all__ = ["Overlay", "Rows", "SpareRows", "StackedRows"]

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")

_GONE: Any = object()  # an Overlay's removed key
_ABSENT: Any = object()  # not in an overlay


def _fold_at(n: int) -> int:
    """Overlay entries at which a container folds them into a fresh base."""
    return max(256, math.isqrt(max(n, 1)))


class _Tip:
    """How long the shared base list is, as its last extender left it."""

    __slots__ = ("n",)

    def __init__(self, n: int) -> None:
        self.n = n


class Rows(Sequence[T], Generic[T]):
    """An immutable sequence of rows that is cheap to change into the next one."""

    __slots__ = ("_base", "_n", "_over", "_tip")

    def __init__(self, rows: Iterable[T] = ()) -> None:
        self._base: list[T] = list(rows)
        self._n = len(self._base)
        self._over: dict[int, T] = {}
        self._tip = _Tip(self._n)

    @classmethod
    def _of(cls, base: list[T], n: int, over: dict[int, T], tip: _Tip) -> Rows[T]:
        out = cls.__new__(cls)
        out._base, out._n, out._over, out._tip = base, n, over, tip
        return out

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, i: int) -> T: ...

    @overload
    def __getitem__(self, i: slice) -> list[T]: ...

    def __getitem__(self, i: int | slice) -> T | list[T]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._n))]
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError("row out of range")
        if self._over:
            found = self._over.get(i, _ABSENT)
            if found is not _ABSENT:
                return found  # type: ignore[no-any-return]
        return self._base[i]

    def __iter__(self) -> Iterator[T]:
        rows = itertools.islice(self._base, self._n)
        if not self._over:
            return rows
        over = self._over
        return (over.get(i, row) for i, row in enumerate(rows))

    def __repr__(self) -> str:
        return f"Rows(n={self._n}, replaced={len(self._over)})"

    def changed(self, replaced: Mapping[int, T], appended: Sequence[T]) -> Rows[T]:
        """The rows with ``replaced`` (row -> new value, rows below ``len(self)``) and
        ``appended`` after them; this one is unchanged."""
        n = self._n
        base, tip = self._base, self._tip
        if appended:
            if tip.n != n:  # another container extended past this one's end: branch off
                base, tip = list(self), _Tip(n)
                over: dict[int, T] = {}
            else:
                over = self._over
            base.extend(appended)
            tip.n = n + len(appended)
        else:
            over = self._over
        if replaced:
            over = {**over, **replaced}
        if len(over) > _fold_at(n):
            rows = list(itertools.islice(base, n + len(appended)))
            for i, row in over.items():
                rows[i] = row
            return Rows(rows)
        return Rows._of(base, n + len(appended), over, tip)


class Overlay(Mapping[K, V], Generic[K, V]):
    """An immutable mapping that is cheap to change into the next one."""

    __slots__ = ("_base", "_len", "_over")

    def __init__(self, items: Mapping[K, V] | Iterable[tuple[K, V]] = ()) -> None:
        self._base: dict[K, V] = dict(items)
        self._over: dict[K, V] = {}
        self._len = len(self._base)

    def __getitem__(self, key: K) -> V:
        if self._over:
            found = self._over.get(key, _ABSENT)
            if found is _GONE:
                raise KeyError(key)
            if found is not _ABSENT:
                return found  # type: ignore[no-any-return]
        return self._base[key]

    def get(self, key: K, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        if self._over and key in self._over:
            return self._over[key] is not _GONE
        return key in self._base

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[K]:
        over = self._over
        if not over:
            yield from self._base
            return
        for key in self._base:
            if key not in over:
                yield key
        for key, value in over.items():
            if value is not _GONE:
                yield key

    def __repr__(self) -> str:
        return f"Overlay(n={self._len}, changed={len(self._over)})"

    def changed(self, updates: Mapping[K, V], removed: Iterable[K] = ()) -> Overlay[K, V]:
        """The mapping with ``updates`` set and ``removed`` keys taken out (a removed key
        must be present); this one is unchanged."""
        over = dict(self._over)
        base = self._base
        size = self._len

        def present(key: K) -> bool:
            found = over.get(key, _ABSENT)
            return key in base if found is _ABSENT else found is not _GONE

        for key in removed:
            if not present(key):
                raise KeyError(key)
            over[key] = _GONE
            size -= 1
        for key, value in updates.items():
            size += not present(key)
            over[key] = value
        out: Overlay[K, V] = Overlay.__new__(Overlay)
        out._len = size
        if len(over) > _fold_at(len(base)):
            folded = dict(base)
            for key, value in over.items():
                if value is _GONE:
                    folded.pop(key, None)
                else:
                    folded[key] = value
            out._base, out._over = folded, {}
        else:
            out._base, out._over = base, over
        return out


class SpareRows:
    """Rows with room after them (a catalogue column, the embeddings' added rows).

    Published arrays are prefixes of ``data`` (``data[:n]``); an append writes past ``used``,
    the end of the longest prefix handed out, so no published view ever sees a write, even
    when a change is made again from an older snapshot (it copies instead)."""

    def __init__(self, data: np.ndarray, used: int) -> None:
        self.data, self.used = data, used

    @classmethod
    def around(cls, column: np.ndarray, more: int) -> SpareRows:
        """A copy of ``column`` with room for ``more`` rows (double the size, once rows
        are being appended, so appends cost amortised O(1) each)."""
        n = len(column)
        capacity = max(2 * n, n + more + 1024) if more else n
        data = np.empty((capacity, *column.shape[1:]), dtype=column.dtype)
        data[:n] = column
        return cls(data, n)

    def extends(self, column: np.ndarray, more: int) -> bool:
        """Whether ``column`` is this buffer's longest prefix and ``more`` rows fit after it."""
        n = len(column)
        return column.base is self.data and self.used == n and len(self.data) >= n + more

    def append(self, n: int, tail: np.ndarray) -> np.ndarray:
        self.data[n : n + len(tail)] = tail
        self.used = n + len(tail)
        return self.data[: self.used]


class StackedRows:
    """A memory-mapped matrix with rows appended in memory after it, read like one array.

    A large artifact's embeddings are mapped from disk (:meth:`stygig.artifact.Artifact.load`),
    not held in memory. Adding items while serving must not undo that: copying the map into a
    bigger buffer at the first add would make every row resident (10M x 512 float32: 20 GB).
    So the map stays the ``base`` and added rows live in ``tail`` (a prefix of a spare-capacity
    buffer, as :func:`stygig.snapshot.apply_changes` grows it). Supports what the catalogue's
    readers use: ``len``, ``shape``, ``dtype``, an int, a slice, an array of row numbers (or a
    mask). ``np.asarray`` of it makes the whole matrix in memory: nothing on a request path
    does that; the learned compatibility scorer does, once per added batch (it projects every
    row), so a mapped artifact served with ``compat_mode`` learned is resident while it changes.
    """

    __slots__ = ("base", "dtype", "ndim", "shape", "tail")

    def __init__(self, base: Any, tail: Any) -> None:
        self.base, self.tail = base, tail
        self.shape = (len(base) + len(tail), *base.shape[1:])
        self.dtype = base.dtype
        self.ndim = base.ndim

    def __len__(self) -> int:
        return int(self.shape[0])

    def __getitem__(self, key: Any) -> Any:
        n, nb = self.shape[0], len(self.base)
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step == 1:
                if stop <= nb:
                    return self.base[start:stop]
                if start >= nb:
                    return self.tail[start - nb : stop - nb]
                return np.concatenate([self.base[start:nb], self.tail[: stop - nb]])
        rows = row_numbers(key, n)
        if isinstance(rows, int):
            return self.base[rows] if rows < nb else self.tail[rows - nb]
        out = np.empty((*rows.shape, *self.shape[1:]), dtype=self.dtype)
        low = rows < nb
        out[low] = self.base[rows[low]]
        out[~low] = self.tail[rows[~low] - nb]
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> Any:
        if copy is False:
            raise ValueError("StackedRows cannot be one array without a copy")
        whole = np.concatenate([np.asarray(self.base), self.tail])
        return whole if dtype is None else whole.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"StackedRows(mapped={len(self.base)}, appended={len(self.tail)})"

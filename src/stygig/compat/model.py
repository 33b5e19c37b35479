"""The learned compatibility model: pure NumPy inference, saved as ``compat.npz``.

An item's features (see :mod:`stygig.compat.features`) go through a two-layer MLP to a unit
vector ``g``; the compatibility of a query item ``q`` and a candidate ``c`` is

    ``s(q, c) = <g_q * mask[cat q, cat c], g_c> + bias[cat q, cat c]
               + cooc_weight * log1p(cooccurrences(q, c))
               + absent_weight * [q and c both in train outfits, never together]``

a type-aware projection: each category pair reads its own learned subspace of ``g``. The
co-occurrence term counts train outfits holding both items (zero for new items, so content
carries cold start); the absence term is the evidence *against* a pair that had its chances
(both items styled before, never with each other), which a new item does not carry; scoring
a whole outfit weighs it by ``outfit_absent_weight`` (chosen for that on validation). A
candidate's score given several query items is the mean over them. Scoring all candidates of
one category is one matrix product.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stygig.compat.features import COLOUR_DIM, ItemFeatures
from stygig.npzfile import load_npz

__all__ = [
    "COMPAT_FILE",
    "CategoryBlocks",
    "CompatModel",
    "Cooccurrence",
    "embedding_check",
    "group_key",
]

#: File name of the model inside an artifact.
COMPAT_FILE = "compat.npz"
_REFERENCE = re.compile(r"(\d+)")


@dataclass(frozen=True)
class Cooccurrence:
    """How many (train) outfits hold each pair of items: a sorted sparse table."""

    item_ids: np.ndarray  # (k,) str
    keys: np.ndarray  # (p,) int64, sorted: a * k + b for both orders of each pair
    counts: np.ndarray  # (p,) float32

    @classmethod
    def from_outfits(cls, outfits: list[list[str]]) -> Cooccurrence:
        """Count co-occurrences of every item pair in ``outfits``."""
        ids = sorted({i for o in outfits for i in o})
        lookup = {i: n for n, i in enumerate(ids)}
        k = max(len(ids), 1)
        keys: list[int] = []
        for outfit in outfits:
            rows = sorted({lookup[i] for i in outfit})
            keys.extend(a * k + b for a in rows for b in rows if a != b)
        uniq, counts = np.unique(np.array(keys, np.int64), return_counts=True)
        return cls(np.array(ids, dtype=str), uniq, counts.astype(np.float32))

    @classmethod
    def empty(cls) -> Cooccurrence:
        """No outfit history at all."""
        return cls(np.array([], dtype=str), np.zeros(0, np.int64), np.zeros(0, np.float32))

    def codes(self, ids: list[str] | tuple[str, ...]) -> np.ndarray:
        """Row code of each id (``-1`` when the item has no history)."""
        return _sorted_positions(self.item_ids, ids)

    @staticmethod
    def absent(query: np.ndarray, cand: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """``(m, n)`` 1.0 where both items have history (codes ``query`` (m,), ``cand`` (n,))
        but ``counts`` (their :meth:`lookup`) says they never shared an outfit, else 0.0."""
        both = (np.asarray(query) >= 0)[:, None] & (np.asarray(cand) >= 0)[None, :]
        out: np.ndarray = (both & (counts == 0)).astype(np.float32)
        return out

    def lookup(self, query: np.ndarray, cand: np.ndarray) -> np.ndarray:
        """``(m, n)`` counts for code arrays ``query`` (m,) and ``cand`` (n,).

        Per query row: its partners' slice of the sorted keys scattered into a dense row,
        then gathered at ``cand`` (O(k + n) per row, no search per pair).
        """
        out = np.zeros((len(query), len(cand)), np.float32)
        if len(self.keys) == 0:
            return out
        k = len(self.item_ids)
        dense = np.zeros(k + 1, np.float32)  # slot k: "no history" (code -1)
        gather = np.where(np.asarray(cand) >= 0, cand, k)
        for n, q in enumerate(np.asarray(query).tolist()):
            if q < 0:
                continue
            lo, hi = np.searchsorted(self.keys, [q * k, (q + 1) * k])
            if lo == hi:
                continue
            partners = self.keys[lo:hi] - q * k
            dense[partners] = self.counts[lo:hi]
            out[n] = dense[gather]
            dense[partners] = 0.0
        return out


def _sorted_positions(table: np.ndarray, item_ids: Sequence[str]) -> np.ndarray:
    """Each id's position in ``table``, a sorted array of ids (``-1`` where it is absent)."""
    if len(table) == 0 or not len(item_ids):
        return np.full(len(item_ids), -1, np.int64)
    arr = np.array(item_ids, dtype=str)
    pos = np.clip(np.searchsorted(table, arr), 0, len(table) - 1)
    return np.where(table[pos] == arr, pos, -1).astype(np.int64)


def embedding_check(row: np.ndarray) -> int:
    """CRC-32 of one embedding row as float32 bytes: which photo a style row was measured on."""
    return zlib.crc32(np.ascontiguousarray(row, np.float32).tobytes())


def group_key(item_id: str) -> str:
    """The garment an item is a colour of: the reference number leading a MANGO id
    (``51000622-02`` -> ``51000622``); other ids are their own group."""
    match = _REFERENCE.match(item_id)
    return match.group(1) if match else item_id


@dataclass(frozen=True)
class CategoryBlocks:
    """Projected rows sorted by category (:meth:`CompatModel.blocks`)."""

    vectors: np.ndarray  # (N, D) rows in category order
    spans: tuple[tuple[int, int, int], ...]  # (category, start, end) in that order
    inverse: np.ndarray  # (N,) position of each original row in that order


def whiten_rows(
    embeddings: np.ndarray, mean: np.ndarray, projection: np.ndarray, scale: np.ndarray
) -> np.ndarray:
    """PCA-whitened, L2-normalised rows (``stygig.whitening``); unchanged when ``mean`` is empty."""
    if mean.size == 0:
        return embeddings
    x = ((embeddings - mean) @ projection) * scale
    out: np.ndarray = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return out


_ARRAYS = ("emb_mean", "emb_scale", "w1", "b1", "w2", "b2", "masks", "bias")
_WHITE = ("white_mean", "white_projection", "white_scale")


@dataclass(frozen=True)
class CompatModel:
    """Parameters of the learned scorer as NumPy arrays (see the module docstring)."""

    categories: tuple[str, ...]
    emb_mean: np.ndarray  # (d,)
    emb_scale: np.ndarray  # (d,)
    w1: np.ndarray  # (f, h)
    b1: np.ndarray  # (h,)
    w2: np.ndarray  # (h, D)
    b2: np.ndarray  # (D,)
    masks: np.ndarray  # (C + 1, C + 1, D); index C = unknown category
    bias: np.ndarray  # (C + 1, C + 1)
    cooc_weight: float = 0.0
    rules_weight: float = 0.0  # weight of the V4 score in ``learned+rules``
    cooccurrence: Cooccurrence = field(default_factory=Cooccurrence.empty)
    info: dict[str, Any] = field(default_factory=dict)
    # Garment-level co-occurrence (items grouped by :func:`group_key`: the colours of one
    # garment share their outfits) and its weight; empty = none.
    group_weight: float = 0.0
    group_cooccurrence: Cooccurrence = field(default_factory=Cooccurrence.empty)
    # Catalogue attributes as a multi-hot input: the vocabulary (``field=value``) and each
    # catalogue item's codes into it (sorted ids; ``(k, F)``, -1 = none); empty = none.
    attr_vocab: tuple[str, ...] = ()
    attr_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=str))
    attr_codes: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int32))
    # Attention over the visible items: a candidate's score is the softmax(att[cat q, cat c])
    # weighted mean of its pair scores over the query items (zeros: the plain mean).
    attention: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    # Learned per-item vectors for the items of the train outfits (sorted ids, ``(k, D)``),
    # added to ``g`` before normalising: what outfits taught about an item beyond its
    # content; none for a new item. Empty = none.
    id_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=str))
    id_vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    # Optional PCA whitening of the embeddings (stygig.whitening), applied before the
    # standardisation; empty arrays = none.
    white_mean: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    white_projection: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    white_scale: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    # Weight of the absence term (:meth:`Cooccurrence.absent`: both items in train outfits,
    # never together; learned negative); 0 = none, as in models trained before it.
    absent_weight: float = 0.0
    # The absence weight when the items are scored as members of one outfit (the outfit score:
    # each item as the completion of all the others, the weakest counted) rather than as
    # recommendations; chosen on the trainer's validation outfits for the single-swap AUC.
    # NaN = the same as ``absent_weight`` (models trained before it).
    outfit_absent_weight: float = float("nan")
    # Each catalogue photo's style, as the trainer measured it (stygig.training.style: the
    # spread of intermediate feature maps, reduced): sorted ids, ``(k, S)`` float16 rows and
    # the CRC-32 of each item's embedding row then (:func:`embedding_check`), so an item whose
    # photo changed since (re-added under its id) is not given the old photo's style. Items
    # without a row (a query photo, an item added after training) are scored without it.
    # Empty = none, as in models trained before it.
    style_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=str))
    style_rows: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float16))
    style_checks: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint32))

    def absence(self, outfit: bool = False) -> float:
        """The absence weight for recommendations, or (``outfit``) for an outfit's score."""
        if outfit and not math.isnan(self.outfit_absent_weight):
            return self.outfit_absent_weight
        return self.absent_weight

    @property
    def training_split(self) -> dict[str, Any] | None:
        """The split it was trained on: ``seed``, ``test_fraction``, ``train_fingerprint`` (of
        the train outfits and their items, :func:`stygig.evaluation.split.outfits_fingerprint`),
        ``outfits_fingerprint`` (the whole file) and counts; None for a model trained before
        they were recorded. ``stygig eval`` refuses a model whose split is not its own."""
        split = self.info.get("split")
        return split if isinstance(split, dict) and "train_fingerprint" in split else None

    @property
    def dim(self) -> int:
        """Width of the projected vectors."""
        return int(self.w2.shape[1])

    def whiten(self, embeddings: np.ndarray) -> np.ndarray:
        """The embeddings whitened and L2-normalised when the model whitens, else as they are."""
        return whiten_rows(embeddings, self.white_mean, self.white_projection, self.white_scale)

    def attribute_rows(self, item_ids: Sequence[str]) -> np.ndarray:
        """``(n, A)`` multi-hot attributes of catalogue items from the model's table (zeros for
        an id it does not know)."""
        out = np.zeros((len(item_ids), len(self.attr_vocab)), np.float32)
        if not self.attr_vocab:
            return out
        pos = _sorted_positions(self.attr_ids, item_ids)
        found = np.flatnonzero(pos >= 0)
        codes = self.attr_codes[pos[found]]
        rows = np.repeat(found, codes.shape[1])
        cols = codes.reshape(-1)
        ok = cols >= 0
        out[rows[ok], cols[ok]] = 1.0
        return out

    def encode_attributes(self, attributes: Sequence[Mapping[str, Any] | None]) -> np.ndarray:
        """``(n, A)`` multi-hot rows of items' attribute mappings in the model's vocabulary."""
        lookup = {v: n for n, v in enumerate(self.attr_vocab)}
        out = np.zeros((len(attributes), len(self.attr_vocab)), np.float32)
        for n, attrs in enumerate(attributes):
            for key, value in (attrs or {}).items():
                col = lookup.get(f"{key}={value}")
                if col is not None:
                    out[n, col] = 1.0
        return out

    @property
    def style_width(self) -> int:
        """Columns of :meth:`style_of` rows: the style and its flag (0 without style)."""
        return int(self.style_rows.shape[1]) + 1 if self.style_rows.size else 0

    def style_of(self, item_ids: Sequence[str], embeddings: np.ndarray) -> np.ndarray:
        """``(n, S + 1)`` style rows of catalogue items from the model's table, the last
        column 1; zeros (the catalogue's mean style, flag 0) for an id it has no row for, or
        whose embedding row (``embeddings``, aligned with ``item_ids``) is not the one it had
        at training: another photo under the same id."""
        out = np.zeros((len(item_ids), self.style_width), np.float32)
        if not self.style_width:
            return out
        pos = _sorted_positions(self.style_ids, item_ids)
        found = np.flatnonzero(pos >= 0)
        checks = np.array([embedding_check(embeddings[n]) for n in found], np.uint32)
        found = found[checks == self.style_checks[pos[found]]]
        out[found, :-1] = self.style_rows[pos[found]]
        out[found, -1] = 1.0
        return out

    def inputs(self, features: ItemFeatures) -> np.ndarray:
        """The MLP's input rows: standardised embedding, colour, category one-hot, attributes,
        style (:meth:`style_of`)."""
        n, c = len(features), len(self.categories)
        onehot = np.zeros((n, c), np.float32)
        known = features.category >= 0
        onehot[np.flatnonzero(known), features.category[known]] = 1.0
        emb = (self.whiten(features.embeddings) - self.emb_mean) * self.emb_scale
        parts = [emb, features.colour, onehot]
        if self.attr_vocab:
            attrs = features.attributes
            parts.append(
                np.zeros((n, len(self.attr_vocab)), np.float32) if attrs is None else attrs
            )
        if self.style_width:
            style = features.style
            parts.append(np.zeros((n, self.style_width), np.float32) if style is None else style)
        return np.concatenate(parts, axis=1).astype(np.float32)

    def id_rows(self, item_ids: Sequence[str]) -> np.ndarray:
        """``(n, D)`` learned per-item vectors (zeros for an id without one)."""
        out = np.zeros((len(item_ids), self.dim), np.float32)
        pos = _sorted_positions(self.id_ids, item_ids)
        found = pos >= 0
        out[found] = self.id_vectors[pos[found]]
        return out

    def project(self, features: ItemFeatures, item_ids: Sequence[str] | None = None) -> np.ndarray:
        """``(n, D)`` unit vectors ``g`` (with the learned per-item vectors of ``item_ids``,
        catalogue ids or None for photos, when the model has them)."""
        hidden = np.maximum(self.inputs(features) @ self.w1 + self.b1, 0.0)
        g = hidden @ self.w2 + self.b2
        if item_ids is not None and len(self.id_ids):
            g = g + self.id_rows(item_ids)
        norm = np.linalg.norm(g, axis=1, keepdims=True)
        out: np.ndarray = (g / np.maximum(norm, 1e-8)).astype(np.float32)
        return out

    def _cat(self, codes: np.ndarray) -> np.ndarray:
        return np.where(codes >= 0, codes, len(self.categories)).astype(np.int64)

    def pair_scores(
        self, query: np.ndarray, query_cat: np.ndarray, cand: np.ndarray, cand_cat: np.ndarray
    ) -> np.ndarray:
        """``(m, n)`` content scores of projected query rows against projected candidates.

        One matrix product per candidate category (FITB candidates share one category).
        """
        qc, cc = self._cat(query_cat), self._cat(cand_cat)
        out = np.empty((len(query), len(cand)), np.float32)
        for k in np.unique(cc):
            idx = np.flatnonzero(cc == k)
            weighted = query * self.masks[qc, k]  # (m, D)
            out[:, idx] = weighted @ cand[idx].T + self.bias[qc, k][:, None]
        return out

    def blocks(self, vectors: np.ndarray, cats: np.ndarray) -> CategoryBlocks:
        """Projected rows grouped by category once, for :meth:`block_scores`."""
        cc = self._cat(cats)
        order = np.argsort(cc, kind="stable")
        kinds, starts = np.unique(cc[order], return_index=True)
        ends = np.r_[starts[1:], len(order)]
        inverse = np.empty(len(order), np.int64)
        inverse[order] = np.arange(len(order))
        spans = tuple(zip(kinds.tolist(), starts.tolist(), ends.tolist(), strict=True))
        return CategoryBlocks(np.ascontiguousarray(vectors[order]), spans, inverse)

    def block_scores(
        self,
        query: np.ndarray,
        query_cat: np.ndarray,
        blocks: CategoryBlocks,
        rows: np.ndarray | None = None,
    ) -> np.ndarray:
        """``(m, N)`` :meth:`pair_scores` of the query rows against *every* row of ``blocks``
        (in the rows' own order; only ``rows`` of them when given): one small product per
        category, no gathering before, so scoring a whole 10k catalogue costs a fraction of a
        millisecond."""
        qc = self._cat(query_cat)
        weighted = query[:, None, :] * self.masks[qc]  # (m, C + 1, D)
        out = np.empty((len(blocks.inverse), len(query)), np.float32)
        for k, start, end in blocks.spans:
            out[start:end] = blocks.vectors[start:end] @ weighted[:, k].T + self.bias[qc, k]
        picked = blocks.inverse if rows is None else blocks.inverse[rows]
        result: np.ndarray = out[picked].T
        return result

    def score(
        self,
        query: np.ndarray,
        query_cat: np.ndarray,
        cand: np.ndarray,
        cand_cat: np.ndarray,
        cooc: np.ndarray | None = None,
        group_cooc: np.ndarray | None = None,
        pair: np.ndarray | None = None,
        absent: np.ndarray | None = None,
        *,
        outfit: bool = False,
    ) -> np.ndarray:
        """``(n,)`` learned score of each candidate: the (attention-weighted) mean over the
        query rows (``outfit``: as members of one outfit, :meth:`absence`).

        Args:
            query, cand: projected vectors (:meth:`project`), ``(m, D)`` and ``(n, D)``.
            query_cat, cand_cat: category codes (``-1`` = unknown).
            cooc: optional ``(m, n)`` co-occurrence counts (:meth:`Cooccurrence.lookup`).
            group_cooc: optional ``(m, n)`` garment-level counts (``group_cooccurrence``).
            pair: the :meth:`pair_scores` when already computed (:meth:`block_scores`).
            absent: optional ``(m, n)`` :meth:`Cooccurrence.absent` of the pairs.
        """
        if pair is None:
            pair = self.pair_scores(query, query_cat, cand, cand_cat)
        return self.aggregate(pair, query_cat, cand_cat, cooc, group_cooc, absent, outfit=outfit)

    def aggregate(
        self,
        pair: np.ndarray,
        query_cat: np.ndarray,
        cand_cat: np.ndarray,
        cooc: np.ndarray | None = None,
        group_cooc: np.ndarray | None = None,
        absent: np.ndarray | None = None,
        *,
        outfit: bool = False,
    ) -> np.ndarray:
        """``(n,)`` candidate scores from the ``(m, n)`` content pair scores: the co-occurrence
        and absence terms added (the absence weighted for an ``outfit`` score or for
        recommendations, :meth:`absence`), then the (attention-weighted) mean over the query
        rows."""
        total = pair.astype(np.float32, copy=True)
        weight = self.absence(outfit)
        if absent is not None and weight:
            total += np.float32(weight) * absent
        if cooc is not None and self.cooc_weight:
            total += np.float32(self.cooc_weight) * np.log1p(cooc)
        if group_cooc is not None and self.group_weight:
            total += np.float32(self.group_weight) * np.log1p(group_cooc)
        if self.attention.size == 0 or len(total) == 1:
            out: np.ndarray = total.sum(axis=0) / np.float32(len(total))
            return out
        logits = self.attention[self._cat(query_cat)][:, self._cat(cand_cat)]  # (m, n)
        weights = np.exp(logits - logits.max(axis=0, keepdims=True))
        weighted: np.ndarray = (total * weights).sum(axis=0) / weights.sum(axis=0)
        return weighted

    # -- persistence -------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write ``compat.npz`` (no pickles)."""
        path = Path(path)
        payload: dict[str, Any] = {
            name: np.asarray(getattr(self, name), np.float32) for name in (*_ARRAYS, *_WHITE)
        }
        payload |= {
            "categories": np.array(self.categories, dtype=str),
            "scalars": np.array(
                [
                    self.cooc_weight,
                    self.rules_weight,
                    self.group_weight,
                    self.absent_weight,
                    self.outfit_absent_weight,
                ],
                np.float64,
            ),
            "cooc_ids": self.cooccurrence.item_ids,
            "cooc_keys": self.cooccurrence.keys,
            "cooc_counts": self.cooccurrence.counts,
            "group_ids": self.group_cooccurrence.item_ids,
            "group_keys": self.group_cooccurrence.keys,
            "group_counts": self.group_cooccurrence.counts,
            "attr_vocab": np.array(self.attr_vocab, dtype=str),
            "attr_ids": np.asarray(self.attr_ids, dtype=str),
            "attr_codes": np.asarray(self.attr_codes, np.int32),
            "attention": np.asarray(self.attention, np.float32),
            "id_ids": np.asarray(self.id_ids, dtype=str),
            "id_vectors": np.asarray(self.id_vectors, np.float32),
            "style_ids": np.asarray(self.style_ids, dtype=str),
            "style_rows": np.asarray(self.style_rows, np.float16),
            "style_checks": np.asarray(self.style_checks, np.uint32),
            "info": np.array(json.dumps(self.info)),
        }
        with path.open("wb") as handle:
            np.savez(handle, **payload)
        return path

    @classmethod
    def load(cls, path: str | Path) -> CompatModel:
        """Read a model written by :meth:`save`."""
        with load_npz(path) as data:  # members checked: no unpacking beyond the file's size
            scalars = data["scalars"]
            info = json.loads(str(data["info"]))
            if not isinstance(info, dict):
                raise ValueError("compatibility model: its info is not a JSON object")
            for name in ("categories", "attr_vocab", "cooc_ids", "group_ids", "attr_ids"):
                if name in data.files and data[name].dtype.kind != "U":
                    raise ValueError(f"compatibility model: {name} is not text")
            model = cls(
                categories=tuple(str(c) for c in data["categories"]),
                emb_mean=data["emb_mean"],
                emb_scale=data["emb_scale"],
                w1=data["w1"],
                b1=data["b1"],
                w2=data["w2"],
                b2=data["b2"],
                masks=data["masks"],
                bias=data["bias"],
                **{k: data[k] for k in _WHITE if k in data.files},
                cooc_weight=float(scalars[0]),
                rules_weight=float(scalars[1]),
                cooccurrence=Cooccurrence(data["cooc_ids"], data["cooc_keys"], data["cooc_counts"]),
                info=info,
                **_optional(data, scalars),
            )
        model._check_shapes()
        return model

    def _check_shapes(self) -> None:
        """Every array of a loaded model against the others (a tampered or truncated file,
        re-signed, must be refused at load, not fail every request): :class:`ValueError`."""
        d, (rows, hidden) = len(self.emb_mean), _shape(self.w1, 2)
        out = _shape(self.w2, 2)[1]
        k = _shape(self.bias, 2)[0]
        width = d + COLOUR_DIM + len(self.categories) + len(self.attr_vocab) + self.style_width
        expected = {
            "emb_scale": (self.emb_scale, (d,)),
            "w1": (self.w1, (width, hidden)),
            "b1": (self.b1, (hidden,)),
            "w2": (self.w2, (hidden, out)),
            "b2": (self.b2, (out,)),
            "masks": (self.masks, (k, k, out)),
            "bias": (self.bias, (k, k)),
        }
        for name, (array, shape) in expected.items():
            if tuple(array.shape) != shape:
                raise ValueError(
                    f"compatibility model: {name} has shape {array.shape}, not {shape}"
                )
        if k < len(self.categories) or self.emb_mean.ndim != 1 or rows != width:
            raise ValueError("compatibility model: inconsistent shapes")
        for table in (self.cooccurrence, self.group_cooccurrence):
            if table.keys.ndim != 1 or table.keys.shape != table.counts.shape:
                raise ValueError("compatibility model: a co-occurrence table's keys and counts")
        if len(self.attr_ids) != len(self.attr_codes) or (
            self.attr_codes.size and int(self.attr_codes.max()) >= len(self.attr_vocab)
        ):
            raise ValueError("compatibility model: its attribute table")
        if len(self.id_ids) != len(self.id_vectors):
            raise ValueError("compatibility model: its item vector table")
        numbers = [self.emb_mean, self.emb_scale, self.w1, self.b1, self.w2, self.b2, self.masks]
        numbers += [self.bias, self.cooccurrence.counts, self.group_cooccurrence.counts]
        numbers += [self.attention, self.id_vectors, self.style_rows]
        numbers += [self.white_mean, self.white_projection, self.white_scale]
        scalars = [self.cooc_weight, self.rules_weight, self.group_weight, self.absent_weight]
        if any(np.asarray(a).dtype.kind != "f" for a in numbers):
            raise ValueError("compatibility model: a weight array that is not of numbers")
        if not all(np.isfinite(a).all() for a in numbers) or not np.isfinite(scalars).all():
            raise ValueError("compatibility model: a weight that is not a finite number")
        if math.isinf(self.outfit_absent_weight):  # NaN: the recommendations' weight
            raise ValueError("compatibility model: a weight that is not a finite number")
        if self.white_mean.size and (
            self.white_projection.shape != (len(self.white_mean), d)
            or self.white_scale.shape != (d,)
        ):
            raise ValueError("compatibility model: its whitening does not give its input width")
        # Review (s51): a tampered file with these wrong loaded, then failed every request or
        # gave NaN scores and silently dropped terms.
        if self.attention.size and self.attention.shape != (k, k):
            raise ValueError("compatibility model: its attention is not one per category pair")
        if self.id_vectors.size and self.id_vectors.shape != (len(self.id_ids), out):
            raise ValueError("compatibility model: its item vectors are not of its width")
        if self.style_rows.size and self.style_rows.ndim != 2:
            raise ValueError("compatibility model: its style table")
        for table in (self.cooccurrence, self.group_cooccurrence):
            _check_table(table)
        if not all(_ascending(ids) for ids in (self.attr_ids, self.id_ids, self.style_ids)):
            raise ValueError("compatibility model: an id table that is not sorted")
        if self.attr_codes.size and (
            self.attr_codes.dtype.kind not in "iu" or int(self.attr_codes.min()) < -1
        ):
            raise ValueError("compatibility model: its attribute table")

    @property
    def input_dim(self) -> int:
        """The width of the catalogue embeddings the model reads."""
        return len(self.white_mean) if self.white_mean.size else len(self.emb_mean)


def _check_table(table: Cooccurrence) -> None:
    """A co-occurrence table as :meth:`Cooccurrence.from_outfits` makes it: sorted ids, keys
    strictly increasing within ``k * k`` and counts of one or more (a table out of order
    silently lost its term; negative counts made NaN scores)."""
    ids, keys, counts = table.item_ids, table.keys, table.counts
    k = len(ids)
    if not _ascending(ids):
        raise ValueError("compatibility model: a co-occurrence table's ids are not sorted")
    if keys.size and (
        keys.dtype.kind not in "iu"
        or counts.dtype.kind != "f"
        or not _ascending(keys)
        or int(keys[0]) < 0
        or int(keys[-1]) >= k * k
        or not (counts >= 1).all()
    ):
        raise ValueError("compatibility model: a co-occurrence table's keys or counts")


def _ascending(values: np.ndarray) -> bool:
    """Strictly ascending (what the tables' binary searches need), or shorter than 2."""
    return len(values) < 2 or bool((values[1:] > values[:-1]).all())


def _shape(array: np.ndarray, ndim: int) -> tuple[int, ...]:
    if array.ndim != ndim:
        raise ValueError(f"compatibility model: an array of {array.ndim} dimensions, not {ndim}")
    return tuple(array.shape)


def _optional(data: Any, scalars: np.ndarray) -> dict[str, Any]:
    """The parts a model of the first version lacks (garment co-occurrence, attributes,
    attention, absence weight, style): read when present, else their empty defaults."""
    files = set(data.files)
    out: dict[str, Any] = {}
    if len(scalars) > 2:
        out["group_weight"] = float(scalars[2])
    if len(scalars) > 3:
        out["absent_weight"] = float(scalars[3])
    if len(scalars) > 4:
        out["outfit_absent_weight"] = float(scalars[4])
    if {"group_ids", "group_keys", "group_counts"} <= files:
        out["group_cooccurrence"] = Cooccurrence(
            data["group_ids"], data["group_keys"], data["group_counts"]
        )
    if {"attr_vocab", "attr_ids", "attr_codes"} <= files:
        out["attr_vocab"] = tuple(str(v) for v in data["attr_vocab"])
        out["attr_ids"] = data["attr_ids"]
        out["attr_codes"] = data["attr_codes"]
    if "attention" in files:
        out["attention"] = data["attention"]
    if {"id_ids", "id_vectors"} <= files:
        out["id_ids"] = data["id_ids"]
        out["id_vectors"] = data["id_vectors"]
    if {"style_ids", "style_rows", "style_checks"} <= files:
        out["style_ids"] = data["style_ids"]
        out["style_rows"] = data["style_rows"]
        out["style_checks"] = data["style_checks"]
        if not len(out["style_ids"]) == len(out["style_rows"]) == len(out["style_checks"]):
            raise ValueError("inconsistent compatibility model style table")
    return out

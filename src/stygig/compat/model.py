"""The learned compatibility model: pure NumPy inference, saved as ``compat.npz``.

An item's features (see :mod:`stygig.compat.features`) go through a two-layer MLP to a unit
vector ``g``; the compatibility of a query item ``q`` and a candidate ``c`` is

    ``s(q, c) = <g_q * mask[cat q, cat c], g_c> + bias[cat q, cat c]
               + cooc_weight * log1p(cooccurrences(q, c))``

a type-aware projection: each category pair reads its own learned subspace of ``g``. The
co-occurrence term counts train outfits holding both items (zero for new items, so content
carries cold start). A candidate's score given several query items is the mean over them.
Scoring all candidates of one category is one matrix product.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stygig.compat.features import COLOUR_DIM, ItemFeatures

__all__ = ["COMPAT_FILE", "CompatModel", "Cooccurrence"]

#: File name of the model inside an artifact.
COMPAT_FILE = "compat.npz"


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
        if len(self.item_ids) == 0:
            return np.full(len(ids), -1, np.int64)
        arr = np.array(ids, dtype=str)
        pos = np.searchsorted(self.item_ids, arr)
        pos = np.clip(pos, 0, len(self.item_ids) - 1)
        return np.where(self.item_ids[pos] == arr, pos, -1).astype(np.int64)

    def lookup(self, query: np.ndarray, cand: np.ndarray) -> np.ndarray:
        """``(m, n)`` counts for code arrays ``query`` (m,) and ``cand`` (n,)."""
        out = np.zeros((len(query), len(cand)), np.float32)
        if len(self.keys) == 0:
            return out
        k = len(self.item_ids)
        keys = query[:, None] * k + cand[None, :]
        valid = (query[:, None] >= 0) & (cand[None, :] >= 0)
        pos = np.clip(np.searchsorted(self.keys, keys), 0, len(self.keys) - 1)
        hit = valid & (self.keys[pos] == keys)
        out[hit] = self.counts[pos[hit]]
        return out


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
    # Optional PCA whitening of the embeddings (stygig.whitening), applied before the
    # standardisation; empty arrays = none.
    white_mean: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    white_projection: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    white_scale: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))

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

    def inputs(self, features: ItemFeatures) -> np.ndarray:
        """The MLP's input rows: standardised embedding, colour, category one-hot."""
        n, c = len(features), len(self.categories)
        onehot = np.zeros((n, c), np.float32)
        known = features.category >= 0
        onehot[np.flatnonzero(known), features.category[known]] = 1.0
        emb = (self.whiten(features.embeddings) - self.emb_mean) * self.emb_scale
        return np.concatenate([emb, features.colour, onehot], axis=1).astype(np.float32)

    def project(self, features: ItemFeatures) -> np.ndarray:
        """``(n, D)`` unit vectors ``g``."""
        hidden = np.maximum(self.inputs(features) @ self.w1 + self.b1, 0.0)
        g = hidden @ self.w2 + self.b2
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

    def score(
        self,
        query: np.ndarray,
        query_cat: np.ndarray,
        cand: np.ndarray,
        cand_cat: np.ndarray,
        cooc: np.ndarray | None = None,
    ) -> np.ndarray:
        """``(n,)`` learned score of each candidate: the mean over the query rows.

        Args:
            query, cand: projected vectors (:meth:`project`), ``(m, D)`` and ``(n, D)``.
            query_cat, cand_cat: category codes (``-1`` = unknown).
            cooc: optional ``(m, n)`` co-occurrence counts (:meth:`Cooccurrence.lookup`).
        """
        pair = self.pair_scores(query, query_cat, cand, cand_cat)
        if cooc is not None and self.cooc_weight:
            pair = pair + self.cooc_weight * np.log1p(cooc)
        out: np.ndarray = pair.mean(axis=0)
        return out

    # -- persistence -------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write ``compat.npz`` (no pickles)."""
        path = Path(path)
        payload: dict[str, Any] = {
            name: np.asarray(getattr(self, name), np.float32) for name in (*_ARRAYS, *_WHITE)
        }
        payload |= {
            "categories": np.array(self.categories, dtype=str),
            "scalars": np.array([self.cooc_weight, self.rules_weight], np.float64),
            "cooc_ids": self.cooccurrence.item_ids,
            "cooc_keys": self.cooccurrence.keys,
            "cooc_counts": self.cooccurrence.counts,
            "info": np.array(json.dumps(self.info)),
        }
        with path.open("wb") as handle:
            np.savez(handle, **payload)
        return path

    @classmethod
    def load(cls, path: str | Path) -> CompatModel:
        """Read a model written by :meth:`save`."""
        with np.load(Path(path), allow_pickle=False) as data:
            scalars = data["scalars"]
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
                info=json.loads(str(data["info"])),
            )
        if model.w1.shape[0] != model.emb_mean.shape[0] + COLOUR_DIM + len(model.categories):
            raise ValueError(f"{path}: inconsistent compatibility model shapes")
        return model

"""Seeded, documented splits: catalogue vs query photos, train vs test outfits.

Both splits depend only on ``(seed, labels or ids)``, never on the order rows arrive in, so
``stygig eval`` on the same data gives the same split on any machine.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Split", "outfits_fingerprint", "split_ids", "stratified_split"]


@dataclass(frozen=True)
class Split:
    """Row positions of the catalogue part and of the held-out query part."""

    catalog: np.ndarray
    queries: np.ndarray

    def sizes(self) -> dict[str, int]:
        """Counts for the metrics file."""
        return {"catalog": len(self.catalog), "queries": len(self.queries)}


def stratified_split(labels: Sequence[str], *, query_fraction: float = 0.2, seed: int = 0) -> Split:
    """Hold out ``query_fraction`` of every label's rows (rounded), at least one row kept.

    Labels are visited in sorted order and each gets its own generator ``(seed, k)``, so adding
    rows of one label never reshuffles another. A label with a single row stays in the catalogue
    (a query whose true label is absent from the catalogue could never be voted right).
    """
    if not 0.0 < query_fraction < 1.0:
        raise ValueError("query_fraction must be within (0, 1)")
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    queries: list[int] = []
    for k, label in enumerate(sorted(by_label)):
        rows = np.array(by_label[label], np.int64)
        n_query = min(round(len(rows) * query_fraction), len(rows) - 1)
        if n_query > 0:
            picked = np.random.default_rng([seed, k]).permutation(len(rows))[:n_query]
            queries.extend(rows[picked].tolist())
    query_rows = np.array(sorted(queries), np.int64)
    mask = np.ones(len(labels), bool)
    mask[query_rows] = False
    return Split(catalog=np.flatnonzero(mask), queries=query_rows)


def split_ids(
    ids: Sequence[str], *, test_fraction: float = 0.2, seed: int = 0
) -> tuple[list[str], list[str]]:
    """Split distinct ids (e.g. outfits) into sorted ``(train, test)`` lists."""
    unique = sorted(set(ids))
    order = np.random.default_rng(seed).permutation(len(unique))
    n_test = round(len(unique) * test_fraction)
    test = sorted(unique[i] for i in order[:n_test])
    test_set = set(test)
    return [i for i in unique if i not in test_set], test


def outfits_fingerprint(
    outfits: Mapping[str, Sequence[str]], ids: Sequence[str] | None = None
) -> str:
    """Hex sha256 of the outfits ``ids`` (default: all) with their items, order-independent.

    A compatibility model records the fingerprint of the outfits it was trained on; the
    evaluation recomputes it for its own split and refuses a model trained on other outfits.
    """
    chosen = sorted(outfits) if ids is None else sorted(set(ids))
    canonical = [[o, sorted(set(outfits.get(o, ())))] for o in chosen]
    return hashlib.sha256(json.dumps(canonical, separators=(",", ":")).encode()).hexdigest()

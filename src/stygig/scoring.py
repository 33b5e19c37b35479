"""Pure functions on arrays: the V4 scoring rules. No I/O, no models, no Python loop per candidate.

* :func:`vote` — top-k neighbour vote for the query's category (or gender, usage); ties go to
  the label whose voters have the larger summed similarity.
* :func:`combine` — score = (w_sim * similarity + w_harmony * harmony) * boost, where boost is
  the taxonomy's factor (default x1.15) for a compatible category pair and 1 otherwise.
* :func:`mmr` — maximal marginal relevance: picks ``k`` items trading score against redundancy,
  so a list is not five near-identical items.
* :func:`rank_by_category` — each category's top ``k`` (diversified by MMR), best category first.
* :func:`assemble_outfit` — one item per free slot, compatible with the query and each other.

Weights live in :class:`ScoringConfig`, loaded from ``stygig/data/scoring.yaml`` (or a user file).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import numpy as np
import yaml
from pydantic import ConfigDict, Field, TypeAdapter

from stygig.errors import ConfigError, config_read_problem, validate_config
from stygig.harmony import HarmonyRules
from stygig.scan import Scan
from stygig.unique_keys import load_yaml

__all__ = [
    "COMPAT_MODES",
    "ScoringConfig",
    "Vote",
    "assemble_outfit",
    "combine",
    "label_codes",
    "mmr",
    "rank_by_category",
    "vote",
    "weighted_winner",
]

#: ``learned``: the compatibility model only; ``learned+rules``: model + its fitted weight x V4;
#: ``rules``: V4 only (also the fallback for an artifact without a model).
CompatMode = Literal["learned", "learned+rules", "rules"]
COMPAT_MODES: tuple[str, ...] = get_args(CompatMode)


_Weight = Annotated[float, Field(strict=True, ge=0.0, allow_inf_nan=False)]
_Share = Annotated[float, Field(strict=True, ge=0.0, le=1.0)]
_Count = Annotated[int, Field(strict=True, ge=1, le=10_000)]


@dataclass(frozen=True)
class ScoringConfig:
    """Weights of the V4 score and the ranking knobs (see ``data/scoring.yaml``).

    Files are validated by pydantic against these annotations, strictly: a count must be an
    integer (``vote_k: 2.5`` and ``candidate_pool: "x"`` are errors), weights non-negative and
    finite, shares within [0, 1], and unknown keys are refused.
    """

    __pydantic_config__ = ConfigDict(extra="forbid")

    similarity_weight: _Weight = 0.6
    harmony_weight: _Weight = 0.4
    vote_k: _Count = 5
    attribute_vote_k: _Count = 10  # neighbours voting for gender and usage
    # Below this share of the photos' gender vote the engine does not guess a gender: outfits
    # are drawn from unisex items (0 = always guess).
    gender_min_confidence: _Share = 0.8
    diversity: _Share = 0.3  # MMR: 0 = pure score, 1 = pure novelty
    candidate_pool: Annotated[int, Field(strict=True, ge=1, le=1_000_000)] = 2048
    harmony: HarmonyRules = field(default_factory=HarmonyRules)  # colour rules (stygig.harmony)
    # With a learned compatibility model in the artifact (stygig.compat): which score ranks
    # outfit candidates. Without a model the V4 rules are used whatever this says.
    compat_mode: CompatMode = "learned+rules"
    # How an exact catalogue is scanned (stygig.scan): int8 (refined in float32 where it can
    # change an answer), float32, or auto: int8 from 16 MiB of float32 rows.
    exact_scan: Scan = "auto"

    @classmethod
    def load(cls, path: str | Path | None = None) -> ScoringConfig:
        """Load from YAML; ``None`` loads the packaged defaults."""
        file = (
            Path(path) if path else Path(str(resources.files("stygig") / "data" / "scoring.yaml"))
        )
        try:
            data = load_yaml(file.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"cannot read scoring config {file}: {config_read_problem(e)}") from e
        return cls.from_dict(data, source=file)

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> ScoringConfig:
        """Build from a mapping; :class:`ConfigError` naming every field that is wrong (and
        ``source``, the file, when given)."""
        what = f"scoring config {source}" if source else "scoring config"
        return validate_config(_scoring_adapter(), data, what)


@functools.cache
def _scoring_adapter() -> TypeAdapter[ScoringConfig]:
    return TypeAdapter(ScoringConfig)


@dataclass(frozen=True)
class Vote:
    """Result of a neighbour vote."""

    winner: int
    counts: dict[int, int]
    similarity: dict[int, float]


def label_codes(values: Sequence[str | None]) -> tuple[list[str], np.ndarray]:
    """Sorted label names and an int code per value (``-1`` for missing)."""
    names = sorted({v for v in values if v is not None})
    lookup = {v: i for i, v in enumerate(names)}
    return names, np.array([lookup[v] if v is not None else -1 for v in values], np.int64)


def weighted_winner(weights: dict[int, float]) -> tuple[int, float] | None:
    """The label with the largest weight (ties: lowest label) and its share; None if no weight."""
    total = sum(weights.values())
    if total <= 0:
        return None
    winner = min(weights, key=lambda g: (-weights[g], g))
    return winner, weights[winner] / total


def vote(labels: np.ndarray, sims: np.ndarray) -> Vote:
    """Majority label among neighbours; ties broken by summed similarity, then lowest label.

    Args:
        labels: int labels of the neighbours (``-1`` = unknown, ignored).
        sims: their similarities to the query, same length.
    """
    # A handful of neighbours: plain Python counts them ~10x faster than NumPy's unique and
    # lexsort would (sums in the same order, in float64, as np.bincount adds them).
    counts: dict[int, int] = {}
    sim_sum: dict[int, float] = {}
    for label, sim in zip(
        np.asarray(labels, dtype=np.int64).tolist(),
        np.asarray(sims, dtype=np.float64).tolist(),
        strict=True,
    ):
        if label >= 0:
            counts[label] = counts.get(label, 0) + 1
            sim_sum[label] = sim_sum.get(label, 0.0) + sim
    if not counts:
        return Vote(-1, {}, {})
    order = sorted(counts)
    # Most votes, then the largest summed similarity, then the lowest label.
    best = min(order, key=lambda u: (-counts[u], -sim_sum[u], u))
    return Vote(best, {u: counts[u] for u in order}, {u: sim_sum[u] for u in order})


def combine(
    similarity: np.ndarray,
    harmony: np.ndarray,
    compatible: np.ndarray,
    *,
    boost: float,
    config: ScoringConfig,
    use_harmony: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """The V4 score per candidate, and the boost factor applied to each.

    ``score = (w_sim * similarity + w_harmony * harmony) * (boost if compatible else 1)``;
    with ``use_harmony=False`` the harmony term is dropped and the weights are not renormalised,
    so scores stay comparable between the two settings only in order, not in value.
    """
    base = config.similarity_weight * similarity.astype(np.float32)
    if use_harmony:
        base = base + config.harmony_weight * harmony.astype(np.float32)
    factor = np.where(compatible, np.float32(boost), np.float32(1.0))
    return base * factor, factor


#: Picks per category that maximal marginal relevance diversifies; the rest of a longer list
#: (``k`` up to 100) follows by score. Every pick costs a product of the new pick with its
#: category's pool: k=100 diversified in full took 0.56 s of CPU a request at 10k items,
#: 15 times k=3's (review, session 42). What a shopper sees first is diversified.
MMR_PICKS = 24


def mmr_depth(k: int) -> int:
    """How many of each category's best candidates MMR picks its ``k`` from: four times the
    diversified picks (:data:`MMR_PICKS`), plus the rest of ``k``."""
    return k + 3 * min(k, MMR_PICKS)


def mmr(scores: np.ndarray, vectors: np.ndarray, k: int, diversity: float) -> np.ndarray:
    """Maximal marginal relevance for several groups at once: ``k`` picks per group, in order
    (the first :data:`MMR_PICKS` diversified, the rest by score).

    Args:
        scores: ``(groups, n)``; ``-inf`` marks padding (never picked).
        vectors: ``(groups, n, dim)``, the items' embeddings.
        k: picks per group.
        diversity: each step picks ``argmax((1 - diversity) * score - diversity *
            max_sim_to_picked)`` within each group.

    Returns ``(groups, k)`` positions into each group's ``n``; ``-1`` once a group runs out.
    All groups advance together, so the cost is ``k`` vectorised steps whatever the count of
    groups; each step takes the inner products of the groups' new picks with their members
    (``k`` of the ``n`` rows of a Gram matrix: ``n`` is :func:`mmr_depth`, ``4 k`` up to
    :data:`MMR_PICKS`, so a quarter of its work).
    """
    scores = np.atleast_2d(np.asarray(scores, np.float64))
    groups, n = scores.shape
    order = np.full((groups, max(k, 0)), -1, np.int64)
    valid = np.isfinite(scores)
    available = valid.sum(axis=1)
    if k <= 0 or n == 0:
        return order
    if diversity <= 0.0 or k == 1:
        ranked = np.argsort(-np.where(valid, scores, -np.inf), axis=1, kind="stable")[:, :k]
        take = np.arange(ranked.shape[1])[None, :] < available[:, None]
        order[:, : ranked.shape[1]] = np.where(take, ranked, -1)
        return order
    vectors = np.asarray(vectors)
    relevance = (1.0 - diversity) * np.where(valid, scores, 0.0)
    redundancy = np.full((groups, n), -np.inf)
    picked = ~valid
    rows = np.arange(groups)
    steps = min(k, MMR_PICKS)
    for step in range(steps):
        gain = relevance - diversity * np.where(np.isfinite(redundancy), redundancy, 0.0)
        gain[picked] = -np.inf
        choice = np.argmax(gain, axis=1)
        live = step < available
        order[live, step] = choice[live]
        picked[rows[live], choice[live]] = True
        if step + 1 < steps:  # each member's similarity to the new pick: (groups, n)
            sims = np.matmul(vectors, vectors[rows, choice][:, :, None])[:, :, 0]
            redundancy = np.maximum(redundancy, sims)
    if k > steps:  # the rest by score, best first (ties: the lower position)
        rest = np.argsort(-np.where(picked, -np.inf, scores), axis=1, kind="stable")
        more = rest[:, : k - steps]
        left = np.maximum(available - steps, 0)
        take = np.arange(more.shape[1])[None, :] < left[:, None]
        order[:, steps : steps + more.shape[1]] = np.where(take, more, -1)
    return order


def _jitter(seed: int, n: int) -> np.ndarray:
    """``default_rng(seed).random(n) * 1e-12``, read-only. For the default seed 0 (most
    requests) the first ``n`` draws of a kept stream, grown as needed: a generator and 10k
    draws cost more than the rest of ranking's set-up. Other seeds (a client's) are drawn
    fresh, so nothing a client chooses is kept."""
    if seed != 0:
        return np.random.default_rng(seed).random(n) * 1e-12
    kept = _JITTER_0[0]
    if len(kept) < n:
        kept = np.random.default_rng(0).random(max(n, 2 * len(kept))) * 1e-12
        kept.flags.writeable = False
        _JITTER_0[0] = kept  # one assignment: a racing request draws the same numbers
    return kept[:n]


_JITTER_0: list[np.ndarray] = [np.zeros(0)]  # seed 0's draws so far

#: At most this many float32s of embeddings are gathered at once for MMR (4 MB).
_MMR_GATHER_FLOATS = 1 << 20


#: The most items the per-category lists of one answer hold in all (``k`` is per category:
#: k=100 over 28 categories was a 976 KB answer to a 112-byte request, and 50 ms of CPU;
#: audit, session 47). It binds only past k=9 over the bundled taxonomy's 49 categories,
#: or k=3 (the default) over 160.
MAX_RANKED_ITEMS = 480


def rank_by_category(
    score: np.ndarray,
    categories: np.ndarray,
    vectors: np.ndarray,
    vector_rows: np.ndarray,
    *,
    k: int,
    diversity: float,
    seed: int,
    refine: Callable[[np.ndarray], np.ndarray] | None = None,
    margin: float = 0.0,
) -> dict[int, np.ndarray]:
    """Per category: the positions (into ``score``) of its top ``k``, diversified by MMR.

    Args:
        score: each candidate's score.
        categories: each candidate's category code.
        vectors / vector_rows: the catalogue's embeddings and each candidate's row in them, for
            MMR's redundancy (only the rows MMR looks at are gathered).
        k: items per category, and :data:`MAX_RANKED_ITEMS` in all: with many categories
            each gets fewer (at least one, in the best :data:`MAX_RANKED_ITEMS` categories).
        diversity: MMR's trade-off (0: by score only).
        seed: seeds a jitter far below float32 resolution that breaks exact ties reproducibly.
        refine, margin: for scores known within ``margin / 2`` of their true value (an int8
            scan's similarities, :mod:`stygig.scan`): ``refine(positions)`` makes those
            positions' scores true and returns the scores. Every position within ``margin`` of
            its category's best ``4 k`` is refined, so the ranking is the true scores' ranking.

    Returns categories ordered by their best score.
    """
    limit = MAX_RANKED_ITEMS
    counts = _counts(categories)
    k = max(1, min(k, limit // max(int(np.count_nonzero(counts)), 1)))
    jitter = _jitter(seed, len(score))
    key = score.astype(np.float64) - jitter
    depth = mmr_depth(k)  # MMR picks k from each category's best `depth`
    cats, members, filled = _category_heads(key, categories, depth, counts)
    if refine is not None:
        # A true best-`depth` row's score is at most margin/2 below its estimate's, and the
        # estimated `depth`-th at most margin/2 above the true one: within `margin` of it.
        last = np.full(int(categories.max(initial=-1)) + 1, -np.inf)
        last[cats] = np.where(filled[:, -1], key[members[:, -1]], -np.inf)
        near = np.flatnonzero(key >= last[categories] - margin)
        score = refine(near)
        key[near] = score[near].astype(np.float64) - jitter[near]
        cats, sub, filled = _category_heads(key[near], categories[near], depth)
        members = near[sub]
    group_scores = np.where(filled, score[members], -np.inf)
    # Categories go to MMR a chunk at a time, so the gathered vectors stay within
    # _MMR_GATHER_FLOATS whatever k the client asked for (k=100 is 400 rows per category).
    picks = np.empty((len(cats), k), np.int64)
    step = max(1, _MMR_GATHER_FLOATS // (depth * vectors.shape[1]))
    for lo in range(0, len(cats), step):
        chunk = slice(lo, lo + step)
        picks[chunk] = mmr(group_scores[chunk], vectors[vector_rows[members[chunk]]], k, diversity)
    out = {int(c): members[n][picks[n][picks[n] >= 0]] for n, c in enumerate(cats)}
    # More categories than the bound (one item each): the best ones.
    return dict(sorted(out.items(), key=lambda kv: -float(score[kv[1][0]]))[:limit])


def _counts(categories: np.ndarray) -> np.ndarray:
    """Rows per category code."""
    return np.bincount(categories, minlength=int(categories.max(initial=-1)) + 1)


def _category_heads(
    key: np.ndarray, categories: np.ndarray, depth: int, counts: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each category's best ``depth`` positions by ``key``: ``(categories present, (categories,
    depth) positions, which of them are filled)``. ``counts``: :func:`_counts` of
    ``categories`` when the caller has it."""
    if counts is None:
        counts = _counts(categories)
    cats = np.flatnonzero(counts)
    # Only the head of the ranking can hold any category's best `depth`: sort just that head
    # (argpartition is linear), and fall back to the category's own rows when it is thin.
    head = min(len(key), depth * len(cats) * 2)
    top = np.argpartition(-key, head - 1)[:head] if 0 < head < len(key) else np.arange(len(key))
    # The head by category, best first within each (ties: the stable order of positions).
    top = top[np.lexsort((top, -key[top], categories[top]))]
    top_cats = categories[top]
    slot = np.searchsorted(cats, top_cats)  # each head row's category's line in the table
    start = np.searchsorted(top_cats, cats)  # where each category's run begins in the head
    rank = np.arange(len(top)) - start[slot]
    # Each category's best `depth`, padded into one (categories, depth) table for MMR.
    members = np.zeros((len(cats), depth), np.int64)
    filled = np.zeros((len(cats), depth), bool)
    keep = rank < depth
    members[slot[keep], rank[keep]], filled[slot[keep], rank[keep]] = top[keep], True
    # A category thin in the head: its own rows.
    for n in np.flatnonzero(filled.sum(axis=1) < np.minimum(depth, counts[cats])):
        rows = np.flatnonzero(categories == cats[n])
        mine = rows[np.argsort(-key[rows], kind="stable")][:depth]
        members[n, : len(mine)], filled[n, : len(mine)] = mine, True
    return cats, members, filled


def assemble_outfit(
    ranked: dict[int, np.ndarray],
    score: np.ndarray,
    category_slot: np.ndarray,
    slot_order: Sequence[int],
    compat: np.ndarray,
    query_categories: Sequence[int],
    skip_slots: Sequence[int] = (),
) -> dict[int, int]:
    """One candidate per slot the query leaves free: ``slot code -> position`` in outfit order.

    Each slot takes its best-scored ranked candidate whose category is compatible with the
    query's categories and with every item already picked. ``slot_order`` gives each slot's
    place in an outfit; ``skip_slots`` are never filled (e.g. "other").
    """
    chosen = list(query_categories)
    taken = {int(category_slot[c]) for c in chosen} | set(skip_slots)
    by_slot: dict[int, list[tuple[int, int]]] = {}  # slot -> (category, position), rank order
    for c, group in ranked.items():
        by_slot.setdefault(int(category_slot[c]), []).extend((c, int(j)) for j in group)
    picked: dict[int, int] = {}
    for s in sorted(by_slot, key=lambda s: slot_order[s]):
        if s in taken:
            continue
        for cat, j in sorted(by_slot[s], key=lambda cj: -float(score[cj[1]])):
            if all(compat[cat, other] for other in chosen):
                picked[s] = j
                chosen.append(cat)
                taken.add(s)
                break
    return picked

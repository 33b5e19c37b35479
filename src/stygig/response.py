"""The answer's parts from the engine's arrays: items with their score parts and reasons, and
query parts with their votes. One builder per type, so an item looks the same everywhere."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stygig.answer import (
    CategorySource,
    HeadField,
    HeadScore,
    HeadVote,
    ItemView,
    Neighbour,
    PaletteColor,
    QueryPart,
    RecommendedItem,
)
from stygig.columns import CatalogColumns
from stygig.harmony import HARMONY_PHRASES, HARMONY_RULE_NAMES

__all__ = [
    "HeadState",
    "PartState",
    "ScoreParts",
    "head_vote",
    "item_view",
    "query_part",
    "recommended_items",
]


def item_view(columns: CatalogColumns, pos: int) -> ItemView:
    """Catalogue row ``pos`` as clients see an item."""
    return ItemView(**columns.item_fields(pos))


@dataclass(frozen=True, slots=True)
class ScoreParts:
    """The candidates' score arrays of one request, aligned with its candidate rows."""

    cand: np.ndarray  # catalogue rows
    score: np.ndarray
    similarity: np.ndarray
    harmony: np.ndarray
    rules: np.ndarray  # index of the harmony rule that decided each
    factor: np.ndarray  # the compatibility boost applied
    learned: np.ndarray | None  # the compatibility model's part


def recommended_items(
    columns: CatalogColumns,
    parts: ScoreParts,
    positions: np.ndarray,
    *,
    query_category: str,
    query_color: str,
    mode: str,
    use_color: bool,
) -> list[RecommendedItem]:
    """Candidates ``positions`` (into ``parts``) as answer items, with why each was chosen.

    The score parts are gathered for all at once; each number is rounded as Python rounds
    (shortest exact decimal), so JSON shows ``0.3``, never ``0.30000000000000004``.
    """
    rows = parts.cand[positions].tolist()
    # Harmony is a part of the score only in outfit mode with colour on: shown only then, so
    # the parts shown always make the score (review, s38: use_color off showed 0.9 and a rule).
    coloured = mode == "outfit" and use_color
    score, sim = parts.score[positions].tolist(), parts.similarity[positions].tolist()
    harm, factor = parts.harmony[positions].tolist(), parts.factor[positions].tolist()
    rules = parts.rules[positions].tolist()
    learned = None if parts.learned is None else parts.learned[positions].tolist()
    out = []
    for n, pos in enumerate(rows):
        fields = columns.item_fields(pos)
        if mode == "outfit":
            category = fields["category"]
            reason = f"{query_category} -> {category} compatible" if factor[n] > 1 else category
            if use_color:
                pair = f"{query_color} + {fields['color_name']}"
                reason = f"{pair}: {HARMONY_PHRASES[rules[n]]}; {reason}"
        else:
            reason = f"looks similar (cosine {sim[n]:.2f})"
        out.append(
            RecommendedItem(
                **fields,
                score=round(score[n], 4),
                similarity=round(sim[n], 4),
                harmony=round(harm[n], 4) if coloured else None,
                harmony_rule=HARMONY_RULE_NAMES[rules[n]] if coloured else None,
                boost=round(factor[n], 4),
                learned=None if learned is None else round(learned[n], 4),
                reason=reason,
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class HeadState:
    """A headed field's decision for one photo, as the engine made it (label codes)."""

    field: HeadField
    proba: np.ndarray  # the head's probability of each of the field's column codes
    counts: dict[int, int]  # the neighbour vote: code -> neighbours
    weight: float
    k: int
    code: int  # the merged choice (-1: none)
    vote: int  # the vote's own winner (-1: none)
    shares: dict[int, float]  # code -> its share of the vote (what the merge weighs)
    temperature: float  # the vote's similarity weighting (0: counts)


def head_vote(names: list[str], head: HeadState) -> HeadVote:
    """A :class:`HeadState` as answered: the classes a neighbour voted for and the head's three
    likeliest, with their parts, best first (the chosen one first among equal scores)."""
    proba = head.proba
    codes = set(head.counts) | {int(c) for c in np.argsort(-proba, kind="stable")[:3]}
    rows = []
    for code in codes:
        votes, share = head.counts.get(code, 0), head.shares.get(code, 0.0)
        prob = float(proba[code])
        score = head.weight * prob + (1.0 - head.weight) * share
        rows.append((-score, code != head.code, names[code], votes, prob, score, share))
    rows.sort()
    return HeadVote(
        field=head.field,
        value=names[head.code] if head.code >= 0 else None,
        vote=names[head.vote] if head.vote >= 0 else None,
        weight=head.weight,
        k=head.k,
        scores=[
            HeadScore(label, votes, round(prob, 4), round(score, 4), round(share, 4))
            for _, _, label, votes, prob, score, share in rows
        ],
        temperature=head.temperature,
    )


@dataclass
class PartState:
    """One element of a query as the engine works on it: embedded, coloured, then voted."""

    source: str
    vector: np.ndarray
    color: dict[str, Any]
    rgb: np.ndarray  # the colour's RGB (mid grey when it has none)
    hsl: np.ndarray  # its HSL, computed once: harmony and the answer use the same values
    color_name: str
    position: int | None = None  # catalogue row when the part is a catalogue item
    category: int = -1
    category_source: CategorySource = "vote"
    # Filled by the vote:
    neighbours: tuple[np.ndarray, np.ndarray] = (np.zeros(0, np.int64), np.zeros(0, np.float32))
    votes: dict[int, int] = field(default_factory=dict)
    gender_weights: dict[int, float] = field(default_factory=dict)  # neighbours' gender vote
    gender_votes: dict[int, int] | None = None
    gender: str | None = None
    usage: str | None = None
    heads: list[HeadState] = field(default_factory=list)  # fields decided with a head
    # The gender stacker's probability of its second gender (None: not used or not modelled).
    gender_stack: float | None = None
    likeness: float | None = None  # photos: to the catalogue (stygig.familiarity)


def query_part(columns: CatalogColumns, part: PartState) -> QueryPart:
    """One query part as answered: what was voted for it and its colour."""
    names = columns.category_names
    items = columns.artifact.items
    ids, sims = part.neighbours
    category = part.category
    return QueryPart(
        source=part.source,
        category=names[category] if category >= 0 else None,
        category_source=part.category_source,
        slot=columns.category_slot_names[category] if category >= 0 else None,
        votes={names[c]: n for c, n in part.votes.items()},
        neighbors=[
            Neighbour(items[i].id, names[columns.category_codes[i]], round(s, 4))
            for i, s in zip(ids.tolist(), sims.tolist(), strict=True)
        ],
        likeness=None if part.likeness is None else round(part.likeness, 4),
        unlike_catalogue=None
        if part.likeness is None or columns.unlike_below is None
        else part.likeness < columns.unlike_below,
        gender=part.gender,
        usage=part.usage,
        gender_votes=None
        if part.gender_votes is None
        else {columns.gender_names[g]: n for g, n in part.gender_votes.items()},
        rgb=[int(v) for v in part.rgb],
        hex=part.color.get("hex"),
        color_name=part.color_name,
        hsl=[round(float(v), 4) for v in part.hsl],
        palette=[
            PaletteColor([int(v) for v in p["rgb"]], str(p["hex"]), float(p["share"]))
            for p in part.color.get("palette", [])
        ],
        heads=[
            head_vote(names if h.field == "category" else columns.usage_names, h)
            for h in part.heads
        ],
    )

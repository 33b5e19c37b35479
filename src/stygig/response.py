"""The answer's parts from the engine's arrays: items with their score parts and reasons, and
query parts with their votes. One builder per type, so an item looks the same everywhere."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from stygig.answer import ItemView, Neighbour, PaletteColor, QueryPart, RecommendedItem
from stygig.columns import CatalogColumns
from stygig.harmony import HARMONY_PHRASES, HARMONY_RULE_NAMES

__all__ = ["ScoreParts", "item_view", "query_part", "recommended_item"]


def item_view(columns: CatalogColumns, pos: int) -> ItemView:
    """Catalogue row ``pos`` as clients see an item."""
    return ItemView(**_item_fields(columns, pos))


def _item_fields(columns: CatalogColumns, pos: int) -> dict[str, Any]:
    item = columns.artifact.items[pos]
    code = int(columns.category_codes[pos])
    return {
        "id": item.id,
        "name": item.name,
        "category": item.category,
        "slot": columns.category_slot_names[code],
        "gender": item.gender,
        "price": item.price,
        "brand": item.brand,
        "rgb": [int(v) for v in columns.rgb[pos]],
        "hex": columns.artifact.colors[pos].get("hex"),
        "hsl": [round(v, 4) for v in columns.hsl[pos].tolist()],
        "color_name": str(columns.color_names[pos]),
    }


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


def recommended_item(
    columns: CatalogColumns,
    parts: ScoreParts,
    j: int,
    *,
    query_category: str,
    query_color: str,
    mode: str,
    use_color: bool,
) -> RecommendedItem:
    """Candidate ``j`` of ``parts`` as an answer item, with why it was chosen."""
    pos = int(parts.cand[j])
    fields = _item_fields(columns, pos)
    sim, factor, rule = float(parts.similarity[j]), float(parts.factor[j]), int(parts.rules[j])
    if mode == "outfit":
        category = fields["category"]
        reason = f"{query_category} -> {category} compatible" if factor > 1 else category
        if use_color:
            pair = f"{query_color} + {columns.color_names[pos]}"
            reason = f"{pair}: {HARMONY_PHRASES[rule]}; {reason}"
    else:
        reason = f"looks similar (cosine {sim:.2f})"
    return RecommendedItem(
        **fields,
        score=round(float(parts.score[j]), 4),
        similarity=round(sim, 4),
        harmony=round(float(parts.harmony[j]), 4),
        harmony_rule=HARMONY_RULE_NAMES[rule] if mode == "outfit" else None,
        boost=round(factor, 4),
        learned=None if parts.learned is None else round(float(parts.learned[j]), 4),
        reason=reason,
    )


def query_part(
    columns: CatalogColumns,
    *,
    source: str,
    category: int,
    category_source: Any,
    neighbours: tuple[np.ndarray, np.ndarray],
    votes: dict[int, int],
    gender: str | None,
    usage: str | None,
    gender_votes: dict[int, int] | None,
    rgb: np.ndarray,
    hsl: np.ndarray,
    color: dict[str, Any],
    color_name: str,
) -> QueryPart:
    """One query part: what was voted for it and its colour (``neighbours``: ids, sims)."""
    names = columns.category_names
    items = columns.artifact.items
    ids, sims = neighbours
    return QueryPart(
        source=source,
        category=names[category] if category >= 0 else None,
        category_source=category_source,
        slot=columns.category_slot_names[category] if category >= 0 else None,
        votes={names[c]: n for c, n in votes.items()},
        neighbors=[
            Neighbour(items[i].id, names[columns.category_codes[i]], round(float(s), 4))
            for i, s in zip(ids.tolist(), sims.tolist(), strict=True)
        ],
        gender=gender,
        usage=usage,
        gender_votes=None
        if gender_votes is None
        else {columns.gender_names[g]: n for g, n in gender_votes.items()},
        rgb=[int(v) for v in rgb],
        hex=color.get("hex"),
        color_name=color_name,
        hsl=[round(float(v), 4) for v in hsl],
        palette=[
            PaletteColor([int(v) for v in p["rgb"]], str(p["hex"]), float(p["share"]))
            for p in color.get("palette", [])
        ],
    )

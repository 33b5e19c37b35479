"""The catalogue as columns: one array per field, and the filters a request may apply to them.

Everything the scoring needs per item (category, slot, gender, usage, colour) is encoded once at
load time, so a request filters and scores 10,000 candidates with a handful of NumPy operations.
Filters are checked against the catalogue's own attributes before any cache is touched: the
per-attribute caches are keyed by attribute names the catalogue has, never by client strings.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from stygig.answer import GenderDecision
from stygig.artifact import Artifact
from stygig.errors import InvalidOptionsError, NotFoundError
from stygig.harmony import describe_colors, rgb_array, rgb_to_hsl
from stygig.recommendation import Options
from stygig.scoring import label_codes

__all__ = ["ITEM_FIELDS", "CatalogColumns"]

#: How many items' answer fields are kept ready (about 1 KB each).
ITEM_FIELDS_CACHE = 50_000
#: The item fields a filter may name, beside the catalogue's own attributes.
ITEM_FIELDS = (
    "id",
    "category",
    "gender",
    "usage",
    "season",
    "name",
    "price",
    "brand",
    "available",
    "stock",
)


class CatalogColumns:
    """Per-item arrays of one artifact, built once (thread-safe for reads).

    Attributes:
        category_names / category_codes: sorted category names and each item's code.
        slot_names / category_slot: outfit slots and each category's slot code.
        compat: ``(categories, categories)`` bool matrix of compatible pairs.
        gender_names / gender_codes, usage_names / usage_codes: as for categories (-1: none).
        rgb / hsl / color_names: each item's dominant colour, its HSL and its name.
        available: whether the shop can sell each item now (stock is first class: an
            unavailable item is never a candidate unless a request asks for it).

    A changed catalogue gets new columns from :meth:`evolve` (copy-on-write: the arrays a
    request is reading are never written).
    """

    def __init__(self, artifact: Artifact) -> None:
        self.artifact = artifact
        taxonomy = artifact.taxonomy
        items = artifact.items
        self.category_names, self.category_codes = label_codes([i.category for i in items])
        self._category_index = {name: n for n, name in enumerate(self.category_names)}
        self.slot_names = sorted({taxonomy.slot_of(c) for c in self.category_names})
        self.category_slot = np.array(
            [self.slot_names.index(taxonomy.slot_of(c)) for c in self.category_names], np.int64
        )
        self.category_slot_names = [taxonomy.slot_of(c) for c in self.category_names]
        self.compat = taxonomy.compatibility_matrix(self.category_names)
        self.gender_names, self.gender_codes = label_codes([i.gender for i in items])
        self.unisex = self.gender_names.index("unisex") if "unisex" in self.gender_names else -2
        # Hedging an unsure gender needs items that fit anyone: unisex or without a gender.
        self.can_hedge = bool(((self.gender_codes == self.unisex) | (self.gender_codes < 0)).any())
        self.usage_names, self.usage_codes = label_codes([i.usage for i in items])
        self.rgb = rgb_array(artifact.colors)
        self.hsl = rgb_to_hsl(self.rgb).astype(np.float32)
        self.color_names = describe_colors(self.rgb)
        self.available = np.array([item.in_stock for item in items], dtype=bool)
        # What a request may filter on: the item fields and every attribute the catalogue has.
        self.filterable = frozenset(ITEM_FIELDS).union(*(item.attributes.keys() for item in items))
        self._fresh_caches()

    def _fresh_caches(self) -> None:
        self._attribute_cache: dict[str, np.ndarray] = {}
        self._numeric_cache: dict[str, np.ndarray] = {}
        # An item's fields as answers show them, made once per item recommended (keyed by row,
        # so bounded by the catalogue; the LRU bounds memory for very large ones). A changed
        # catalogue gets a new, empty one (:meth:`evolve`).
        self.item_fields = functools.lru_cache(maxsize=ITEM_FIELDS_CACHE)(self._item_fields)

    def evolve(self, artifact: Artifact, rows: Sequence[int]) -> CatalogColumns:
        """The columns of ``artifact``, this one's catalogue with ``rows`` changed or appended
        (rows past this one's end are new): only those rows are derived again; every array
        is a copy, so requests reading this one are undisturbed. A label this catalogue has
        never seen (a new category, gender or usage) rebuilds them all."""
        items = artifact.items
        changed = np.asarray(sorted(set(rows)), dtype=np.int64)
        fresh = [items[int(r)] for r in changed]
        labels = (
            (self.category_names, [i.category for i in fresh]),
            (self.gender_names, [i.gender for i in fresh if i.gender is not None]),
            (self.usage_names, [i.usage for i in fresh if i.usage is not None]),
        )
        if any(not set(new) <= set(names) for names, new in labels):
            return CatalogColumns(artifact)
        out = copy.copy(self)
        out.artifact = artifact
        n = len(items)

        def grown(values: np.ndarray, fill: Any) -> np.ndarray:
            more = n - len(values)
            tail = np.full((more, *values.shape[1:]), fill, dtype=values.dtype)
            return np.concatenate([values, tail]) if more > 0 else values.copy()

        out.category_codes = grown(self.category_codes, -1)
        out.gender_codes = grown(self.gender_codes, -1)
        out.usage_codes = grown(self.usage_codes, -1)
        out.rgb = grown(self.rgb, 0)
        out.hsl = grown(self.hsl, 0)
        out.color_names = grown(self.color_names.astype(object), "")
        out.available = grown(self.available, False)
        if len(changed):
            cat_index = self._category_index
            out.category_codes[changed] = [cat_index[i.category] for i in fresh]
            out.gender_codes[changed] = [_code(self.gender_names, i.gender) for i in fresh]
            out.usage_codes[changed] = [_code(self.usage_names, i.usage) for i in fresh]
            rgb = rgb_array([artifact.colors[int(r)] for r in changed])
            out.rgb[changed] = rgb
            out.hsl[changed] = rgb_to_hsl(rgb).astype(np.float32)
            out.color_names[changed] = describe_colors(rgb)
            out.available[changed] = [i.in_stock for i in fresh]
        out.can_hedge = bool(((out.gender_codes == out.unisex) | (out.gender_codes < 0)).any())
        out.filterable = self.filterable.union(*(i.attributes.keys() for i in fresh))
        out._fresh_caches()
        return out

    def _item_fields(self, pos: int) -> dict[str, Any]:
        """Row ``pos``'s :class:`~stygig.answer.ItemView` fields (callers must not mutate)."""
        item = self.artifact.items[pos]
        return {
            "id": item.id,
            "name": item.name,
            "category": item.category,
            "slot": self.category_slot_names[int(self.category_codes[pos])],
            "gender": item.gender,
            "price": item.price,
            "brand": item.brand,
            "rgb": [int(v) for v in self.rgb[pos]],
            "hex": self.artifact.colors[pos].get("hex"),
            "hsl": [round(v, 4) for v in self.hsl[pos].tolist()],
            "color_name": str(self.color_names[pos]),
            "available": bool(self.available[pos]),
        }

    def position(self, item_id: str) -> int:
        """The catalogue row of ``item_id`` (:class:`NotFoundError`, 404, when unknown)."""
        pos = self.artifact.positions.get(item_id)
        if pos is None:
            raise NotFoundError("an item id is not in the catalogue", code="unknown_item")
        return pos

    def category_code(self, name: str) -> int | None:
        """The code of a category given in any spelling the taxonomy knows (None: not here).

        Raises :class:`InvalidOptionsError` when the taxonomy does not know the name at all.
        """
        canonical = self.artifact.taxonomy.canonical(name)
        if canonical is None:
            raise InvalidOptionsError("a category is not in the taxonomy")
        return self._category_index.get(canonical)

    def check(self, options: Options) -> None:
        """Refuse options this catalogue cannot answer, before any photo is decoded: unknown
        filter attributes, categories and genders (error messages never repeat them)."""
        unknown = [name for name in options.filters if name not in self.filterable]
        if unknown:
            raise InvalidOptionsError(
                f"{len(unknown)} filter(s) name no attribute of this catalogue; "
                f"filterable: {sorted(self.filterable)}"
            )
        if options.category is not None:
            try:
                code = self.category_code(options.category)
            except InvalidOptionsError:
                code = None
            if code is None:
                raise InvalidOptionsError(
                    "the stated category is not in this catalogue; "
                    f"known: {', '.join(self.category_names)}"
                )
        if options.gender and options.gender.lower() not in self.gender_names:
            raise InvalidOptionsError(
                f"the stated gender is not in this catalogue; known: {self.gender_names}"
            )
        for name in ("include_categories", "exclude_categories"):
            for cat in getattr(options, name):
                if self.artifact.taxonomy.canonical(cat) is None:
                    raise InvalidOptionsError(f"{name}: a category is not in the taxonomy")

    def filter_mask(
        self,
        options: Options,
        gender: GenderDecision,
        excluded_rows: Sequence[int],
        removed: np.ndarray | None,
        rows: np.ndarray | None = None,
    ) -> np.ndarray:
        """Which items pass every filter: over the whole catalogue, or over ``rows`` only.

        ``excluded_rows`` are never candidates (the query's own items); ``removed`` marks rows
        taken out of the index.
        """
        n = len(self.category_codes) if rows is None else len(rows)
        sel: slice | np.ndarray = slice(None) if rows is None else rows
        mask = np.ones(n, dtype=bool) if removed is None else ~removed[sel]
        if not options.include_unavailable:
            mask &= self.available[sel]
        if (gender.value and gender.value != "unisex") or gender.hedged:
            codes = self.gender_codes[sel]
            # The same gender (none when hedging), unisex, or items without a gender (-1).
            fits = (codes == self.unisex) | (codes < 0)
            if gender.value:
                fits |= codes == self.gender_names.index(gender.value)
            mask &= fits
        for name, include in (("include_categories", True), ("exclude_categories", False)):
            wanted = getattr(options, name)
            if wanted:
                codes_wanted = [c for c in map(self.category_code, wanted) if c is not None]
                hit = np.isin(self.category_codes[sel], codes_wanted)
                mask &= hit if include else ~hit
        positions = self.artifact.positions
        excluded = [positions[i] for i in options.exclude_ids if i in positions]
        excluded += list(excluded_rows)
        if excluded:
            if rows is None:
                mask[excluded] = False
            else:
                mask &= ~np.isin(rows, excluded)
        for name, cond in options.filters.items():
            mask &= self._attribute_mask(name, cond)[sel]
        return mask

    def _attribute_mask(self, name: str, cond: Any) -> np.ndarray:
        if isinstance(cond, dict):
            # Options validated the shape: {"min"?: number, "max"?: number}.
            values = self._numeric_values(name)
            ok: np.ndarray = ~np.isnan(values)
            if "min" in cond:
                ok &= values >= float(cond["min"])
            if "max" in cond:
                ok &= values <= float(cond["max"])
            return ok
        wanted = cond if isinstance(cond, list) else [cond]
        return np.isin(self._attribute_values(name), [str(w).strip().lower() for w in wanted])

    def _numeric_values(self, name: str) -> np.ndarray:
        """``name`` of every item as a float (NaN where missing or not a number), cached."""
        cached = self._numeric_cache.get(name)
        if cached is None:
            cached = np.array([_to_float(v) for v in self._attribute_values(name)], np.float64)
            self._numeric_cache[name] = cached
        return cached

    def _attribute_values(self, name: str) -> np.ndarray:
        cached = self._attribute_cache.get(name)
        if cached is None:
            values = []
            for item in self.artifact.items:
                raw = getattr(item, name) if name in ITEM_FIELDS else item.attributes.get(name)
                values.append(None if raw is None else str(raw).strip().lower())
            cached = np.array(values, dtype=object)
            self._attribute_cache[name] = cached
        return cached


def _code(names: Sequence[str], value: str | None) -> int:
    return -1 if value is None else list(names).index(value)


def _to_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")

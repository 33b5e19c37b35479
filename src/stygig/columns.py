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
from stygig.familiarity import unlike_threshold
from stygig.harmony import describe_colors, rgb_array, rgb_to_hsl
from stygig.recommendation import Options
from stygig.rows import SpareRows
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


#: Item fields that hold numbers: a filter on them compares numbers.
_NUMBER_FIELDS = frozenset({"price", "stock"})
_BOOLS = frozenset({"true", "false"})


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
        self.color_names = _color_names(artifact.colors, self.rgb)
        self.available = np.array([item.in_stock for item in items], dtype=bool)
        # What a request may filter on: the item fields and every attribute the catalogue has.
        self.filterable = frozenset(ITEM_FIELDS).union(*(item.attributes.keys() for item in items))
        # A photo whose nearest item is less similar than this is unlike the catalogue.
        self.unlike_below = unlike_threshold(artifact.manifest.get("nearest_similarity"))
        self._spare: dict[Any, SpareRows] = {}  # column -> its backing rows (see evolve)
        self._fresh_caches()

    def _fresh_caches(self) -> None:
        self._genders_held: tuple[int, list[str]] | None = None  # (index.n_removed, genders)
        self._attribute_cache: dict[str, np.ndarray] = {}
        self._numeric_cache: dict[str, np.ndarray] = {}
        # An item's fields as answers show them, made once per item recommended (keyed by row,
        # so bounded by the catalogue; the LRU bounds memory for very large ones). A changed
        # catalogue gets a new, empty one (:meth:`evolve`).
        self.item_fields = functools.lru_cache(maxsize=ITEM_FIELDS_CACHE)(self._item_fields)

    @property
    def genders_held(self) -> list[str]:
        """The genders some live row has, sorted: what a request may state or filter on and
        what the catalogue lists. A removed or replaced row keeps its labels until
        compaction (they count towards the living catalogue's bounds), but they are no
        longer the catalogue's (review, session 49: a removed item's gender was listed and
        accepted). Counted again when rows leave the index in place (evaluation holds rows
        out so: a list counted before kept their genders)."""
        index = self.artifact.index
        if self._genders_held is None or self._genders_held[0] != index.n_removed:
            codes = self.gender_codes
            if index.n_removed and index.removed is not None:
                codes = codes[~index.removed[: len(codes)]]
            held = np.bincount(codes[codes >= 0], minlength=len(self.gender_names)) > 0
            names = [n for n, h in zip(self.gender_names, held.tolist(), strict=True) if h]
            self._genders_held = (index.n_removed, names)
        return self._genders_held[1]

    def evolve(self, artifact: Artifact, rows: Sequence[int]) -> CatalogColumns:
        """The columns of ``artifact``, this one's catalogue with ``rows`` changed or appended
        (rows past this one's end are new): only those rows are derived again.

        Copy-on-write, at the cost of what changed rather than of the catalogue: a column
        whose existing rows change (a stock change: ``available``) is copied, every other
        column is shared; appended rows are written into a column's spare capacity, past the
        end of every published view (:class:`SpareRows`), so a stream of adds copies nothing of
        the catalogue's size (amortised; a full buffer doubles). The filter caches (attribute
        values) move along the same way, so the first filtered request after a change does
        not walk every item again. A label this catalogue has never seen (a new category,
        gender or usage) rebuilds them all."""
        items = artifact.items
        changed = sorted(set(rows))
        fresh = [items[r] for r in changed]
        labels = (
            (self.category_names, [i.category for i in fresh]),
            (self.gender_names, [i.gender for i in fresh if i.gender is not None]),
            (self.usage_names, [i.usage for i in fresh if i.usage is not None]),
        )
        if any(not set(new) <= set(names) for names, new in labels):
            return CatalogColumns(artifact)
        out = copy.copy(self)
        out.artifact = artifact
        n_old, n = len(self.category_codes), len(items)
        inside = [r for r in changed if r < n_old]  # existing rows changed in place
        tail = [items[r] for r in range(n_old, n)]  # appended rows
        # A change never recolours a row in place (a new photo is a new row), so only
        # appended rows need colours.
        new_colors = artifact.colors[n_old:n]
        rgb = rgb_array(new_colors) if new_colors else self.rgb[:0]
        hsl = rgb_to_hsl(rgb).astype(np.float32) if new_colors else self.hsl[:0]
        names = _color_names(new_colors, rgb)
        out._spare = dict(self._spare)
        out._set(
            "category_codes",
            inside,
            [self._category_index[items[r].category] for r in inside],
            [self._category_index[i.category] for i in tail],
        )
        out._set(
            "gender_codes",
            inside,
            [_code(self.gender_names, items[r].gender) for r in inside],
            [_code(self.gender_names, i.gender) for i in tail],
        )
        out._set(
            "usage_codes",
            inside,
            [_code(self.usage_names, items[r].usage) for r in inside],
            [_code(self.usage_names, i.usage) for i in tail],
        )
        out._set(
            "available", inside, [items[r].in_stock for r in inside], [i.in_stock for i in tail]
        )
        out._set("rgb", (), rgb[:0], rgb)
        out._set("hsl", (), hsl[:0], hsl)
        out._set("color_names", (), names[:0], names)
        if out.gender_codes is not self.gender_codes:
            hedge = (out.gender_codes == out.unisex) | (out.gender_codes < 0)
            out.can_hedge = bool(hedge.any())
        out.filterable = self.filterable.union(*(i.attributes.keys() for i in fresh))
        attribute_cache = dict(list(self._attribute_cache.items()))
        numeric_cache = dict(list(self._numeric_cache.items()))
        out._fresh_caches()
        for name, _ in attribute_cache.items():
            out._attribute_cache[name] = out._evolved_cache(
                ("attribute", name),
                attribute_cache[name],
                inside,
                [_attribute_of(items[r], name) for r in inside],
                [_attribute_of(i, name) for i in tail],
            )
        for name, values in numeric_cache.items():
            out._numeric_cache[name] = out._evolved_cache(
                ("numeric", name),
                values,
                inside,
                [_to_float(_attribute_of(items[r], name)) for r in inside],
                [_to_float(_attribute_of(i, name)) for i in tail],
            )
        return out

    def _set(self, name: str, rows: Sequence[int], values: Any, appended: Any) -> None:
        """Column ``name`` with ``values`` at existing ``rows`` and ``appended`` after its end
        (on this new object only: the column is copied when its rows change, shared else)."""
        setattr(self, name, self._evolved(name, getattr(self, name), rows, values, appended))

    def _evolved_cache(
        self,
        key: tuple[str, str],
        values: np.ndarray,
        rows: Sequence[int],
        new: list[Any],
        appended: list[Any],
    ) -> np.ndarray:
        return self._evolved(
            key, values, rows, np.asarray(new, values.dtype), np.asarray(appended, values.dtype)
        )

    def _evolved(
        self, key: Any, column: np.ndarray, rows: Sequence[int], values: Any, appended: Any
    ) -> np.ndarray:
        values = np.asarray(values, dtype=column.dtype)
        if len(rows):
            floats = column.dtype.kind == "f"  # NaN (a missing number) equals NaN here
            if np.array_equal(column[list(rows)], values, equal_nan=floats):
                rows = ()  # nothing in place changes (a price update: no column moves)
        more = len(appended)
        if not len(rows) and not more:
            return column
        n = len(column)
        spare = self._spare.get(key)
        if len(rows) or spare is None or not spare.extends(column, more):
            spare = SpareRows.around(column, more)
            self._spare[key] = spare
        view = spare.append(
            n, np.asarray(appended, dtype=column.dtype).reshape(more, *column.shape[1:])
        )
        if len(rows):
            view[list(rows)] = values
        return view

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

    def position(self, item_id: str, where: str | None = None) -> int:
        """The catalogue row of ``item_id`` (:class:`NotFoundError`, 404, when unknown; the
        message names ``where`` the id was given, e.g. ``item_ids[2]``, never the id)."""
        pos = self.artifact.positions.get(item_id)
        if pos is None:
            said = f"{where}: " if where else ""
            raise NotFoundError(f"{said}an item id is not in the catalogue", code="unknown_item")
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
                f"filterable: {_listed(sorted(self.filterable))}"
            )
        for name, cond in options.filters.items():
            problem = self._filter_problem(name, cond)
            if problem is not None:  # it could match nothing: a 200 with no items before
                raise InvalidOptionsError(f"filters.{name}: {problem}")
        if options.category is not None:
            try:
                code = self.category_code(options.category)
            except InvalidOptionsError:
                code = None
            if code is None:
                raise InvalidOptionsError(
                    "the stated category is not in this catalogue; "
                    f"known: {_listed(self.category_names)}"
                )
        if options.gender and options.gender.lower() not in self.genders_held:
            raise InvalidOptionsError(
                f"the stated gender is not in this catalogue; known: {_listed(self.genders_held)}"
            )
        for name in ("include_categories", "exclude_categories"):
            for cat in getattr(options, name):
                if self.artifact.taxonomy.canonical(cat) is None:
                    raise InvalidOptionsError(f"{name}: a category is not in the taxonomy")

    def _filter_problem(self, name: str, cond: Any) -> str | None:
        """Why filter ``name`` (a filterable name) is a mistake rather than a wish this
        catalogue cannot meet: a range on a field of which no item holds a number, a number
        field given text, a category the taxonomy does not know, ``available`` other than
        true or false (review, session 45: each answered 200 with no items, as "nothing in
        stock" would)."""
        if isinstance(cond, dict):
            if name not in _NUMBER_FIELDS and np.isnan(self._numeric_values(name)).all():
                return "a range ({min, max}) needs a field of numbers; this one holds none"
            return None
        values = cond if isinstance(cond, list) else [cond]
        if name in _NUMBER_FIELDS and any(np.isnan(_to_float(v)) for v in values):
            return f"{name} is a number: give numbers or a range {{min, max}}"
        if name == "available" and any(str(v).strip().lower() not in _BOOLS for v in values):
            return "available is true or false"
        if name == "category":
            taxonomy = self.artifact.taxonomy
            if any(taxonomy.canonical(str(v)) is None for v in values):
                return "a category is not in the taxonomy"
        return None

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
        # A gender voted "unisex" from a photo goes with anything; a shopper who states
        # "unisex" asks for unisex items (review, s38: it filtered nothing).
        stated_unisex = gender.value == "unisex" and gender.source == "stated"
        if (gender.value and gender.value != "unisex") or gender.hedged or stated_unisex:
            codes = self.gender_codes[sel]
            # The same gender (none when hedging), unisex, or items without a gender (-1).
            fits = (codes == self.unisex) | (codes < 0)
            if gender.value and gender.value in self.gender_names:
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
        wanted = [str(w).strip().lower() for w in (cond if isinstance(cond, list) else [cond])]
        hit: np.ndarray = np.isin(self._attribute_values(name), wanted)
        # A number matches by value (price 40 is the item's 40.0; "34.90" its 34.9), as a
        # range does; text compares as text.
        numbers = [f for f in map(_to_float, wanted) if not np.isnan(f)]
        if numbers:
            hit |= np.isin(self._numeric_values(name), numbers)
        return hit

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
            cached = np.array([_attribute_of(item, name) for item in self.artifact.items], object)
            self._attribute_cache[name] = cached
        return cached


def _color_names(colors: Sequence[dict[str, Any]], rgb: np.ndarray) -> np.ndarray:
    """Each colour's name as its summary reported it (a photo's name agrees with its family,
    which comes from the whole photo), else the name of its RGB alone."""
    names = np.asarray([c.get("name") for c in colors], dtype=object)
    missing = np.flatnonzero(names == None)  # noqa: E711 (element-wise)
    if len(missing):
        names[missing] = describe_colors(rgb[missing])
    return names


def _attribute_of(item: Any, name: str) -> str | None:
    """An item's value of filterable field ``name``, as filters compare it (None: none)."""
    if name == "available":  # what the answer shows as "available": stock counted too
        return str(bool(item.in_stock)).lower()
    raw = getattr(item, name) if name in ITEM_FIELDS else item.attributes.get(name)
    return None if raw is None else str(raw).strip().lower()


def _code(names: Sequence[str], value: str | None) -> int:
    return -1 if value is None else list(names).index(value)


def _to_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _listed(names: Sequence[str], most: int = 40) -> str:
    """``names`` for a message, the first ``most`` of them (GET /v1/config lists them all)."""
    shown = ", ".join(names[:most])
    return shown if len(names) <= most else f"{shown} and {len(names) - most} more"

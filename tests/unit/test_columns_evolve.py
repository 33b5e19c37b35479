"""Columns of a changed catalogue: derived again only where rows changed, never written in place.

``CatalogColumns.evolve`` must give exactly what a fresh ``CatalogColumns`` of the changed
catalogue gives (the oracle), leave the columns earlier snapshots read untouched, and share
what did not change (a stock change copies ``available`` and nothing else of the catalogue's
size; appends write into spare capacity).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from stygig.answer import GenderDecision
from stygig.artifact import Artifact
from stygig.catalog.changes import CatalogChange
from stygig.columns import CatalogColumns
from stygig.recommendation import Options
from stygig.snapshot import CatalogSnapshot, apply_changes, snapshot_of

COLUMNS = ("category_codes", "gender_codes", "usage_codes", "available", "rgb", "hsl")


@pytest.fixture(scope="module")
def first(sample: tuple[Path, Path]) -> CatalogSnapshot:
    art = Artifact.load(sample[1])
    return snapshot_of(art, encoder=art.manifest["encoder"]["name"], compat_mode="rules")


def _frozen(cols: CatalogColumns) -> dict[str, np.ndarray]:
    return {name: getattr(cols, name).copy() for name in (*COLUMNS, "color_names")}


def _same_as_fresh(snap: CatalogSnapshot) -> None:
    fresh = CatalogColumns(snap.artifact)
    for name in (*COLUMNS, "color_names"):
        np.testing.assert_array_equal(getattr(snap.columns, name), getattr(fresh, name), name)
    assert snap.columns.can_hedge == fresh.can_hedge
    assert snap.columns.filterable == fresh.filterable
    for name in ("fit", "brand", "price"):
        np.testing.assert_array_equal(
            snap.columns._attribute_values(name), fresh._attribute_values(name), name
        )
        np.testing.assert_array_equal(
            snap.columns._numeric_values(name), fresh._numeric_values(name), name
        )


def _add(snap: CatalogSnapshot, item_id: str, like: int, **fields: object) -> CatalogChange:
    art = snap.artifact
    item = dataclasses.replace(art.items[like], id=item_id, **fields)  # type: ignore[arg-type]
    color = {**art.colors[(like + 1) % len(art.colors)]}  # another item's colour
    return CatalogChange("add", item_id, item=item, vector=art.embeddings[like], color=color)


def test_evolved_columns_equal_a_fresh_build_and_never_move_under_a_reader(
    first: CatalogSnapshot,
) -> None:
    snap = first
    # Warm the filter caches, so that they must move along with the changes.
    for name in ("fit", "brand", "price"):
        snap.columns._attribute_values(name)
        snap.columns._numeric_values(name)
    ids = [i.id for i in snap.artifact.items]
    steps = [
        [CatalogChange("update", ids[0], fields={"stock": 0})],
        [CatalogChange("update", ids[1], fields={"price": 7.5, "fit": "Slim"})],
        [_add(snap, "new-1", 2, gender="unisex"), _add(snap, "new-2", 3)],
        [CatalogChange("remove", ids[4])],
        [CatalogChange("update", "new-1", fields={"stock": 0, "brand": "Acme"})],
        [_add(snap, ids[5], 6)],  # a replacement: the row moves to the end
        [_add(snap, f"bulk-{n}", n % 7) for n in range(40)],
    ]
    history: list[tuple[CatalogSnapshot, dict[str, np.ndarray]]] = []
    for seq, changes in enumerate(steps, start=1):
        history.append((snap, _frozen(snap.columns)))
        snap = apply_changes(snap, changes, seq)
        _same_as_fresh(snap)
    # Every earlier snapshot still reads exactly what it read when it was published.
    for old, frozen in history:
        for name, values in frozen.items():
            np.testing.assert_array_equal(getattr(old.columns, name), values, name)
    assert snap.columns._attribute_values("fit")[snap.artifact.positions[ids[1]]] == "slim"
    mask = snap.columns.filter_mask(
        Options(filters={"brand": "acme"}, include_unavailable=True),
        GenderDecision(value=None, source="none"),
        (),
        None,
    )
    assert np.flatnonzero(mask).tolist() == [snap.artifact.positions["new-1"]]


def test_a_stock_change_copies_one_column_and_appends_copy_nothing(
    first: CatalogSnapshot,
) -> None:
    ids = [i.id for i in first.artifact.items]
    sold = apply_changes(first, [CatalogChange("update", ids[0], fields={"stock": 0})], 1)
    before, after = first.columns, sold.columns
    assert after.available is not before.available and not after.available[0]
    for name in ("category_codes", "gender_codes", "usage_codes", "rgb", "hsl", "color_names"):
        assert getattr(after, name) is getattr(before, name), name
    # A number filter's cache holds NaN where an item has no such number: a change that
    # leaves the row's value missing still shares the cache (NaN equals NaN there).
    cached = after._numeric_values("fit")
    assert np.isnan(cached).all()
    priced = apply_changes(sold, [CatalogChange("update", ids[1], fields={"price": 3.0})], 2)
    assert priced.columns.available is after.available  # nothing a column holds changed
    assert priced.columns._numeric_values("fit") is cached
    # Appends land in spare capacity: the next add shares its predecessor's buffer.
    one = apply_changes(priced, [_add(priced, "a-1", 0)], 3)
    two = apply_changes(one, [_add(one, "a-2", 1)], 4)
    for name in COLUMNS:
        grown, longer = getattr(one.columns, name), getattr(two.columns, name)
        assert np.shares_memory(grown, longer), name
        assert len(longer) == len(grown) + 1
    # A branch from an older snapshot (never done by the writer, but it must stay safe)
    # cannot write into rows a published view already shows.
    published = np.array(two.artifact.embeddings[-1])
    branch = apply_changes(one, [_add(one, "b-1", 2)], 4)
    np.testing.assert_array_equal(two.artifact.embeddings[-1], published)
    np.testing.assert_array_equal(branch.artifact.embeddings[-1], one.artifact.embeddings[2])
    assert (
        two.artifact.items[-1].id == "a-2"
        and two.columns.category_codes[-1] == (CatalogColumns(two.artifact).category_codes[-1])
    )
    _same_as_fresh(two)
    _same_as_fresh(branch)

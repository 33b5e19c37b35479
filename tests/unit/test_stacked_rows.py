"""A memory-mapped artifact stays mapped when items are added while serving."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import numpy as np
import pytest

from stygig.artifact import Artifact
from stygig.catalog.changelog import ChangeLog
from stygig.catalog.changes import parse_change
from stygig.compaction import compact
from stygig.engine import Options, Query, Recommender
from stygig.living import LiveCatalog
from stygig.rows import StackedRows


def test_stacked_rows_read_like_one_array(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    whole = rng.standard_normal((30, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", whole[:20])
    rows = StackedRows(np.load(tmp_path / "x.npy", mmap_mode="r"), whole[20:])
    assert len(rows) == 30 and rows.shape == (30, 4) and rows.dtype == np.float32
    for key in (0, 19, 20, 29, -1, -11):
        np.testing.assert_array_equal(rows[key], whole[key])
    for key in (slice(0, 5), slice(18, 23), slice(21, 30), slice(None), slice(1, 29, 3)):
        np.testing.assert_array_equal(rows[key], whole[key])
    picks = np.array([29, 0, 20, 19, 5, 25, -1])
    np.testing.assert_array_equal(rows[picks], whole[picks])
    np.testing.assert_array_equal(rows[whole[:, 0] > 0], whole[whole[:, 0] > 0])
    np.testing.assert_array_equal(np.asarray(rows), whole)
    assert rows[[]].shape == (0, 4)
    for bad in (30, -31, np.array([0, 30]), np.ones(29, bool)):
        with pytest.raises(IndexError):
            rows[bad]
    for wrong in (True, (0, 1), np.array([0.5])):  # numpy would refuse these too
        with pytest.raises(TypeError):
            rows[wrong]


def _live(sample: tuple[Path, Path], root: Path, mmap: bool) -> LiveCatalog:
    art = root / "artifact"
    shutil.copytree(sample[1], art)
    return LiveCatalog(Recommender(Artifact.load(art, mmap=mmap)), ChangeLog(root / "log"))


def test_adds_keep_a_mapped_artifact_mapped_with_the_same_answers(
    sample: tuple[Path, Path], tmp_path: Path
) -> None:
    mapped = _live(sample, tmp_path / "mapped", mmap=True)
    resident = _live(sample, tmp_path / "resident", mmap=False)
    assert isinstance(mapped.recommender.artifact.embeddings, np.memmap)
    photos = sorted((sample[0] / "queries").glob("*.jpg"))
    for n, photo in enumerate(photos[:6]):
        change = {
            "op": "add",
            "item": {"id": f"new-{n}", "category": "jeans", "gender": "men"},
            "image_b64": base64.b64encode(photo.read_bytes()).decode(),
        }
        for live in (mapped, resident):
            live.submit([parse_change(change)])
    first = mapped.recommender.artifact.items[0].id
    for live in (mapped, resident):  # a replacement of a mapped row and a removal
        live.submit([parse_change({"op": "update", "id": first, "set": {"category": "hat"}})])
        live.submit([parse_change({"op": "remove", "id": "new-1"})])
    emb = mapped.recommender.artifact.embeddings
    assert isinstance(emb, StackedRows) and isinstance(emb.base, np.memmap)
    assert len(emb.tail) == 7  # six adds and the moved row, in memory; the rest still mapped
    np.testing.assert_array_equal(
        np.asarray(emb), np.asarray(resident.recommender.artifact.embeddings)
    )
    for photo in photos:
        query = Query(images=(photo.read_bytes(),))
        for options in (Options(), Options(mode="similar", k_total=20)):
            a = mapped.recommender.recommend(query, options)
            b = resident.recommender.recommend(query, options)
            assert [(i.id, i.score) for i in a.items] == [(i.id, i.score) for i in b.items]
    out = compact(mapped.recommender.artifact.path, mapped.changelog, tmp_path / "v2")  # type: ignore[arg-type]
    assert out["items"] == len(mapped.recommender.snapshot.artifact.positions)
    again = Artifact.load(tmp_path / "v2")
    assert "new-0" in again.positions and "new-1" not in again.positions

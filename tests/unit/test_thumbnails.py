"""Thumbnails: made from the decoded photo, stored in two artifact files, read back lazily."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stygig.errors import ArtifactError
from stygig.features import prepare_image
from stygig.images import PreprocessSpec
from stygig.thumbnails import (
    THUMBNAIL_SIDE,
    THUMBNAILS_BIN,
    THUMBNAILS_INDEX,
    ItemImages,
    make_thumbnail,
    write_thumbnails,
)
from tests.conftest import encode, garment_image


def _open(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


@pytest.mark.parametrize("size", [(600, 900), (900, 600), (100, 80), (256, 256)])
def test_thumbnail_is_a_square_jpeg_of_the_whole_photo(size: tuple[int, int]) -> None:
    photo = garment_image((30, 60, 160), size)
    thumb = _open(make_thumbnail(photo))
    assert thumb.format == "JPEG" and thumb.size == (THUMBNAIL_SIDE, THUMBNAIL_SIDE)
    arr = np.asarray(thumb, dtype=np.int16)
    # padded with the photo's own background, and the garment is still in the middle
    assert np.abs(arr[2, 2] - 250).max() < 12
    assert np.abs(arr[128, 128] - (30, 60, 160)).max() < 16


@pytest.mark.parametrize("size", [(4000, 200), (200, 4000)])
def test_thumbnail_of_the_most_elongated_accepted_photo(size: tuple[int, int]) -> None:
    """20:1, the limit decode_image accepts: the whole strip, 13 px thick, centred and padded."""
    thumb = np.asarray(_open(make_thumbnail(garment_image((30, 60, 160), size))), dtype=np.int16)
    assert thumb.shape == (THUMBNAIL_SIDE, THUMBNAIL_SIDE, 3)
    assert np.abs(thumb[128, 128] - (30, 60, 160)).max() < 24
    # 20 px from the centre is outside the 13 px strip: the photo's own background
    off = (128, 108) if size[0] < size[1] else (108, 128)
    assert np.abs(thumb[off] - 250).max() < 12


def test_thumbnail_converts_other_modes() -> None:
    grey = Image.new("L", (300, 200), 90)
    assert _open(make_thumbnail(grey)).mode == "RGB"


def test_prepare_image_makes_the_thumbnail_only_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(encode(garment_image((200, 30, 30), (320, 480))))
    spec = PreprocessSpec(size=32)
    plain = prepare_image(path, spec)
    with_thumb = prepare_image(path, spec, thumbnail=True)
    assert plain.thumbnail is None
    assert with_thumb.thumbnail is not None and _open(with_thumb.thumbnail).size == (256, 256)
    assert np.array_equal(plain.tensor, with_thumb.tensor) and plain.color == with_thumb.color
    assert "thumbnail" in with_thumb.timings_ms


def test_written_thumbnails_are_read_back_by_id(tmp_path: Path) -> None:
    red = make_thumbnail(garment_image((200, 30, 30)))
    blue = make_thumbnail(garment_image((30, 30, 200)))
    write_thumbnails(tmp_path, [("sku-1", red), ("sku-2", None), ("sku-3", blue)])
    index = json.loads((tmp_path / THUMBNAILS_INDEX).read_text())
    assert index["count"] == 2 and set(index["items"]) == {"sku-1", "sku-3"}
    assert (tmp_path / THUMBNAILS_BIN).stat().st_size == len(red) + len(blue)
    images = ItemImages(tmp_path)
    assert images.stored
    assert images.get("sku-1") == red and images.get("sku-3") == blue
    assert images.get("sku-2") is None and images.get("unknown") is None


def test_artifacts_without_thumbnails_fall_back_to_the_original_photo(tmp_path: Path) -> None:
    photo = tmp_path / "a.jpg"
    photo.write_bytes(encode(garment_image((20, 120, 60), (400, 300))))
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    images = ItemImages(
        tmp_path,
        {
            "a": str(photo),
            "gone": str(tmp_path / "missing.jpg"),
            "bad": str(tmp_path / "broken.jpg"),
        },
        cache_size=1,
    )
    assert not images.stored
    first = images.get("a")
    assert first is not None and _open(first).size == (256, 256)
    assert images.get("a") == first  # cached
    assert images.get("gone") is None and images.get("bad") is None


def test_a_corrupt_index_is_an_artifact_error(tmp_path: Path) -> None:
    (tmp_path / THUMBNAILS_INDEX).write_text("{not json")
    with pytest.raises(ArtifactError):
        ItemImages(tmp_path).get("x")
    (tmp_path / THUMBNAILS_INDEX).write_text(json.dumps({"items": {"x": [0, 10]}}))
    with pytest.raises(ArtifactError, match="cannot be read"):  # the index without its file
        ItemImages(tmp_path)
    (tmp_path / THUMBNAILS_BIN).write_bytes(b"short")
    with pytest.raises(ArtifactError):
        ItemImages(tmp_path).get("x")
    # Review (s51): a tampered index loaded, then each request for the item was a 500 (a list,
    # 1e400, a negative offset, deep nesting) or asked for a 4 GB buffer. Refused when opened.
    (tmp_path / THUMBNAILS_BIN).write_bytes(bytes(100))
    for items in (
        [[0, 10]],
        {"x": [1e400, 10]},
        {"x": [-100, 10]},
        {"x": [0, 4_000_000_000]},
        {"x": [0, 0]},
        {"x": [95, 10]},
        {"x": [0.0, 10]},
        {"x": [True, 10]},
        {"x": [0]},
    ):
        (tmp_path / THUMBNAILS_INDEX).write_text(json.dumps({"items": items}))
        with pytest.raises(ArtifactError, match="cannot be read"):
            ItemImages(tmp_path)
    (tmp_path / THUMBNAILS_INDEX).write_text('{"items": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(ArtifactError, match="cannot be read"):
        ItemImages(tmp_path)


def test_a_folder_replaced_in_place_keeps_serving_the_pictures_it_was_opened_with(
    tmp_path: Path,
) -> None:
    """Review (s51): a rebuild or compaction into the served folder made an item's picture a
    slice of another's (old offsets, the new file) until the server reloaded."""
    served, fresh = tmp_path / "served", tmp_path / "fresh"
    for root, first, second in ((served, b"A" * 30, b"B" * 20), (fresh, b"C" * 5, b"D" * 50)):
        root.mkdir()
        (root / THUMBNAILS_BIN).write_bytes(first + second)
        spans = {"x": [0, len(first)], "y": [len(first), len(second)]}
        (root / THUMBNAILS_INDEX).write_text(json.dumps({"items": spans}))
    images = ItemImages(served)
    old = tmp_path / "old"
    served.rename(old)  # as write_artifact swaps a folder: the old one moves away
    fresh.rename(served)
    assert images.get("x") == b"A" * 30 and images.get("y") == b"B" * 20
    assert ItemImages(served).get("y") == b"D" * 50


def test_a_shelf_keeps_its_thumbnails_only_while_they_are_its_versions(
    sample: tuple[Path, Path],
) -> None:
    """A change keeps the artifact version, so its thumbnails; a version reloaded into the
    same folder (another thumbnails checksum) opens its own, not the old version's files."""
    from dataclasses import replace

    from stygig.engine import Recommender
    from stygig.serving.catalog_api import _Shelf

    rec = Recommender.from_path(sample[1])
    first = _Shelf.of(rec, rec.snapshot, None)
    assert first.images.stored
    assert _Shelf.of(rec, rec.snapshot, first).images is first.images
    older = replace(first, etag_seed="another version's thumbnails")
    fresh = _Shelf.of(rec, rec.snapshot, older)
    assert fresh.images is not first.images and fresh.images.root == first.images.root

"""The sample catalogue: layout, pictures, determinism and colour fidelity."""

from __future__ import annotations

import csv
import hashlib
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stygig.sample_catalog import (
    CATALOG_COLUMNS,
    COLOURS,
    generate_sample_catalog,
    plan_sample_catalog,
    plan_sample_queries,
)
from stygig.sample_drawing import BACKGROUND, SIZE, Garment, draw_garment

CATEGORIES = {
    "top",
    "shirt",
    "trousers",
    "jeans",
    "skirt",
    "dress",
    "jacket",
    "casual-shoes",
    "sports-shoes",
    "handbag",
    "belt",
    "hat",
}
OUTFIT_SLOTS = {
    "top": {"top", "shirt"},
    "bottom": {"trousers", "jeans", "skirt"},
    "shoes": {"casual-shoes", "sports-shoes"},
    "accessory": {"handbag", "belt", "hat"},
}


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_sample_catalog(tmp_path_factory.mktemp("sample") / "catalog", seed=0)


@pytest.fixture(scope="module")
def rows(catalog: Path) -> list[dict[str, str]]:
    with catalog.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _garment_pixels(img: Image.Image, background: tuple[int, int, int]) -> np.ndarray:
    """Pixels clearly apart from the background (the drawn product)."""
    arr = np.asarray(img, np.float64)
    far = np.abs(arr - np.array(background)).max(axis=-1) > 30
    pixels: np.ndarray = arr[far]
    return pixels


def test_layout_and_returned_path(catalog: Path) -> None:
    root = catalog.parent
    assert catalog.name == "catalog.csv"
    assert (root / "images").is_dir()
    assert (root / "queries").is_dir()
    readme = (root / "README.txt").read_text(encoding="utf-8")
    assert "seed 0" in readme
    assert "stygig sample-catalog" in readme


def test_csv_columns_are_exactly_the_generic_layout(catalog: Path) -> None:
    with catalog.open(newline="", encoding="utf-8") as f:
        header = next(csv.reader(f))
    expected = ["id", "image", "category", "gender", "usage", "season"]
    expected += ["name", "price", "brand", "color"]
    assert header == expected == list(CATALOG_COLUMNS)


def test_counts_per_category(rows: list[dict[str, str]]) -> None:
    assert 120 <= len(rows) <= 140
    counts = Counter(r["category"] for r in rows)
    assert set(counts) == CATEGORIES
    assert min(counts.values()) >= 8, counts


def test_ids_are_unique_and_stable(rows: list[dict[str, str]]) -> None:
    ids = [r["id"] for r in rows]
    assert len(set(ids)) == len(ids)
    for r in rows:
        assert re.fullmatch(r"sku-\d{4}", r["id"])
        assert r["image"] == f"images/{r['id']}.jpg"


def test_row_values_are_sensible(rows: list[dict[str, str]]) -> None:
    for r in rows:
        assert r["gender"] in {"Men", "Women", "Unisex"}
        assert r["usage"] in {"Casual", "Formal", "Sports"}
        assert r["season"] in {"Summer", "Winter", "Fall", "Spring"}
        assert re.fullmatch(r"\d+\.\d{2}", r["price"]) and float(r["price"]) > 0
        assert r["brand"] and r["name"]
        assert r["color"] in COLOURS
        assert r["name"].lower().startswith(r["color"])
        if r["category"] in {"skirt", "dress"}:
            assert r["gender"] == "Women"
        if r["category"] == "jeans":
            assert r["color"] in {"blue", "light blue", "navy", "black", "grey"}
        if r["category"] == "belt":
            assert r["color"] in {"black", "brown", "tan", "burgundy"}


@pytest.mark.parametrize("gender", ["Men", "Women"])
def test_each_gender_can_dress_a_whole_outfit(rows: list[dict[str, str]], gender: str) -> None:
    mine = {r["category"] for r in rows if r["gender"] in {gender, "Unisex"}}
    for slot, categories in OUTFIT_SLOTS.items():
        assert mine & categories, f"{gender} has no {slot}"


def test_every_image_is_a_224_rgb_jpeg_on_a_light_background(
    catalog: Path, rows: list[dict[str, str]]
) -> None:
    for r in rows:
        path = catalog.parent / r["image"]
        with Image.open(path) as img:
            assert img.format == "JPEG"
            assert img.mode == "RGB"
            assert img.size == (SIZE, SIZE)
            arr = np.asarray(img, np.float64)
        corners = [arr[:6, :6], arr[:6, -6:], arr[-6:, :6], arr[-6:, -6:]]
        for corner in corners:
            assert corner.mean() > 225, (r["id"], corner.mean())
        back = np.mean([c.mean(axis=(0, 1)) for c in corners], axis=0)
        centre = arr[SIZE // 2 - 4 : SIZE // 2 + 4, SIZE // 2 - 4 : SIZE // 2 + 4]
        assert np.abs(centre.mean(axis=(0, 1)) - back).max() > 8, r["id"]


def test_images_are_small(catalog: Path) -> None:
    total = sum(p.stat().st_size for p in (catalog.parent / "images").glob("*.jpg"))
    assert total < 5 * 1024 * 1024


def test_queries_exist_and_are_not_catalogue_images(
    catalog: Path, rows: list[dict[str, str]]
) -> None:
    queries = sorted((catalog.parent / "queries").glob("*.jpg"))
    assert [q.stem for q in queries] == sorted(q.name for q in plan_sample_queries(0))
    assert len(queries) >= 6
    catalogue_hashes = {
        hashlib.sha256((catalog.parent / r["image"]).read_bytes()).digest() for r in rows
    }
    for q in queries:
        with Image.open(q) as img:
            assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (SIZE, SIZE))
        assert hashlib.sha256(q.read_bytes()).digest() not in catalogue_hashes


@pytest.mark.slow
def test_same_seed_gives_byte_identical_files(catalog: Path, tmp_path: Path) -> None:
    again = generate_sample_catalog(tmp_path / "again", seed=0)
    first, second = _digests(catalog.parent), _digests(again.parent)
    assert len(first) > 130
    assert first == second


def test_other_seed_gives_another_catalogue() -> None:
    a, b = plan_sample_catalog(0), plan_sample_catalog(1)
    assert [i.row["category"] for i in a] == [i.row["category"] for i in b]
    assert [i.row for i in a] != [i.row for i in b]


@pytest.mark.slow
def test_generation_prints_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    generate_sample_catalog(tmp_path / "quiet", seed=3)
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize(
    "kind", ["top", "shirt", "dress", "trousers", "jacket", "handbag", "hat", "casual-shoes"]
)
def test_a_red_item_is_red(kind: str) -> None:
    red = np.array(COLOURS["red"], np.float64)
    pixels = _garment_pixels(draw_garment(Garment(kind, COLOURS["red"])), BACKGROUND)
    mean = pixels.mean(axis=0)
    assert np.linalg.norm(mean - red) < 60, mean
    assert mean[0] > 2 * mean[1] and mean[0] > 2 * mean[2], mean


def test_solid_coloured_items_look_like_their_colour_name(
    catalog: Path, rows: list[dict[str, str]]
) -> None:
    """The named colour is the palette colour nearest to what was drawn (white aside: against
    a near-white background only its shading stands out)."""
    names = list(COLOURS)
    palette = np.array([COLOURS[n] for n in names], np.float64)
    plans = {item.row["id"]: item.garment for item in plan_sample_catalog(0)}
    kinds = {"top", "shirt", "trousers", "skirt", "dress", "jacket", "handbag", "hat"}
    checked = 0
    for r in rows:
        if r["category"] not in kinds or plans[r["id"]].pattern != "solid":
            continue
        if r["color"] == "white":
            continue
        with Image.open(catalog.parent / r["image"]) as img:
            mean = _garment_pixels(img, BACKGROUND).mean(axis=0)
        nearest = names[int(np.linalg.norm(palette - mean, axis=1).argmin())]
        assert nearest == r["color"], (r["id"], r["name"], mean)
        checked += 1
    assert checked >= 30


def test_unknown_kind_or_pattern_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown garment kind"):
        draw_garment(Garment("scarf", COLOURS["red"]))
    with pytest.raises(ValueError, match="unknown pattern"):
        draw_garment(Garment("top", COLOURS["red"], pattern="paisley"))

"""The V4 reference of benchmarks/bench_v4_reference.py does what the seed's V4 did.

The benchmark's ratio is only meaningful if the reference is the real V4 pipeline, not a
strawman: its colour rules, its vote, its loop and its boost are checked here on small inputs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stygig.catalog import Taxonomy
from stygig.harmony import rgb_to_hsl as stygig_hsl

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from bench_v4_reference import (
    BOOST,
    clip_pixels,
    color_harmony,
    dominant_color,
    rgb_to_hsl,
    score_candidates,
    v4_compatibility,
)

RED = (220, 20, 20)


@pytest.mark.parametrize(
    ("other", "expected"),
    [
        ((128, 128, 128), 1.0),  # grey: neutral
        ((10, 10, 30), 1.0),  # near black: neutral
        ((240, 60, 20), 0.9),  # hue about 11 degrees away: analogous
        ((20, 220, 220), 0.8),  # cyan, opposite: complementary
        ((20, 220, 20), 0.7),  # green, 120 degrees: triadic
        ((220, 220, 20), 0.2),  # yellow, 60 degrees: no harmony
    ],
)
def test_v4_harmony_rules(other: tuple[int, int, int], expected: float) -> None:
    assert color_harmony(RED, other) == expected
    assert color_harmony(other, RED) == expected


def test_colorsys_hsl_is_the_same_arithmetic_as_stygig() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (200, 3))
    ours = np.array([rgb_to_hsl(tuple(int(v) for v in c)) for c in rgb])
    theirs = stygig_hsl(rgb)
    np.testing.assert_allclose(ours[:, 0] * 360.0, theirs[:, 0], atol=1e-9)
    np.testing.assert_allclose(ours[:, 1:], theirs[:, 1:], atol=1e-12)


def test_dominant_color_is_the_mean_of_the_photo(tmp_path: Path) -> None:
    pixels = np.zeros((100, 100, 3), np.uint8)
    pixels[:, :50] = (200, 0, 0)
    pixels[:, 50:] = (0, 0, 100)
    Image.fromarray(pixels).save(tmp_path / "half.png")
    assert dominant_color(str(tmp_path / "half.png")) == (100, 0, 50)


def test_clip_pixels_crop_the_centre_square() -> None:
    out = clip_pixels(Image.new("RGB", (300, 200), (255, 255, 255)))
    assert out.shape == (1, 3, 224, 224)
    assert out.dtype == np.float32


def item(i: int, category: str, gender: str = "unisex") -> dict[str, object]:
    return {"id": f"i{i}", "category": category, "gender": gender, "color_rgb": (128, 128, 128)}


def test_score_candidates_votes_skips_the_query_category_and_boosts() -> None:
    taxonomy = Taxonomy.load()
    compat = v4_compatibility(["shirt", "jeans", "top", "dress"], taxonomy.compatible)
    candidates = [
        (item(0, "shirt"), 0.9),
        (item(1, "shirt"), 0.9),
        (item(2, "jeans"), 0.8),
        (item(3, "shirt"), 0.8),
        (item(4, "dress"), 0.7),
        (item(5, "jeans"), 0.5),
        (item(6, "dress", "male"), 0.6),
    ]
    answer = score_candidates(RED, "unisex", candidates, compat)
    assert [r["id"] for r in answer] == ["i2", "i4"]  # shirts skipped, best per category
    assert [r["rank"] for r in answer] == [1, 2]
    # jeans complete a shirt (boosted); a dress does not; grey is neutral: harmony 1.0
    assert answer[0]["score"] == pytest.approx((0.4 * 0.8 + 0.4 + 0.2) * BOOST, abs=1e-4)
    assert answer[1]["score"] == pytest.approx(0.4 * 0.7 + 0.4 + 0.2, abs=1e-4)

"""The fast colour step of stygig.color: each shortcut against its plain definition, and the
dominant colour of synthetic garments (noisy neutrals, two colours, shades of one colour)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from stygig.color import (
    _background,
    _bin_lab,
    _bin_tables,
    _centre_weights,
    _distance,
    _fill_enclosed,
    _grid,
    color_family,
    dominant_colors,
    foreground_mask,
    load_family_table,
    rgb_to_hsl,
    rgb_to_lab,
)
from stygig.harmony import lab_to_lch
from stygig.images import fit_array

WHITE = (250, 250, 248)


def garment(
    colour: tuple[int, int, int],
    noise: float = 4.0,
    seed: int = 0,
    shape: tuple[int, int] = (128, 96),
    backdrop: tuple[int, int, int] = WHITE,
) -> np.ndarray:
    """A T-shirt silhouette of one colour with fabric noise and soft shading, on a backdrop."""
    h, w = shape
    body = np.zeros((h, w), dtype=bool)
    body[int(h * 0.25) : int(h * 0.88), int(w * 0.28) : int(w * 0.72)] = True
    body[int(h * 0.25) : int(h * 0.45), int(w * 0.10) : int(w * 0.90)] = True
    rng = np.random.default_rng(seed)
    shading = np.linspace(1.04, 0.94, h)[:, None, None]
    cloth = np.asarray(colour, dtype=float) * shading + rng.normal(0, noise, (h, w, 3))
    img = np.empty((h, w, 3))
    img[:] = backdrop
    img[body] = cloth[body]
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def test_fill_enclosed_is_the_four_sided_definition() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        h, w = rng.integers(1, 40, 2)
        mask = rng.random((h, w)) < rng.random() * 0.15
        left = np.logical_or.accumulate(mask, axis=1)
        right = np.logical_or.accumulate(mask[:, ::-1], axis=1)[:, ::-1]
        up = np.logical_or.accumulate(mask, axis=0)
        down = np.logical_or.accumulate(mask[::-1], axis=0)[::-1]
        np.testing.assert_array_equal(_fill_enclosed(mask), mask | (left & right & up & down))


def test_backdrop_fit_recovers_a_graded_backdrop_and_its_surface() -> None:
    h, w = 100, 80
    v, u = np.meshgrid(np.linspace(-0.5, 0.5, h), np.linspace(-0.5, 0.5, w), indexing="ij")
    coef = np.array([[200, 210, 220], [10, -5, 0], [-20, 4, 6], [8, 0, -6], [0, 12, 3], [5, 5, 5]])
    terms = np.stack([np.ones_like(u), u, v, u**2, v**2, u * v], axis=-1)
    exact = terms @ coef
    img = np.rint(exact).astype(np.uint8)
    fitted = _background(img)
    assert fitted is not None
    found, noise = fitted
    np.testing.assert_allclose(found, coef, atol=1.0)  # from rounded pixels
    assert noise <= 1.0
    surface = terms @ found
    expected = np.abs(img - surface).max(axis=2)
    np.testing.assert_allclose(_distance(img, found, _grid(h, w)), expected, atol=1e-3)


def test_backdrop_fit_ignores_what_touches_the_frame() -> None:
    img = np.full((96, 96, 3), 240, dtype=np.uint8)
    img[60:, 40:56] = (30, 30, 90)  # a model's legs, down to the bottom edge
    img[20:60, 30:66] = (180, 20, 20)
    fitted = _background(img)
    assert fitted is not None
    np.testing.assert_allclose(fitted[0][0], 240, atol=0.5)  # the constant term is the backdrop
    assert foreground_mask(img)[25:95, 42:54].all()


def test_histogram_table_is_cielab_of_the_bin_centres() -> None:
    table = _bin_lab()
    levels = round(len(table) ** (1 / 3))
    step = 256 // levels
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, levels, (50, 3))
    index = (rgb[:, 0] * levels + rgb[:, 1]) * levels + rgb[:, 2]
    np.testing.assert_allclose(table[index], rgb_to_lab(rgb * step + (step - 1) / 2), atol=1e-4)
    assert not table.flags.writeable


def test_bin_tables_are_the_cells_and_families_of_the_bin_centres() -> None:
    cell, family = _bin_tables()
    rng = np.random.default_rng(2)
    index = rng.integers(0, len(cell), 2000)
    lab = _bin_lab()[index].astype(np.float64)
    np.testing.assert_array_equal(family[index], load_family_table().classify_lab(lab))
    # The cell, from its plain definition: lightness band, then neutral or chroma band x hue.
    lightness, chroma, hue = lab_to_lch(lab)
    band = np.array([sum(v >= e for e in (15, 28, 40, 52, 64, 76, 88)) for v in lightness])
    chroma_band = np.array([sum(v >= e for e in (5, 15, 35)) for v in chroma])
    within = np.where(chroma_band == 0, 0, 1 + (chroma_band - 1) * 12 + (hue // 30).astype(int))
    np.testing.assert_array_equal(cell[index], band * 37 + within)
    assert cell.max() < 8 * 37 and not cell.flags.writeable and not family.flags.writeable


def test_centre_weights_fall_with_the_distance_from_the_centre() -> None:
    w = _centre_weights(5, 7).reshape(5, 7)
    assert w[2, 3] == 1.0 and w.argmin() == 0
    np.testing.assert_allclose(w, w[::-1, ::-1])
    np.testing.assert_allclose(w[0, 0], np.exp(-3.0 * 4.0 * 0.5))


def test_same_pixels_same_summary_whatever_the_memory_layout() -> None:
    img = garment((120, 40, 140), seed=5)
    first = dominant_colors(img)
    for same in (img.copy(), np.asfortranarray(img), img[:, ::-1][:, ::-1]):
        assert dominant_colors(same) == first
    np.testing.assert_allclose(first.hsl, rgb_to_hsl(first.rgb))


@pytest.mark.parametrize(
    ("colour", "noise"),
    [
        ((22, 22, 24), 6),
        ((22, 22, 24), 10),
        ((40, 40, 40), 6),
        ((15, 15, 15), 10),
        ((128, 128, 128), 10),
        ((236, 236, 236), 6),
    ],
    ids=["black-6", "black-10", "charcoal-6", "jet-10", "grey-10", "white-6"],
)
def test_noise_on_a_neutral_garment_does_not_tint_it(
    colour: tuple[int, int, int], noise: float
) -> None:
    """Noise scatters a plain neutral's pixels over many hues. The pipeline gives the colour
    step a photo shrunk to its colour size (``fit_array``), whose averaging keeps the pixels of
    a noisy black within black: so the garment is drawn at 128 px and shrunk to 64 here."""
    expected = color_family(colour)
    for seed in range(5):
        img = fit_array(Image.fromarray(garment(colour, noise=noise, seed=seed)), 64)
        summary = dominant_colors(img)
        assert summary.family == expected, seed


def test_two_colour_garment_on_white_gives_the_garment_colour() -> None:
    img = garment((30, 60, 170))  # a blue shirt ...
    img[40:100, 44:52] = (230, 200, 40)  # ... with a yellow placket, a small share of it
    summary = dominant_colors(img)
    assert summary.family == "blue"
    assert np.abs(np.subtract(summary.rgb, (30, 60, 170))).max() <= 12
    colours = {color_family(rgb): share for rgb, share in summary.palette}
    assert set(colours) == {"blue", "yellow"}
    assert 0.05 < colours["yellow"] < 0.25
    assert abs(sum(colours.values()) - 1.0) < 1e-9


def test_shades_of_one_fabric_are_one_palette_colour() -> None:
    img = garment((170, 30, 40), noise=2)
    shadow = (img != WHITE).any(axis=2)
    shadow[:70] = False
    img[shadow] -= 14  # the lower part of the shirt in shadow: a shade, not a second colour
    summary = dominant_colors(img)
    assert summary.family == "red"
    # A few pixels of the shadow's edge fall in another family: a fringe, left out.
    assert len(summary.palette) == 1 and summary.palette[0][1] > 0.95


def test_dark_and_graded_backdrops_and_a_close_up() -> None:
    assert dominant_colors(garment((230, 200, 40), backdrop=(18, 18, 20))).family == "yellow"
    rng = np.random.default_rng(3)
    close_up = np.clip(rng.normal((30, 110, 60), 12, (80, 80, 3)), 0, 255).astype(np.uint8)
    assert foreground_mask(close_up).all()
    assert dominant_colors(close_up).family == "green"

"""The colours of a garment in a product photo: foreground mask, colour family and palette.

Pure NumPy, vectorised over pixels; nothing here knows about HTTP. For one product photo (uint8
``(h, w, 3)`` RGB, shrunk to ~64 px by :func:`stygig.images.fit_array`):

1. :func:`foreground_mask` fits a smooth (quadratic) backdrop surface to the border pixels, marks
   pixels far from it and fills regions enclosed by the product's outline, so a white shirt on
   white keeps its body and not only its seams and shadows.
2. :func:`color_features` describes the foreground's colours: a centre-weighted histogram over
   CIELAB cells, the share of each rule family (``color_family``), the backdrop and how much
   of the photo the product fills.
3. :func:`dominant_colors` names the family with a small learned classifier over those features
   (:class:`ColorModel`, a softmax regression: ``data/color_model.json``, fitted by
   ``benchmarks/fit_color.py`` on the tuning halves of two labelled datasets), and groups the
   pixels by their own rule family for the palette and the main colour.

Why learned: catalogues label the *photo* (a heather-grey tee photographs as white and black
pixels, an orange one as red and brown ones), so no threshold on one averaged colour matches
their labels; the whole histogram does better (issue 16: Kaggle grey 22 -> 57 %, MANGO orange
48 -> 58 % held out, overall agreement up on both datasets). The rules stay the family of a
bare colour (:func:`color_family`: sRGB red is red).

This runs once per query photo and once per catalogue item, with the same code at build and at
query time, so it is written for a budget of a few tenths of a millisecond: every step is a
small, fixed number of NumPy calls over ~4,000 pixels, each pixel's CIELAB cell and rule family
are looked up in tables built once (64 levels per channel), the backdrop fit's basis is cached
per image size, and the hole filling uses each row's and column's first and last foreground
pixel instead of four cumulative scans.

Colour spaces, families, names and harmony live in :mod:`stygig.harmony` and are re-exported
here, so ``from stygig.color import rgb_to_hsl, color_family, harmony`` works.
"""

from __future__ import annotations

import colorsys
import functools
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import numpy.typing as npt

from stygig.errors import ConfigError, InvalidImageError
from stygig.harmony import (
    HARMONY_RULE_NAMES,
    FamilyRule,
    FamilyTable,
    HarmonyRules,
    color_families,
    color_family,
    describe_color,
    harmony,
    harmony_reason,
    hsl_to_rgb,
    lab_to_lch,
    load_family_table,
    rgb_to_hsl,
    rgb_to_lab,
)

__all__ = [
    "HARMONY_RULE_NAMES",
    "ColorModel",
    "ColorSummary",
    "FamilyRule",
    "FamilyTable",
    "HarmonyRules",
    "color_families",
    "color_family",
    "color_feature_count",
    "color_features",
    "describe_color",
    "dominant_colors",
    "foreground_mask",
    "harmony",
    "harmony_reason",
    "hsl_to_rgb",
    "load_color_model",
    "load_family_table",
    "rgb_to_hsl",
    "rgb_to_lab",
]

FloatArray = npt.NDArray[np.float64]
AnyFloatArray = npt.NDArray[np.floating[Any]]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.intp]
RGB = tuple[int, int, int]

# --- foreground ------------------------------------------------------------------------------

_MIN_THRESHOLD = 5.0  # RGB units: a clean studio white is flat to within JPEG noise (~2)
_RIDGE = 1e-9  # keeps the backdrop fit's normal equations solvable on degenerate borders


def _check_image(img: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 or img.size == 0:
        shape = getattr(img, "shape", None)
        raise InvalidImageError(f"expected an RGB array of shape (h, w, 3), got {shape}")
    if img.dtype != np.uint8:
        raise InvalidImageError(f"expected uint8 RGB pixels, got {img.dtype}")
    return img


def _border_width(h: int, w: int) -> int:
    return max(1, round(min(h, w) / 64))


def _border(a: npt.NDArray[Any], b: int) -> npt.NDArray[Any]:
    """The ``b``-pixel frame of an ``(h, w, c)`` array as ``(n, c)``: top, bottom, left, right."""
    c = a.shape[2]
    sides = (a[:b], a[-b:], a[b:-b, :b], a[b:-b, -b:])
    return np.concatenate([side.reshape(-1, c) for side in sides])


@dataclass(frozen=True)
class _Grid:
    """What the backdrop fit needs for one image size; cached, since sizes repeat.

    The backdrop is ``surface(u, v) = coef . [1, u, v, u^2, v^2, uv]`` over pixel coordinates
    ``u, v`` in [-0.5, 0.5].
    """

    border: IntArray  # (n,) flat indices of the border pixels
    basis: FloatArray  # (6, n) the terms at the border pixels
    fit_all: FloatArray  # (6, n) least-squares coefficients from all border pixels' colours
    mean: FloatArray  # (6,) the terms' mean over the whole image: the backdrop's mean colour
    rows: npt.NDArray[np.float32]  # (h, 3) [1, v, v^2] of each row
    columns: FloatArray  # (3, w, 6) per column, the terms that multiply 1, v and v^2


#: Image sizes whose tables the colour step keeps: every shape a photo shrunk to fit
#: COLOR_SIDE (64) can take (64 x w and h x 64: 127), about 5 MB in all.
_SIZES_KEPT = 256


@functools.lru_cache(maxsize=_SIZES_KEPT)
def _grid(h: int, w: int) -> _Grid:
    u, v = np.linspace(-0.5, 0.5, w), np.linspace(-0.5, 0.5, h)
    b = _border_width(h, w)
    border = _border(np.arange(h * w).reshape(h, w, 1), b)[:, 0]
    bv, bu = v[border // w], u[border % w]
    basis = np.stack([np.ones_like(bu), bu, bv, bu**2, bv**2, bu * bv])
    fit_all = np.linalg.solve(basis @ basis.T + _RIDGE * np.eye(6), basis)
    mean = np.array([1.0, u.mean(), v.mean(), (u**2).mean(), (v**2).mean(), u.mean() * v.mean()])
    rows = np.stack([np.ones_like(v), v, v**2], axis=1).astype(np.float32)
    # surface = 1 (c0 + c1 u + c3 u^2) + v (c2 + c5 u) + v^2 c4, for coefficients c0..c5
    columns = np.zeros((3, w, 6))
    columns[0, :, 0], columns[0, :, 1], columns[0, :, 3] = 1.0, u, u**2
    columns[1, :, 2], columns[1, :, 5] = 1.0, u
    columns[2, :, 4] = 1.0
    for array in (border, basis, fit_all, mean, rows, columns):
        array.setflags(write=False)  # shared by every image of this size
    return _Grid(border, basis, fit_all, mean, rows, columns)


def _channel_max(x: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """The largest of the 3 rows of ``x`` (a reduction over a short axis is slow in NumPy)."""
    largest: npt.NDArray[Any] = np.maximum(np.maximum(x[0], x[1]), x[2])
    return largest


def _quantile(x: FloatArray, q: float) -> float:
    """``np.percentile(x, 100 * q)`` (linear interpolation) by partial sort: no full sort."""
    pos = q * (len(x) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(x) - 1)
    part = np.partition(x, (lo, hi))
    return float(part[lo] + (part[hi] - part[lo]) * (pos - lo))


def _row_medians(x: FloatArray) -> FloatArray:
    """``np.median(x, axis=1)`` by partial sort."""
    lo, hi = (x.shape[1] - 1) // 2, x.shape[1] // 2
    part = np.partition(x, (lo, hi), axis=1)
    medians: FloatArray = 0.5 * (part[:, lo] + part[:, hi])
    return medians


def _background(img: npt.NDArray[np.uint8]) -> tuple[AnyFloatArray, float] | None:
    """Fit a quadratic colour surface to the border; None when the border is not a backdrop.

    Returns the surface's coefficients ``(6, 3)`` (see :class:`_Grid`) and the border's noise
    (90th percentile residual).
    """
    h, w, _ = img.shape
    b = _border_width(h, w)
    if min(h, w) <= 4 * b:
        return None
    grid = _grid(h, w)
    colours = np.take(img.reshape(-1, 3), grid.border, axis=0).T.astype(np.float64)  # (3, n)
    # Objects that touch the frame (a model's legs, a cropped sleeve) are outliers, not backdrop.
    keep = _channel_max(np.abs(colours - _row_medians(colours)[:, None])) <= 24.0
    if np.count_nonzero(keep) < 0.3 * keep.size:
        return None
    for _ in range(2):
        # Normal equations of a 6-term fit, outliers weighted 0: tiny, exact enough. A clean
        # backdrop (most photos) keeps every border pixel, whose fit is known for this size.
        if keep.all():
            coef: AnyFloatArray = grid.fit_all @ colours.T
        else:
            fit = grid.basis * keep
            coef = np.linalg.solve(fit @ grid.basis.T + _RIDGE * np.eye(6), fit @ colours.T)
        residual = _channel_max(np.abs(colours - coef.T @ grid.basis))
        kept = residual <= max(3.0 * 1.4826 * _quantile(residual[keep], 0.5), 3.0) + 1.0
        settled = np.array_equal(kept, keep)  # then another fit would be this one again
        keep = kept
        if settled:
            break
    return coef, _quantile(residual[keep], 0.9)


def _distance(img: npt.NDArray[np.uint8], coef: AnyFloatArray, grid: _Grid) -> npt.NDArray[Any]:
    """Each pixel's largest channel difference from the backdrop surface, ``(h, w)`` float32.

    The surface is ``[1, v, v^2]`` of the row times per-column terms: one small matrix product
    over the image seen as ``(h, w * 3)``.
    """
    h, w, _ = img.shape
    diff = img.reshape(h, w * 3).astype(np.float32)
    diff -= grid.rows @ (grid.columns @ coef).reshape(3, w * 3).astype(np.float32)
    np.abs(diff, out=diff)
    d = diff.reshape(h, w, 3)
    return np.maximum(np.maximum(d[..., 0], d[..., 1]), d[..., 2])


def _fill_enclosed(mask: BoolArray) -> BoolArray:
    """Add pixels that have foreground on all four sides along their row and column.

    That is, pixels between the first and last foreground pixel of both their row and their
    column.
    """
    h, w = mask.shape
    left = np.where(mask.any(axis=1), mask.argmax(axis=1), w)  # w: a row with no foreground
    right = w - mask[:, ::-1].argmax(axis=1)  # one past the last
    top = np.where(mask.any(axis=0), mask.argmax(axis=0), h)
    bottom = h - mask[::-1].argmax(axis=0)
    filled = _between(np.arange(w), left[:, None], right[:, None])
    filled &= _between(np.arange(h)[:, None], top, bottom)
    filled |= mask
    return filled


def _between(i: IntArray, low: IntArray, high: IntArray) -> BoolArray:
    """``low <= i < high``, broadcast, in one comparison of 32-bit integers.

    Below ``low``, ``i - low`` read as unsigned wraps round to a number above any ``high - low``.
    """
    offset = (i.astype(np.int32) - low.astype(np.int32)).view(np.uint32)
    inside: BoolArray = offset < (high - low).astype(np.uint32)
    return inside


def _masks(
    img: npt.NDArray[np.uint8],
) -> tuple[BoolArray, BoolArray, FloatArray | None]:
    """Strict foreground, filled foreground and the mean background colour (None: no backdrop)."""
    fitted = _background(img)
    everything = np.ones(img.shape[:2], dtype=bool)
    if fitted is None:
        return everything, everything, None
    coef, noise = fitted
    grid = _grid(*img.shape[:2])
    backdrop: FloatArray = grid.mean @ coef
    # Well above the border's own noise, so JPEG ringing and backdrop texture stay backdrop.
    strict = _distance(img, coef, grid) > max(_MIN_THRESHOLD, 2.5 * noise + 2.0)
    filled = _fill_enclosed(strict)
    if np.count_nonzero(filled) < max(16, 0.001 * filled.size):
        # Nothing stands out: the product has the backdrop's colour (or there is no product).
        return everything, everything, backdrop
    return strict, filled, backdrop


def foreground_mask(img: npt.NDArray[np.uint8]) -> BoolArray:
    """Which pixels of a product photo ``(h, w, 3)`` uint8 belong to the product, not the backdrop.

    The backdrop is a smooth (quadratic) colour surface fitted robustly to the border pixels,
    so light, dark or graded backdrops all work; a pixel is foreground when some channel differs
    from the surface by more than the border's own noise allows. Regions enclosed by foreground
    along both their row and column are filled in (the body of a white shirt on white).
    Everything is foreground when the border is not a backdrop (a close-up, a busy scene) or when
    nothing stands out from it.
    """
    return _masks(_check_image(img))[1]


# --- the answer ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ColorSummary:
    """The colours of one product: the main colour, its family and a palette with shares."""

    rgb: RGB
    hsl: tuple[float, float, float]
    family: str
    palette: list[tuple[RGB, float]]

    def to_dict(self) -> dict[str, Any]:
        """JSON form: ``{"rgb": [r, g, b], "hex": "#rrggbb", "name", "hsl": [...], "family",
        "palette"}`` (``name`` as reasons use it, e.g. "navy")."""
        h, s, light = self.hsl
        return {
            "rgb": list(self.rgb),
            "hex": _hex(self.rgb),
            "name": describe_color(self.rgb, self.family),
            "hsl": [round(h, 2), round(s, 4), round(light, 4)],
            "family": self.family,
            "palette": [
                {"rgb": list(rgb), "hex": _hex(rgb), "share": round(share, 4)}
                for rgb, share in self.palette
            ],
        }


def _hex(rgb: RGB) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


# --- the family classifier's input -----------------------------------------------------------

# Pixels are binned at 2**_BIN_BITS levels per channel (steps of 4 RGB units, about 1-2 CIELAB
# units); each bin's CIELAB, feature cell and rule family are looked up, not computed per photo.
_BIN_BITS = 6
_LEVELS = 1 << _BIN_BITS
_BIN_WEIGHTS = np.array([_LEVELS * _LEVELS, _LEVELS, 1])  # (r, g, b) level -> bin number

# The feature cells: 8 lightness bands (L* edges below, the last open), each split into one
# neutral cell (C* < 5) and 3 chroma bands (C* edges below, the last open) x 12 hue sectors of
# 30 degrees: 8 x 37 = 296 cells.
_LIGHTNESS_EDGES = np.array([0.0, 15.0, 28.0, 40.0, 52.0, 64.0, 76.0, 88.0])
_CHROMA_EDGES = np.array([5.0, 15.0, 35.0])
_HUE_SECTORS = 12
_CELLS_PER_BAND = 1 + len(_CHROMA_EDGES) * _HUE_SECTORS
_CELLS = len(_LIGHTNESS_EDGES) * _CELLS_PER_BAND
_CENTRE = 3.0  # a pixel weighs exp(-_CENTRE * 4 * squared distance from the centre)...
_FILLED_WEIGHT = 0.5  # ... times this when only the hole filling made it foreground
_FILLED_FACTOR = np.array([_FILLED_WEIGHT, 1.0])  # by strict foreground (0 or 1)


def color_feature_count(families: int) -> int:
    """Length of :func:`color_features` with ``families`` colour families."""
    return _CELLS + 2 * families + 6


@functools.cache
def _bin_lab() -> npt.NDArray[np.float32]:
    """CIELAB of the centre of every histogram bin, ``(_LEVELS ** 3, 3)``, by bin number.

    Built on first use (about 0.1 s, 3 MB), then a lookup replaces a conversion per photo.
    """
    centres = (np.arange(_LEVELS) + 0.5) * (256 / _LEVELS) - 0.5
    r, g, b = np.meshgrid(centres, centres, centres, indexing="ij")
    lab = rgb_to_lab(np.stack([r, g, b], axis=-1).reshape(-1, 3)).astype(np.float32)
    lab.setflags(write=False)
    return lab


@functools.cache
def _bin_tables() -> tuple[npt.NDArray[np.uint16], npt.NDArray[np.uint8]]:
    """Every histogram bin's feature cell and its colour family by the rules (built once)."""
    lab = _bin_lab().astype(np.float64)
    lightness, chroma, hue = lab_to_lch(lab)
    band = np.clip(np.searchsorted(_LIGHTNESS_EDGES, lightness, side="right") - 1, 0, None)
    chroma_band = np.searchsorted(_CHROMA_EDGES, chroma, side="right")  # 0: neutral
    sector = (hue * (_HUE_SECTORS / 360.0)).astype(np.intp) % _HUE_SECTORS
    within = np.where(chroma_band == 0, 0, 1 + (chroma_band - 1) * _HUE_SECTORS + sector)
    # Small integers: 768 KB of tables instead of 4 MB, read at random for every pixel.
    cell = (band * _CELLS_PER_BAND + within).astype(np.uint16)
    family = load_family_table().classify_lab(lab).astype(np.uint8)
    for table in (cell, family):
        table.setflags(write=False)
    return cell, family


@functools.lru_cache(maxsize=_SIZES_KEPT)
def _centre_weights(h: int, w: int) -> FloatArray:
    """Each pixel's weight for its distance from the photo's centre, ``(h * w,)``."""
    y, x = np.divmod(np.arange(h * w), w)
    d2 = (y / max(h - 1, 1) - 0.5) ** 2 + (x / max(w - 1, 1) - 0.5) ** 2
    weights: FloatArray = np.exp(-_CENTRE * 4.0 * d2)
    weights.setflags(write=False)
    return weights


@dataclass(frozen=True)
class _Foreground:
    """A photo's foreground pixels, their families, and the classifier's input."""

    pixels: npt.NDArray[np.uint8]  # (n, 3) RGB
    family: npt.NDArray[np.uint8]  # (n,) each pixel's own family, by the rules
    features: FloatArray  # (color_feature_count(families),) the family classifier's input


def _foreground(img: npt.NDArray[np.uint8]) -> _Foreground:
    strict, filled, backdrop = _masks(img)
    h, w, _ = img.shape
    index = np.flatnonzero(filled)
    pixels = np.take(img.reshape(-1, 3), index, axis=0)  # np.take: a third of [index]'s time
    weight = _centre_weights(h, w)[index] * _FILLED_FACTOR[strict.ravel().view(np.uint8)[index]]
    cell, family = _bin_tables()
    bins = (pixels >> (8 - _BIN_BITS)).astype(np.intp) @ _BIN_WEIGHTS
    own = family[bins]
    total = weight.sum()
    shares = np.bincount(cell[bins], weight, minlength=_CELLS) / total
    families = np.bincount(own, weight, minlength=len(load_family_table().families)) / total
    scene = np.zeros(4) if backdrop is None else np.append(1.0, _bin_lab()[_bin(backdrop)] / 100.0)
    features = np.concatenate(
        [np.sqrt(shares), families, np.sqrt(families), scene, [len(index) / (h * w), 1.0]]
    )
    return _Foreground(pixels, own, features)


def _bin(rgb: FloatArray) -> int:
    """The histogram bin of one RGB colour (floats, 0-255)."""
    return int((np.clip(np.rint(rgb), 0, 255).astype(np.intp) >> (8 - _BIN_BITS)) @ _BIN_WEIGHTS)


def color_features(img: npt.NDArray[np.uint8]) -> FloatArray:
    """The family classifier's input for a product photo (uint8 ``(h, w, 3)`` RGB, ~64 px).

    Over the foreground (:func:`foreground_mask`), each pixel weighted by its closeness to the
    photo's centre (and half as much when only hole filling made it foreground): the square
    roots of its shares of 296 CIELAB cells (8 lightness bands x one neutral cell or 3 chroma
    bands x 12 hue sectors), the shares of the 12 rule families and their square roots, then the
    backdrop (present, and its L*, a*, b* / 100; zeros without one), the foreground's share of
    the photo and a constant 1: :func:`color_feature_count` numbers. The photo should be shrunk
    from a larger one, as the pipeline does: its averaging keeps a plain colour's noise within
    its family (a tiny, noisy photo scatters a black garment over many hues).
    ``benchmarks/fit_color.py`` fits :class:`ColorModel` on these.
    """
    return _foreground(_check_image(img)).features


# --- the family classifier -------------------------------------------------------------------


@dataclass(frozen=True)
class ColorModel:
    """A linear classifier from :func:`color_features` to a colour family (softmax regression).

    ``weights[:, j]`` scores family ``families[j]``; the photo's family is the best score.
    """

    families: tuple[str, ...]
    weights: FloatArray  # (color_feature_count(len(families)), len(families))

    @classmethod
    def from_dict(cls, data: Any, source: str = "colour model") -> ColorModel:
        """Build from the parsed JSON file; :class:`ConfigError` says what does not fit."""
        try:
            families = tuple(str(f) for f in data["families"])
            weights = np.array(data["weights"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"{source}: expected 'families' and numeric 'weights' ({e})") from e
        expected = (color_feature_count(len(families)), len(families))
        if weights.shape != expected or not np.isfinite(weights).all():
            raise ConfigError(f"{source}: weights must be finite, of shape {expected}")
        if families != load_family_table().families:
            raise ConfigError(f"{source}: families {families} differ from the family table's")
        weights.setflags(write=False)
        return cls(families, weights)

    def to_dict(self, **provenance: Any) -> dict[str, Any]:
        """JSON form (weights to 6 significant digits), with how it was made."""
        weights = [[float(f"{v:.6g}") for v in row] for row in self.weights.tolist()]
        return provenance | {"families": list(self.families), "weights": weights}

    def family(self, features: FloatArray) -> int:
        """Index of the family :func:`color_features` ``features`` score best."""
        return int(np.argmax(features @ self.weights))


@functools.cache
def load_color_model() -> ColorModel:
    """The packaged classifier, ``data/color_model.json`` (made by ``benchmarks/fit_color.py``)."""
    text = resources.files("stygig").joinpath("data/color_model.json").read_text()
    return ColorModel.from_dict(json.loads(text), "color_model.json (packaged)")


# --- dominant colours ------------------------------------------------------------------------

# A family with less of the foreground is a fringe (JPEG ringing, a shadow's edge, noise), not
# one of the garment's colours; the largest family always stays.
_PALETTE_MIN_SHARE = 0.05


def dominant_colors(img: npt.NDArray[np.uint8]) -> ColorSummary:
    """The main colour of the product in a photo, its family and a palette of up to 3 colours.

    ``img`` is uint8 ``(h, w, 3)`` RGB, the whole photo shrunk to about 64 px
    (:func:`stygig.images.fit_array`; the classifier was fitted at that size). The family comes
    from the learned classifier (:func:`load_color_model`) over the foreground's colour
    histogram, so it is the photo's family as catalogues label it, not that of one averaged
    colour. The palette groups the foreground's pixels by the family their own colour has
    (:func:`color_family`'s rules): the 3 largest groups of at least 5 % of the foreground, each
    with its mean colour and its share of the foreground. The main colour is the mean colour of
    the pixels in the classifier's family, or the palette's first colour when no pixel is of
    that family.
    Deterministic for the same pixels.
    """
    fg = _foreground(_check_image(img))
    table = load_family_table()
    family = load_color_model().family(fg.features)
    # Per family: its pixels and their mean colour.
    n = len(table.families)
    count = np.bincount(fg.family, minlength=n)
    sums = [np.bincount(fg.family, fg.pixels[:, c], minlength=n) for c in range(3)]
    mean = np.rint(np.stack(sums, axis=1) / np.maximum(count, 1)[:, None]).astype(np.int64)
    order = np.argsort(-count, kind="stable")[:3]
    order = order[count[order] >= _PALETTE_MIN_SHARE * len(fg.family)]
    palette = [
        ((int(r), int(g), int(b)), float(share))
        for (r, g, b), share in zip(mean[order], count[order] / len(fg.family), strict=True)
    ]
    r, g, b = palette[0][0] if count[family] == 0 else (int(v) for v in mean[family])
    # colorsys is the arithmetic rgb_to_hsl vectorises; for one colour it is the cheaper call.
    hue, light, saturation = colorsys.rgb_to_hls(r / 255.0, g / 255.0, b / 255.0)
    return ColorSummary(
        (r, g, b), (hue * 360.0, saturation, light), table.families[family], palette
    )

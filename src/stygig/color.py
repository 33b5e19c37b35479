"""The colours of a garment in a product photo: foreground mask and dominant colours.

Pure NumPy, vectorised over pixels; nothing here knows about models or HTTP. For one product
photo (uint8 ``(h, w, 3)`` RGB, shrunk to ~128 px by :func:`stygig.images.fit_array`):

1. :func:`foreground_mask` fits a smooth (quadratic) backdrop surface to the border pixels, marks
   pixels far from it and fills regions enclosed by the product's outline, so a white shirt on
   white keeps its body and not only its seams and shadows.
2. :func:`dominant_colors` clusters a subsample of the foreground (k-means in CIELAB, seeded
   deterministically), merges clusters that are shades of one colour, and scores each cluster
   by share, chroma and centrality, discounting skin, backdrop-like and filled-in clusters;
   clusters vote for a colour family by score and the best cluster of the winning family is the
   main colour.

This runs once per query photo and once per catalogue item, with the same code at build and at
query time, so it is written for a budget of about a millisecond: every step costs a small,
fixed number of NumPy calls. The k-means runs on a colour histogram (64 levels per channel: a
few hundred occupied bins instead of 1,500 pixels, their CIELAB looked up in a table), the
backdrop fit's basis is cached per image size, and the hole filling uses each row's and
column's first and last foreground pixel instead of four cumulative scans.

Colour spaces, families, names and harmony live in :mod:`stygig.harmony` and are re-exported
here, so ``from stygig.color import rgb_to_hsl, color_family, harmony`` works. The weights below
were tuned on one half of two labelled datasets; the other half gives the agreement that
``benchmarks/bench_color.py`` reports.
"""

from __future__ import annotations

import colorsys
import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from stygig.errors import InvalidImageError, InvalidOptionsError
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
    "ColorSummary",
    "FamilyRule",
    "FamilyTable",
    "HarmonyRules",
    "color_families",
    "color_family",
    "describe_color",
    "dominant_colors",
    "foreground_mask",
    "harmony",
    "harmony_reason",
    "hsl_to_rgb",
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


@functools.lru_cache(maxsize=64)
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
    colours = img.reshape(-1, 3)[grid.border].T.astype(np.float64)  # (3, n)
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


# --- dominant colours ------------------------------------------------------------------------


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
            "name": describe_color(self.rgb),
            "hsl": [round(h, 2), round(s, 4), round(light, 4)],
            "family": self.family,
            "palette": [
                {"rgb": list(rgb), "hex": _hex(rgb), "share": round(share, 4)}
                for rgb, share in self.palette
            ],
        }


def _hex(rgb: RGB) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


@dataclass(frozen=True)
class _MainColorWeights:
    """How a cluster's score is formed (tuned on the tuning halves; see the module docstring)."""

    share_power: float = 0.5  # score = share ** share_power * factors below
    chroma: float = 0.25  # x (1 + chroma * min(C*, 60) / 60): colour over neutral shading
    skin: float = 0.7  # x (1 - skin) for skin-like clusters (models' faces and arms)
    background: float = 0.2  # x (1 - background) within background_delta_e of the backdrop
    background_delta_e: float = 49.0
    filled: float = 0.8  # x (1 - filled * share of the cluster that came from hole filling)
    centre: float = 3.0  # x exp(-centre * 4 * squared distance of the cluster from the centre)


_WEIGHTS = _MainColorWeights()
_MAX_SAMPLES = 1500
_SAME_COLOUR_DELTA_E = 12.0  # CIE76: shading of one fabric, not two colours

# The k-means histogram: 2**_BIN_BITS levels per channel (steps of 4 RGB units, about 1-2 CIELAB
# units). 32 levels are coarse enough near black that noise on a black garment splits into
# tinted clusters.
_BIN_BITS = 6
_LEVELS = 1 << _BIN_BITS
_BIN_WEIGHTS = np.array([_LEVELS * _LEVELS, _LEVELS, 1])  # (r, g, b) level -> bin number
_KMEANS_TOLERANCE = 0.5  # CIELAB units (CIE76) a centre may still move when iterations stop
_KMEANS_MAX_ITERATIONS = 20


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


def _kmeans(x: FloatArray, weight: FloatArray, k: int) -> IntArray:
    """Weighted k-means of the rows of ``x``; returns each row's cluster (``1 <= k <= len(x)``).

    Seeded without randomness, so the same pixels always give the same clusters: the heaviest
    row first, then each time the row with the largest weight times squared distance to the
    nearest centre so far (k-means++'s choice, taken greedily instead of drawn). Then Lloyd
    iterations until no centre moves by ``_KMEANS_TOLERANCE`` or more.
    """
    centres = np.empty((k, x.shape[1]))
    centres[0] = x[weight.argmax()]
    nearest_d2 = ((x - centres[0]) ** 2).sum(axis=1)
    for j in range(1, k):
        centres[j] = x[(weight * nearest_d2).argmax()]
        nearest_d2 = np.minimum(nearest_d2, ((x - centres[j]) ** 2).sum(axis=1))
    # Every cluster's weighted sums and total weight: the weighted rows times the one-hot
    # membership, one small matrix product per iteration.
    weighted = np.column_stack([x * weight[:, None], weight]).T
    clusters = np.arange(k)
    for _ in range(_KMEANS_MAX_ITERATIONS):
        sums = weighted @ (_nearest(x, centres)[:, None] == clusters)
        total = sums[-1][:, None]
        moved = np.divide(sums[:-1].T, total, out=centres.copy(), where=total > 0)
        done = np.abs(moved - centres).max() < _KMEANS_TOLERANCE
        centres = moved
        if done:
            break
    return _nearest(x, centres)


def _nearest(x: FloatArray, centres: FloatArray) -> IntArray:
    # |x - c|^2 = |x|^2 - 2 x.c + |c|^2, and |x|^2 does not change the argmin.
    nearest: IntArray = ((centres**2).sum(axis=1) - 2.0 * (x @ centres.T)).argmin(axis=1)
    return nearest


@dataclass(frozen=True)
class _Clusters:
    """Per-cluster statistics, sorted by share (largest first)."""

    rgb: npt.NDArray[np.int64]  # (m, 3) mean colour of the members, rounded
    lab: FloatArray  # (m, 3) CIELAB of ``rgb``
    share: FloatArray  # (m,) fraction of the (filled) foreground
    centre_d2: FloatArray  # (m,) squared distance of the members' mean position from the centre
    filled: FloatArray  # (m,) fraction of members that only the hole filling added
    background_de: FloatArray  # (m,) CIELAB distance to the backdrop (inf without one)


def _cluster_foreground(img: npt.NDArray[np.uint8], k: int) -> _Clusters:
    """Cluster the foreground's colours, then merge clusters that are shades of one colour."""
    strict, filled, backdrop = _masks(img)
    h, w, _ = img.shape
    index = np.flatnonzero(filled)
    index = index[:: -(-len(index) // _MAX_SAMPLES)]  # a fixed stride: deterministic and even
    px = img.reshape(-1, 3)[index]
    # k-means on the occupied bins of a colour histogram, weighted by their pixel counts.
    code = (px >> (8 - _BIN_BITS)).astype(np.intp) @ _BIN_WEIGHTS
    bins, member, counts = np.unique(code, return_inverse=True, return_counts=True)
    k = min(k, len(bins))
    labels = _kmeans(_bin_lab()[bins].astype(np.float64), counts.astype(np.float64), k)[member]
    # Each cluster's sums (colour, position, strict foreground, members) in one product.
    ys, xs = np.divmod(index, w)
    values = np.vstack(
        [px.T, ys / max(h - 1, 1), xs / max(w - 1, 1), strict.ravel()[index], np.ones(len(px))]
    )
    sums = (values @ (labels[:, None] == np.arange(k))).T
    sums = _by_members(sums[sums[:, 6] > 0])
    clusters = _summarise(sums, backdrop)
    groups = _shades(clusters.lab)
    if len(groups) == len(sums):
        return clusters
    return _summarise(
        _by_members(np.stack([sums[group].sum(axis=0) for group in groups])), backdrop
    )


def _by_members(sums: FloatArray) -> FloatArray:
    """Rows of cluster sums ordered by their members (the last column), largest first."""
    ordered: FloatArray = sums[np.argsort(-sums[:, -1], kind="stable")]
    return ordered


def _summarise(sums: FloatArray, backdrop: FloatArray | None) -> _Clusters:
    """Cluster statistics from each cluster's sums (colour, y, x, strict, members), in order."""
    mean = sums[:, :6] / sums[:, 6:]
    rgb = np.rint(mean[:, :3]).astype(np.int64)
    lab = rgb_to_lab(rgb if backdrop is None else np.vstack([rgb, backdrop]))
    if backdrop is None:
        background_de = np.full(len(sums), np.inf)
    else:
        lab, backdrop_lab = lab[:-1], lab[-1]
        background_de = np.sqrt(((lab - backdrop_lab) ** 2).sum(axis=1))
    return _Clusters(
        rgb=rgb,
        lab=lab,
        share=sums[:, 6] / sums[:, 6].sum(),
        centre_d2=(mean[:, 3] - 0.5) ** 2 + (mean[:, 4] - 0.5) ** 2,
        filled=1.0 - mean[:, 5],
        background_de=background_de,
    )


def _shades(lab: FloatArray) -> list[list[int]]:
    """Group colours (largest first) closer than ``_SAME_COLOUR_DELTA_E`` to a group's first.

    Shades of one fabric count as one colour, in the palette and in the vote for the main
    colour: k-means splits a plain garment's noise and shading into clusters whose means lean
    towards different hues, and a near-black or grey cluster that leans blue must not outvote
    the others.
    """
    distance = np.sqrt(((lab[:, None] - lab[None]) ** 2).sum(axis=-1)).tolist()
    groups: list[list[int]] = []
    for i in range(len(distance)):
        for group in groups:
            if distance[group[0]][i] < _SAME_COLOUR_DELTA_E:
                group.append(i)
                break
        else:
            groups.append([i])
    return groups


def _main_cluster(c: _Clusters, table: FamilyTable, wt: _MainColorWeights) -> tuple[int, int]:
    """Index of the main cluster and its family index: clusters vote for a family by score."""
    lightness, chroma, hue = lab_to_lch(c.lab)
    skin = (lightness > 40) & (lightness < 85) & (chroma > 10) & (chroma < 40)
    skin &= (hue > 35) & (hue < 75)
    score = c.share**wt.share_power * (1.0 + wt.chroma * np.minimum(chroma, 60.0) / 60.0)
    score *= np.where(skin, 1.0 - wt.skin, 1.0)
    score *= np.where(c.background_de < wt.background_delta_e, 1.0 - wt.background, 1.0)
    score *= (1.0 - wt.filled * c.filled) * np.exp(-wt.centre * 4.0 * c.centre_d2)
    family = table.classify_lab(c.lab)
    votes = np.bincount(family, score, minlength=len(table.families))
    winner = int(votes.argmax())
    best = int(np.where(family == winner, score, -np.inf).argmax())
    return best, winner


def dominant_colors(img: npt.NDArray[np.uint8], k: int = 3) -> ColorSummary:
    """The main colour of the product in a photo, its family and a palette of up to 3 colours.

    ``img`` is uint8 ``(h, w, 3)`` RGB, ideally the whole photo shrunk to about 128 px
    (:func:`stygig.images.fit_array`); ``k`` is the number of k-means clusters (3 is what the
    weights were tuned with). The palette merges clusters that are shades of one colour and
    gives each colour's share of the foreground, largest first. The main colour is not always
    the largest: skin, backdrop-like shadows and off-centre clusters weigh less. The result is
    deterministic for the same pixels.
    """
    if k < 1:
        raise InvalidOptionsError(f"k must be at least 1, got {k}")
    clusters = _cluster_foreground(_check_image(img), k)
    table = load_family_table()
    best, family = _main_cluster(clusters, table, _WEIGHTS)
    r, g, b = (int(v) for v in clusters.rgb[best])
    # colorsys is the arithmetic rgb_to_hsl vectorises; for one colour it is the cheaper call.
    hue, light, saturation = colorsys.rgb_to_hls(r / 255.0, g / 255.0, b / 255.0)
    return ColorSummary(
        (r, g, b), (hue * 360.0, saturation, light), table.families[family], _palette(clusters)
    )


def _palette(c: _Clusters, size: int = 3) -> list[tuple[RGB, float]]:
    """The clusters (shades already merged, largest first) as ``(rgb, share)`` pairs."""
    return [
        ((int(r), int(g), int(b)), float(share))
        for (r, g, b), share in zip(c.rgb[:size], c.share[:size], strict=True)
    ]

"""The colours of a garment in a product photo: foreground mask and dominant colours.

Pure NumPy, vectorised over pixels; nothing here knows about models or HTTP. For one product
photo (uint8 ``(h, w, 3)`` RGB, shrunk to ~128 px by :func:`stygig.images.fit_array`):

1. :func:`foreground_mask` fits a smooth (quadratic) backdrop surface to the border pixels, marks
   pixels far from it and fills regions enclosed by the product's outline, so a white shirt on
   white keeps its body and not only its seams and shadows.
2. :func:`dominant_colors` clusters a subsample of the foreground (seeded k-means in CIELAB) and
   scores each cluster by share, chroma and centrality, discounting skin, backdrop-like and
   filled-in clusters; clusters vote for a colour family by score and the best cluster of the
   winning family is the main colour.

Colour spaces, families, names and harmony live in :mod:`stygig.harmony` and are re-exported
here, so ``from stygig.color import rgb_to_hsl, color_family, harmony`` works. The weights below
were tuned on one half of two labelled datasets; the other half gives the agreement that
``benchmarks/bench_color.py`` reports.
"""

from __future__ import annotations

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
BoolArray = npt.NDArray[np.bool_]
RGB = tuple[int, int, int]

# --- foreground ------------------------------------------------------------------------------

_MIN_THRESHOLD = 5.0  # RGB units: a clean studio white is flat to within JPEG noise (~2)


def _check_image(img: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 or img.size == 0:
        shape = getattr(img, "shape", None)
        raise InvalidImageError(f"expected an RGB array of shape (h, w, 3), got {shape}")
    if img.dtype != np.uint8:
        raise InvalidImageError(f"expected uint8 RGB pixels, got {img.dtype}")
    return img


def _background(img: npt.NDArray[np.uint8]) -> tuple[npt.NDArray[np.float32], float] | None:
    """Fit a quadratic colour surface to the border; None when the border is not a backdrop.

    Returns the surface ``(h, w, 3)`` and the border's noise (90th percentile residual).
    """
    h, w, _ = img.shape
    b = max(1, round(min(h, w) / 64))
    if min(h, w) <= 4 * b:
        return None
    rows, cols, inner = np.arange(h), np.arange(w), np.arange(b, h - b)
    ys = np.concatenate([np.repeat(rows[:b], w), np.repeat(rows[-b:], w), np.tile(inner, 2 * b)])
    xs = np.concatenate([np.tile(cols, 2 * b), np.repeat(np.r_[cols[:b], cols[-b:]], len(inner))])
    u, v = np.linspace(-0.5, 0.5, w), np.linspace(-0.5, 0.5, h)
    basis = np.stack([np.ones(len(ys)), u[xs], v[ys], u[xs] ** 2, v[ys] ** 2, u[xs] * v[ys]], 1)
    colours = img[ys, xs].astype(np.float64)
    # Objects that touch the frame (a model's legs, a cropped sleeve) are outliers, not backdrop.
    keep = np.abs(colours - np.median(colours, axis=0)).max(axis=1) <= 24.0
    if keep.mean() < 0.3:
        return None
    for _ in range(2):
        # Normal equations of a 6-term fit: tiny, exact enough, and no LAPACK thread start-up.
        fit = basis[keep]
        coef = np.linalg.solve(fit.T @ fit + 1e-9 * np.eye(6), fit.T @ colours[keep])
        residual = np.abs(colours - basis @ coef).max(axis=1)
        keep = residual <= max(3.0 * 1.4826 * float(np.median(residual[keep])), 3.0) + 1.0
    noise = float(np.percentile(residual[keep], 90))
    cf = coef.astype(np.float32)
    ux, vy = u.astype(np.float32)[None, :, None], v.astype(np.float32)[:, None, None]
    surface = (cf[0] + cf[1] * ux + cf[3] * ux**2) + (cf[2] * vy + cf[4] * vy**2) + cf[5] * ux * vy
    return surface, noise


def _fill_enclosed(mask: BoolArray) -> BoolArray:
    """Add pixels that have foreground on all four sides along their row and column."""
    left = np.logical_or.accumulate(mask, axis=1)
    right = np.logical_or.accumulate(mask[:, ::-1], axis=1)[:, ::-1]
    up = np.logical_or.accumulate(mask, axis=0)
    down = np.logical_or.accumulate(mask[::-1], axis=0)[::-1]
    return mask | (left & right & up & down)


def _masks(
    img: npt.NDArray[np.uint8],
) -> tuple[BoolArray, BoolArray, npt.NDArray[np.floating[Any]] | None]:
    """Strict foreground, filled foreground and the mean background colour (None: no backdrop)."""
    fitted = _background(img)
    everything = np.ones(img.shape[:2], dtype=bool)
    if fitted is None:
        return everything, everything, None
    surface, noise = fitted
    diff = np.abs(img.astype(np.float32) - surface)
    distance = np.maximum(np.maximum(diff[..., 0], diff[..., 1]), diff[..., 2])
    # Well above the border's own noise, so JPEG ringing and backdrop texture stay backdrop.
    strict = distance > max(_MIN_THRESHOLD, 2.5 * noise + 2.0)
    filled = _fill_enclosed(strict)
    if filled.sum() < max(16, 0.001 * filled.size):
        # Nothing stands out: the product has the backdrop's colour (or there is no product).
        return everything, everything, surface.mean(axis=(0, 1))
    return strict, filled, surface.mean(axis=(0, 1))


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


def _kmeans(x: FloatArray, k: int, seed: int = 0, iters: int = 20) -> npt.NDArray[np.intp]:
    """Seeded k-means++ then Lloyd iterations; returns the cluster index of each row of ``x``."""
    rng = np.random.default_rng(seed)
    n = len(x)
    centres = np.empty((k, x.shape[1]))
    centres[0] = x[rng.integers(n)]
    d2 = ((x - centres[0]) ** 2).sum(axis=1)
    for j in range(1, k):
        total = d2.sum()
        pick = rng.choice(n, p=d2 / total) if total > 0 else rng.integers(n)
        centres[j] = x[pick]
        d2 = np.minimum(d2, ((x - centres[j]) ** 2).sum(axis=1))
    for _ in range(iters):
        labels = _nearest(x, centres)
        counts = np.bincount(labels, minlength=k)[:, None]
        sums = np.stack([np.bincount(labels, x[:, c], minlength=k) for c in range(3)], axis=1)
        moved = np.where(counts > 0, sums / np.maximum(counts, 1), centres)
        done = np.abs(moved - centres).max() < 1e-3
        centres = moved
        if done:
            break
    return _nearest(x, centres)


def _nearest(x: FloatArray, centres: FloatArray) -> npt.NDArray[np.intp]:
    # |x - c|^2 = |x|^2 - 2 x.c + |c|^2, and |x|^2 does not change the argmin.
    # einsum, not matmul: a BLAS call costs more than it saves at (1500, 3) x (3, k).
    cross = np.einsum("nc,kc->nk", x, centres)
    nearest: npt.NDArray[np.intp] = ((centres**2).sum(axis=1) - 2.0 * cross).argmin(axis=1)
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
    strict, filled, backdrop = _masks(img)
    h, w, _ = img.shape
    ys, xs = np.nonzero(filled)
    step = -(-len(ys) // _MAX_SAMPLES)  # a fixed stride: deterministic and spatially even
    ys, xs = ys[::step], xs[::step]
    px = img[ys, xs]
    labels = _kmeans(rgb_to_lab(px), min(k, len(px)))
    counts = np.bincount(labels)
    used = np.flatnonzero(counts)
    counts = counts[used].astype(np.float64)

    def mean(values: FloatArray) -> FloatArray:
        return np.bincount(labels, values)[used] / counts

    rgb = np.rint(np.stack([mean(px[:, c].astype(np.float64)) for c in range(3)], 1)).astype(int)
    lab = rgb_to_lab(rgb)
    dy, dx = mean(ys / max(h - 1, 1)) - 0.5, mean(xs / max(w - 1, 1)) - 0.5
    if backdrop is None:
        background_de = np.full(len(used), np.inf)
    else:
        background_de = np.linalg.norm(lab - rgb_to_lab(backdrop), axis=1)
    order = np.argsort(-counts, kind="stable")
    return _Clusters(
        rgb=rgb[order],
        lab=lab[order],
        share=(counts / counts.sum())[order],
        centre_d2=(dy**2 + dx**2)[order],
        filled=(1.0 - mean(strict[ys, xs].astype(np.float64)))[order],
        background_de=background_de[order],
    )


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
    h, s, light = (float(v) for v in rgb_to_hsl([r, g, b]))
    return ColorSummary((r, g, b), (h, s, light), table.families[family], _palette(clusters))


def _palette(c: _Clusters, size: int = 3) -> list[tuple[RGB, float]]:
    """Clusters as a palette, where shades closer than ``_SAME_COLOUR_DELTA_E`` count as one."""
    groups: list[list[int]] = []
    for i in range(len(c.share)):  # largest first: a group is compared by its largest member
        for group in groups:
            if np.linalg.norm(c.lab[group[0]] - c.lab[i]) < _SAME_COLOUR_DELTA_E:
                group.append(i)
                break
        else:
            groups.append([i])
    palette = []
    for g in groups:
        share = float(c.share[g].sum())
        rgb = np.rint((c.rgb[g] * c.share[g, None]).sum(axis=0) / share).astype(int)
        palette.append(((int(rgb[0]), int(rgb[1]), int(rgb[2])), share))
    return sorted(palette, key=lambda p: -p[1])[:size]

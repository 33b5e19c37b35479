"""Whether a photo looks like anything in the catalogue.

A vote of the nearest neighbours always names a category, even for a photo of a cat: the
nearest items of an unrelated photo are still *some* items. What tells such a photo apart is
how near they are. Every artifact records, when it is written, how near each catalogue item's
own nearest other item is (:func:`nearest_profile`, over a sample); a query photo whose nearest
item is much farther than that (:func:`unlike_threshold`) is marked ``unlike_catalogue`` in the
answer, which is still given.

"Near" is measured before whitening (:func:`likeness_rows`): whitening weighs the weak
directions as much as the strong ones, so in whitened space every photo from elsewhere, a
garment of another shop as much as a cat, is far from everything (Kaggle, efficientnet-lite0:
the catalogue's own 1st percentile 0.16, another shop's photos 0.17 at the median, photos that
are not garments 0.12). Dividing a whitened row by the whitening's per-direction scale gives
back the centred encoder output, rotated, where they part (0.48 / 0.42 / 0.26).

Measured with ``benchmarks/bench_familiarity.py`` (docs/serving.md, "Photos unlike the
catalogue").
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["likeness", "likeness_rows", "nearest_profile", "unlike_threshold"]

#: Catalogue rows whose nearest other row is measured, and the rows it is looked for among
#: (a random subset beyond that: the profile then errs low, so fewer photos are marked).
SAMPLE = 1000
REFERENCE = 200_000
_CHUNK = 16_384  # reference rows per product: SAMPLE x _CHUNK float32 = 64 MB
#: How far below the catalogue's 1st percentile a photo's nearest item must be, in units of
#: the spread between that percentile and the median.
SPREAD = 0.5
#: Rows this alike are the same photo (a catalogue listing one photo under several SKUs, one
#: per size): not a row's "nearest other item", or such a catalogue would mark every photo.
TWIN = 0.999
#: Fewer items say nothing about how alike a catalogue's items are: no profile.
MIN_ITEMS = 50
#: A photo's likeness is read among its this many nearest items (by the search's own
#: similarity): on Kaggle the same photos are marked as with the 200 nearest, to 0.3 %.
NEAREST = 10


def likeness_rows(rows: np.ndarray, scale: np.ndarray | None) -> np.ndarray:
    """``rows`` (the artifact's unit vectors, whitened when ``scale`` is the whitening's
    per-direction scale) as likeness compares them: unit rows, unwhitened."""
    x: np.ndarray = np.asarray(rows, np.float32)
    if scale is not None:
        x = x / np.asarray(scale, np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    out: np.ndarray = x / np.maximum(norms, 1e-12)
    return out


def likeness(query: np.ndarray, nearest: np.ndarray, scale: np.ndarray | None) -> float | None:
    """A query vector's likeness to the catalogue: its highest cosine, unwhitened, with the
    rows of its :data:`NEAREST` nearest items (``nearest``). ``None`` without rows."""
    if len(nearest) == 0:
        return None
    x = likeness_rows(np.vstack([query[None, :], nearest]), scale)
    return float((x[1:] @ x[0]).max())


def nearest_profile(
    vectors: np.ndarray, scale: np.ndarray | None = None, *, seed: int = 0
) -> dict[str, Any] | None:
    """Percentiles of the catalogue rows' likeness to their nearest other row.

    ``vectors``: the artifact's unit rows; ``scale``: its whitening's, if any. ``None`` for
    fewer than :data:`MIN_ITEMS` rows, or when no sampled row has another photo."""
    n = len(vectors)
    if n < MIN_ITEMS:
        return None
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(SAMPLE, n), replace=False))
    reference = np.arange(n) if n <= REFERENCE else np.sort(rng.choice(n, REFERENCE, False))
    queries = likeness_rows(vectors[sample], scale)
    best = np.full(len(sample), -np.inf, np.float32)
    for lo in range(0, len(reference), _CHUNK):
        rows = reference[lo : lo + _CHUNK]
        block = queries @ likeness_rows(vectors[rows], scale).T
        block[sample[:, None] == rows[None, :]] = -np.inf  # not a row and itself,
        block[~(block < TWIN)] = -np.inf  # nor its photo under another id (nor a NaN row)
        np.maximum(best, block.max(axis=1), out=best)
    best = best[np.isfinite(best)]
    if len(best) == 0:
        return None
    p01, p05, p50 = (round(float(v), 4) for v in np.percentile(best, [1, 5, 50]))
    return {
        "space": "unwhitened" if scale is not None else "plain",
        "sample": len(best),
        "among": len(reference),
        "p01": p01,
        "p05": p05,
        "p50": p50,
    }


def unlike_threshold(profile: Any) -> float | None:
    """The likeness below which a photo is unlike the catalogue: the 1st percentile less
    :data:`SPREAD` times its distance to the median. ``None`` without a profile (artifacts
    written before it, or a one-item catalogue)."""
    if not isinstance(profile, dict):
        return None
    try:
        p01, p50 = float(profile["p01"]), float(profile["p50"])
    except (KeyError, TypeError, ValueError, OverflowError):
        return None
    if not (np.isfinite(p01) and np.isfinite(p50)):
        return None
    return p01 - SPREAD * max(p50 - p01, 0.0)

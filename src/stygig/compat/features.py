"""Item features for the compatibility model: embedding, colour and category, row-aligned.

The model sees ``[embedding, Lab colour, HSL colour, category one-hot, attributes, style]``;
standardisation of the embedding lives in the model (so it can embed query photos too), this
module only gathers raw values. Everything is NumPy so serving needs no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from stygig.harmony import rgb_to_hsl

__all__ = ["COLOUR_DIM", "ItemFeatures", "colour_features", "item_features", "rgb_to_lab"]

#: Lab (3) + HSL as (cos h, sin h) * s, s, l (4).
COLOUR_DIM = 7


@dataclass(frozen=True)
class ItemFeatures:
    """Row-aligned raw features of some items (catalogue rows or query photos).

    ``category`` holds codes into the model's category list (``-1`` = unknown).
    """

    embeddings: np.ndarray  # (n, d) float32
    colour: np.ndarray  # (n, COLOUR_DIM) float32
    category: np.ndarray  # (n,) int64
    #: ``(n, A)`` multi-hot catalogue attributes in the model's vocabulary (``None``: unknown,
    #: as for a query photo; :meth:`stygig.compat.model.CompatModel.attribute_rows`).
    attributes: np.ndarray | None = None
    #: ``(n, S + 1)`` style rows and a "has style" flag
    #: (:meth:`stygig.compat.model.CompatModel.style_of`; ``None``: none, as for a query photo).
    style: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    def take(self, rows: npt.ArrayLike) -> ItemFeatures:
        """The features of ``rows`` only."""
        idx = np.asarray(rows, np.int64)
        attrs = None if self.attributes is None else self.attributes[idx]
        style = None if self.style is None else self.style[idx]
        return ItemFeatures(
            self.embeddings[idx], self.colour[idx], self.category[idx], attrs, style
        )


def rgb_to_lab(rgb: npt.ArrayLike) -> np.ndarray:
    """CIE Lab (D65) of sRGB colours in ``[0, 255]``; shape ``(..., 3)``."""
    c = np.asarray(rgb, np.float64) / 255.0
    lin = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    m = np.array(
        [[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]],
        np.float64,
    )
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    lab = np.stack(
        [
            116.0 * f[..., 1] - 16.0,
            500.0 * (f[..., 0] - f[..., 1]),
            200.0 * (f[..., 1] - f[..., 2]),
        ],
        axis=-1,
    )
    return lab.astype(np.float32)


def colour_features(rgb: npt.ArrayLike) -> np.ndarray:
    """``(n, COLOUR_DIM)`` colour features, each roughly in ``[-1, 1]``."""
    rgb_arr = np.asarray(rgb, np.float32).reshape(-1, 3)
    lab = rgb_to_lab(rgb_arr) / np.array([100.0, 80.0, 80.0], np.float32)
    hsl = np.asarray(rgb_to_hsl(rgb_arr), np.float32).reshape(-1, 3)
    hue = np.deg2rad(hsl[:, 0])  # rgb_to_hsl gives degrees
    sat, light = hsl[:, 1], hsl[:, 2]
    out = np.column_stack([lab, np.cos(hue) * sat, np.sin(hue) * sat, sat, light])
    return out.astype(np.float32)


def item_features(
    embeddings: np.ndarray,
    rgb: npt.ArrayLike,
    categories: Sequence[str | None],
    category_names: Sequence[str],
    attributes: np.ndarray | None = None,
) -> ItemFeatures:
    """Gather the features of items given their vectors, colours and category names (and,
    optionally, their multi-hot attribute rows)."""
    lookup = {name: i for i, name in enumerate(category_names)}
    codes = np.array([lookup.get(c, -1) if c is not None else -1 for c in categories], np.int64)
    return ItemFeatures(
        embeddings=np.asarray(embeddings, np.float32).reshape(len(codes), -1),
        colour=colour_features(rgb),
        category=codes,
        attributes=None if attributes is None else np.asarray(attributes, np.float32),
    )

"""What StyGig takes from one photo: the encoder's input tensor and the garment's colours.

Build and query share this, so a catalogue photo and a shopper's photo are treated alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stygig.color import dominant_colors
from stygig.images import PreprocessSpec, decode_image, fit_array, preprocess
from stygig.thumbnails import make_thumbnail

__all__ = ["COLOR_SIDE", "PreparedImage", "color_summary", "decode_photo", "prepare_image"]

#: Colour is measured on the whole photo shrunk to fit this many pixels.
COLOR_SIDE = 128


@dataclass(frozen=True)
class PreparedImage:
    """One decoded photo: encoder input, colour summary, and how long each step took (ms)."""

    tensor: np.ndarray
    color: dict[str, Any]
    timings_ms: dict[str, float] = field(default_factory=dict)
    thumbnail: bytes | None = None  # the shop's JPEG of the photo, when asked for (builds)


def prepare_image(
    source: str | Path | bytes, spec: PreprocessSpec, *, thumbnail: bool = False
) -> PreparedImage:
    """Decode, validate, preprocess and colour one photo (raises :mod:`stygig.errors` types).

    ``thumbnail`` also makes the shop's thumbnail from the same decoded pixels (builds do).
    """
    t0 = time.perf_counter()
    img = decode_image(source, min_size=max(spec.size, COLOR_SIDE))
    tensor = preprocess(img, spec)
    t1 = time.perf_counter()
    color = color_summary(fit_array(img, COLOR_SIDE))
    t2 = time.perf_counter()
    timings = {"decode": (t1 - t0) * 1e3, "color": (t2 - t1) * 1e3}
    thumb = None
    if thumbnail:
        thumb = make_thumbnail(img)
        timings["thumbnail"] = (time.perf_counter() - t2) * 1e3
    return PreparedImage(tensor, color, timings, thumb)


def decode_photo(source: str | Path | bytes, spec: PreprocessSpec) -> tuple[np.ndarray, np.ndarray]:
    """Decode and preprocess one photo: ``(encoder input, colour-input pixels)``.

    For callers that measure the colour concurrently with the embedding (see
    :func:`color_summary`); :func:`prepare_image` does both steps in one.
    """
    img = decode_image(source, min_size=max(spec.size, COLOR_SIDE))
    return preprocess(img, spec), fit_array(img, COLOR_SIDE)


def color_summary(pixels: np.ndarray) -> dict[str, Any]:
    """The colour summary (as in :class:`PreparedImage`) of pixels from :func:`decode_photo`."""
    return dominant_colors(pixels).to_dict()

"""What StyGig takes from one photo: the encoder's input tensor and the garment's colours.

Build and query share this, so a catalogue photo and a shopper's photo are treated alike.
"""

from __future__ import annotations

import functools
import hashlib
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from stygig import storage
from stygig.color import dominant_colors
from stygig.images import (
    DEFAULT_LIMITS,
    ImageLimits,
    PreprocessSpec,
    decode_image,
    fit_array,
    preprocess,
)
from stygig.thumbnails import make_thumbnail

__all__ = [
    "COLOR_SIDE",
    "DecodedPhoto",
    "PreparedImage",
    "color_method",
    "color_summary",
    "decode_photo",
    "fetch_photo",
    "prepare_image",
]

#: Colour is measured on the whole photo shrunk to fit this many pixels: the size the colour
#: family model was fitted at (``benchmarks/fit_color.py``; see docs/evaluation.md, colour).
COLOR_SIDE = 64


@dataclass(frozen=True)
class PreparedImage:
    """One decoded photo: encoder input, colour summary, and how long each step took (ms)."""

    tensor: np.ndarray
    color: dict[str, Any]
    timings_ms: dict[str, float] = field(default_factory=dict)
    thumbnail: bytes | None = None  # the shop's JPEG of the photo, when asked for (builds)


def prepare_image(
    source: str | Path | bytes,
    spec: PreprocessSpec,
    *,
    thumbnail: bool = False,
    limits: ImageLimits = DEFAULT_LIMITS,
) -> PreparedImage:
    """Decode, validate, preprocess and colour one photo (raises :mod:`stygig.errors` types).

    ``thumbnail`` also makes the shop's thumbnail from the same decoded pixels (builds do).
    """
    t0 = time.perf_counter()
    photo = decode_photo(source, spec, limits)
    t1 = time.perf_counter()
    color = color_summary(photo.color_pixels)
    t2 = time.perf_counter()
    timings = {"decode": (t1 - t0) * 1e3, "color": (t2 - t1) * 1e3}
    thumb = None
    if thumbnail:
        thumb = make_thumbnail(photo.image)
        timings["thumbnail"] = (time.perf_counter() - t2) * 1e3
    return PreparedImage(photo.tensor, color, timings, thumb)


@dataclass(frozen=True)
class DecodedPhoto:
    """One photo decoded once: the encoder's input and the image (colour works from it)."""

    tensor: np.ndarray
    image: Image.Image

    @property
    def color_pixels(self) -> np.ndarray:
        """The colour step's pixels: the whole photo shrunk to fit :data:`COLOR_SIDE`. Made
        on demand, so a request makes them on the colour thread, beside the encoder."""
        return fit_array(self.image, COLOR_SIDE)


def decode_photo(
    source: str | Path | bytes, spec: PreprocessSpec, limits: ImageLimits = DEFAULT_LIMITS
) -> DecodedPhoto:
    """Decode, validate and preprocess one photo: the step every photo goes through, at build
    and at query time, so a catalogue photo and a shopper's photo are treated alike."""
    img = decode_image(source, min_size=max(spec.size, COLOR_SIDE), limits=limits)
    return DecodedPhoto(preprocess(img, spec), img)


def fetch_photo(source: str | Path | bytes) -> str | Path | bytes:
    """A remote photo (``s3://``, ``file://``) read into bytes, at most the image byte limit (a
    larger object is refused before it is read); local paths and bytes pass through. For
    operator-given locations only (batch inputs, catalogue rows): never a client's."""
    if isinstance(source, str) and "://" in source:  # s3://, file://; other schemes refused
        return storage.read_bytes(source, max_bytes=DEFAULT_LIMITS.max_bytes)
    return source


@functools.cache
def color_method() -> str:
    """The colour step photos get here, as ``"<digest>@<side>px"``: a digest of the packaged
    colour model and family table, and :data:`COLOR_SIDE`. A build records it in its manifest
    (``build.color_method``); an engine whose own differs warns at load, since harmony compares
    query colours with catalogue colours and both must be measured alike."""
    data = resources.files("stygig")
    digest = hashlib.sha256()
    for name in ("data/color_model.json", "data/color_families.yaml"):
        digest.update(data.joinpath(name).read_bytes())
    return f"{digest.hexdigest()[:12]}@{COLOR_SIDE}px"


def color_summary(pixels: np.ndarray) -> dict[str, Any]:
    """The colour summary (as in :class:`PreparedImage`) of a photo's colour pixels."""
    return dominant_colors(pixels).to_dict()

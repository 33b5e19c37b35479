"""Calibration images for static int8: a bounded, seeded sample of the catalogue's own photos.

Static (QDQ) quantization fixes every activation's int8 range once, from what the calibration
images make the network produce; ranges taken from the photos the artifact will actually encode
fit them best, and cost nothing extra since a build has those photos at hand. The sample is
bounded (:data:`CATALOGUE_SAMPLE` photos: calibration runs the fp32 model on every one and keeps
all their activations, so cost and memory grow with it, while the ranges settle within a few
dozen photos) and seeded, so rebuilding the same catalogue gives the same model file.

A photo that cannot be read or decoded is skipped and the next one in the seeded order tried, a
bounded number of times, so a catalogue with broken rows still calibrates, and one with no
readable photo at all gives ``None`` (the caller then falls back to
:func:`~stygig.encoders.onnx.synthetic_calibration`) instead of failing the build.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from stygig.errors import InputError, StorageError
from stygig.features import fetch_photo
from stygig.images import CATALOG_LIMITS, PreprocessSpec, decode_image, preprocess_batch

__all__ = ["CATALOGUE_SAMPLE", "Calibration", "catalogue_calibration"]

CATALOGUE_SAMPLE = 64
"""Photos drawn for calibration. 16, 64 and 256 photos gave the same drift to fp32 within
seed-to-seed noise (mean cosine 0.9943-0.9952 on 512 held-out Kaggle photos,
``benchmarks/bench_quantization.py``); 64 decode in ~0.1 s and keep a margin for catalogues less
uniform than Kaggle's white-background shots."""


@dataclass(frozen=True)
class Calibration:
    """Preprocessed calibration images and where they came from (recorded in the manifest).

    Attributes:
        images: ``float32 (n, 3, S, S)``, preprocessed for the encoder being quantized.
        source: ``"catalogue"`` (the build's photos), ``"synthetic"`` (drawn shapes) or
            ``"given"`` (an array the caller passed without saying what it is).
    """

    images: np.ndarray
    source: str

    def describe(self) -> str:
        """``"64 catalogue images"``: the part of the manifest's quantization method it fills."""
        return f"{len(self.images)} {self.source} images"


def _decode(source: str | Path | bytes, spec: PreprocessSpec) -> Image.Image | None:
    """One photo decoded at reduced scale, or None when it cannot be read or decoded."""
    try:
        return decode_image(fetch_photo(source), min_size=spec.size, limits=CATALOG_LIMITS)
    except (InputError, StorageError):  # missing, unreadable, corrupt, too large, unsupported
        return None


def catalogue_calibration(
    sources: Sequence[str | Path | bytes],
    spec: PreprocessSpec,
    *,
    n: int = CATALOGUE_SAMPLE,
    seed: int = 0,
    max_attempts: int | None = None,
) -> Calibration | None:
    """Up to ``n`` of ``sources`` (photo paths, ``s3://`` URIs or bytes), decoded and preprocessed.

    Photos are taken in a seeded random order (the same for the same ``sources`` and ``seed``);
    undecodable ones are skipped, and at most ``max_attempts`` (default ``4 * n``) are tried, so a
    catalogue of mostly broken rows cannot make calibration read it all.

    Args:
        sources: the catalogue's photos, e.g. ``[item.image for item in read.items]``.
        spec: the preprocessing of the encoder being quantized.
        n: how many photos to keep.
        seed: the sampling seed.
        max_attempts: how many photos to try at most.

    Returns:
        The calibration set, or None when no photo decoded.

    Raises:
        ValueError: ``n`` is not positive.
    """
    if n <= 0:
        raise ValueError("a calibration sample needs n >= 1 photos")
    budget = max_attempts if max_attempts is not None else 4 * n
    order = np.random.default_rng(seed).permutation(len(sources))[:budget]
    images: list[Image.Image] = []
    for i in order:
        img = _decode(sources[int(i)], spec)
        if img is not None:
            images.append(img)
            if len(images) == n:
                break
    if not images:
        return None
    return Calibration(preprocess_batch(images, spec), "catalogue")

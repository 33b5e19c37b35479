"""StyGig: fashion outfit recommendation — photo in, outfit out.

The public API, imported lazily so that ``import stygig`` (and the CLI) stays fast::

    from stygig import Recommender, Query, Options
    rec = Recommender.from_path("build/demo/artifact")
    rec.recommend(Query(images=("shirt.jpg",)), Options(k=3)).to_dict()

``recommend`` is the pipeline in line; ``prepare``, ``embed`` and ``answer`` are its three steps
for callers that embed their own way (see :mod:`stygig.pipeline`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stygig._exports import lazy_getattr

__version__ = "0.1.0"

_EXPORTS = {
    "Artifact": "stygig.artifact",
    "Item": "stygig.catalog",
    "Taxonomy": "stygig.catalog",
    "read_catalog": "stygig.catalog",
    "build_artifact": "stygig.build",
    "make_build_encoder": "stygig.build",
    "load_encoder": "stygig.encoders",
    "Recommender": "stygig.engine",
    "Options": "stygig.recommendation",
    "Query": "stygig.recommendation",
    "Recommendation": "stygig.answer",
    "PreparedQuery": "stygig.pipeline",
    "StygigError": "stygig.errors",
}

__all__ = [
    "Artifact",
    "Item",
    "Options",
    "PreparedQuery",
    "Query",
    "Recommendation",
    "Recommender",
    "StygigError",
    "Taxonomy",
    "__version__",
    "build_artifact",
    "load_encoder",
    "make_build_encoder",
    "read_catalog",
]

if TYPE_CHECKING:
    from stygig.answer import Recommendation
    from stygig.artifact import Artifact
    from stygig.build import build_artifact, make_build_encoder
    from stygig.catalog import Item, Taxonomy, read_catalog
    from stygig.encoders import load_encoder
    from stygig.engine import Recommender
    from stygig.errors import StygigError
    from stygig.pipeline import PreparedQuery
    from stygig.recommendation import Options, Query


__getattr__ = lazy_getattr(__name__, _EXPORTS)

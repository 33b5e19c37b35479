"""``stygig train-compat``: learn outfit compatibility from a stylists' outfits file.

Thin wiring around :func:`stygig.training.compat.train_compat`; heavy imports (torch) happen only
when the command runs, so ``stygig --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from stygig.arguments import count, positive, seed

__all__ = ["register", "run_train_compat"]


def register(subparsers: Any) -> None:
    """Add the ``train-compat`` subcommand to ``stygig``'s argparse subparsers."""
    p = subparsers.add_parser(
        "train-compat",
        help="learn outfit compatibility from stylists' outfits into an artifact",
    )
    p.add_argument("--outfits", required=True, help="cod_outfit,cod_modelo_color CSV")
    p.add_argument("--artifact", required=True, help="artifact directory (the model is added)")
    p.add_argument(
        "--catalog", help="the catalogue the artifact was built from (checked, optional)"
    )
    p.add_argument(
        "--seed", type=seed, default=0, help="split and training seed, 0 to 2**32 - 1 (eval: 0)"
    )
    p.add_argument("--epochs", type=positive, default=None, help="training epochs")
    p.add_argument("--whiten", action="store_true", help="PCA-whiten the embeddings first")
    p.add_argument(
        "--style-dims",
        type=count,
        default=None,
        help="components of the catalogue photos' style (default 256; 0: none, no photo read)",
    )
    p.add_argument("--no-rules-weight", action="store_true", help="keep the V4 weight at 0")
    p.add_argument(
        "--replace",
        action="store_true",
        help="train a new model in place of the one the artifact holds (refused without it)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_train_compat)


def run_train_compat(args: argparse.Namespace) -> int:
    """Train, then store the model in the artifact (manifest rewritten atomically)."""
    from dataclasses import replace

    from stygig.artifact import Artifact, add_compat_model
    from stygig.engine import Recommender
    from stygig.errors import CatalogError, InvalidOptionsError
    from stygig.evaluation.fitb import read_outfits, scoring_config
    from stygig.training.compat import TrainConfig, train_compat

    artifact = Artifact.load(args.artifact)
    held = artifact.manifest.get("compat")
    if held and not args.replace:
        # Minutes to hours of training, replaced without a word before (review, session 51).
        trained = held if isinstance(held, dict) else {}
        source = Path(str(trained.get("outfits_file", "an outfits file"))).name
        raise InvalidOptionsError(
            f"the artifact already holds a compatibility model (trained on {source}, seed "
            f"{trained.get('seed', '?')}): --replace trains a new one in its place"
        )
    if args.catalog and not Path(args.catalog).is_file():
        raise CatalogError(f"--catalog {args.catalog}: no such file")
    built_from = artifact.manifest.get("build", {}).get("catalog")
    if args.catalog and built_from and Path(built_from).resolve() != Path(args.catalog).resolve():
        print(f"warning: artifact was built from {built_from}, not {args.catalog}", file=sys.stderr)
    outfits = read_outfits(args.outfits)
    config = TrainConfig(seed=args.seed, whiten=args.whiten)
    if args.epochs is not None:
        config = replace(config, epochs=args.epochs)
    if args.style_dims is not None:
        config = replace(config, style_dims=args.style_dims)
    v4 = None
    if not args.no_rules_weight:
        v4 = Recommender(artifact, config=scoring_config("rules")).score_items
    result = train_compat(artifact, outfits, config, v4_scorer=v4, progress=not args.quiet)
    outfit = result.model.outfit_absent_weight
    info = {
        "outfits_file": str(args.outfits),
        "seed": args.seed,
        "seconds": round(result.seconds, 1),
        "split": result.split,
        "best_epoch": result.model.info.get("best_epoch"),
        "validation": result.model.info.get("validation"),
        "rules_weight": result.model.rules_weight,
        "cooc_weight": round(result.model.cooc_weight, 4),
        "style": result.model.info.get("style") or None,
        # For outfit scores; null (NaN in the model): the learned absence weight.
        "outfit_absent_weight": None if math.isnan(outfit) else outfit,
    }
    path = add_compat_model(args.artifact, result.model, info)
    print(json.dumps(info, indent=2))
    print(f"model: {path}")
    return 0

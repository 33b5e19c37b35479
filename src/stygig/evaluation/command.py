"""``stygig eval``: category votes, colour, outfit validity and FITB on the shared datasets.

Thin wiring: build (or reuse) one artifact per dataset under ``<out>/artifacts``, run the parts
that have data, write ``metrics.json`` and ``metrics.png``. A missing dataset skips its parts
with a printed reason; it is not an error.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from stygig.artifact import Artifact, read_manifest
from stygig.errors import ArtifactError

__all__ = ["TARGETS", "cached_artifact", "register", "run_eval"]

#: Targets with efficientnet-lite0 (``docs/evaluation.md``).
TARGETS = {
    "subCategory": 0.965,
    "articleType": 0.87,
    "validity": 0.98,
    # The learned compatibility model (docs/compat.md).
    "fitb_uniform": 0.62,
    "fitb_matched": 0.52,
    "fitb_cold_start": 0.40,
    "auc": 0.87,
}
KAGGLE = Path("fashion-products") / "styles.csv"
MANGO = Path("mango-outfits") / "product_data.csv"
MANGO_OUTFITS = Path("mango-outfits") / "outfits.csv"


def register(subparsers: Any) -> None:
    """Add the ``eval`` subcommand to ``stygig``'s argparse subparsers."""
    p = subparsers.add_parser("eval", help="measure accuracy on the shared evaluation datasets")
    p.add_argument("--datasets", default=str(Path("..") / "shared" / "datasets"))
    p.add_argument("--encoder", default="efficientnet-lite0")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(Path("build") / "eval"), help="metrics + cached artifacts")
    p.add_argument("--outfits", help="outfits CSV (cod_outfit,cod_modelo_color) for FITB")
    p.add_argument("--only", choices=["category", "fitb"], help="run one part only")
    p.add_argument("--limit", type=int, default=None, help="at most N queries / test outfits")
    p.add_argument("--tune-whitening", action="store_true", help="grid-search on the catalogue")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_eval)


def cached_artifact(catalog: Path, out: Path, encoder_name: str, *, progress: bool = True) -> Path:
    """The artifact of ``catalog`` under ``out``, built once per (catalogue, encoder)."""
    from stygig.build import build_artifact, make_build_encoder

    try:
        manifest = read_manifest(out)
        same = manifest["encoder"]["name"] == encoder_name and not manifest.get("whitening")
        if same and manifest["build"].get("catalog") == str(catalog):
            print(f"reusing artifact {out}")
            return out
    except (ArtifactError, KeyError):
        pass
    print(f"building artifact {out} from {catalog} with {encoder_name} (cached for re-runs)")
    with make_build_encoder(encoder_name) as (encoder, extra_files):
        # Plain embeddings: the evaluation fits whitening itself, on its catalogue split only.
        result = build_artifact(
            catalog,
            out,
            encoder,
            index_kind="exact",
            extra_files=extra_files,
            whiten=False,
            progress=progress,
        )
    print(f"  {result.items} items in {result.seconds:.0f}s")
    return result.path


def _dataset_artifact(
    args: argparse.Namespace,
    catalog: Path,
    needed: list[Path],
    cache: str,
    part: tuple[str, str],
    metrics: dict[str, Any],
) -> Artifact | None:
    """The artifact of ``catalog``, cached as ``<out>/artifacts/<cache>-<encoder>``.

    None when a ``needed`` file is absent: the ``part`` (metrics key, description) is skipped
    and the reason recorded.
    """
    name, what = part
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        reason = f"{', '.join(missing)} not found: {what} skipped"
        print(f"skip: {reason}")
        metrics["skipped"][name] = reason
        return None
    path = cached_artifact(
        catalog.resolve(),
        Path(args.out) / "artifacts" / f"{cache}-{args.encoder}",
        args.encoder,
        progress=not args.quiet,
    )
    return Artifact.load(path)


def _photos(args: argparse.Namespace, root: Path, metrics: dict[str, Any]) -> None:
    from stygig.evaluation.category import evaluate_photos

    catalog = root / KAGGLE
    art = _dataset_artifact(
        args, catalog, [catalog], "kaggle", ("category", "category, colour and validity"), metrics
    )
    if art is not None:
        metrics.update(
            evaluate_photos(art, seed=args.seed, limit=args.limit, tune=args.tune_whitening)
        )


def _outfits(args: argparse.Namespace, root: Path, metrics: dict[str, Any]) -> None:
    from stygig.evaluation.fitb import evaluate_outfits

    catalog = root / MANGO
    outfits = Path(args.outfits) if args.outfits else root / MANGO_OUTFITS
    art = _dataset_artifact(
        args, catalog, [catalog, outfits], "mango", ("fitb", "fill-in-the-blank"), metrics
    )
    if art is None:
        return
    metrics["fitb"] = evaluate_outfits(
        art, outfits, Path(args.out), seed=args.seed, limit=args.limit
    )


def run_eval(args: argparse.Namespace) -> int:
    """Run the requested parts and write ``metrics.json`` + ``metrics.png``."""
    from stygig.evaluation.report import (
        bars_from_metrics,
        fitb_table,
        write_chart,
        write_gender_chart,
        write_metrics,
    )

    started = time.perf_counter()
    root = Path(args.datasets)
    metrics: dict[str, Any] = {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seed": args.seed,
        "encoder": args.encoder,
        "datasets": str(root),
        "limit": args.limit,
        "targets": TARGETS,
        "skipped": {},
    }
    if args.only in (None, "category"):
        _photos(args, root, metrics)
    if args.only in (None, "fitb"):
        _outfits(args, root, metrics)
    metrics["seconds"] = round(time.perf_counter() - started, 1)
    out = Path(args.out)
    json_path = write_metrics(metrics, out)
    bars = bars_from_metrics(metrics)
    png_path = write_chart(
        bars,
        out,
        title=f"StyGig eval: {args.encoder}, seed {args.seed}"
        + (f", limit {args.limit}" if args.limit else ""),
    )
    gender_png = write_gender_chart(metrics, out)
    for bar in bars:
        target = f"  (target {bar.target:.1%})" if bar.target is not None else ""
        print(f"{bar.group:<18} {bar.label:<28} {bar.value:7.2%}{target}")
    if "fitb" in metrics:
        print(fitb_table(metrics))
    print(f"metrics: {json_path}\nchart:   {png_path}")
    if gender_png is not None:
        print(f"gender:  {gender_png}")
    return 0

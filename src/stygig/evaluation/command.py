"""``stygig eval``: category votes, colour, outfit validity and FITB on the shared datasets.

Thin wiring: build (or reuse) one artifact per dataset under ``<out>/artifacts``, run the parts
that have data, write ``metrics.json``, ``metrics.png`` and the FITB questions into a new run
folder ``<out>/runs/<UTC time>-<part>-<outfits>-seed<seed>-<model>``, never over another run's
(``<out>/LATEST`` names the newest). A missing dataset skips its parts with a printed reason;
it is not an error.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from stygig.arguments import positive, seed
from stygig.artifact import Artifact, encoder_pooling, file_sha256, read_manifest
from stygig.compat.model import COMPAT_FILE
from stygig.encoders.base import ENCODER_NAMES
from stygig.errors import (
    ArtifactError,
    CatalogError,
    ConfigError,
    InvalidOptionsError,
    StygigError,
)

__all__ = ["TARGETS", "cached_artifact", "new_run_dir", "register", "run_eval"]

#: Targets with efficientnet-lite0, on held-out data (issue 16; ``docs/evaluation.md``).
TARGETS = {
    "subCategory": 0.975,
    "articleType": 0.90,
    "validity": 0.98,
    # FITB: popularity-matched is the headline; the learned scorer must beat what outfit
    # statistics alone reach (co-occurrence + popularity) by this margin, matched.
    "fitb_matched": 0.75,
    # Cold start: the questions where no candidate has a history (the "cold" sampling).
    "fitb_cold_start": 0.60,
    "fitb_collection": 0.75,
    "auc_single_swap": 0.85,
    "fitb_margin_over_cooccurrence_popularity": 0.15,
}
KAGGLE = Path("fashion-products") / "styles.csv"
MANGO = Path("mango-outfits") / "product_data.csv"
MANGO_OUTFITS = Path("mango-outfits") / "outfits.csv"


def register(subparsers: Any) -> None:
    """Add the ``eval`` subcommand to ``stygig``'s argparse subparsers."""
    p = subparsers.add_parser("eval", help="measure accuracy on the shared evaluation datasets")
    p.add_argument("--datasets", default=str(Path("..") / "shared" / "datasets"))
    p.add_argument(  # a choice: "bogus" failed only once an artifact was being built
        "--encoder", default="efficientnet-lite0", choices=ENCODER_NAMES
    )
    p.add_argument("--seed", type=seed, default=0, help="split seed (0 to 2**32 - 1)")
    p.add_argument(
        "--out",
        default=str(Path("build") / "eval"),
        help="run folders (metrics, questions) + cached artifacts",
    )
    p.add_argument(
        "--outfits",
        help="outfits CSV (cod_outfit,cod_modelo_color) split by --seed: a model's training "
        "outfits and, unless --test-outfits, the test outfits (default: MANGO's outfits.csv)",
    )
    p.add_argument(
        "--test-outfits",
        help="score every outfit of this CSV (same format) instead of --outfits' test part",
    )
    p.add_argument("--only", choices=["category", "fitb"], help="run one part only")
    p.add_argument(
        "--limit", type=positive, default=None, help="at most N queries / test outfits (N >= 1)"
    )
    p.add_argument("--tune-whitening", action="store_true", help="grid-search on the catalogue")
    p.add_argument(
        "--category-head",
        action="store_true",
        help="also fit the category head on the catalogue split and merge it with the vote",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_eval)


def cached_artifact(catalog: Path, out: Path, encoder_name: str, *, progress: bool = True) -> Path:
    """The artifact of ``catalog`` under ``out``, built once per (catalogue, encoder)."""
    from stygig.build import build_artifact, make_build_encoder
    from stygig.encoders.efficientnet import DEFAULT_POOLING, is_efficientnet

    # The catalogue's bytes, not only its path: a product file edited in place (rows cut,
    # say) must not be evaluated against the artifact of its old rows.
    source = out.with_name(out.name + ".source.json")
    digest = file_sha256(catalog)
    try:
        manifest = read_manifest(out)
        same = manifest["encoder"]["name"] == encoder_name and not manifest.get("whitening")
        if is_efficientnet(encoder_name):  # vectors of today's pool only
            same = same and encoder_pooling(manifest["encoder"]) == DEFAULT_POOLING
        recorded = json.loads(source.read_text(encoding="utf-8")).get("sha256")
        if same and manifest["build"].get("catalog") == str(catalog) and recorded == digest:
            print(f"reusing artifact {out}")
            return out
    except (ArtifactError, KeyError, OSError, ValueError, AttributeError):
        pass
    if (out / COMPAT_FILE).exists():
        # `stygig train-compat` put minutes to hours of training there: never built over.
        why = (
            "it was built from other catalogue bytes"
            if source.is_file()
            else "the catalogue bytes it was built from were not recorded"
        )
        raise InvalidOptionsError(
            f"{out} holds a trained compatibility model ({COMPAT_FILE}) but is not the current "
            f"build of {catalog.name} with {encoder_name} ({why}); evaluation will not build "
            "over it: move the artifact elsewhere or pass another --out"
        )
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
            category_head=False,  # the evaluation fits its own on its split's catalogue rows
        )
    print(f"  {result.items} items in {result.seconds:.0f}s")
    source.write_text(json.dumps({"catalog": str(catalog), "sha256": digest}) + "\n")
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
    if missing and args.only == name:  # the one part asked for: an error, not an empty run
        raise CatalogError(f"--only {name}: {', '.join(missing)} not found")
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


def _stack_line(stack: dict[str, Any], vote: dict[str, Any]) -> str:
    """The gender stack against the vote: validity and hedged share on the held-out photos."""
    fit = stack["fit"]
    if "skipped" in fit:
        return f"gender stack: skipped ({fit['skipped']})"
    return (
        f"gender stack: items valid {stack['items_both_valid']:.2%}, hedged "
        f"{stack['hedged_share']:.1%} (vote: {vote.get('items_both_valid', 0.0):.2%}, "
        f"{vote.get('hedged_share', 0.0):.1%}; gate {fit['gate']:.3f}, chosen on the catalogue)"
    )


def _photos(args: argparse.Namespace, root: Path, metrics: dict[str, Any]) -> None:
    from stygig.evaluation.category import evaluate_photos

    catalog = root / KAGGLE
    art = _dataset_artifact(
        args, catalog, [catalog], "kaggle", ("category", "category, colour and validity"), metrics
    )
    if art is not None:
        metrics.update(
            evaluate_photos(
                art,
                seed=args.seed,
                limit=args.limit,
                tune=args.tune_whitening,
                head=getattr(args, "category_head", False),
            )
        )


def _outfits_file(args: argparse.Namespace, root: Path) -> Path:
    return Path(args.outfits) if args.outfits else root / MANGO_OUTFITS


def _outfits_artifact(
    args: argparse.Namespace, root: Path, metrics: dict[str, Any]
) -> Artifact | None:
    """The MANGO artifact, its model checked against this run's split at once (a refusal
    after the category part would have cost its minutes first); None when skipped."""
    from stygig.evaluation.fitb import check_model_split, read_outfits
    from stygig.evaluation.split import split_ids

    outfits = _outfits_file(args, root)
    test_file = Path(args.test_outfits) if args.test_outfits else None
    needed = [root / MANGO, outfits] + ([test_file] if test_file else [])
    art = _dataset_artifact(
        args, root / MANGO, needed, "mango", ("fitb", "fill-in-the-blank"), metrics
    )
    if art is not None and art.compat is not None:
        rows = read_outfits(outfits, warn=False)  # the run reads it again, and warns
        train, _ = split_ids(list(rows), seed=args.seed)
        check_model_split(art, rows, train, seed=args.seed, outfits_name=outfits.name)
    return art


def _outfits(args: argparse.Namespace, art: Artifact, metrics: dict[str, Any], run: Path) -> None:
    from stygig.evaluation.fitb import evaluate_outfits

    test_file = Path(args.test_outfits) if args.test_outfits else None
    metrics["fitb"] = evaluate_outfits(
        art,
        _outfits_file(args, Path(args.datasets)),
        run,
        seed=args.seed,
        limit=args.limit,
        test_outfits_file=test_file,
        progress=not args.quiet,
    )
    fitb = metrics["fitb"]
    missing = fitb["outfit_items"] - fitb["outfit_items_in_catalog"]
    if missing:  # asked without them: said, not silently dropped (review, session 42)
        print(
            f"note: {missing:,} of the {fitb['outfit_items']:,} items of the outfits asked "
            "about are not in the catalogue; their outfits are asked without them"
        )
    split = fitb["split"]
    left = (
        split["test_outfits_inside_a_train_outfit_left_out"]
        + split["test_outfits_near_a_train_outfit_left_out"]
    )
    if left:
        print(
            f"note: {left:,} test outfit(s) left out as (parts of) train outfits or train "
            f"outfits with one item added or changed; {split['test_outfits']:,} asked about"
        )


def _model_tag(args: argparse.Namespace) -> str:
    """``model<sha256 of compat.npz, 10 hex>`` of the cached MANGO artifact, else ``rules``."""
    if args.only == "category":
        return ""
    try:
        manifest = read_manifest(Path(args.out) / "artifacts" / f"mango-{args.encoder}")
        return "model" + str(manifest["files"]["compat.npz"]["sha256"])[:10]
    except (ArtifactError, KeyError, TypeError):
        return "rules"


def new_run_dir(out: Path, parts: list[str]) -> Path:
    """A new folder ``<out>/runs/<parts joined by ->``, suffixed ``-2``, ``-3``, ... when
    another run took the name (same second): runs never share or overwrite files."""
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    name = "-".join(p for p in parts if p)
    for n in range(1, 1000):
        path = runs / (name if n == 1 else f"{name}-{n}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise ConfigError(f"too many runs named {name} in {runs.name}")


def _point_latest(out: Path, run: Path) -> None:
    """``<out>/LATEST``: the newest run's folder name (replaced atomically; no metrics)."""
    tmp = out / f".LATEST.{os.getpid()}"
    tmp.write_text(run.name + "\n", encoding="utf-8")
    os.replace(tmp, out / "LATEST")


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
    now = time.gmtime()
    out = Path(args.out)
    if (out / "manifest.json").exists():  # its runs/ and LATEST would break the artifact
        raise InvalidOptionsError(
            f"--out {out} is an artifact folder; name a folder for evaluation runs instead"
        )
    for flag, given in (
        ("--tune-whitening", args.tune_whitening),
        ("--category-head", getattr(args, "category_head", False)),
    ):
        if given and args.only == "fitb":  # accepted and ignored before (review, session 53)
            raise InvalidOptionsError(f"{flag} is for the category votes; --only fitb runs none")
    for flag, named in (("--outfits", args.outfits), ("--test-outfits", args.test_outfits)):
        if named and args.only == "category":  # read and ignored before (review, session 51)
            raise InvalidOptionsError(
                f"{flag} is for the outfit questions; --only category reads no outfits"
            )
        if named and not Path(named).is_file():  # named by the user: a typo is not a skip
            raise CatalogError(f"{flag} {named}: no such file")
        if named:  # read now, not after an artifact is built for it (review, session 49)
            from stygig.evaluation.fitb import read_outfits

            try:
                read_outfits(named, warn=False)  # the run reads it again, and warns
            except StygigError as e:  # its message names the file already
                raise CatalogError(f"{flag}: {e.message}") from None
    # A folder that is not there: an empty run exited 0 (review, session 49; --only fitb
    # says so itself).
    if args.only != "fitb" and not root.is_dir():
        raise CatalogError(f"--datasets {root}: no such folder, so nothing would be evaluated")
    stem = Path(args.test_outfits or args.outfits or MANGO_OUTFITS).stem
    run = new_run_dir(
        out,
        [
            time.strftime("%Y%m%dT%H%M%SZ", now),
            args.only or "all",
            "" if args.only == "category" else stem,
            f"seed{args.seed}",
            _model_tag(args),
            f"limit{args.limit}" if args.limit else "",
        ],
    )
    metrics: dict[str, Any] = {
        "run": run.name,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", now),
        "seed": args.seed,
        "encoder": args.encoder,
        "datasets": str(root),
        "limit": args.limit,
        "targets": TARGETS,
        "skipped": {},
    }
    try:
        mango = _outfits_artifact(args, root, metrics) if args.only in (None, "fitb") else None
        if args.only in (None, "category"):
            _photos(args, root, metrics)
        if mango is not None:
            _outfits(args, mango, metrics, run)
    except BaseException:
        if not any(run.iterdir()):
            run.rmdir()  # a refused run (say, a model of another split) leaves nothing behind
        raise
    metrics["seconds"] = round(time.perf_counter() - started, 1)
    json_path = write_metrics(metrics, run)
    bars = bars_from_metrics(metrics)
    png_path = write_chart(
        bars,
        run,
        title=f"StyGig eval: {args.encoder}, seed {args.seed}"
        + (f", limit {args.limit}" if args.limit else ""),
    )
    gender_png = write_gender_chart(metrics, run)
    _point_latest(out, run)
    width = max((len(f"{b.group}: {b.label}") for b in bars), default=0)
    for bar in bars:
        target = f"  (target {bar.target:.1%})" if bar.target is not None else ""
        print(f"{bar.group + ': ' + bar.label:<{width}} {bar.value:7.2%}{target}")
    for name, row in (metrics.get("category", {}).get("head") or {}).items():
        print(
            f"category head, {name}: vote {row['vote']:.2%}, head {row['head']:.2%}, "
            f"merged {row['merged']:.2%} (head weight {row['head_weight']:.1f}, vote k "
            f"{row['vote_k']}, T {row['temperature']:g}, chosen on the catalogue)"
        )
    stack = metrics.get("validity_whitened_gender_stack")
    if stack is not None:
        print(_stack_line(stack, metrics.get("validity_whitened") or {}))
    if "fitb" in metrics:
        print(fitb_table(metrics))
    print(f"metrics: {json_path}\nchart:   {png_path}")
    if gender_png is not None:
        print(f"gender:  {gender_png}")
    return 0

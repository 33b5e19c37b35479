"""``stygig``: one command with subcommands. Thin: parse, call the library, print."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from stygig import __version__
from stygig.arguments import positive, seed
from stygig.errors import InvalidOptionsError, NotFoundError, StorageError, StygigError

__all__ = ["main"]


def _cmd_sample_catalog(args: argparse.Namespace) -> int:
    from stygig.sample_catalog import generate_sample_catalog, kaggle_demo_catalog

    if args.from_kaggle:
        csv_path = kaggle_demo_catalog(
            Path(args.from_kaggle), Path(args.out), limit=args.limit, seed=args.seed
        )
        print(f"demo catalogue from the Kaggle photos written: {csv_path}")
        return 0
    csv_path = generate_sample_catalog(Path(args.out), seed=args.seed)
    print(f"sample catalogue written: {csv_path}")
    return 0


def _cmd_pick_examples(args: argparse.Namespace) -> int:
    from stygig.demo_examples import pick_examples

    checks = pick_examples(args.artifact, Path(args.catalog_dir))
    for check in checks:
        print(check.line())
    offered = sum(c.offered is not None for c in checks)
    print(f"{offered} of {len(checks)} categories offered in {Path(args.catalog_dir) / 'queries'}")
    return 0


def build_encoder_from_args(args: argparse.Namespace, taxonomy: Any) -> Any:
    """``stygig build``'s encoder from its flags (any engine), as
    :func:`stygig.build.make_build_encoder`'s context: with ``--int8``, statically calibrated on
    the catalogue's own photos."""
    from stygig.build import catalogue_photos, make_build_encoder

    photos: list[str] = []
    if args.int8:
        photos = catalogue_photos(
            args.catalog, layout=args.format, images_dir=args.images, taxonomy=taxonomy
        )
    return make_build_encoder(
        args.encoder,
        runtime=args.runtime,
        weights=args.weights,
        int8=args.int8,
        random_weights=args.random_weights,
        calibration_photos=photos,
    )


def build_options(args: argparse.Namespace, taxonomy: Any, extra_files: Any) -> dict[str, Any]:
    """The options ``stygig build``'s flags give :func:`stygig.build.build_artifact` and its Ray
    twin alike (the encoder's files from :func:`build_encoder_from_args`)."""
    from stygig.build import index_params

    return {
        "layout": args.format,
        "images_dir": args.images,
        "taxonomy": taxonomy,
        "index_kind": args.index,
        "index_params": index_params(args.partition_by, args.nprobe),
        "batch_size": args.batch_size,
        "extra_files": extra_files,
        "whiten": args.whiten,
        "category_head": args.category_head,
        "progress": not args.quiet,
    }


def _cmd_build(args: argparse.Namespace) -> int:
    if getattr(args, "engine", "local") == "ray":
        from stygig.distributed.command import run_build_ray_command

        return run_build_ray_command(args)
    from stygig.build import build_artifact, print_build_result
    from stygig.catalog import Taxonomy

    taxonomy = Taxonomy.load(args.taxonomy) if args.taxonomy else None
    with _terminate_as_interrupt(), build_encoder_from_args(args, taxonomy) as (encoder, extra):
        result = build_artifact(
            args.catalog,
            args.out,
            encoder,
            workers=args.workers,
            **build_options(args, taxonomy, extra),
        )
    print_build_result(result)
    return 0


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a container stopped, a job killed) ends the build as Ctrl-C does, so its
    clean-up runs: by default it killed the process mid-write and left a partial artifact
    folder beside the output that no later build removed (review, session 36)."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread (a library caller): leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _cmd_inspect(args: argparse.Namespace) -> int:
    from stygig.artifact import Artifact

    art = Artifact.load(args.artifact, verify=not args.no_verify)
    summary = art.summary()
    if args.json:
        print(json.dumps(art.manifest if args.full else summary, indent=2))
        return 0
    enc = summary["encoder"]
    counts = summary["counts"]
    print(f"artifact       {summary['path']}")
    print(f"format         v{summary['format_version']}  built {summary['created_at']}")
    pooling = f", {enc['pooling']} pooling" if enc.get("pooling") else ""
    if enc.get("pooling") and not enc.get("pooling_recorded"):
        pooling += " (built before pooling was recorded)"
    print(
        f"encoder        {enc['name']} ({enc['dim']}-d, {enc['runtime']}, "
        f"{enc['quantization'] or 'fp32'}"
        f"{pooling})"
    )
    print(f"index          {summary['index']['kind']} {summary['index']['params']}")
    print(f"items          {counts['items']}")
    for cat, n in counts["by_category"].items():
        print(f"  {cat:<16} {n}")
    print(f"rejects        {counts['rejects']}")
    for reason, n in counts["rejects_by_reason"].items():
        print(f"  {reason:<16} {n}")
    ips = (summary.get("build") or {}).get("images_per_second")
    if ips:
        print(f"build speed    {ips:.1f} images/s")
    print("checksums      ok" if not args.no_verify else "checksums      not verified")
    return 0


def _parse_filters(pairs: list[str]) -> dict[str, Any]:
    """``key=value``, ``key=a,b`` (any of) or ``key=min..max`` (numeric range)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidOptionsError(f"--filter expects key=value, not {pair!r}")
        if ".." in value:
            low, _, high = value.partition("..")
            try:
                out[key] = {k: float(v) for k, v in (("min", low), ("max", high)) if v}
            except ValueError as e:
                raise InvalidOptionsError(f"--filter {pair!r}: a range is min..max numbers") from e
        elif "," in value:
            out[key] = value.split(",")
        else:
            out[key] = value
    return out


def _say(line: str) -> None:
    """Print a line that holds catalogue text, its control characters written out: an item
    name's escape sequences retitled, cleared or wrote the clipboard of the terminal before
    (review, session 40; text in artifacts built earlier may still hold them)."""
    from stygig.catalog.schema import shown

    # and its line ends: a name holding one printed a line of its own (review, session 40)
    print(shown(line).replace("\n", "\\n").replace("\r", "\\r"))


def _print_table(rec: dict[str, Any]) -> None:
    """The answer as a table; catalogue text as a terminal shows it (:func:`_say`)."""
    for part in rec["query"]:
        votes = ", ".join(f"{c} {n}" for c, n in part.get("votes", {}).items())
        _say(
            f"query {part['source']}: {part['category']} ({part['category_source']}"
            f"{'; votes ' + votes if votes else ''}) colour {part['hex']} rgb {tuple(part['rgb'])}"
        )
        if part.get("unlike_catalogue"):
            _say(
                f"  unlike the catalogue (likeness {part['likeness']:.2f}): the category and "
                "the outfit are a guess"
            )
    gender = rec.get("gender") or {}
    if gender.get("source") == "uncertain":
        then = "unisex items only" if gender.get("hedged") else "not filtered by it"
        if gender.get("value"):
            then = f"used anyway ({gender['value']} items and unisex)"
        _say(
            f"gender: uncertain (best guess {gender['guess']}, {gender['confidence']:.0%} of the "
            f"vote): {then}; --gender states it"
        )
    elif gender.get("value"):
        confidence = gender.get("confidence")  # None for a stated gender or an item's
        sure = f", {confidence:.0%} of the vote" if confidence is not None else ""
        _say(f"gender: {gender['value']} ({gender['source']}{sure})")
    if rec["outfit"]:
        print()
        _say("outfit:")
        for slot, item in rec["outfit"]["slots"].items():
            _say(
                f"  {slot:<10} {item['id']:<14} {item['category']:<14} {item['hex']}  {item['name']}"
            )
    print()
    _say(
        f"{'id':<14} {'category':<14} {'colour':<8} {'score':>6} {'sim':>6} {'harm':>5} {'boost':>5}  reason"
    )
    if not rec["items"]:
        _say("(no item passed the filters and options: loosen --filter, --gender or --include)")
    for item in rec["items"]:
        harmony = "-" if item["harmony"] is None else f"{item['harmony']:.2f}"
        _say(
            f"{item['id']:<14} {item['category']:<14} {item['hex'] or '':<8} {item['score']:>6.3f} "
            f"{item['similarity']:>6.3f} {harmony:>5} {item['boost']:>5.2f}  {item['reason']}"
        )
    timings = ", ".join(f"{k} {v:.1f}" for k, v in rec["timings_ms"].items())
    print()
    _say(f"timings (ms): {timings}")


def _cmd_recommend(args: argparse.Namespace) -> int:
    from stygig.engine import Options, Query, Recommender
    from stygig.serving.catalog_command import answer_change_log, apply_answer_change_log

    options = Options(
        mode=args.mode,
        k=args.k,
        k_total=args.k_total,
        category=args.category,
        gender=args.gender,
        include_categories=tuple(args.include or ()),
        exclude_categories=tuple(args.exclude or ()),
        exclude_ids=tuple(args.exclude_id or ()),
        filters=_parse_filters(args.filter or []),
        use_color=not args.no_color,
        diversity=args.diversity,
        seed=args.seed,
        include_unavailable=args.include_unavailable,
        use_category_head=not args.no_category_head,
        candidate_ids=tuple(args.candidate or ()),
    )
    for photo in args.photos:  # the user's own files: named (a server never names paths)
        if not Path(photo).is_file():
            # Said as it is (a FIFO or a folder was "no such photo file"), and named with
            # its control characters escaped: a path is printed to the user's terminal
            # (review, session 49).
            from stygig.catalog.schema import shown

            if os.path.lexists(photo):
                why, code = "not a regular file (a photo is read from a file)", "not_a_regular_file"
            else:
                why, code = "no such photo file", "image_not_found"
            raise InvalidOptionsError(f"{shown(photo)}: {why}", code=code)
    query = Query(images=tuple(Path(p) for p in args.photos), item_ids=tuple(args.item or ()))
    recommender = Recommender.from_path(args.artifact)
    change_log = answer_change_log(args.artifact, args.change_log, use=not args.no_change_log)
    if note := apply_answer_change_log(recommender, args.artifact, change_log):
        print(note, file=sys.stderr)
    unknown = [i for i in query.item_ids if i not in recommender.artifact.positions]
    if unknown:
        raise NotFoundError(
            f"not in the catalogue: {', '.join(repr(i[:80]) for i in unknown[:5])}",
            code="unknown_item",
        )
    answer = recommender.recommend(query, options)
    if args.json:
        print(answer.to_json().decode())
    else:
        _print_table(answer.to_dict())
    return 0


def _cmd_score_outfit(args: argparse.Namespace) -> int:
    """``POST /v1/outfits/score`` on an artifact folder: how well a set of items goes together."""
    from stygig.engine import Recommender
    from stygig.recommendation import OutfitRequest
    from stygig.serving.catalog_command import answer_change_log, apply_answer_change_log

    request = OutfitRequest(tuple(args.item_ids), use_color=not args.no_color)
    recommender = Recommender.from_path(args.artifact)
    change_log = answer_change_log(args.artifact, args.change_log, use=not args.no_change_log)
    if note := apply_answer_change_log(recommender, args.artifact, change_log):
        print(note, file=sys.stderr)
    unknown = [i for i in request.item_ids if i not in recommender.artifact.positions]
    if unknown:  # the user's own ids: named
        raise NotFoundError(
            f"not in the catalogue: {', '.join(repr(i[:80]) for i in unknown[:5])}",
            code="unknown_item",
        )
    answer = recommender.score_outfit(request)
    if args.json:
        print(answer.to_json().decode())
        return 0
    _say(
        f"outfit score {answer.score:.4f} (the weakest item, {answer.weakest_item}); pairs' mean "
        f"{answer.pair_mean:.4f}; scoring {answer.scoring}"
        + ("" if answer.compatible else "; not every pair of categories goes together")
    )
    _say(f"{'item':<16} {'category':<14} {'score':>7}")
    for item in answer.items:
        _say(f"{item.id:<16} {item.category:<14} {item.score:>7.4f}")
    _say(f"{'pair':<33} {'score':>7} {'sim':>6} {'harm':>5} {'boost':>5}")
    for pair in answer.pairs:
        _say(
            f"{pair.a + ' + ' + pair.b:<33} {pair.score:>7.4f} {pair.similarity:>6.3f} "
            f"{pair.harmony:>5.2f} {pair.boost:>5.2f}"
        )
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stygig", description="StyGig: fashion outfit recommendation. Photo in, outfit out."
    )
    parser.add_argument("--version", action="version", version=f"stygig {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("sample-catalog", help="generate the sample catalogue (drawn garments)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument(
        "--from-kaggle",
        metavar="DIR",
        default=None,
        help="build the demo from a Kaggle 'Fashion Product Images' download (the folder "
        "holding styles.csv and images/, or the one above it) instead of drawings",
    )
    p.add_argument(
        "--limit", type=int, default=3000, help="with --from-kaggle: products (default 3000)"
    )
    p.set_defaults(func=_cmd_sample_catalog)

    p = sub.add_parser(
        "pick-examples",
        help="offer as the demo's examples the held-out photos the built catalogue votes right",
    )
    p.add_argument("--artifact", required=True, help="the artifact built from the catalogue")
    p.add_argument(
        "--catalog-dir",
        required=True,
        help="the folder `sample-catalog --from-kaggle` wrote (candidates.csv, candidates/)",
    )
    p.set_defaults(func=_cmd_pick_examples)

    p = sub.add_parser("build", help="build an artifact from a catalogue and its photos")
    p.add_argument("--catalog", required=True, help="catalogue file (.csv or .jsonl)")
    p.add_argument("--format", default="auto", choices=["auto", "generic", "kaggle", "mango"])
    p.add_argument("--images", help="folder that image paths are relative to")
    p.add_argument("--encoder", default="efficientnet-lite0")
    p.add_argument("--runtime", default="auto", choices=["auto", "onnx", "torch"])
    p.add_argument(
        "--int8",
        action="store_true",
        help="int8 ONNX model (CNNs: static, calibrated on catalogue photos; CLIP: dynamic)",
    )
    p.add_argument("--weights", help="local weights (a Hugging Face CLIP checkpoint folder)")
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="randomly initialised weights (benchmarks of the architecture only)",
    )
    p.add_argument(
        "--index", default="auto", choices=["auto", "exact", "flat", "hnsw", "ivf", "ivfpq"]
    )
    p.add_argument(
        "--partition-by",
        default="auto",
        choices=["auto", "slot", "none"],
        help="one index per outfit slot (auto: with --index auto, above 50,000 items)",
    )
    p.add_argument(
        "--nprobe",
        type=int,
        help="lists probed per query by ivf / ivfpq indexes (default per kind and size: ivfpq "
        "32 up to 5M items, 24 at 10M; more: better recall, slower; docs/scale.md)",
    )
    p.add_argument(
        "--whiten",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="PCA whitening fitted on the catalogue (default: on when items >= 2 x embedding dim)",
    )
    p.add_argument(
        "--category-head",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fit the category (and usage) heads on the catalogue's labels and merge them "
        "with the neighbour vote at query time (default: on; skipped when labels are too few)",
    )
    p.add_argument("--taxonomy", help="taxonomy YAML/JSON (default: the packaged one)")
    p.add_argument("--batch-size", type=positive, default=32)
    p.add_argument(
        "--workers",
        type=positive,
        default=None,
        help="decode threads (default: the cores, at most 8)",
    )
    p.add_argument("--out", required=True, help="artifact folder to write")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    from stygig.distributed.command import add_engine_flags

    add_engine_flags(p, "build")
    p.set_defaults(func=_cmd_build)

    p = sub.add_parser("inspect", help="print an artifact's manifest and counts")
    p.add_argument("artifact")
    p.add_argument("--json", action="store_true")
    p.add_argument("--full", action="store_true", help="with --json: the whole manifest")
    p.add_argument("--no-verify", action="store_true", help="skip checksum verification")
    p.set_defaults(func=_cmd_inspect)

    from stygig.serving.catalog_command import add_answer_flags

    p = sub.add_parser("recommend", help="recommend items that go with a photo or catalogue item")
    p.add_argument("photos", nargs="*", help="query photo(s) that belong together")
    p.add_argument("--artifact", required=True)
    add_answer_flags(p)
    p.add_argument("--item", action="append", help="a catalogue item id in the query (repeat)")
    p.add_argument("--mode", default="outfit", choices=["outfit", "similar"])
    p.add_argument("--k", type=int, default=3, help="items per category")
    p.add_argument("--k-total", type=int, default=12, help="items in the ranked list")
    p.add_argument("--category", help="state the photo's category instead of voting")
    p.add_argument("--gender", help="only items for this gender (and unisex)")
    p.add_argument("--include", action="append", help="only these categories (repeat)")
    p.add_argument("--exclude", action="append", help="never these categories (repeat)")
    p.add_argument("--exclude-id", action="append", help="never these item ids (repeat)")
    p.add_argument(
        "--filter", action="append", help="attribute filter: usage=Casual, price=..50 (repeat)"
    )
    p.add_argument("--no-color", action="store_true", help="turn colour harmony off")
    p.add_argument(
        "--diversity",
        type=float,
        default=None,
        help="MMR's trade-off between score and variety, 0 to 1 (default: the scoring config's)",
    )
    p.add_argument(
        "--candidate",
        action="append",
        help="rank only these catalogue items (repeat; a stylist's shortlist)",
    )
    p.add_argument(
        "--include-unavailable", action="store_true", help="also items the shop cannot sell now"
    )
    p.add_argument(
        "--no-category-head",
        action="store_true",
        help="a photo's category by the neighbour vote alone, not merged with the artifact's head",
    )
    p.add_argument(
        "--seed", type=seed, default=0, help="seed for deterministic tie-breaking (0 to 2**32 - 1)"
    )
    p.add_argument(
        "--json", action="store_true", help="the answer as JSON, the bytes the server sends"
    )
    p.set_defaults(func=_cmd_recommend)

    p = sub.add_parser(
        "score-outfit", help="how well a set of catalogue items goes together (2 to 16 ids)"
    )
    p.add_argument("item_ids", nargs="+", help="catalogue item ids of the set")
    p.add_argument("--artifact", required=True)
    add_answer_flags(p)
    p.add_argument("--no-color", action="store_true", help="turn colour harmony off")
    p.add_argument(
        "--json", action="store_true", help="the answer as JSON, the bytes the server sends"
    )
    p.set_defaults(func=_cmd_score_outfit)

    from stygig.deploy.command import register as register_deploy
    from stygig.doctor import register as register_doctor
    from stygig.evaluation.command import register as register_eval
    from stygig.jobs.command import register as register_jobs
    from stygig.serving.catalog_command import register as register_catalog
    from stygig.serving.command import register as register_serving
    from stygig.training.command import register as register_compat

    register_eval(sub)
    register_serving(sub)
    register_jobs(sub)
    register_deploy(sub)
    register_compat(sub)
    register_doctor(sub)
    register_catalog(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stygig`` console script."""
    args = _parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except StygigError as e:
        print(f"stygig: error: {e.message}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("stygig: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        # Past the machine's (or the container's) memory: a sentence, not a traceback.
        print(
            "stygig: error: out of memory; give the command more memory, or split its input",
            file=sys.stderr,
        )
        return 1
    except BrokenPipeError:
        # The reader went away (`stygig inspect A | head`): stop quietly, as Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except OSError as e:
        # A path the operator named cannot be used (a file where a folder is needed, no
        # permission, a full disk): say which and why, not a traceback.
        where = f" ({e.filename})" if e.filename else ""
        print(f"stygig: error: {e.strerror or e}{where}", file=sys.stderr)
        return StorageError.exit_code


if __name__ == "__main__":
    sys.exit(main())

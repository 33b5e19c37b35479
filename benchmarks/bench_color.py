"""Agreement of StyGig's dominant colour with two datasets' colour labels, and its speed.

    python benchmarks/bench_color.py [--limit N] [--datasets DIR] [--side PX] [--before REV]
                                     [--before-side PX] [--out PATH]

For every labelled product photo of ``fashion-products`` (Kaggle, ``baseColour``) and
``mango-outfits`` (MANGO, ``des_agrup_color_eng``) it decodes the image, shrinks it to the
pipeline's colour size (:data:`stygig.features.COLOR_SIDE`; ``--side`` for another: the family
classifier was fitted at 64 px), runs the colour step (:func:`stygig.color.dominant_colors`,
then ``to_dict`` as the pipeline does) and compares the main colour's family with the label,
folded by the tables in ``stygig/data/color_families.yaml``.

The family classifier (``stygig/data/color_model.json``, ``benchmarks/fit_color.py``) was
fitted on the *tuning* half of each dataset (items whose ``crc32(id)`` is even) only; the
headline number is the agreement on the other, *held-out* half.

Speed is the time of the colour step alone (decoding and shrinking excluded): wall-clock median
and p99, and the median thread CPU time, which other processes on a busy machine disturb less.
The same photos also go through the colour step *before* issue 13 (``src/stygig/color.py`` at
git revision ``--before``, loaded from the repository's history, so the old code lives nowhere
but there), interleaved photo by photo in alternating order; its agreement is reported too.
``--before-side`` gives it its own input size (the same decoded photo shrunk once for each), so
a change of the pipeline's colour size is measured as the pipeline would see it.
Without git or that revision the before figures are skipped. Results go to
``benchmarks/results/color.json``. Without the datasets folder the benchmark prints why and
exits 0.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time
import types
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import stygig.color
from stygig.color import load_family_table
from stygig.features import COLOR_SIDE
from stygig.images import decode_image, fit_array

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATASETS = REPO.parent / "shared" / "datasets"
# The last commit whose colour step was k-means at 128 px (before the learned colour family);
# compare with ``--before-side 128``. 71dd81d is the one before issue 13's k-means rewrite.
DEFAULT_BEFORE = "4b86af7"


@dataclass(frozen=True)
class Item:
    """One labelled photo."""

    id: str
    path: Path
    label: str


def is_held_out(item_id: str) -> bool:
    """The evaluation half: stable under reordering, subsetting and new rows."""
    return zlib.crc32(item_id.encode()) % 2 == 1


def load_items(name: str, root: Path) -> list[Item]:
    """The rows of one dataset whose image file exists."""
    if name == "fashion-products":
        rows = csv.DictReader((root / name / "styles.csv").open(encoding="utf-8"))
        items = [
            Item(r["id"], root / name / "images" / f"{r['id']}.jpg", r["baseColour"]) for r in rows
        ]
    elif name == "mango-outfits":
        rows = csv.DictReader((root / name / "product_data.csv").open(encoding="utf-8"))
        items = [
            Item(r["cod_modelo_color"], root / name / "images" / Path(r["des_filename"]).name,
                 r["des_agrup_color_eng"])
            for r in rows
        ]  # fmt: skip
    else:
        raise ValueError(f"unknown dataset {name}")
    return [it for it in items if it.path.exists()]


def load_before(revision: str) -> types.ModuleType | None:
    """``stygig.color`` as it was at ``revision``, or None (with the reason printed)."""
    try:
        text = subprocess.run(
            ["git", "-C", str(REPO), "show", f"{revision}:src/stygig/color.py"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        module = types.ModuleType("stygig_color_before")
        sys.modules[module.__name__] = module  # dataclasses look their module up
        exec(compile(text, f"{revision}:src/stygig/color.py", "exec"), module.__dict__)
    except (OSError, subprocess.CalledProcessError, ImportError) as e:
        print(f"before: skipped, no colour step at revision {revision} ({e})")
        return None
    return module


@dataclass
class Run:
    """One implementation's answers and times over a dataset."""

    predicted: list[str] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)  # ms, dominant_colors + to_dict
    cpu: list[float] = field(default_factory=list)  # ms, thread CPU time of the same
    cpu_dominant: list[float] = field(default_factory=list)  # ms, dominant_colors alone


def _timed(module: types.ModuleType, img: np.ndarray, run: Run) -> str:
    """Run one colour step, record its times, return the main colour's family."""
    wall, cpu = time.perf_counter(), time.thread_time()
    summary = module.dominant_colors(img)
    cpu_dominant = time.thread_time()
    summary.to_dict()
    run.wall.append((time.perf_counter() - wall) * 1e3)
    run.cpu.append((time.thread_time() - cpu) * 1e3)
    run.cpu_dominant.append((cpu_dominant - cpu) * 1e3)
    family: str = summary.family
    return family


def _timings(run: Run) -> dict[str, float]:
    """Medians and 99th percentiles of one implementation's times, ms."""
    return {
        "median": float(np.median(run.wall)),
        "p99": float(np.percentile(run.wall, 99)),
        "cpu_median": float(np.median(run.cpu)),
        "cpu_p99": float(np.percentile(run.cpu, 99)),
        "dominant_colors_cpu_median": float(np.median(run.cpu_dominant)),
    }


def evaluate(
    name: str,
    items: list[Item],
    sides: dict[str, int],
    before: types.ModuleType | None,
) -> dict[str, Any]:
    """Run one dataset: agreement per half, confusion on the held-out half, timings.

    ``sides``: each implementation's input size ("after", "before").
    """
    fold = load_family_table().datasets[name]
    to_target: dict[str, str] = fold["labels"]
    family_to_target: dict[str, str] = fold.get("families") or {}
    excluded = set(fold.get("excluded") or [])
    truth: list[str] = []
    held_out: list[bool] = []
    modules = {"after": stygig.color} | ({"before": before} if before is not None else {})
    runs = {key: Run() for key in modules}
    skipped: Counter[str] = Counter()
    for item in items:
        if item.label in excluded or item.label not in to_target:
            skipped[item.label] += 1
            continue
        decoded = decode_image(item.path)
        imgs = {key: fit_array(decoded, sides[key]) for key in modules}
        order = list(modules) if len(truth) % 2 == 0 else list(modules)[::-1]  # A B, B A, ...
        for key in order:
            family = _timed(modules[key], imgs[key], runs[key])
            runs[key].predicted.append(family_to_target.get(family, family))
        truth.append(to_target[item.label])
        held_out.append(is_held_out(item.id))
    t, h = np.array(truth), np.array(held_out, dtype=bool)
    result: dict[str, Any] = {
        "items": len(items),
        "scored": len(truth),
        "left_out": dict(skipped.most_common()),
    }
    result |= _agreement(t, h, np.array(runs["after"].predicted), confusion=True)
    result["ms_per_image"] = {"side": sides["after"]} | {k: _timings(r) for k, r in runs.items()}
    if "before" in runs:
        result["ms_per_image"]["before_side"] = sides["before"]
    if "before" in runs:
        result["before"] = _agreement(t, h, np.array(runs["before"].predicted), confusion=False)
        result["ms_per_image"]["cpu_ratio_after_to_before"] = (
            result["ms_per_image"]["after"]["cpu_median"]
            / result["ms_per_image"]["before"]["cpu_median"]
        )
    return result


def _agreement(t: np.ndarray, h: np.ndarray, p: np.ndarray, confusion: bool) -> dict[str, Any]:
    """Agreement of predictions ``p`` with targets ``t`` per half (``h``: held out)."""
    agree = t == p

    def share(mask: np.ndarray) -> float:
        return float(agree[mask].mean()) if mask.any() else float("nan")

    targets = sorted(set(t.tolist()), key=lambda x: -(t == x).sum())
    recalls = [share((t == target) & h) for target in targets if ((t == target) & h).any()]
    result: dict[str, Any] = {
        "agreement": {"held_out": share(h), "tuning": share(~h), "all": share(h | ~h)},
        "balanced_agreement_held_out": float(np.mean(recalls)) if recalls else float("nan"),
        "held_out_items": int(h.sum()),
    }
    if confusion:
        result["confusion_held_out"] = {
            target: {
                "n": int(((t == target) & h).sum()),
                "agreement": share((t == target) & h),
                "predicted": dict(Counter(p[(t == target) & h].tolist()).most_common()),
            }
            for target in targets
        }
    return result


def _print(name: str, r: dict[str, Any]) -> None:
    print(
        f"\n{name}: {r['scored']} scored of {r['items']} ({sum(r['left_out'].values())} left out)"
    )
    for label, a in (("agreement", r), ("before", r.get("before"))):
        if a is not None:
            s = a["agreement"]
            print(
                f"  {label:9s}  held-out {s['held_out']:.1%}   tuning half {s['tuning']:.1%}   "
                f"all {s['all']:.1%}   (held-out, mean over labels "
                f"{a['balanced_agreement_held_out']:.1%})"
            )
    ms = r["ms_per_image"]
    before_side = f", before at {ms['before_side']} px" if "before_side" in ms else ""
    print(f"  colour step at {ms['side']} px{before_side} (dominant_colors + to_dict), per photo:")
    for label in ("after", "before"):
        if label in ms:
            t = ms[label]
            print(
                f"    {label:6s}  median {t['median']:.2f} ms   p99 {t['p99']:.2f} ms   "
                f"CPU median {t['cpu_median']:.2f} ms, p99 {t['cpu_p99']:.2f} ms   "
                f"(dominant_colors alone: CPU median {t['dominant_colors_cpu_median']:.2f} ms)"
            )
    if "cpu_ratio_after_to_before" in ms:
        print(f"    after / before, CPU medians: {ms['cpu_ratio_after_to_before']:.2f}")
    print(f"  {'label':10s} {'n':>5s} {'agree':>6s}  most often predicted (held-out half)")
    for target, c in r["confusion_held_out"].items():
        top = ", ".join(f"{k} {v}" for k, v in list(c["predicted"].items())[:4])
        print(f"  {target:10s} {c['n']:5d} {c['agreement']:6.1%}  {top}")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    parser.add_argument("--limit", type=int, default=None, help="first N items per dataset")
    parser.add_argument("--side", type=int, default=COLOR_SIDE, help="colour input size, px")
    parser.add_argument(
        "--before", default=DEFAULT_BEFORE, help="git revision to compare with ('' for none)"
    )
    parser.add_argument(
        "--before-side", type=int, default=None, help="the before variant's size (default --side)"
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "color.json")
    args = parser.parse_args(argv)
    if not args.datasets.is_dir():
        print(f"skipped: datasets folder {args.datasets} not found (see its README)")
        return 0
    before = load_before(args.before) if args.before else None
    for module in (stygig.color, before):  # first calls build tables; not the time of a photo
        if module is not None:
            module.dominant_colors(np.zeros((8, 8, 3), dtype=np.uint8))
    load_at_start = os.getloadavg()[0]
    results: dict[str, Any] = {}
    for name in ("fashion-products", "mango-outfits"):
        if not (args.datasets / name).is_dir():
            print(f"skipped {name}: {args.datasets / name} not found")
            continue
        items = load_items(name, args.datasets)[: args.limit]
        sides = {"after": args.side, "before": args.before_side or args.side}
        results[name] = evaluate(name, items, sides, before)
        _print(name, results[name])
    options = [f"--limit {args.limit}" if args.limit else "", f"--side {args.side}"]
    options += [f"--before {args.before}"] if before else []
    options += [f"--before-side {args.before_side}"] if before and args.before_side else []
    report = {
        "command": " ".join(["python benchmarks/bench_color.py", *filter(None, options)]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "split": "held out: crc32(id) % 2 == 1; the colour-family classifier fitted on the "
        "other half",
        "before": f"src/stygig/color.py at {args.before}" if before else None,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpus": os.cpu_count(),
        "load_average_1m_at_start": round(load_at_start, 2),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "datasets": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

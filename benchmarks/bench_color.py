"""Agreement of StyGig's dominant colour with two datasets' colour labels, and its speed.

    python benchmarks/bench_color.py [--limit N] [--datasets DIR] [--out PATH]

For every labelled product photo of ``fashion-products`` (Kaggle, ``baseColour``) and
``mango-outfits`` (MANGO, ``des_agrup_color_eng``) it decodes the image, shrinks it to 128 px
(as the build pipeline does), runs :func:`stygig.color.dominant_colors` and compares the main
colour's family with the label, folded by the tables in ``stygig/data/color_families.yaml``.

The family thresholds were tuned on the *tuning* half of each dataset (items whose
``crc32(id)`` is even); the headline number is the agreement on the other, *held-out* half.
Speed is the time of ``dominant_colors`` alone (decoding excluded): wall-clock median and p99,
and the median thread CPU time, which other processes on a busy machine disturb less, on the same
photos shrunk to 128 px and to 224 px. Results go to ``benchmarks/results/color.json``.
Without the datasets folder the benchmark prints why and exits 0.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stygig.color import dominant_colors, load_family_table
from stygig.images import decode_image, fit_array

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATASETS = REPO.parent / "shared" / "datasets"


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


def _timed(img: np.ndarray) -> tuple[str, tuple[float, float]]:
    """The main colour's family, and the wall and CPU milliseconds ``dominant_colors`` took."""
    wall, cpu = time.perf_counter(), time.thread_time()
    summary = dominant_colors(img)
    return summary.family, ((time.perf_counter() - wall) * 1e3, (time.thread_time() - cpu) * 1e3)


def evaluate(name: str, items: list[Item]) -> dict[str, Any]:
    """Run one dataset: agreement per half, confusion on the held-out half, timings."""
    fold = load_family_table().datasets[name]
    to_target: dict[str, str] = fold["labels"]
    family_to_target: dict[str, str] = fold.get("families") or {}
    excluded = set(fold.get("excluded") or [])
    truth: list[str] = []
    predicted: list[str] = []
    held_out: list[bool] = []
    ms128: list[tuple[float, float]] = []
    ms224: list[tuple[float, float]] = []
    skipped: Counter[str] = Counter()
    for item in items:
        if item.label in excluded or item.label not in to_target:
            skipped[item.label] += 1
            continue
        img = decode_image(item.path)
        family, ms = _timed(fit_array(img, 128))
        ms128.append(ms)
        ms224.append(_timed(fit_array(img, 224))[1])
        truth.append(to_target[item.label])
        predicted.append(family_to_target.get(family, family))
        held_out.append(is_held_out(item.id))
    t, p, h = np.array(truth), np.array(predicted), np.array(held_out, dtype=bool)
    agree = t == p

    def share(mask: np.ndarray) -> float:
        return float(agree[mask].mean()) if mask.any() else float("nan")

    targets = sorted(set(truth), key=lambda x: -(t == x).sum())
    recalls = [share((t == target) & h) for target in targets if ((t == target) & h).any()]
    confusion = {
        target: {
            "n": int(((t == target) & h).sum()),
            "agreement": share((t == target) & h),
            "predicted": dict(Counter(p[(t == target) & h].tolist()).most_common()),
        }
        for target in targets
    }
    return {
        "items": len(items),
        "scored": len(truth),
        "left_out": dict(skipped.most_common()),
        "agreement": {"held_out": share(h), "tuning": share(~h), "all": share(h | ~h)},
        "balanced_agreement_held_out": float(np.mean(recalls)) if recalls else float("nan"),
        "held_out_items": int(h.sum()),
        "confusion_held_out": confusion,
        "ms_per_image": {
            size: {
                "median": float(np.median(np.array(v)[:, 0])),
                "p99": float(np.percentile(np.array(v)[:, 0], 99)),
                "cpu_median": float(np.median(np.array(v)[:, 1])),
            }
            for size, v in (("128", ms128), ("224", ms224))
            if v
        },
    }


def _print(name: str, r: dict[str, Any]) -> None:
    a, ms = r["agreement"], r["ms_per_image"]
    print(
        f"\n{name}: {r['scored']} scored of {r['items']} ({sum(r['left_out'].values())} left out)"
    )
    print(
        f"  agreement  held-out {a['held_out']:.1%}   tuning half {a['tuning']:.1%}   "
        f"all {a['all']:.1%}   (held-out, mean over labels {r['balanced_agreement_held_out']:.1%})"
    )
    for size, t in ms.items():
        print(
            f"  {size} px     median {t['median']:.2f} ms   p99 {t['p99']:.2f} ms   "
            f"(CPU time median {t['cpu_median']:.2f} ms)"
        )
    print(f"  {'label':10s} {'n':>5s} {'agree':>6s}  most often predicted (held-out half)")
    for target, c in r["confusion_held_out"].items():
        top = ", ".join(f"{k} {v}" for k, v in list(c["predicted"].items())[:4])
        print(f"  {target:10s} {c['n']:5d} {c['agreement']:6.1%}  {top}")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    parser.add_argument("--limit", type=int, default=None, help="first N items per dataset")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "color.json")
    args = parser.parse_args(argv)
    if not args.datasets.is_dir():
        print(f"skipped: datasets folder {args.datasets} not found (see its README)")
        return 0
    results: dict[str, Any] = {}
    for name in ("fashion-products", "mango-outfits"):
        if not (args.datasets / name).is_dir():
            print(f"skipped {name}: {args.datasets / name} not found")
            continue
        items = load_items(name, args.datasets)[: args.limit]
        results[name] = evaluate(name, items)
        _print(name, results[name])
    report = {
        "command": "python benchmarks/bench_color.py"
        + (f" --limit {args.limit}" if args.limit else ""),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "split": "held out: crc32(id) % 2 == 1; thresholds tuned on the other half",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpus": os.cpu_count(),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "datasets": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

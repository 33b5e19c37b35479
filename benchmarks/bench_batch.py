"""Batch throughput: photos -> recommendations, and the nightly refresh by item id.

Run (artifacts built first, see docs/async-and-batch.md)::

    python benchmarks/bench_batch.py --artifact build/bench/effnet --artifact build/bench/vit-int8

For each artifact: ``stygig batch`` over every photo in ``../shared/datasets/fashion-products/
images`` (decode + colour + embed + score + write JSONL), and the nightly refresh over the
artifact's own catalogue (by item id, no embedding). Writes ``benchmarks/results/batch.json``
with items/s and the time 10,000 items take at that rate. The CLIP ViT-B/32 artifact uses random
weights (no internet here): its speed is the real architecture's, its recommendations are not.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from stygig.artifact import Artifact
from stygig.batch import run_batch
from stygig.engine import Recommender

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO.parent / "shared" / "datasets" / "fashion-products" / "images"


def _machine() -> dict[str, Any]:
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _run(rec: Recommender, src: str, runs: int, batch_size: int) -> dict[str, Any]:
    rates, seconds = [], []
    summary = None
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            summary = run_batch(
                rec, src, str(Path(tmp) / "out.jsonl"), batch_size=batch_size, progress=False
            )
        rates.append(summary.items_per_second)
        seconds.append(summary.seconds)
    assert summary is not None
    rate = statistics.median(rates)
    return {
        "items": summary.processed,
        "errors": summary.errors,
        "errors_by_code": summary.errors_by_code,
        "runs": runs,
        "seconds_median": statistics.median(seconds),
        "items_per_second_median": rate,
        "items_per_second_all": rates,
        "minutes_for_10000_items": round(10_000 / rate / 60, 2) if rate else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--artifact", action="append", required=True)
    parser.add_argument("--photos", default=str(PHOTOS))
    parser.add_argument("--photo-runs", type=int, default=1)
    parser.add_argument("--refresh-runs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "batch.json"))
    args = parser.parse_args()
    report: dict[str, Any] = {
        "command": "python benchmarks/bench_batch.py "
        + " ".join(f"--artifact {a}" for a in args.artifact),
        "machine": _machine(),
        "settings": {"batch_size": args.batch_size, "workers": os.cpu_count()},
        "notes": [
            "clip-vit-b-32 runs with random weights (no internet here): real speed, "
            "meaningless recommendations.",
            "The 2 cores are shared with other engineers' jobs; see the load averages.",
            "photos: every file in the folder (decode + colour + embed + search + score + "
            "JSONL); refresh: every catalogue item by id (search + score + JSONL).",
        ],
        "results": {},
    }
    for path in args.artifact:
        art = Artifact.load(path, verify=False)
        rec = Recommender(art)
        enc = art.manifest["encoder"]
        name = f"{enc['name']}-{enc.get('quantization') or 'fp32'}"
        print(f"{name}: photos ...", flush=True)
        photos = _run(rec, args.photos, args.photo_runs, args.batch_size)
        print(f"  {photos['items_per_second_median']} items/s", flush=True)
        print(f"{name}: refresh ...", flush=True)
        refresh = _run(rec, str(art.path), args.refresh_runs, args.batch_size)
        print(f"  {refresh['items_per_second_median']} items/s", flush=True)
        report["results"][name] = {
            "encoder": enc["name"],
            "runtime": enc.get("runtime"),
            "quantization": enc.get("quantization"),
            "weights": (enc.get("weights") or {}).get("source"),
            "catalogue_items": len(art.items),
            "photos": photos,
            "refresh": refresh,
        }
    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()

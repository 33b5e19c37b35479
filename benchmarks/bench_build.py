"""Build throughput (images/s, median of 3) on the 6,617 Kaggle product photos.

    python benchmarks/bench_build.py [--encoder efficientnet-lite0] [--runs 3] [--limit N]

Runs ``stygig build``'s pipeline (decode + colour in a thread pool, batched ONNX Runtime
encoding, index, artifact write) on ../shared/datasets/fashion-products with both cores and
reports images/s of the embedding stage and of the whole build. Writes
benchmarks/results/build.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from stygig.build import build_artifact, make_build_encoder

HERE = Path(__file__).resolve().parent
STYLES = HERE.parent.parent / "shared" / "datasets" / "fashion-products" / "styles.csv"
RESULTS = HERE / "results" / "build.json"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--encoder", default="efficientnet-lite0")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--limit", type=int, default=0, help="first N rows only (0 = all)")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    if not STYLES.is_file():
        print(f"skipped: {STYLES} not found (see ../shared/datasets/README.md)")
        return
    runs = []
    with tempfile.TemporaryDirectory(prefix="stygig-bench-") as tmp:
        catalog = STYLES
        if args.limit:
            lines = STYLES.read_text().splitlines()[: args.limit + 1]
            catalog = Path(tmp) / "styles.csv"
            catalog.write_text("\n".join(lines) + "\n")
        with make_build_encoder(args.encoder) as (encoder, files):
            for run in range(args.runs):
                t0 = time.perf_counter()
                result = build_artifact(
                    catalog,
                    Path(tmp) / "art",
                    encoder,
                    images_dir=STYLES.parent / "images",
                    extra_files=files,
                    batch_size=args.batch_size,
                    progress=False,
                )
                wall = time.perf_counter() - t0
                n = result.items + sum(result.rejects.values())
                runs.append(
                    {"images": n, "embed_images_per_s": result.images_per_second, "wall_s": wall}
                )
                print(
                    f"run {run + 1}: {n} rows, embed stage {result.images_per_second:.1f} images/s, "
                    f"whole build {n / wall:.1f} rows/s ({wall:.1f} s)",
                    flush=True,
                )
    median = float(np.median([r["embed_images_per_s"] for r in runs]))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "command": "python benchmarks/bench_build.py " + " ".join(sys.argv[1:]),
                "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "encoder": args.encoder,
                "runtime": "onnx (fp32)",
                "cpus": 2,
                "runs": runs,
                "median_images_per_s": round(median, 1),
                "target_images_per_s": 60,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"median over {len(runs)} runs: {median:.1f} images/s (target >= 60)")


if __name__ == "__main__":
    main()

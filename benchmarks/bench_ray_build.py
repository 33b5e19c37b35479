"""Ray build vs local build of the 6,617 Kaggle product photos (efficientnet-lite0).

    python benchmarks/bench_ray_build.py [--runs 1] [--limit N] [--actors N]

Interleaves local and Ray builds (local, ray, local, ray, ...) of the same catalogue with the
same exported ONNX encoder, on a local Ray cluster of this machine's cores started once (its
start-up is reported apart, not counted in the builds: a team runs builds on a cluster that is
already up). Reports each build's wall time (catalogue read to artifact written), the ratio
Ray / local (target <= 1.5), the machine's load average before and after, and checks that the
two artifacts hold the same ids with embeddings within 1e-4. Writes
benchmarks/results/ray_build.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "datasets" / "fashion-products"
RESULTS = HERE / "results" / "ray_build.json"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--encoder", default="efficientnet-lite0")
    parser.add_argument("--runs", type=int, default=1, help="local/ray pairs")
    parser.add_argument("--limit", type=int, default=0, help="first N rows only (0 = all)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--actors", type=int, default=None, help="Ray encoder actors")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    styles = DATA / "styles.csv"
    if not styles.is_file():
        print(f"skipped: {styles} not found (see ../shared/datasets/README.md)")
        return
    import ray

    from stygig.artifact import Artifact
    from stygig.build import build_artifact, make_build_encoder
    from stygig.distributed.ray_build import build_artifact_ray

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-ray-build-") as tmp:
        root = Path(tmp)
        catalog = styles
        if args.limit:
            lines = styles.read_text(encoding="utf-8").splitlines()[: args.limit + 1]
            catalog = root / "styles.csv"
            catalog.write_text("\n".join(lines) + "\n", encoding="utf-8")
        t0 = time.perf_counter()
        ray.init(include_dashboard=False, log_to_driver=False)
        ray_start_s = time.perf_counter() - t0
        cpus = ray.cluster_resources().get("CPU")
        local_s: list[float] = []
        ray_s: list[float] = []
        same = True
        max_diff = 0.0
        items = 0
        try:
            with make_build_encoder(args.encoder) as (encoder, files):
                common = {
                    "images_dir": DATA / "images",
                    "extra_files": files,
                    "batch_size": args.batch_size,
                    "progress": False,
                }
                for run in range(args.runs):
                    t0 = time.perf_counter()
                    local = build_artifact(catalog, root / f"local{run}", encoder, **common)  # type: ignore[arg-type]
                    local_s.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    on_ray = build_artifact_ray(
                        catalog,
                        root / f"ray{run}",
                        encoder,
                        actors=args.actors,
                        **common,  # type: ignore[arg-type]
                    )
                    ray_s.append(time.perf_counter() - t0)
                    a, b = Artifact.load(local.path), Artifact.load(on_ray.path)
                    same &= [i.id for i in a.items] == [i.id for i in b.items]
                    max_diff = max(max_diff, float(np.abs(a.embeddings - b.embeddings).max()))
                    items = len(a.items)
                    print(
                        f"run {run}: local {local_s[-1]:.1f} s, ray {ray_s[-1]:.1f} s "
                        f"({ray_s[-1] / local_s[-1]:.2f}x), items {items}",
                        flush=True,
                    )
                    actors = on_ray.manifest["build"]["ray"]["actors"]
        finally:
            ray.shutdown()
    load_after = os.getloadavg()
    result = {
        "benchmark": "ray build vs local build",
        "encoder": args.encoder,
        "photos": items,
        "catalog_rows": args.limit or "all",
        "machine": {"cpus": os.cpu_count(), "ray_cpus": cpus},
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "ray_start_seconds": round(ray_start_s, 2),
        "ray_actors": actors,
        "local_seconds": [round(x, 2) for x in local_s],
        "ray_seconds": [round(x, 2) for x in ray_s],
        "ratio_ray_over_local": round(statistics.median(ray_s) / statistics.median(local_s), 3),
        "target_ratio": 1.5,
        "same_ids": same,
        "max_abs_embedding_diff": max_diff,
        "python": sys.version.split()[0],
        "ray": ray.__version__,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

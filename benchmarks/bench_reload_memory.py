"""A hot reload's peak memory on an ``ivfpq`` catalogue: with the served version's mapped rows
kept until the swap (before) or released first (what ``stygig serve`` does now).

    python benchmarks/bench_reload_memory.py [--items 300000] [--artifact DIR] [--rounds 2]
        [--out benchmarks/results/reload_memory.json]

``--artifact`` may also name the slot indexes ``bench_scale.py --keep`` leaves (10M items:
``/tmp/stygig-scale/n10000000``): the reload's index steps at that size, without an artifact.

Each variant runs in its own process, the variants in turn (A B A B): load version 1, warm it
(its rows mapped), search, reset the peak (``/proc/self/clear_refs``), then the reload's index
steps as ``ModelService.reload`` takes them -- [release version 1's mapped rows], search with
version 1 while version 2 loads, load version 2 (a hard-linked copy of the artifact with its
own ``version``) and warm it without mapping, drop version 1 -- and report the resident memory
(VmRSS, its peak VmHWM) at each step and version 1's search time during the reload. The
server's own ordering is tested in tests/unit/test_reload_rows.py.

Synthetic clustered 512-d vectors (benchmarks/synthetic.py), one ``ivfpq`` index, FAISS on one
thread. Writes benchmarks/results/reload_memory.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale import load_slots, memory

RESULTS = Path(__file__).resolve().parent / "results" / "reload_memory.json"
VARIANTS = ("rows kept mapped", "rows released")


def _open(path: Path) -> tuple[Any, Any]:
    """A version (kept whole, as a server holds it) and its index: an artifact, or (a
    ``meta.json``, no manifest) the slot indexes ``bench_scale.py --keep`` left, loaded as the
    artifact loader would."""
    if (path / "meta.json").exists() and not (path / "manifest.json").exists():
        index = load_slots(path)
        return index, index
    from stygig.artifact import Artifact

    artifact = Artifact.load(path, verify=False)
    return artifact, artifact.index


def reload_once(v1: Path, v2: Path, release: bool, queries: int = 200) -> dict[str, object]:
    """One reload's index steps in this process (see the module docstring)."""
    import faiss

    from stygig.index import release_mapped_rows, warm_index

    faiss.omp_set_num_threads(1)
    old_version, old = _open(v1)
    warm_index(old)
    rng = np.random.default_rng(0)
    q = rng.standard_normal((queries, old.dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    for row in q:
        old.search(row[None, :], 293)  # the candidate pool's depth
    steps = {"serving": memory()}
    Path("/proc/self/clear_refs").write_text("5")  # the peak from here on
    if release:
        release_mapped_rows(old)
        gc.collect()
        steps["released"] = memory()
    during = []
    for row in q[:50]:  # the old version still answers while the new one loads
        t = time.perf_counter()
        old.search(row[None, :], 293)
        during.append((time.perf_counter() - t) * 1e3)
    _new_version, new = _open(v2)  # held whole, as a server holds it
    warm_index(new, map_rows=False)
    steps["both loaded"] = memory()
    del old, old_version
    gc.collect()
    steps["old dropped"] = memory()
    return {
        "steps_mb": steps,
        "peak_mb": steps["old dropped"]["VmHWM"],
        "peak_over_serving_mb": steps["old dropped"]["VmHWM"] - steps["serving"]["VmRSS"],
        "old_search_during_reload_p50_ms": round(float(np.median(during)), 3),
        "new_items": int(new.ntotal),
    }


def _second_version(v1: Path, out: Path) -> Path:
    """``v1`` hard-linked under ``out`` with its own manifest ``version`` (files unchanged)."""
    out.mkdir()
    for f in v1.iterdir():
        if f.name != "manifest.json":
            os.link(f, out / f.name)
    if not (v1 / "manifest.json").exists():  # bench_scale's slot indexes: no version to set
        return out
    manifest = json.loads((v1 / "manifest.json").read_text())
    manifest["version"] = "bench-reload-2"
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=300_000)
    parser.add_argument(
        "--artifact",
        type=Path,
        help="an existing ivfpq artifact to reuse, or the slot indexes bench_scale.py --keep "
        "left (e.g. /tmp/stygig-scale/n10000000)",
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        v1, v2, variant = args.child
        print(json.dumps(reload_once(Path(v1), Path(v2), variant == VARIANTS[1])))
        return
    with tempfile.TemporaryDirectory(
        prefix="stygig-bench-", dir=args.artifact and args.artifact.parent
    ) as tmp:
        v1 = args.artifact
        if v1 is None:
            from bench_search import _VectorsOnly
            from synthetic import synthetic_pq_artifact

            v1 = synthetic_pq_artifact(Path(tmp) / "v1", args.items, _VectorsOnly().describe())
        v2 = _second_version(v1, Path(tmp) / "v2")
        load_start = os.getloadavg()
        runs: dict[str, list[dict[str, object]]] = {v: [] for v in VARIANTS}
        for _ in range(args.rounds):
            for variant in VARIANTS:
                done = subprocess.run(
                    [sys.executable, __file__, "--child", str(v1), str(v2), variant],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                runs[variant].append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(variant, runs[variant][-1]["peak_over_serving_mb"], flush=True)
    result = {
        "command": "python benchmarks/bench_reload_memory.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average": {"start": load_start, "end": os.getloadavg()},
        "runs": runs,
    }
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for variant, rs in runs.items():
        print(
            f"{variant}: serving {[r['steps_mb']['serving']['VmRSS'] for r in rs]} MB, "
            f"peak {[r['peak_mb'] for r in rs]} MB, "
            f"old search during the reload p50 {[r['old_search_during_reload_p50_ms'] for r in rs]} ms"
        )


if __name__ == "__main__":
    main()

"""The exact catalogue's scan, float32 against int8 (stygig.scan), through the whole answer.

    python benchmarks/bench_scan.py [--sizes 10000,20000,50000] [--dims 1280,512]
        [--queries 200] [--out benchmarks/results/scan.json]

For each size and width a synthetic flat artifact (benchmarks/synthetic.py, clustered unit
vectors, kept under build/bench-scan/) is loaded twice, with ``exact_scan`` float32 and int8.
Each query (a catalogue row plus noise, with its colour) is answered by both
``Recommender.answer`` in turn, the order alternating, with a 64 MB read before each call (the
cache then holds other work's data, as after the encoder). Reported per variant: answer p50 and
p90 (ms), the answers that differ (JSON without timings: must be 0), and what loading the int8
scan costs (seconds, resident MB, the scan's self-check in standard deviations).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from results_file import machine, notes_with_history  # noqa: E402
from stygig.artifact import Artifact  # noqa: E402
from stygig.encoders import load_encoder  # noqa: E402
from stygig.engine import Recommender  # noqa: E402
from stygig.recommendation import Options  # noqa: E402
from stygig.scan import Int8Scan  # noqa: E402
from stygig.scoring import ScoringConfig  # noqa: E402
from stygig.threads import limit_library_threads  # noqa: E402
from synthetic import synthetic_artifact  # noqa: E402

RESULTS = HERE / "results" / "scan.json"
WORK = HERE.parent / "build" / "bench-scan"


def _resident_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class _Width:
    """The tiny encoder's preprocessing at another width (answers take precomputed vectors)."""

    def __init__(self, dim: int) -> None:
        tiny = load_encoder("tiny")
        self.name, self.dim, self.preprocess = "tiny", dim, tiny.preprocess


def bench(n: int, dim: int, queries: int) -> dict[str, Any]:
    out = WORK / f"{n}-{dim}"
    if not (out / "manifest.json").exists():
        info = {**load_encoder("tiny").describe(), "dim": dim}
        synthetic_artifact(out, n, encoder_info=info, index_kind="flat")
    art = Artifact.load(out)
    base = ScoringConfig.load()
    recs, load = {}, {}
    for mode in ("float32", "int8"):
        before, t0 = _resident_mb(), time.perf_counter()
        config = dataclasses.replace(base, exact_scan=mode)
        recs[mode] = Recommender(art, encoder=_Width(dim), config=config)  # type: ignore[arg-type]
        load[mode] = {
            "seconds": round(time.perf_counter() - t0, 3),
            "resident_mb": round(_resident_mb() - before, 1),
        }
    scan = recs["int8"].snapshot.scan
    rows = np.asarray(art.embeddings)
    check = scan.check(rows) if isinstance(scan, Int8Scan) else None
    rng = np.random.default_rng(0)
    evict = np.ones(64 << 18, np.float32)
    times: dict[str, list[float]] = {m: [] for m in recs}
    different = 0
    for i in range(queries):
        j = int(rng.integers(len(rows)))
        v = rows[j] + 0.05 * rng.standard_normal(dim).astype(np.float32)
        v = (v / np.linalg.norm(v)).astype(np.float32)[None, :]
        order = list(recs) if i % 2 == 0 else list(recs)[::-1]
        answers = {}
        for mode in order:
            prepared = recs[mode].prepare_embedded(v, [art.colors[j]], Options())
            evict.sum()
            t0 = time.perf_counter()
            answer = recs[mode].answer(prepared, v)
            times[mode].append((time.perf_counter() - t0) * 1e3)
            doc = answer.to_dict()
            doc.pop("timings_ms")
            answers[mode] = json.dumps(doc, sort_keys=True)
        different += answers["float32"] != answers["int8"]
    return {
        "items": n,
        "dim": dim,
        "answer_p50_ms": {m: round(float(np.median(t)), 3) for m, t in times.items()},
        "answer_p90_ms": {m: round(float(np.percentile(t, 90)), 3) for m, t in times.items()},
        "different_answers": different,
        "queries": queries,
        "load": load,
        "int8_levels": getattr(scan, "levels", None),
        "int8_check_sigmas": None if check is None else round(check, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,20000,50000")
    parser.add_argument("--dims", default="1280,512")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    limit_library_threads(1)  # as `stygig serve` runs
    load_start = os.getloadavg()
    results = []
    for dim in (int(d) for d in args.dims.split(",")):
        for n in (int(s) for s in args.sizes.split(",")):
            row = bench(n, dim, args.queries)
            results.append(row)
            print(
                f"{n:>7} x {dim:<5} float32 {row['answer_p50_ms']['float32']:6.2f} ms   "
                f"int8 {row['answer_p50_ms']['int8']:6.2f} ms   "
                f"different {row['different_answers']}/{args.queries}   "
                f"int8 load {row['load']['int8']['seconds']} s "
                f"+{row['load']['int8']['resident_mb']} MB"
            )
    document = {
        "command": "python benchmarks/bench_scan.py " + " ".join(sys.argv[1:]),
        "machine": machine(load_start),
        "notes": notes_with_history(
            args.out,
            [
                "Synthetic clustered rows (benchmarks/synthetic.py); in process, one thread, a 64 MB "
                "read before every answer; float32 and int8 alternate query by query.",
                "resident_mb: the process's resident growth while that recommender loaded (the first "
                "int8 load also starts ONNX Runtime); the allocator keeps part of the transients.",
            ],
        ),
        "results": results,
    }
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()

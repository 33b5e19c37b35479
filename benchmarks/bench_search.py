"""Search + scoring latency at 1k, 10k, 100k and 1M items, and recall of the approximate index.

    python benchmarks/bench_search.py [--sizes 1000,10000,100000,1000000] [--queries 200]

Synthetic clustered 512-d unit vectors (see benchmarks/synthetic.py). For each size the artifact
gets the index ``auto`` picks (exact flat up to 50k items, IVF above), and the benchmark times
``Recommender.recommend_embedded`` for one query vector — search, top-5 vote, candidate scoring,
ranking and outfit assembly: everything after the embedding — with FAISS on one thread.
recall@50 compares the approximate index's top 50 with exact search; above 50k items the index
is split by outfit slot (:class:`stygig.index.PartitionedIndex`) and the per-slot recall@50 —
each slot's own top 50, what outfit candidates come from — is reported too. Writes
benchmarks/results/search.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stygig.artifact import Artifact
from stygig.engine import Options, Recommender
from stygig.features import PreparedImage, color_summary
from stygig.images import PreprocessSpec
from stygig.index import PartitionedIndex
from stygig.scoring import ScoringConfig
from synthetic import clustered_vectors, synthetic_artifact

DIM = 512
RESULTS = Path(__file__).resolve().parent / "results" / "search.json"

ALWAYS_GUESS = replace(ScoringConfig.load(), gender_min_confidence=0.0)


class _VectorsOnly:
    """Stands in for the encoder: this benchmark starts after the embedding."""

    name = "synthetic"
    dim = DIM
    runtime = "numpy"
    preprocess = PreprocessSpec()

    def encode(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "dim": self.dim, "runtime": self.runtime}


def run_size(n: int, n_queries: int, workdir: Path) -> dict[str, object]:
    x = clustered_vectors(n, DIM, seed=1)
    queries = clustered_vectors(n_queries, DIM, seed=2)
    t0 = time.perf_counter()
    path = synthetic_artifact(
        workdir / f"syn-{n}", n, encoder_info=_VectorsOnly().describe(), vectors=x
    )
    build_s = time.perf_counter() - t0
    art = Artifact.load(path, verify=False)
    # Synthetic genders are random: always guess (see bench_recommend.py), never hedge.
    rec = Recommender(art, encoder=_VectorsOnly(), config=ALWAYS_GUESS)  # type: ignore[arg-type]
    # The photo's colour summary as the colour step (beside the encoder) hands it over.
    navy = color_summary(np.full((64, 64, 3), (40, 60, 120), np.uint8))
    prepared = [PreparedImage(np.zeros(0, np.float32), navy)]
    options = Options(k=3, k_total=12)
    latencies, stage = [], {"search": [], "score": [], "rank": []}
    for q in queries:
        t = time.perf_counter()
        out = rec.recommend_embedded(prepared, q[None, :], (), options)
        latencies.append((time.perf_counter() - t) * 1e3)
        for key in stage:
            stage[key].append(out.timings_ms[key])
    recall = slot_recall = None
    if art.index.kind != "flat":
        sims = queries @ x.T
        exact = np.argsort(-sims, axis=1)[:, :50]
        approx = art.index.search(queries, 50)[1]
        recall = _recall(exact, approx)
        if isinstance(art.index, PartitionedIndex):
            # What outfit candidates rely on: each slot's own top 50.
            each = art.index.search_each(queries, 50)[1]
            per_slot = []
            for rows in art.index.rows:
                inside = np.isin(each, rows)
                want = rows[np.argsort(-sims[:, rows], axis=1)[:, :50]]
                got = [row[mask] for row, mask in zip(each, inside, strict=True)]
                per_slot.append(_recall(want, got))
            slot_recall = float(np.mean(per_slot))
    result = {
        "items": n,
        "index": art.index.kind,
        "index_params": art.index.params(),
        "build_s": round(build_s, 1),
        "p50_ms": round(float(np.median(latencies)), 3),
        "p99_ms": round(float(np.percentile(latencies, 99)), 3),
        "stages_p50_ms": {k: round(float(np.median(v)), 3) for k, v in stage.items()},
        "recall_at_50": recall,
        "slot_recall_at_50": slot_recall,
    }
    print(json.dumps(result), flush=True)
    return result


def _recall(exact: np.ndarray, approx: Sequence[np.ndarray] | np.ndarray) -> float:
    return float(
        np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(exact, approx, strict=True)])
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000,10000,100000,1000000")
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    faiss.omp_set_num_threads(1)
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="stygig-bench-") as tmp:
        results = [run_size(n, args.queries, Path(tmp)) for n in sizes]
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "command": "python benchmarks/bench_search.py " + " ".join(sys.argv[1:]),
                "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "machine": {"cpus": 2, "platform": platform.platform(), "faiss_threads": 1},
                "dim": DIM,
                "queries": args.queries,
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )
    head = (
        f"{'items':>9} {'index':>6} {'p50 ms':>8} {'p99 ms':>8} {'recall@50':>10} {'per slot':>9}"
    )
    print(head)
    for r in results:
        rc = "exact" if r["recall_at_50"] is None else f"{r['recall_at_50']:.3f}"
        sr = "-" if r["slot_recall_at_50"] is None else f"{r['slot_recall_at_50']:.3f}"
        print(
            f"{r['items']:>9} {r['index']:>6} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
            f"{rc:>10} {sr:>9}"
        )


if __name__ == "__main__":
    main()

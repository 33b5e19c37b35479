"""Where an ``ivfpq`` catalogue's answers read their vectors: ``embeddings.npy`` or the index's rows.

    python benchmarks/bench_answer_rows.py [--items 300000] [--queries 150] [--artifact DIR]

Beside the search, an answer reads a few hundred catalogue vectors (MMR's redundancy, exact
scores of a filtered candidate set, an item query's own vector). An ``ivfpq`` catalogue keeps
``embeddings.npy`` (float32) on disk and float16 rows for re-ranking, which must sit in the
page cache anyway; at 10M items the two files (20 + 10 GB) do not both fit a 24 GB machine's
cache. This benchmark answers the same queries with the vectors read from either source
(``CatalogSnapshot.rows``: the index's rows, what the engine reads; or the embeddings, what it
read before), with ``embeddings.npy`` cached or evicted (``POSIX_FADV_DONTNEED`` before each
answer), interleaved query by query, and checks the answers agree (items, order, outfits).

Synthetic clustered 512-d vectors (benchmarks/synthetic.py), one ``ivfpq`` index, FAISS and BLAS
on one thread as ``stygig serve`` runs them. Writes benchmarks/results/answer_rows.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_search import ALWAYS_GUESS, _VectorsOnly
from stygig.artifact import Artifact
from stygig.engine import Options, Recommender
from stygig.features import color_summary
from stygig.threads import limit_library_threads
from synthetic import clustered_vectors, synthetic_pq_artifact

RESULTS = Path(__file__).resolve().parent / "results" / "answer_rows.json"
VARIANTS = ("embeddings cached", "index rows cached", "embeddings evicted", "index rows evicted")


def run(path: Path, n_queries: int) -> dict[str, object]:
    art = Artifact.load(path, verify=False)
    rec = Recommender(art, encoder=_VectorsOnly(), config=ALWAYS_GUESS)  # type: ignore[arg-type]
    snapshot = rec.snapshot
    sources = {"index rows": snapshot.rows, "embeddings": art.embeddings}
    navy = color_summary(np.full((64, 64, 3), (40, 60, 120), np.uint8))
    options = Options(k=3, k_total=12)
    queries = clustered_vectors(n_queries, art.embeddings.shape[1], seed=5)

    def answer(q: np.ndarray, source: str) -> str:
        snapshot.__dict__["rows"] = sources[source]  # the cached property, set per variant
        return rec.answer(rec.prepare_embedded(q[None, :], [navy], options)).to_json().decode()

    for q in queries[:20]:  # warm-up
        answer(q, "index rows"), answer(q, "embeddings")
    same = same_outfit = 0
    for q in queries:
        a, b = json.loads(answer(q, "index rows")), json.loads(answer(q, "embeddings"))
        same += [i["id"] for i in a["items"]] == [i["id"] for i in b["items"]]
        same_outfit += (a.get("outfit") or {}).get("item_ids") == (b.get("outfit") or {}).get(
            "item_ids"
        )
    fd = os.open(path / "embeddings.npy", os.O_RDONLY)
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    load_start = os.getloadavg()
    try:
        for q in queries:
            for variant in VARIANTS:
                source = variant.rsplit(" ", 1)[0]
                if variant.endswith("evicted"):
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                else:
                    answer(q, source)  # this query's rows are cached
                t = time.perf_counter()
                answer(q, source)
                times[variant].append((time.perf_counter() - t) * 1e3)
    finally:
        os.close(fd)
    snapshot.__dict__["rows"] = sources["index rows"]
    return {
        "items": len(art.embeddings),
        "index": art.index.kind,
        "queries": n_queries,
        "identical_item_lists": same,
        "identical_outfits": same_outfit,
        "p50_ms": {v: round(float(np.median(t)), 3) for v, t in times.items()},
        "p90_ms": {v: round(float(np.percentile(t, 90)), 3) for v, t in times.items()},
        "load_average": {"start": load_start, "end": os.getloadavg()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=300_000)
    parser.add_argument("--queries", type=int, default=150)
    parser.add_argument("--artifact", type=Path, help="an existing ivfpq artifact to reuse")
    args = parser.parse_args()
    limit_library_threads(1)
    with tempfile.TemporaryDirectory(prefix="stygig-bench-") as tmp:
        path = args.artifact
        if path is None:
            path = synthetic_pq_artifact(Path(tmp) / "pq", args.items, _VectorsOnly().describe())
        result = run(path, args.queries)
    result["command"] = "python benchmarks/bench_answer_rows.py " + " ".join(sys.argv[1:])
    result["date"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

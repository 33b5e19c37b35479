"""Why large catalogues get one index per outfit slot: outfits from a small candidate pool.

    python benchmarks/bench_slot_pool.py [--artifact DIR] [--pools 64,256]

At a million items the engine scores a pool of about 2,000 nearest items, 0.2 % of the
catalogue. With one approximate index that pool is the query photo's visual neighbourhood —
mostly items of the query's own kind — so the other slots of an outfit may get no candidates.
This benchmark reproduces that ratio on real photos: the Kaggle evaluation artifact
(``stygig eval`` builds it; 5,241 catalogue photos, 1,309 held-out query photos, whitened
efficientnet-lite0 embeddings), with pools of 64 and 256 items (1.2 % and 4.9 %), and compares
exact search over everything, one IVF index (every list probed, so the pool is the only
difference) and one IVF index per slot (:class:`stygig.index.PartitionedIndex`), by outfit
validity and how full the answers are. Results go to ``benchmarks/results/slot_pool.json``.
Without the artifact the benchmark prints why and exits 0.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from stygig.artifact import Artifact
from stygig.engine import Recommender, load_artifact_encoder
from stygig.evaluation.category import outfit_validity
from stygig.evaluation.split import stratified_split
from stygig.index import ExactIndex, VectorIndex, build_index
from stygig.scoring import ScoringConfig
from stygig.whitening import Whitening

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "build" / "eval" / "artifacts" / "kaggle-efficientnet-lite0"
RESULTS = REPO / "benchmarks" / "results" / "slot_pool.json"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--artifact", default=str(DEFAULT))
    parser.add_argument("--pools", default="64,256")
    args = parser.parse_args()
    if not (Path(args.artifact) / "manifest.json").is_file():
        print(f"skip: no artifact at {args.artifact} (run `stygig eval --only category` first)")
        return
    art = Artifact.load(args.artifact)
    strata = [i.attributes.get("articleType") or i.category for i in art.items]
    split = stratified_split(strata, seed=0)
    emb = np.asarray(art.embeddings, np.float32)
    white = Whitening.fit(emb[split.catalog]).apply(emb)
    slots = [art.taxonomy.slot_of(i.category) for i in art.items]
    encoder = load_artifact_encoder(art)
    config = ScoringConfig.load()
    queries = split.queries.tolist()
    rows: list[dict[str, Any]] = []
    for pool in (int(p) for p in args.pools.split(",")):
        indexes: dict[str, VectorIndex] = {
            "exact": ExactIndex(white),
            "one IVF index": build_index(white, "ivf", nlist=64, nprobe=64),
            "one IVF index per slot": build_index(white, "ivf", slots, "slot", nlist=16, nprobe=16),
        }
        for name, index in indexes.items():
            rec = Recommender(
                replace(art, embeddings=white, index=index),
                encoder=encoder,
                config=replace(config, candidate_pool=pool),
            )
            v = outfit_validity(rec, queries, queries, seed=0)
            row = {
                "pool": pool,
                "pool_share": pool / len(split.catalog),
                "index": name,
                "validity": v["items_both_valid"],
                "outfit_slots_per_query": v["outfit_slots_per_query"],
                "items_per_query": v["items_per_query"],
                "queries_without_items": v["queries_without_items"],
                "queries": v["queries"],
            }
            rows.append(row)
            print(
                f"pool {pool:>4}  {name:<24} validity {row['validity']:.1%}  outfit slots "
                f"{row['outfit_slots_per_query']:.2f}  items {row['items_per_query']:.2f}  "
                f"queries without items {row['queries_without_items']}",
                flush=True,
            )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "command": "python benchmarks/bench_slot_pool.py " + " ".join(sys.argv[1:]),
                "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "artifact": art.manifest["encoder"]["name"],
                "catalogue": len(split.catalog),
                "results": rows,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()

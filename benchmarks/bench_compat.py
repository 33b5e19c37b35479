"""What the learned compatibility scorer adds to a recommendation, at 10k catalogue items.

    python benchmarks/bench_compat.py --artifact build/eval-l/artifacts/mango-efficientnet-lite0

Two measures, both on an artifact that holds a compatibility model (``stygig train-compat``):

* ``scorer``: :class:`stygig.compat.scorer.LearnedScorer` alone over exactly ``--items``
  candidates (the artifact's rows tiled, each copy a new id without outfit history, plus the
  originals with theirs): the query's view (``query_vectors``) and ``score`` for 1, 2 and 4
  catalogue items as the query: everything the learned mode adds to the score step, at its
  worst (every catalogue item a candidate).
* ``recommend``: ``Recommender.recommend`` in outfit mode for catalogue-item queries with
  ``compat_mode`` ``rules`` and ``learned+rules``, interleaved query by query (the 2 cores are
  shared); the median of the score step and of the whole call.

Medians over ``--repeats``; writes ``benchmarks/results/compat.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from stygig.artifact import Artifact
from stygig.compat.scorer import LearnedScorer
from stygig.engine import Options, Query, Recommender
from stygig.harmony import rgb_array
from stygig.scoring import ScoringConfig

RESULTS = Path(__file__).resolve().parent / "results" / "compat.json"


def _median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1e3, 4)


def bench_scorer(artifact: Artifact, items: int, repeats: int, seed: int) -> dict[str, Any]:
    """The learned scorer over ``items`` candidates (rows tiled to that many)."""
    model = artifact.compat
    assert model is not None
    n = len(artifact.items)
    rows = np.resize(np.arange(n), items)
    ids = [
        artifact.items[r].id if k < n else f"{artifact.items[r].id}~{k}"
        for k, r in enumerate(rows.tolist())
    ]
    names = sorted({i.category for i in artifact.items})
    codes = np.array([names.index(artifact.items[r].category) for r in rows], np.int64)
    emb = np.asarray(artifact.embeddings, np.float32)[rows]
    rgb = rgb_array(artifact.colors)[rows]
    started = time.perf_counter()
    scorer = LearnedScorer(model, emb, rgb, names, codes, ids, "learned+rules")
    load_ms = (time.perf_counter() - started) * 1e3
    rng = np.random.default_rng(seed)
    cand = np.arange(items)
    rules = rng.random(items).astype(np.float32)
    out: dict[str, Any] = {"items": items, "load_ms": round(load_ms, 1)}
    for m in (1, 2, 4):
        samples = []
        for _ in range(repeats):
            query = rng.choice(n, size=m, replace=False)  # originals: with outfit history
            t0 = time.perf_counter()
            view = scorer.query_vectors(
                query.tolist(), emb[query], rgb[query], codes[query].tolist()
            )
            scorer.score(view, cand, rules)
            samples.append(time.perf_counter() - t0)
        out[f"query_items_{m}_ms"] = _median_ms(samples)
    return out


def bench_recommend(artifact: Artifact, repeats: int, seed: int) -> dict[str, Any]:
    """Score step and whole call, rules vs learned+rules, catalogue-item queries."""
    recs = {
        mode: Recommender(artifact, config=ScoringConfig.from_dict({"compat_mode": mode}))
        for mode in ("rules", "learned+rules")
    }
    rng = np.random.default_rng(seed)
    ids = [i.id for i in artifact.items]
    score: dict[str, list[float]] = {m: [] for m in recs}
    total: dict[str, list[float]] = {m: [] for m in recs}
    for k in range(repeats + 3):
        query = Query(item_ids=tuple(ids[j] for j in rng.choice(len(ids), 2, replace=False)))
        for mode, rec in recs.items():
            t0 = time.perf_counter()
            out = rec.recommend(query, Options(k=5, mode="outfit"))
            wall = time.perf_counter() - t0
            if k >= 3:  # warm-up
                score[mode].append((out.timings.score or 0.0) / 1e3)
                total[mode].append(wall)
    return {
        "items": len(ids),
        "score_step_ms": {m: _median_ms(v) for m, v in score.items()},
        "recommend_ms": {m: _median_ms(v) for m, v in total.items()},
        "added_score_step_ms": round(
            _median_ms(score["learned+rules"]) - _median_ms(score["rules"]), 4
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", required=True, help="an artifact with a compat model")
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    artifact = Artifact.load(args.artifact)
    if artifact.compat is None:
        raise SystemExit(f"{args.artifact}: no compatibility model (run stygig train-compat)")
    result = {
        "artifact": str(args.artifact),
        "model": artifact.compat.info.get("config"),
        "scorer": bench_scorer(artifact, args.items, args.repeats, args.seed),
        "recommend": bench_recommend(artifact, max(args.repeats // 4, 20), args.seed),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

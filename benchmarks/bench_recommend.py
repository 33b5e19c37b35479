"""Per-stage timings of ``Recommender.recommend`` for one photo at 10k catalogue items.

    python benchmarks/bench_recommend.py [--queries 200] [--items 10000] [--encoders ...]

Encoders: ``clip-int8`` and ``clip-fp32`` (the CLIP ViT-B/32 architecture with RANDOM weights —
no internet here; the compute is identical to the real model's) and ``efficientnet-lite0`` (real
weights), all through ONNX Runtime as a served artifact runs them. The catalogue is synthetic
(clustered vectors of the encoder's width, see benchmarks/synthetic.py) because search and
scoring cost depends on size and width only; the query photos are real product photos from
../shared/datasets/fashion-products (else the sample catalogue's photos). Variants are
interleaved query by query (A B C A B C ...) because the 2 cores are shared. ``serialise`` is
the answer's JSON bytes, as a server sends them (``Recommendation.to_json``). ``not-embed`` is
the wall-clock time outside the encoder call (the colour step runs on a second thread beside the
encoder); ``(cpu)`` adds up every stage but the encoder, wherever it ran. Writes
benchmarks/results/recommend.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stygig.build import make_build_encoder
from stygig.engine import Options, Query, Recommender
from stygig.scoring import ScoringConfig
from synthetic import synthetic_artifact

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "recommend.json"
KAGGLE = HERE.parent.parent / "shared" / "datasets" / "fashion-products" / "images"
VARIANTS = {
    "clip-int8": {"name": "clip-vit-b-32", "int8": True, "random_weights": True},
    "clip-fp32": {"name": "clip-vit-b-32", "int8": False, "random_weights": True},
    "efficientnet-lite0": {"name": "efficientnet-lite0", "int8": False, "random_weights": False},
}
STAGES = (
    "decode",
    "color",
    "embed",
    "search",
    "vote",
    "score",
    "rank",
    "serialise",
    "total",
)

ALWAYS_GUESS = replace(ScoringConfig.load(), gender_min_confidence=0.0)


def _photos(n: int) -> list[bytes]:
    if KAGGLE.is_dir():
        files = sorted(KAGGLE.glob("*.jpg"))[:n]
    else:
        from stygig.sample_catalog import generate_sample_catalog

        csv_path = generate_sample_catalog(Path(tempfile.mkdtemp()) / "sample")
        files = sorted((csv_path.parent / "images").glob("*.jpg"))[:n]
    return [f.read_bytes() for f in files]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--encoders", default=",".join(VARIANTS))
    args = parser.parse_args()
    faiss.omp_set_num_threads(1)
    photos = _photos(args.queries)
    recs: dict[str, Recommender] = {}
    with tempfile.TemporaryDirectory(prefix="stygig-bench-") as tmp:
        for key in args.encoders.split(","):
            spec = VARIANTS[key]
            with make_build_encoder(
                str(spec["name"]),
                int8=bool(spec["int8"]),
                random_weights=bool(spec["random_weights"]),
            ) as (encoder, files):
                path = synthetic_artifact(
                    Path(tmp) / key, args.items, encoder_info=encoder.describe(), extra_files=files
                )
            # Synthetic genders are random, so every photo's gender vote is unsure and would be
            # hedged to the unisex third of the catalogue; always guess instead, so the timing
            # covers the larger candidate set (the guessed gender + unisex), as before the hedge.
            recs[key] = Recommender.from_path(path, config=ALWAYS_GUESS)
            recs[key].recommend(Query(images=(photos[0],)))  # warm-up
        timings: dict[str, dict[str, list[float]]] = {k: {s: [] for s in STAGES} for k in recs}
        e2e: dict[str, list[float]] = {k: [] for k in recs}
        for photo in photos:
            for key, rec in recs.items():
                t0 = time.perf_counter()
                answer = rec.recommend(Query(images=(photo,)), Options())
                answer.to_json()  # what a server sends; times `serialise`, closes `total`
                e2e[key].append((time.perf_counter() - t0) * 1e3)
                for stage in STAGES:
                    timings[key][stage].append(float(answer.timings_ms.get(stage, 0.0)))
    results = {}
    for key in recs:
        t = {s: np.asarray(v) for s, v in timings[key].items()}
        # "total" is wall-clock (the colour runs beside the encoder), so this is the critical path
        # outside the encoder call.
        not_embed = t["total"] - t["embed"]
        # The CPU work outside the encoder, wherever it ran (the colour on its own thread).
        cpu = sum(t[s] for s in ("decode", "color", "search", "vote", "score", "rank", "serialise"))
        results[key] = {
            "stages_p50_ms": {s: round(float(np.median(v)), 3) for s, v in t.items()},
            "stages_p99_ms": {s: round(float(np.percentile(v, 99)), 3) for s, v in t.items()},
            "all_but_embed_p50_ms": round(float(np.median(not_embed)), 3),
            "all_but_embed_cpu_p50_ms": round(float(np.median(cpu)), 3),
            "end_to_end_p50_ms": round(float(np.median(e2e[key])), 3),
            "end_to_end_p99_ms": round(float(np.percentile(e2e[key], 99)), 3),
        }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "command": "python benchmarks/bench_recommend.py " + " ".join(sys.argv[1:]),
                "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "notes": [
                    "clip-* use RANDOM ViT-B/32 weights (no internet): same compute as the real model",
                    f"catalogue: {args.items} synthetic items; queries: {len(photos)} real photos",
                    "2 shared CPU cores; variants interleaved per query; FAISS on 1 thread",
                ],
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )
    header = (
        f"{'variant':<20}"
        + "".join(f"{s:>12}" for s in STAGES)
        + f"{'not-embed':>11}{'(cpu)':>8}{'e2e p50':>10}{'e2e p99':>10}"
    )
    print(header)
    for key, r in results.items():
        row = "".join(f"{r['stages_p50_ms'][s]:>12.2f}" for s in STAGES)
        print(
            f"{key:<20}{row}{r['all_but_embed_p50_ms']:>11.2f}{r['all_but_embed_cpu_p50_ms']:>8.2f}"
            f"{r['end_to_end_p50_ms']:>10.2f}{r['end_to_end_p99_ms']:>10.2f}"
        )


if __name__ == "__main__":
    main()

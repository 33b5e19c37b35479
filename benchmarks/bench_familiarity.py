"""How well ``unlike_catalogue`` tells photos the catalogue can answer from photos it cannot.

    python benchmarks/bench_familiarity.py --artifact A --photos NAME=GLOB [--photos ...]

For each artifact: its nearest-similarity profile (computed here from its rows when the
manifest predates it) and the threshold; for each named set of photos (a glob), each photo's
likeness to the catalogue (the engine's own answer: ``query[0].likeness``) and the
share marked ``unlike_catalogue``. Photos of the artifact's own items are skipped, so a set of
catalogue photos measures held-out photos only. Useful sets: held-out photos of the same shop,
another shop's product photos, and photos that are not garments (scikit-image's sample photos:
``pip download scikit-image --no-deps`` and unzip ``skimage/data/*`` from the wheel).
Writes benchmarks/results/familiarity.json.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from results_file import machine, notes_with_history  # noqa: E402
from stygig.artifact import Artifact  # noqa: E402
from stygig.engine import Recommender  # noqa: E402
from stygig.familiarity import nearest_profile, unlike_threshold  # noqa: E402
from stygig.recommendation import Query  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "familiarity.json"


def _measure(rec: Recommender, threshold: float, files: list[str]) -> dict[str, Any]:
    own = {Path(i.image).name for i in rec.artifact.items if i.image}
    sims = []
    for f in files:
        if Path(f).name in own:
            continue
        answer = rec.recommend(Query(images=(Path(f).read_bytes(),)))
        sims.append(answer.query[0].likeness)
    s = np.array(sims)
    if len(s) == 0:
        return {"photos": 0}
    return {
        "photos": len(s),
        "marked_unlike": round(float((s < threshold).mean()), 4),
        "nearest_similarity": {
            k: round(float(v), 4)
            for k, v in zip(
                ("min", "p05", "p50", "p95", "max"),
                np.percentile(s, [0, 5, 50, 95, 100]),
                strict=True,
            )
        },
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--artifact", action="append", required=True)
    ap.add_argument("--photos", action="append", required=True, help="NAME=GLOB")
    ap.add_argument("--limit", type=int, default=500, help="photos per set at most")
    args = ap.parse_args()
    load = os.getloadavg()
    sets = {}
    for spec in args.photos:
        name, _, pattern = spec.partition("=")
        sets[name] = sorted(glob.glob(pattern))[: args.limit]
    runs = []
    for path in args.artifact:
        art = Artifact.load(path)
        scale = None if art.whitening is None else art.whitening.scale
        profile = art.manifest.get("nearest_similarity") or nearest_profile(
            np.asarray(art.embeddings, np.float32), scale
        )
        threshold = unlike_threshold(profile)
        assert threshold is not None, path
        rec = Recommender(art)
        rec.snapshot.columns.unlike_below = threshold  # an artifact written before the profile
        run = {
            "artifact": Path(path).name,
            "encoder": art.manifest["encoder"]["name"],
            "profile": profile,
            "threshold": round(threshold, 4),
            "sets": {name: _measure(rec, threshold, files) for name, files in sets.items()},
        }
        runs.append(run)
        print(json.dumps(run, indent=1))
    notes = [
        "unlike_catalogue: a photo's likeness (cosine to its nearest item, unwhitened) below the catalogue's 1st percentile of "
        "nearest-other-item similarity less half its distance to the median "
        "(stygig.familiarity). Photos of the artifact's own items skipped."
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {"machine": machine(load), "runs": runs, "notes": notes_with_history(RESULTS, notes)},
            indent=2,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A living catalogue's targets, in process, on the sample catalogue (and synthetic vectors).

    python benchmarks/bench_catalog_changes.py [--encoder efficientnet-lite0|tiny]
                                               [--changes 1000] [--bulk 200]

Measures, with a change log in a temporary folder (fsync on every record):

* ``stock_visible``: a stock change's acknowledgement (logged + published), and whether the
  very next request already leaves the item out;
* ``add_visible``: a new item with a photo, acknowledgement to being the nearest item of its
  own photo (target: within 1 s);
* ``bulk_items_per_s``: new items with photos per second, in requests of 50, while a reader
  thread keeps recommending (target: >= 50/s with efficientnet-lite0);
* ``p50_during_changes``: a reader's recommend p50 alone, then while ``--changes`` changes
  (stock, price, attributes, adds) stream in one at a time; the rise in % (target: <= 20 %);
  and that no request failed;
* ``recall_after_changes``: IVF (synthetic 20k x 128), 10 % of the items changed (5 % replaced,
  5 % added) through a live index, recall@50 against the exact oracle vs. a fresh build
  (target: within 0.01).

Writes benchmarks/results/catalog_changes.json.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from stygig.artifact import Artifact
from stygig.build import build_artifact, make_build_encoder
from stygig.catalog.changelog import ChangeLog
from stygig.catalog.changes import parse_change
from stygig.engine import Options, Query, Recommender
from stygig.index import ExactIndex, LiveIndex, build_index
from stygig.living import LiveCatalog
from stygig.sample_catalog import generate_sample_catalog

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "catalog_changes.json"


def _reader(
    rec: Recommender, photo: bytes, stop: threading.Event, out: list[float], errors: list[str]
) -> None:
    query = Query(images=(photo,))
    while not stop.is_set():
        t0 = time.perf_counter()
        try:
            rec.recommend(query, Options())
        except Exception as e:  # counted: the target is that none fails
            errors.append(type(e).__name__)
        out.append((time.perf_counter() - t0) * 1e3)


def _add(item_id: str, photo: bytes, category: str = "jeans") -> dict[str, Any]:
    return {
        "op": "add",
        "item": {"id": item_id, "category": category, "gender": "unisex", "price": 10},
        "image_b64": base64.b64encode(photo).decode(),
    }


def _p50(values: list[float]) -> float:
    return round(statistics.median(values), 2) if values else float("nan")


def recall_after_changes(n: int = 20_000, dim: int = 128, k: int = 50) -> dict[str, float]:
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((64, dim))

    def draw(m: int) -> np.ndarray:
        x = centers[rng.integers(0, 64, m)] + 0.6 * rng.standard_normal((m, dim))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    base_x = draw(n)
    base = build_index(base_x, "ivf", nprobe=16)
    replaced = rng.choice(n, n // 20, replace=False)
    added = draw(n // 10)  # 5 % replacements (new vectors) + 5 % new items
    every = np.concatenate([base_x, added])
    live = LiveIndex(base, base_x).changed(every, replaced)
    live_merged = LiveIndex(live._merged(live.base, every, (), live.removed), every, live.removed)
    alive = np.setdiff1d(np.arange(len(every)), replaced)
    fresh = build_index(every[alive], "ivf", nprobe=16)
    oracle = ExactIndex(every)
    oracle.remove(replaced)
    queries = draw(200)
    want = oracle.search(queries, k)[1]

    def recall(ids: np.ndarray) -> float:
        return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ids, want, strict=True)]))

    fresh_ids = alive[fresh.search(queries, k)[1]]
    return {
        "fresh_build": round(recall(fresh_ids), 4),
        "live_delta": round(recall(live.search(queries, k)[1]), 4),
        "live_merged_into_ivf": round(recall(live_merged.search(queries, k)[1]), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--encoder", default="efficientnet-lite0")
    parser.add_argument("--changes", type=int, default=1000)
    parser.add_argument("--bulk", type=int, default=200, help="new items in the bulk test")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    results: dict[str, Any] = {"encoder": args.encoder}
    with tempfile.TemporaryDirectory(prefix="stygig-bench-changes-") as tmp:
        root = Path(tmp)
        csv = generate_sample_catalog(root / "catalog")
        queries = sorted((root / "catalog" / "queries").glob("*.jpg"))
        with make_build_encoder(args.encoder) as (encoder, extra):
            art = build_artifact(
                csv, root / "artifact", encoder, extra_files=extra, progress=False
            ).path
        rec = Recommender(Artifact.load(art))
        live = LiveCatalog(rec, ChangeLog(root / "log"))
        photo = (root / "catalog" / "queries" / "blue-jeans.jpg").read_bytes()  # a "jeans" photo
        rec.recommend(Query(images=(photo,)), Options())  # warm

        # A stock change: acknowledged, then the very next request.
        top = rec.recommend(Query(images=(photo,)), Options(mode="similar")).items[0].id
        t0 = time.perf_counter()
        live.submit([parse_change({"op": "update", "id": top, "set": {"stock": 0}})])
        ack = (time.perf_counter() - t0) * 1e3
        after = rec.recommend(Query(images=(photo,)), Options(mode="similar"))
        results["stock_visible"] = {
            "ack_ms": round(ack, 2),
            "next_request_leaves_it_out": top not in [i.id for i in after.items],
        }

        # A new item with a photo: acknowledged -> its own photo's nearest item.
        t0 = time.perf_counter()
        live.submit([parse_change(_add("bench-new", photo))])
        t1 = time.perf_counter()
        items = rec.recommend(Query(images=(photo,)), Options(mode="similar")).items
        t2 = time.perf_counter()
        # Its own photo: similarity 1 (ties with a catalogue copy of the photo go by id).
        mine = [i for i in items if i.id == "bench-new"]
        results["add_visible"] = {
            "ack_ms": round((t1 - t0) * 1e3, 2),
            "ack_to_recommended_ms": round((t2 - t1) * 1e3, 2),
            "recommended": bool(mine),
            "similarity": mine[0].similarity if mine else None,
            "top_similarity": items[0].similarity if items else None,
        }

        # Baseline p50 of a reader alone.
        stop, alone, errors = threading.Event(), [], []
        reader = threading.Thread(target=_reader, args=(rec, photo, stop, alone, errors))
        reader.start()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(alone) < 200:
            stop.wait(0.05)
        stop.set()
        reader.join()

        # Bulk adds with photos, in requests of 50, while the reader keeps recommending.
        photos = [q.read_bytes() for q in queries]
        stop = threading.Event()
        during_bulk: list[float] = []
        reader = threading.Thread(target=_reader, args=(rec, photo, stop, during_bulk, errors))
        reader.start()
        t0 = time.perf_counter()
        for start in range(0, args.bulk, 50):
            group = [
                parse_change(_add(f"bulk-{i}", photos[i % len(photos)]))
                for i in range(start, min(args.bulk, start + 50))
            ]
            live.submit(group)
        bulk_s = time.perf_counter() - t0
        stop.set()
        reader.join()
        results["bulk_items_per_s"] = round(args.bulk / bulk_s, 1)

        # p50 while changes stream in one at a time.
        ids = [i.id for i in rec.artifact.items[:100]]
        stop = threading.Event()
        during: list[float] = []
        reader = threading.Thread(target=_reader, args=(rec, photo, stop, during, errors))
        reader.start()
        t0 = time.perf_counter()
        for n in range(args.changes):
            item_id = ids[n % len(ids)]
            if n % 50 == 49:
                change = _add(f"stream-{n}", photos[n % len(photos)])
            elif n % 3 == 0:
                change = {"op": "update", "id": item_id, "set": {"stock": n % 4}}
            elif n % 3 == 1:
                change = {"op": "update", "id": item_id, "set": {"price": 10 + n % 7}}
            else:
                change = {"op": "update", "id": item_id, "set": {"size_run": f"S-{n % 5}"}}
            live.submit([parse_change(change)])
        stream_s = time.perf_counter() - t0
        stop.set()
        reader.join()
        base_p50, during_p50 = _p50(alone), _p50(during)
        results["p50_during_changes"] = {
            "alone_ms": base_p50,
            "during_ms": during_p50,
            "rise_pct": round(100 * (during_p50 / base_p50 - 1), 1),
            "during_bulk_ms": _p50(during_bulk),
            "changes_per_s": round(args.changes / stream_s, 1),
            "requests": len(alone) + len(during) + len(during_bulk),
            "failed": len(errors),
        }
        results["catalog_version"] = rec.snapshot.catalog_version
    results["recall_after_changes"] = recall_after_changes()
    print(json.dumps(results, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

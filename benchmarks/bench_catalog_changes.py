"""A living catalogue's targets, on the sample catalogue (and synthetic vectors for recall).

    python benchmarks/bench_catalog_changes.py [--encoder efficientnet-lite0|tiny]
        [--changes 1000] [--rate 20] [--bulk 200] [--rounds 3] [--clients 100]
        [--reload-requests 2000] [--only stock,add,bulk,stream,reload,recall]
        [--workdir DIR] [--nice N] [--int8]

Everything is measured with a change log in a folder (fsync on every record). Machines here
are shared, so every comparison is interleaved (alone, with changes, alone, ...) and each
section records the load average (``os.getloadavg``) beside its figures, and CPU time where
the wall time depends on what else runs.

* ``stock_visible``: a stock change's acknowledgement (logged + published), and whether the
  very next request already leaves the item out;
* ``add_visible``: a new item with a photo, acknowledgement to being the nearest item of its
  own photo (target: within 1 s);
* ``bulk``: new items with photos as a retailer sends them: a JSON Lines body of ``--bulk``
  adds (base64 photos) parsed and submitted as one request, alone and while a reader keeps
  recommending (closed loop: the next request as soon as the last is answered). Items per
  second, and the process CPU per item alone (``2 x 1000 / cpu_ms`` bounds what 2 free cores
  can do). Target: >= 50/s with efficientnet-lite0 while serving;
* ``stream``: a reader's recommend p50 in windows alone and while changes stream in, one per
  request, at a retailer's rate (``--rate`` per second: stock and price updates, attributes,
  and every 20th an added item with a photo), then flat out (the next change as soon as the
  last is acknowledged); ``--changes`` of each. The p50 rise in % (target: <= 20 %) and the
  requests that failed (target: 0);
* ``reload``: a real server (``stygig serve`` with a change log and a watched pointer) under
  ``--clients`` concurrent clients (:mod:`stygig.loadtest`) while the artifact version is
  switched back and forth (compacted version <-> original), alternately by
  ``POST /v1/catalog/reload`` and SIGHUP. Failed requests (target: 0) and reloads done;
* ``recall_after_changes``: IVF (synthetic 20k x 128), 10 % of the items changed (5 % replaced,
  5 % added) through a live index, recall@50 against the exact oracle vs. a fresh build
  (target: within 0.01).

With ``--int8`` the artifact's encoder is static int8 (``stygig build --int8``; changes' photos
are encoded with the artifact's own encoder) and the sections are recorded as ``<section>_int8``.

Writes benchmarks/results/catalog_changes.json (with ``--only``, the sections run replace
theirs in the existing file).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

import stygig.living
from stygig.artifact import Artifact, read_manifest
from stygig.build import build_artifact, make_build_encoder
from stygig.catalog.changelog import ChangeLog
from stygig.catalog.changes import parse_change
from stygig.compaction import compact
from stygig.engine import Options, Query, Recommender
from stygig.index import ExactIndex, LiveIndex, build_index
from stygig.living import LiveCatalog
from stygig.loadtest import LoadTestConfig, run_load_test
from stygig.sample_catalog import generate_sample_catalog
from stygig.serving.catalog_changes import parse_changes_body
from stygig.snapshot import artifact_version

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "catalog_changes.json"
SECTIONS = ("stock", "add", "bulk", "stream", "reload", "recall")


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Reader:
    """A client recommending in a closed loop on a thread; latencies (ms) go to ``sink``."""

    def __init__(self, rec: Recommender, photo: bytes) -> None:
        self.rec, self.query = rec, Query(images=(photo,))
        self.sink: list[float] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            sink = self.sink
            t0 = time.perf_counter()
            try:
                self.rec.recommend(self.query, Options())
            except Exception as e:  # counted: the target is that none fails
                self.errors.append(type(e).__name__)
            sink.append((time.perf_counter() - t0) * 1e3)

    def __enter__(self) -> Reader:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def window(
        self, seconds: float | None = None, until: Callable[[], Any] | None = None
    ) -> list[float]:
        """Latencies of the requests that started during a window (``seconds`` long, or while
        ``until`` runs)."""
        window: list[float] = []
        self.sink = window
        if until is not None:
            until()
        else:
            self._stop.wait(seconds)
        self.sink = []
        return window


def _add(item_id: str, photo: bytes, category: str = "jeans") -> dict[str, Any]:
    return {
        "op": "add",
        "item": {"id": item_id, "category": category, "gender": "unisex", "price": 10},
        "image_b64": base64.b64encode(photo).decode(),
    }


def _p50(values: list[float]) -> float:
    return round(statistics.median(values), 2) if values else float("nan")


def _pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 2) if values else float("nan")


# -- sections ---------------------------------------------------------------------------------


def stock_visible(rec: Recommender, live: LiveCatalog, photo: bytes) -> dict[str, Any]:
    top = rec.recommend(Query(images=(photo,)), Options(mode="similar")).items[0].id
    t0 = time.perf_counter()
    live.submit([parse_change({"op": "update", "id": top, "set": {"stock": 0}})])
    ack = (time.perf_counter() - t0) * 1e3
    after = rec.recommend(Query(images=(photo,)), Options(mode="similar"))
    return {
        "ack_ms": round(ack, 2),
        "next_request_leaves_it_out": top not in [i.id for i in after.items],
    }


def add_visible(rec: Recommender, live: LiveCatalog, photo: bytes) -> dict[str, Any]:
    t0 = time.perf_counter()
    live.submit([parse_change(_add("bench-new", photo))])
    t1 = time.perf_counter()
    items = rec.recommend(Query(images=(photo,)), Options(mode="similar")).items
    t2 = time.perf_counter()
    # Its own photo: similarity 1 (ties with a catalogue copy of the photo go by id).
    mine = [i for i in items if i.id == "bench-new"]
    return {
        "ack_ms": round((t1 - t0) * 1e3, 2),
        "ack_to_recommended_ms": round((t2 - t1) * 1e3, 2),
        "recommended": bool(mine),
        "similarity": mine[0].similarity if mine else None,
        "top_similarity": items[0].similarity if items else None,
    }


def bulk(
    rec: Recommender, live: LiveCatalog, photo: bytes, photos: list[bytes], n: int, rounds: int
) -> dict[str, Any]:
    """JSON Lines bodies of ``n`` adds, alone and while a reader recommends, interleaved."""
    counter = iter(range(10**9))

    def body() -> bytes:
        lines = [
            json.dumps(_add(f"bulk-{(i := next(counter))}", photos[i % len(photos)]))
            for _ in range(n)
        ]
        return "\n".join(lines).encode()

    def send() -> tuple[float, float]:
        data = body()  # the client's work, not timed
        t0, c0 = time.perf_counter(), _cpu_s()
        live.submit(parse_changes_body(data, "application/x-ndjson"))
        return time.perf_counter() - t0, _cpu_s() - c0

    alone: list[tuple[float, float]] = []
    serving: list[float] = []
    latencies: list[float] = []
    errors = 0
    load = [_load()]
    for _ in range(rounds):
        alone.append(send())
        with Reader(rec, photo) as reader:
            latencies += reader.window(until=lambda: serving.append(send()[0]))
        errors += len(reader.errors)
    load.append(_load())
    cpu_ms = statistics.median(c for _, c in alone) / n * 1e3
    return {
        "items_per_request": n,
        "rounds": rounds,
        "alone_items_per_s": [round(n / s, 1) for s, _ in alone],
        "serving_items_per_s": [round(n / s, 1) for s in serving],
        "serving_reader_p50_ms": _p50(latencies),
        "cpu_ms_per_item_alone": round(cpu_ms, 2),
        "two_free_cores_bound_items_per_s": round(2000 / cpu_ms, 1),
        "failed": errors,
        "load_average": load,
    }


def _stream_change(n: int, ids: list[str], photos: list[bytes]) -> dict[str, Any]:
    item_id = ids[n % len(ids)]
    if n % 20 == 19:
        return _add(f"stream-{n}", photos[n % len(photos)])
    if n % 3 == 0:
        return {"op": "update", "id": item_id, "set": {"stock": n % 4}}
    if n % 3 == 1:
        return {"op": "update", "id": item_id, "set": {"price": 10 + n % 7}}
    return {"op": "update", "id": item_id, "set": {"size_run": f"S-{n % 5}"}}


def stream(
    rec: Recommender,
    live: LiveCatalog,
    photo: bytes,
    photos: list[bytes],
    changes: int,
    rate: float | None,
    windows: int = 10,
) -> dict[str, Any]:
    """``changes`` changes in ``windows`` windows, each after a window of the reader alone
    as long as the last change window (so both see the same machine)."""
    ids = [i.id for i in rec.artifact.items[:100]]
    per = max(1, changes // windows)
    alone: list[float] = []
    during: list[float] = []
    sent = [0]
    spent = [0.0]
    load = [_load()]

    def send_window() -> None:
        t0 = time.perf_counter()
        for k in range(per):
            if rate is not None:  # paced: change k of this window at t0 + k / rate
                delay = t0 + k / rate - time.perf_counter()
                if delay > 0:
                    threading.Event().wait(delay)
            live.submit([parse_change(_stream_change(sent[0], ids, photos))])
            sent[0] += 1
        spent[0] += time.perf_counter() - t0

    with Reader(rec, photo) as reader:
        reader.window(2.0)  # warm
        last = per / rate if rate else 2.0
        for _ in range(windows):
            alone += reader.window(last)
            t0 = time.perf_counter()
            during += reader.window(until=send_window)
            last = time.perf_counter() - t0
        errors = len(reader.errors)
    load.append(_load())
    base, with_changes = _p50(alone), _p50(during)
    return {
        "changes": sent[0],
        "changes_per_s": round(sent[0] / spent[0], 1),
        "alone_p50_ms": base,
        "during_p50_ms": with_changes,
        "rise_pct": round(100 * (with_changes / base - 1), 1),
        "alone_p90_ms": _pct(alone, 90),
        "during_p90_ms": _pct(during, 90),
        "requests": len(alone) + len(during),
        "failed": errors,
        "load_average": load,
    }


def reload_under_load(
    art: Path, log: Path, root: Path, queries: Path, clients: int, requests: int
) -> dict[str, Any]:
    """A real server under ``clients`` concurrent clients while the version flips."""
    v2 = root / "artifact-v2"
    shutil.rmtree(v2, ignore_errors=True)
    compact(art, ChangeLog(log), v2)
    pointer = root / "serve-this"
    pointer.write_text(str(art))
    with socket_port() as port:
        pass
    url = f"http://127.0.0.1:{port}"
    argv = [
        sys.executable, "-c", "import sys; from stygig.cli import main; sys.exit(main())", "serve", "--artifact", str(art), "--port", str(port),
        "--change-log", str(log), "--watch", str(pointer), "--watch-interval", "3600",
        "--log-level", "warning",
    ]  # fmt: skip
    server_log = (root / "server.log").open("ab")
    process = subprocess.Popen(argv, stdout=server_log, stderr=subprocess.STDOUT)
    reloads: list[str] = []
    refused: list[int] = []
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                raise RuntimeError("the server exited before it was ready")
            try:
                if httpx.get(url + "/ping", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the server did not get ready")
            threading.Event().wait(0.1)
        config = LoadTestConfig(url=url, images=queries, concurrency=clients, requests=requests)
        report: list[Any] = []
        runner = threading.Thread(target=lambda: report.append(run_load_test(config)))
        load = [_load()]
        runner.start()
        versions = [v2, art]
        with httpx.Client(base_url=url, timeout=120) as client:
            n = 0
            while runner.is_alive():
                target = versions[n % 2]
                pointer.write_text(str(target))
                want = artifact_version(read_manifest(target))
                if n % 2 == 0:
                    r = client.post("/v1/catalog/reload")
                    if r.status_code != 200:
                        refused.append(r.status_code)
                else:
                    process.send_signal(signal.SIGHUP)
                # Wait for the swap (or the load test's end), then the next one.
                got = ""
                while runner.is_alive() and got != want:
                    got = client.get("/v1/catalog/version").json()["artifact_version"]
                    if got != want:
                        threading.Event().wait(0.05)
                if got == want:
                    reloads.append(got)
                n += 1
        runner.join()
        load.append(_load())
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
        server_log.close()
    result = report[0]
    return {
        "clients": clients,
        "requests": result.requests,
        "reloads": len(reloads),
        "reload_refused": len(refused),
        "failed": result.requests - result.counts.get("2xx", 0),
        "statuses": result.statuses,
        "throughput_rps": result.throughput_rps,
        "latency_ms": result.latency_ms,
        "load_average": load,
    }


class socket_port:
    """A free TCP port (``with socket_port() as port``)."""

    def __enter__(self) -> int:
        import socket

        self._s = socket.socket()
        self._s.bind(("127.0.0.1", 0))
        return int(self._s.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self._s.close()


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


def _artifact(root: Path, encoder_name: str, int8: bool) -> tuple[Path, Path]:
    """The sample catalogue and its artifact under ``root`` (built once, then reused; with
    ``int8``, the static int8 encoder calibrated on the catalogue's photos, as ``stygig build
    --int8`` makes it)."""
    csv = root / "catalog" / "catalog.csv"
    art = root / ("artifact-int8" if int8 else "artifact")
    if not csv.exists():
        csv = generate_sample_catalog(root / "catalog")
    if not (art / "manifest.json").exists():
        photos = sorted((root / "catalog").rglob("*.jpg")) if int8 else []
        with make_build_encoder(encoder_name, int8=int8, calibration_photos=photos) as (
            encoder,
            extra,
        ):
            build_artifact(csv, art, encoder, extra_files=extra, progress=False)
    return root / "catalog", art


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--encoder", default="efficientnet-lite0")
    parser.add_argument(
        "--int8", action="store_true", help="the artifact's encoder in static int8 (build --int8)"
    )
    parser.add_argument("--changes", type=int, default=1000, help="changes per stream figure")
    parser.add_argument("--rate", type=float, default=20.0, help="a retailer's changes per s")
    parser.add_argument("--bulk", type=int, default=200, help="new items per bulk request")
    parser.add_argument("--rounds", type=int, default=3, help="bulk requests of each kind")
    parser.add_argument("--clients", type=int, default=100, help="hot reload: concurrency")
    parser.add_argument("--reload-requests", type=int, default=2000)
    parser.add_argument("--only", default=",".join(SECTIONS), help="sections to run")
    parser.add_argument("--workdir", type=Path, help="keep (and reuse) the built artifact here")
    parser.add_argument(
        "--nice", type=int, default=None, help="override STYGIG_CHANGE_NICE for this run"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    only = set(args.only.split(","))
    tag = "_int8" if args.int8 else ""  # int8 figures sit beside the fp32 ones
    if args.nice is not None:
        stygig.living.CHANGE_NICE = args.nice
    results: dict[str, Any] = {
        "encoder": args.encoder,
        "change_nice": stygig.living.CHANGE_NICE,
        "cpus": os.cpu_count(),
    }
    with tempfile.TemporaryDirectory(prefix="stygig-bench-changes-") as tmp:
        root = args.workdir or Path(tmp)
        catalog, art = _artifact(root, args.encoder, args.int8)
        log = Path(tmp) / "log"
        queries = sorted((catalog / "queries").glob("*.jpg"))
        photos = [q.read_bytes() for q in queries]
        photo = (catalog / "queries" / "blue-jeans.jpg").read_bytes()  # a "jeans" photo
        rec = Recommender(Artifact.load(art))
        live = LiveCatalog(rec, ChangeLog(log))
        rec.recommend(Query(images=(photo,)), Options())  # warm
        if "stock" in only:
            results["stock_visible" + tag] = stock_visible(rec, live, photo)
        if "add" in only:
            results["add_visible" + tag] = add_visible(rec, live, photo)
        if "bulk" in only:
            results["bulk" + tag] = bulk(rec, live, photo, photos, args.bulk, args.rounds)
        if "stream" in only:
            results["stream_at_rate" + tag] = stream(
                rec, live, photo, photos, args.changes, args.rate
            )
            results["stream_flat_out" + tag] = stream(rec, live, photo, photos, args.changes, None)
        results["catalog_version" + tag] = rec.snapshot.catalog_version
        if "reload" in only:
            # The log (with whatever the sections above wrote) is the server's; compaction
            # folds it into the version the server flips to.
            if rec.snapshot.sequence == 0:
                live.submit([parse_change(_add("reload-new", photo))])
            results["reload_under_load" + tag] = reload_under_load(
                art, log, Path(tmp), catalog / "queries", args.clients, args.reload_requests
            )
    if "recall" in only:
        results["recall_after_changes"] = recall_after_changes()
    print(json.dumps(results, indent=2))
    if set(SECTIONS) - only and args.out.exists():
        results = {**json.loads(args.out.read_text()), **results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

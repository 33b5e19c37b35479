"""The IVF-PQ index (stygig.index_pq) at 1M, 5M and 10M items: recall, latency, memory, build.

    python benchmarks/bench_scale.py [--sizes 1000000,5000000,10000000] [--queries 200]
        [--exact-queries 100] [--steady-queries 2000] [--cold-queries 20]
        [--workdir /tmp/stygig-scale] [--nprobe 32] [--rerank-extra 100] [--mapped-rows-mb 512]
        [--build-threads 1] [--opq] [--keep] [--serve-only]

Synthetic clustered 512-d unit vectors, the same generator, seeds and slot mix as
``bench_search.py`` (its 1M catalogue is this one's 1M), written chunk by chunk as float16 into one
memory-mapped file per outfit slot under ``--workdir`` (10M items: 10 GB of disk), so no step
holds the catalogue in memory. Each size runs three steps:

1. generate: vectors per slot, and exact top 50 of ``--exact-queries`` queries per slot by brute
   force over the float16 rows as they are written (the ground truth: what re-ranking reads);
2. build (a subprocess, FAISS on ``--build-threads``: 1 by default, as OpenMP's spinning
   threads run ~10x slower on cores other processes share): per slot, ``train_pq`` on a sample and
   ``add_chunk`` per 100k rows then ``merge_chunks`` -- the functions a Ray build runs as tasks
   -- timed as train and add seconds;
3. serve (a fresh subprocess, so resident memory is the index's alone; FAISS and BLAS on one
   thread): load the slot indexes as ``artifact`` loading would (codes read, float16 rows left
   on disk: ``mapped_rows_mb`` per part memory-mapped, the rest read with ``pread``), read the
   rows files once into the page cache (``PQIndex.warm``), then time ``search_each(q, 293)``
   -- the engine's candidate-pool call for one query vector (candidate_pool 2048 over 7
   slots) -- and ``search(q, 50)``, and
   compare top 50s with the exact ones (recall@50 over the catalogue, and per slot: each
   slot's own top 50, what outfit candidates come from); then ``--steady-queries`` more pool
   searches with fresh query vectors, as a long-running server makes. Resident memory (VmRSS,
   and its anonymous and file-backed parts) after loading, after the timed queries and after
   the steady ones; and the page cache the rows need, stated apart because it is the
   kernel's (shared, reclaimable, in a process's RSS only where mapped): the rows files'
   size, how much of them the cache held after warming and after the queries (``mincore``),
   and the pool search's p50 once the rows are evicted from the cache (``--cold-queries``:
   the latency without that memory). ``--mapped-rows-mb`` is the index parameter
   ``mapped_rows_mb`` (MB of each part's rows read through a memory map, the rest with
   ``pread``).

Scoring + ranking after the search does not depend on the catalogue's size (the pool is 2048
items at any size); its p50 comes from ``benchmarks/results/search.json`` at 1M and is added to
the search p50 for the "search + scoring" figure. Appends to benchmarks/results/scale.json
(every run is kept, with its date and load average).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import mmap
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stygig.catalog import Taxonomy
from synthetic import CATEGORIES

DIM = 512
CHUNK = 100_000
K_EXACT = 50
POOL_SHARE = 293  # ceil(candidate_pool 2048 / 7 slots): what the engine asks each slot for
RESULTS = Path(__file__).resolve().parent / "results" / "scale.json"
SEARCH_RESULTS = RESULTS.parent / "search.json"


def status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def memory() -> dict[str, float]:
    return {k: round(status_kb(k) / 1024, 1) for k in ("VmRSS", "RssAnon", "RssFile", "VmHWM")}


def cached_bytes(file: Path) -> int:
    """Bytes of ``file`` in the page cache: ``mincore`` over a mapping that is never read, so
    nothing is faulted in and this process's resident memory does not change."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t] + [ctypes.c_int] * 3 + [ctypes.c_long]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    size, page = file.stat().st_size, mmap.PAGESIZE
    if not size:
        return 0
    fd = os.open(file, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap failed")
        try:
            vec = (ctypes.c_ubyte * (-(-size // page)))()
            if libc.mincore(ctypes.c_void_p(addr), size, vec):
                raise OSError(ctypes.get_errno(), "mincore failed")
            return int(np.count_nonzero(np.frombuffer(vec, np.uint8) & 1)) * page
        finally:
            libc.munmap(ctypes.c_void_p(addr), size)
    finally:
        os.close(fd)


def slot_names() -> tuple[list[str], np.ndarray]:
    """Slot names (sorted, as the artifact numbers its parts) and each category's slot number."""
    taxonomy = Taxonomy.load()
    slots = [taxonomy.slot_of(c) for c in CATEGORIES]
    names = sorted(set(slots))
    return names, np.array([names.index(s) for s in slots])


def clustered_chunks(n: int, dim: int, *, clusters: int = 256, seed: int = 0):  # type: ignore[no-untyped-def]
    """``synthetic.clustered_vectors(n, dim, seed=seed)`` chunk by chunk (the same numbers)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    for start in range(0, n, CHUNK):
        m = min(CHUNK, n - start)
        labels = rng.integers(0, clusters, m)
        block = centres[labels] + 0.6 * rng.normal(size=(m, dim)).astype(np.float32)
        yield start, block / np.linalg.norm(block, axis=1, keepdims=True)


def generate(n: int, data: Path, n_queries: int, n_exact: int) -> dict[str, Any]:
    """Per-slot float16 files, row ids, queries and the exact per-slot top 50 (see above)."""
    from stygig.index_pq import store_rows
    from synthetic import clustered_vectors

    meta_file = data / "meta.json"
    if meta_file.exists():
        meta: dict[str, Any] = json.loads(meta_file.read_text())
        if meta["queries"] >= n_queries and meta["exact_queries"] >= n_exact:
            return meta
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    t0 = time.perf_counter()
    names, cat_slot = slot_names()
    # synthetic_artifact's categories: the first draw of default_rng(0).
    slot = cat_slot[np.random.default_rng(0).integers(0, len(CATEGORIES), n)]
    counts = np.bincount(slot, minlength=len(names))
    files = [
        store_rows(data / f"index-part{i}-vectors.faiss", int(c), DIM, "w+")
        for i, c in enumerate(counts)
    ]
    for i in range(len(names)):
        np.save(data / f"rows{i}.npy", np.flatnonzero(slot == i))
    queries = clustered_vectors(n_queries, DIM, seed=2)
    np.save(data / "queries.npy", queries)
    q = queries[:n_exact]
    best_s = [np.full((K_EXACT, n_exact), -np.inf, np.float32) for _ in names]
    best_i = [np.full((K_EXACT, n_exact), -1, np.int64) for _ in names]
    written = np.zeros(len(names), np.int64)
    for start, block in clustered_chunks(n, DIM, seed=1):
        half = block.astype(np.float16)
        chunk_slot = slot[start : start + len(block)]
        for i in range(len(names)):
            mine = np.flatnonzero(chunk_slot == i)
            rows = half[mine]
            files[i][written[i] : written[i] + len(rows)] = rows
            sims = rows.astype(np.float32) @ q.T
            all_s = np.concatenate([best_s[i], sims])
            all_i = np.concatenate(
                [best_i[i], np.broadcast_to((start + mine)[:, None], sims.shape)]
            )
            top = np.argpartition(-all_s, K_EXACT - 1, axis=0)[:K_EXACT]
            best_s[i] = np.take_along_axis(all_s, top, 0)
            best_i[i] = np.take_along_axis(all_i, top, 0)
            written[i] += len(rows)
    for f in files:
        f.flush()
    del files
    np.savez(data / "exact.npz", scores=np.stack(best_s), ids=np.stack(best_i))
    meta = {
        "items": n,
        "slots": names,
        "slot_items": counts.tolist(),
        "queries": n_queries,
        "exact_queries": n_exact,
        "generate_s": round(time.perf_counter() - t0, 1),
        "disk_gb": round(n * DIM * 2 / 1e9, 2),
    }
    meta_file.write_text(json.dumps(meta))
    return meta


def build(data: Path, params: dict[str, Any]) -> dict[str, Any]:
    """Train and add every slot's index with the task functions; save the codes."""
    import faiss

    from stygig.index_pq import (
        PQIndex,
        add_chunk,
        default_pq_params,
        merge_chunks,
        store_rows,
        train_pq,
        training_sample,
    )

    params = dict(params)
    faiss.omp_set_num_threads(int(params.pop("threads", 1)))

    meta = json.loads((data / "meta.json").read_text())
    out: dict[str, Any] = {
        "threads": faiss.omp_get_max_threads(),
        "train_s": 0.0,
        "add_s": 0.0,
        "parts": [],
    }
    for i, n_i in enumerate(meta["slot_items"]):
        store_file = data / f"index-part{i}-vectors.faiss"
        vectors = store_rows(store_file, n_i, DIM)
        part_params = {**default_pq_params(n_i, DIM, sum(meta["slot_items"])), **params}
        t0 = time.perf_counter()
        sample = training_sample(vectors, int(part_params["nlist"]))
        trained = train_pq(sample, **part_params)
        t1 = time.perf_counter()
        chunks = [
            add_chunk(trained, vectors[s : s + CHUNK], np.arange(s, min(s + CHUNK, n_i)))
            for s in range(0, n_i, CHUNK)
        ]
        index = merge_chunks(trained, chunks)
        t2 = time.perf_counter()
        PQIndex.from_parts(trained, index, store_file, part_params).save(
            data, f"index-part{i}.faiss"
        )
        del chunks, index, vectors
        out["train_s"] += t1 - t0
        out["add_s"] += t2 - t1
        out["parts"].append(
            {
                "items": n_i,
                "nlist": part_params["nlist"],
                "train_s": round(t1 - t0, 1),
                "add_s": round(t2 - t1, 1),
                "sample": len(sample),
            }
        )
        (data / f"params{i}.json").write_text(json.dumps(part_params))
    out["train_s"], out["add_s"] = round(out["train_s"], 1), round(out["add_s"], 1)
    out["build_s"] = round(out["train_s"] + out["add_s"], 1)
    out["memory_mb"] = memory()
    return out


def load_slots(data: Path, overrides: dict[str, Any] | None = None) -> Any:
    """The built slot indexes of ``data`` as one split index, loaded as ``artifact`` loading
    would (codes read, float16 rows left on disk)."""
    from stygig.index import PartitionedIndex
    from stygig.index_pq import PQIndex

    meta = json.loads((data / "meta.json").read_text())
    parts, rows = [], []
    for i, n_i in enumerate(meta["slot_items"]):
        params = {**json.loads((data / f"params{i}.json").read_text()), **(overrides or {})}
        parts.append(PQIndex.load(data, f"index-part{i}.faiss", n_i, params))
        rows.append(np.load(data / f"rows{i}.npy"))
    return PartitionedIndex(list(meta["slots"]), parts, rows, "slot")


def serve(data: Path, overrides: dict[str, Any], steady: int, cold_queries: int) -> dict[str, Any]:
    """Load the slot indexes, time searches on one thread, measure recall, memory and the page
    cache the rows need."""
    from stygig.index import PartitionedIndex
    from stygig.index_pq import PQIndex
    from stygig.threads import limit_library_threads
    from synthetic import clustered_vectors

    limit_library_threads(1)
    meta = json.loads((data / "meta.json").read_text())
    before = memory()
    index = load_slots(data, overrides)
    parts, rows = index.parts, index.rows
    loaded = memory()
    row_files = [p.segments[0].file for p in parts]
    t = time.perf_counter()
    warmed = sum(p.warm() for p in parts)  # the rows file into the page cache, as serving does
    warm_s = time.perf_counter() - t
    cached_warm = sum(cached_bytes(f) for f in row_files)
    warmed_memory = memory()
    queries = np.load(data / "queries.npy")
    for q in queries[:10]:  # warm-up: first touches of the code lists
        index.search_each(q[None, :], POOL_SHARE)
    pool_ms, pool_cpu_ms, top50_ms = [], [], []
    load_start = os.getloadavg()
    for q in queries:
        t, c = time.perf_counter(), time.thread_time()
        index.search_each(q[None, :], POOL_SHARE)
        pool_cpu_ms.append((time.thread_time() - c) * 1e3)
        pool_ms.append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()
        index.search(q[None, :], K_EXACT)
        top50_ms.append((time.perf_counter() - t) * 1e3)
    exact = np.load(data / "exact.npz")
    ex_s, ex_i = exact["scores"], exact["ids"]  # (slots, 50, queries)
    n_exact = ex_s.shape[2]
    recall, slot_recall = [], []
    for j in range(n_exact):
        s, i = ex_s[:, :, j].ravel(), ex_i[:, :, j].ravel()
        want = set(i[np.argsort(-s, kind="stable")[:K_EXACT]].tolist())
        got = index.search(queries[j][None, :], K_EXACT)[1][0]
        recall.append(len(want & set(got.tolist())) / K_EXACT)
        each = index.search_each(queries[j][None, :], K_EXACT)[1][0]
        for p, r in enumerate(rows):
            mine = each[np.isin(each, r)]
            slot_recall.append(len(set(ex_i[p, :, j].tolist()) & set(mine.tolist())) / K_EXACT)
    after_timed = memory()
    steady_ms, steady_cpu_ms = [], []
    for q in clustered_vectors(steady, DIM, seed=3):
        t, c = time.perf_counter(), time.thread_time()
        index.search_each(q[None, :], POOL_SHARE)
        steady_cpu_ms.append((time.thread_time() - c) * 1e3)
        steady_ms.append((time.perf_counter() - t) * 1e3)
    after_steady = memory()
    cached_end = sum(cached_bytes(f) for f in row_files)
    code_mb = sum(p.memory_bytes() for p in parts) / 2**20
    rows_bytes = sum(f.stat().st_size for f in row_files)
    params = {k: v for k, v in parts[0].params().items() if k != "nlist"}
    nlists = [int(p.segments[0].ivf.nlist) for p in parts]
    # Without the page cache: the rows evicted (this benchmark's files only; pages a process
    # maps are not evicted, so the parts are reopened on the same codes first), each
    # shortlisted row is a disk read.
    fresh = [
        PQIndex.from_parts(p.trained, p.segments[0].codes, p.segments[0].file, p.params())
        for p in parts
    ]
    del index, parts
    gc.collect()
    for f in row_files:
        fd = os.open(f, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
    cached_cold = sum(cached_bytes(f) for f in row_files)
    cold = PartitionedIndex(list(meta["slots"]), fresh, rows, "slot")  # type: ignore[arg-type]
    cold_ms = []
    for q in queries[:cold_queries]:
        t = time.perf_counter()
        cold.search_each(q[None, :], POOL_SHARE)
        cold_ms.append((time.perf_counter() - t) * 1e3)
    return {
        "params": params,
        "nlist_per_slot": nlists,
        "search_pool_p50_ms": round(float(np.median(pool_ms)), 3),
        "search_pool_p99_ms": round(float(np.percentile(pool_ms, 99)), 3),
        "search_pool_cpu_p50_ms": round(float(np.median(pool_cpu_ms)), 3),
        "serve_load_average": [round(v, 2) for v in load_start],
        "search_top50_p50_ms": round(float(np.median(top50_ms)), 3),
        "steady_queries": len(steady_ms),
        "steady_pool_p50_ms": round(float(np.median(steady_ms)), 3) if steady_ms else None,
        "steady_pool_cpu_p50_ms": (
            round(float(np.median(steady_cpu_ms)), 3) if steady_cpu_ms else None
        ),
        "recall_at_50": round(float(np.mean(recall)), 4),
        "slot_recall_at_50": round(float(np.mean(slot_recall)), 4),
        "recall_queries": n_exact,
        "timed_queries": len(queries),
        "index_memory_mb": round(code_mb, 1),
        "warm": {"gb": round(warmed / 1e9, 2), "s": round(warm_s, 1)},
        "memory_mb": {
            "before_load": before,
            "loaded": loaded,
            "warmed": warmed_memory,
            "after_timed_queries": after_timed,
            "after_steady_queries": after_steady,
        },
        "page_cache": {
            "note": "the kernel's page cache (shared, reclaimable, counted in a process's RSS "
            "only where mapped: mapped_rows_mb per part) that the latency figures need: "
            "the float16 rows files",
            "rows_files_gb": round(rows_bytes / 1e9, 2),
            "cached_gb_after_warm": round(cached_warm / 1e9, 2),
            "cached_gb_after_queries": round(cached_end / 1e9, 2),
            "cached_gb_after_eviction": round(cached_cold / 1e9, 2),
            "rows_evicted_pool_p50_ms": round(float(np.median(cold_ms)), 1) if cold_ms else None,
            "rows_evicted_queries": len(cold_ms),
        },
    }


def _child(step: str, data: Path, params: dict[str, Any]) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--step", step, "--data", str(data), "--params"]
    out = subprocess.run([*cmd, json.dumps(params)], capture_output=True, text=True)
    if out.returncode or not out.stdout.strip():
        raise SystemExit(f"{step} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def scoring_p50_ms() -> float | None:
    """score + rank p50 at 1M from search.json (the same 2048-item pool at any size)."""
    try:
        runs = json.loads(SEARCH_RESULTS.read_text())["results"]
    except (OSError, ValueError, KeyError):
        return None
    at_1m = [r for r in runs if r["items"] == 1_000_000]
    if not at_1m:
        return None
    st = at_1m[-1]["stages_p50_ms"]
    return round(float(st["score"] + st["rank"]), 3)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000000,5000000,10000000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--exact-queries", type=int, default=100)
    parser.add_argument(
        "--steady-queries", type=int, default=2000, help="pool searches after the timed ones"
    )
    parser.add_argument(
        "--cold-queries", type=int, default=20, help="pool searches timed with the rows evicted"
    )
    parser.add_argument("--mapped-rows-mb", type=float, help="MB of each part's rows mapped")
    parser.add_argument("--workdir", default="/tmp/stygig-scale")
    parser.add_argument("--nprobe", type=int)
    parser.add_argument("--rerank-extra", type=int)
    parser.add_argument("--build-threads", type=int, default=1)
    parser.add_argument("--opq", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the generated data")
    parser.add_argument("--serve-only", action="store_true", help="reuse the built index")
    parser.add_argument("--step", choices=("build", "serve"), help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--params", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        params = json.loads(args.params)
        if args.step == "build":
            out = build(Path(args.data), params)
        else:
            out = serve(Path(args.data), params["search"], params["steady"], params["cold"])
        print(json.dumps(out), flush=True)
        return
    build_params: dict[str, Any] = {"threads": args.build_threads}
    if args.opq:
        build_params["opq"] = True
    search_params = {
        k: v
        for k, v in (
            ("nprobe", args.nprobe),
            ("rerank_extra", args.rerank_extra),
            ("mapped_rows_mb", args.mapped_rows_mb),
        )
        if v is not None
    }
    scoring = scoring_p50_ms()
    results = []
    for n in [int(s) for s in args.sizes.split(",")]:
        data = Path(args.workdir) / f"n{n}"
        free_gb = shutil.disk_usage(Path(args.workdir).parent).free / 1e9
        if not (data / "meta.json").exists() and free_gb < n * DIM * 2 / 1e9 * 1.2:
            print(f"skip {n}: {free_gb:.0f} GB free, needs {n * DIM * 2 / 1e9:.0f}", flush=True)
            continue
        load_start = os.getloadavg()
        meta = generate(n, data, args.queries, args.exact_queries)
        built = None
        if not (args.serve_only and (data / "index-part0.faiss").exists()):
            built = _child("build", data, build_params)
        served = _child(
            "serve",
            data,
            {"search": search_params, "steady": args.steady_queries, "cold": args.cold_queries},
        )
        total = served["search_pool_p50_ms"] + scoring if scoring is not None else None
        result = {
            "items": n,
            "slot_items": meta["slot_items"],
            "generate_s": meta["generate_s"],
            "disk_gb_float16": meta["disk_gb"],
            "build": built,
            **served,
            "scoring_p50_ms_at_1m": scoring,
            "search_plus_scoring_p50_ms": round(total, 3) if total is not None else None,
            "resident_mb_per_1m_items": round(
                max(m["VmRSS"] for m in served["memory_mb"].values() if m) / (n / 1e6), 1
            ),
            "load_average": {"start": load_start, "end": os.getloadavg()},
        }
        print(json.dumps(result), flush=True)
        results.append(result)
        if not args.keep:
            shutil.rmtree(data, ignore_errors=True)
    write_results(results)


def write_results(results: list[dict[str, Any]]) -> None:
    old: list[dict[str, Any]] = []
    if RESULTS.exists():
        old = json.loads(RESULTS.read_text()).get("results", [])
    # Every run is kept (with its date and load): on shared cores one run is not a figure.
    date = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    kept = old + [{"date": date, **r} for r in results]
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "command": "python benchmarks/bench_scale.py " + " ".join(sys.argv[1:]),
                "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "machine": {
                    "cpus": os.cpu_count(),
                    "platform": platform.platform(),
                    "memory_gb": round(
                        os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
                    ),
                    "search_threads": 1,
                },
                "dim": DIM,
                "results": sorted(kept, key=lambda r: (r["items"], r.get("date", ""))),
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()

"""End-to-end HTTP numbers for ``stygig serve``: latency, throughput under load, cold start.

    python benchmarks/bench_server.py [--rounds 2] [--sequential 300] [--concurrent 600]

For each artifact (CLIP ViT-B/32 **with random weights** via ONNX Runtime int8 and fp32, and
EfficientNet-Lite0 via ONNX Runtime fp32 and static int8), built from the sample catalogue under
``build/bench-server/`` if missing, and for micro-batching on and off *interleaved in the same
run*, it starts a real server process on a free port and measures over real HTTP:

* cold start: process start to the first ``GET /ping`` 200, then the first request's latency;
* one client, sequential: ``--sequential`` requests of 224 px JPEGs (p50, p99);
* ``--clients`` concurrent clients (default 100) sending ``--concurrent`` requests with
  :mod:`stygig.loadtest`: throughput, p50/p99, 5xx count.

Each variant runs ``--rounds`` times; medians go to ``benchmarks/results/server.json``. The
client shares the machine's cores with the server (and, here, with other people's jobs): the
numbers are a floor for what a dedicated instance does.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from stygig.loadtest import LoadTestConfig, run_load_test

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.integration.server_fixtures import free_port, start_process, wait_ready  # noqa: E402

CATALOG = REPO / "build" / "demo" / "catalog"
ARTIFACTS = {
    "clip-vit-b-32 random-weights onnx int8": (
        "clip-int8",
        ["--encoder", "clip-vit-b-32", "--random-weights", "--int8"],
    ),
    "clip-vit-b-32 random-weights onnx fp32": (
        "clip-fp32",
        ["--encoder", "clip-vit-b-32", "--random-weights"],
    ),
    "efficientnet-lite0 onnx fp32": ("effnet", ["--encoder", "efficientnet-lite0"]),
    "efficientnet-lite0 onnx int8 (static, catalogue-calibrated)": (
        "effnet-int8",
        ["--encoder", "efficientnet-lite0", "--int8"],
    ),
}


def ensure_catalog() -> Path:
    """The sample catalogue (drawn garments, 224 px JPEGs)."""
    csv_path = CATALOG / "catalog.csv"
    if not csv_path.exists():
        subprocess.run(
            [sys.executable, "-m", "stygig.cli", "sample-catalog", "--out", str(CATALOG)],
            check=True,
        )
    return csv_path


def ensure_artifact(folder: str, flags: list[str]) -> Path:
    """Build the artifact once; later runs reuse it."""
    out = REPO / "build" / "bench-server" / folder
    if not (out / "manifest.json").exists():
        cmd = [sys.executable, "-m", "stygig.cli", "build", "--catalog", str(ensure_catalog())]
        subprocess.run([*cmd, *flags, "--out", str(out), "--quiet"], check=True)
    return out


def percentiles(ms: list[float]) -> dict[str, float]:
    """p50/p95/p99/mean in ms."""
    arr = np.asarray(ms)
    return {
        "p50": round(float(np.percentile(arr, 50)), 2),
        "p95": round(float(np.percentile(arr, 95)), 2),
        "p99": round(float(np.percentile(arr, 99)), 2),
        "mean": round(float(arr.mean()), 2),
    }


def one_run(
    artifact: Path, batching: bool, photos: list[bytes], args: argparse.Namespace, log: Path
) -> dict[str, Any]:
    """Start a server, measure it, stop it."""
    port = free_port()
    flags = ["serve", "--artifact", str(artifact), "--host", "127.0.0.1", "--port", str(port)]
    flags += ["--log-level", "warning"]
    if not batching:
        flags.append("--no-batching")
    else:
        flags += ["--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms)]
    process = start_process(flags, log)
    url = f"http://127.0.0.1:{port}"
    try:
        cold = wait_ready(url, process, timeout=300)
        headers = {"content-type": "image/jpeg"}
        with httpx.Client(base_url=url, timeout=60) as client:
            t1 = time.perf_counter()
            assert client.post("/invocations", content=photos[0], headers=headers).is_success
            first_ms = (time.perf_counter() - t1) * 1e3
            seq: list[float] = []
            for i in range(args.sequential):
                t = time.perf_counter()
                r = client.post("/invocations", content=photos[i % len(photos)], headers=headers)
                seq.append((time.perf_counter() - t) * 1e3)
                assert r.is_success, r.text
        report = run_load_test(
            LoadTestConfig(
                url=url,
                images=args.images,
                concurrency=args.clients,
                requests=args.concurrent,
                warmup=0,
            )
        )
    finally:
        process.terminate()
        process.wait(60)
    return {
        "cold_start_s": round(cold, 3),
        "first_request_ms": round(first_ms, 2),
        "sequential_ms": percentiles(seq),
        "concurrent": {
            "clients": args.clients,
            "requests": report.requests,
            "throughput_rps": report.throughput_rps,
            "latency_ms": report.latency_ms,
            "counts": report.counts,
        },
    }


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds of the headline numbers."""

    def med(get: Any) -> float:
        return round(statistics.median(get(r) for r in runs), 2)

    return {
        "cold_start_s": med(lambda r: r["cold_start_s"]),
        "first_request_ms": med(lambda r: r["first_request_ms"]),
        "sequential_p50_ms": med(lambda r: r["sequential_ms"]["p50"]),
        "sequential_p99_ms": med(lambda r: r["sequential_ms"]["p99"]),
        "concurrent_rps": med(lambda r: r["concurrent"]["throughput_rps"]),
        "concurrent_p50_ms": med(lambda r: r["concurrent"]["latency_ms"]["p50"]),
        "concurrent_p99_ms": med(lambda r: r["concurrent"]["latency_ms"]["p99"]),
        "concurrent_5xx": sum(r["concurrent"]["counts"]["5xx"] for r in runs),
        "concurrent_errors": sum(r["concurrent"]["counts"]["errors"] for r in runs),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sequential", type=int, default=300)
    parser.add_argument("--concurrent", type=int, default=600)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    parser.add_argument(
        "--only", help="run artifacts whose label contains one of these comma-separated texts"
    )
    parser.add_argument("--images", type=Path, default=CATALOG / "queries")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "server.json")
    args = parser.parse_args()
    ensure_catalog()
    photos = [p.read_bytes() for p in sorted(args.images.glob("*.jpg"))]
    logs = REPO / "build" / "bench-server" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "command": "python benchmarks/bench_server.py " + " ".join(sys.argv[1:]),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "note": "client and server share the CPUs; other jobs may run on them too",
        },
        "weights": "CLIP numbers use RANDOM weights (architecture cost only)",
        "batching": {"max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms},
        "images": f"{len(photos)} JPEGs of 224 px from {args.images}",
        "variants": {},
    }
    for label, (folder, flags) in ARTIFACTS.items():
        if args.only and not any(text in label for text in args.only.split(",")):
            continue
        artifact = ensure_artifact(folder, flags)
        runs: dict[str, list[dict[str, Any]]] = {"batching_on": [], "batching_off": []}
        for round_ in range(args.rounds):
            order = [True, False] if round_ % 2 == 0 else [False, True]  # interleaved
            for batching in order:
                key = "batching_on" if batching else "batching_off"
                log = logs / f"{folder}-{key}-{round_}.log"
                run = one_run(artifact, batching, photos, args, log)
                runs[key].append(run)
                print(label, key, f"round {round_}:", json.dumps(median_of([run])), flush=True)
        results["variants"][label] = {
            key: {"median": median_of(r), "runs": r} for key, r in runs.items()
        }
    if args.only and args.out.exists():  # keep the variants this run did not measure
        earlier = json.loads(args.out.read_text(encoding="utf-8")).get("variants", {})
        results["variants"] = {**earlier, **results["variants"]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

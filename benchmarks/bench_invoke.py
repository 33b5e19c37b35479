"""`stygig invoke --url --concurrency 100` against `stygig loadtest` on one local server.

    python benchmarks/bench_invoke.py [--artifact build/bench-server/effnet] [--requests 400]
        [--rounds 2]

Starts one `stygig serve` on a free port and, interleaved in every round, sends the same
photo ``--requests`` times from 100 clients with: `stygig loadtest` (one kept-alive
connection per client), `stygig invoke` (the same, since issue 14) and the client `invoke`
had before issue 14 (a new httpx request per call from a 100-thread pool). Medians go to
``benchmarks/results/invoke.json``. Client and server share the machine's cores.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.integration.server_fixtures import running_server  # noqa: E402

from stygig.cli import main  # noqa: E402
from stygig.loadtest import LoadTestConfig, run_load_test  # noqa: E402


def old_invoke(url: str, body: bytes, requests: int) -> tuple[float, float]:
    """The pre-issue-14 client: httpx.post per request, 100 threads; (requests/s, p50 ms)."""

    def send(_: int) -> float:
        t0 = time.perf_counter()
        r = httpx.post(
            url + "/invocations", content=body, headers={"content-type": "image/jpeg"}, timeout=60
        )
        r.json()
        return (time.perf_counter() - t0) * 1e3

    t0 = time.perf_counter()
    with ThreadPoolExecutor(100) as pool:
        lat = list(pool.map(send, range(requests)))
    return requests / (time.perf_counter() - t0), statistics.median(lat)


def new_invoke(url: str, photo: Path, requests: int) -> tuple[float, float]:
    """`stygig invoke --url ... --concurrency 100`, parsed from its report."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["invoke", "--url", url, "--image", str(photo),
                     "--concurrency", "100", "--requests", str(requests)])  # fmt: skip
    if code != 0:
        raise RuntimeError(buf.getvalue())
    lines = buf.getvalue().splitlines()
    thr = float(next(x for x in lines if x.startswith("throughput")).split()[1])
    p50 = float(next(x for x in lines if x.startswith("latency (ms)")).split()[3])
    return thr, p50


def main_bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path, default=REPO / "build/bench-server/effnet")
    parser.add_argument("--queries", type=Path, default=REPO / "build/demo/catalog/queries")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/invoke.json")
    args = parser.parse_args()
    photo = sorted(args.queries.glob("*.jpg"))[0]
    runs: dict[str, list[tuple[float, float]]] = {"loadtest": [], "invoke": [], "old_invoke": []}
    with tempfile.TemporaryDirectory() as tmp:
        one = Path(tmp) / "photos"
        one.mkdir()
        (one / photo.name).write_bytes(photo.read_bytes())
        log = Path(tmp) / "server.log"
        with running_server(args.artifact, log, "--log-level", "warning") as srv:
            run_load_test(LoadTestConfig(url=srv.url, images=one, concurrency=4, requests=20))
            for _ in range(args.rounds):
                rep = run_load_test(
                    LoadTestConfig(url=srv.url, images=one, concurrency=100, requests=args.requests)
                )
                runs["loadtest"].append((rep.throughput_rps, rep.latency_ms["p50"]))
                runs["invoke"].append(new_invoke(srv.url, photo, args.requests))
                runs["old_invoke"].append(old_invoke(srv.url, photo.read_bytes(), args.requests))
                print(json.dumps({k: v[-1] for k, v in runs.items()}), flush=True)
    result = {
        "command": "python benchmarks/bench_invoke.py " + " ".join(sys.argv[1:]),
        "artifact": args.artifact.name,
        "machine": {"cpus": os.cpu_count(), "load_average_at_end": list(os.getloadavg())},
        "clients": 100,
        "requests": args.requests,
        "medians": {
            k: {
                "throughput_rps": round(statistics.median(t for t, _ in v), 1),
                "p50_ms": round(statistics.median(p for _, p in v), 1),
            }
            for k, v in runs.items()
        },
        "runs": runs,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result["medians"], indent=2))


if __name__ == "__main__":
    main_bench()

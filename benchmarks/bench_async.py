"""Asynchronous jobs: submit 1,000 at once, time until all are done, count lost and duplicated.

Run::

    python benchmarks/bench_async.py --artifact build/bench/effnet --jobs 1000

Starts the server (``stygig serve --jobs-db ...``) on a free port with a fresh job
store, submits ``--jobs`` photos from ``../shared/datasets/fashion-products/images`` inline over
HTTP (64 connections), polls ``GET /async/jobs`` until nothing is queued or running, then checks
the output folder and the store's journal: one result file per job, one terminal event per job.
Writes ``benchmarks/results/async.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.integration.server_fixtures import free_port, wait_ready  # noqa: E402

PHOTOS = REPO.parent / "shared" / "datasets" / "fashion-products" / "images"


async def _submit_all(url: str, photos: list[Path], connections: int) -> list[str]:
    limits = httpx.Limits(max_connections=connections)
    sem = asyncio.Semaphore(connections)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def one(path: Path) -> str:
            async with sem:
                r = await client.post(
                    f"{url}/async/invocations",
                    content=path.read_bytes(),
                    headers={"Content-Type": "image/jpeg"},
                )
                r.raise_for_status()
                return str(r.json()["InferenceId"])

        return await asyncio.gather(*(one(p) for p in photos))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--artifact", required=True)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=2, help="--async-concurrency")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "async.json"))
    args = parser.parse_args()
    photos = sorted(PHOTOS.glob("*.jpg"))[: args.jobs]
    load_start = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        cmd = [
            sys.executable, "-m", "stygig.cli", "serve", "--host", "127.0.0.1", "--artifact", args.artifact,
            "--port", str(port), "--jobs-db", str(root / "jobs.db"),
            "--async-output", str(root / "out"),
            "--async-concurrency", str(args.concurrency),
            "--async-list-jobs",  # the counts this benchmark polls
        ]  # fmt: skip
        with (root / "server.log").open("wb") as log:
            server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        try:
            wait_ready(url, server, timeout=300)
            t0 = time.perf_counter()
            ids = asyncio.run(_submit_all(url, photos, args.connections))
            submitted = time.perf_counter() - t0
            while True:
                counts = httpx.get(f"{url}/async/jobs?limit=1", timeout=10).json()["counts"]
                if counts["queued"] == 0 and counts["running"] == 0:
                    break
                time.sleep(0.2)
            done = time.perf_counter() - t0
        finally:
            server.terminate()
            server.wait(30)
        outputs = [p.name for p in (root / "out").iterdir() if p.name.endswith(".out")]
        with sqlite3.connect(root / "jobs.db") as db:
            terminal = db.execute(
                "SELECT job_id, COUNT(*) FROM events WHERE event IN ('succeeded', 'failed')"
                " GROUP BY job_id"
            ).fetchall()
        db.close()
    per_job = {job_id: n for job_id, n in terminal}
    report: dict[str, Any] = {
        "command": f"python benchmarks/bench_async.py --artifact {args.artifact} "
        f"--jobs {args.jobs} --concurrency {args.concurrency}",
        "machine": {
            "cpu_count": os.cpu_count(),
            "load_average_at_start": load_start,
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
        "settings": {
            "jobs": len(ids),
            "async_concurrency": args.concurrency,
            "connections": args.connections,
            "input": "inline JPEG bodies (Kaggle fashion-products photos)",
            "store": "SQLite WAL, synchronous=FULL",
        },
        "results": {
            "seconds_to_accept_all": round(submitted, 2),
            "submissions_per_second": round(len(ids) / submitted, 1),
            "seconds_until_all_done": round(done, 2),
            "jobs_per_second": round(len(ids) / done, 1),
            "final_counts": counts,
            "result_files": len(outputs),
            "lost": len(set(ids) - set(per_job)),
            "duplicated": sum(1 for n in per_job.values() if n > 1) + len(ids) - len(set(ids)),
        },
        "notes": ["The 2 cores are shared with other engineers' jobs; see the load averages."],
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report["results"], indent=2))


if __name__ == "__main__":
    main()

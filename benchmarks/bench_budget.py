"""The latency budget outside the encoder, over HTTP, at 10k catalogue items.

    python benchmarks/bench_budget.py [--photos 200] [--items 10000] [--variants ...]
        [--order block|photo]

For each variant (an encoder over a synthetic 10k-item catalogue of its width: the cost of
search and scoring depends on size and width only) one real ``stygig serve`` process runs; one
client per server sends real product photos (../shared/datasets/fashion-products, else the
sample catalogue's). The variants are interleaved because the 2 cores are shared: by default in
blocks (each server answers every photo while the others idle, the servers' order alternating
by round), as a server runs alone in production; ``--order photo`` sends every photo to each
server in turn, where each server's caches hold the other servers' data between its requests
(2026-12-01: 0.7-1.0 ms more outside the encoder than in blocks). Per variant:

* **wall outside the encoder**: the client's latency minus the server's ``embed`` (the encoder
  call), per request: HTTP, parsing, hand-offs, decode, colour wait, search, scoring, ranking,
  serialisation;
* **CPU outside the encoder**: the server process's CPU time per request (``/proc``, every thread)
  minus the CPU the encoder's calls took inside the server: the calling thread's CPU during each
  call and the CPU of the threads ONNX Runtime started for the encoder's session, counted by
  the harness the server runs under (``benchmarks/serve_measured.py``: the real ``stygig
  serve``, with those counters around the encoder). Beside it, the estimate earlier runs gave:
  the encoder's CPU per batch-1 call measured alone in this process with the same ONNX Runtime
  settings (interleaved with the HTTP rounds), which leaves out what the encoder costs more
  inside the server, sharing the cores with the colour thread;
* the server's stage timings (p50).

CLIP ViT-B/32 runs with RANDOM weights (no internet here): the compute is the real model's.
Writes benchmarks/results/budget.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from tests.integration.server_fixtures import free_port, wait_ready  # noqa: E402

from results_file import machine, notes_with_history  # noqa: E402
from stygig.artifact import Artifact  # noqa: E402
from stygig.build import make_build_encoder  # noqa: E402
from stygig.engine import load_artifact_encoder  # noqa: E402
from stygig.features import decode_photo  # noqa: E402
from synthetic import synthetic_artifact  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "budget.json"
KAGGLE = REPO.parent / "shared" / "datasets" / "fashion-products" / "images"
VARIANTS: dict[str, dict[str, Any]] = {
    "efficientnet-lite0 int8": {"name": "efficientnet-lite0", "int8": True, "random": False},
    "efficientnet-lite0 fp32": {"name": "efficientnet-lite0", "int8": False, "random": False},
    "clip-vit-b-32 int8 (random weights)": {"name": "clip-vit-b-32", "int8": True, "random": True},
}
STAGES = ("decode", "color", "queue", "embed", "search", "vote", "score", "rank", "serialise")


def _photos(n: int) -> list[bytes]:
    if KAGGLE.is_dir():
        files = sorted(KAGGLE.glob("*.jpg"))[:n]
    else:
        from stygig.sample_catalog import generate_sample_catalog

        csv_path = generate_sample_catalog(Path(tempfile.mkdtemp()) / "sample")
        files = sorted((csv_path.parent / "queries").glob("*.jpg"))
    return [f.read_bytes() for f in files]


def _artifact(key: str, spec: dict[str, Any], items: int) -> Path:
    out = (
        REPO
        / "build"
        / "bench-budget"
        / f"{key.split()[0]}-{'int8' if spec['int8'] else 'fp32'}-{items}"
    )
    if not (out / "manifest.json").exists():
        with make_build_encoder(spec["name"], int8=spec["int8"], random_weights=spec["random"]) as (
            encoder,
            files,
        ):
            synthetic_artifact(out, items, encoder_info=encoder.describe(), extra_files=files)
    return out


class _Client:
    """One kept-alive connection, the standard library's: httpx adds ~0.4 ms per request of its
    own here (GET /ping round trip 0.74 vs 0.36 ms), which is the client's time, not the server's."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        self.conn.request("POST", "/invocations", body=body, headers=headers)
        response = self.conn.getresponse()
        return response.status, response.read()


def _cpu_seconds(pid: int, thread: int | None = None) -> float:
    """A process's CPU time (every thread), or one of its threads'."""
    stat = Path(f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat")
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Server:
    """One ``stygig serve`` under ``serve_measured.py``, and the encoder's CPU inside it."""

    def __init__(self, artifact: Path, port: int, logs: Path) -> None:
        self.report = logs / f"{port}.encoder.json"
        command = [
            sys.executable,
            str(REPO / "benchmarks" / "serve_measured.py"),
            str(self.report),
            *("serve", "--artifact", str(artifact), "--port", str(port), "--log-level", "warning"),
        ]
        with (logs / f"{port}.log").open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        self.pid = self.process.pid
        self._sequence = 0

    def encoder_cpu(self) -> tuple[int, float]:
        """(encoder calls so far, their CPU seconds so far: the calling threads' and the
        encoder's own threads')."""
        self.process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 30
        while True:  # the report of this signal: its sequence number is the next one
            try:
                data = json.loads(self.report.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                data = {"sequence": self._sequence}
            if data["sequence"] > self._sequence:
                break
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise SystemExit(f"the server (pid {self.pid}) wrote no encoder report")
            time.sleep(0.01)
        self._sequence = data["sequence"]
        threads = sum(_cpu_seconds(self.pid, t) for t in data["encoder_threads"])
        return int(data["calls"]), float(data["caller_cpu_s"]) + threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated keys")
    parser.add_argument(
        "--order",
        choices=("block", "photo"),
        default="block",
        help="block: each server answers every photo alone, the servers' order alternating "
        "by round (the others idle: no server's caches are the others' between its requests); "
        "photo: every photo to each server in turn",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    photos = _photos(args.photos)
    keys = [k for k in args.variants.split(",") if k]
    arts = {k: _artifact(k, VARIANTS[k], args.items) for k in keys}
    # The encoders alone, as the servers load them, for their CPU per batch-1 call.
    encoders = {k: load_artifact_encoder(Artifact.load(arts[k])) for k in keys}
    tensors = {k: [decode_photo(p, encoders[k].preprocess).tensor for p in photos] for k in keys}
    servers: dict[str, _Server] = {}
    clients = {}
    logs = Path(tempfile.mkdtemp(prefix="stygig-budget-"))
    load_start = os.getloadavg()
    try:
        for k in keys:
            port = free_port()
            servers[k] = _Server(arts[k], port, logs)
            clients[k] = _Client(port)
        for k in keys:
            wait_ready(clients[k].url, servers[k].process, timeout=600)
        latency: dict[str, list[float]] = {k: [] for k in keys}
        stages: dict[str, dict[str, list[float]]] = {k: {s: [] for s in STAGES} for k in keys}
        outside: dict[str, list[float]] = {k: [] for k in keys}
        cpu_http: dict[str, list[float]] = {k: [] for k in keys}
        cpu_encoder: dict[str, list[float]] = {k: [] for k in keys}
        cpu_encoder_inside: dict[str, list[float]] = {k: [] for k in keys}
        headers = {"content-type": "image/jpeg"}
        for k in keys:  # warm-up
            for p in photos[:10]:
                clients[k].post(p, headers)
        for r in range(args.rounds):
            enc0 = {k: servers[k].encoder_cpu() for k in keys}
            cpu0 = {k: _cpu_seconds(servers[k].pid) for k in keys}
            if args.order == "photo":  # every photo to each server in turn
                sends = [(k, p) for p in photos for k in keys]
            else:  # each server alone with every photo, the order of servers alternating
                order = keys if r % 2 == 0 else keys[::-1]
                sends = [(k, p) for k in order for p in photos]
            for k, p in sends:
                t0 = time.perf_counter()
                status, body = clients[k].post(p, headers)
                ms = (time.perf_counter() - t0) * 1e3
                if status != 200:
                    raise SystemExit(f"{k}: HTTP {status}: {body[:200]!r}")
                timings = json.loads(body)["timings_ms"]
                latency[k].append(ms)
                outside[k].append(ms - timings["embed"])
                for s in STAGES:
                    stages[k][s].append(float(timings.get(s, 0.0)))
            for k in keys:
                cpu_http[k].append((_cpu_seconds(servers[k].pid) - cpu0[k]) / len(photos) * 1e3)
                calls, cpu = servers[k].encoder_cpu()
                if calls - enc0[k][0] != len(photos):
                    raise SystemExit(f"{k}: {calls - enc0[k][0]} encoder calls for {len(photos)}")
                cpu_encoder_inside[k].append((cpu - enc0[k][1]) / len(photos) * 1e3)
            for k in keys:  # the encoder alone, batch 1, same photos
                c0 = time.process_time()
                for t in tensors[k]:
                    encoders[k].encode(t[None])
                cpu_encoder[k].append((time.process_time() - c0) / len(photos) * 1e3)
    finally:
        for server in servers.values():
            server.process.terminate()
            server.process.wait(60)
    results = {}
    for k in keys:
        lat = np.asarray(latency[k])
        http_cpu, enc_cpu = float(np.median(cpu_http[k])), float(np.median(cpu_encoder[k]))
        inside = float(np.median(np.subtract(cpu_http[k], cpu_encoder_inside[k])))
        results[k] = {
            "client_p50_ms": round(float(np.median(lat)), 2),
            "client_p99_ms": round(float(np.percentile(lat, 99)), 2),
            "outside_encoder_wall_p50_ms": round(float(np.median(outside[k])), 2),
            "outside_encoder_wall_p99_ms": round(float(np.percentile(outside[k], 99)), 2),
            "server_cpu_per_request_ms": round(http_cpu, 2),
            "encoder_cpu_in_server_per_request_ms": round(
                float(np.median(cpu_encoder_inside[k])), 2
            ),
            "outside_encoder_cpu_ms": round(inside, 2),
            "encoder_cpu_alone_per_call_ms": round(enc_cpu, 2),
            "outside_encoder_cpu_by_encoder_alone_ms": round(http_cpu - enc_cpu, 2),
            "server_stages_p50_ms": {
                s: round(float(np.median(v)), 3) for s, v in stages[k].items()
            },
            "cpu_rounds_ms": {
                "server": [round(x, 2) for x in cpu_http[k]],
                "encoder_in_server": [round(x, 2) for x in cpu_encoder_inside[k]],
                "encoder_alone": [round(x, 2) for x in cpu_encoder[k]],
            },
        }
    document = {
        "command": "python benchmarks/bench_budget.py " + " ".join(sys.argv[1:]),
        "machine": machine(load_start),
        "settings": {
            "items": args.items,
            "photos": len(photos),
            "rounds": args.rounds,
            "order": (
                "interleaved: every photo goes to each variant's server in turn"
                if args.order == "photo"
                else "blocks: each variant's server answers every photo alone (the others "
                "idle), the order of servers alternating by round (A B C, C B A, ...)"
            ),
            "client": "one http.client connection per server, kept alive, same machine",
        },
        "notes": notes_with_history(
            args.out,
            [
                "CLIP ViT-B/32 uses random weights (no internet): the real model's compute.",
                "Synthetic 10k-item catalogues of each encoder's width (efficientnet-lite0: 1280-d, "
                "CLIP: 512-d); query photos are real product photos.",
                "CPU outside the encoder = server CPU per request (all threads, /proc) minus the "
                "CPU the encoder's calls took inside the server (the calling thread's during each "
                "call and the encoder session's own threads', counted by "
                "benchmarks/serve_measured.py), the median over rounds of their difference. "
                "outside_encoder_cpu_by_encoder_alone_ms is the estimate earlier runs reported: "
                "minus the encoder's CPU per batch-1 call measured alone in the benchmark's "
                "process, which leaves out what the encoder costs more inside the server.",
            ],
        ),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(
        f"{'variant':<38}{'client p50':>11}{'p99':>8}{'outside wall':>14}{'outside CPU':>13}"
        f"{'(encoder alone)':>17}"
    )
    for k, r in results.items():
        print(
            f"{k:<38}{r['client_p50_ms']:>11.2f}{r['client_p99_ms']:>8.2f}"
            f"{r['outside_encoder_wall_p50_ms']:>14.2f}{r['outside_encoder_cpu_ms']:>13.2f}"
            f"{r['outside_encoder_cpu_by_encoder_alone_ms']:>17.2f}"
        )
        print("    stages p50:", r["server_stages_p50_ms"])
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()

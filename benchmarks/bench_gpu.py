"""GPU numbers: the ONNX encoders on ONNX Runtime's CUDA provider, and ``stygig serve --device cuda``.

    python benchmarks/bench_gpu.py [--runs 50] [--sequential 300] [--concurrent 600]

Needs a machine where ONNX Runtime's CUDA provider starts (onnxruntime-gpu matching the CUDA
and cuDNN libraries; see docs/gpu.md). It checks that first, with a session created here, and
stops with "no CUDA provider" otherwise: nothing is measured on the CPU by mistake.

For each artifact (CLIP ViT-B/32 **with random weights**, fp32, and EfficientNet-Lite0 fp32,
built from the sample catalogue under ``build/bench-server/`` by ``bench_server.py``'s helpers
if missing):

* encoder: the artifact's ``encoder.onnx`` on the CUDA provider (checked active in that very
  session), batch 1, 8 and 32 of preprocessed 224 px photos: p50/p99 ms per call and images/s;
* HTTP: a real ``stygig serve --device cuda`` process (``bench_server.one_run``: cold start,
  one client sequential p50/p99, ``--clients`` concurrent clients' throughput), micro-batching
  on.

Results go to ``benchmarks/results/gpu.json``, with the GPU named (``nvidia-smi``), the driver,
and the ONNX Runtime version.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))

ARTIFACTS = {
    "clip-vit-b-32 random-weights onnx fp32": (
        "clip-fp32",
        ["--encoder", "clip-vit-b-32", "--random-weights"],
    ),
    "efficientnet-lite0 onnx fp32": ("effnet", ["--encoder", "efficientnet-lite0"]),
}
BATCHES = (1, 8, 32)


def require_cuda() -> list[str]:
    """The providers a CUDA session really runs on here; exits with a clear message if the
    CUDA provider is missing or does not start."""
    from stygig.encoders.onnx import active_providers, check_active
    from stygig.errors import StygigError

    try:
        active = active_providers("cuda")
        check_active(active, "cuda")
    except StygigError as e:
        print(f"bench_gpu: no CUDA provider: {e.message}", file=sys.stderr)
        print("bench_gpu: nothing measured (this benchmark runs on a GPU only)", file=sys.stderr)
        raise SystemExit(2) from None
    return active


def machine() -> dict[str, Any]:
    """The GPU (``nvidia-smi``), driver, CPU and library versions."""
    import onnxruntime

    info: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "onnxruntime": onnxruntime.__version__,
    }
    try:
        out = subprocess.run(
            [
                "nvidia-smi",
                "--query-gpu=name,driver_version,memory.total",
                "--format=csv,noheader",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        gpus = [
            dict(zip(("name", "driver", "memory"), line.split(", "), strict=False))
            for line in out.splitlines()
            if line.strip()
        ]
        info["gpus"] = gpus
        info["gpu"] = gpus[0]["name"] if gpus else None
    except (OSError, subprocess.SubprocessError) as e:
        info["gpu"] = None
        info["nvidia_smi_error"] = str(e)
    return info


def encoder_numbers(artifact: Path, queries: Path, runs: int, warmup: int) -> dict[str, Any]:
    """Batch 1/8/32 latency and throughput of the artifact's encoder on the CUDA provider."""
    from PIL import Image

    from stygig.artifact import read_manifest
    from stygig.encoders.onnx import load_onnx_encoder
    from stygig.images import preprocess_batch

    info = read_manifest(artifact)["encoder"]
    onnx_file = artifact / str(info.get("onnx_file") or "encoder.onnx")
    encoder = load_onnx_encoder(onnx_file, info, device="cuda")  # refuses a CPU fallback
    images = [Image.open(p).convert("RGB") for p in sorted(queries.glob("*.jpg"))]
    out: dict[str, Any] = {"session_providers": encoder.session.get_providers()}
    for batch in BATCHES:
        picked = [images[i % len(images)] for i in range(batch)]
        tensor = preprocess_batch(picked, encoder.preprocess)
        for _ in range(warmup):
            encoder.encode(tensor)
        ms = []
        for _ in range(runs):
            t = time.perf_counter()
            encoder.encode(tensor)
            ms.append((time.perf_counter() - t) * 1e3)
        arr = np.asarray(ms)
        median = float(np.median(arr))
        out[f"batch_{batch}"] = {
            "p50_ms": round(median, 3),
            "p99_ms": round(float(np.percentile(arr, 99)), 3),
            "images_per_s": round(batch / (median / 1e3), 1),
            "runs": runs,
        }
        print(f"  encoder batch {batch}: {json.dumps(out[f'batch_{batch}'])}", flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50, help="timed encoder calls per batch size")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls first")
    parser.add_argument("--sequential", type=int, default=300, help="one-client HTTP requests")
    parser.add_argument("--concurrent", type=int, default=600, help="requests under load")
    parser.add_argument("--clients", type=int, default=100, help="concurrent HTTP clients")
    parser.add_argument("--max-batch", type=int, default=32, help="serve --max-batch")
    parser.add_argument("--max-wait-ms", type=float, default=2.0, help="serve --max-wait-ms")
    parser.add_argument(
        "--only", help="artifacts whose label contains one of these (comma-separated)"
    )
    parser.add_argument("--no-http", action="store_true", help="encoder numbers only")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "gpu.json")
    args = parser.parse_args()
    active = require_cuda()  # before building anything

    from bench_server import CATALOG, ensure_artifact, ensure_catalog, one_run

    ensure_catalog()
    args.images = CATALOG / "queries"
    photos = [p.read_bytes() for p in sorted(args.images.glob("*.jpg"))]
    logs = REPO / "build" / "bench-server" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "command": "python benchmarks/bench_gpu.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "cuda_session_providers": active,
        "weights": "CLIP numbers use RANDOM weights (architecture cost only)",
        "serve": {"device": "cuda", "max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms},
        "variants": {},
    }
    print(f"GPU: {results['machine'].get('gpu')}", flush=True)
    # one_run starts `stygig serve` with this environment: STYGIG_DEVICE is --device's default.
    os.environ["STYGIG_DEVICE"] = "cuda"
    for label, (folder, flags) in ARTIFACTS.items():
        if args.only and not any(text in label for text in args.only.split(",")):
            continue
        artifact = ensure_artifact(folder, flags)
        print(label, flush=True)
        variant: dict[str, Any] = {
            "encoder": encoder_numbers(artifact, args.images, args.runs, args.warmup)
        }
        if not args.no_http:
            run = one_run(artifact, True, photos, args, logs / f"gpu-{folder}.log")
            variant["http"] = run
            print(
                f"  http: {json.dumps(run['sequential_ms'])} rps {run['concurrent']['throughput_rps']}",
                flush=True,
            )
        results["variants"][label] = variant
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

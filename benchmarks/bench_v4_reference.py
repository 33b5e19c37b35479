"""StyGig over HTTP against the seed-faithful V4 reference, interleaved: CLIP ViT-B/32, 10k items.

    python benchmarks/bench_v4_reference.py [--photos 300] [--warmup 10] [--items 10000] [--quick]

The reference is the seed project's V4 inference path (``sagemaker/inference.py`` and
``src/stygig/core/color_logic.py`` of the original StyGig repository,
github.com/siddharths060/Stygig-Model-2, as its V4 implementation notes describe it), rewritten
here step for step and run **in-process, with no HTTP**:

* decode: ``Image.open(BytesIO(body)).convert("RGB")``;
* colour: the photo saved to a temporary JPEG (quality 95) and read back, as V4's colour
  extractor takes a path; its "dominant colour" is the mean RGB of a 150 x 150 resize (V4's
  ``n_clusters=3`` setting is unused by that code);
* embed: CLIP ViT-B/32 in **torch eager** (2 intra-op threads, 1 inter-op, V4's ml.c5.large
  setting), ``torch.no_grad``, NaN/Inf checks, L2 norm. V4 loaded OpenAI weights through
  open_clip; neither open_clip nor the hub is available here, so the model is
  ``transformers.CLIPVisionModelWithProjection(CLIPVisionConfig())``: the same architecture
  (hidden 768, 12 layers, patch 32, projection 512) with **random weights**, and its
  preprocessing is open_clip's (bicubic shortest-edge 224, centre crop, OpenAI mean/std) in PIL
  and NumPy since torchvision is not installed either;
* search: ``faiss.IndexFlatIP``, k = 50 (V4's reduced ``search_k`` on CPU), then V4's
  ``map_faiss_indices_to_items``, which rebuilds an index -> item dict over the whole catalogue
  on every request;
* score: top-5 ``Counter`` vote for the query's category; a Python loop over the candidates:
  gender filter, same-category skip, colour harmony from :mod:`colorsys` HSL, score
  ``0.4 * similarity + 0.4 * harmony + 0.2 * gender``, x1.15 for a compatible category, one
  dict per candidate with a match reason; then the best item per category, sorted, ranked,
  cut to 26;
* serialise: ``json.dumps`` of the answer (V4's ``output_fn``).

V4's gender classifier was called without the category it needs, failed and fell back to
"unisex", so every catalogue gender passes its filter; that is reproduced by scoring with
"unisex". V4's per-request log lines are left out (they would only slow the reference down).
StyGig votes the photo's gender from its neighbours; the synthetic genders are random, so that
vote is unsure and StyGig, by its default policy, draws the outfit from the unisex third of the
catalogue (``gender_sources`` in the results says how each answer decided).

StyGig runs as ``stygig serve`` in a subprocess on 127.0.0.1 (default settings), answering one
client that reuses one httpx connection: ``POST /invocations`` with the JPEG bytes. The two are
interleaved photo by photo (the one going first alternates), after ``--warmup`` photos each.

Both catalogues hold the same ``--items`` synthetic items (benchmarks/synthetic.py: clustered
vectors, random categories, genders and colours) built once and cached under
``build/bench/v4-reference/``: StyGig's artifact with the CLIP ViT-B/32 int8 ONNX encoder (random
weights too), and the reference's own FAISS flat index, metadata and V4-style compatibility table
(derived from StyGig's taxonomy so both boost the same pairs) made from the very same rows.
Query photos are real product photos from ../shared/datasets/fashion-products; without them the
benchmark says so and stops.

Reported: p50/p90/p99 of both, the ratio of medians, the reference's stages, StyGig's
server-side ``timings_ms`` split into the encoder (``embed``) and everything else (server wall
``total - embed``, and client wall minus ``embed``: the time outside the encoder, HTTP included),
server CPU per request, and the load average at start and end. Writes
``benchmarks/results/v4_reference.json`` (``--quick``: ``build/bench/v4_reference-quick.json``).
"""

from __future__ import annotations

import argparse
import colorsys
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import faiss
import httpx
import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO)]
from tests.integration.server_fixtures import (  # noqa: E402
    exit_code,
    free_port,
    start_process,
    wait_ready,
)

from stygig.artifact import Artifact, read_manifest  # noqa: E402
from stygig.build import make_build_encoder  # noqa: E402
from synthetic import synthetic_artifact  # noqa: E402

BUILD = REPO / "build" / "bench" / "v4-reference"
RESULTS = HERE / "results" / "v4_reference.json"
QUICK_RESULTS = REPO / "build" / "bench" / "v4_reference-quick.json"
BUSY_SHARE = 0.05  # other jobs using more of the CPUs than this make the numbers unreliable
KAGGLE = REPO.parent / "shared" / "datasets" / "fashion-products" / "images"

RGB = tuple[int, int, int]
Candidate = tuple[dict[str, Any], float]

# --- V4's constants --------------------------------------------------------------------------

SEARCH_K = 50  # V4 ``reduced_search_k``: "reduce from 200 to 50 for faster CPU processing"
MAX_RECOMMENDATIONS = 26  # V4 ``RecommendationConfig.max_total_recommendations``
BOOST = 1.15
GRAY: RGB = (128, 128, 128)  # V4's fallback colour
OPENAI_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
OPENAI_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)
V4_GENDER = {"men": "male", "women": "female"}  # StyGig's names -> V4's ("unisex" is shared)


# --- V4 colour logic (colour_logic.py, V4: RGB tuples through colorsys) -----------------------


def rgb_to_hsl(rgb: Sequence[int]) -> tuple[float, float, float]:
    """H, S, L in [0, 1] of an RGB colour (0-255), through :func:`colorsys.rgb_to_hls`."""
    h, lightness, s = colorsys.rgb_to_hls(rgb[0] / 255.0, rgb[1] / 255.0, rgb[2] / 255.0)
    return h, s, lightness


def is_neutral(rgb: Sequence[int]) -> bool:
    """V4's neutral: saturation below 0.2, lightness below 0.1 or above 0.9."""
    _, s, lightness = rgb_to_hsl(rgb)
    return s < 0.2 or lightness < 0.1 or lightness > 0.9


def color_harmony(a: Sequence[int], b: Sequence[int]) -> float:
    """V4's harmony score of two RGB colours: neutral 1.0, analogous (hues within 30 degrees)
    0.9, complementary (hue gap 0.45-0.55 of the wheel) 0.8, triadic (0.29-0.375) 0.7, else 0.2.
    """
    if is_neutral(a) or is_neutral(b):
        return 1.0
    gap = abs(rgb_to_hsl(a)[0] - rgb_to_hsl(b)[0])
    if gap > 0.5:
        gap = 1.0 - gap  # round the wheel: 0.9 and 0.1 are 0.2 apart
    if gap <= 0.084:
        return 0.9
    if 0.45 <= gap <= 0.55:
        return 0.8
    if 0.29 <= gap <= 0.375:
        return 0.7
    return 0.2


def dominant_color(path: str) -> RGB:
    """V4's ``extract_dominant_colors``: the mean RGB of the photo resized to 150 x 150."""
    with Image.open(path) as img:
        pixels = np.asarray(img.convert("RGB").resize((150, 150)))
    mean = pixels.mean(axis=(0, 1))
    return int(mean[0]), int(mean[1]), int(mean[2])


def match_reason(color_score: float, gender_score: float, query: RGB, item: Any) -> str:
    """V4's ``_generate_match_reason`` (its category score was always 1.0)."""
    reasons = []
    if color_score >= 0.8:
        same = query == item
        reasons.append(f"matching {query}" if same else f"harmonious colors ({query}+{item})")
    if gender_score >= 0.8:
        reasons.append("gender appropriate")
    reasons.append("category compatible")
    return ", ".join(reasons)


def score_candidates(
    query_color: RGB,
    query_gender: str,
    candidates: list[Candidate],
    compatibility: dict[str, dict[str, list[str]]],
) -> list[dict[str, Any]]:
    """V4's ``apply_enterprise_rule_based_scoring``: vote, per-candidate loop, best per category."""
    genders = {"male": ("male", "unisex"), "female": ("female", "unisex")}.get(
        query_gender, ("male", "female", "unisex")
    )
    query_category = None
    top5 = [c[0].get("category") for c in candidates[:5] if c[0].get("category")]
    if top5:
        query_category = Counter(top5).most_common(1)[0][0]
    by_category: dict[str, list[dict[str, Any]]] = {}
    for item, similarity in candidates:
        if item["gender"] not in genders:
            continue
        category = item["category"]
        if query_category and category == query_category:
            continue  # outfit completion: never a shirt for a shirt
        by_category.setdefault(category, [])
        color_score = color_harmony(query_color, item.get("color_rgb", GRAY))
        gender_score = 1.0 if item["gender"] == query_gender else 0.75
        score = 0.4 * similarity + 0.4 * color_score + 0.2 * gender_score
        partners = compatibility.get(query_category, {}) if query_category else {}
        if category in partners.get("compatible", []):
            score *= BOOST
        by_category[category].append(
            {
                "id": item.get("id", "unknown"),
                "category": category,
                "gender": item.get("gender", "unisex"),
                "color": item.get("color", "unknown"),
                "path": item.get("path", ""),
                "score": round(score, 4),
                "similarity_score": round(similarity, 4),
                "color_harmony_score": round(color_score, 4),
                "gender_compatibility_score": round(gender_score, 4),
                "match_reason": match_reason(
                    color_score, gender_score, query_color, item.get("color")
                ),
            }
        )
    best = [
        sorted(rows, key=lambda r: r["score"], reverse=True)[0]
        for rows in by_category.values()
        if rows
    ]
    best.sort(key=lambda r: r["score"], reverse=True)
    for rank, row in enumerate(best, start=1):
        row["rank"] = rank
    return best[:MAX_RECOMMENDATIONS]


# --- the V4 reference, in-process -----------------------------------------------------------


def clip_pixels(image: Image.Image) -> np.ndarray:
    """open_clip's ViT-B-32 preprocessing: bicubic shortest edge 224, centre crop, normalise."""
    w, h = image.size
    scale = 224 / min(w, h)
    size = (224, int(h * scale)) if w <= h else (int(w * scale), 224)
    resized = image.resize(size, Image.Resampling.BICUBIC)
    left, top = (size[0] - 224) // 2, (size[1] - 224) // 2
    crop = np.asarray(resized.crop((left, top, left + 224, top + 224)), np.float32) / 255.0
    return ((crop - OPENAI_MEAN) / OPENAI_STD).transpose(2, 0, 1)[None]


class V4Reference:
    """The V4 pipeline for one photo at a time, with the time of each stage."""

    def __init__(self, folder: Path) -> None:
        import torch
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        torch.set_num_threads(2)  # V4's "CPU optimization for ml.c5.large"
        if torch.get_num_interop_threads() != 1:
            torch.set_num_interop_threads(1)
        torch.manual_seed(0)
        self.torch = torch
        model = CLIPVisionModelWithProjection(CLIPVisionConfig())
        self.model = model.eval()  # type: ignore[no-untyped-call]
        for param in self.model.parameters():
            param.requires_grad = False
        self.index = faiss.read_index(str(folder / "faiss_index.index"))
        raw = json.loads((folder / "metadata.json").read_text(encoding="utf-8"))
        self.metadata: dict[str, list[dict[str, Any]]] = {
            category: [{**row, "color_rgb": tuple(row["color_rgb"])} for row in rows]
            for category, rows in raw.items()
        }
        self.compatibility = json.loads((folder / "compatibility.json").read_text("utf-8"))

    def embed(self, image: Image.Image) -> np.ndarray:
        """CLIP image embedding in torch eager, checked and L2-normalised as V4 did."""
        torch = self.torch
        pixels = torch.from_numpy(clip_pixels(image))
        if torch.isnan(pixels).any() or torch.isinf(pixels).any():
            raise ValueError("invalid tensor values (NaN or Inf)")
        with torch.no_grad():
            embedding = self.model(pixel_values=pixels).image_embeds
            if torch.isnan(embedding).any() or torch.isinf(embedding).any():
                raise ValueError("invalid embedding values (NaN or Inf)")
            vector = embedding.cpu().numpy()[0]
        return np.asarray(vector / np.linalg.norm(vector), np.float32)

    def search(self, embedding: np.ndarray) -> list[Candidate]:
        """FAISS flat search, then V4's index -> item mapping (rebuilt per request, as in V4)."""
        sims, ids = self.index.search(embedding.reshape(1, -1), SEARCH_K)
        hits = [(int(i), float(s)) for i, s in zip(ids[0], sims[0], strict=True) if i != -1]
        index_to_item: dict[int, dict[str, Any]] = {}
        position = 0
        for rows in self.metadata.values():
            for row in rows:
                index_to_item[position] = row
                position += 1
        return [(index_to_item[i], s) for i, s in hits if i in index_to_item]

    def answer(self, body: bytes) -> tuple[bytes, dict[str, float]]:
        """One request as V4 served it (``input_fn``, ``predict``, ``output_fn``), timed."""
        marks = [time.perf_counter()]
        image = Image.open(BytesIO(body)).convert("RGB")
        marks.append(time.perf_counter())
        with tempfile.NamedTemporaryFile(suffix=".jpg", delete=False) as handle:
            image.save(handle.name, quality=95)
        try:
            color = dominant_color(handle.name)
        finally:
            os.remove(handle.name)
        marks.append(time.perf_counter())
        embedding = self.embed(image)
        marks.append(time.perf_counter())
        candidates = self.search(embedding)
        marks.append(time.perf_counter())
        recommendations = score_candidates(color, "unisex", candidates, self.compatibility)
        marks.append(time.perf_counter())
        out = json.dumps(
            {
                "query_item": {
                    "dominant_color": f"RGB{color}",
                    "dominant_color_rgb": color,
                    "predicted_gender": "unisex",
                    "gender_confidence": 0.0,
                },
                "recommendations": recommendations,
                "total_candidates": len(candidates),
                "faiss_search_results": len(candidates),
            }
        ).encode()
        marks.append(time.perf_counter())
        stages = ("decode", "color", "embed", "search", "score", "serialise")
        timings = {s: (b - a) * 1e3 for s, a, b in zip(stages, marks, marks[1:], strict=False)}
        timings["total"] = (marks[-1] - marks[0]) * 1e3
        return out, timings


# --- catalogues -------------------------------------------------------------------------------


def v4_compatibility(categories: list[str], compatible: Callable[[str, str], bool]) -> Any:
    """V4's ``CATEGORY_COMPATIBILITY`` layout, filled from StyGig's taxonomy."""
    return {
        a: {
            "compatible": [b for b in categories if compatible(a, b)],
            "avoid": [b for b in categories if not compatible(a, b)],
        }
        for a in categories
    }


def write_reference_catalogue(artifact_path: Path, out: Path) -> None:
    """The reference's FAISS flat index, metadata and compatibility from StyGig's rows."""
    art = Artifact.load(artifact_path, verify=False)
    metadata: dict[str, list[dict[str, Any]]] = {}
    rows: dict[str, list[int]] = {}
    for i, (item, color) in enumerate(zip(art.items, art.colors, strict=True)):
        metadata.setdefault(item.category, []).append(
            {
                "id": item.id,
                "category": item.category,
                "gender": V4_GENDER.get(str(item.gender), str(item.gender)),
                "color_rgb": list(color.get("rgb", GRAY)),
                "path": item.image,
            }
        )
        rows.setdefault(item.category, []).append(i)
    # V4 numbered the index in the metadata's order: category by category.
    order = [i for category in metadata for i in rows[category]]
    index = faiss.IndexFlatIP(art.embeddings.shape[1])
    index.add(np.ascontiguousarray(art.embeddings[order], np.float32))
    tmp = Path(tempfile.mkdtemp(prefix=".reference.", dir=out.parent))
    faiss.write_index(index, str(tmp / "faiss_index.index"))
    (tmp / "metadata.json").write_text(json.dumps(metadata), encoding="utf-8")
    compat = v4_compatibility(sorted(metadata), art.taxonomy.compatible)
    (tmp / "compatibility.json").write_text(json.dumps(compat, indent=1), encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def ensure_catalogues(items: int, rebuild: bool) -> tuple[Path, Path]:
    """StyGig's artifact (CLIP int8, random weights) and the reference's files, built once."""
    root = BUILD / f"items-{items}"
    artifact, reference = root / "artifact", root / "reference"
    if rebuild or not (artifact / "manifest.json").exists():
        print(f"building a {items}-item CLIP ViT-B/32 int8 artifact under {root} ...", flush=True)
        with make_build_encoder("clip-vit-b-32", int8=True, random_weights=True) as (
            encoder,
            files,
        ):
            synthetic_artifact(artifact, items, encoder_info=encoder.describe(), extra_files=files)
        shutil.rmtree(reference, ignore_errors=True)
    if not (reference / "compatibility.json").exists():
        write_reference_catalogue(artifact, reference)
    return artifact, reference


# --- measurement ------------------------------------------------------------------------------


def pick_photos(n: int) -> list[bytes]:
    """``n`` product photos spread evenly over the dataset (by file name)."""
    files = sorted(KAGGLE.glob("*.jpg"))
    if len(files) < n:
        raise SystemExit(f"need {n} photos, {KAGGLE} has {len(files)}")
    picks = np.linspace(0, len(files) - 1, n).round().astype(int)
    return [files[i].read_bytes() for i in picks]


def server_cpu_ms(pid: int) -> float | None:
    """CPU time all threads of a process have run so far (ns precision, /proc); None elsewhere."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for task in tasks:
        try:
            total += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            continue  # a thread that ended meanwhile
    return total / 1e6


def cpu_snapshot(server_pid: int) -> tuple[float, float, float, float | None]:
    """(wall s, CPU s of the whole machine, of this process, of the server in ms) right now."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait
    return time.perf_counter(), busy, time.process_time(), server_cpu_ms(server_pid)


def other_jobs_share(
    start: tuple[float, float, float, float | None], end: tuple[float, float, float, float | None]
) -> float | None:
    """The machine's CPU used by anything but this benchmark and its server, as a share."""
    if start[3] is None or end[3] is None:
        return None
    ours = (end[2] - start[2]) + (end[3] - start[3]) / 1e3
    others = (end[1] - start[1]) - ours
    return max(0.0, others / ((end[0] - start[0]) * (os.cpu_count() or 1)))


def spread(values: Sequence[float] | np.ndarray) -> dict[str, float]:
    """p50/p90/p99/mean in ms."""
    arr = np.asarray(values, np.float64)
    out = {f"p{q}": float(np.percentile(arr, q)) for q in (50, 90, 99)}
    out["mean"] = float(arr.mean())
    return {k: round(v, 2) for k, v in out.items()}


@dataclass(frozen=True)
class Answer:
    """One request: wall time seen by the caller, stage timings, CPU, whether it had items."""

    latency_ms: float
    stages: dict[str, float]
    cpu_ms: float | None
    has_items: bool
    gender_source: str | None = None  # StyGig's: how it decided the query's gender


@dataclass
class Samples:
    """What one system's measured requests took."""

    latency_ms: list[float] = field(default_factory=list)
    stages: dict[str, list[float]] = field(default_factory=dict)
    cpu_ms: list[float] = field(default_factory=list)
    answered: int = 0  # answers with at least one recommended item
    gender_sources: Counter[str] = field(default_factory=Counter)

    def add(self, answer: Answer) -> None:
        """Record one request."""
        self.latency_ms.append(answer.latency_ms)
        for stage, ms in answer.stages.items():
            self.stages.setdefault(stage, []).append(ms)
        if answer.cpu_ms is not None:
            self.cpu_ms.append(answer.cpu_ms)
        self.answered += answer.has_items
        if answer.gender_source is not None:
            self.gender_sources[answer.gender_source] += 1


def ask_reference(reference: V4Reference, photo: bytes) -> Answer:
    """One photo through the in-process V4 reference (CPU: this whole process)."""
    c0, t0 = time.process_time(), time.perf_counter()
    body, stages = reference.answer(photo)
    t1, c1 = time.perf_counter(), time.process_time()
    has_items = bool(json.loads(body)["recommendations"])
    return Answer((t1 - t0) * 1e3, stages, (c1 - c0) * 1e3, has_items)


def ask_stygig(client: httpx.Client, pid: int, photo: bytes) -> Answer:
    """One photo to StyGig over HTTP (CPU: the server process while it answered)."""
    c0 = server_cpu_ms(pid)
    t0 = time.perf_counter()
    response = client.post("/invocations", content=photo, headers={"content-type": "image/jpeg"})
    t1 = time.perf_counter()
    c1 = server_cpu_ms(pid)
    if not response.is_success:
        raise RuntimeError(f"stygig answered {response.status_code}: {response.text[:500]}")
    out = response.json()
    stages = {k: float(v) for k, v in out["timings_ms"].items()}
    cpu = None if c0 is None or c1 is None else c1 - c0
    gender = out.get("gender")
    source = str(gender.get("source")) if isinstance(gender, dict) else None
    return Answer((t1 - t0) * 1e3, stages, cpu, bool(out.get("items")), source)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Build or reuse the catalogues, start the server, measure both interleaved."""
    load_start = os.getloadavg()
    artifact, reference_dir = ensure_catalogues(args.items, args.rebuild)
    photos = pick_photos(args.warmup + args.photos)
    reference = V4Reference(reference_dir)
    port = free_port()
    logs = BUILD / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    serve = ["serve", "--artifact", str(artifact), "--host", "127.0.0.1", "--port", str(port)]
    process = start_process([*serve, "--log-level", "warning"], logs / "serve.log")
    samples = {"reference": Samples(), "stygig": Samples()}
    try:
        url = f"http://127.0.0.1:{port}"
        cold_s = wait_ready(url, process, timeout=300)
        with httpx.Client(base_url=url, timeout=60) as client:
            ask: dict[str, Callable[[bytes], Answer]] = {
                "reference": lambda photo: ask_reference(reference, photo),
                "stygig": lambda photo: ask_stygig(client, process.pid, photo),
            }
            for photo in photos[: args.warmup]:
                ask["reference"](photo)
                ask["stygig"](photo)
            before = cpu_snapshot(process.pid)
            for i, photo in enumerate(photos[args.warmup :]):
                order = ("reference", "stygig") if i % 2 == 0 else ("stygig", "reference")
                for name in order:
                    samples[name].add(ask[name](photo))
                if (i + 1) % 50 == 0:
                    print(f"  {i + 1}/{args.photos} photos", flush=True)
            others = other_jobs_share(before, cpu_snapshot(process.pid))
    finally:
        process.terminate()
        exit_code(process, timeout=60)  # killed if it has not stopped by then
    load = (load_start, os.getloadavg())
    manifest = read_manifest(artifact)
    built = {"created_at": manifest.get("created_at"), "encoder": manifest["encoder"]}
    machine = {"load": load, "others": others}
    return report(args, samples["reference"], samples["stygig"], machine, cold_s, built)


def report(
    args: argparse.Namespace,
    ref: Samples,
    sty: Samples,
    machine: dict[str, Any],
    cold_s: float,
    artifact: dict[str, Any],
) -> dict[str, Any]:
    """The results document."""
    import onnxruntime
    import torch
    import transformers

    ref_ms, sty_ms, stages = ref.latency_ms, sty.latency_ms, sty.stages
    load, others = machine["load"], machine["others"]
    n = len(sty_ms)
    embed = np.asarray(stages.get("embed", [0.0] * n))
    non_encoder = [s for s in stages if s not in ("embed", "total")]
    server_wall = np.asarray(stages["total"]) if "total" in stages else None
    if server_wall is None:  # an older server: its stages add up to its total
        server_wall = embed + sum((np.asarray(stages[s]) for s in non_encoder), np.zeros(n))
    client = np.asarray(sty_ms)
    median = statistics.median
    ratio = median(ref_ms) / median(sty_ms)
    return {
        "command": "python benchmarks/bench_v4_reference.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "onnxruntime": onnxruntime.__version__,
            "faiss": faiss.__version__,
            "load_average_start": [round(v, 2) for v in load[0]],
            "load_average_end": [round(v, 2) for v in load[1]],
            "other_jobs_cpu_share": None if others is None else round(others, 3),
            "note": "client, server and reference share the CPUs"
            + (
                "; other jobs took under 5 % of the CPUs while measuring"
                if others is not None and others < BUSY_SHARE
                else "; BUSY: other jobs competed for the cores (torch eager suffers most from "
                "that): rerun on a quiet machine"
            ),
        },
        "weights": "CLIP ViT-B/32 with RANDOM weights on both sides (no hub access here): "
        "architecture cost only",
        "catalogue": f"{args.items} synthetic items (benchmarks/synthetic.py), the same rows in "
        "StyGig's artifact and the reference's FAISS IndexFlatIP",
        "photos": f"{n} real photos from ../{KAGGLE.relative_to(REPO.parent)} after {args.warmup} "
        "warm-up photos; reference and StyGig interleaved per photo, alternating who goes first",
        "reference": {
            "how": "V4 in-process: PIL decode, temp-JPEG + mean colour, torch eager CLIP "
            f"(2 threads), FAISS flat k={SEARCH_K}, Python loop with colorsys, json.dumps",
            "latency_ms": spread(ref_ms),
            "cpu_ms": spread(ref.cpu_ms),
            "stages_p50_ms": {s: round(median(v), 3) for s, v in ref.stages.items()},
            "answers_with_items": ref.answered,
        },
        "stygig": {
            "how": "stygig serve (defaults) on 127.0.0.1, one httpx client, POST /invocations "
            "with the JPEG bytes",
            "artifact_built_at": artifact["created_at"],
            "encoder": {
                k: artifact["encoder"].get(k)
                for k in ("name", "runtime", "quantization", "quantization_method")
            },
            "cold_start_s": round(cold_s, 2),
            "latency_ms": spread(sty_ms),
            "server_timings_p50_ms": {s: round(median(v), 3) for s, v in stages.items()},
            "encoder_ms": spread(embed),
            "server_outside_encoder_ms": spread(server_wall - embed),
            "client_outside_encoder_ms": spread(client - embed),
            "http_and_framework_ms": spread(client - server_wall),
            "server_cpu_ms": spread(sty.cpu_ms) if sty.cpu_ms else None,
            "answers_with_items": sty.answered,
            "gender_sources": dict(sty.gender_sources),
        },
        "ratio_of_medians": round(ratio, 2),
        "targets": {
            "stygig_p50_le_20ms": bool(median(sty_ms) <= 20.0),
            "ratio_ge_3x": bool(ratio >= 3.0),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--photos", type=int, default=300, help="measured photos per system")
    parser.add_argument("--warmup", type=int, default=10, help="photos sent first, not measured")
    parser.add_argument("--items", type=int, default=10_000, help="catalogue size")
    parser.add_argument(
        "--rebuild",
        action="store_true",
        help="rebuild the cached catalogues (after a change to the encoder export)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 photos, 3 warm-up")
    parser.add_argument("--out", type=Path, help="results file (default depends on --quick)")
    args = parser.parse_args()
    if args.quick:
        args.photos, args.warmup = 20, 3
    if not KAGGLE.is_dir():
        print(f"skipped: real query photos are needed and {KAGGLE} is missing")
        return 0
    results = run(args)
    out = args.out or (QUICK_RESULTS if args.quick else RESULTS)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    ref, sty = results["reference"], results["stygig"]
    print(f"{'':<10}{'p50':>9}{'p90':>9}{'p99':>9}   (ms)")
    for name, lat in (("V4 ref", ref["latency_ms"]), ("StyGig", sty["latency_ms"])):
        print(f"{name:<10}{lat['p50']:>9.2f}{lat['p90']:>9.2f}{lat['p99']:>9.2f}")
    print(f"ratio of medians: {results['ratio_of_medians']:.2f}x")
    print(f"reference stages p50: {ref['stages_p50_ms']}")
    print(f"StyGig server stages p50: {sty['server_timings_p50_ms']}")
    print(
        f"StyGig outside the encoder p50: server {sty['server_outside_encoder_ms']['p50']:.2f} ms,"
        f" client {sty['client_outside_encoder_ms']['p50']:.2f} ms;"
        f" server CPU per request p50 {(sty['server_cpu_ms'] or {}).get('p50')} ms"
    )
    print(
        f"load average: {results['machine']['load_average_start']} -> "
        f"{results['machine']['load_average_end']}; other jobs' CPU share while measuring: "
        f"{results['machine']['other_jobs_cpu_share']}; written: {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The build pipeline: catalogue file + photos -> artifact.

Stages, each timed: read (validate rows) -> decode + preprocess + colour (a thread pool; PIL and
NumPy release the GIL) -> encode (batched; the encoder's own threads) -> index + write.
Decoding runs ahead of encoding by a bounded number of batches, so memory stays flat whatever
the catalogue size. A row whose image fails to decode becomes a ``corrupt_image`` reject; it
never stops the build.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from stygig.artifact import IndexBuilder, check_replaceable, read_manifest, write_artifact
from stygig.catalog import (
    CatalogReadResult,
    Item,
    Reject,
    Taxonomy,
    count_by_reason,
    read_catalog,
)
from stygig.category_head import (
    HEAD_FIELDS,
    HEAD_FILE,
    CategoryHead,
    fit_artifact_heads,
    head_entry,
    save_heads,
    skip_reason,
)
from stygig.encoders import Encoder, export_onnx, load_encoder, load_onnx_encoder
from stygig.encoders.calibration import catalogue_calibration
from stygig.errors import (
    ArtifactError,
    ImageTooLargeError,
    InvalidImageError,
    InvalidOptionsError,
    NotFoundError,
    StorageError,
    UnsupportedMediaError,
)
from stygig.features import PreparedImage, color_method, fetch_photo, prepare_image
from stygig.images import CATALOG_LIMITS, DEFAULT_LIMITS, ImageLimits, PreprocessSpec
from stygig.scoring import ScoringConfig
from stygig.whitening import Whitening

__all__ = [
    "BuildResult",
    "build_artifact",
    "catalogue_photos",
    "embed_items",
    "finish_build",
    "fit_heads",
    "head_summary",
    "make_build_encoder",
    "prepare_item_photo",
    "prepare_or_reject",
    "print_build_result",
]


@dataclass
class EmbedResult:
    """Embeddings and colours of the items that decoded, plus rejects for the rest."""

    items: list[Item] = field(default_factory=list)
    colors: list[dict[str, Any]] = field(default_factory=list)
    embeddings: list[np.ndarray] = field(default_factory=list)
    thumbnails: list[bytes | None] = field(default_factory=list)  # row-aligned with items
    rejects: list[Reject] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def index_params(partition_by: str = "auto", nprobe: int | None = None) -> dict[str, Any] | None:
    """The ``index_params`` of :func:`build_artifact` from the build command's options:
    ``partition_by`` (``auto``: the index kind decides) and ``nprobe`` (lists probed per query
    by ``ivf`` and ``ivfpq`` indexes, in every part of a split index; ``None``: each kind's
    default, for ``ivfpq`` by the catalogue's size, :func:`stygig.index_pq.default_nprobe`).
    More probes find more of the true neighbours and cost more time per query:
    at 10M items, 32 probes gave recall@50 0.978 in 10.9 ms and 24 gave 0.961 in 8.4 ms
    (``docs/scale.md``)."""
    params: dict[str, Any] = {}
    if partition_by != "auto":
        params["partition_by"] = partition_by
    if nprobe is not None:
        if not 1 <= nprobe <= 65_536:
            raise InvalidOptionsError("--nprobe must be 1 to 65536")
        params["nprobe"] = nprobe
    return params or None


def prepare_item_photo(
    source: str | bytes, spec: PreprocessSpec, limits: ImageLimits = DEFAULT_LIMITS
) -> PreparedImage:
    """One catalogue photo (a path, a remote location or its bytes) as the build prepares
    it: read, decoded, validated, preprocessed for the encoder, coloured and thumbnailed.
    The one per-item step of a build; a live catalogue change (a client's photo, within the
    default ``limits``) reuses it (raises :mod:`stygig.errors` types)."""
    return prepare_image(fetch_photo(source), spec, thumbnail=True, limits=limits)


def prepare_or_reject(image: str, spec: PreprocessSpec) -> PreparedImage | tuple[str, str]:
    """The prepared photo, or ``(reject reason, message)`` for this row alone."""
    try:
        return prepare_item_photo(image, spec, CATALOG_LIMITS)  # the operator's photos
    except (NotFoundError, StorageError) as e:
        return "missing_image", e.message
    except (InvalidImageError, ImageTooLargeError, UnsupportedMediaError) as e:
        reason = "missing_image" if e.code == "image_not_found" else "corrupt_image"
        return reason, e.message


def _batches(items: list[Item], size: int) -> Iterator[list[Item]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


#: Decode threads a build runs unless told: one per core, at most this many. A photo master
#: may take ~320 MB to decode (a 40 MP PNG: review, session 36), so a 64-core build box
#: decoding one per core needed 20 GB whatever the catalogue's size.
MAX_DEFAULT_WORKERS = 8


def default_workers() -> int:
    """The decode threads of a build: the cores, at most :data:`MAX_DEFAULT_WORKERS`."""
    return max(1, min(os.cpu_count() or 2, MAX_DEFAULT_WORKERS))


def embed_items(
    items: list[Item],
    encoder: Encoder,
    *,
    batch_size: int = 32,
    workers: int | None = None,
    row_of: Callable[[Item], int] | None = None,
    progress: bool = True,
) -> EmbedResult:
    """Decode, colour and embed ``items`` with bounded look-ahead; failures become rejects."""
    workers = workers or default_workers()
    out = EmbedResult()
    decode_s = encode_s = 0.0
    bar = tqdm(
        total=len(items),
        desc=f"embedding ({encoder.name})",
        unit="img",
        disable=not progress,
        file=sys.stderr,
        smoothing=0.1,
    )
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        pending: deque[tuple[list[Item], list[Future[PreparedImage | tuple[str, str]]]]] = deque()
        batches = _batches(items, batch_size)

        def submit_next() -> None:
            batch = next(batches, None)
            if batch is not None:
                futures = [
                    pool.submit(prepare_or_reject, item.image, encoder.preprocess) for item in batch
                ]
                pending.append((batch, futures))

        for _ in range(3):  # keep up to three batches decoding ahead of the encoder
            submit_next()
        while pending:
            batch, futures = pending.popleft()
            t0 = time.perf_counter()
            prepared = [f.result() for f in futures]
            decode_s += time.perf_counter() - t0
            submit_next()
            good: list[tuple[Item, PreparedImage]] = []
            for item, prep in zip(batch, prepared, strict=True):
                if isinstance(prep, tuple):
                    row = row_of(item) if row_of else 0
                    reason, message = prep
                    out.rejects.append(Reject(row, item.id, reason, message, item.raw()))
                else:
                    good.append((item, prep))
            if good:
                t0 = time.perf_counter()
                vectors = encoder.encode(np.stack([p.tensor for _, p in good]))
                encode_s += time.perf_counter() - t0
                out.embeddings.append(vectors)
                out.items.extend(item for item, _ in good)
                out.colors.extend(p.color for _, p in good)
                out.thumbnails.extend(p.thumbnail for _, p in good)
            bar.update(len(batch))
    bar.close()
    out.seconds = {"waiting_for_decode": decode_s, "encode": encode_s}
    return out


@dataclass
class BuildResult:
    """What a build produced, for the CLI summary."""

    path: Path
    items: int
    rejects: dict[str, int]
    seconds: float
    images_per_second: float
    manifest: dict[str, Any]


def build_artifact(
    catalog: str | Path,
    out_dir: str | Path,
    encoder: Encoder,
    *,
    layout: str = "auto",
    images_dir: str | Path | None = None,
    taxonomy: Taxonomy | None = None,
    index_kind: str = "auto",
    index_params: dict[str, Any] | None = None,
    batch_size: int = 32,
    workers: int | None = None,
    extra_files: dict[str, Path] | None = None,
    whiten: bool | None = None,
    category_head: bool = True,
    progress: bool = True,
) -> BuildResult:
    """Build an artifact from a catalogue file with ``encoder`` and write it to ``out_dir``.

    ``extra_files`` (e.g. the encoder's ``.onnx`` file) are copied into the artifact.
    ``index_params`` go to the index (:func:`stygig.artifact.write_artifact`), e.g.
    ``{"partition_by": "slot"}`` or ``{"nprobe": 32}``.
    ``whiten`` fits PCA whitening on the catalogue's embeddings (see :mod:`stygig.whitening`),
    applies it, and stores it so that queries are whitened the same way; ``None`` (auto) does
    so when the catalogue has at least twice as many items as the embedding has dimensions,
    enough to estimate the covariance (Kaggle, efficientnet-lite0: articleType vote 86.1 % ->
    87.6 %; see docs/evaluation.md).
    ``category_head`` fits the category (and usage) heads on the catalogue's labels
    (:func:`fit_heads`; skipped, with the reason in the manifest, when labels are too few).
    """
    started = time.perf_counter()
    check_replaceable(out_dir)  # before minutes of encoding, not after
    taxonomy = taxonomy or Taxonomy.load()
    t0 = time.perf_counter()
    read: CatalogReadResult = read_catalog(
        catalog, layout=layout, images_dir=images_dir, taxonomy=taxonomy, progress=progress
    )
    read_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    embedded = embed_items(
        read.items,
        encoder,
        batch_size=batch_size,
        workers=workers,
        row_of=lambda item: read.rows[item.id],
        progress=progress,
    )
    embed_s = time.perf_counter() - t0
    return finish_build(
        out_dir,
        catalog,
        read,
        embedded,
        encoder,
        taxonomy=taxonomy,
        started=started,
        read_s=read_s,
        embed_s=embed_s,
        workers=workers or default_workers(),
        batch_size=batch_size,
        index_kind=index_kind,
        index_params=index_params,
        extra_files=extra_files,
        whiten=whiten,
        category_head=category_head,
        progress=progress,
    )


def catalogue_photos(
    catalog: str | Path,
    *,
    layout: str = "auto",
    images_dir: str | Path | None = None,
    taxonomy: Taxonomy | None = None,
) -> list[str]:
    """The catalogue's image locations, in order: what static int8 calibrates on
    (``calibration_photos`` of :func:`make_build_encoder`)."""
    read = read_catalog(catalog, layout=layout, images_dir=images_dir, taxonomy=taxonomy)
    return [item.image for item in read.items]


def print_build_result(result: BuildResult, detail: str | None = None) -> None:
    """What ``stygig build`` prints when done; ``detail`` is one more line after the counts."""
    rejected = sum(result.rejects.values())
    print(f"artifact: {result.path}")
    print(
        f"items: {result.items}  rejected: {rejected}  "
        f"time: {result.seconds:.1f}s  throughput: {result.images_per_second:.1f} images/s"
    )
    head = result.manifest.get("build", {}).get("category_head")
    if head is not None:
        print(head_summary(head))
    if detail is not None:
        print(detail)
    for reason, count in sorted(result.rejects.items()):
        print(f"  rejected {reason}: {count}")
    if rejected:
        print(f"rejected rows and reasons: {result.path / 'rejects.csv'}")


def _nothing_built(rejects: list[Reject]) -> str:
    """Why no row became an item: the count per reason and the first rows' reasons (review,
    session 36: "see the rejects summary", which was never printed, and no rejects.csv)."""
    if not rejects:
        return "no valid items: the catalogue holds no rows"
    counts = count_by_reason(rejects)
    by_reason = ", ".join(f"{reason} {n:,}" for reason, n in sorted(counts.items()))
    first = "; ".join(f"row {r.row}: {r.detail[:160]}" for r in rejects[:3])
    return (
        f"no valid items: nothing to build; {len(rejects):,} rows rejected ({by_reason}). "
        f"First: {first}"
    )


def finish_build(
    out_dir: str | Path,
    catalog: str | Path,
    read: CatalogReadResult,
    embedded: EmbedResult,
    encoder: Encoder,
    *,
    taxonomy: Taxonomy,
    started: float,
    read_s: float,
    embed_s: float,
    workers: int | None,
    batch_size: int,
    index_kind: str,
    index_params: dict[str, Any] | None,
    extra_files: dict[str, Path] | None,
    whiten: bool | None,
    build_extra: dict[str, Any] | None = None,
    index_builder: IndexBuilder | None = None,
    category_head: bool = True,
    progress: bool = True,
) -> BuildResult:
    """What a build does after its embed step (local or on Ray): rejects merged, whitening
    fitted and applied, the category heads fitted (``category_head``; :func:`fit_heads`), the
    artifact written, its manifest read back. ``build_extra`` goes into ``build_info`` as is
    (the same dict: the index builder may still add to it)."""
    rejects = sorted(read.rejects + embedded.rejects, key=lambda r: r.row)
    if not embedded.items:
        raise ArtifactError(_nothing_built(rejects))
    dim = encoder.dim
    vectors = (
        np.concatenate(embedded.embeddings) if embedded.embeddings else np.zeros((0, dim), "f4")
    )
    if whiten is None:
        whiten = len(vectors) >= 2 * encoder.dim
    whitening = Whitening.fit(vectors) if whiten and len(vectors) >= 2 else None
    if whitening is not None:
        vectors = whitening.apply(vectors)
    heads: dict[str, CategoryHead] = {}
    head_info: dict[str, Any] = {"off": "--no-category-head"}
    head_s: dict[str, float] = {}
    if category_head:
        t0 = time.perf_counter()
        heads, head_info = fit_heads(vectors, embedded.items, whitening, progress=progress)
        head_s["category_head"] = time.perf_counter() - t0
    n_images = len(read.items)
    build_info = {
        "catalog": str(catalog),
        "layout": read.layout,
        "category_head": _without_grids(head_info),
        "seconds": {"read": read_s, "embed": embed_s, **embedded.seconds, **head_s},
        "images_per_second": n_images / embed_s if embed_s > 0 else None,
        "workers": workers,
        "batch_size": batch_size,
        "color_method": color_method(),
        **(build_extra or {}),
    }
    # The heads go in with the rest, before the artifact replaces the old one: added after,
    # a build stopped between the two published an artifact without them, and a kill while
    # writing them left a stray file that made every load refuse it (review, session 53).
    with tempfile.TemporaryDirectory(prefix="stygig-heads-") as scratch:
        files = dict(extra_files or {})
        head_manifest: dict[str, Any] | None = None
        if heads:
            files[HEAD_FILE] = save_heads(heads, Path(scratch) / HEAD_FILE)
            head_manifest = {"category_head": head_entry(heads, head_info)}
        path = write_artifact(
            out_dir,
            items=embedded.items,
            colors=embedded.colors,
            embeddings=vectors,
            taxonomy=taxonomy,
            encoder_info=encoder.describe(),
            rejects=rejects,
            index_kind=index_kind,
            index_params=index_params,
            build_info=build_info,
            extra_files=files,
            whitening=whitening,
            thumbnails=embedded.thumbnails,
            index_builder=index_builder,
            manifest_extra=head_manifest,
        )
    total = time.perf_counter() - started
    manifest = read_manifest(path)
    counts: dict[str, int] = manifest["counts"]["rejects_by_reason"]
    return BuildResult(
        path=path,
        items=len(embedded.items),
        rejects=counts,
        seconds=total,
        images_per_second=n_images / embed_s if embed_s > 0 else 0.0,
        manifest=manifest,
    )


def fit_heads(
    vectors: np.ndarray,
    items: Sequence[Item],
    whitening: Whitening | None,
    *,
    progress: bool = True,
) -> tuple[dict[str, CategoryHead], dict[str, Any]]:
    """The category heads of a build (:mod:`stygig.category_head`): one per field the engine
    votes (:data:`~stygig.category_head.HEAD_FIELDS`), fitted on the stored ``vectors`` and the
    items' labels, each field's head weight cross-fitted against the vote the engine runs
    (``vote_k`` / ``attribute_vote_k`` of the default scoring config). A progress bar counts
    the fits (six per field: five folds and the final one; twelve for the gender stack).

    The gender head and its stacked decision (:func:`~stygig.category_head.fit_gender_stack`)
    are fitted against the engine's gender vote (``attribute_vote_k`` neighbours, gated at
    ``gender_min_confidence``); skipped, with the reason, when the catalogue has too few men's
    or women's items."""
    labels: dict[str, list[str | None]] = {
        name: [getattr(item, name) for item in items] for name in HEAD_FIELDS
    }
    config = ScoringConfig.load()
    k = {"category": config.vote_k, "usage": config.attribute_vote_k}
    folds = 5
    fitting = [name for name, values in labels.items() if skip_reason(values) is None]
    genders = [item.gender for item in items]
    bar = tqdm(
        total=(folds + 1) * len(fitting) + 2 * (folds + 1),
        desc=f"category head ({', '.join([*fitting, 'gender'])})",
        unit="fit",
        disable=not progress,
        file=sys.stderr,
    )
    with bar:
        fitted = fit_artifact_heads(
            vectors,
            labels,
            k=k,
            whitening=whitening,
            folds=folds,
            on_fit=lambda: bar.update(1),
            genders=genders,
            gender_k=config.attribute_vote_k,
            gender_min_confidence=config.gender_min_confidence,
        )
        # A head skipped (too few labels: the gender stack on a catalogue without men's items)
        # fits nothing: the bar ends full, not at 6 of 18.
        bar.total = bar.n
        bar.refresh()
        return fitted


def _without_grids(info: dict[str, Any]) -> dict[str, Any]:
    """The heads' build report without the weight grids (the ``category_head`` entry keeps them)."""
    fields = info.get("fields")
    if not isinstance(fields, dict):
        return info
    return {
        **info,
        "fields": {n: {k: v for k, v in r.items() if k != "grid"} for n, r in fields.items()},
    }


def head_summary(info: dict[str, Any]) -> str:
    """One line on the category heads of a build (its ``build_info["category_head"]``)."""
    if "off" in info:
        return f"category head: off ({info['off']})"
    parts = []
    seconds = 0.0
    for name, report in info.get("fields", {}).items():
        seconds += float(report.get("seconds", 0.0))
        if "skipped" in report:
            parts.append(f"{name} skipped ({report['skipped']})")
            continue
        if name == "gender":
            vote, stacked = report["vote"]["confident"], report["stacked"]["confident"]
            parts.append(
                f"gender (stacked, gate {report['gate']:.3f}: catalogue confident "
                f"{vote:.1%} -> {stacked:.1%} at the same error)"
            )
            continue
        acc = report.get("accuracy") or {}
        gain = ""
        if "vote" in acc and "merged" in acc:
            gain = f", cross-fit {acc['vote']:.1%} -> {acc['merged']:.1%}"
        vote = ""
        if name == "category" and "vote_k" in report:  # usage merges its plain k-10 vote
            vote = f", vote k {report['vote_k']}, T {report['temperature']:g}"
        parts.append(f"{name} (weight {report['head_weight']:g}{vote}{gain})")
    return f"category head: {'; '.join(parts) or 'none'}  time: {seconds:.1f}s"


@contextmanager
def make_build_encoder(
    name: str,
    *,
    runtime: str = "auto",
    weights: str | Path | None = None,
    int8: bool = False,
    random_weights: bool = False,
    calibration_photos: Sequence[str | Path] = (),
) -> Iterator[tuple[Encoder, dict[str, Path]]]:
    """The encoder a build uses, and the files the artifact must carry for it.

    ``auto`` means ONNX Runtime for model encoders: the torch model is exported once, the build
    encodes with the exported graph, and the ``.onnx`` file goes into the artifact so that
    serving runs the very same graph without torch.

    ``calibration_photos`` (the catalogue's image paths or URIs) calibrate static int8: a seeded
    sample of 64 is decoded (undecodable ones skipped) and the manifest records "calibration: 64
    catalogue images"; with none given or none decodable, synthetic shapes.
    """
    if runtime == "auto":
        runtime = "numpy" if name == "tiny" else "onnx"
    if runtime != "onnx":
        yield (
            load_encoder(name, runtime=runtime, weights=weights, random_weights=random_weights),
            {},
        )
        return
    with tempfile.TemporaryDirectory(prefix="stygig-build-") as tmp:
        source = load_encoder(name, runtime="torch", weights=weights, random_weights=random_weights)
        calibration = (
            catalogue_calibration(calibration_photos, source.preprocess)
            if int8 and calibration_photos
            else None
        )
        onnx_path = export_onnx(
            source, Path(tmp) / "encoder.onnx", int8=int8, calibration=calibration
        )
        # OnnxEncoder.describe() itself records runtime "onnx" and the file's name.
        yield load_onnx_encoder(onnx_path, source.describe()), {"encoder.onnx": onnx_path}

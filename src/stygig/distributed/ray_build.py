"""``stygig build --engine ray``: the build's per-item work as Ray Data stages.

::

    catalogue (driver: stygig.catalog.read_catalog, local or s3://)
      -> map_batches(prepare)          tasks: read + decode + colour + thumbnail per photo
                                       (stygig.build.prepare_item_photo, the local build's step)
      -> map_batches(EmbedAndWrite)    an actor pool: one encoder load per actor (a GPU each when
                                       the cluster has GPUs); each batch is embedded in one call
                                       and written whole as one part file to the stage location
      -> assemble (driver)             parts read back in catalogue order, one row each, then the
                                       local build's own artifact writer (same ids, manifest
                                       fields and checksums)

A part is named by the catalogue positions it covers and written in one atomic put; a block
that Ray retries after a worker failed writes the same part again, and assembly keeps each
position once, so nothing is ever duplicated. A photo that fails becomes a reject with the local
build's reason (``missing_image``, ``corrupt_image``) and message; it never stops the build.

The encoder is the one the local build uses: ``auto`` builds export the torch model to ONNX once
on the driver, and every actor loads that very graph (sent through the object store), so the
embeddings match the local build's within the runtime's batch-to-batch tolerance.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stygig import storage
from stygig.artifact import read_manifest, write_artifact
from stygig.build import BuildResult, EmbedResult, item_raw, prepare_item_photo
from stygig.catalog import CatalogReadResult, Reject, Taxonomy, read_catalog
from stygig.distributed.cluster import ClusterResources, import_ray, resources
from stygig.encoders import Encoder, load_encoder, load_onnx_encoder
from stygig.errors import (
    ImageTooLargeError,
    InvalidImageError,
    NotFoundError,
    StorageError,
    StygigError,
    UnsupportedMediaError,
)
from stygig.features import PreparedImage
from stygig.images import PreprocessSpec
from stygig.whitening import Whitening

__all__ = ["EncoderLoader", "build_artifact_ray", "stage_location"]

_PART = re.compile(r"part-(\d+)-(\d+)\.npz$")
_ONNX = "encoder.onnx"


@dataclass(frozen=True)
class EncoderLoader:
    """How an actor loads the build's encoder: the exported ONNX graph itself (``auto`` and
    ``onnx`` builds), or the encoder's name and weights (``torch``, the NumPy ``tiny``)."""

    info: dict[str, Any]
    onnx: str | None = None  # where the exported graph is stored (the stage location)
    name: str = ""
    runtime: str = "auto"
    weights: str | None = None
    random_weights: bool = False

    @classmethod
    def for_build(
        cls,
        encoder: Encoder,
        extra_files: dict[str, Path],
        stage: str,
        *,
        runtime: str = "auto",
        weights: str | Path | None = None,
        random_weights: bool = False,
    ) -> EncoderLoader:
        """The loader of what :func:`stygig.build.make_build_encoder` yielded. An ONNX graph is
        copied to ``stage`` (every node reads it there, and a restarted actor finds it again)."""
        info = dict(encoder.describe())
        if _ONNX in extra_files:
            location = storage.join(stage, _ONNX)
            storage.write_bytes(location, Path(extra_files[_ONNX]).read_bytes())
            return cls(info, onnx=location)
        return cls(
            info,
            name=encoder.name,
            runtime=str(info.get("runtime") or runtime),
            weights=None if weights is None else str(weights),
            random_weights=random_weights,
        )

    def load(
        self, *, threads: int | None, device: str
    ) -> tuple[Encoder, tempfile.TemporaryDirectory[str] | None]:
        """The encoder (and the folder holding its ONNX file, kept while it is used)."""
        if self.onnx is not None:
            folder = tempfile.TemporaryDirectory(prefix="stygig-ray-encoder-")
            path = Path(folder.name) / _ONNX
            path.write_bytes(storage.read_bytes(self.onnx))
            return load_onnx_encoder(path, self.info, threads=threads, device=device), folder
        encoder = load_encoder(
            self.name,
            runtime=self.runtime,
            weights=self.weights,
            random_weights=self.random_weights,
            device=device,
            threads=threads,
        )
        return encoder, None


# -- stage 1: prepare (Ray tasks) -----------------------------------------------------------------


def _prepare_or_reject(image: str, spec: PreprocessSpec) -> PreparedImage | tuple[str, str]:
    """The local build's per-row step and its reject reasons (as ``stygig.build`` maps them)."""
    try:
        return prepare_item_photo(image, spec)
    except (NotFoundError, StorageError) as e:
        return "missing_image", e.message
    except (InvalidImageError, ImageTooLargeError, UnsupportedMediaError) as e:
        reason = "missing_image" if e.code == "image_not_found" else "corrupt_image"
        return reason, e.message


def prepare_rows(batch: dict[str, np.ndarray], spec: PreprocessSpec) -> dict[str, np.ndarray]:
    """A batch of ``{pos, image}`` rows -> encoder inputs, colours and thumbnails; a failed
    photo keeps its row (``ok`` false, zeros for its tensor) with its reason and message."""
    prepared = [_prepare_or_reject(str(image), spec) for image in batch["image"]]
    shape = next(
        (p.tensor.shape for p in prepared if isinstance(p, PreparedImage)),
        (3, spec.size, spec.size),
    )
    tensors = np.zeros((len(prepared), *shape), np.float32)
    colors, thumbs, reasons, messages = [], [], [], []
    for i, p in enumerate(prepared):
        if isinstance(p, PreparedImage):
            tensors[i] = p.tensor
            colors.append(json.dumps(p.color))
            thumbs.append(p.thumbnail if p.thumbnail is not None else b"")
            reasons.append("")
            messages.append("")
        else:
            colors.append("")
            thumbs.append(b"")
            reasons.append(p[0])
            messages.append(p[1])
    return {
        "pos": np.asarray(batch["pos"], np.int64),
        "ok": np.array([isinstance(p, PreparedImage) for p in prepared], bool),
        "tensor": tensors,
        "color": np.array(colors, object),
        "thumb": np.array(thumbs, object),
        "reason": np.array(reasons, object),
        "message": np.array(messages, object),
    }


# -- stage 2: embed and write (a Ray actor pool) -------------------------------------------------


def _part_name(pos: np.ndarray) -> str:
    return f"part-{int(pos.min()):010d}-{int(pos.max()) + 1:010d}.npz"


def encode_part(batch: dict[str, np.ndarray], vectors: np.ndarray) -> bytes:
    """One part file: positions, vectors of the rows that decoded, their colours and
    thumbnails, and the others' reject reasons. NumPy ``.npz``, readable without pickle."""
    ok = np.asarray(batch["ok"], bool)
    thumbs = [bytes(t) for t in batch["thumb"][ok]]
    buf = io.BytesIO()
    np.savez(
        buf,
        pos=np.asarray(batch["pos"], np.int64),
        ok=ok,
        vectors=np.ascontiguousarray(vectors, np.float32),
        colors=np.array(json.dumps([json.loads(c) for c in batch["color"][ok]])),
        thumb_bytes=np.frombuffer(b"".join(thumbs), np.uint8),
        thumb_sizes=np.array([len(t) for t in thumbs], np.int64),
        errors=np.array(
            json.dumps(
                [
                    [str(r), str(m)]
                    for r, m in zip(batch["reason"][~ok], batch["message"][~ok], strict=True)
                ]
            )
        ),
    )
    return buf.getvalue()


class EmbedAndWrite:
    """A Ray Data actor: loads the encoder once, then embeds each batch in one call and writes
    it as one part under ``stage``. Returns one summary row per part."""

    def __init__(self, loader: EncoderLoader, stage: str, threads: int, device: str) -> None:
        self.encoder, self._folder = loader.load(threads=threads, device=device)
        self.stage = stage

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = np.asarray(batch["ok"], bool)
        if ok.any():
            vectors = self.encoder.encode(np.ascontiguousarray(batch["tensor"][ok]))
        else:
            vectors = np.zeros((0, self.encoder.dim), np.float32)
        name = _part_name(np.asarray(batch["pos"]))
        storage.write_bytes(storage.join(self.stage, name), encode_part(batch, vectors))
        return {"part": np.array([name]), "rows": np.array([len(ok)]), "ok": np.array([ok.sum()])}


# -- assembly (driver) ----------------------------------------------------------------------------


def stage_location(out_dir: str | Path, stage: str | None = None) -> str:
    """Where parts go: ``stage`` when given (an ``s3://`` prefix or a folder every node can
    reach), else a folder beside the artifact (``<out>.ray-parts``; fine on one machine)."""
    if stage:
        return stage
    out = Path(out_dir)
    return str(out.with_name(out.name + ".ray-parts"))


def _clear(stage: str) -> None:
    for key in storage.list_keys(stage):
        if _PART.search(key):
            storage.delete(key)


def assemble(read: CatalogReadResult, stage: str, dim: int) -> EmbedResult:
    """The parts under ``stage`` as the local build's :class:`EmbedResult`, in catalogue order:
    each position once (a retried block's second copy is ignored), every position present."""
    items = read.items
    n = len(items)
    seen = np.zeros(n, bool)
    ok_mask = np.zeros(n, bool)
    vectors = np.zeros((n, dim), np.float32)
    colors: list[dict[str, Any] | None] = [None] * n
    thumbs: list[bytes | None] = [None] * n
    errors: dict[int, tuple[str, str]] = {}
    for key in sorted(storage.list_keys(stage)):
        if not _PART.search(key):
            continue
        with np.load(io.BytesIO(storage.read_bytes(key)), allow_pickle=False) as part:
            pos, ok = part["pos"], part["ok"]
            if len(pos) and (pos.min() < 0 or pos.max() >= n):
                raise StygigError("a build part names rows outside the catalogue (stale stage?)")
            good_pos = pos[ok]
            part_colors = json.loads(str(part["colors"]))
            sizes = part["thumb_sizes"]
            ends = np.cumsum(sizes)
            blob = part["thumb_bytes"].tobytes()
            for j, p in enumerate(good_pos):
                if seen[p]:
                    continue
                vectors[p] = part["vectors"][j]
                colors[p] = part_colors[j]
                size = int(sizes[j])
                thumbs[p] = blob[int(ends[j]) - size : int(ends[j])] if size else None
                ok_mask[p] = True
            for p, (reason, message) in zip(pos[~ok], json.loads(str(part["errors"])), strict=True):
                if not seen[p]:
                    errors[int(p)] = (reason, message)
            seen[pos] = True
    missing = int(n - seen.sum())
    if missing:
        raise StygigError(
            f"the Ray build finished without {missing} of {n} rows (a part was lost); run it again"
        )
    out = EmbedResult()
    kept = np.flatnonzero(ok_mask)
    out.items = [items[i] for i in kept]
    out.colors = [c for c in (colors[i] for i in kept) if c is not None]
    out.embeddings = [vectors[kept]] if len(kept) else []
    out.thumbnails = [thumbs[i] for i in kept]
    for p, (reason, message) in sorted(errors.items()):
        item = items[p]
        out.rejects.append(Reject(read.rows[item.id], item.id, reason, message, item_raw(item)))
    return out


# -- the build ------------------------------------------------------------------------------------


def embed_on_ray(
    read: CatalogReadResult,
    encoder: Encoder,
    loader: EncoderLoader,
    stage: str,
    *,
    batch_size: int = 32,
    actors: int | None = None,
    actor_cpus: float = 1.0,
    progress: bool = True,
) -> tuple[EmbedResult, dict[str, Any]]:
    """Prepare and embed ``read.items`` on the connected Ray cluster; the parts land in
    ``stage`` and come back as an :class:`EmbedResult`, with what ran where."""
    ray = import_ray()
    from ray.data import ActorPoolStrategy, DataContext

    cluster: ClusterResources = resources()
    use_gpu = cluster.gpus >= 1
    n_actors = actors or cluster.default_actors(actor_cpus)
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = progress
    ctx.print_on_execution_start = progress
    _clear(stage)
    rows = [{"pos": i, "image": item.image} for i, item in enumerate(read.items)]
    started = time.perf_counter()
    if rows:
        ds = ray.data.from_items(rows, override_num_blocks=max(1, -(-len(rows) // batch_size)))
        ds = ds.map_batches(
            prepare_rows,
            fn_kwargs={"spec": encoder.preprocess},
            batch_size=batch_size,
            batch_format="numpy",
            num_cpus=1,
        )
        ds = ds.map_batches(
            EmbedAndWrite,
            fn_constructor_kwargs={
                "loader": loader,
                "stage": stage,
                "threads": max(1, int(actor_cpus)),
                "device": "cuda" if use_gpu else "cpu",
            },
            compute=ActorPoolStrategy(size=n_actors),
            batch_size=batch_size,
            batch_format="numpy",
            num_cpus=actor_cpus,
            num_gpus=1 if use_gpu else 0,
        )
        written = ds.take_all()
        parts = len(written)
    else:
        parts = 0
    embed_s = time.perf_counter() - started
    t0 = time.perf_counter()
    embedded = assemble(read, stage, encoder.dim)
    assemble_s = time.perf_counter() - t0
    embedded.seconds = {"ray_stages": embed_s, "assemble": assemble_s}
    info = {
        "engine": "ray",
        "actors": n_actors,
        "actor_cpus": actor_cpus,
        "cluster": {"cpus": cluster.cpus, "gpus": cluster.gpus},
        "device": "cuda" if use_gpu else "cpu",
        "parts": parts,
    }
    return embedded, info


def build_artifact_ray(
    catalog: str | Path,
    out_dir: str | Path,
    encoder: Encoder,
    *,
    weights: str | Path | None = None,
    random_weights: bool = False,
    layout: str = "auto",
    images_dir: str | Path | None = None,
    taxonomy: Taxonomy | None = None,
    index_kind: str = "auto",
    index_params: dict[str, Any] | None = None,
    batch_size: int = 32,
    extra_files: dict[str, Path] | None = None,
    whiten: bool | None = None,
    progress: bool = True,
    actors: int | None = None,
    actor_cpus: float = 1.0,
    stage: str | None = None,
    keep_stage: bool = False,
) -> BuildResult:
    """:func:`stygig.build.build_artifact` with the per-item work on the connected Ray cluster
    (see the module's docstring); the same artifact, written by the same writer.

    ``encoder`` and ``extra_files`` are what :func:`stygig.build.make_build_encoder` yielded
    (``weights`` and ``random_weights`` as given to it: actors load non-ONNX encoders by name).
    ``actors``: encoder actors (default one per GPU, else one per ``actor_cpus`` CPUs);
    ``stage``: where the parts go (default ``<out>.ray-parts``, removed after the build unless
    ``keep_stage``).
    """
    started = time.perf_counter()
    taxonomy = taxonomy or Taxonomy.load()
    t0 = time.perf_counter()
    read = read_catalog(catalog, layout=layout, images_dir=images_dir, taxonomy=taxonomy)
    read_s = time.perf_counter() - t0
    where = stage_location(out_dir, stage)
    loader = EncoderLoader.for_build(
        encoder, extra_files or {}, where, weights=weights, random_weights=random_weights
    )
    t0 = time.perf_counter()
    embedded, ray_info = embed_on_ray(
        read,
        encoder,
        loader,
        where,
        batch_size=batch_size,
        actors=actors,
        actor_cpus=actor_cpus,
        progress=progress,
    )
    embed_s = time.perf_counter() - t0
    # From here on, what stygig.build.build_artifact does after its embed step.
    rejects = sorted(read.rejects + embedded.rejects, key=lambda r: r.row)
    vectors = (
        np.concatenate(embedded.embeddings)
        if embedded.embeddings
        else np.zeros((0, encoder.dim), "f4")
    )
    if whiten is None:
        whiten = len(vectors) >= 2 * encoder.dim
    whitening = Whitening.fit(vectors) if whiten and len(vectors) >= 2 else None
    if whitening is not None:
        vectors = whitening.apply(vectors)
    n_images = len(read.items)
    build_info = {
        "catalog": str(catalog),
        "layout": read.layout,
        "seconds": {"read": read_s, "embed": embed_s, **embedded.seconds},
        "images_per_second": n_images / embed_s if embed_s > 0 else None,
        "workers": int(ray_info["cluster"]["cpus"]),
        "batch_size": batch_size,
        "ray": ray_info,
    }
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
        extra_files=extra_files,
        whitening=whitening,
        thumbnails=embedded.thumbnails,
    )
    if not keep_stage:
        _clear(where)
        if loader.onnx is not None:
            storage.delete(loader.onnx)
        if not storage.is_remote(where):
            with contextlib.suppress(OSError):  # not empty (someone else's files), or gone
                os.rmdir(where)
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

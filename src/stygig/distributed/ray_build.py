"""``stygig build --engine ray``: the build's per-item work as Ray Data stages.

::

    catalogue (driver: stygig.catalog.read_catalog, the file local or s3://)
      -> map_batches(prepare)          tasks: read + decode + colour + thumbnail per photo
                                       (the photo's bytes are read by the task, not the driver)
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

Every task and actor gets this process's S3 endpoint and region
(:func:`stygig.distributed.cluster.worker_runtime_env`), so workers read the photos the driver
read the catalogue from; credentials are each node's own.

An ``ivfpq`` index (``--index ivfpq``, or ``auto`` from ``PQ_MIN_ITEMS`` items) is built on the
cluster too (:func:`build_index_on_ray`): per index (each outfit slot's part when the index is
split) one task trains on the local build's sample (:func:`stygig.index_pq.train_pq`) and
one task per chunk of rows encodes them (:func:`stygig.index_pq.add_chunk`); the driver merges
the chunks in row order (:func:`stygig.index_pq.merge_chunks`) and writes the float16 rows,
then the artifact writer saves the index as usual -- the same files a local build writes.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stygig import storage
from stygig.artifact import check_replaceable
from stygig.build import BuildResult, EmbedResult, finish_build, prepare_or_reject
from stygig.catalog import CatalogReadResult, Reject, Taxonomy, read_catalog
from stygig.distributed.cluster import (
    ClusterResources,
    device_refusal,
    import_ray,
    raise_failure,
    resources,
    worker_failure,
    worker_runtime_env,
)
from stygig.encoders import Encoder, load_encoder, load_onnx_encoder
from stygig.errors import StygigError
from stygig.features import PreparedImage
from stygig.images import PreprocessSpec
from stygig.index import PartitionedIndex, VectorIndex, build_index, choose_kind, plan_parts
from stygig.npzfile import load_npz

__all__ = [
    "EncoderLoader",
    "build_artifact_ray",
    "build_index_on_ray",
    "stage_location",
]

log = logging.getLogger(__name__)

#: In a build's run folder while the build runs: an actor that finds it gone (the build ended
#: and cleared the folder while the actor was embedding) writes no part behind it.
RUN_MARKER = "run.json"
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
            pooling=self.info.get("pooling"),  # the driver's, as its manifest records
        )
        return encoder, None


# -- the catalogue (driver) ----------------------------------------------------------------------


# -- stage 1: prepare (Ray tasks) -----------------------------------------------------------------


def prepare_rows(batch: dict[str, np.ndarray], spec: PreprocessSpec) -> dict[str, np.ndarray]:
    """A batch of ``{pos, image}`` rows -> encoder inputs, colours and thumbnails; a failed
    photo keeps its row (``ok`` false, zeros for its tensor) with its reason and message."""
    prepared = [prepare_or_reject(str(image), spec) for image in batch["image"]]
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
    it as one part under ``stage``. Returns one summary row per part; a StyGig error (the
    encoder not loadable, the stage not writable) comes back as the row's ``failure``
    (:func:`~stygig.distributed.cluster.worker_failure`), for the driver to raise."""

    def __init__(self, loader: EncoderLoader, stage: str, threads: int, device: str) -> None:
        self.stage = stage
        self.failure = ""
        try:
            self.encoder, self._folder = loader.load(threads=threads, device=device)
        except StygigError as e:
            self.failure = worker_failure(e, encoder_load=device_refusal(e))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = np.asarray(batch["ok"], bool)
        name, failure = _part_name(np.asarray(batch["pos"])), self.failure
        if not failure:
            try:
                self._write(batch, ok, name)
            except StygigError as e:
                failure = worker_failure(e)
        return {
            "part": np.array([name]),
            "rows": np.array([len(ok)]),
            "ok": np.array([ok.sum()]),
            "failure": np.array([failure]),
        }

    def _write(self, batch: dict[str, np.ndarray], ok: np.ndarray, name: str) -> None:
        if ok.any():
            vectors = self.encoder.encode(np.ascontiguousarray(batch["tensor"][ok]))
        else:
            vectors = np.zeros((0, self.encoder.dim), np.float32)
        if not storage.exists(storage.join(self.stage, RUN_MARKER)):
            # The build has ended (failed, interrupted) and cleared its stage while this actor
            # was still embedding: writing now would leave a part behind it.
            raise StygigError("the build's stage is gone: the build has ended", code="stage_gone")
        storage.write_bytes(storage.join(self.stage, name), encode_part(batch, vectors))


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
        with load_npz(storage.read_bytes(key)) as part:  # bounded by the part's size
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
        out.rejects.append(Reject(read.rows[item.id], item.id, reason, message, item.raw()))
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
    device: str = "auto",
    progress: bool = True,
    cluster: ClusterResources | None = None,
) -> tuple[EmbedResult, dict[str, Any]]:
    """Prepare and embed ``read.items`` on the connected Ray cluster; the parts land in
    ``stage`` and come back as an :class:`EmbedResult`, with what ran where. ``cluster``: the
    cluster's resources as the caller read them (default: read now)."""
    ray = import_ray()
    from ray.data import ActorPoolStrategy, DataContext

    cluster = cluster or resources()
    where = cluster.actor_device(device, encoder=encoder.describe())
    n_actors = actors or cluster.default_actors(actor_cpus, where)
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = progress
    ctx.print_on_execution_start = progress
    _clear(stage)
    storage.write_bytes(storage.join(stage, RUN_MARKER), b"{}")  # the run is live
    remote_args: dict[str, Any] = {}
    if env := worker_runtime_env():
        remote_args["runtime_env"] = env
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
            **remote_args,
        )
        ds = ds.map_batches(
            EmbedAndWrite,
            fn_constructor_kwargs={
                "loader": loader,
                "stage": stage,
                "threads": max(1, int(actor_cpus)),
                "device": where,
            },
            compute=ActorPoolStrategy(size=n_actors),
            batch_size=batch_size,
            batch_format="numpy",
            num_cpus=actor_cpus,
            num_gpus=1 if where == "cuda" else 0,
            **remote_args,
        )
        written = ds.take_all()
        for row in written:
            if row["failure"]:
                raise_failure(str(row["failure"]), device=where)
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
        "device": where,
        "parts": parts,
    }
    return embedded, info


# -- the index: IVF-PQ training and adding as Ray tasks -------------------------------------------


def _part_plan(
    n: int, kind: str, partitions: list[str] | None, params: dict[str, Any]
) -> tuple[list[str], list[np.ndarray], list[str], list[dict[str, Any]]] | None:
    """What :func:`stygig.index.build_index` builds: per part its name, rows, kind and
    parameters (``None`` when not split), from the local build's own plan
    (:func:`stygig.index.plan_parts`); the Ray test checks the artifacts match file for file."""
    if partitions is None:
        return None
    if len(partitions) != n:
        return None  # build_index says what is wrong
    return plan_parts(partitions, n, kind, params)


@dataclass
class _PQJob:
    """One IVF-PQ index to build on the cluster: its vectors, settings and submitted tasks."""

    vectors: np.ndarray
    params: dict[str, Any]
    name: str  # its file in the artifact (index.faiss, index-partN.faiss)
    trained: Any = None  # ObjectRef of train_pq's bytes
    chunks: list[Any] | None = None  # ObjectRefs of add_chunk's bytes, in row order


def _submit_pq(job: _PQJob, chunk_rows: int, tasks: dict[str, Any]) -> None:
    """Submit ``job``'s training task and its adding tasks (which wait on the training)."""
    from stygig.index_pq import default_pq_params, training_sample

    x = job.vectors
    n, dim = x.shape
    full = {**default_pq_params(n, dim), **job.params}
    full["nlist"] = min(int(full["nlist"]), n)
    job.params = full
    sample = training_sample(x, int(full["nlist"]), seed=int(full.get("seed", 0)))
    job.trained = tasks["train"].remote(sample, **full)
    job.chunks = [
        tasks["add"].remote(
            job.trained,
            np.ascontiguousarray(x[start : start + chunk_rows], np.float32),
            np.arange(start, min(n, start + chunk_rows), dtype=np.int64),
        )
        for start in range(0, n, chunk_rows)
    ]


def _collect_pq(ray: Any, job: _PQJob, folder: Path, chunk_rows: int) -> VectorIndex:
    """Merge ``job``'s chunks (fetched one at a time, in row order) and write its float16
    rows where the index's ``save`` keeps them."""
    from stygig.index_pq import PQIndex, merge_chunks, vectors_file, write_store

    trained: bytes = ray.get(job.trained)
    codes = merge_chunks(trained, (ray.get(ref) for ref in job.chunks or []))
    n, dim = job.vectors.shape
    store = folder / vectors_file(job.name)
    blocks = (job.vectors[start : start + chunk_rows] for start in range(0, n, chunk_rows))
    write_store(store, blocks, n, dim)
    return PQIndex.from_parts(trained, codes, store, job.params)


def build_index_on_ray(
    vectors: np.ndarray,
    kind: str,
    partitions: list[str] | None,
    params: dict[str, Any],
    folder: Path,
    *,
    chunk_rows: int | None = None,
    info: dict[str, Any] | None = None,
) -> VectorIndex:
    """:func:`stygig.index.build_index` (an :data:`stygig.artifact.IndexBuilder`) with every
    ``ivfpq`` index -- the whole one, or each outfit slot's part of a split one -- trained as one
    Ray task and filled as one task per ``chunk_rows`` rows (default
    :data:`stygig.index_pq.ADD_CHUNK_ROWS`); every slot's tasks are submitted before any is
    waited on, so slots train and fill side by side. Other kinds are built here, as locally.

    Same data, parameters and seed -> the local build's index, byte for byte: the same training
    sample, the same FAISS training (one thread in a one-CPU task), chunks merged in row order
    (each inverted list holds its ids in the order a single ``add`` gives) and the merge's
    unused block slots zeroed (:func:`stygig.index_pq.zero_padding`). ``info``, when given, receives what ran
    (tasks, seconds).
    """
    from stygig.index_pq import ADD_CHUNK_ROWS, PQ_KIND

    rows_per_chunk = int(chunk_rows or ADD_CHUNK_ROWS)
    if rows_per_chunk < 1:
        raise StygigError("IVF-PQ chunks need at least one row")
    plan = _part_plan(len(vectors), kind, partitions, params)
    if plan is None:
        whole = choose_kind(len(vectors)) if kind == "auto" else kind
        if whole != PQ_KIND or partitions is not None:
            return build_index(vectors, kind, partitions, "slot", **params)
        plan_jobs: list[_PQJob | VectorIndex] = [_PQJob(vectors, dict(params), "index.faiss")]
    else:
        names, rows, kinds, part_params = plan
        if PQ_KIND not in kinds:  # nothing for the cluster
            return build_index(vectors, kind, partitions, "slot", **params)
        plan_jobs = [
            _PQJob(vectors[r], p, f"index-part{i}.faiss")
            if k == PQ_KIND
            else build_index(vectors[r], k, **p)
            for i, (r, k, p) in enumerate(zip(rows, kinds, part_params, strict=True))
        ]
    jobs = [j for j in plan_jobs if isinstance(j, _PQJob)]
    ray = import_ray()
    from stygig.index_pq import add_chunk, train_pq

    tasks = {
        "train": ray.remote(num_cpus=1)(train_pq),
        "add": ray.remote(num_cpus=1)(add_chunk),
    }
    started = time.perf_counter()
    for job in jobs:
        _submit_pq(job, rows_per_chunk, tasks)
    built = [
        _collect_pq(ray, j, folder, rows_per_chunk) if isinstance(j, _PQJob) else j
        for j in plan_jobs
    ]
    if info is not None:
        info.update(
            {
                "ivfpq_indexes": len(jobs),
                "train_tasks": len(jobs),
                "add_tasks": sum(len(j.chunks or []) for j in jobs),
                "chunk_rows": rows_per_chunk,
                "seconds": time.perf_counter() - started,
            }
        )
    if plan is None:
        return built[0]
    return PartitionedIndex(names, built, rows, "slot")


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
    category_head: bool = True,
    progress: bool = True,
    actors: int | None = None,
    actor_cpus: float = 1.0,
    device: str = "auto",
    stage: str | None = None,
    keep_stage: bool = False,
    index_chunk_rows: int | None = None,
) -> BuildResult:
    """:func:`stygig.build.build_artifact` with the per-item work on the connected Ray cluster
    (see the module's docstring); the same artifact, written by the same writer.

    ``encoder`` and ``extra_files`` are what :func:`stygig.build.make_build_encoder` yielded
    (``weights`` and ``random_weights`` as given to it: actors load non-ONNX encoders by name).
    ``actors``: encoder actors (default one per GPU, else one per ``actor_cpus`` CPUs);
    ``device``: where they run (``auto``: a GPU each when the cluster has GPUs; ``cpu``;
    ``cuda``: :meth:`~stygig.distributed.cluster.ClusterResources.actor_device`);
    ``stage``: where the parts go (default ``<out>.ray-parts``), each build in a folder of its
    own (``run-<random id>/``), removed when the build ends, also by a failure or an interrupt,
    unless ``keep_stage``. An ``ivfpq`` index is trained and filled as Ray tasks too
    (:func:`build_index_on_ray`, ``index_chunk_rows`` rows per adding task). The category
    heads (``category_head``) are fitted on the driver, as locally (:func:`finish_build`).
    """
    started = time.perf_counter()
    # Where the actors run, refused (--ray-device cuda without GPUs) before anything is read.
    check_replaceable(out_dir)  # before the cluster's work, not after
    cluster = resources()
    device = cluster.actor_device(device, encoder=encoder.describe())
    taxonomy = taxonomy or Taxonomy.load()
    t0 = time.perf_counter()
    read = read_catalog(
        catalog, layout=layout, images_dir=images_dir, taxonomy=taxonomy, progress=progress
    )
    read_s = time.perf_counter() - t0
    with _run_stage(stage_location(out_dir, stage), keep=keep_stage, default=not stage) as where:
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
            device=device,
            progress=progress,
            cluster=cluster,
        )
        embed_s = time.perf_counter() - t0
        index_info: dict[str, Any] = {}

        def index_builder(
            x: np.ndarray,
            kind: str,
            partitions: list[str] | None,
            params: dict[str, Any],
            folder: Path,
        ) -> VectorIndex:
            index = build_index_on_ray(
                x, kind, partitions, params, folder, chunk_rows=index_chunk_rows, info=index_info
            )
            if index_info:  # into the manifest: write_artifact writes build_info after the index
                ray_info["index"] = dict(index_info)
            return index

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
            workers=int(ray_info["cluster"]["cpus"]),
            batch_size=batch_size,
            index_kind=index_kind,
            index_params=index_params,
            extra_files=extra_files,
            whiten=whiten,
            build_extra={"ray": ray_info},
            index_builder=index_builder,
            category_head=category_head,
            progress=progress,
        )


@contextlib.contextmanager
def _run_stage(root: str, *, keep: bool, default: bool) -> Iterator[str]:
    """This build's own folder of the stage (``run-<random id>/``): two builds given one
    --ray-stage never read each other's parts, and clearing it touches nothing else. Built,
    failed or interrupted, it holds nothing of the run afterwards unless ``keep``."""
    where = storage.join(root, f"run-{uuid.uuid4().hex[:16]}")
    try:
        yield where
    finally:
        if keep:
            log.info("this build's parts are kept in %s", where)
        else:
            remove_stage(where, default=default)


def remove_stage(where: str, *, default: bool) -> None:
    """Delete one build's stage folder ``where`` (every key under it is the build's own), and
    the default ``<out>.ray-parts`` above it when nothing else is left there."""
    for key in storage.list_keys(where):
        storage.delete(key)
    if not storage.is_remote(where):
        folders = [Path(where), *([Path(where).parent] if default else [])]
        for folder in folders:
            with contextlib.suppress(OSError):  # not empty (another build's run), or gone
                os.rmdir(folder)

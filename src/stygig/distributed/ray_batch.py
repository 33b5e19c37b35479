"""``stygig batch --engine ray``: the batch run's groups answered by a Ray actor pool.

::

    inputs (driver: stygig.batch.iter_inputs, the resume check, the sink)
      -> map_batches(Answer)    an actor pool: one artifact + encoder load per actor (a GPU each
                                when the cluster has them); per group: prepare (decode, colour)
                                -> one encoder call -> answer, exactly stygig.batch's group step
      -> records, in input order, written by the driver to the same sinks (JSONL file, Parquet,
         s3:// parts) with the same resume record

Inputs that already failed to parse (a bad manifest line, a rejected catalogue row) never go to
the cluster: their error records are merged in by index. Ray retries a failed actor's groups;
the dataset yields each group's records once, so the output never holds an index twice, and a
rerun resumes from what the sink already holds, as locally. The driver reads the inputs a window
at a time (:data:`WINDOW_INPUTS` inputs or :data:`WINDOW_BYTES` of them, a dataset each), so its
memory does not grow with the manifest: 300 lines of 1 MB peaked at 1,133 MB when every input
was held at once, now at 543 MB, and 600 such lines at 546 MB (the driver with Ray alone: 276 MB). The artifact folder must be
readable at the same path on every node (a shared file system); ``s3://`` photos are read by the
actors, at the driver's S3 endpoint and region (:func:`~stygig.distributed.cluster.worker_runtime_env`).
"""

from __future__ import annotations

import heapq
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from stygig.artifact import Artifact
from stygig.batch import (
    BatchInput,
    BatchSummary,
    Record,
    checked_options,
    input_record,
    prepare_input,
    recommend_group,
    start_batch,
)
from stygig.catalog.changelog import ChangeLog
from stygig.distributed.cluster import (
    device_refusal,
    import_ray,
    raise_failure,
    resources,
    worker_failure,
    worker_runtime_env,
)
from stygig.engine import Recommender
from stygig.errors import BatchError, StygigError
from stygig.living import replay
from stygig.serving.catalog_command import apply_answer_change_log

__all__ = ["WINDOW_BYTES", "WINDOW_INPUTS", "Answer", "run_batch_ray"]

#: The driver's window of inputs: at most this many, or this many bytes of them, are held and
#: sent to the cluster at once (each window a dataset of its own; the actors load the artifact
#: again per window, a few seconds against the window's minutes of work).
WINDOW_INPUTS = 20_000
WINDOW_BYTES = 16 << 20


def _to_row(inp: BatchInput) -> str:
    return json.dumps(
        {
            "index": inp.index,
            "key": inp.key,
            "source": inp.source,
            "images": list(inp.images),
            "item_ids": list(inp.item_ids),
            "options": inp.options,
        }
    )


def _windows(todo: Iterator[BatchInput]) -> Iterator[tuple[list[str], list[Record]]]:
    """The inputs to do, a window at a time (:data:`WINDOW_INPUTS` inputs or
    :data:`WINDOW_BYTES` of them): the inputs to answer, as rows, and the records of those
    that failed before any work (a bad manifest line, a rejected catalogue row)."""
    work: list[str] = []
    failed: list[Record] = []
    size = 0
    for inp in todo:
        if inp.error is not None:
            failed.append(input_record(inp, inp.error))
        else:
            work.append(_to_row(inp))
            size += len(work[-1])
        if len(work) + len(failed) >= WINDOW_INPUTS or size >= WINDOW_BYTES:
            yield work, failed
            work, failed, size = [], [], 0
    if work or failed:
        yield work, failed


def _from_row(text: str) -> BatchInput:
    row = json.loads(text)
    return BatchInput(
        int(row["index"]),
        str(row["key"]),
        str(row["source"]),
        tuple(row["images"]),
        tuple(row["item_ids"]),
        dict(row["options"]),
    )


class Answer:
    """A Ray Data actor: loads the artifact and its encoder once, then answers each group of
    inputs with :mod:`stygig.batch`'s own steps (prepare, one encoder call, answer). An
    artifact it cannot load (not at that path on its node) comes back as a ``failure`` column
    (:func:`~stygig.distributed.cluster.worker_failure`), for the driver to raise."""

    def __init__(
        self,
        artifact: str,
        options: dict[str, Any],
        verify: bool,
        device: str,
        change_log: str | None = None,
        sequence: int = 0,
    ) -> None:
        from stygig.engine import load_artifact_encoder

        self.failure, self.options = "", options
        try:
            art = Artifact.load(artifact, verify=verify)
        except StygigError as e:
            self.failure = worker_failure(e)
            return
        try:
            self.recommender = Recommender(art, encoder=load_artifact_encoder(art, device=device))
        except StygigError as e:
            self.failure = worker_failure(e, encoder_load=device_refusal(e))
            return
        if change_log is not None:  # the driver's catalogue: its log up to its record, no further
            try:
                replay(self.recommender, ChangeLog(change_log), until=sequence)
                if self.recommender.snapshot.sequence != sequence:
                    raise BatchError(
                        f"the change log holds {self.recommender.snapshot.sequence} of the "
                        f"{sequence} records the driver applied on this node"
                    )
            except StygigError as e:
                self.failure = worker_failure(e)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.failure:
            return {"failure": np.array([self.failure] * len(batch["input"]))}
        inputs = [_from_row(str(t)) for t in batch["input"]]
        prepared = [prepare_input(self.recommender, inp, self.options) for inp in inputs]
        records = [f.result() for f in recommend_group(self.recommender, inputs, prepared)]
        return {
            "index": np.array([r.index for r in records], np.int64),
            "line": np.array([r.line for r in records], object),
            "error": np.array([r.error or "" for r in records], object),
        }


def run_batch_ray(
    artifact: str | Path,
    src: str,
    dst: str,
    *,
    options: dict[str, Any] | None = None,
    kind: str = "auto",
    by_photo: bool = False,
    batch_size: int = 32,
    part_size: int = 1000,
    overwrite: bool = False,
    verify: bool = True,
    progress: bool = True,
    actors: int | None = None,
    actor_cpus: float = 1.0,
    device: str = "auto",
    change_log: str | None = None,
) -> BatchSummary:
    """:func:`stygig.batch.run_batch` with the groups answered on the connected Ray cluster;
    the same inputs, records, sinks and resume rules. ``device``: where the answering actors
    run (``auto``: a GPU each when the cluster has GPUs and the artifact's encoder can use one;
    ``cpu``; ``cuda``). ``change_log``: answer with its changes applied, on the driver (which
    lists the inputs) and on every actor alike, up to the record the driver reached."""
    ray = import_ray()
    from ray.data import ActorPoolStrategy, DataContext

    options = checked_options(options)
    recommender = Recommender(Artifact.load(artifact, verify=verify))
    if note := apply_answer_change_log(recommender, artifact, change_log):
        print(note, file=sys.stderr)
    # Where the actors run, refused (--ray-device cuda without GPUs) before the run starts.
    cluster = resources()
    where = cluster.actor_device(device, encoder=recommender.artifact.manifest["encoder"])
    # run_batch's own start and run record: a local run and a Ray run resume each other.
    tally = start_batch(
        recommender,
        src,
        dst,
        options=options,
        kind=kind,
        by_photo=by_photo,
        part_size=part_size,
        overwrite=overwrite,
    )
    if isinstance(tally, BatchSummary):
        return tally  # this same run already completed
    n_actors = actors or cluster.default_actors(actor_cpus, where)
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = progress
    ctx.print_on_execution_start = progress
    ctx.execution_options.preserve_order = True  # records come back in input order

    remote_args: dict[str, Any] = {}
    if env := worker_runtime_env():  # the actors read s3:// photos at the driver's endpoint
        remote_args["runtime_env"] = env

    def answered(work: list[str]) -> Iterator[Record]:
        if not work:
            return
        blocks = max(1, -(-len(work) // batch_size))
        ds = ray.data.from_items([{"input": w} for w in work], override_num_blocks=blocks)
        ds = ds.map_batches(
            Answer,
            fn_constructor_kwargs={
                "artifact": str(Path(artifact).resolve()),
                "options": options,
                "verify": False,  # checked once, here
                "device": where,
                "change_log": change_log,
                "sequence": recommender.snapshot.sequence,
            },
            # no more actors than the window has groups (a last, small window: one or two)
            compute=ActorPoolStrategy(size=min(n_actors, blocks)),
            batch_size=batch_size,
            batch_format="numpy",
            num_cpus=actor_cpus,
            num_gpus=1 if where == "cuda" else 0,
            **remote_args,
        )
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            if "failure" in batch:
                raise_failure(str(batch["failure"][0]), device=where)
            for index, line, error in zip(
                batch["index"], batch["line"], batch["error"], strict=True
            ):
                yield Record(int(index), str(line), str(error) or None)

    complete = False
    group: list[Record] = []
    try:
        for work, failed in _windows(tally.todo()):
            for record in heapq.merge(answered(work), failed, key=lambda r: r.index):
                group.append(record)
                if len(group) >= batch_size:
                    tally.write(group)
                    group = []
        if group:
            tally.write(group)
        complete = True
    finally:
        tally.sink.close(complete)
    return tally.finish(complete)

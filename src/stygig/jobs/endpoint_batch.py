"""``stygig batch --endpoint-name E``: a batch run through a deployed asynchronous endpoint.

The same inputs, output formats, per-input error records, progress bar and resume as the
in-process run (:mod:`stygig.batch`), with the recommender replaced by SageMaker: each input
is uploaded under ``--input-prefix``, submitted with ``InvokeEndpointAsync``, and its result
(or failure) read back from S3. At most ``concurrency`` inputs are in flight at once, which is
what bounds the endpoint's queue (and its autoscaling backlog) for this run.

Inputs become requests as the server takes them: a photo alone is sent as it is (its own
content type; options as custom attributes; one already in S3 is not copied, the endpoint reads
it where it is); anything else (catalogue items by id, several
photos, options that are not plain values) as a JSON request with the photos in base64.

Resume: the output says which inputs are done, as in-process; an input submitted but not yet
written when a run stopped has a receipt (``<input prefix>/receipts/<run>-<index>.json``), so a
rerun follows it to its result instead of submitting it again. ``<run>`` is a hash of the run's
arguments, and the sidecar refuses a rerun with other arguments, as in-process.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import urllib.parse
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from stygig import storage
from stygig.batch import (
    BatchInput,
    BatchSummary,
    Record,
    RunLock,
    _artifact_inputs,
    _catalog_inputs,
    _manifest_inputs,
    _photo_inputs,
    begin_run,
    check_output_name,
    checked_options,
    input_kind,
    input_record,
    progress_bar,
    run_record,
)
from stygig.engine import Options
from stygig.errors import BatchError, InvalidOptionsError, StygigError
from stygig.images import DEFAULT_LIMITS
from stygig.jobs.sagemaker_async import (
    AsyncEndpoint,
    AsyncInvocation,
    content_type_for,
    sniff_content_type,
)

__all__ = ["endpoint_inputs", "request_for", "run_endpoint_batch"]

_SUFFIX = {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp"}


def endpoint_inputs(
    src: str, *, kind: str = "auto", by_photo: bool = False, artifact: str | None = None
) -> tuple[Iterator[BatchInput], int | None]:
    """The inputs of ``src`` as the in-process run lists them. Without a local recommender,
    ``artifact`` (a local copy of the deployed one) says which catalogue rows go by item id
    and lists the items of ``--all-items``; without it, catalogue rows go by photo."""
    kind = input_kind(src) if kind == "auto" else kind
    if kind == "artifact":
        ids = _artifact_ids(src)
        return _artifact_inputs(ids), len(ids)
    if kind == "photos":
        return _photo_inputs(src), None
    if kind == "catalog":
        known = set(_artifact_ids(artifact)) if artifact else set()
        return _catalog_inputs(src, known.__contains__, by_photo), None
    if kind == "manifest":
        return _manifest_inputs(src), None
    raise BatchError(f"unknown input kind {kind!r}")


def _artifact_ids(path: str) -> list[str]:
    from stygig.artifact import Artifact

    return [item.id for item in Artifact.load(path, verify=False).items]


def _plain(options: dict[str, Any]) -> bool:
    return all(
        isinstance(v, str | int | float) and not isinstance(v, bool) for v in options.values()
    )


def _photo_bytes(source: str) -> bytes:
    if storage.is_remote(source) or source.startswith("file://"):
        return storage.read_bytes(source, max_bytes=DEFAULT_LIMITS.max_bytes)
    return storage.read_bytes(Path(source), max_bytes=DEFAULT_LIMITS.max_bytes)


def request_for(inp: BatchInput, options: dict[str, Any]) -> tuple[bytes, str, str | None]:
    """``(body, content type, custom attributes)`` that ask the endpoint for ``inp``."""
    merged = {**options, **inp.options}
    Options.from_dict(merged)  # the server would refuse them: refuse before uploading
    if len(inp.images) == 1 and not inp.item_ids and _plain(merged):
        body = _photo_bytes(inp.images[0])
        kind = sniff_content_type(body[:16])
        if kind is not None and kind != "application/json":
            attrs = urllib.parse.urlencode(sorted((k, str(v)) for k, v in merged.items()))
            return body, kind, attrs or None
    request: dict[str, Any] = dict(merged)
    if inp.images:
        request["images_b64"] = [
            base64.b64encode(_photo_bytes(source)).decode("ascii") for source in inp.images
        ]
    if inp.item_ids:
        request["item_ids"] = list(inp.item_ids)
    return json.dumps(request).encode(), "application/json", None


class _Run:
    """One input's trip through the endpoint, in a pool thread."""

    def __init__(
        self,
        endpoint: AsyncEndpoint,
        run_key: str,
        options: dict[str, Any],
        earlier: dict[str, AsyncInvocation],
        *,
        time_limit_s: float | None,
        timeout_s: float,
        interval_s: float,
        max_interval_s: float,
        stop: threading.Event,
    ) -> None:
        self.endpoint = endpoint
        self.run_key = run_key
        self.options = options
        self.earlier = earlier
        self.time_limit_s = time_limit_s
        self.timeout_s = timeout_s
        self.interval_s = interval_s
        self.max_interval_s = max_interval_s
        self.stop = stop

    def job_id(self, inp: BatchInput) -> str:
        return f"{self.run_key}-{inp.index:09d}"

    def _stored(self, inp: BatchInput) -> AsyncInvocation | None:
        """A photo already in S3, with plain options: invoked where it is, not copied."""
        merged = {**self.options, **inp.options}
        if len(inp.images) != 1 or inp.item_ids or not _plain(merged):
            return None
        source = inp.images[0]
        kind = content_type_for(source) if storage.is_remote(source) else None
        if kind is None or kind == "application/json":
            return None
        try:
            Options.from_dict(merged)
        except StygigError:
            return None  # request_for says so, in this input's record
        attrs = urllib.parse.urlencode(sorted((k, str(v)) for k, v in merged.items()))
        return self.endpoint.invoke(
            source,
            kind,
            inference_id=self.job_id(inp),
            custom_attributes=attrs or None,
            time_limit_s=self.time_limit_s,
        )

    def __call__(self, inp: BatchInput) -> Record:
        if self.stop.is_set():
            raise _Stopped
        if inp.error is not None:
            return input_record(inp, inp.error)
        job_id = self.job_id(inp)
        inv = self.earlier.get(job_id) or self._stored(inp)
        if inv is None:
            try:
                body, kind, attrs = request_for(inp, self.options)
            except StygigError as e:  # this input's own problem: its record says so
                return input_record(inp, e)
            inv = self.endpoint.submit(
                body,
                kind,
                suffix=_SUFFIX.get(kind, ".json"),
                inference_id=job_id,
                custom_attributes=attrs,
                time_limit_s=self.time_limit_s,
            )
        outcome = self.endpoint.wait(
            [inv],
            timeout_s=self.timeout_s,
            interval_s=self.interval_s,
            max_interval_s=self.max_interval_s,
            stop=self.stop,
        )[inv.inference_id]
        if outcome.status == "pending":
            if self.stop.is_set():
                raise _Stopped
            error = StygigError(
                f"no result after {self.timeout_s:g} s (it may still arrive at "
                f"{inv.output_location})",
                code="endpoint_timeout",
            )
            return input_record(inp, error)
        if outcome.status == "failed":
            assert outcome.error is not None
            return input_record(inp, outcome.error)
        assert outcome.result is not None
        try:
            json.loads(outcome.result)
        except (json.JSONDecodeError, UnicodeDecodeError):
            error = StygigError(
                f"the endpoint's answer is not JSON (see {inv.output_location})",
                code="endpoint_error",
            )
            return input_record(inp, error)
        return input_record(inp, outcome.result)


class _Stopped(Exception):
    """The run is stopping: leave this input for the next run."""


def run_endpoint_batch(
    endpoint: AsyncEndpoint,
    src: str,
    dst: str,
    *,
    options: dict[str, Any] | None = None,
    kind: str = "auto",
    by_photo: bool = False,
    artifact: str | None = None,
    concurrency: int = 4,
    time_limit_s: float | None = None,
    timeout_s: float = 3600.0,
    interval_s: float = 1.0,
    max_interval_s: float = 10.0,
    part_size: int = 1000,
    overwrite: bool = False,
    progress: bool = True,
) -> BatchSummary:
    """Recommend for every input of ``src`` through ``endpoint`` into ``dst``, continuing an
    interrupted run; the summary as :func:`stygig.batch.run_batch` gives it."""
    if concurrency < 1:
        raise InvalidOptionsError("--concurrency must be >= 1")
    options = checked_options(options)
    run = run_record(
        src,
        dst,
        kind=kind,
        by_photo=by_photo,
        options=options,
        part_size=part_size,
        endpoint=endpoint.endpoint_name,
        artifact=artifact,
    )
    digest = hashlib.sha256(json.dumps([run, dst], sort_keys=True).encode()).hexdigest()
    run_key = f"batch-{digest[:12]}"
    # The output's lock first: a run in progress is refused before --overwrite removes
    # anything of it (its receipts, its output).
    check_output_name(dst)
    lock = RunLock.take(dst)
    try:
        if overwrite:
            for key in storage.list_keys(
                storage.join(endpoint.require_prefix(), f"receipts/{run_key}-"), folder=False
            ):
                storage.delete(key)
        tally = begin_run(
            dst,
            run,
            overwrite=overwrite,
            part_size=part_size,
            inputs=lambda: endpoint_inputs(src, kind=kind, by_photo=by_photo, artifact=artifact),
            lock=lock,
        )
    except BaseException:
        lock.release()
        raise
    if isinstance(tally, BatchSummary):
        return tally  # this same run already completed
    receipts = endpoint.receipts(f"{run_key}-")
    stop = threading.Event()
    trip = _Run(
        endpoint,
        run_key,
        options,
        receipts,
        time_limit_s=time_limit_s,
        timeout_s=timeout_s,
        interval_s=interval_s,
        max_interval_s=max_interval_s,
        stop=stop,
    )
    bar = progress_bar(tally.total, len(tally.done), progress)
    complete = False
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="endpoint-batch")
    window: deque[Future[Record]] = deque()

    def write_oldest() -> None:
        tally.write([window.popleft().result()])
        bar.update(1)

    try:
        for inp in tally.todo():
            window.append(pool.submit(trip, inp))
            # Records are written in input order; a few beyond the pool keep it busy while
            # the oldest is awaited, and bound the memory whatever the input size.
            while len(window) > 2 * concurrency:
                write_oldest()
        while window:
            write_oldest()
        complete = True
    finally:
        stop.set()  # a failure or an interrupt: the waits in flight end, receipts stay
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
        tally.sink.close(complete)
    return tally.finish(complete)

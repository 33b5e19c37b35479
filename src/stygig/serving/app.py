"""The HTTP app: SageMaker contract, the friendly REST API, metrics, and the model service.

Routes::

    GET  /ping                            SageMaker health: 200 only when loaded and warm
    POST /invocations                     SageMaker inference (image bytes, JSON)
    POST /v1/recommend                    multipart upload, JSON or image bytes
    POST /v1/outfits/score                how well a set of catalogue items goes together
    GET  /v1/items/{item_id}              one catalogue item
    GET  /v1/items/{item_id}/recommendations
    POST /v1/catalog/changes  GET /v1/catalog/version  POST /v1/catalog/reload
                                          the living catalogue (:mod:`.catalog_changes`)
    GET  /v1/examples  /v1/examples/{name}
                                          the operator's example photos (the page's one-click
                                          first tries; :mod:`.catalog_api`)
    GET  /healthz  /readyz  /metrics  /docs

The model is loaded and warmed in the background at start-up (``/healthz`` answers at once,
``/ping`` and ``/readyz`` turn 200 when warm). Photos are decoded in a thread pool, encoded by
the :class:`~stygig.serving.batching.MicroBatcher` in its own thread, then searched and scored
in the pool again: the event loop only moves bytes. The exception is a request alone in the
server with a small baseline JPEG (or no photo), answered on the loop itself (:func:`_inline`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import io
import ipaddress
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stygig import __version__
from stygig.answer import (
    CatalogItem,
    Recommendation,
    answer_schema,
    catalog_item_schema,
    catalog_page_schema,
    outfit_score_schema,
)
from stygig.catalog.changelog import ChangeLog, ChangeLogGapError
from stygig.engine import Options, Query, Recommender, load_artifact_encoder
from stygig.errors import (
    ForbiddenError,
    InputError,
    InvalidOptionsError,
    OverloadedError,
    RequestTimeoutError,
    StorageError,
    StygigError,
    UnauthorizedError,
    UnsupportedMediaError,
)
from stygig.images import read_header
from stygig.index import release_mapped_rows, restore_mapped_rows, warm_index
from stygig.living import LiveCatalog
from stygig.locations import InputLocations
from stygig.recommendation import (
    MAX_QUERY_PARTS,
    OutfitRequest,
    check_json_values,
    check_part_count,
    option_parameters,
    options_schema,
    outfit_request_schema,
    split_text_list,
    string_list,
)
from stygig.response import item_view
from stygig.serving import requests as rq
from stygig.serving.async_api import AsyncConfig, AsyncJobs
from stygig.serving.batching import BatcherConfig, MicroBatcher
from stygig.serving.bodies import (
    ASYNC_ANSWERS,
    SERVER_ANSWERS,
    ArtifactBuild,
    BatchingSettings,
    ExecutionParameters,
    Health,
    Ping,
    Readiness,
    component_schemas,
    json_answer,
)
from stygig.serving.catalog_api import image_url, make_catalog_router
from stygig.serving.catalog_changes import make_changes_router, read_pointer, watch_and_signal
from stygig.serving.catalog_command import CatalogSettings
from stygig.serving.logging import ACCESS_LOGGER, request_id
from stygig.serving.metrics import CONTENT_TYPE, ServerMetrics, method_label
from stygig.serving.protocol import CLOSED_BY_SERVER, CUT_OFF, HttpVersionError
from stygig.serving.responses import (
    ERROR_RESPONSES,
    JSON,
    error_response,
    get_and_head,
    json_response,
)
from stygig.threads import limit_this_thread

__all__ = ["ModelService", "ServerConfig", "create_app"]

log = logging.getLogger("stygig.serving")
access_log = logging.getLogger(ACCESS_LOGGER)
R = TypeVar("R")


@dataclass(frozen=True)
class ServerConfig:
    """Everything the app needs to know; the CLI fills it from flags and the environment."""

    artifact: Path
    batching: BatcherConfig = field(default_factory=BatcherConfig)
    threads: int = field(default_factory=lambda: max(2, min(8, os.cpu_count() or 2)))
    max_body_bytes: int = rq.MAX_BODY_BYTES
    request_timeout_s: float = 50.0  # SageMaker gives up at 60 s
    warmup_rounds: int = 3
    verify: bool = True
    device: str = "cpu"  # "cuda": the encoder on a GPU (the GPU container sets STYGIG_DEVICE)
    async_jobs: AsyncConfig | None = None  # /async/* routes and their worker, when configured
    auth_token: str | None = None  # bearer token required on every route but PUBLIC_PATHS
    docs: bool = False  # /docs (Swagger UI loads its scripts from a CDN: off unless asked)
    body_timeout_s: float = 60.0  # a request body must arrive within this
    body_idle_s: float = 15.0  # ... with no pause between two chunks longer than this
    max_body_bytes_in_flight: int = 256 * 1024 * 1024  # all bodies being read or held at once
    catalog: CatalogSettings | None = None  # change log, following, hot-reload pointer
    # A folder of example photos the page offers as one-click first tries (``serve --examples``,
    # else $STYGIG_EXAMPLES); served by name from a list made at start, never a client's path.
    examples: Path | None = field(default_factory=lambda: _examples_from_env())
    # The names a request's Host may give (None: any). `stygig serve` bound to loopback
    # answers only requests addressed to this machine (DNS rebinding: see _Boundary).
    allowed_hosts: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if self.auth_token is not None and len(self.auth_token) < MIN_TOKEN_CHARS:
            raise InvalidOptionsError(
                f"the auth token must be at least {MIN_TOKEN_CHARS} characters long"
            )
        if self.max_body_bytes_in_flight < self.max_body_bytes:
            raise InvalidOptionsError("the in-flight body budget must hold one largest body")


def _examples_from_env() -> Path | None:
    value = os.environ.get("STYGIG_EXAMPLES", "")
    return Path(value) if value else None


#: The names a loopback-bound server answers to, beside its bind address and --allowed-host.
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: A request header asking for an answer from a catalogue that holds a change-log record
#: (:meth:`_Boundary._caught_up`), and how long a server catches up for it.
MIN_SEQUENCE_HEADER = "x-stygig-min-sequence"
MIN_SEQUENCE_WAIT_S = 2.0
MIN_SEQUENCE_WAITERS = 16


class CatalogBehindError(OverloadedError):
    """The catalogue does not hold the change-log record a request asked for (503; 409 where
    it never will)."""

    code = "catalog_behind"

    def __init__(self, message: str, *, http_status: int = 503) -> None:
        super().__init__(message)
        self.http_status = http_status


#: The routes whose POSTs change the catalogue or the jobs (see :meth:`_Boundary._refuse`).
_WRITE_PREFIXES = ("/v1/catalog/", "/async/")
#: The longest wait before the watch tries again a version it could not load or verify (the
#: wait doubles from the watch interval: an upload still being copied is taken once whole).
RELOAD_RETRY_MAX_S = 300.0
#: Answered without the bearer token: health checks for load balancers and SageMaker, and the
#: page's own files (they hold no catalogue data; the page asks for the token when it needs it).
PUBLIC_PATHS = frozenset({"/ping", "/execution-parameters", "/healthz", "/", "/favicon.ico"})
PUBLIC_PREFIXES = ("/static/",)
MIN_TOKEN_CHARS = 16


def _warmup_photo(size: int = 256) -> bytes:
    from PIL import Image

    arr = np.full((size, size, 3), 245, np.uint8)
    arr[size // 5 : size * 4 // 5, size // 4 : size * 3 // 4] = (40, 60, 150)
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, format="JPEG", quality=90)
    return buf.getvalue()


class ReloadRefusedError(InputError):
    """A new artifact version was not taken: the server stays on the one it serves."""

    http_status = 409
    code = "reload_refused"
    lasting = False  # True: the same version would be refused again (another encoder)


#: A photo for the micro-batcher: the recommender that answers it and its prepared tensor.
_Photo = tuple[Recommender, np.ndarray]


class ModelService:
    """Owns the recommender, the batcher and the thread pool; answers parsed requests."""

    def __init__(self, config: ServerConfig, metrics: ServerMetrics) -> None:
        self.config = config
        self.metrics = metrics
        self.recommender: Recommender | None = None
        self.ready = False
        self.load_seconds: float | None = None
        self.warmup_seconds: float | None = None
        self.pool = ThreadPoolExecutor(
            config.threads, thread_name_prefix="stygig-work", initializer=limit_this_thread
        )
        self.preparing = 0  # requests decoding photos now: the batcher's company on its way
        self.batcher: MicroBatcher[_Photo] = MicroBatcher(
            self._embed,
            config.batching,
            on_batch=metrics.observe_batch,
            expecting=lambda: self.preparing,
        )
        self.in_flight = 0
        self.requests = 0  # HTTP requests inside the app now, any route (_Boundary counts)
        self.live: LiveCatalog | None = None  # the catalogue's changes, when configured
        self.artifact_path = config.artifact  # the version served now (hot reload moves it)
        self._reloading = asyncio.Lock()
        # The last version a reload refused for good (another encoder; its folder and
        # version): the watch does not load it again every interval, only a new version or an
        # explicit reload does. Other refusals (files still arriving) are retried.
        self._refused: tuple[Path, str] | None = None
        # The last unverifiable version the watch refused: (path, version, when it is tried
        # again, the wait before that).
        self._retry: tuple[Path, str, float, float] | None = None
        # The gauges read the live state when scraped: nothing to keep in step by hand.
        metrics.ready.set_function(lambda: float(self.ready))
        metrics.in_flight.set_function(lambda: float(self.in_flight))
        metrics.queue_depth.set_function(lambda: float(self.batcher.depth))

    @staticmethod
    def _embed(photos: list[_Photo]) -> np.ndarray:
        """Each photo by the recommender whose catalogue answers it: a batch that straddles a
        reload holds both versions' photos, and each version's vectors come from its own
        encoder and whitening (one call per version)."""
        groups: dict[int, tuple[Recommender, list[int]]] = {}
        for n, (rec, _) in enumerate(photos):
            groups.setdefault(id(rec), (rec, []))[1].append(n)
        if len(groups) == 1:
            return photos[0][0].embed([t for _, t in photos])
        parts = [(at, rec.embed([photos[n][1] for n in at])) for rec, at in groups.values()]
        out = np.empty((len(photos), parts[0][1].shape[1]), parts[0][1].dtype)
        for at, vectors in parts:
            out[at] = vectors
        return out

    async def run(self, fn: Callable[..., R], *args: Any) -> R:
        """``fn(*args)`` in the worker pool; a pool that cannot start its thread (the process
        at its memory or thread limit) is a 503 to retry, not a 500 (review, s38)."""
        try:
            future = asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)
        except RuntimeError as e:
            if "can't start new thread" not in str(e):
                raise
            raise OverloadedError("the server cannot take more work right now; retry") from e
        try:
            return await future
        finally:
            # A failure's traceback holds this frame: kept, `future` (holding the failure)
            # would make a cycle that keeps the failed job's frames, its request body and
            # decoded image, until a rare full garbage collection (review, session 40).
            del future

    async def start(self) -> None:
        """Load the artifact, start the batcher, warm every path, then report ready."""
        t0 = time.perf_counter()
        path, given = await self.run(self._start_path), Path(self.config.artifact)
        try:
            self.recommender = await self.run(_load, path, self.config.verify, self.config.device)
        except StygigError as e:
            if path == given:
                raise
            # The watched pointer's version cannot be loaded or verified: the running replicas
            # refuse it and go on serving, so a starting one must not die on it (review,
            # session 49: it crash-looped); the watch tries it again at its own pace.
            log.warning(
                "the watched pointer's artifact cannot be loaded (%s): starting on --artifact",
                e.code,
            )
            self.recommender = await self.run(_load, given, self.config.verify, self.config.device)
        self.live = await self.run(self._living, self.recommender)
        self.load_seconds = time.perf_counter() - t0
        self.metrics.model_load.set(self.load_seconds)
        await self.batcher.start()
        t1 = time.perf_counter()
        await self._warm()
        self.warmup_seconds = time.perf_counter() - t1
        self.metrics.warmup.set(self.warmup_seconds)
        self._follow(self.live)
        self.ready = True
        log.info(
            "model ready",
            extra={
                "fields": {
                    "event": "ready",
                    "artifact": str(self.config.artifact),
                    "encoder": self.recommender.encoder.name,
                    "items": len(self.recommender.artifact.positions),
                    "load_s": round(self.load_seconds, 3),
                    "warmup_s": round(self.warmup_seconds, 3),
                }
            },
        )

    async def _warm(self) -> None:
        """Bring the index's on-disk rows into memory, then run every path a real request
        takes: a lone photo (the whole pipeline on the event loop, :func:`_inline`), a full
        batch through the micro-batcher (its own encoder thread, whose first use would
        otherwise land on the first concurrent request) and an answer in the pool, and an item
        query."""
        assert self.recommender is not None
        await self.run(warm_index, self.recommender.artifact.index)
        photo = _warmup_photo()
        # A live item: the artifact's first may have been removed by a logged change (it was
        # taken, and a server with such a change log could not start again).
        live_id = next(iter(self.recommender.artifact.positions), None)
        for _ in range(self.config.warmup_rounds):
            await self.answer(rq.ParsedRequest(Query(images=(photo,)), Options()))
        n = self.config.batching.max_batch
        rec = self.recommender
        prepared = await self.run(rec.prepare, Query(images=(photo,)))
        batch = await self.batcher.submit([(rec, t) for t in prepared.tensors * n])  # full shape
        await self.run(rec.answer, prepared, batch.vectors[:1])  # an answer in the pool
        if live_id is not None:  # every item removed: no item query to warm
            await self.answer(rq.ParsedRequest(Query(item_ids=(live_id,)), Options()))

    def _start_path(self) -> Path:
        """The artifact to start on: the one the watched pointer names (a restarted or added
        replica must not serve the version it was first given, with the log replayed on an
        ancestor, until its first watch tick), else ``--artifact``."""
        from stygig.artifact import read_manifest

        settings = self.config.catalog
        if settings is None or not settings.watch:
            return Path(self.config.artifact)
        try:
            pointed = read_pointer(settings.watch)
            read_manifest(pointed)
        except StygigError as e:
            log.warning(
                "the watched pointer names no readable artifact (%s): starting on --artifact",
                e.code,
            )
            return Path(self.config.artifact)
        return pointed

    def _living(self, rec: Recommender) -> LiveCatalog | None:
        """The recommender's live catalogue, caught up with the change log (a restart
        replays every acknowledged change here, before the server reports ready)."""
        settings = self.config.catalog
        if settings is None or not settings.change_log:
            return None
        live = LiveCatalog(
            rec,
            ChangeLog(settings.change_log),
            load=InputLocations(settings.photo_prefixes, flag="--catalog-photos").read,
        )
        live.check_no_gap()  # caught up first
        return live

    def _follow(self, live: LiveCatalog | None) -> None:
        settings = self.config.catalog
        if live is not None and settings is not None and settings.follow_interval_s:
            live.follow(settings.follow_interval_s)

    async def reload(self, *, watched: bool = False) -> bool:
        """Switch to the artifact version the watched pointer (else the configured folder)
        holds, if it is new: load and verify it, replay the change log on it, warm it, then
        swap. Requests in flight finish on the version they started with; none fails. An
        unverifiable version is refused (:class:`ReloadRefusedError`), the old one kept.
        ``watched`` (the watch's own polling): a version refused before is not tried again."""
        from stygig.artifact import read_manifest
        from stygig.snapshot import artifact_version

        settings = self.config.catalog
        async with self._reloading:
            current = self.require()
            try:
                path = (
                    read_pointer(settings.watch)
                    if settings is not None and settings.watch
                    else self.config.artifact
                )
                manifest = await self.run(read_manifest, path)
            except StygigError as e:
                raise ReloadRefusedError(
                    f"the new artifact version cannot be read ({e.code}); still serving "
                    f"{current.snapshot.version}"
                ) from None
            version = artifact_version(manifest)
            if version == current.snapshot.version:
                return False
            if watched and self._refused == (path, version):
                return False  # refused before (logged then); tried again on SIGHUP or POST
            # This version's last refusal, if it is the one the watch is waiting out.
            retry = self._retry if self._retry and self._retry[:2] == (path, version) else None
            if watched and retry is not None and time.monotonic() < retry[2]:
                return False  # an unverifiable version: tried again at its own pace
            # Until the swap the old version answers with its rows read by pread, so its
            # mapped rows (up to 4.4 GB at 10M items) never share the process with the new
            # version's codes: a reload's peak is the two versions' codes, not that plus the
            # old rows (docs/scale.md).
            old_index = current.artifact.index
            released = release_mapped_rows(old_index)  # a few attributes: no pool hop
            try:
                try:
                    rec = await self._load_new(path, current)
                except ReloadRefusedError as e:
                    if e.lasting:  # another encoder: loading it again cannot help
                        self._refused = (path, version)
                    elif watched:
                        # It may still be being copied: tried again, but every tick re-read
                        # and re-hashed every file of it (review, session 49), so the wait
                        # doubles from the watch interval up to RELOAD_RETRY_MAX_S.
                        last = retry[3] if retry is not None else 0.0
                        interval = settings.watch_interval_s if settings is not None else 1.0
                        wait = min(max(2 * last, interval), RELOAD_RETRY_MAX_S)
                        self._retry = (path, version, time.monotonic() + wait, wait)
                    raise
                try:
                    live = await self.run(self._living, rec)
                except StorageError as e:  # a gap in the log, or the log out of reach: the
                    # old version goes on serving (a gap was a 500: review, session 52)
                    why = e.message if isinstance(e, ChangeLogGapError) else e.code
                    raise ReloadRefusedError(
                        f"the change log cannot be replayed on the new version ({why}); "
                        f"still serving {current.snapshot.version}"
                    ) from None
                # The page cache only: the new rows map as requests read them.
                await self.run(functools.partial(warm_index, rec.artifact.index, map_rows=False))
                await self.run(rec.recommend, Query(images=(_warmup_photo(),)))
            except BaseException:
                if released:  # still serving the old version: its rows mapped again, here
                    restore_mapped_rows(old_index)  # (cheap; also when cancelled or stopping)
                raise
            await self.run(self._swap, rec, live)
            self.artifact_path = path
            log.info(
                "artifact reloaded",
                extra={"fields": {"event": "reload", "version": rec.snapshot.catalog_version}},
            )
            return True

    async def _load_new(self, path: Path, current: Recommender) -> Recommender:
        """The new version, verified, with the serving encoder's name and width."""
        try:
            rec = await self.run(_load, path, True, self.config.device)
        except StygigError as e:
            raise ReloadRefusedError(
                f"the new artifact version cannot be verified ({e.code}); still serving "
                f"{current.snapshot.version}"
            ) from None
        if (rec.encoder.name, rec.encoder.dim) != (current.encoder.name, current.encoder.dim):
            refused = ReloadRefusedError(
                "the new artifact has another encoder: restart the server to switch"
            )
            refused.lasting = True
            raise refused
        return rec

    def _swap(self, rec: Recommender, live: LiveCatalog | None) -> None:
        """Make ``rec`` current; a change being written on the old catalogue finishes first
        and reaches the new one through the log."""
        old = self.live
        if old is not None:
            old.retire(live)
        if live is not None:
            live.catch_up()
        self.recommender, self.live = rec, live
        self._follow(live)

    async def stop(self) -> None:
        """Finish queued work, then stop the batcher and the pool."""
        self.ready = False
        if self.live is not None:
            self.live.stop()
        if self.batcher.running:
            await self.batcher.stop()
        self.pool.shutdown(wait=True)

    def require(self) -> Recommender:
        """The recommender, or 503 while it is still loading."""
        if not self.ready or self.recommender is None:
            raise OverloadedError("the model is loading; retry shortly", code="not_ready")
        return self.recommender

    async def answer(self, parsed: rq.ParsedRequest) -> bytes:
        """A recommendation as JSON bytes (raises :mod:`stygig.errors` types)."""
        rec = self.recommender
        assert rec is not None
        return await self._bounded(self._answer(rec, parsed))

    async def score_outfit(self, body: bytes) -> bytes:
        """``POST /v1/outfits/score``: the JSON body read, checked and scored in the pool."""
        rec = self.require()

        def score() -> bytes:
            request = OutfitRequest.from_dict(rq.parse_json_object(body))
            return rec.score_outfit(request).to_json()

        return await self._bounded(self.run(score))

    async def _bounded(self, work: Coroutine[Any, Any, R]) -> R:
        """``work`` within the server's capacity (503 beyond it) and its time limit."""
        if self.in_flight >= self.config.batching.max_queue:
            work.close()
            self.metrics.rejected.inc()
            raise OverloadedError("the server is at capacity; retry shortly")
        self.in_flight += 1
        try:
            async with asyncio.timeout(self.config.request_timeout_s):
                return await work
        except TimeoutError:
            raise OverloadedError(
                f"the request took over {self.config.request_timeout_s:.0f} s; retry shortly",
                code="timeout",
            ) from None
        finally:
            self.in_flight -= 1

    def _alone(self) -> bool:
        """Only this request is in the server: none queued for the encoder, none decoding."""
        return self.in_flight == 1 and self.batcher.depth == 0 and self.preparing == 0

    async def _quiet(self) -> bool:
        """Whether this request is still alone once the event loop has read what the sockets
        hold: requests that came while the last one was answered on the loop are parsed and
        begun (:class:`_Boundary` counts them in :attr:`requests`) before this one decides to
        hold the loop itself. Five turns of the loop: a request on a new connection reaches
        :class:`_Boundary` after four with asyncio's (the accept, the transport's set-up, its
        reader, the read), after two with uvloop's; a turn costs ~5 us."""
        for _ in range(5):
            await asyncio.sleep(0)
        return self.requests <= 1 and self._alone()

    async def _answer(self, rec: Recommender, parsed: rq.ParsedRequest) -> bytes:
        """The pipeline with the micro-batcher as its embed step: prepare in the worker pool
        (colours go on measuring beside the encoder), embed in a batch, answer in the pool;
        alone, the whole pipeline in one pool task, or on the event loop (:func:`_inline`)."""
        query, options = parsed.query, parsed.options
        inline = False  # the whole answer here, on the event loop (see _inline)
        alone = self._alone()
        if alone and _inline(rec, query, options):
            inline = await self._quiet()
            alone = self._alone()
        if not query.images:  # item ids only: checks and answer in one task, no encoder

            def finish() -> tuple[bytes, dict[str, float]]:
                prepared = rec.prepare(query, options)
                return _serialised(rec.answer(prepared, rec.embed(prepared.tensors)))

        elif alone:
            # Nobody to batch with: the whole pipeline in one task, the encoder in line (no
            # hand-offs to the batcher and back). Requests that arrive meanwhile batch.
            def finish() -> tuple[bytes, dict[str, float]]:
                prepared = rec.prepare(query, options)
                t0 = time.perf_counter()
                vectors = rec.embed(prepared.tensors)
                seconds = time.perf_counter() - t0
                prepared.timings.queue, prepared.timings.embed = 0.0, seconds * 1e3
                self.metrics.observe_batch(len(prepared.tensors), seconds)
                return _serialised(rec.answer(prepared, vectors))

        else:
            self.preparing += 1
            try:
                prepared = await self.run(rec.prepare, query, options)
            finally:
                self.preparing -= 1
            try:
                result = await self.batcher.submit([(rec, t) for t in prepared.tensors])
            except OverloadedError:
                self.metrics.rejected.inc()
                raise
            prepared.timings.queue, prepared.timings.embed = result.queue_ms, result.embed_ms

            def finish() -> tuple[bytes, dict[str, float]]:
                return _serialised(rec.answer(prepared, result.vectors))

        if inline:
            body, timings = finish()
            self.metrics.inline.inc()
        else:
            body, timings = await self.run(finish)
        # Recorded once the answer is on its way (the loop runs it after this task has handed
        # the response to the transport: 0.05-0.1 ms less outside the encoder), as a warm-up
        # or a client's request by the state now.
        serving = self.metrics.serving()
        asyncio.get_running_loop().call_soon(self.metrics.observe_timings, timings, serving)
        return body


#: A lone request is answered on the event loop when its photo is a baseline (not progressive)
#: JPEG of at most this many bytes and pixels (see :func:`_inline`): decoded in ~3 ms at most
#: (a smooth 2 MP photo of 256 KiB, reduced by libjpeg's DCT scaling; 15 ms for 2 MB of noise).
INLINE_MAX_BYTES = 256 << 10
INLINE_MAX_PIXELS = 2_000_000
#: ... and when its answer is small: at most this many items per category and in all, and at
#: most this many catalogue items as the query (ranking and scoring grow with both: k=100 with
#: MMR took 80-100 ms at 10k items, the defaults ~3 ms), with no candidate list.
INLINE_MAX_K = 6
INLINE_MAX_K_TOTAL = 24
INLINE_MAX_ITEMS = 4


def _inline(rec: Recommender, query: Query, options: Options) -> bool:
    """Whether a lone request's whole pipeline may run on the event loop instead of a pool
    thread (if it is still alone then: :meth:`ModelService._quiet`).

    Handing the work to a pool thread and the answer back wakes two sleeping threads: 0.15-0.2
    ms of the time outside the encoder (efficientnet-lite0 int8, 10k items, one client, the
    server with and without it alternating per request, 1,600 each: 3.94 -> 3.73, 4.15 ->
    4.00 and 3.75 -> 3.58 ms; 100 clients: 155 / 202 -> 183 / 198 requests/s, A B B A, i.e.
    unchanged). Nothing waits meanwhile but requests that arrive during it: they are read when
    it ends, and, finding each other, batch. The loop must not be held long, so only work with
    a small bound goes:

    * an exact catalogue's (scanned in memory, at most ~5 ms at 50k items); an approximate
      index may read rows from disk (docs/scale.md), never on the loop;
    * a small answer: ``k``, ``k_total`` and the query's item ids within
      :data:`INLINE_MAX_K`, :data:`INLINE_MAX_K_TOTAL` and :data:`INLINE_MAX_ITEMS`, no
      ``candidate_ids`` (a large ``k`` with MMR held the loop 80-100 ms at 10k items);
    * no photo (item ids), or one baseline JPEG (by its first bytes) within :data:`INLINE_MAX_BYTES` and
      :data:`INLINE_MAX_PIXELS` by its header, read after the decode's own structure checks
      (at most ~13 ms on the loop, for a hostile header of 64 KB of fill). Progressive JPEGs
      (up to 100 passes over the image: 90 ms for 2 MP), PNG and WebP (their decode scales with
      the pixels, 30-65 ms for 2 MP) and any photo those checks refuse (the pool's decode then
      says why) go to the pool.

    An answer on the loop cannot be cut short by the request time limit, which only acts where
    a request waits; this bound is far below it.
    """
    small = (
        options.k <= INLINE_MAX_K
        and options.k_total <= INLINE_MAX_K_TOTAL
        and len(query.item_ids) <= INLINE_MAX_ITEMS
        and not options.candidate_ids
    )
    if not rec.exact or not small:
        return False
    if not query.images:
        return True
    photo = query.images[0]
    if len(query.images) != 1 or not isinstance(photo, bytes) or len(photo) > INLINE_MAX_BYTES:
        return False
    if not photo.startswith(b"\xff\xd8\xff"):  # no other format is read on the loop,
        return False  # not even its structure (review, s40: a PNG's 32 zTXt chunks: 270 ms)
    header = read_header(photo)
    return (
        header is not None
        and header.format == "JPEG"
        and not header.progressive
        and header.pixels <= INLINE_MAX_PIXELS
    )


def _serialised(answer: Recommendation) -> tuple[bytes, dict[str, float]]:
    body = answer.to_json()
    return body, answer.timings_ms


def _load(path: Path, verify: bool, device: str) -> Recommender:
    from stygig.artifact import Artifact

    artifact = Artifact.load(path, verify=verify)
    return Recommender(artifact, encoder=load_artifact_encoder(artifact, device=device))


class _Boundary:
    """Outermost middleware: request ids, authentication, body limits, metrics, access log and
    the last-resort 500.

    Body limits: a declared ``Content-Length`` over the limit is answered 413 before a byte is
    read; a body must arrive within ``body_timeout_s`` with no pause over ``body_idle_s`` (else
    408); and all bodies being read or held at once stay within ``max_body_bytes_in_flight``
    (else 503), so slow or stalled uploads cannot hold the server's memory.

    ``direct``: path -> ASGI app for POSTs that go straight to their handler (:func:`_direct`).
    ``routes``: the app's routes (the list routing reads), to name a refused request's route.
    """

    def __init__(
        self,
        app: ASGIApp,
        metrics: ServerMetrics,
        config: ServerConfig,
        service: ModelService,
        direct: dict[str, ASGIApp] | None = None,
        routes: Sequence[BaseRoute] = (),
    ) -> None:
        self.app = app
        self.routes = routes
        self.service = service
        self.direct = direct if direct is not None else {}
        self.metrics = metrics
        self.config = config
        self.token = config.auth_token.encode() if config.auth_token else None
        self.bodies_in_flight = 0
        self.catching_up = 0  # requests waiting for a change-log record (_caught_up)

    def _authorized(self, path: str, headers: dict[str, str]) -> bool:
        if self.token is None or _public(path):
            return True
        scheme, _, given = headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode("latin-1"), self.token
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if len(headers) < len(scope["headers"]):  # a field given twice: see _fields
            headers = _fields(scope["headers"])
            scope["headers"] = _joined(scope["headers"], headers)
        rid = request_id(headers.get("x-request-id"))
        scope.setdefault("state", {})["request_id"] = rid
        status = 500
        started = False
        error_code: str | None = None  # an error answer's code, for the access log
        body = _BodyReader(receive, self)
        # A body the answer may leave unread whose rest no declared length bounds (chunked),
        # or bounds beyond a modest excess: the connection closes after the answer instead of
        # reading what the client goes on sending (review, session 40: after a 401, 413 or
        # 415 one chunked upload pushed 19 GB in 10 s, all read by the event loop).
        declared = headers.get("content-length", "")
        unbounded = "transfer-encoding" in headers or (
            declared.isdigit() and int(declared) > 4 * self.config.max_body_bytes
        )

        async def send_with_id(message: Message) -> None:
            nonlocal status, started, error_code
            if status >= 400 and error_code is None and message["type"] == "http.response.body":
                error_code = _error_code(message.get("body", b""))
            if message["type"] == "http.response.start":
                started = True
                status = int(message["status"])
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", rid.encode("latin-1")),
                    (b"x-content-type-options", b"nosniff"),  # a body is what its type says
                ]
                if unbounded and not body.complete:
                    message["headers"].append((b"connection", b"close"))
            try:
                await send(message)
            except RuntimeError as e:
                # uvloop refuses a write to a connection already closed (the client went,
                # or the server closed it at the connection limit) where asyncio's ignores
                # it: the client's disconnect, not an error here (review, session 50: an
                # ERROR traceback a client could cause at will).
                if "closed" not in str(e):
                    raise
                raise ClientDisconnect from None
            if scope["state"].get(CUT_OFF):  # dropped by uvicorn, unsent: logged as such
                raise ClientDisconnect

        self.service.requests += 1
        refused_route: str | None = None  # a refused request's route, named before routing
        try:
            server = scope.get("server") or (None, None)
            refused = self._refuse(
                scope["method"], scope["path"], headers, server[1], scope.get("http_version")
            )
            if refused is None and MIN_SEQUENCE_HEADER in headers and not _public(scope["path"]):
                refused = await self._caught_up(headers[MIN_SEQUENCE_HEADER])
            if refused is not None:
                refused_route = self._match(scope)  # routing never ran: named for the log
                await refused(scope, receive, send_with_id)
            else:
                # The hot POST routes skip Starlette's routing and middleware (see _direct).
                direct = self.direct.get(scope["path"]) if scope["method"] == "POST" else None
                await (direct or self.app)(scope, body.receive, send_with_id)
        except ClientDisconnect:
            # The client went away (499: nothing to answer, nothing went wrong here), or the
            # server closed its connection mid-body (the protocol says how it answered).
            status, error_code = scope["state"].get(CLOSED_BY_SERVER, (499, None))
        except Exception:
            log.exception("unhandled error", extra={"fields": {"request_id": rid}})
            if not started:
                err = StygigError("internal server error")
                await error_response(err)(scope, receive, send_with_id)
        finally:
            self.service.requests -= 1
            self.bodies_in_flight -= body.total
            seconds = time.perf_counter() - t0
            # Routes that are not FastAPI's own (/openapi.json, the page's static files) leave
            # no route in the scope: named by matching, so they are not counted as unmatched.
            route = str(
                getattr(scope.get("route"), "path", None) or refused_route or self._match(scope)
            )
            self.metrics.requests.labels(route, method_label(scope["method"]), str(status)).inc()
            self.metrics.latency.labels(route).observe(seconds)
            access_log.info(
                "request",
                extra={
                    "fields": {
                        "event": "request",
                        "request_id": rid,
                        "method": method_label(scope["method"]),
                        "path": scope["path"][:200],
                        "route": route,
                        "status": status,
                        **({"code": error_code} if error_code else {}),
                        "latency_ms": round(seconds * 1e3, 3),
                    }
                },
            )

    async def _caught_up(self, value: str) -> Response | None:
        """``X-Stygig-Min-Sequence: N``: answer only once this server's catalogue holds
        change-log record ``N``. Read-your-writes where the server that took a change is not
        the one that answers next (several hosts behind a load balancer, Ray's replicas behind
        its proxy: review, session 53); a change's answer gives its ``sequence``.

        Bounded, as a client's value must be: one look at the log's last record first (a
        record it does not hold yet is a 503 at once), then catch-ups on the worker pool
        between short sleeps on the event loop, for at most :data:`MIN_SEQUENCE_WAIT_S`, by
        at most :data:`MIN_SEQUENCE_WAITERS` requests at once (more: 503 at once). Each pass
        reads the catalogue serving now (a hot reload swaps it). Read on the routes the token
        guards only (the health checks and the page ignore it). None: go on; else the
        refusal: 400 for no record number, 409 when this server follows no change log, 503
        when the log does not hold the record, cannot be read, or the wait ran out."""
        text = value.strip()
        if not (text.isascii() and text.isdigit() and len(text) <= 15):
            return error_response(
                InputError(
                    f"{MIN_SEQUENCE_HEADER} is a change-log record number: 1 to 15 digits",
                    code="bad_header",
                )
            )
        wanted, service = int(text), self.service
        if not service.ready or service.recommender is None:  # the route answers its 503
            return None
        held = service.recommender.snapshot.sequence
        if held >= wanted:
            return None
        if service.live is None or service.live.changelog is None:
            return error_response(
                CatalogBehindError(
                    f"this server follows no change log (its catalogue is at record {held})",
                    http_status=409,
                )
            )
        if self.catching_up >= MIN_SEQUENCE_WAITERS:
            return error_response(
                CatalogBehindError("too many requests wait for the change log; retry shortly")
            )
        self.catching_up += 1
        try:
            deadline = time.monotonic() + MIN_SEQUENCE_WAIT_S
            changelog = service.live.changelog
            if await run_in_threadpool(changelog.last_sequence) < wanted:
                return error_response(
                    CatalogBehindError(
                        f"the change log holds no record {wanted} yet; retry shortly"
                    )
                )
            while True:
                live = service.live  # the catalogue serving now: a reload may swap it
                if live is not None:
                    await run_in_threadpool(live.catch_up)
                rec = service.recommender
                if rec is not None and rec.snapshot.sequence >= wanted:
                    return None
                if time.monotonic() >= deadline:
                    break
                await asyncio.sleep(0.05)
        except StygigError as e:  # the log unreadable now (a storage error): not a 500
            log.warning("catching up for %s failed: %s", MIN_SEQUENCE_HEADER, e.code)
            return error_response(
                CatalogBehindError("the change log cannot be read now; retry shortly")
            )
        finally:
            self.catching_up -= 1
        return error_response(
            CatalogBehindError(f"this server holds no record {wanted} yet; retry shortly")
        )

    def _match(self, scope: Scope) -> str:
        """The declared route a request refused before routing (a 413 on /invocations, a
        401), or served by a route that is not FastAPI's own, would have gone to, for metrics
        and the access log; ``unmatched`` for none (a bounded label either way). Routing names
        the others."""
        for candidate in self.routes:
            match, _ = candidate.matches(scope)
            if match is Match.FULL:
                return str(getattr(candidate, "path", "unmatched"))
        return "unmatched"

    def _refuse(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        port: int | None = None,
        http_version: str | None = None,
    ) -> Response | None:
        """The answer for a request refused before the app sees it (a Host missing or given
        twice, another host's name, a cross-site change, no token, a transfer or content
        coding not read, too big).

        A server bound to loopback trusts that only this machine reaches it; a web page
        elsewhere can still make the browser send requests to it, by rebinding its own name to
        127.0.0.1 (it then reads the answers as same-origin), or by a form posted across sites.
        So a request whose ``Host`` is not one of ``allowed_hosts`` is refused, and so is a
        change (any method but GET, HEAD, OPTIONS) whose ``Origin`` is not one of the server's
        own origins (``port``: the port it was reached on, from the ASGI scope). A server bound
        elsewhere cannot know its names (a proxy may rewrite ``Host``), but a change to the
        catalogue or the jobs (:data:`_WRITE_PREFIXES`) from a page of another origin than the
        one the request was addressed to is refused there too (review, session 53: a form on
        any site reloaded an exposed server that had no token). The page's own POSTs are
        recommendations, left alone: behind a proxy that rewrites ``Host`` (nginx's default),
        its origin is not the addressed one."""
        if _TWICE in headers:  # the name is one of _ONCE's: the server's words
            return error_response(
                InputError(
                    f"the header field {headers[_TWICE]} is given more than once: a request "
                    "names it once",
                    code="bad_header",
                )
            )
        if http_version is not None and http_version not in ("1.0", "1.1"):
            # llhttp reads HTTP/2.0 (and a line without a version as 0.9): they were served as
            # HTTP/1.1, without its Host rule (review, session 50).
            return error_response(
                HttpVersionError("this server speaks HTTP/1.1 (and 1.0) on this port")
            )
        if http_version == "1.1" and not headers.get("host"):
            # RFC 9112: an HTTP/1.1 request without a Host (or an empty one) is a 400 (review,
            # session 45: it was served). HTTP/1.0 need not name one.
            return error_response(
                InputError("an HTTP/1.1 request names its Host", code="bad_header")
            )
        allowed = self.config.allowed_hosts
        if allowed is not None:  # bound to loopback
            refused = _cross_site(method, headers, allowed, port)
            if refused is not None:
                return error_response(refused)
        elif (
            method not in _SAFE_METHODS
            and path.startswith(_WRITE_PREFIXES)
            and (origin := headers.get("origin")) is not None
            and not _own_origin(_origin(origin), headers.get("host", ""), frozenset(), port)
        ):
            return error_response(
                ForbiddenError("a cross-site request may not change anything here")
            )
        if not self._authorized(path, headers):
            return error_response(UnauthorizedError("send 'Authorization: Bearer <token>'"))
        coding = headers.get("transfer-encoding")
        if coding is not None and [c.strip() for c in coding.lower().split(",")] != ["chunked"]:
            # The parser reads any coding list ending in chunked as chunked and nothing undoes
            # the others: "gzip, chunked" was read as plain, where a proxy in front may frame
            # it otherwise (a smuggling gap; review, session 45). Chunked alone, or a length.
            return error_response(
                InputError(
                    "Transfer-Encoding must be chunked alone (or send a Content-Length)",
                    code="unsupported_transfer_encoding",
                )
            )
        encodings = {e.strip() for e in headers.get("content-encoding", "").lower().split(",")}
        has_body = headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
        if not encodings <= {"", "identity"} and has_body:
            # No route decodes a compressed body: a gzip photo was "not an image", a gzip
            # JSON "not UTF-8", a body labelled br but sent plain was read as if it were.
            return error_response(
                UnsupportedMediaError(
                    "Content-Encoding is not accepted: send the body uncompressed",
                    code="unsupported_content_encoding",
                )
            )
        declared = headers.get("content-length", "")
        limit = self.config.max_body_bytes
        if declared.isdigit() and int(declared) > limit:
            # The server discards what a client still sends after a 413 so that it can read
            # the answer; past a modest excess it closes the connection instead (__call__).
            return error_response(_over_limit(limit))
        return None


_ERROR_CODE = re.compile(rb'^\{"error":\{"code":"([a-z0-9_]{1,64})"')


def _error_code(body: bytes) -> str | None:
    """The ``code`` of a StyGig error body (``{"error": {"code": ...``, always written first),
    for the access log: an operator reading why a record failed (a batch transform's only
    trace) sees ``not_an_image`` beside the 400. Codes are the server's own words."""
    found = _ERROR_CODE.match(body[:128])
    return found.group(1).decode() if found else None


#: Set (in the header dict) by :func:`_fields` when a field that must appear once came twice.
_TWICE = ":twice"
#: Fields a request holds once: a second Host passed the loopback check by its last value
#: (review, s40; RFC 9112 answers 400), a second Authorization is a question of which counts.
#: So is each single-valued field a route reads: the routes read a field's first value, where
#: a proxy in front may read its last (``Content-Type: application/json`` then ``image/jpeg``
#: was read as JSON; a second custom attributes header was dropped without a word: review,
#: session 53).
_ONCE = frozenset(
    {
        "host",
        "authorization",
        "content-type",
        "x-amzn-sagemaker-content-type",
        "x-amzn-sagemaker-custom-attributes",
        "x-amzn-sagemaker-inference-id",
        "x-amzn-sagemaker-inputlocation",
        "x-amzn-sagemaker-invocationtimeoutseconds",
        MIN_SEQUENCE_HEADER,
    }
)
#: List-valued fields a route reads, given to it joined when repeated (RFC 9110 5.3: a list
#: given twice is one list; a route read the first only: ``Accept: text/csv`` then
#: ``Accept: application/json`` was a 406).
_JOINED = (b"accept",)


def _fields(raw: Sequence[tuple[bytes, bytes]]) -> dict[str, str]:
    """A request's header fields by lower-case name, for a request with a name given more
    than once: a list-valued field's values joined by commas (so every Content-Encoding is
    checked, not the last: review, s40), and :data:`_TWICE` set when a field of
    :data:`_ONCE` repeats."""
    out: dict[str, str] = {}
    for k, v in raw:
        name, value = k.decode("latin-1").lower(), v.decode("latin-1")
        if name not in out:
            out[name] = value
        elif name in _ONCE:
            out[_TWICE] = name
        else:
            out[name] += "," + value
    return out


def _public(path: str) -> bool:
    """Whether ``path`` is answered without the token: the health checks and the page."""
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def _joined(
    raw: Sequence[tuple[bytes, bytes]], fields: dict[str, str]
) -> list[tuple[bytes, bytes]]:
    """``raw`` with each of :data:`_JOINED`'s fields once, holding its values joined
    (``fields``: :func:`_fields` of ``raw``), where the first of them was."""
    out: list[tuple[bytes, bytes]] = []
    seen: set[bytes] = set()
    for name, value in raw:
        key = name.lower()
        if key not in _JOINED:
            out.append((name, value))
        elif key not in seen:
            seen.add(key)
            out.append((key, fields[key.decode("latin-1")].encode("latin-1")))
    return out


def _cross_site(
    method: str, headers: dict[str, str], allowed: frozenset[str], port: int | None = None
) -> InputError | None:
    """Why a request to a loopback-bound server is refused: addressed to another name, or a
    change sent from another origin (see :meth:`_Boundary._refuse`); None: it is not."""
    host = _hostname(headers.get("host", ""))
    if host and host not in allowed:
        return InputError(
            "this server answers only requests addressed to its own names; start it with "
            "--allowed-host NAME to answer another",
            code="host_not_allowed",
        )
    origin = headers.get("origin")
    if (
        origin is not None
        and method not in _SAFE_METHODS
        and not _own_origin(_origin(origin), headers.get("host", ""), allowed, port)
    ):
        return ForbiddenError("a cross-site request may not change anything here")
    return None


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(value: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` of an ``Origin`` value (``scheme://host[:port]``), the port
    made explicit; None for ``null``, a path, another scheme or anything malformed."""
    scheme, sep, authority = value.strip().lower().partition("://")
    if not sep or scheme not in _DEFAULT_PORTS or not authority or "/" in authority:
        return None
    return _with_port(scheme, authority)


def _with_port(scheme: str, authority: str) -> tuple[str, str, int] | None:
    host = _hostname(authority)
    rest = authority.rpartition("]")[2] if authority.startswith("[") else authority
    port_text = rest.rpartition(":")[2] if rest.count(":") == 1 else ""
    if port_text and not port_text.isdigit():
        return None
    return scheme, host, int(port_text) if port_text else _DEFAULT_PORTS[scheme]


def _is_loopback(name: str) -> bool:
    try:
        return name == "localhost" or ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _own_origin(
    origin: tuple[str, str, int] | None, host_header: str, allowed: frozenset[str], port: int | None
) -> bool:
    """Whether a page of ``origin`` may change things on a loopback-bound server (review,
    session 41: the host name alone let ``http://localhost:3000``, any other local web app,
    post here):

    * the origin the request was addressed to, by its ``Host``: the page posts to its own
      origin (over ``https`` too: a TLS proxy on this machine that keeps the ``Host``);
    * this machine's names at the port the server was reached on (``port``), over ``http``;
    * an ``--allowed-host`` name (the public name of a proxy in front of it), any scheme and
      port: the operator named it as this server's."""
    if origin is None:
        return False
    scheme, name, at = origin
    addressed = _with_port(scheme, host_header.strip().lower())
    if addressed is not None and addressed[1:] == (name, at):
        return True
    if name not in allowed:
        return False
    if _is_loopback(name):
        return scheme == "http" and port is not None and at == port
    return True


def _hostname(authority: str) -> str:
    """The host name of ``authority`` (``host[:port]``, ``[v6]:port``), lower case, without
    the trailing dot of a fully qualified name."""
    authority = authority.strip().lower()
    if "@" in authority:  # user information is no host name: matches no allowed one (RFC
        return authority  # 9110 4.2.4; "localhost:x@evil.com" read as localhost, review s50)
    if authority.startswith("["):
        return authority[1:].partition("]")[0]
    name = authority.rpartition(":")[0] if authority.count(":") == 1 else authority
    return name.rstrip(".") or name


def allowed_hosts(bind: str, extra: Sequence[str] = ()) -> frozenset[str] | None:
    """The names a server bound to ``bind`` answers to: bound to loopback, this machine's
    names and ``extra``; bound elsewhere, any (None: the checks are for a server that trusts
    its loopback bind; an exposed one is guarded by its token, and a proxy in front of it may
    rewrite ``Host``)."""
    try:
        loopback = bind == "localhost" or ipaddress.ip_address(bind).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        if extra:
            raise InvalidOptionsError(
                "--allowed-host is for a server bound to loopback (--host 127.0.0.1)"
            )
        return None
    return frozenset({*LOOPBACK_NAMES, _hostname(bind), *(_hostname(h) for h in extra)})


def _over_limit(limit: int) -> rq.PayloadTooLargeError:
    return rq.PayloadTooLargeError(f"the request body is over the {limit:,}-byte limit")


class _BodyReader:
    """One request's ``receive``, counting its body against the limits of :class:`_Boundary`."""

    def __init__(self, receive: Receive, boundary: _Boundary) -> None:
        self._receive = receive
        self._boundary = boundary
        self._deadline = time.monotonic() + boundary.config.body_timeout_s
        self._done = False
        self.total = 0  # bytes of this body counted in the boundary's in-flight total

    @property
    def complete(self) -> bool:
        """Whether the app has read the body to its end."""
        return self._done

    async def receive(self) -> Message:
        if self._done:  # the body is complete: later calls only wait for a disconnect
            return await self._receive()
        config = self._boundary.config
        wait = min(config.body_idle_s, self._deadline - time.monotonic())
        try:
            async with asyncio.timeout(max(wait, 0.0)):
                message = await self._receive()
        except TimeoutError:
            raise RequestTimeoutError(
                f"the request body must arrive within {config.body_timeout_s:g} s, with no "
                f"pause over {config.body_idle_s:g} s"
            ) from None
        if message["type"] != "http.request":
            return message
        self._done = not message.get("more_body", False)
        size = len(message.get("body", b""))
        if self.total + size > config.max_body_bytes:
            raise _over_limit(config.max_body_bytes)
        if self._boundary.bodies_in_flight + size > config.max_body_bytes_in_flight:
            raise OverloadedError("too many uploads in progress; retry shortly", code="busy")
        self._boundary.bodies_in_flight += size
        self.total += size
        return message


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_IMAGE_BODY = {"schema": {"type": "string", "format": "binary"}}
_ANSWER_REF = {"$ref": "#/components/schemas/Recommendation"}
_OUTFIT_SCORE_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {JSON: {"schema": {"$ref": "#/components/schemas/OutfitScoreRequest"}}},
    }
}
OUTFIT_SCORE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the set's score: overall, per item and per pair, with the parts",
        "content": {JSON: {"schema": {"$ref": "#/components/schemas/OutfitScore"}}},
    }
}
# A JSON body: the photos and item ids, with every option beside them.
_JSON_BODY = {"schema": rq.json_body_schema()}
#: The 200 answer of every recommending route.
ANSWER_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"description": "the recommendation", "content": {JSON: {"schema": _ANSWER_REF}}}
}


def _with_schemas(app: FastAPI, answers: Sequence[type]) -> None:
    """Put the answers' and the options' schemas (made from the types that write and check
    them: ``answers`` are :mod:`.bodies`' types) into the app's OpenAPI document, where the
    routes refer to them."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for name, schema in (
                ("Recommendation", answer_schema()),
                ("Options", options_schema()),
                ("OutfitScore", outfit_score_schema()),
                ("OutfitScoreRequest", outfit_request_schema()),
                ("CatalogItem", catalog_item_schema()),
                ("CatalogPage", catalog_page_schema()),
            ):
                schemas.update(schema.pop("$defs", {}))
                schemas[name] = schema
            schemas.update(component_schemas(answers))
        return app.openapi_schema or generate()

    app.openapi = openapi  # type: ignore[method-assign]


_INVOCATION_DOC: dict[str, Any] = {
    "parameters": option_parameters(),
    "requestBody": {
        "required": True,
        "content": {
            **{t: _IMAGE_BODY for t in sorted(rq.IMAGE_TYPES)},
            JSON: _JSON_BODY,
            **rq.opaque_bodies(_JSON_BODY["schema"]),
        },
    },
}
_RECOMMEND_DOC: dict[str, Any] = {
    "parameters": option_parameters(),
    "requestBody": {
        "required": True,
        "content": {
            **_INVOCATION_DOC["requestBody"]["content"],
            "multipart/form-data": {"schema": rq.form_body_schema()},
        },
    },
}
_FILE_FIELDS = ("image", "images", "file")


def _multipart_request(
    images: list[bytes],
    item_ids: list[str],
    texts: list[str],
    params: list[tuple[str, str]],
    outside: rq.OptionSources,
) -> rq.ParsedRequest:
    """The request a form describes; its JSON ``options`` fields are parsed here, in the pool,
    and read as a JSON request body is (``item_ids`` or ``image_b64`` there count too).
    Options come from the form's own option fields (``params``), its ``options`` fields and
    ``outside`` it (the custom attributes and the query string): one option in two of these
    places is a 422 naming both (review, session 42: three silent precedence rules)."""
    # All the options fields together are one JSON body's worth of values (each was counted
    # alone: 64 fields held 64 times the limit; review, session 40).
    check_json_values("".join(texts), what="the options fields")
    sources = [*outside, ("the form's fields", rq.params_to_dict(params))]
    for i, text in enumerate(texts):
        more_images, more_ids, more = rq.split_json_request(
            rq.parse_json_object(text.encode(), what="the options field"),
            photos_before=len(images),
        )
        images, item_ids = [*images, *more_images], [*item_ids, *more_ids]
        sources.append((f"options field {i + 1}" if len(texts) > 1 else "the options field", more))
    merged = rq.merge_option_sources(*sources)
    return rq.build_request(images, string_list(item_ids, "item_ids"), merged)


async def _parse_multipart(
    request: Request, service: ModelService, outside: rq.OptionSources
) -> rq.ParsedRequest:
    """A form; ``outside``: the options of the custom attributes and the query string."""
    limit = service.config.max_body_bytes
    rq.check_form_complete(await request.body(), request.headers.get("content-type", ""))
    form = await request.form(max_files=16, max_fields=64, max_part_size=limit)
    try:
        images: list[bytes] = []
        item_ids: list[str] = []
        params: list[tuple[str, str]] = []
        texts: list[str] = []
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if key not in _FILE_FIELDS:
                    raise InvalidOptionsError("unexpected file field; send photos as 'image'")
                # Counted before it is copied out of the parser's spool (the parser itself
                # takes up to 16 files, within the body limit).
                check_part_count(len(images) + 1, len(images) + 1)
                images.append(await value.read())
            elif key in _FILE_FIELDS:
                raise InvalidOptionsError(f"fields {', '.join(_FILE_FIELDS)} must be file uploads")
            elif key == "item_ids":  # bounded before it is split, checked as JSON's are
                item_ids.extend(split_text_list([value], key, MAX_QUERY_PARTS))
            elif key == "options":
                texts.append(value)
            else:
                params.append((key, value))
        return await service.run(_multipart_request, images, item_ids, texts, params, outside)
    finally:
        await form.close()


async def parse_request(
    request: Request, service: ModelService, *, multipart: bool
) -> rq.ParsedRequest:
    """Read and parse the body by content type: JSON in the pool, unless it is small and the
    request is alone (~0.3 ms less outside the encoder and CPU for a lone JSON photo, the
    server with and without it alternating per request; parsing 256 KiB takes ~1 ms)."""
    kind = rq.read_as(rq.media_type(request.headers.get("content-type")))
    params = rq.outside_options(
        request.headers.get("x-amzn-sagemaker-custom-attributes"),
        request.query_params.multi_items(),
    )
    if multipart and kind == "multipart/form-data":
        return await _parse_multipart(request, service, params)
    opaque = kind in rq.OPAQUE_CONTENT_TYPES
    if opaque and rq.from_another_site(request.headers):
        # A browser sends a body without a type from any page, with no preflight: a page
        # elsewhere could post to a server without a token (review of session 41's fixes, 6)
        raise rq.unsupported(kind, multipart=multipart)
    if kind not in rq.IMAGE_TYPES and kind != JSON and not opaque:
        raise rq.unsupported(kind, multipart=multipart)
    body = await request.body()
    if opaque:
        kind = rq.told_from_bytes(body, kind, multipart=multipart)
    if kind == JSON:
        if len(body) <= INLINE_MAX_BYTES and service.requests <= 1 and service.in_flight == 0:
            return rq.parse_json_body(body, params)  # small, and alone: no hand-off
        return await service.run(rq.parse_json_body, body, params)
    return rq.parse_image_body(body, params)


def create_app(
    config: ServerConfig, *, on_fatal: Callable[[BaseException], None] | None = None
) -> FastAPI:
    """The FastAPI app. ``on_fatal`` is called if the model cannot be loaded."""
    metrics = ServerMetrics()
    service = ModelService(config, metrics)
    # Async jobs wait while real-time requests fill the worker pool: real time comes first.
    jobs = (
        AsyncJobs(
            config.async_jobs,
            lambda: service.recommender if service.ready else None,
            should_yield=lambda: service.in_flight >= service.config.threads,
        )
        if config.async_jobs
        else None
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def load() -> None:
            try:
                await service.start()
            except Exception as e:
                log.exception("the model could not be loaded")
                if on_fatal is not None:
                    on_fatal(e)

        task = asyncio.create_task(load(), name="stygig-load")
        stop_watch = asyncio.Event()
        watcher = asyncio.create_task(watch_and_signal(service, stop_watch), name="stygig-watch")
        async with jobs.lifespan() if jobs else contextlib.nullcontext():
            yield
        stop_watch.set()
        await watcher
        if not task.done():
            task.cancel()
        await service.stop()

    app = FastAPI(
        title="StyGig",
        version=__version__,
        description="Photo in, outfit out: fashion recommendations from a retailer's catalogue.",
        lifespan=lifespan,
        docs_url=None,  # /docs: the catalogue router's, with its own headers (docs_page)
        swagger_ui_oauth2_redirect_url=None,
        redoc_url=None,
        # No route ends in "/": a redirect would be built from the client's Host header.
        redirect_slashes=False,
        responses=ERROR_RESPONSES,
    )
    _with_schemas(app, [*SERVER_ANSWERS, *(ASYNC_ANSWERS if jobs else ())])
    app.state.service = service
    if jobs:
        app.include_router(jobs.router)
    app.state.metrics = metrics
    direct: dict[str, ASGIApp] = {}  # filled by _routes
    app.add_middleware(
        _Boundary,
        metrics=metrics,
        config=config,
        service=service,
        direct=direct,
        routes=app.router.routes,  # filled below: the same list
    )

    @app.exception_handler(StygigError)
    async def stygig_error(request: Request, exc: StygigError) -> Response:
        return _stygig_error(request, exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        _release(exc)
        errors = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()
        )
        return json_response({"error": {"code": "invalid_request", "message": errors}}, 422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        return _http_error(exc)

    _routes(app, service, metrics, direct)
    app.include_router(make_catalog_router(service))  # the try-it page and its catalogue routes
    app.include_router(make_changes_router(service))  # the living catalogue
    return app


def _release(exc: BaseException) -> None:
    """Drop the tracebacks of an answered error and of every error it chains.

    A traceback holds the frames the error passed through, and they what they held (a request
    body, a decoded image). An awaiting frame that keeps the error (through a future) makes a
    cycle that only Python's rare full garbage collection frees (review, session 40: 80 failed
    16 MP PNGs held 2 GB); without its traceback the error holds no frame, and reference
    counting frees them when the answer is made."""
    stack: list[BaseException] = [exc]
    seen: set[int] = set()
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        e.__traceback__ = None
        stack += [c for c in (e.__cause__, e.__context__) if c is not None]


def _stygig_error(request: Request, exc: StygigError) -> Response:
    """A :class:`StygigError` as its JSON answer; a server fault's detail (a path, an errno
    text) goes to the log only, the client gets the code and the request id."""
    _release(exc)
    if exc.http_status >= 500 and exc.http_status != 503:
        rid = request.scope.get("state", {}).get("request_id")
        log.error("server error: %s", exc.message, extra={"fields": {"request_id": rid}})
        exc = StygigError(f"internal server error (request id {rid})", code=exc.code)
    return error_response(exc)


def _http_error(exc: HTTPException) -> Response:
    """Starlette's own refusals (404, 405, a malformed form) in StyGig's JSON error shape."""
    _release(exc)
    codes = {404: "not_found", 405: "method_not_allowed", 400: "invalid_input"}
    code = codes.get(exc.status_code, "http_error")
    return json_response(
        {"error": {"code": code, "message": str(exc.detail)}},
        exc.status_code,
        dict(exc.headers or {}),
    )


def _direct(app: FastAPI, path: str, handler: Callable[[Request], Awaitable[Response]]) -> ASGIApp:
    """``POST path`` as a bare ASGI app: ``handler`` answers; a :class:`StygigError`, or an
    :class:`HTTPException` (a malformed form), becomes its JSON error as the app's exception
    handlers make them. The route stays declared on the app (OpenAPI, other methods' 405);
    only the request skips Starlette's routing and middleware layers. Any other exception
    reaches :class:`_Boundary`'s last-resort 500, as it would through them."""
    route = next(r for r in app.routes if getattr(r, "path", None) == path)

    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        # What Starlette and routing set: the metrics and the access log read the route, and
        # a request with an app turns a malformed form into an HTTPException (400).
        scope["app"], scope["route"] = app, route
        request = Request(scope, receive)
        try:
            response = await handler(request)
        except StygigError as exc:
            response = _stygig_error(request, exc)
        except HTTPException as exc:
            response = _http_error(exc)
        await response(scope, receive, send)

    return endpoint


#: An answer's label follows Accept (JSON or a JSON Lines type): a shared cache must key it so.
_VARY = {"Vary": "Accept"}


def _routes(
    app: FastAPI, service: ModelService, metrics: ServerMetrics, direct: dict[str, ASGIApp]
) -> None:
    async def answer(request: Request, *, multipart: bool) -> Response:
        service.require()
        label = rq.check_accept(request.headers.get("accept"))
        parsed = await parse_request(request, service, multipart=multipart)
        return Response(await service.answer(parsed), media_type=label, headers=_VARY)

    @get_and_head(
        app,
        "/ping",
        tags=["sagemaker"],
        summary="SageMaker health check",
        responses={200: json_answer("loaded and warm", Ping)},
    )
    async def ping() -> Response:
        if not service.ready:
            return error_response(OverloadedError("the model is loading", code="not_ready"))
        return json_response(asdict(Ping("ok")))

    @get_and_head(
        app,
        "/execution-parameters",
        dependencies=[Depends(rq.strict_query())],
        tags=["sagemaker"],
        summary="What a batch transform should send (SageMaker asks before its first record)",
        responses={200: json_answer("the batch transform's parameters", ExecutionParameters)},
    )
    async def execution_parameters() -> Response:
        # One record per request: a body is one query (several JSON lines are refused). As
        # many at once as the encoder batches, within SageMaker's rule that concurrency x
        # payload stays within 100 MB.
        # Whole MB within SageMaker's range (1-100): a limit under 1 MB cannot be said.
        payload_mb = max(1, min(rq.MAX_PAYLOAD_MB, service.config.max_body_bytes // (1 << 20)))
        concurrent = max(1, min(service.config.batching.max_batch, 100 // payload_mb))
        return json_response(asdict(ExecutionParameters(concurrent, "SINGLE_RECORD", payload_mb)))

    @app.post(
        "/invocations",
        tags=["sagemaker"],
        summary="SageMaker inference",
        openapi_extra=_INVOCATION_DOC,
        responses=ANSWER_RESPONSE,
    )
    async def invocations(request: Request) -> Response:
        return await answer(request, multipart=False)

    @app.post(
        "/v1/recommend",
        tags=["recommend"],
        summary="Outfit / similar items for photos or item ids",
        openapi_extra=_RECOMMEND_DOC,
        responses=ANSWER_RESPONSE,
    )
    async def recommend(request: Request) -> Response:
        return await answer(request, multipart=True)

    direct["/invocations"] = _direct(app, "/invocations", invocations)
    direct["/v1/recommend"] = _direct(app, "/v1/recommend", recommend)

    @app.post(
        "/v1/outfits/score",
        tags=["recommend"],
        summary="How well a set of catalogue items goes together, overall and per pair",
        openapi_extra=_OUTFIT_SCORE_DOC,
        responses=OUTFIT_SCORE_RESPONSE,
    )
    async def outfit_score(request: Request) -> Response:
        service.require()
        label = rq.check_accept(request.headers.get("accept"))
        if request.query_params:  # ignored silently before (review, s40): a typo looked taken
            raise InvalidOptionsError(
                "this route takes no query parameters: send the set and its options as JSON, "
                '{"item_ids": [...], "use_color": ...}'
            )
        kind = rq.read_as(rq.media_type(request.headers.get("content-type")))
        if kind != JSON:
            raise UnsupportedMediaError(
                'send the set as application/json: {"item_ids": [...]}',
                code="unsupported_content_type",
            )
        body = await request.body()
        return Response(await service.score_outfit(body), media_type=label, headers=_VARY)

    @get_and_head(
        app,
        "/v1/items/{item_id}",
        tags=["catalogue"],
        summary="One catalogue item",
        dependencies=[Depends(rq.strict_query())],
        responses={200: {"content": {JSON: {"schema": _ref("CatalogItem")}}}},
    )
    async def item(item_id: str) -> Response:
        snap = service.require().snapshot  # one catalogue state for the whole answer
        pos = snap.columns.position(item_id)
        item = snap.artifact.items[pos]
        # The answer's item fields, then what only this route shows; the catalogue's image path
        # is the server's business: clients get the thumbnail route.
        data = CatalogItem(
            **asdict(item_view(snap.columns, pos)),
            usage=item.usage,
            season=item.season,
            stock=item.stock,
            attributes=item.attributes,
            image_url=image_url(item_id),
            color=snap.artifact.colors[pos],
            catalog_version=snap.catalog_version,
        )
        return json_response(asdict(data))

    @get_and_head(
        app,
        "/v1/items/{item_id}/recommendations",
        tags=["catalogue"],
        summary="What goes with a catalogue item (options as query parameters)",
        responses=ANSWER_RESPONSE,
        openapi_extra={"parameters": option_parameters(header=False)},
    )
    async def item_recommendations(item_id: str, request: Request) -> Response:
        service.require()
        label = rq.check_accept(request.headers.get("accept"))
        options = rq.options_from_params(request.query_params.multi_items())
        parsed = rq.ParsedRequest(Query(item_ids=(item_id,)), options)
        return Response(await service.answer(parsed), media_type=label, headers=_VARY)

    @get_and_head(
        app,
        "/healthz",
        tags=["ops"],
        summary="Liveness: the process answers",
        responses={200: json_answer("the process answers", Health)},
    )
    async def healthz() -> Response:
        return json_response(asdict(Health("alive", service.ready)))

    @get_and_head(
        app,
        "/readyz",
        tags=["ops"],
        summary="Readiness: model loaded and warm",
        responses={
            200: json_answer("loaded and warm", Readiness),
            503: json_answer("not ready yet: the same body, ready false", Readiness),
        },
    )
    async def readyz() -> Response:
        rec = service.recommender
        snap = rec.snapshot if rec else None  # once: items and version of one catalogue state
        body = Readiness(
            ready=service.ready,
            # Which artifact, by its build time: never the folder it was loaded from.
            artifact=ArtifactBuild(rec.artifact.manifest.get("created_at")) if rec else None,
            encoder=rec.encoder.name if rec else None,
            items=snap.live_items if snap else None,
            catalog_version=snap.catalog_version if snap else None,
            load_seconds=service.load_seconds,
            warmup_seconds=service.warmup_seconds,
            batching=BatchingSettings.of(service.config.batching),
        )
        return json_response(asdict(body), 200 if service.ready else 503)

    @get_and_head(
        app,
        "/metrics",
        tags=["ops"],
        summary="Prometheus metrics",
        response_class=Response,  # not JSON: FastAPI would document application/json too
        responses={
            200: {
                "description": "the Prometheus text exposition format",
                "content": {CONTENT_TYPE: {"schema": {"type": "string"}}},
            }
        },
    )
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

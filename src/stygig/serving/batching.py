"""Micro-batching of encoder calls across concurrent requests.

Requests put their prepared photos on a bounded queue; one collector task takes the first waiting
request, then keeps collecting until the batch holds ``max_batch`` photos or ``max_wait_ms`` has
passed since that first request (a monotonic deadline), and hands the batch to the encoder in its
own worker thread. While the encoder runs, new requests queue up, so under load the next batch
is full at once and throughput rises with load instead of collapsing. Waiting for company only
pays when company is coming: given ``expecting`` (how many requests are being decoded right now,
on their way here), a batch is dispatched at once when nothing is queued and nothing is expected,
so a lone client never pays the deadline. With batching off (``max_batch=1``, no wait), requests
are encoded one at a time through the same thread.

A full queue is refused at once with :class:`~stygig.errors.OverloadedError` (HTTP 503) rather
than growing without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

from stygig.errors import ConfigError, OverloadedError
from stygig.threads import limit_this_thread

__all__ = ["BatchResult", "BatcherConfig", "MicroBatcher"]

T = TypeVar("T")
EmbedFn = Callable[[list[T]], np.ndarray]
BatchHook = Callable[[int, float], None]


@dataclass(frozen=True)
class BatcherConfig:
    """How requests are grouped. Validated on construction.

    Attributes:
        max_batch: photos per encoder call (1 turns batching off).
        max_wait_ms: how long the first request of a batch may wait for company.
        max_queue: requests allowed to wait; one more is refused with 503.
    """

    max_batch: int = 8
    max_wait_ms: float = 2.0
    max_queue: int = 256

    def __post_init__(self) -> None:
        if not isinstance(self.max_batch, int) or self.max_batch < 1:
            raise ConfigError("max_batch must be an integer >= 1")
        if not 0.0 <= self.max_wait_ms <= 1000.0:
            raise ConfigError("max_wait_ms must be within [0, 1000]")
        if not isinstance(self.max_queue, int) or self.max_queue < 1:
            raise ConfigError("max_queue must be an integer >= 1")

    @classmethod
    def off(cls, max_queue: int = 256) -> BatcherConfig:
        """One request per encoder call, no waiting: the baseline without micro-batching."""
        return cls(max_batch=1, max_wait_ms=0.0, max_queue=max_queue)


@dataclass(frozen=True)
class BatchResult:
    """One request's share of a batch: its vectors and where its time went (ms)."""

    vectors: np.ndarray
    queue_ms: float
    embed_ms: float
    batch_size: int


@dataclass
class _Pending(Generic[T]):
    items: Sequence[T]
    future: asyncio.Future[BatchResult]
    enqueued: float = field(default_factory=time.perf_counter)


class MicroBatcher(Generic[T]):
    """Groups :meth:`submit` calls into encoder batches run in one worker thread.

    Args:
        embed: the encoder call, ``list of prepared photos -> (n, dim) vectors``; it runs in
            the batcher's own thread, never on the event loop.
        config: batch size, deadline and queue bound.
        on_batch: called on the event loop after each batch with (photos, seconds).
        expecting: how many requests will submit soon (e.g. being decoded); when it returns 0
            and nothing is queued, a batch goes at once instead of waiting for its deadline.
            ``None``: always wait up to ``max_wait_ms``.

    Attributes:
        batches: encoder calls that answered so far (a server's warm-up makes the first).
    """

    def __init__(
        self,
        embed: EmbedFn[T],
        config: BatcherConfig | None = None,
        *,
        on_batch: BatchHook | None = None,
        expecting: Callable[[], int] | None = None,
    ) -> None:
        self.config = config or BatcherConfig()
        self._embed = embed
        self._on_batch = on_batch
        self._expecting = expecting
        self._queue: asyncio.Queue[_Pending[T]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="stygig-encoder", initializer=limit_this_thread
        )
        self._carry: _Pending[T] | None = None
        self.batches = 0

    @property
    def depth(self) -> int:
        """Requests waiting for the encoder (not counting the batch being encoded)."""
        return (self._queue.qsize() if self._queue is not None else 0) + (
            1 if self._carry is not None else 0
        )

    @property
    def running(self) -> bool:
        """Whether the collector task is alive."""
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Start the collector on the running event loop."""
        if self.running:
            return
        self._queue = asyncio.Queue(maxsize=self.config.max_queue)
        self._task = asyncio.create_task(self._collect(), name="stygig-batcher")

    async def stop(self) -> None:
        """Finish what is queued, then stop the collector and the encoder thread."""
        if self._queue is not None and self.running:
            await self._queue.join()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._thread.shutdown(wait=True)

    async def submit(self, items: Sequence[T]) -> BatchResult:
        """Embed ``items`` (one request's photos) as part of a batch.

        Raises:
            OverloadedError: the queue is full or the batcher is not running.
        """
        if self._queue is None or not self.running:
            raise OverloadedError("the encoder is not running", code="not_ready")
        future: asyncio.Future[BatchResult] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Pending(items, future))
        except asyncio.QueueFull:
            raise OverloadedError(
                f"the server is at capacity ({self.config.max_queue} requests queued); "
                "retry shortly"
            ) from None
        try:
            return await future
        finally:
            del future  # no cycle with a failure's traceback (ModelService.run)

    async def _next(self, timeout: float | None) -> _Pending[T] | None:
        assert self._queue is not None
        if self._carry is not None:
            item, self._carry = self._carry, None
            return item
        if timeout is None:
            return await self._queue.get()
        if timeout <= 0:
            try:
                return self._queue.get_nowait()
            except asyncio.QueueEmpty:
                return None
        # Not asyncio.wait_for: on Python 3.11 it can drop an item that arrives at the timeout.
        getter = asyncio.ensure_future(self._queue.get())
        done, _ = await asyncio.wait({getter}, timeout=timeout)
        if getter not in done:
            getter.cancel()
        try:
            return await getter
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if me is not None and me.cancelling():
                raise  # the collector itself is being stopped
            return None

    async def _gather(self) -> list[_Pending[T]]:
        """One batch: the first request, then company until full or the deadline passes."""
        first = await self._next(None)
        assert first is not None
        batch, size = [first], len(first.items)
        deadline = time.monotonic() + self.config.max_wait_ms / 1e3
        while size < self.config.max_batch:
            if self._alone():
                break  # nobody is queued or on the way: waiting would only add latency
            nxt = await self._next(deadline - time.monotonic())
            if nxt is None:
                break
            if size + len(nxt.items) > self.config.max_batch:
                self._carry = nxt  # first of the next batch; never split a request
                break
            batch.append(nxt)
            size += len(nxt.items)
        return batch

    def _alone(self) -> bool:
        assert self._queue is not None
        return (
            self._expecting is not None
            and self._carry is None
            and self._queue.empty()
            and self._expecting() <= 0
        )

    async def _collect(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            live = [p for p in batch if not p.future.done()]  # a client may have gone away
            items = [x for p in live for x in p.items]
            started = time.perf_counter()
            if not items:
                for _ in range(len(batch)):
                    self._queue.task_done()
                continue
            try:
                vectors = await loop.run_in_executor(self._thread, self._embed, items)
            except Exception as e:  # handed to each waiting request, not lost
                _fail(live, e)
            else:
                seconds = time.perf_counter() - started
                self.batches += 1
                if self._on_batch is not None:
                    self._on_batch(len(items), seconds)
                _deliver(live, vectors, started, seconds)
                del vectors
            finally:
                for _ in range(len(batch)):
                    self._queue.task_done()
            # A failure handed out holds this frame in its traceback: the batch (its photos,
            # its futures) is let go now, not when the next batch comes (review, session 40).
            del batch, live, items


def _fail(live: list[_Pending[T]], error: Exception) -> None:
    for p in live:
        if not p.future.done():
            p.future.set_exception(error)


def _deliver(live: list[_Pending[T]], vectors: np.ndarray, started: float, seconds: float) -> None:
    """Each waiting request's rows of the batch's ``vectors``."""
    size = sum(len(p.items) for p in live)
    offset = 0
    for p in live:
        n = len(p.items)
        if not p.future.done():
            p.future.set_result(
                BatchResult(
                    vectors[offset : offset + n],
                    queue_ms=(started - p.enqueued) * 1e3,
                    embed_ms=seconds * 1e3,
                    batch_size=size,
                )
            )
        offset += n

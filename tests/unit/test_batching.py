"""The micro-batcher: grouping, deadline, request integrity, backpressure, errors, shutdown."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np
import pytest

from stygig.errors import ConfigError, OverloadedError
from stygig.serving.batching import BatcherConfig, BatchResult, MicroBatcher


class Recorder:
    """An 'encoder' that returns each item's value as its vector and records batch sizes."""

    def __init__(self, delay: float = 0.0, gate: threading.Event | None = None) -> None:
        self.sizes: list[int] = []
        self.delay = delay
        self.gate = gate
        self.thread_names: set[str] = set()

    def __call__(self, items: list[float]) -> np.ndarray:
        if self.gate is not None:
            self.gate.wait(5)
        self.thread_names.add(threading.current_thread().name)
        time.sleep(self.delay)
        self.sizes.append(len(items))
        return np.asarray(items, np.float32).reshape(-1, 1)


def run(fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(fn())


@pytest.mark.parametrize(
    "kwargs", [{"max_batch": 0}, {"max_wait_ms": -1.0}, {"max_queue": 0}, {"max_batch": 2.5}]
)
def test_config_is_validated(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        BatcherConfig(**kwargs)  # type: ignore[arg-type]


def test_concurrent_requests_share_batches_and_get_their_own_vectors() -> None:
    enc = Recorder(delay=0.02)

    async def main() -> None:
        batcher = MicroBatcher(enc, BatcherConfig(max_batch=4, max_wait_ms=20))
        await batcher.start()
        results = await asyncio.gather(*(batcher.submit([float(i)]) for i in range(10)))
        await batcher.stop()
        for i, res in enumerate(results):
            assert isinstance(res, BatchResult)
            assert res.vectors.shape == (1, 1) and res.vectors[0, 0] == i
            assert res.batch_size <= 4 and res.embed_ms > 0

    run(main)
    assert sum(enc.sizes) == 10 and max(enc.sizes) == 4 and len(enc.sizes) <= 4
    assert enc.thread_names == {n for n in enc.thread_names if n.startswith("stygig-encoder")}


def test_a_lone_request_waits_only_for_the_deadline() -> None:
    enc = Recorder()

    async def main() -> None:
        batcher = MicroBatcher(enc, BatcherConfig(max_batch=64, max_wait_ms=30))
        await batcher.start()
        t0 = time.perf_counter()
        res = await batcher.submit([1.0, 2.0])
        elapsed = time.perf_counter() - t0
        await batcher.stop()
        assert res.vectors[:, 0].tolist() == [1.0, 2.0]
        assert 0.025 <= elapsed < 1.0

    run(main)


def test_a_lone_request_goes_at_once_when_no_company_is_coming() -> None:
    enc = Recorder()

    async def main() -> None:
        config = BatcherConfig(max_batch=64, max_wait_ms=500)
        batcher = MicroBatcher(enc, config, expecting=lambda: 0)
        await batcher.start()
        t0 = time.perf_counter()
        res = await batcher.submit([1.0])
        elapsed = time.perf_counter() - t0
        await batcher.stop()
        assert res.vectors[:, 0].tolist() == [1.0]
        assert elapsed < 0.25  # far less than the 500 ms deadline it used to wait

    run(main)


def test_a_request_waits_for_company_that_is_on_its_way() -> None:
    enc = Recorder()
    coming = [1]  # one more request is being decoded when the first arrives

    async def main() -> None:
        config = BatcherConfig(max_batch=64, max_wait_ms=1000)
        batcher = MicroBatcher(enc, config, expecting=lambda: coming[0])
        await batcher.start()
        first = asyncio.ensure_future(batcher.submit([1.0]))
        await asyncio.sleep(0.05)  # the other request's decoding takes a while
        coming[0] = 0
        second = await batcher.submit([2.0])
        await first
        await batcher.stop()
        assert second.batch_size == 2 and first.result().batch_size == 2

    run(main)
    assert enc.sizes == [2]


def test_requests_are_never_split_across_batches() -> None:
    enc = Recorder()

    async def main() -> None:
        batcher = MicroBatcher(enc, BatcherConfig(max_batch=4, max_wait_ms=50))
        await batcher.start()
        a, b = await asyncio.gather(batcher.submit([1.0, 2.0]), batcher.submit([3.0, 4.0, 5.0]))
        big = await batcher.submit([float(i) for i in range(6)])  # larger than a batch: alone
        await batcher.stop()
        assert a.vectors[:, 0].tolist() == [1.0, 2.0]
        assert b.vectors[:, 0].tolist() == [3.0, 4.0, 5.0]
        assert big.vectors.shape == (6, 1)

    run(main)
    assert enc.sizes == [2, 3, 6]


def test_batching_off_encodes_each_request_alone() -> None:
    enc = Recorder()

    async def main() -> None:
        batcher = MicroBatcher(enc, BatcherConfig.off())
        await batcher.start()
        await asyncio.gather(*(batcher.submit([float(i)]) for i in range(5)))
        await batcher.stop()

    run(main)
    assert enc.sizes == [1] * 5


def test_a_full_queue_is_refused_not_grown() -> None:
    gate = threading.Event()
    enc = Recorder(gate=gate)

    async def main() -> None:
        batcher = MicroBatcher(enc, BatcherConfig(max_batch=1, max_wait_ms=0, max_queue=2))
        await batcher.start()
        first = asyncio.create_task(batcher.submit([0.0]))  # taken by the (blocked) encoder
        await asyncio.sleep(0.05)
        queued = [asyncio.create_task(batcher.submit([float(i)])) for i in (1, 2)]
        await asyncio.sleep(0.05)
        assert batcher.depth == 2
        with pytest.raises(OverloadedError) as info:
            await batcher.submit([3.0])
        assert info.value.http_status == 503
        gate.set()
        await asyncio.gather(first, *queued)
        assert (await batcher.submit([4.0])).vectors[0, 0] == 4.0
        await batcher.stop()

    run(main)


def test_an_encoder_error_reaches_its_requests_and_the_batcher_goes_on() -> None:
    calls = []

    def flaky(items: list[float]) -> np.ndarray:
        calls.append(len(items))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return np.asarray(items, np.float32).reshape(-1, 1)

    async def main() -> None:
        batcher = MicroBatcher(flaky, BatcherConfig(max_batch=8, max_wait_ms=1))
        await batcher.start()
        with pytest.raises(RuntimeError, match="boom"):
            await batcher.submit([1.0])
        assert (await batcher.submit([2.0])).vectors[0, 0] == 2.0
        await batcher.stop()

    run(main)


def test_stop_finishes_queued_work_and_refuses_new() -> None:
    enc = Recorder(delay=0.01)

    async def main() -> None:
        batcher = MicroBatcher(enc, BatcherConfig(max_batch=2, max_wait_ms=0))
        await batcher.start()
        tasks = [asyncio.create_task(batcher.submit([float(i)])) for i in range(6)]
        await asyncio.sleep(0)
        await batcher.stop()
        assert [t.result().vectors[0, 0] for t in tasks] == [float(i) for i in range(6)]
        assert not batcher.running
        with pytest.raises(OverloadedError):
            await batcher.submit([1.0])

    run(main)


def test_a_batch_across_a_reload_embeds_each_photo_with_its_own_version() -> None:
    """The server's batch embedding: photos of requests started before a hot reload keep the
    old version's encoder (and whitening), the others take the new one's, in batch order."""
    pytest.importorskip("fastapi")
    from stygig.serving.app import ModelService

    class Version:
        def __init__(self, offset: float) -> None:
            self.offset, self.calls = offset, 0

        def embed(self, tensors: list[np.ndarray]) -> np.ndarray:
            self.calls += 1
            return np.array([[float(t[0]) + self.offset, 0.0] for t in tensors], np.float32)

    old, new = Version(100.0), Version(200.0)
    photos: list[Any] = [(old, np.array([n])) for n in (1, 2)] + [(new, np.array([3]))]
    photos.append((old, np.array([4])))
    vectors = ModelService._embed(photos)
    assert vectors[:, 0].tolist() == [101.0, 102.0, 203.0, 104.0]
    assert (old.calls, new.calls) == (1, 1)  # one encoder call per version
    alone = ModelService._embed([(new, np.array([5]))])
    assert alone[:, 0].tolist() == [205.0] and new.calls == 2

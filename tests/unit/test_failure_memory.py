"""A request that fails frees what its work held when the failure is answered, by reference
counting alone: nothing waits for Python's cyclic garbage collector, which runs a full
collection rarely (review, session 40: the awaiting frame kept the future, the future its
exception, the exception's traceback the frame; 80 truncated 16 MP PNGs held 2 GB).

Each test runs with the collector off and asks a weak reference whether the failed work's
frame (and so its request body or decoded image) is gone once the caller has handled it.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stygig.errors import InputError, InvalidImageError
from stygig.serving.app import ModelService, ServerConfig, _release
from stygig.serving.batching import BatcherConfig, MicroBatcher
from stygig.serving.catalog_api import _OneAtATime
from stygig.serving.metrics import ServerMetrics


class Held:
    """Stands for what a failed request's frames hold: its body, a decoded image."""


@pytest.fixture(autouse=True)
def no_collector() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def failing(refs: list[weakref.ref[Held]]) -> Callable[..., Any]:
    def work(*_: Any) -> Any:
        held = Held()
        refs.append(weakref.ref(held))
        raise InvalidImageError("the image is truncated")

    return work


async def handled(awaitable: Awaitable[Any]) -> None:
    with pytest.raises(InputError):
        await awaitable


def test_work_that_fails_in_the_pool_is_freed_when_handled() -> None:
    service = ModelService(ServerConfig(artifact=Path("unused")), ServerMetrics())
    refs: list[weakref.ref[Held]] = []
    try:
        asyncio.run(handled(service.run(failing(refs))))
    finally:
        service.pool.shutdown()
    assert refs and refs[0]() is None


def test_an_embedding_that_fails_in_a_batch_is_freed_when_handled() -> None:
    refs: list[weakref.ref[Held]] = []

    async def main() -> None:
        batcher = MicroBatcher(failing(refs), BatcherConfig(max_batch=2, max_wait_ms=1))
        await batcher.start()
        try:
            await handled(batcher.submit([np.zeros(2)]))
        finally:
            await batcher.stop()

    asyncio.run(main())
    assert refs and refs[0]() is None


def test_a_catalogue_search_that_fails_is_freed_when_handled() -> None:
    refs: list[weakref.ref[Held]] = []
    pool = ThreadPoolExecutor(1)

    async def main() -> None:
        turns = _OneAtATime(2, 10.0)
        loop = asyncio.get_running_loop()
        await handled(turns.run(lambda: loop.run_in_executor(pool, failing(refs))))

    try:
        asyncio.run(main())
    finally:
        pool.shutdown()
    assert refs and refs[0]() is None


def test_an_answered_error_lets_go_of_its_frames() -> None:
    """The last line of defence for an await this review missed: the error handlers drop the
    traceback of the error they answer (and of every error it chains)."""
    refs: list[weakref.ref[Held]] = []

    def inner() -> None:
        held = Held()
        refs.append(weakref.ref(held))
        raise ValueError("the cause")

    def outer() -> InputError:
        frame_keeps = None
        try:
            try:
                inner()
            except ValueError as e:
                raise InvalidImageError("bad photo") from e
        except InputError as err:
            frame_keeps = err  # a cycle: this frame holds the error, its traceback this frame
        assert frame_keeps is not None
        return frame_keeps

    err = outer()
    _release(err)
    del err
    assert refs and refs[0]() is None

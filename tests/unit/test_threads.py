"""The serving processes' thread limits reach the threads that search (libgomp's OpenMP thread
count is a per-thread setting)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

_CHILD = """
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import faiss

from stygig.serving.app import ModelService, ServerConfig
from stygig.serving.batching import MicroBatcher
from stygig.serving.metrics import ServerMetrics
from stygig.threads import limit_library_threads, limit_this_thread

def omp() -> int:
    return faiss.omp_get_max_threads()

def in_plain_thread() -> int:
    seen = []
    thread = threading.Thread(target=lambda: seen.append(omp()))
    thread.start()
    thread.join()
    return seen[0]

before = ThreadPoolExecutor(1, initializer=limit_this_thread).submit(omp).result()
limit_library_threads(1)
pool = ThreadPoolExecutor(1, initializer=limit_this_thread).submit(omp).result()
batcher = MicroBatcher(lambda batch: batch)
encoder = batcher._thread.submit(omp).result()
work = ModelService(ServerConfig(artifact=Path("unused")), ServerMetrics()).pool.submit(omp)
print(before, omp(), in_plain_thread(), pool, encoder, work.result())
"""


_FIRST = """
import threading

from stygig.threads import limit_library_threads

limit_library_threads(1)  # as stygig serve: before FAISS is loaded
import faiss

seen = []
thread = threading.Thread(target=lambda: seen.append(faiss.omp_get_max_threads()))
thread.start()
thread.join()
print(faiss.omp_get_max_threads(), seen[0])
"""


def _child(code: str) -> list[int]:
    env = {**os.environ, "OMP_NUM_THREADS": "3"}  # every new thread's default, any machine
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,  # a hung child fails the test instead of the suite
    )
    assert out.returncode == 0, out.stderr
    return [int(v) for v in out.stdout.split()]


def test_a_limit_set_before_faiss_loads_reaches_every_thread() -> None:
    main, plain = _child(_FIRST)
    assert main == plain == 1  # a thread no pool made (async jobs, catalogue changes) too


@pytest.mark.slow
def test_the_openmp_limit_reaches_the_serving_threads() -> None:
    before, main, plain, pool, encoder, work = _child(_CHILD)
    assert before == 3  # no limit set: the initializer changes nothing
    assert main == 1  # the caller's own setting
    assert plain == 3  # a thread without the initializer keeps the default ...
    assert pool == encoder == work == 1  # ... the pools that search take the limit


def test_a_pool_that_cannot_start_a_thread_is_a_503_not_a_500() -> None:
    """Review (s38): under a memory cap, eight large decodes left the process unable to start
    a pool thread: the RuntimeError became 500 internal_error. It is a 503 to retry."""
    import asyncio
    import types

    import pytest

    from stygig.errors import OverloadedError
    from stygig.serving.app import ModelService

    class Exhausted:
        def submit(self, *args: object, **kwargs: object) -> None:
            raise RuntimeError("can't start new thread")

    class Broken:
        def submit(self, *args: object, **kwargs: object) -> None:
            raise RuntimeError("something else")

    with pytest.raises(OverloadedError) as e:
        asyncio.run(ModelService.run(types.SimpleNamespace(pool=Exhausted()), print))
    assert e.value.http_status == 503
    with pytest.raises(RuntimeError, match="something else"):  # other faults stay faults
        asyncio.run(ModelService.run(types.SimpleNamespace(pool=Broken()), print))

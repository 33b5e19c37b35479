"""What the Ray test modules share: their marks, and a local Ray cluster on this machine."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

#: Slow, and quiet about the warnings Ray and its dependencies raise on import and shutdown.
RAY_MARKS = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


@contextmanager
def local_ray(*, num_gpus: int = 0) -> Iterator[None]:
    """A Ray cluster of 2 CPUs in this process's session (workers are real processes), with
    ``num_gpus`` declared GPUs: 0 even on a machine that has some, so tests behave alike."""
    import ray

    if ray.is_initialized():  # another module's cluster left running
        ray.shutdown()
    ray.init(num_cpus=2, num_gpus=num_gpus, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()

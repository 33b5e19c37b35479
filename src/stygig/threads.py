"""How many threads NumPy's BLAS may use in a process that also runs an encoder.

OpenBLAS keeps its worker threads busy-waiting after every call. Beside ONNX Runtime's own
thread pool on the same cores they take the encoder's CPU: a server at 10k items measured
client p50 25.9 -> 16.5 ms, encoder 12.9 -> 6.8 ms and 23 -> 11 ms of CPU per request outside
the encoder with BLAS on one thread (``benchmarks/bench_budget.py``). A request needs BLAS only
for matrix-vector products, which one thread streams as fast as memory allows, so processes that
serve or run batches keep BLAS to one thread; library callers keep their own setting.
"""

from __future__ import annotations

from typing import Any

__all__ = ["limit_blas_threads"]

_limiter: Any = None  # kept alive: the limit holds until the process ends


def limit_blas_threads(threads: int = 1) -> None:
    """Limit NumPy's BLAS to ``threads`` threads for the rest of the process."""
    global _limiter
    from threadpoolctl import threadpool_limits

    _limiter = threadpool_limits(limits=threads, user_api="blas")

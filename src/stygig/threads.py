"""How many threads NumPy's BLAS and FAISS's OpenMP may use in a process that also runs an
encoder.

Both keep idle worker threads busy-waiting after every parallel call (OpenBLAS's own threads,
libgomp's team). Beside ONNX Runtime's thread pool on the same cores they take the encoder's CPU:

* BLAS: a server at 10k items measured client p50 25.9 -> 16.5 ms, encoder 12.9 -> 6.8 ms and
  23 -> 11 ms of CPU per request outside the encoder with BLAS on one thread
  (``benchmarks/bench_budget.py``);
* OpenMP: one FAISS call per request that opened a parallel region (a heap's ``heapify``, since
  removed from :func:`stygig.index.top_k`) left libgomp's second thread spinning between
  requests; with it gone, one server at a time on a quiet machine (A B A B, 200 photos x 4),
  efficientnet-lite0 int8 over HTTP at 10k items went from 14.0 to 8.0 ms of server CPU per
  request and from 7.04 to 6.62 ms client p50, ViT-B/32 int8 from 29.9 to 22.7 ms and from
  16.31 to 14.87 ms.

A request needs these libraries only for one query's products and searches, which one thread
does as fast as one core streams memory, so processes that serve keep both to one thread, as
every benchmark of a search does; library callers keep their own setting.

libgomp keeps the OpenMP thread count per thread (``omp_set_num_threads`` sets the caller's
own) and reads every new thread's default from ``OMP_NUM_THREADS`` once, when it loads.
:func:`limit_library_threads` sets both: ``stygig serve`` calls it before FAISS (and so
libgomp) is loaded, which limits every thread of the process (async jobs and catalogue changes
too). Where FAISS was loaded first, only the caller is limited; the serving pools that search
(``stygig-work``, ``stygig-encoder``) also run :func:`limit_this_thread` as their initializer.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["limit_library_threads", "limit_this_thread"]

_limiter: Any = None  # kept alive: the limit holds until the process ends
_omp_threads: int | None = None  # the OpenMP limit new threads take (limit_this_thread)


def limit_library_threads(threads: int = 1) -> None:
    """Limit NumPy's BLAS and FAISS's OpenMP to ``threads`` threads for the rest of the process."""
    global _limiter, _omp_threads
    os.environ["OMP_NUM_THREADS"] = str(threads)  # every thread's, if libgomp loads after this
    import faiss
    from threadpoolctl import threadpool_limits

    _limiter = threadpool_limits(limits=threads, user_api="blas")
    _omp_threads = threads
    faiss.omp_set_num_threads(threads)


def limit_this_thread() -> None:
    """Apply :func:`limit_library_threads`' OpenMP limit to the calling thread, if one was set
    (a thread pool's ``initializer``); without one, nothing changes."""
    if _omp_threads is not None:
        import faiss

        faiss.omp_set_num_threads(_omp_threads)

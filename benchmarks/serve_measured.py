"""``stygig serve`` with the encoder call's CPU counted where it runs: the server that
``bench_budget.py`` measures.

    python benchmarks/serve_measured.py REPORT serve --artifact ... --port ...

The server is the real one (``stygig.cli.main``); this harness only counts, around each ONNX
encoder, the CPU its calls take in this process:

* the calling thread's CPU during each ``encode`` (``time.thread_time``: the event loop's
  thread for a lone request, the batcher's for a batch);
* the threads that appear while the encoder is made (its session's intra-op pool, and one
  that ``import onnxruntime`` starts there and leaves idle), whose CPU the benchmark reads
  from ``/proc``.

Each ``SIGUSR1`` writes REPORT (JSON): ``sequence`` (how many reports so far), ``calls``,
``caller_cpu_s`` and ``encoder_threads`` (native thread ids). A thread of its own waits for
the signal (blocked in every other thread), so the report does not wait for the event loop.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any


def _threads() -> set[int]:
    return {int(t) for t in os.listdir("/proc/self/task")}


class _Account:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls = 0
        self.caller_cpu = 0.0
        self.encoder_threads: set[int] = set()
        self.sequence = 0

    def write(self, path: Path) -> None:
        with self.lock:
            self.sequence += 1
            data = {
                "sequence": self.sequence,
                "calls": self.calls,
                "caller_cpu_s": self.caller_cpu,
                "encoder_threads": sorted(self.encoder_threads),
            }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        tmp.replace(path)  # whole or not at all for the reader


def _install(report: Path) -> None:
    from stygig.encoders.onnx import OnnxEncoder

    account = _Account()
    init, encode = OnnxEncoder.__init__, OnnxEncoder.encode

    def counted_init(self: OnnxEncoder, *args: Any, **kwargs: Any) -> None:
        before = _threads()
        init(self, *args, **kwargs)
        with account.lock:
            account.encoder_threads |= _threads() - before

    def counted_encode(self: OnnxEncoder, *args: Any, **kwargs: Any) -> Any:
        t0 = time.thread_time()
        try:
            return encode(self, *args, **kwargs)
        finally:
            spent = time.thread_time() - t0
            with account.lock:
                account.calls += 1
                account.caller_cpu += spent

    OnnxEncoder.__init__ = counted_init  # type: ignore[method-assign]
    OnnxEncoder.encode = counted_encode  # type: ignore[method-assign]

    def reporter() -> None:
        while True:
            signal.sigwait({signal.SIGUSR1})
            account.write(report)

    threading.Thread(target=reporter, name="bench-report", daemon=True).start()


def main() -> None:
    # Blocked before any thread starts (imports start BLAS threads), so every thread inherits
    # the block and the one waiting thread takes the signal.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    report, args = Path(sys.argv[1]), sys.argv[2:]
    _install(report)
    from stygig.cli import main as stygig_main

    stygig_main(args)


if __name__ == "__main__":
    main()

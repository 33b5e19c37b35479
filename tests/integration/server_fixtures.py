"""Start a real ``stygig serve`` process on a free localhost port, and always stop it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from stygig.build import build_artifact
from stygig.encoders import load_encoder
from stygig.sample_catalog import generate_sample_catalog

REPO = Path(__file__).resolve().parents[2]


def sample_artifact(root: Path) -> tuple[Path, Path]:
    """The sample catalogue and its artifact built with the tiny encoder: (catalog dir, art)."""
    csv_path = generate_sample_catalog(root / "catalog")
    art = build_artifact(csv_path, root / "artifact", load_encoder("tiny"), progress=False).path
    return csv_path.parent, art


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A running server process."""

    process: subprocess.Popen[bytes]
    url: str
    port: int
    log_path: Path
    ready_seconds: float

    def log_lines(self) -> list[str]:
        """What the server wrote to stderr/stdout so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait for the graceful exit (SIGKILL only if it hangs); the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return int(self.process.returncode)


def wait_ready(
    url: str, process: subprocess.Popen[bytes] | threading.Thread, timeout: float = 60.0
) -> float:
    """Seconds until ``GET /ping`` answered 200; raises if the server's process (or thread, for
    one run in this process) ended or it timed out."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if isinstance(process, threading.Thread):
            if not process.is_alive():
                raise RuntimeError("the server's thread ended before it was ready")
        elif process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before it was ready")
        try:
            if httpx.get(url + "/ping", timeout=1.0).status_code == 200:
                return time.perf_counter() - t0
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"server at {url} not ready after {timeout:.0f} s")


def until(condition: Callable[[], bool], seconds: float = 120.0) -> bool:
    """Whether ``condition()`` became true within ``seconds`` (polled; a deadline, never a
    sleep standing in for the event)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def metric_total(text: str, prefix: str) -> float:
    """The sum of the samples of a Prometheus exposition ``text`` whose lines start with
    ``prefix`` (a metric name, with labels as far as they are given)."""
    return sum(float(x.rsplit(" ", 1)[1]) for x in text.splitlines() if x.startswith(prefix))


def start_process(
    args: Sequence[str],
    log_path: Path,
    env: dict[str, str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.Popen[bytes]:
    """``python -m stygig.cli <args>`` with output to ``log_path`` (``preexec_fn``: e.g. a
    memory limit set in the child before it starts)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "stygig.cli", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=full_env,
            preexec_fn=preexec_fn,
        )


def exit_code(process: subprocess.Popen[bytes], timeout: float = 60.0) -> int:
    """Wait for ``process`` to exit (killed if it has not after ``timeout``); its exit code."""
    try:
        return process.wait(timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)


@contextmanager
def running_server(
    artifact: Path,
    log_path: Path,
    *extra: str,
    port_from_env: bool = False,
    preexec_fn: Callable[[], None] | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[Server]:
    """A server on a free port (``--port``, or ``SAGEMAKER_BIND_TO_PORT`` when asked);
    ``preexec_fn`` runs in the child before it starts (e.g. a memory limit), ``env`` adds to
    its environment."""
    port = free_port()
    args = ["serve", "--artifact", str(artifact), "--host", "127.0.0.1", *extra]
    env = {**(env or {}), **({"SAGEMAKER_BIND_TO_PORT": str(port)} if port_from_env else {})}
    if not port_from_env:
        args += ["--port", str(port)]
    process = start_process(args, log_path, env, preexec_fn)
    server = Server(process, f"http://127.0.0.1:{port}", port, log_path, 0.0)
    try:
        server.ready_seconds = wait_ready(server.url, process)
        yield server
    finally:
        server.terminate()

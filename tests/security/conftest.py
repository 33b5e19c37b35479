"""Shared pieces of the security tests: a sample artifact, and real servers under a memory cap.

Every test here attacks a real ``stygig serve`` process on loopback. Where an attack is a bomb
(memory or CPU), the server runs under ``RLIMIT_AS`` so that a regression kills the server (and
fails the test), never the machine running the suite.
"""

from __future__ import annotations

import resource
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.integration.server_fixtures import Server, running_server

#: Address space a capped test server may use: the app with the tiny encoder takes about 0.8 GB
#: of virtual memory; anything a bomb adds beyond the cap kills the server.
SERVER_MEMORY_CAP = 3 * 1024**3


def _cap_memory(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


@contextmanager
def capped_server(
    artifact: Path,
    log_path: Path,
    *extra: str,
    memory_cap: int | None = SERVER_MEMORY_CAP,
    env: dict[str, str] | None = None,
) -> Iterator[Server]:
    """``stygig serve`` on a free loopback port, under ``memory_cap`` bytes of address space."""
    cap = (lambda: _cap_memory(memory_cap)) if memory_cap else None
    with running_server(artifact, log_path, *extra, preexec_fn=cap, env=env) as server:
        yield server

"""A client that does not read its answers (review, session 50): judged by what it drains, not
by how long writing stays paused, with an in-memory transport whose write buffer the test sets
and the protocol's checks called at chosen moments (no clock raced against)."""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.config import Config
from uvicorn.server import ServerState

from stygig.serving import protocol as proto
from tests.unit.test_protocol_eof import MemoryTransport, _ok


class BufferedTransport(MemoryTransport):
    """A transport whose write buffer holds ``buffered`` bytes; ``abort`` is recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.buffered = 0
        self.aborted = False

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def abort(self) -> None:
        self.aborted = self.closing = True


def _paused() -> tuple[Any, BufferedTransport]:
    """A connection whose writing paused with 6 MB buffered for the client."""
    config = Config(_ok, lifespan="off", log_level="critical")
    config.load()
    protocol = proto.head_deadline_protocol(10.0)(
        config=config, server_state=ServerState(), app_state={}
    )
    transport = BufferedTransport()
    protocol.connection_made(transport)
    transport.buffered = 6_000_000
    protocol.pause_writing()
    return protocol, transport


def _deadlines(drained_per_deadline: list[int]) -> list[bool]:
    """Whether the connection is aborted after each write deadline, the client having read
    the given bytes since the one before."""

    async def run() -> list[bool]:
        protocol, transport = _paused()
        aborted = []
        for drained in drained_per_deadline:
            transport.buffered -= drained
            protocol._write_expired()  # what the deadline's timer calls
            aborted.append(transport.aborted)
        protocol.connection_lost(None)
        return aborted

    return asyncio.run(run())


def test_a_client_reading_steadily_is_never_cut_off() -> None:
    """Paused all along (an answer is written in one piece), yet 100 KB read per deadline:
    kept, deadline after deadline."""
    assert _deadlines([100_000] * 6) == [False] * 6


def test_a_client_that_stops_reading_is_closed() -> None:
    assert _deadlines([100_000, 100_000, 1_000]) == [False, False, True]
    assert _deadlines([proto.WRITE_PROGRESS_BYTES - 1]) == [True]


def test_a_client_reading_too_slowly_counts_as_slow_at_the_limit() -> None:
    """At the connection limit: paused for SLOW_READER_S and drained at under 32 KiB/s since
    (what a slow body is, the other way); not before, and not a client reading fast."""

    async def judged(drained: int, after_s: float) -> tuple[bool, int | None]:
        """(reading slowly, the kind _slowness gives the connection limit)."""
        protocol, transport = _paused()
        transport.buffered -= drained
        now = protocol._write_paused_since + after_s
        found = protocol._reading_slowly(now), protocol._slowness(now)
        protocol.connection_lost(None)
        return found[0], None if found[1] is None else found[1][0]

    assert asyncio.run(judged(3_000, 1.5)) == (True, 2)  # 2 KB/s for 1.5 s: closed first
    assert not asyncio.run(judged(3_000, 0.5))[0]  # paused for under SLOW_READER_S
    assert not asyncio.run(judged(1_500_000, 1.5))[0]  # 1 MB/s: not slow


def test_the_request_being_answered_is_known_to_the_protocol() -> None:
    """uvicorn's connection_lost tells only its newest request of a disconnect; the protocol
    tracks the one being answered through uvicorn's _start_asgi_task (a uvicorn without it
    would leave that request writing to a closed transport)."""

    async def run() -> Any:
        config = Config(_ok, lifespan="off", log_level="critical")
        config.load()
        protocol = proto.head_deadline_protocol(10.0)(
            config=config, server_state=ServerState(), app_state={}
        )
        protocol.connection_made(MemoryTransport())
        protocol.data_received(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        answering = protocol._answering
        protocol.connection_lost(None)
        return answering

    assert asyncio.run(run()) is not None

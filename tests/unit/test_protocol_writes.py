"""A client that does not read its answers (review, session 50): judged by what it drains, not
by how long writing stays paused, with an in-memory transport whose write buffer the test sets."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
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


def _connected(app: Any = _ok) -> tuple[Any, BufferedTransport]:
    config = Config(app, lifespan="off", log_level="critical")
    config.load()
    protocol = proto.head_deadline_protocol(10.0)(
        config=config, server_state=ServerState(), app_state={}
    )
    transport = BufferedTransport()
    protocol.connection_made(transport)
    return protocol, transport


async def _drain(per_tick: int, ticks: int) -> tuple[bool, bool]:
    """Writing paused with 6 MB buffered, the client reading ``per_tick`` bytes every 10 ms for
    ``ticks`` ticks: (aborted, judged slow at the connection limit at the end)."""
    protocol, transport = _connected()
    transport.buffered = 6_000_000
    protocol.pause_writing()
    for _ in range(ticks):
        await asyncio.sleep(0.01)
        transport.buffered = max(0, transport.buffered - per_tick)
        if transport.aborted:
            break
    slow = protocol._slowness(proto.time.monotonic())
    aborted = transport.aborted
    protocol.connection_lost(None)
    return aborted, slow is not None and slow[0] == 2


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """The deadlines at a test's pace: 64 KiB per 0.1 s to keep writing, 32 KiB/s at the limit."""
    monkeypatch.setattr(proto, "WRITE_TIMEOUT_S", 0.1)
    monkeypatch.setattr(proto, "SLOW_READER_S", 0.1)


@pytest.mark.usefixtures("quick")
def test_a_client_reading_steadily_is_never_cut_off() -> None:
    """10 KB per 10 ms (1 MB/s) for 0.6 s: paused all along, six deadlines passed, kept."""
    aborted, slow = asyncio.run(_drain(10_000, 60))
    assert not aborted and not slow


@pytest.mark.usefixtures("quick")
def test_a_client_that_stops_reading_is_closed() -> None:
    aborted, _ = asyncio.run(_drain(0, 60))
    assert aborted


@pytest.mark.usefixtures("quick")
def test_a_client_reading_too_slowly_counts_as_slow_at_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """200 bytes per 10 ms (20 KB/s: under 32 KiB/s) for 0.15 s, the write deadline further
    off: judged slow at the connection limit once paused for SLOW_READER_S, not before."""
    monkeypatch.setattr(proto, "WRITE_TIMEOUT_S", 10.0)
    assert asyncio.run(_drain(200, 15)) == (False, True)
    assert asyncio.run(_drain(200, 3)) == (False, False)  # paused for 30 ms only
    assert asyncio.run(_drain(10_000, 15)) == (False, False)  # 1 MB/s: not slow


def test_the_request_being_answered_is_known_to_the_protocol() -> None:
    """uvicorn's connection_lost tells only its newest request of a disconnect; the protocol
    tracks the one being answered through uvicorn's _start_asgi_task (a uvicorn without it
    would leave that request writing to a closed transport)."""

    async def run() -> Any:
        protocol, _ = _connected()
        protocol.data_received(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        answering = protocol._answering
        protocol.connection_lost(None)
        return answering

    assert asyncio.run(run()) is not None

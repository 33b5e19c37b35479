"""What a client's half-close (``shutdown(SHUT_WR)``) leaves to answer, at the protocol level
with an in-memory transport (no sockets, no timing): the requests it sent whole are answered,
also past the pipeline's bound; a body it cut short is not waited for."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from stygig.serving.protocol import MAX_PIPELINE, head_deadline_protocol


class MemoryTransport(asyncio.Transport):
    """Collects what is written; ``close`` marks it closing, as a socket transport would."""

    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closing = False

    def write(self, data: Any) -> None:
        if not self.closing:
            self.out += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5), "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


async def _ok(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


async def _half_close(data: bytes) -> tuple[bool, int]:
    """``data`` received, then EOF: (whether the connection stays open for answers, the
    answers written once everything settled)."""
    config = Config(_ok, lifespan="off", log_level="critical")
    config.load()
    protocol = head_deadline_protocol(10.0)(config=config, server_state=ServerState(), app_state={})
    transport = MemoryTransport()
    protocol.connection_made(transport)
    protocol.data_received(data)
    keep = bool(protocol.eof_received())
    if not keep:
        transport.close()  # what asyncio does when eof_received returns a false value
        protocol.connection_lost(None)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while protocol.tasks and loop.time() < deadline:
        await asyncio.sleep(0.01)
    return keep, transport.out.count(b"HTTP/1.1 200")


GET = b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize("requests", [1, 3, MAX_PIPELINE + 3])
def test_whole_requests_are_answered_after_a_half_close(requests: int) -> None:
    # Past the bound, the queued ones are (review, s47: the request dropped unread looked like
    # a body cut short, and the connection closed with 1 answer of 17).
    keep, answers = asyncio.run(_half_close(GET * requests))
    assert keep and answers == min(requests, MAX_PIPELINE + 1)


def test_a_body_cut_short_is_not_waited_for() -> None:
    # Session 47: the connection stayed open (CLOSE-WAIT) until the body's deadline, 15 s,
    # and the request was logged 408 instead of the client's 499.
    head = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
    keep, _ = asyncio.run(_half_close(head + b"\xff\xd8\xff" * 10))
    assert not keep

"""HTTP/1.1 connections with a deadline for each request's head (uvicorn's h11 protocol).

uvicorn closes a connection that stays idle *between* requests (``timeout_keep_alive``), but has
no limit on the time before the first request, nor on a request head that arrives a byte at a
time. A client could hold every connection slot (``--max-connections``) by opening sockets and
sending nothing: a lock-out that needs no token. Here a request head must be complete within
``head_timeout_s`` of the connection opening, or of its first byte on a kept-alive connection;
otherwise the connection is closed. Idle kept-alive connections keep uvicorn's longer timeout, so
load balancers that reuse connections are not surprised.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from stygig.errors import InvalidOptionsError

__all__ = ["head_deadline_protocol"]


class _HeadDeadlineProtocol(H11Protocol):
    """:class:`H11Protocol` that closes a connection whose request head is late."""

    head_timeout_s = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_expired)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_expired(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()  # nothing was answered yet: there is no one to answer

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:
            self._arm()  # the first bytes of a new request head: its clock starts now
        super().data_received(data)

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:
            self._disarm()  # the head is complete; body limits are the app's business

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def head_deadline_protocol(head_timeout_s: float) -> type[H11Protocol]:
    """The h11 protocol class for uvicorn's ``http=`` setting, with this head deadline."""
    if head_timeout_s <= 0:
        raise InvalidOptionsError("the request-head timeout must be positive")
    return type(
        "HeadDeadlineProtocol", (_HeadDeadlineProtocol,), {"head_timeout_s": head_timeout_s}
    )

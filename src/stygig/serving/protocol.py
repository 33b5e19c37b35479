"""HTTP/1.1 connections with a deadline for each request's head (uvicorn's httptools protocol).

uvicorn closes a connection that stays idle *between* requests (``timeout_keep_alive``), but has
no limit on the time before the first request, nor on a request head that arrives a byte at a
time. A client could hold every connection slot (``--max-connections``) by opening sockets and
sending nothing: a lock-out that needs no token. Here a request head must be complete within
``head_timeout_s`` of the connection opening, or of its first byte on a kept-alive connection;
otherwise the connection is closed. Idle kept-alive connections keep uvicorn's longer timeout, so
load balancers that reuse connections are not surprised.

The parser is llhttp (through ``httptools``), Node's C parser: about 0.4 ms less per request than
the pure-Python h11 here (``benchmarks/bench_budget.py``), and as strict about framing.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from stygig.errors import InvalidOptionsError

__all__ = ["head_deadline_protocol"]


class _HeadDeadlineProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` that closes a connection whose request head is late."""

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
        if not self.transport.is_closing():
            self.transport.close()  # the head never completed: there is no one to answer

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # the first request's head: its clock starts with the connection

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()  # the first byte of a later request's head on a kept-alive connection

    def on_headers_complete(self) -> None:
        self._disarm()  # the head is complete; body limits are the app's business
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def head_deadline_protocol(head_timeout_s: float) -> type[HttpToolsProtocol]:
    """The protocol class for uvicorn's ``http=`` setting, with this head deadline."""
    if head_timeout_s <= 0:
        raise InvalidOptionsError("the request-head timeout must be positive")
    return type(
        "HeadDeadlineProtocol", (_HeadDeadlineProtocol,), {"head_timeout_s": head_timeout_s}
    )

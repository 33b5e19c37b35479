"""HTTP/1.1 connections with a deadline for each request's head (uvicorn's httptools protocol).

uvicorn closes a connection that stays idle *between* requests (``timeout_keep_alive``), but has
no limit on the time before the first request, nor on a request head that arrives a byte at a
time. A client could hold every connection slot (``--max-connections``) by opening sockets and
sending nothing: a lock-out that needs no token. Here a request head must be complete within
``head_timeout_s`` of the connection opening, or of its first byte on a kept-alive connection;
otherwise the connection is closed. Idle kept-alive connections keep uvicorn's longer timeout, so
load balancers that reuse connections are not surprised.

A request head is also limited in size (``head_limit_bytes``, the request line and every header
together). llhttp has no such limit and ``httptools`` gathers a header's value piece by piece, so
without one a single client streaming headers for the whole head deadline grows the server by
tens of megabytes per connection (three such connections took a 4 GB process down) and holds
the event loop, and so every other client, for seconds. A head over the limit is answered 431
and the connection closed, before the app sees it.

Past the connection limit (``--max-connections``) a request is answered as every other refusal
of the server: a JSON 503 ``too_many_connections`` with ``Retry-After``, not uvicorn's plain-text one, and the
connection closed; health checks are still answered (:data:`HEALTH_PATHS`).

The parser is llhttp (through ``httptools``), Node's C parser: about 0.4 ms less per request than
the pure-Python h11 here (``benchmarks/bench_budget.py``), and as strict about framing.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from stygig.errors import InputError, InvalidOptionsError, OverloadedError
from stygig.serving.responses import json_bytes

__all__ = ["HEAD_LIMIT_BYTES", "head_deadline_protocol"]

#: The largest request head (request line and headers) read: 64 KiB, four times h11's default
#: and eight times a typical proxy's header buffer; a SageMaker request's head is under 2 KiB.
HEAD_LIMIT_BYTES = 64 * 1024


class HeadTooLargeError(InputError):
    """The request line and headers together are over the limit."""

    http_status = 431
    code = "head_too_large"


#: Answered past the connection limit (``--max-connections``): they cost next to nothing.
HEALTH_PATHS = frozenset({b"/ping", b"/healthz", b"/readyz"})


_BUSY = json_bytes(
    OverloadedError(
        "the server has as many connections as it takes (--max-connections); retry shortly",
        code="too_many_connections",
    ).to_dict()
)


async def _busy(scope: Any, receive: Any, send: Any) -> None:
    """The answer past the connection limit (uvicorn's own is plain text); the body is not
    read and the connection is closed, as uvicorn does."""
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(_BUSY)).encode()),
        (b"retry-after", b"1"),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": _BUSY})


class _HeadDeadlineProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` that closes a connection whose request head is late, and
    answers 431 to one whose head is too large."""

    head_timeout_s = 10.0
    head_limit_bytes = HEAD_LIMIT_BYTES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        # Bytes of the current request head received so far; None while no head is being
        # read (a body, or a request being answered).
        self._head_bytes: int | None = 0
        self._heads = 0  # request heads completed on this connection

    def data_received(self, data: bytes) -> None:
        if self._head_bytes is None:
            super().data_received(data)
            return
        room = self.head_limit_bytes - self._head_bytes
        if len(data) <= room:
            self._head_bytes += len(data)
            super().data_received(data)
            return
        # Feed the head's share only: if the head completes within it, the rest is its body
        # (or the next request), fed with the state that follows.
        heads = self._heads
        if room > 0:
            self._head_bytes += room
            super().data_received(data[:room])
        if self._heads == heads:  # the head is still incomplete at the limit
            self._refuse_head()
        elif not self.transport.is_closing():
            self.data_received(data[room:])

    def _refuse_head(self) -> None:
        self._disarm()
        self._head_bytes = None
        if self.transport.is_closing():
            return
        err = HeadTooLargeError(
            f"the request line and headers are over the {self.head_limit_bytes:,}-byte limit"
        )
        self.logger.warning("request head over %d bytes: answered 431", self.head_limit_bytes)
        body = json_bytes(err.to_dict())
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\nconnection: close\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )
        self.transport.close()

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
        self._head_bytes = None
        self._heads += 1
        limit = self.limit_concurrency
        if limit is None or (len(self.connections) < limit and len(self.tasks) < limit):
            super().on_headers_complete()
            return
        # Past the limit. A health check is answered however many connections are open
        # (SageMaker replaces an instance whose /ping fails during a burst of slow uploads);
        # anything else gets the JSON 503, through uvicorn's own request cycle.
        app = self.app
        if self.url.split(b"?", 1)[0] not in HEALTH_PATHS:
            self.logger.warning("over the connection limit (%d): answered 503", limit)
            self.app = _busy
        self.limit_concurrency = None
        try:
            super().on_headers_complete()
        finally:
            self.limit_concurrency = limit
            self.app = app

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_bytes = 0  # whatever arrives next on this connection is a new head

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

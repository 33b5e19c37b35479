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

A request's body is the app's to bound (:class:`stygig.serving.app._Boundary`), but what
comes between and after its chunks is not: chunk headers, their extensions and trailer fields
are parsed here, and llhttp and ``httptools`` bound none of them (an endless trailer section
after a zero-size chunk to the public ``/ping`` took a 4 GB server down in 10 s: review,
session 36). So trailers are refused (400: StyGig reads none), and the framing of a chunked
body may take at most ``head_limit_bytes`` plus :data:`CHUNK_FRAMING_BYTES` per chunk (431 and
the connection closed). And a request's message must end within ``body_timeout_s`` (plus
:data:`BODY_GRACE_S`, so that the app's own 408 comes first where it reads the body) of its
head: the app's body deadline acts only while the app reads, and a body trickled to a route
that never reads it held a connection slot for as long as it kept coming.

Past the connection limit (``--max-connections``) a request is answered as every other refusal
of the server: a JSON 503 ``too_many_connections`` with ``Retry-After``, not uvicorn's plain-text one, and the
connection closed; health checks are still answered (:data:`HEALTH_PATHS`). Before that, room is
made: idle kept-alive connections are closed, then requests arriving too slowly
(:data:`SLOW_HEAD_S`, :data:`SLOW_BODY_BYTES_PER_S`) are answered 408 and closed.

A request llhttp cannot parse is answered 400 ``malformed_http`` (JSON) and closed; one whose
method it does not know (it knows HTTP's and WebDAV's, among others) is answered 501
``method_not_implemented`` (RFC 9110 15.6.2) and closed alike. A method it knows that a route
does not take reaches the app: 405.

The parser is llhttp (through ``httptools``), Node's C parser: about 0.4 ms less per request than
the pure-Python h11 here (``benchmarks/bench_budget.py``), and as strict about framing.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from stygig.errors import InputError, InvalidOptionsError, OverloadedError
from stygig.serving.responses import json_bytes

__all__ = ["CLOSED_BY_SERVER", "HEAD_LIMIT_BYTES", "SERVER_CLOSED_STATUS", "head_deadline_protocol"]

#: The largest request head (request line and headers) read: 64 KiB, four times h11's default
#: and eight times a typical proxy's header buffer; a SageMaker request's head is under 2 KiB.
HEAD_LIMIT_BYTES = 64 * 1024
#: Framing allowed per chunk of a chunked body beyond the head limit: a chunk's size in hex
#: and its line ends (a 16-digit size and two CRLFs: 20 bytes), with room for extensions.
CHUNK_FRAMING_BYTES = 64
#: How long after the app's own body deadline the connection is closed if the message has not
#: ended (the app answers 408 first when it is the one reading).
BODY_GRACE_S = 5.0
#: Requests a connection may have queued behind the one being answered (HTTP/1.1
#: pipelining). uvicorn queued every pipelined request a read held and read on after each
#: answer: one connection streaming ``GET /healthz`` grew the server by 25 MB/s to its memory
#: cap (review, session 42). Past the bound, the requests queued are answered, those after them
#: are dropped unread and the connection is closed; reading pauses while requests are queued
#: (uvicorn resumes it for a request that reads its body, whose bytes are bounded).
MAX_PIPELINE = 16
#: Chunks of a chunked body that may be of any size; after them, the chunks must average
#: :data:`MIN_CHUNK_BYTES` (each chunk costs the event loop a few Python calls: 6 MB sent in
#: 1-byte chunks held it for 6 s of CPU, review, session 42). curl sends 8-64 KiB chunks;
#: a client streaming JSON from a generator sends a chunk per token, and a body under 1 KiB
#: never reaches the rule.
FREE_CHUNKS = 1024
MIN_CHUNK_BYTES = 1024
#: How long a kept-alive connection must have been idle before the connection limit may close
#: it: a client reusing a connection at once may have a request on its way (review of session
#: 42's fixes: immediate eviction reset requests already sent).
IDLE_EVICTABLE_S = 2.0
#: At the connection limit, with too few idle kept-alive connections to close, a request that
#: is arriving too slowly gives up its connection too: a head not complete 1 s after it began
#: (a client's head arrives in one piece, a few milliseconds after it connects), or a body
#: arriving at under 32 KiB/s on average once 1 s has passed since its head (slower than any
#: phone's upload; 256 KiB/s in all across 8 such bodies). Before, 256 sockets trickling a
#: byte every 14 s held every slot until their 60 s body deadline, and reopened: a lock-out
#: that cost the client next to nothing. Late heads go first (oldest first), then bodies
#: (slowest first); a connection whose reading the server itself paused is never judged.
SLOW_HEAD_S = 1.0
SLOW_BODY_BYTES_PER_S = 32 * 1024
SLOW_BODY_AFTER_S = 1.0
#: A client that does not read its answers. While the transport's buffer is full (writing
#: paused past 64 KiB), what it drains is measured: at the connection limit, a connection whose
#: buffer has drained at under SLOW_BODY_BYTES_PER_S for SLOW_READER_S may be closed; and any
#: connection whose buffer drains less than WRITE_PROGRESS_BYTES in WRITE_TIMEOUT_S is closed.
#: Twenty sockets pipelining 16 x GET /openapi.json and never reading held a --max-connections
#: 20 server's every slot, each answer stuck for as long as the client liked (73 s measured:
#: review, session 50). Progress, not the pause's length, is judged: an answer is written in
#: one piece, so a client reading a 6 MB photo steadily at 40 KB/s stays paused for minutes
#: (a deadline on the pause cut it off: review of that fix).
SLOW_READER_S = 1.0
WRITE_TIMEOUT_S = 30.0
WRITE_PROGRESS_BYTES = 64 * 1024
#: The key of a request's ``scope["state"]`` under which a request whose connection the server
#: closed before its answer was complete holds ``(status, code)``: the access log and metrics
#: show that, not 499.
CLOSED_BY_SERVER = "stygig.closed_by_server"
#: The status of such a request where the server wrote no answer of its own (nginx's 444: closed
#: without a response), with a code naming why: ``answer_not_read`` (a client not reading its
#: answers, closed at the connection limit or after WRITE_TIMEOUT_S), ``head_timeout``,
#: ``request_timeout``, ``discard_limit``. 499 is left to a client that closed the connection
#: itself: an answer the server cut off was logged and counted as the client's 499.
SERVER_CLOSED_STATUS = 444
#: Set in a request's ``scope["state"]`` when its connection was closed or lost before its
#: answer was complete: uvicorn's ``send`` then drops what the app sends without a word, and
#: the app reads this to log a disconnect (499), not the status it meant to send.
CUT_OFF = "stygig.cut_off"
#: Body bytes a connection may send after their requests were answered (a refusal before the
#: body was read: 401, 403, 415, 413), read and dropped so the client can read its answer;
#: past this, over the connection's life, it is closed. Counted per connection, not per
#: request: a client repeating refused 6 MB uploads on one connection pushed 24 GB in 10 s
#: through the event loop (review, session 40). ``serve`` sets 4 x the body limit.
DISCARD_LIMIT_BYTES = 4 * 6 * 1024 * 1024


class HeadTooLargeError(InputError):
    """The request line and headers together are over the limit."""

    http_status = 431
    code = "head_too_large"


class TrailersRefusedError(InputError):
    """Header fields after a chunked body: StyGig reads none."""

    code = "trailers_refused"


class ChunksTooSmallError(InputError):
    """A chunked body in more, smaller chunks than the server reads."""

    code = "chunks_too_small"


class RequestTooSlowError(InputError):
    """A request arriving too slowly, closed at the connection limit for another client's."""

    http_status = 408
    code = "request_too_slow"


class UpgradeWithBodyError(InputError):
    """A request asking to upgrade the connection (``Connection: upgrade`` and ``Upgrade``)
    with a body: llhttp stops at such a head for the new protocol, so the body would be read
    as the next request."""

    code = "upgrade_with_body"


class MethodNotImplementedError(InputError):
    """A request method the parser does not know (RFC 9110 15.6.2: 501, not 400)."""

    http_status = 501
    code = "method_not_implemented"


class HttpVersionError(InputError):
    """A request line naming a version other than HTTP/1.0 and 1.1 (RFC 9110 15.6.6)."""

    http_status = 505
    code = "http_version_not_supported"


#: A message's first bytes kept for :meth:`_HeadDeadlineProtocol.send_400_response`: room for
#: its method and the space after it (the longest method llhttp knows has 13 characters).
METHOD_BYTES = 64
#: What a message must begin with for an unknown method to be a 501: a method's syntax (RFC
#: 9110 9.1: a token) up to a space, or to the end of what has arrived. Anything else that
#: llhttp refuses as a method (a TLS handshake, JSON, a status line, a leading space,
#: ``GET`` then a line end) is no method at all: 400 ``malformed_http``.
_METHOD_START = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+(?: |$)")
#: Empty lines before a request line, which llhttp skips (RFC 9112 2.2).
_EMPTY_LINES = re.compile(rb"[\r\n]*")


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
    body_timeout_s = 60.0
    discard_limit_bytes = DISCARD_LIMIT_BYTES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._message_timer: asyncio.TimerHandle | None = None
        # Bytes of the current request head received so far; None while no head is being
        # read (a body, or a request being answered).
        self._head_bytes: int | None = 0
        self._heads = 0  # request heads completed on this connection
        # While a message's body is being read: the bytes fed to the parser since its head, of
        # which body bytes, and its chunks; None between messages.
        self._message_bytes: int | None = None
        self._body_bytes = 0
        self._chunks = 0
        self._chunked = False  # the current message's body is chunked (framing is counted)
        self._discarded = 0  # body bytes received after their request was answered
        # Body pieces of the current message parsed from this read, handed to uvicorn at once
        # (uvicorn appends each piece to the body with bytes +=: quadratic in the pieces).
        self._pieces: list[bytes] = []
        self._overflow = False  # over MAX_PIPELINE: what is queued is answered, then closed
        # A later message refused while earlier requests still await their answers: (status,
        # reason, error), written once they are answered, then the connection closes.
        self._refused: tuple[int, str, InputError] | None = None
        # While writing is paused (the client is not reading): since when, and the deadline.
        self._write_paused_since: float | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._buffered_at_pause = 0  # the transport's write buffer when writing paused
        self._buffered_at_check = 0  # ... and when the write deadline was last armed
        self._answering: RequestResponseCycle | None = None  # see _start_asgi_task
        self._peer_done = False  # the client shut down its sending side (a half-close)
        # When the last answer ended (time.monotonic): the loop's clock counts milliseconds,
        # so connections answered within one had equal keep-alive deadlines and the "longest
        # idle" was chosen by object address (review, session 45: a flaky test).
        self._answered_at = 0.0
        # When the current request's head began (the connection opened, or its first byte on
        # a kept-alive connection), and when its body began (its head completed).
        self._head_since = 0.0
        self._body_since = 0.0
        # The current message's first bytes (up to METHOD_BYTES), while where it began is
        # known: b"" from the connection's start and after a message that ended with a part
        # fed to the parser (see _received); None after one that ended within a part (after a
        # chunked body: the next began at an unknown offset).
        self._start: bytes | None = b""
        self._begun = False  # the parser began a message since the last one ended
        # The current message's Content-Length while its body is read (None: chunked), so
        # that the part fed to the parser ends with it; see _received.
        self._length: int | None = None
        # The last bytes (up to 3) of a request head still being read: its empty line may
        # straddle two reads.
        self._tail = b""

    def eof_received(self) -> bool | None:  # type: ignore[override]  # asyncio.Protocol's
        """The client has sent all it will (``shutdown(SHUT_WR)``: ``nc -N``, some proxies): a
        request being answered, or queued, still gets its answer, then the connection closes.
        Before, the transport closed at once and the answer was lost (review, session 45).
        A request whose body is not all there never will be: its connection closes, and the
        app sees the client gone (499), not a body that waits for its deadline (408 after
        15 s, the connection held meanwhile)."""
        self._peer_done = True
        if self._message_bytes is not None and not self._overflow:
            return None  # a body cut short: nothing to answer (a dropped one has no answer)
        busy = self.cycle is not None and not self.cycle.response_complete
        return True if busy or self.pipeline else None

    def data_received(self, data: bytes) -> None:
        if self._refused is not None:  # nothing after a refused message is parsed
            self._discarded += len(data)
            if self._discarded > self.discard_limit_bytes and not self.transport.is_closing():
                self.logger.warning("bytes after a refused message over the bound: closed")
                self._close("discard_limit")
            return
        self._received(data)
        self._flush_body()

    def _flush_body(self) -> None:
        if self._pieces:
            body = self._pieces[0] if len(self._pieces) == 1 else b"".join(self._pieces)
            self._pieces = []
            super().on_body(body)

    def _received(self, data: bytes) -> None:
        """``data`` to the parser in parts that end where a message does wherever that is
        known: a request head at its empty line (:meth:`_head_end`), a body at its
        Content-Length. So a message begins a part, its head is counted toward the limit from
        its first byte, and its first bytes are known (:meth:`_unknown_method`). Before, a head
        that began in the read where another message ended was counted from the next read
        only: the limit held one read (up to 256 KiB) more, and an unknown method there was a
        400. A chunked body's end is not known: it is fed in parts of at most the head limit,
        and a head that begins within one is counted from the next part (as every pipelined
        head was before), so after a chunked body in the same read the limit holds at most
        one such part (64 KiB) more. Counting it from the part's start instead refused heads
        well under the limit: the part's other heads and framing were counted too (review,
        session 52: a 30 KB head after a chunked POST and a 40 KB GET was a 431)."""
        view = memoryview(data)
        at = 0
        while at < len(data) and not self.transport.is_closing() and self._refused is None:
            if self._head_bytes is None:
                at = self._received_body(data, view, at)
            else:
                at = self._received_head(data, view, at)

    def _received_head(self, data: bytes, view: memoryview, at: int) -> int:
        """The part of ``data`` from ``at`` that is the current request head (all of it, up
        to the limit); where the next part begins."""
        assert self._head_bytes is not None
        room = self.head_limit_bytes - self._head_bytes
        end = self._head_end(data, at, at + room)
        if end is not None:  # what follows is its body or the next message: fed apart
            self._head_bytes += end - at
            self._feed(data if at == 0 and end == len(data) else view[at:end])
            return end
        if len(data) - at <= room:
            self._head_bytes += len(data) - at
            self._feed(data if at == 0 else view[at:])
            return len(data)
        # Feed the head's share only: if the head completes within it (its end was not found
        # above: the parser is the judge), the rest is fed with the state that follows.
        heads = self._heads
        if room > 0:
            self._head_bytes += room
            self._feed(view[at : at + room])
        if self._heads == heads:  # the head is still incomplete at the limit
            self._refuse_head()
            return len(data)
        return at + room

    def _received_body(self, data: bytes, view: memoryview, at: int) -> int:
        """The part of ``data`` from ``at`` that is the current message's body (or, chunked,
        up to the head limit of it and what follows); where the next part begins."""
        stop = len(data)
        if self._message_bytes is not None:
            left = None if self._length is None else self._length - self._body_bytes
            if left is not None and 0 < left < stop - at:
                stop = at + left
            elif self._chunked:
                stop = min(stop, at + self.head_limit_bytes)
        heads = self._heads
        self._feed(data if at == 0 and stop == len(data) else view[at:stop])
        # A chunked message that goes on: its framing so far. Not counted in a part where a
        # head completed (the part's bytes before it were another message's: review, session
        # 36), so the count may miss up to one part of framing.
        if self._message_bytes is not None and self._chunked and self._heads == heads:
            self._message_bytes += stop - at
            framing = self._message_bytes - self._body_bytes
            if framing > self.head_limit_bytes + CHUNK_FRAMING_BYTES * self._chunks:
                self._refuse_framing()
        return stop

    def _head_end(self, data: bytes, at: int, stop: int) -> int | None:
        """Where the request head being read ends in ``data`` (the offset after its empty
        line), if it does from ``at`` to ``stop``. llhttp ends every line of a head with CRLF
        (a bare LF is refused), and no line but the last is empty: the head ends at its first
        CRLF CRLF, which may straddle two reads (:attr:`_tail`). Before it begins, empty
        lines are skipped (RFC 9112 2.2)."""
        if self._begun:  # the head began in an earlier part: only its bytes are in _tail
            found = (self._tail + data[at : at + 3]).find(b"\r\n\r\n")
            if found >= 0:
                end = at + found + 4 - len(self._tail)
                return end if end <= stop else None
            start = at
        else:
            skipped = _EMPTY_LINES.match(data, at)
            start = skipped.end() if skipped else at
        found = data.find(b"\r\n\r\n", start, stop)
        return None if found < 0 else found + 4

    def _feed(self, data: bytes | memoryview) -> None:
        """``data`` to the parser (uvicorn's ``data_received``), keeping the current message's
        first bytes while where it began is known (:meth:`send_400_response` reads them).
        Nothing is fed once a message is refused (the parser stopped at its error)."""
        if self._refused is not None:
            return
        if self._start is not None and len(self._start) < METHOD_BYTES:
            self._start += data[: METHOD_BYTES - len(self._start)]
        super().data_received(data)  # type: ignore[arg-type]  # httptools reads any buffer
        if self._start is None and not self._begun:
            self._start = b""  # the last message ended with this part: the next begins one
        if self._begun and self._head_bytes is not None:  # a head goes on in the next part
            self._tail = (self._tail + data[-3:])[-3:]

    def _refuse_head(self) -> None:
        self._disarm()
        self._head_bytes = None
        if self.transport.is_closing():
            return
        err = HeadTooLargeError(
            f"the request line and headers are over the {self.head_limit_bytes:,}-byte limit"
        )
        self.logger.warning("request head over %d bytes: answered 431", self.head_limit_bytes)
        self._answer_and_close(431, "Request Header Fields Too Large", err, None)

    def _refuse_framing(self) -> None:
        err = HeadTooLargeError(
            "the chunked body's framing and trailers are over the "
            f"{self.head_limit_bytes:,}-byte limit"
        )
        self.logger.warning("chunk framing over the limit: answered 431")
        self._answer_and_close(431, "Request Header Fields Too Large", err, self.cycle)

    def _answer_and_close(
        self, status: int, reason: str, err: InputError, cycle: RequestResponseCycle | None
    ) -> None:
        """``err`` as the JSON answer, unless the app has begun one for ``cycle`` (the request
        whose message is refused; None: a head, before the app has one), and the connection
        closed: the rest of what the client sends is never read.

        Requests received whole before the refused message are answered first, in order (RFC
        9112 9.3.2): the error is written after their answers. Before, it took the place of
        the answer being made (review, session 50: ``GET /ping`` then a malformed message in
        one write got only the 400, while the log said 200)."""
        self._end_message()
        if self.transport.is_closing() or self._refused is not None:
            return  # answered already, or the first refusal waits its turn
        queued = next((entry for entry in self.pipeline if entry[0] is cycle), None)
        if queued is not None:  # a queued request whose own message is refused: never answered
            self.pipeline.remove(queued)
            cycle = None
        waiting = bool(self.pipeline) or any(
            c is not None and c is not cycle and not c.response_complete
            for c in (self._answering, self.cycle)
        )
        if cycle is None and waiting:
            self._disarm()
            self._refused = (status, reason, err)
            self.flow.pause_reading()
            return
        self._write_error_and_close(status, reason, err, cycle)

    def _write_error_and_close(
        self, status: int, reason: str, err: InputError, cycle: RequestResponseCycle | None
    ) -> None:
        if cycle is not None:  # the app sees a disconnect and its answer, if any, is dropped
            if not cycle.response_started:  # logged and counted as answered here, not a 499
                cycle.scope.setdefault("state", {})[CLOSED_BY_SERVER] = (status, err.code)
            cycle.disconnected = True
            cycle.message_event.set()
        if cycle is None or not cycle.response_started:
            body = json_bytes(err.to_dict())
            self.transport.write(
                b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\nconnection: close\r\n"
                b"content-length: %d\r\n\r\n%s" % (status, reason.encode(), len(body), body)
            )
        self._close(err.code)

    def _unsupported_upgrade_warning(self) -> None:
        """An ``Upgrade`` (WebSocket, h2c) is answered as the plain HTTP request it also is (the
        server runs no WebSocket protocol: ``ws="none"``); uvicorn's warning would tell the
        operator to install a WebSocket library, on every such request (review, session 40:
        an upgrade got an empty 403, not the JSON error)."""
        self.logger.debug("upgrade request answered as plain HTTP")

    def send_400_response(self, msg: str) -> None:
        """A request llhttp cannot parse (a negative Content-Length, a NUL in a header, both
        Transfer-Encoding and Content-Length, an obsolete line fold): the JSON error every
        other refusal gets, not uvicorn's plain text (review, s40), and the connection
        closed. A response the app has begun for the current request is left as it is.
        A method llhttp does not know is a 501 instead (:meth:`_unknown_method`)."""
        # The refused message's own request, when its head was read (its body is what failed);
        # otherwise the error is a later message's, with no request of its own yet.
        cycle = self.cycle
        live = (
            cycle if cycle is not None and cycle.more_body and not cycle.response_complete else None
        )
        if self._overflow:  # the refused message is past the pipeline's bound: none of its own
            live = None
        if str(sys.exc_info()[1]) == "Invalid HTTP version":
            # llhttp's word for a well-formed version other than 1.0, 1.1 and 2.0 (HTTP/1.2,
            # HTTP/3.0): 505, as the app answers HTTP/2.0 (they were 400s: review, s53). A
            # malformed one (HTTP/1.10, HTTX/1.1) stays a 400.
            self.logger.warning("unsupported HTTP version: answered 505")
            self._answer_and_close(
                505,
                "HTTP Version Not Supported",
                HttpVersionError("this server speaks HTTP/1.1 (and 1.0) on this port"),
                live,
            )
            return
        if self._unknown_method():
            self.logger.warning("unknown request method: answered 501")
            err: InputError = MethodNotImplementedError(
                "the request method is not one this server implements (methods are "
                "case-sensitive: GET, HEAD, POST)"
            )
            self._answer_and_close(501, "Not Implemented", err, live)
            return
        self.logger.warning("malformed HTTP request: answered 400")
        err = InputError("the request is not valid HTTP/1.1", code="malformed_http")
        self._answer_and_close(400, "Bad Request", err, live)

    def _unknown_method(self) -> bool:
        """Whether the parse error being answered is a method llhttp does not know: its
        ``HttpParserInvalidMethodError`` (uvicorn calls :meth:`send_400_response` while
        handling it, without passing it on), in a message whose first bytes are a method's
        syntax (:data:`_METHOD_START`; llhttp raises the same error for bytes that are no
        method at all). A message begins a part fed to the parser (:meth:`_received`: a
        pipelined ``FOO`` in the read of the request before it was a 400), but after a chunked
        body, whose end within a part is not known: there the error stays a 400."""
        error = sys.exc_info()[1]
        if not isinstance(error, httptools.HttpParserInvalidMethodError) or not self._start:
            return False
        # RFC 9112 2.2: empty lines before a request line are ignored (llhttp skips them).
        return _METHOD_START.match(self._start.lstrip(b"\r\n")) is not None

    def _arm(self) -> None:
        if self._head_timer is None:
            self._head_since = time.monotonic()
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_expired)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_expired(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            # The head never completed: no one to answer (but a request answered meanwhile).
            self._close("head_timeout")

    def _end_message(self) -> None:
        self._message_bytes = None
        if self._message_timer is not None:
            self._message_timer.cancel()
            self._message_timer = None

    def _message_expired(self) -> None:
        self._message_timer = None
        self.logger.warning("request body not complete within its deadline: connection closed")
        if not self.transport.is_closing():
            self._close("request_timeout")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._head_bytes is None:  # a trailer field, after a chunked body
            if not self.transport.is_closing():
                err = TrailersRefusedError("trailer fields are not accepted")
                self._answer_and_close(400, "Bad Request", err, self.cycle)
            return  # never added to the request's headers
        super().on_header(name, value)

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self.transport.is_closing() or self._overflow:
            return
        if self.cycle is not None and self.cycle.response_complete:  # answered: dropped
            self._discarded += len(body)
            if self._discarded > self.discard_limit_bytes:
                self.logger.warning("body bytes after their answers over the bound: closed")
                self._end_message()
                self._close("discard_limit")
            return
        self._pieces.append(body)  # to uvicorn at the message's end or the read's

    def on_chunk_header(self) -> None:
        done, self._chunks = self._chunks, self._chunks + 1
        small = done > FREE_CHUNKS and self._body_bytes < MIN_CHUNK_BYTES * (done - FREE_CHUNKS)
        if small and not self.transport.is_closing():
            err = ChunksTooSmallError(
                f"a chunked body's chunks must average {MIN_CHUNK_BYTES:,} bytes after the "
                f"first {FREE_CHUNKS}; send larger chunks, or a Content-Length"
            )
            self.logger.warning("chunked body in chunks too small: answered 400")
            self._answer_and_close(400, "Bad Request", err, self.cycle)

    def _buffered(self) -> int:
        try:
            return int(self.transport.get_write_buffer_size())
        except (AttributeError, NotImplementedError, RuntimeError):
            return 0

    def pause_writing(self) -> None:
        """The transport's buffer is full: the client is not reading as fast as it is answered.
        What it drains from here is watched (:data:`WRITE_TIMEOUT_S`, :data:`SLOW_READER_S`)."""
        super().pause_writing()
        self._write_paused_since = time.monotonic()
        self._buffered_at_pause = self._buffered_at_check = self._buffered()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(WRITE_TIMEOUT_S, self._write_expired)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._write_paused_since = None
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _write_expired(self) -> None:
        """Closed unless the client read at least :data:`WRITE_PROGRESS_BYTES` of its answer
        since the deadline was armed; armed again if it did."""
        self._write_timer = None
        buffered = self._buffered()
        if self._buffered_at_check - buffered >= WRITE_PROGRESS_BYTES:
            self._buffered_at_check = buffered
            self._write_timer = self.loop.call_later(WRITE_TIMEOUT_S, self._write_expired)
            return
        self.logger.warning(
            "answer not read by the client (under %d KiB in %g s): connection closed",
            WRITE_PROGRESS_BYTES // 1024,
            WRITE_TIMEOUT_S,
        )
        self._abort("answer_not_read")

    def _reading_slowly(self, now: float) -> bool:
        """Writing has been paused for :data:`SLOW_READER_S` and the client has read its answer
        at under :data:`SLOW_BODY_BYTES_PER_S` since (what a slow body is, the other way)."""
        paused = self._write_paused_since
        if paused is None or now - paused < SLOW_READER_S:
            return False
        drained = self._buffered_at_pause - self._buffered()
        return drained < SLOW_BODY_BYTES_PER_S * (now - paused)

    def _abort(self, why: str) -> None:
        """Closed at once, the answer buffered for the client dropped (``close`` would wait for
        a client that does not read); the app sees a disconnect now, as uvicorn's
        ``connection_lost`` would tell it later (uvloop refuses a write to an aborted
        transport with a RuntimeError, where asyncio's ignores it). ``why``: the code logged
        for the requests cut off (:data:`SERVER_CLOSED_STATUS`)."""
        self._disconnect_requests(why)
        self.transport.abort()

    def _close(self, why: str) -> None:
        """The connection closed by the server (what is written is still sent); requests not
        yet answered on it see a disconnect now, logged as ``why`` (:meth:`_abort`)."""
        self._disconnect_requests(why)
        self.transport.close()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        # The request being answered: with requests pipelined behind it, ``self.cycle`` is the
        # newest one, and uvicorn's connection_lost tells only that one of a disconnect.
        self._answering = cycle
        super()._start_asgi_task(cycle, app)

    def _disconnect_requests(self, why: str | None = None) -> None:
        """Every request not yet answered on this connection sees a disconnect: the one being
        answered too (uvicorn tells only the newest, so the one being answered behind a
        pipeline wrote to a closed transport: a RuntimeError under uvloop, review s50).
        ``why``: the server closed the connection, for this reason; None: the client did
        (499). An answer the server had already set for a request is kept (the error it
        wrote: :meth:`_write_error_and_close`)."""
        for cycle in (self._answering, self.cycle, *(c for c, _ in self.pipeline)):
            if cycle is not None and not cycle.response_complete:
                cycle.disconnected = True
                state = cycle.scope.setdefault("state", {})
                state[CUT_OFF] = True
                if why is not None:
                    state.setdefault(CLOSED_BY_SERVER, (SERVER_CLOSED_STATUS, why))
                cycle.message_event.set()
        self.flow.resume_writing()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # the first request's head: its clock starts with the connection

    def on_message_begin(self) -> None:
        self._begun = True
        super().on_message_begin()
        self._arm()  # the first byte of a later request's head on a kept-alive connection

    def on_headers_complete(self) -> None:
        if self.transport.is_closing():  # the rest of a read after a refusal: no request
            return
        self._disarm()  # the head is complete: the body's own limits and deadline follow
        self._head_bytes = None
        if self.parser.get_http_version() != "1.1":
            # RFC 9110 10.1.1: never a 100 Continue to an HTTP/1.0 client (uvicorn sent one).
            self.expect_100_continue = False
        if self.url[:8].lower().startswith((b"http://", b"https://")) and (
            sum(name == b"host" for name, _ in self.headers) == 1
        ):
            # RFC 9112 3.2.2: an absolute-form target's authority stands for Host, which is
            # ignored (the Host checks read the field: the target's host was not checked at
            # all, review, session 50). No Host field, or several, stay for the app to refuse
            # as they are without the target.
            authority = self.url.split(b"//", 1)[1].split(b"/", 1)[0].split(b"?", 1)[0]
            # In place: the request's scope holds this very list.
            self.headers[:] = [
                *((n, v) for n, v in self.headers if n != b"host"),
                (b"host", authority),
            ]
        if self._overflow:  # past the pipeline's bound: dropped unread (see MAX_PIPELINE)
            return
        self._heads += 1
        self._message_bytes, self._body_bytes, self._chunks = 0, 0, 0
        self._chunked = any(
            name == b"transfer-encoding" and b"chunked" in value.lower()
            for name, value in self.headers
        )
        length = next((value for name, value in self.headers if name == b"content-length"), b"")
        self._length = int(length) if length.isdigit() and not self._chunked else None
        if (self._chunked or self._length) and self._get_upgrade() is not None:
            # The server speaks HTTP/1.1 only and answers an upgrade as the plain request it
            # also is, but llhttp leaves the head's body unread for the new protocol, and the
            # next read parsed it as a request of its own (review, session 52: a POST whose
            # body was `GET /smuggled ...` ran both, a desync for any proxy forwarding
            # Upgrade). Refused before the app sees it; nothing after it is read.
            err = UpgradeWithBodyError(
                "a request asking to upgrade the connection cannot carry a body here: this "
                "server speaks HTTP/1.1 only; send it without Upgrade (curl: --http1.1)"
            )
            self.logger.warning("upgrade request with a body: answered 400")
            self._answer_and_close(400, "Bad Request", err, None)
            return
        self._message_timer = self.loop.call_later(
            self.body_timeout_s + BODY_GRACE_S, self._message_expired
        )
        self._body_since = time.monotonic()
        limit = self.limit_concurrency
        if limit is None or (len(self.connections) < limit and len(self.tasks) < limit):
            super().on_headers_complete()
            self._bound_pipeline()
            return
        # Past the limit: kept-alive connections with nothing to do make room first (they
        # held it for the keep-alive time: 257 GET /ping a minute locked every client out,
        # review, session 42), then requests arriving too slowly (:data:`SLOW_HEAD_S`). A
        # health check is answered however many connections are open (SageMaker replaces an
        # instance whose /ping fails during a burst of slow uploads) and closes nothing;
        # anything else gets the JSON 503, through uvicorn's own request cycle.
        app = self.app
        health = self.url.split(b"?", 1)[0] in HEALTH_PATHS
        if not health and not (len(self.tasks) < limit and self._make_room(limit)):
            self.logger.warning("over the connection limit (%d): answered 503", limit)
            self.app = _busy
        self.limit_concurrency = None
        try:
            super().on_headers_complete()
        finally:
            self.limit_concurrency = limit
            self.app = app
        self._bound_pipeline()

    def _make_room(self, limit: int) -> bool:
        """Close connections until this one fits within ``limit`` open connections (those
        closing do not count): the longest-idle kept-alive ones first, then the requests
        arriving too slowly; whether it fits. Nothing is closed unless enough can be."""
        open_ = [c for c in self.connections if not c.transport.is_closing()]
        over = len(open_) - limit + 1
        if over <= 0:
            return True
        now = time.monotonic()
        idle: list[tuple[float, int, _HeadDeadlineProtocol]] = []
        slow: list[tuple[tuple[int, float], int, _HeadDeadlineProtocol]] = []
        for c in open_:
            if c is self or not isinstance(c, _HeadDeadlineProtocol):
                continue
            if (idle_since := c._idle_since()) is not None:
                if idle_since <= now - IDLE_EVICTABLE_S:
                    idle.append((idle_since, id(c), c))
            elif (slowness := c._slowness(now)) is not None:
                slow.append((slowness, id(c), c))
        if len(idle) + len(slow) < over:
            return False
        idle.sort(key=lambda entry: entry[:2])
        slow.sort(key=lambda entry: entry[:2])
        closing_idle = idle[:over]
        closing_slow = slow[: over - len(closing_idle)]
        for _since, _id, connection in closing_idle:
            connection._close_idle()
        for (kind, _), _id, connection in closing_slow:
            if kind == 2:  # nothing can be written to it: no 408 either
                connection.logger.debug("client not reading its answers closed at the limit")
                connection._abort("answer_not_read")
            else:
                connection._close_slow(head=kind == 0)
        self.logger.info(
            "connection limit (%d): closed %d idle kept-alive and %d slow connection(s)",
            limit,
            len(closing_idle),
            len(closing_slow),
        )
        return True

    def _slowness(self, now: float) -> tuple[int, float] | None:
        """How slowly this connection's request is arriving, if too slowly to keep its
        connection at the limit: ``(0, when its head began)`` for a late head, ``(1, body
        bytes per second)`` for a slow body, ``(2, since when)`` for a client that has not read
        its answers for :data:`SLOW_READER_S` (sorted: the first closes first); else None."""
        if self._reading_slowly(now):
            return (2, self._write_paused_since or now)
        if self.flow.read_paused or self.pipeline:
            return None  # the server paused reading, or has requests queued: at work
        if self._head_timer is not None:
            answering = self.cycle is not None and not self.cycle.response_complete
            if answering or now - self._head_since < SLOW_HEAD_S:
                return None  # a kept-alive client may send its next head while answered
            return (0, self._head_since)
        if self._message_timer is None or self._overflow:
            return None  # being answered, or its answers are owed before anything is read
        elapsed = now - self._body_since
        if elapsed < SLOW_BODY_AFTER_S:
            return None
        rate = self._body_bytes / elapsed
        return (1, rate) if rate < SLOW_BODY_BYTES_PER_S else None

    def _close_slow(self, head: bool) -> None:
        """A 408 ``request_too_slow`` for a late ``head`` or a slow body (unless an answer
        has begun) and the connection closed."""
        if head:
            part, cycle = f"head was not complete {SLOW_HEAD_S:g} s after it began", None
        else:
            rate = f"{SLOW_BODY_BYTES_PER_S // 1024} KiB/s"
            part, cycle = f"body was arriving at under {rate}", self.cycle
        err = RequestTooSlowError(
            f"the server is at its connection limit and this request's {part}: the "
            "connection was closed for another request; send requests at once"
        )
        self.logger.debug("slow request closed at the connection limit: answered 408")
        self._answer_and_close(408, "Request Timeout", err, cycle)

    def _idle_since(self) -> float | None:
        """When this connection was last answered (``time.monotonic``), while it waits kept
        alive with nothing queued (uvicorn's keep-alive timer runs exactly then)."""
        return None if self.timeout_keep_alive_task is None else self._answered_at

    def _close_idle(self) -> None:
        self._unset_keepalive_if_required()
        self._close("idle")  # nothing is being answered: no request is logged

    def _bound_pipeline(self) -> None:
        if len(self.pipeline) > MAX_PIPELINE and not self.transport.is_closing():
            self.logger.warning(
                "over %d pipelined requests queued: the rest dropped, closed after their answers",
                MAX_PIPELINE,
            )
            self.pipeline.popleft()  # this one: never started, never answered
            self._overflow = True
            self.flow.pause_reading()

    def on_response_complete(self) -> None:
        queued = bool(self.pipeline)  # uvicorn starts the next one, if any
        self._answered_at = time.monotonic()
        super().on_response_complete()
        if self.transport.is_closing():
            return
        if self._refused is not None and not queued:  # every request before it is answered
            self._write_error_and_close(*self._refused, None)
            return
        if self._peer_done and not queued:  # half-closed: the last answer is sent
            self._unset_keepalive_if_required()
            self.transport.close()
            return
        if self._overflow and not queued:  # the last queued request is answered
            self._unset_keepalive_if_required()
            self.transport.close()
            return
        if self.pipeline or self._overflow:
            # uvicorn reads on after every answer: only once every queued request has begun.
            self.flow.pause_reading()

    def on_message_complete(self) -> None:
        self._start, self._begun = None, False  # the next message: see _feed
        if self.transport.is_closing():
            return
        self._end_message()
        if not self._overflow:  # a dropped request's end has nothing to hand on
            self._flush_body()
            super().on_message_complete()
        self._head_bytes = 0  # whatever arrives next on this connection is a new head

    def connection_lost(self, exc: Exception | None) -> None:
        self._disconnect_requests()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        self._disarm()
        self._end_message()
        super().connection_lost(exc)


def head_deadline_protocol(
    head_timeout_s: float,
    body_timeout_s: float = 60.0,
    discard_limit_bytes: int = DISCARD_LIMIT_BYTES,
) -> type[HttpToolsProtocol]:
    """The protocol class for uvicorn's ``http=`` setting, with these deadlines and this bound
    on the body bytes a connection may send after their answers (``serve``: 4 x the body
    limit)."""
    if head_timeout_s <= 0 or body_timeout_s <= 0:
        raise InvalidOptionsError("the request-head and body timeouts must be positive")
    if discard_limit_bytes < 0:
        raise InvalidOptionsError("the discarded-bytes bound must not be negative")
    return type(
        "HeadDeadlineProtocol",
        (_HeadDeadlineProtocol,),
        {
            "head_timeout_s": head_timeout_s,
            "body_timeout_s": body_timeout_s,
            "discard_limit_bytes": discard_limit_bytes,
        },
    )

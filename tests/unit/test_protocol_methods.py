"""What the protocol answers a request method llhttp does not know (RFC 9110 15.6.2: 501) and
bytes that are no request at all (400), with an in-memory transport (no sockets): before,
``FOO /ping`` got 400 ``malformed_http`` as a TLS handshake does."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from stygig.serving.protocol import head_deadline_protocol
from tests.unit.test_protocol_eof import MemoryTransport

GET = b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"
POST_CHUNKED = b"POST /ping HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = scope["method"].encode()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _exchange(*reads: bytes, app: Any = _app) -> tuple[bytes, bool]:
    """``reads`` received one after another, each once the answers so far were written: (all
    written, whether the connection was closed)."""
    config = Config(app, lifespan="off", log_level="critical")
    config.load()
    protocol = head_deadline_protocol(10.0)(config=config, server_state=ServerState(), app_state={})
    transport = MemoryTransport()
    protocol.connection_made(transport)
    loop = asyncio.get_running_loop()
    for data in reads:
        if transport.closing:
            break
        protocol.data_received(data)
        deadline = loop.time() + 30
        while protocol.tasks and loop.time() < deadline:
            await asyncio.sleep(0.01)
    closed = transport.closing
    protocol.connection_lost(None)
    return bytes(transport.out), closed


def _last_answer(out: bytes) -> tuple[int, str | None]:
    """The status of the last answer in ``out`` and its JSON error code (None: not an error)."""
    answer = out[out.rindex(b"HTTP/1.1 ") :]
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"content-type: application/json" not in head.lower():
        return status, None
    return status, json.loads(body)["error"]["code"]


@pytest.mark.parametrize(
    "reads",
    [
        (b"FOO /ping HTTP/1.1\r\nHost: x\r\n\r\n",),
        (b"get /ping HTTP/1.1\r\nHost: x\r\n\r\n",),  # methods are case-sensitive
        (b"GETX /ping HTTP/1.1\r\nHost: x\r\n\r\n",),  # a known method's prefix
        (b"\r\nFOO /ping HTTP/1.1\r\nHost: x\r\n\r\n",),  # an empty line before it is ignored
        (b"FO", b"O /ping HTTP/1.1\r\nHost: x\r\n\r\n"),  # refused before the rest arrived
        (GET, b"FOO /ping HTTP/1.1\r\nHost: x\r\n\r\n"),  # on a kept-alive connection
        (GET + b"FOO /ping HTTP/1.1\r\nHost: x\r\n\r\n",),  # in the read of the one before
    ],
    ids=["unknown", "lower-case", "known-prefix", "empty-line", "split", "kept-alive", "pipelined"],
)
def test_an_unknown_method_is_501_and_the_connection_closed(reads: tuple[bytes, ...]) -> None:
    out, closed = asyncio.run(_exchange(*reads))
    assert _last_answer(out) == (501, "method_not_implemented"), out
    assert out.count(b"HTTP/1.1 ") == (2 if reads[0].startswith(GET) else 1)  # GET's first
    assert b"HTTP/1.1 501 Not Implemented\r\n" in out and b"connection: close" in out
    assert b"FOO" not in out.rpartition(b"\r\n\r\n")[2]  # never repeated back
    assert closed


@pytest.mark.parametrize(
    "data",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS handshake
        b'{"item_ids": ["sku-0014"]}',
        b"HTTP/1.1 200 OK\r\n\r\n",
        b" GET /ping HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET /ping HTTP/1.10\r\nHost: x\r\n\r\n",  # no version's syntax (DIGIT.DIGIT)
        b"GET /ping HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
        # After a chunked body in the read, where the next message began is not known: no
        # 501 is guessed.
        POST_CHUNKED + b"0\r\n\r\nFOO /ping HTTP/1.1\r\nHost: x\r\n\r\n",
        GET + b"\x16\x03\x01\x02\x00",
    ],
    ids=[
        "tls",
        "json",
        "status-line",
        "leading-space",
        "no-target",
        "malformed-version",
        "nul-in-header",
        "method-after-chunked",
        "pipelined-tls",
    ],
)
def test_bytes_that_are_no_request_stay_400(data: bytes) -> None:
    out, closed = asyncio.run(_exchange(data))
    assert _last_answer(out) == (400, "malformed_http"), out
    assert closed


@pytest.mark.parametrize("version", [b"1.2", b"3.0", b"9.1", b"0.1"])
def test_a_version_the_server_does_not_speak_is_505(version: bytes) -> None:
    """A well-formed version other than 1.0 and 1.1 is a 505, however llhttp takes it (it
    refuses these; HTTP/2.0, which it reads, the app answers 505): they were 400s (review,
    session 53), against docs/serving.md."""
    out, closed = asyncio.run(_exchange(b"GET /ping HTTP/" + version + b"\r\nHost: x\r\n\r\n"))
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 505 "), out
    assert json.loads(body)["error"]["code"] == "http_version_not_supported"
    assert closed


def test_a_method_the_parser_knows_reaches_the_app() -> None:
    """PROPFIND is llhttp's: the app answers it (StyGig's routes: 405), on a kept connection."""
    out, closed = asyncio.run(_exchange(b"PROPFIND /ping HTTP/1.1\r\nHost: x\r\n\r\n", GET))
    assert out.count(b"HTTP/1.1 200 ") == 2 and out.endswith(b"GET") and not closed


@pytest.mark.parametrize(
    ("data", "answered"),
    [
        (GET + POST_CHUNKED + b"0\r\n\r\nFOO /ping HTTP/1.1\r\nHost: x\r\n\r\n", 2),
        (GET + GET + b"\x16\x03\x01\x02\x00", 2),
        (GET + b"GET /ping HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", 1),
        (GET + POST_CHUNKED + b"zz\r\nab\r\n0\r\n\r\n", 1),  # the second's body refused
    ],
    ids=["method-after-chunked", "tls", "nul-in-header", "chunk-size"],
)
def test_requests_received_before_a_refused_message_are_answered_first(
    data: bytes, answered: int
) -> None:
    """RFC 9112 9.3.2: answers in order. The refused message's 400 took the place of the
    answer being made for the complete request before it, in the same read (review, session
    50: GET /ping then a malformed message got only the 400; the log said 200)."""
    out, closed = asyncio.run(_exchange(data))
    assert out.count(b"HTTP/1.1 200 ") == answered, out
    assert out.index(b"HTTP/1.1 200 ") < out.index(b"HTTP/1.1 400 ")
    assert _last_answer(out) == (400, "malformed_http") and out.count(b"HTTP/1.1 ") == answered + 1
    assert closed


async def _reading_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _expecting(version: str) -> bytes:
    """What the server writes for a request that expects 100-continue (uvicorn answers the
    expectation when the app first reads, whether the body has arrived or not)."""
    head = f"POST /x HTTP/{version}\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"
    return asyncio.run(_exchange(head.encode() + b"ok", app=_reading_app))[0]


def test_no_100_continue_is_sent_to_an_http_1_0_client() -> None:
    """RFC 9110 10.1.1 (review, session 50: uvicorn sent one to HTTP/1.0 clients)."""
    assert _expecting("1.1").startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    out = _expecting("1.0")
    assert b" 100 " not in out and out.startswith(b"HTTP/1.1 200 ") and out.endswith(b"ok")


def test_past_the_pipeline_bound_a_refused_message_still_waits_for_the_queued_answers() -> None:
    """Review of session 50's fix: with a request dropped past MAX_PIPELINE, the refused message
    was taken for that request's own, and its 400 went out at once, the queued answers lost."""
    out, closed = asyncio.run(_exchange(GET * 20 + b"\x16\x03\x01\x02\x00"))
    assert out.count(b"HTTP/1.1 200 ") == 17, out.count(b"HTTP/1.1 200 ")  # 1 + 16 queued
    assert out.index(b"HTTP/1.1 400 ") > out.rindex(b"HTTP/1.1 200 ")
    assert closed

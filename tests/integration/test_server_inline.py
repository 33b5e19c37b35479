"""A lone request answered on the event loop must not keep the requests that arrive meanwhile
from batching: a real uvicorn server (in a thread of this process, so the loop can be held at a
known point), with uvloop's loop and asyncio's."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import uvicorn

from stygig.engine import Recommender
from stygig.serving.app import ServerConfig, create_app
from stygig.serving.protocol import head_deadline_protocol
from tests.integration.server_fixtures import free_port, metric_total, wait_ready

pytestmark = pytest.mark.slow


@contextmanager
def _server(artifact: Path, loop: str) -> Iterator[int]:
    """``stygig serve``'s app and HTTP protocol on ``loop``, in a thread; yields the port."""
    port = free_port()
    config = ServerConfig(artifact=artifact, warmup_rounds=1, threads=2)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config),
            host="127.0.0.1",
            port=port,
            loop=loop,
            http=head_deadline_protocol(10.0),
            log_config=None,
            lifespan="on",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_ready(f"http://127.0.0.1:{port}", thread, timeout=120)
        yield port
    finally:
        server.should_exit = True
        thread.join(60)


def _send(sock: socket.socket, photo: bytes) -> None:
    head = (
        "POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
        f"Content-Length: {len(photo)}\r\n\r\n"
    )
    sock.sendall(head.encode() + photo)


def _answer(sock: socket.socket) -> tuple[int, dict[str, Any]]:
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response.status, json.loads(response.read())


def _inline_count(port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    return metric_total(text, "stygig_inline_requests_total")


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_requests_that_come_while_one_holds_the_loop_are_not_answered_on_it(
    sample: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, loop: str
) -> None:
    """The first request, alone, is answered on the loop and held there until four more have
    arrived (one on a kept-alive connection, three on new ones): those four find each other
    and go to the pool and the batcher, none on the loop; every answer is the lone one's."""
    photo = (sample[0] / "queries" / "blue-jeans.jpg").read_bytes()
    hold, entered, release = threading.Event(), threading.Event(), threading.Event()
    answer = Recommender.answer

    def held(self: Recommender, *args: Any, **kwargs: Any) -> Any:
        if hold.is_set():
            hold.clear()
            entered.set()
            assert release.wait(60)
        return answer(self, *args, **kwargs)

    monkeypatch.setattr(Recommender, "answer", held)
    with _server(sample[1], loop) as port:
        kept = socket.create_connection(("127.0.0.1", port))
        _send(kept, photo)
        status, lone = _answer(kept)
        assert status == 200
        before = _inline_count(port)

        hold.set()
        first = socket.create_connection(("127.0.0.1", port))
        _send(first, photo)
        assert entered.wait(60), "the first request never reached the answer step"
        others = [kept, *(socket.create_connection(("127.0.0.1", port)) for _ in range(3))]
        for sock in others:
            _send(sock, photo)  # in the server's socket buffers while the loop is held
        release.set()
        answers = [_answer(sock) for sock in (first, *others)]
        for sock in (first, *others):
            sock.close()

        assert [status for status, _ in answers] == [200] * 5
        for _, body in answers:
            assert [i["id"] for i in body["items"]] == [i["id"] for i in lone["items"]]
        assert _inline_count(port) - before == 1


def test_only_small_bounded_work_is_answered_on_the_loop(sample: tuple[Path, Path]) -> None:
    """The decision itself: an exact catalogue, a small answer and a small baseline JPEG or no
    photo; never an approximate index (its search may read rows from disk), two photos, a
    path, a PNG, a large k (k=100 with MMR held the loop 80-100 ms at 10k items), many query
    items or a candidate list."""
    from PIL import Image

    from stygig.engine import Options
    from stygig.recommendation import Query
    from stygig.serving.app import INLINE_MAX_ITEMS, INLINE_MAX_K, INLINE_MAX_K_TOTAL, _inline
    from tests.conftest import encode

    photo = (sample[0] / "queries" / "blue-jeans.jpg").read_bytes()
    png = encode(Image.open(sample[0] / "queries" / "blue-jeans.jpg"), "PNG")
    exact, approximate = SimpleNamespace(exact=True), SimpleNamespace(exact=False)
    plain = Options()
    largest = Options(k=INLINE_MAX_K, k_total=INLINE_MAX_K_TOTAL, diversity=1.0)
    items = tuple(f"sku-{n:04d}" for n in range(INLINE_MAX_ITEMS))
    assert _inline(exact, Query(images=(photo,)), plain)  # type: ignore[arg-type]
    assert _inline(exact, Query(item_ids=("sku-0014",)), plain)  # type: ignore[arg-type]
    assert _inline(exact, Query(item_ids=items), largest)  # type: ignore[arg-type]
    for rec, query, options in (
        (approximate, Query(images=(photo,)), plain),
        (approximate, Query(item_ids=("sku-0014",)), plain),
        (exact, Query(images=(photo, photo)), plain),
        (exact, Query(images=(sample[0] / "queries" / "blue-jeans.jpg",)), plain),
        (exact, Query(images=(png,)), plain),
        (exact, Query(item_ids=("sku-0014",)), Options(k=INLINE_MAX_K + 1)),
        (exact, Query(images=(photo,)), Options(k_total=INLINE_MAX_K_TOTAL + 1)),
        (exact, Query(item_ids=(*items, "sku-0099")), plain),
        (exact, Query(item_ids=("sku-0014",)), Options(candidate_ids=("sku-0001",))),
    ):
        assert not _inline(rec, query, options)  # type: ignore[arg-type]


def test_no_photo_but_a_jpeg_is_read_on_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Review (s40): every photo up to 256 KiB had its header read on the loop before PNG or
    WebP was ruled out, and a PNG's structure check inflates up to 32 compressed text chunks:
    a 231 KB PNG held the loop 270 ms (the bound is ~13 ms). Only a JPEG's first bytes let a
    header be read there."""
    from stygig.engine import Options
    from stygig.recommendation import Query
    from stygig.serving import app

    read: list[bytes] = []
    monkeypatch.setattr(app, "read_header", lambda photo: read.append(photo))
    exact = SimpleNamespace(exact=True)
    for head in (b"\x89PNG\r\n\x1a\n", b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"GIF89a", b"\xff\xd8"):
        assert not app._inline(exact, Query(images=(head + bytes(1000),)), Options())  # type: ignore[arg-type]
    assert read == []
    app._inline(exact, Query(images=(b"\xff\xd8\xff" + bytes(1000),)), Options())  # type: ignore[arg-type]
    assert len(read) == 1

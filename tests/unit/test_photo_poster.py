"""The HTTP side ``stygig loadtest`` and ``stygig invoke --url`` share (``PhotoPoster``): one
kept-alive connection per thread, a dropped connection counted and reopened, the same headers
and URL path for both callers, every connection closed at the end."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from stygig.deploy.invoke import UrlClient
from stygig.errors import ConfigError, InvalidOptionsError
from stygig.loadtest import LoadTestConfig, PhotoPoster, run_load_test
from tests.integration.server_fixtures import until

TOKEN = "a-token-for-the-poster-tests"


@dataclass
class Seen:
    """What the stub server saw: connections opened and closed, and each request."""

    opened: int = 0
    closed: int = 0
    requests: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    drop_next: bool = False  # answer the next request, then drop the kept-alive connection
    lock: threading.Lock = field(default_factory=threading.Lock)


def _handler(seen: Seen) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive

        def setup(self) -> None:
            super().setup()
            with seen.lock:
                seen.opened += 1

        def finish(self) -> None:
            super().finish()
            with seen.lock:
                seen.closed += 1

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            with seen.lock:
                seen.requests.append((self.path, dict(self.headers.items()), body))
                drop, seen.drop_next = seen.drop_next, False
            answer = json.dumps({"items": [], "timings_ms": {"total": 1.5}}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)
            # No "connection: close" header: the client believes the connection is kept.
            self.close_connection = drop

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def stub() -> Iterator[tuple[str, Seen]]:
    seen = Seen()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(seen))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/prefix", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_one_connection_per_thread_and_close_closes_them(stub: tuple[str, Seen]) -> None:
    url, seen = stub
    poster = PhotoPoster(urlsplit(url), "/prefix/invocations", timeout_s=30)
    met = threading.Barrier(3, timeout=30)  # all three threads hold a connection at once
    replies: list[tuple[str, float, bytes]] = []

    def client() -> None:
        met.wait()
        for _ in range(4):
            replies.append(poster.post(b"photo", "image/jpeg"))

    threads = [threading.Thread(target=client) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [r[0] for r in replies] == ["200"] * 12
    assert all(r[1] > 0 and b'"total": 1.5' in r[2] for r in replies)
    assert seen.opened == 3  # 12 requests over 3 kept-alive connections
    poster.close()
    assert until(lambda: seen.closed == 3)


def test_a_dropped_connection_is_counted_then_reopened(stub: tuple[str, Seen]) -> None:
    url, seen = stub
    poster = PhotoPoster(urlsplit(url), "/prefix/invocations", timeout_s=30)
    try:
        seen.drop_next = True
        assert poster.post(b"1", "image/png")[0] == "200"
        assert until(lambda: seen.closed == 1)  # the server dropped the kept-alive connection
        status, _, answer = poster.post(b"2", "image/png")
        assert not status.isdigit() and answer == b""  # a transport error's name, not a raise
        assert poster.post(b"3", "image/png")[0] == "200"
        assert seen.opened == 2
    finally:
        poster.close()


def test_both_callers_send_the_same_request(
    stub: tuple[str, Seen], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, seen = stub
    monkeypatch.setenv("STYGIG_AUTH_TOKEN", TOKEN)
    monkeypatch.delenv("STYGIG_AUTH_TOKEN_FILE", raising=False)
    client = UrlClient(url + "/", timeout_s=30)
    try:
        reply = client.send(b"jpeg bytes", "image/jpeg")
    finally:
        client.close()
    assert (reply.status, reply.server_ms) == ("200", 1.5)
    (tmp_path / "a.jpg").write_bytes(b"jpeg bytes")
    config = LoadTestConfig(url=url, images=tmp_path, concurrency=1, requests=2, warmup=1)
    report = run_load_test(config)
    assert report.counts == {"2xx": 2, "4xx": 0, "5xx": 0, "errors": 0}
    assert len(seen.requests) == 4
    for path, headers, body in seen.requests:
        assert path == "/prefix/invocations" and body == b"jpeg bytes"
        lower = {k.lower(): v for k, v in headers.items()}
        assert lower["content-type"] == "image/jpeg"
        assert lower["accept"] == "application/json"
        assert lower["authorization"] == f"Bearer {TOKEN}"
    # The load test's warm-up connection, then its one client's: both closed when it returns.
    assert seen.opened == 3
    assert until(lambda: seen.closed == 3)


def test_each_caller_keeps_its_own_url_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidOptionsError, match="--url must be http"):
        UrlClient("ftp://x")
    (tmp_path / "a.jpg").write_bytes(b"jpeg bytes")
    with pytest.raises(ConfigError, match="the load test's URL must be http"):
        run_load_test(LoadTestConfig(url="ftp://x", images=tmp_path))


def test_a_client_thread_that_dies_fails_the_run(
    stub: tuple[str, Seen], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error no status stands for (a bug, an exception http.client does not document) ends
    the run with that error: a report of the requests that survived would read as a result."""
    url, seen = stub
    real = PhotoPoster.post
    calls = 0
    lock = threading.Lock()

    def post(self: PhotoPoster, body: bytes, content_type: str) -> tuple[str, float, bytes]:
        nonlocal calls
        with lock:
            calls += 1
            n = calls
        if n == 3:
            raise ValueError("something no status stands for")
        return real(self, body, content_type)

    monkeypatch.setattr(PhotoPoster, "post", post)
    (tmp_path / "a.jpg").write_bytes(b"jpeg bytes")
    config = LoadTestConfig(url=url, images=tmp_path, concurrency=2, requests=40, warmup=0)
    with pytest.raises(ValueError, match="no status stands for"):
        run_load_test(config)
    assert len(seen.requests) < 40  # the other client stopped too

"""`stygig invoke --url` against a real local StyGig server: connections reused, client time
beside the server's own (`timings_ms.total`), and the `--max-p99-ms` latency budget."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from stygig.cli import main
from stygig.deploy import invoke as inv
from stygig.errors import StygigError
from tests.integration.server_fixtures import Server, running_server


@pytest.fixture(scope="module")
def server(sample: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("invoke") / "server.log"
    with running_server(sample[1], log) as srv:
        yield srv


@pytest.fixture(scope="module")
def photo(sample: tuple[Path, Path]) -> Path:
    return next((sample[0]).rglob("*.jpg"))


def test_one_connection_per_thread(
    server: Server, photo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    connects: list[int] = []
    real = http.client.HTTPConnection.connect

    def counted(self: http.client.HTTPConnection) -> None:
        connects.append(1)
        real(self)

    monkeypatch.setattr(http.client.HTTPConnection, "connect", counted)
    client = inv.UrlClient(server.url)
    body, kind = photo.read_bytes(), inv.content_type_of(photo)
    # Each thread's first request waits for the other two, so that on a busy machine one
    # thread cannot drain all the requests before the others start.
    met = threading.Barrier(3, timeout=60)
    first = threading.local()

    def send() -> inv.Reply:
        if not getattr(first, "done", False):
            first.done = True
            met.wait()
        return client.send(body, kind)

    try:
        check = inv.load_check(send, concurrency=3, requests=15, target=server.url)
    finally:
        client.close()
    assert check.report.counts == {"2xx": 15, "4xx": 0, "5xx": 0, "errors": 0}
    assert len(connects) == 3  # 15 requests over 3 kept-alive connections
    # Every answer carried the server's own time, and it is part of the round trip.
    assert set(check.server_ms) == {"p50", "p95", "p99", "max"}
    assert 0 < check.server_ms["p50"] <= check.report.latency_ms["p50"]
    assert check.started <= check.ended


def test_invoke_prints_client_and_server_time(
    server: Server, photo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["invoke", "--url", server.url, "--image", str(photo),
                 "--concurrency", "4", "--requests", "12", "--max-p99-ms", "600000"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "checks: rgb triples, top-5 votes, compatibility boost: ok" in out
    assert "ms round trip (client)" in out and "inside the server (timings_ms.total)" in out
    assert "requests      12 at concurrency 4" in out
    assert "server (ms)   p50 " in out and "outside (ms)  p50 " in out
    assert "latency budget: the load check's p99" in out and "<= 600000 ms: ok" in out


def test_a_blown_latency_budget_exits_1(
    server: Server, photo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # No load check: the budget applies to the one request's round trip.
    code = main(["invoke", "--url", server.url, "--image", str(photo),
                 "--max-p99-ms", "0.001"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 1
    assert "latency budget exceeded: the request's p99" in captured.err
    assert "> 0.001 ms" in captured.err


def test_server_time_is_read_from_the_answers_tail() -> None:
    raw = b'{"items":[],"timings_ms":{"decode":1.5,"total":12.25}}'
    assert inv.server_ms_of(raw) == 12.25
    assert inv.server_ms_of(b'{"timings_ms":{"total":3},"items":[]}') == 3.0  # not last
    assert inv.server_ms_of(b'{"items":[]}') is None
    assert inv.server_ms_of(b"not json") is None
    # An answer no StyGig server writes is no server time, never a traceback.
    for hostile in (
        b'{"timings_ms":{"total":' + b"9" * 400 + b"}}",
        b'{"timings_ms":{"total":' + b"9" * 5000 + b"}}",
        b'{"timings_ms":{"total":1e999}}',
        b"[" * 100_000,
    ):
        assert inv.server_ms_of(hostile) is None
    for hostile in (b"[" * 100_000, b'{"a":' + b"9" * 5000 + b"}"):
        with pytest.raises(StygigError):
            inv._parse(hostile, "the server")


def test_invoke_mistakes_are_clear_errors(
    server: Server, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["invoke", "--url", server.url]) == 2
    assert "--image is needed" in capsys.readouterr().err
    assert main(["invoke", "--url", server.url, "--image", str(photo), "--report"]) == 2
    assert "--report reads CloudWatch: it needs --endpoint-name" in capsys.readouterr().err
    assert main(["invoke", "--url", "ftp://x", "--image", str(photo)]) == 2
    assert "--url must be http(s)://" in capsys.readouterr().err
    assert main(["invoke", "--url", server.url, "--image", str(photo),
                 "--concurrency", "0"]) == 2  # fmt: skip
    assert "--concurrency and --requests must be >= 1" in capsys.readouterr().err
    text = tmp_path / "photo.jpg"
    text.write_bytes(b"not an image")
    assert main(["invoke", "--url", server.url, "--image", str(text)]) == 7
    err = capsys.readouterr().err
    assert "answered 400" in err and "Traceback" not in err
    # Review, session 53: a password in the address was echoed with every error.
    nobody = server.url.replace("http://", "http://user:PaSsWoRd@").rsplit(":", 1)[0] + ":1"
    assert main(["invoke", "--url", nobody, "--image", str(photo)]) == 7
    err = capsys.readouterr().err
    assert "cannot reach http://127.0.0.1:1" in err and "PaSsWoRd" not in err
    with_user = server.url.replace("http://", "http://user:PaSsWoRd@")
    assert main(["invoke", "--url", with_user, "--image", str(text)]) == 7
    assert "PaSsWoRd" not in capsys.readouterr().err

"""``stygig jobs --url``: the HTTP client never follows a redirect (review, session 40).

A redirect would carry the bearer token (urllib forwards every header but ``Content-*``) to
whatever host the ``Location`` names. Two real servers on loopback: one answers with a
redirect, the other records what reaches it.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from stygig.cli import main

TOKEN = "s3cret-token-0123456789abcdef"


class _Recorder(http.server.BaseHTTPRequestHandler):
    """The other host: answers every request like a job view and records its headers."""

    seen: list[dict[str, str]]

    def _answer(self) -> None:
        self.seen.append(dict(self.headers))
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"InferenceId": "j1", "Status": "succeeded"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


class _Redirector(http.server.BaseHTTPRequestHandler):
    """Answers every request with ``status`` and a ``Location`` on the other host."""

    status: int
    target: str

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(self.status)
        self.send_header("Location", f"{self.target}{self.path}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def _serve(handler: type[http.server.BaseHTTPRequestHandler], host: str) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer((host, 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@contextmanager
def _redirecting(status: int) -> Iterator[tuple[str, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []
    other = type("Other", (_Recorder,), {"seen": seen})
    with _serve(other, "127.0.0.2") as other_url:
        redirector = type("Redirect", (_Redirector,), {"status": status, "target": other_url})
        with _serve(redirector, "127.0.0.1") as url:
            yield url, seen


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_an_error_and_the_token_never_leaves(
    status: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STYGIG_AUTH_TOKEN", TOKEN)
    monkeypatch.delenv("STYGIG_AUTH_TOKEN_FILE", raising=False)
    with _redirecting(status) as (url, seen):
        code = main(["jobs", "status", "--url", url, "j1"])
    out, err = capsys.readouterr()
    assert seen == []  # the other host heard nothing, token or not
    assert code != 0
    assert f"HTTP {status}" in err and "redirect" in err
    assert TOKEN not in out + err
    assert "succeeded" not in out  # the other host's answer was never taken for the job's


def test_a_submission_is_not_redirected_either(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STYGIG_AUTH_TOKEN", TOKEN)
    monkeypatch.delenv("STYGIG_AUTH_TOKEN_FILE", raising=False)
    with _redirecting(307) as (url, seen):
        code = main(["jobs", "submit", "--url", url, "--item", "sku-1"])
    out, err = capsys.readouterr()
    assert seen == [] and code != 0
    assert "HTTP 307" in err and TOKEN not in out + err


def test_the_servers_own_answer_still_comes_with_the_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STYGIG_AUTH_TOKEN", TOKEN)
    monkeypatch.delenv("STYGIG_AUTH_TOKEN_FILE", raising=False)
    seen: list[dict[str, str]] = []
    with _serve(type("Server", (_Recorder,), {"seen": seen}), "127.0.0.1") as url:
        assert main(["jobs", "status", "--url", url, "j1"]) == 0
    assert json.loads(capsys.readouterr().out)["Status"] == "succeeded"
    assert [h.get("Authorization") for h in seen] == [f"Bearer {TOKEN}"]


def test_a_photo_is_sent_as_what_its_bytes_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Review, session 54: the content type came from the file's suffix ("photo" went as
    "image/", "photo.jfif" as "image/jfif": a 415)."""
    monkeypatch.delenv("STYGIG_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("STYGIG_AUTH_TOKEN_FILE", raising=False)
    cases = {
        "photo": b"\xff\xd8\xff\xe0" + b"\0" * 60,
        "photo.jfif": b"\xff\xd8\xff\xe1" + b"\0" * 60,
        "shot.jpg": b"\x89PNG\r\n\x1a\n" + b"\0" * 60,
        "odd.png": b"GIF89a" + b"\0" * 60,
    }
    seen: list[dict[str, str]] = []
    with _serve(type("Server", (_Recorder,), {"seen": seen}), "127.0.0.1") as url:
        for name, body in cases.items():
            (tmp_path / name).write_bytes(body)
            assert main(["jobs", "submit", "--url", url, str(tmp_path / name)]) == 0
    capsys.readouterr()
    kinds = [h.get("Content-Type") for h in seen]
    assert kinds == ["image/jpeg", "image/jpeg", "image/png", "application/octet-stream"]

"""The HTTP boundary against a hostile client: authentication, bind address, client-keyed memory,
malformed options, metric labels, slow and huge bodies, and what public answers reveal.

Each test names the hole it covers (items of the issue "Safe to face untrusted traffic"); each
attacks a real ``stygig serve`` on loopback, under a memory cap where the attack is a bomb.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from stygig.cli import _parser
from tests.integration.server_fixtures import REPO, Server, exit_code, start_process
from tests.security.conftest import capped_server

pytestmark = pytest.mark.slow

TOKEN = "s3cret-token-for-the-tests-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# A value a client could have read from a server file: it must never come back in an answer.
SECRET = "db-password=hunter2"


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll ``condition`` until true, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def rss_kb(server: Server) -> int:
    """The server process's resident memory (VmRSS) in KiB."""
    text = Path(f"/proc/{server.process.pid}/status").read_text()
    return int(next(line.split()[1] for line in text.splitlines() if line.startswith("VmRSS")))


def photo(sample: tuple[Path, Path]) -> bytes:
    return (sample[0] / "queries" / "blue-jeans.jpg").read_bytes()


@pytest.fixture(scope="module")
def server(sample: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One memory-capped server with default flags, shared by the tests that need no others."""
    log = tmp_path_factory.mktemp("http-hardening") / "server.log"
    with capped_server(sample[1], log) as running:
        yield running


def raw_request(server: Server, head: str, body: bytes = b"") -> socket.socket:
    """A connected socket that has sent ``head`` (CRLF line endings added) and ``body``."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
    return sock


UPLOAD_HEAD = (
    "POST /invocations HTTP/1.1\nHost: 127.0.0.1\nContent-Type: image/jpeg\nContent-Length: {}\n"
)


@contextlib.contextmanager
def steady_upload(server: Server, total: int = 40_000_000) -> Iterator[socket.socket]:
    """A connection uploading a ``total``-byte body at about 1 MB/s from a thread of its own
    (the server needs ``--max-body-mb`` over it): a fast client's request at work, which the
    connection limit never closes."""
    sock = raw_request(server, UPLOAD_HEAD.format(total), b"\xff\xd8")
    stop = threading.Event()

    def send() -> None:
        piece, sent = b"\0" * 16384, 2
        with contextlib.suppress(OSError):  # the server answers or closes: sending ends
            while not stop.wait(0.016) and sent + len(piece) < total:
                sock.sendall(piece)
                sent += len(piece)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    try:
        yield sock
    finally:
        stop.set()
        thread.join()
        sock.close()


def read_status(sock: socket.socket) -> int:
    """The status code of the first response line on ``sock``."""
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1])


def closed_by_server(sock: socket.socket, *, trickle: bool, within_s: float = 25.0) -> bool:
    """Whether the server closes ``sock`` within ``within_s`` while the client sends nothing
    (``trickle=False``) or a valid header line every 0.5 s (``trickle=True``)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if trickle:
                sock.sendall(b"X-Trickle: 1\r\n")
            readable, _, _ = select.select([sock], [], [], 0.5)
            if readable:
                return sock.recv(1) == b""  # closed without an answer
        except OSError:  # reset by the server
            return True
    return False


# -- item 4: authentication and bind address ----------------------------------------------------


def test_serve_binds_loopback_unless_told_and_the_container_binds_all() -> None:
    """Item 4: ``stygig serve`` bound 0.0.0.0 by default; the SageMaker entrypoint still must."""
    args = _parser().parse_args(["serve"])
    assert args.host == "127.0.0.1"
    entrypoint = (REPO / "docker" / "serve").read_text()
    assert "--host 0.0.0.0" in entrypoint


def test_bearer_token_guards_every_route_but_health(
    sample: tuple[Path, Path], tmp_path: Path
) -> None:
    """Item 4: no authentication at all; now a token guards everything but /ping, /healthz."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    with capped_server(sample[1], tmp_path / "log", "--auth-token-file", str(token_file)) as s:
        guarded: list[tuple[str, str, dict[str, Any]]] = [
            ("GET", "/v1/items/sku-0014", {}),
            ("GET", "/v1/items/sku-0014/image", {}),
            ("GET", "/v1/items/sku-0014/recommendations", {}),
            ("GET", "/v1/catalog", {}),
            ("GET", "/v1/config", {}),
            ("GET", "/metrics", {}),
            ("GET", "/readyz", {}),
            ("GET", "/openapi.json", {}),
            ("POST", "/invocations", {"json": {"item_ids": ["sku-0014"]}}),
            ("POST", "/v1/recommend", {"json": {"item_ids": ["sku-0014"]}}),
        ]
        wrong = [
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": "Bearer " + TOKEN[:-1] + "X"},
            {"Authorization": "Basic " + TOKEN},
            {"Authorization": TOKEN},
        ]
        with httpx.Client(base_url=s.url, timeout=30) as client:
            for method, path, kwargs in guarded:
                for headers in wrong:
                    r = client.request(method, path, headers=headers, **kwargs)
                    assert r.status_code == 401, (method, path, headers, r.status_code)
                    assert r.json()["error"]["code"] == "unauthorized"
                    assert r.headers["www-authenticate"].startswith("Bearer")
                r = client.request(method, path, headers=AUTH, **kwargs)
                assert r.status_code == 200, (method, path, r.text)
            for path in ("/ping", "/healthz", "/", "/static/app.js"):
                assert client.get(path).status_code == 200, path
            assert client.head("/ping").status_code == 200


def test_a_loopback_server_answers_only_its_own_names_and_same_site_changes(
    server: Server, sample: tuple[Path, Path], tmp_path: Path
) -> None:
    """Review, session 36: the server answered any Host, so a web page that rebinds its own
    name to 127.0.0.1 read every answer of a loopback server (and, with a change log, renamed
    items), and a plain cross-site form could post to it. A loopback-bound server now answers
    only requests addressed to this machine (or to --allowed-host names), and refuses a change
    whose Origin is another site; clients that send no Origin (SageMaker, scripts) are as
    before."""
    url = f"{server.url}/v1/config"
    r = httpx.get(url, headers={"Host": "rebound.example"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "host_not_allowed"
    assert "rebound" not in r.text  # the client's value is not echoed
    for name in (f"localhost:{server.port}", f"[::1]:{server.port}", "127.0.0.1", "LocalHost."):
        assert httpx.get(url, headers={"Host": name}).status_code == 200, name
    body, jpeg = photo(sample), {"content-type": "image/jpeg"}
    post = f"{server.url}/invocations"
    r = httpx.post(post, content=body, headers={**jpeg, "Origin": "https://evil.example"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    r = httpx.post(post, content=body, headers={**jpeg, "Origin": "null"})  # sandboxed frame
    assert r.status_code == 403
    same = {**jpeg, "Origin": f"http://127.0.0.1:{server.port}"}  # the try-it page's own
    assert httpx.post(post, content=body, headers=same).status_code == 200
    assert httpx.post(post, content=body, headers=jpeg).status_code == 200
    assert httpx.get(url, headers={"Origin": "https://evil.example"}).status_code == 200
    # Review, session 41 (web 6): the host name alone was compared, so any other local web
    # app (a dev server on another port, another scheme) could post here. The whole origin
    # counts now: scheme, name and port.
    own = f"http://localhost:{server.port}"
    for origin in ("http://localhost:3000", "https://127.0.0.1:1", f"https://{own[7:]}"):
        r = httpx.post(post, content=body, headers={**jpeg, "Origin": origin})
        assert r.status_code == 403, origin
        reload = httpx.post(
            f"{server.url}/v1/catalog/reload",
            content=b"x",
            headers={"content-type": "text/plain", "Origin": origin},
        )
        assert reload.status_code == 403, origin  # a form's simple request: no preflight
    for host, origin in (
        (f"localhost:{server.port}", own),
        (f"[::1]:{server.port}", own),
        ("localhost:8443", "https://localhost:8443"),  # a TLS proxy here that keeps the Host
    ):
        r = httpx.post(post, content=body, headers={**jpeg, "Host": host, "Origin": origin})
        assert r.status_code == 200, (host, origin)  # this server's names, its port
    with capped_server(sample[1], tmp_path / "log", "--allowed-host", "Shop.Example") as s:
        r = httpx.get(f"{s.url}/v1/config", headers={"Host": "shop.example:443"})
        assert r.status_code == 200
        r = httpx.post(
            f"{s.url}/invocations",
            content=body,
            headers={**jpeg, "Host": "127.0.0.1", "Origin": "https://shop.example"},
        )
        assert r.status_code == 200  # a proxy that rewrites Host: the public name is allowed
        # ... on any port and scheme (the operator named it as this server's: review of
        # session 41's fixes, 4), unlike this machine's own names on another port
        for origin, status in (("https://shop.example:8443", 200), ("http://localhost:3000", 403)):
            r = httpx.post(
                f"{s.url}/invocations",
                content=body,
                headers={**jpeg, "Host": "127.0.0.1", "Origin": origin},
            )
            assert r.status_code == status, origin
        r = httpx.get(f"{s.url}/v1/config", headers={"Host": "other.example"})
        assert r.status_code == 400
    # Bound elsewhere (the container, behind a proxy that may rewrite Host): no such checks,
    # and --allowed-host is refused at start rather than silently meaningless.
    from stygig.errors import InvalidOptionsError
    from stygig.serving.app import allowed_hosts

    assert allowed_hosts("0.0.0.0") is None
    with pytest.raises(InvalidOptionsError, match="loopback"):
        allowed_hosts("0.0.0.0", ["shop.example"])


def test_an_exposed_server_refuses_cross_site_changes_and_says_it_is_open(
    sample: tuple[Path, Path], tmp_path: Path
) -> None:
    """Review, session 53: bound beyond loopback (the container's 0.0.0.0) without a token, a
    form on any site reloaded the server (and, with a change log, changed the catalogue), and
    nothing said the server was open. A change to the catalogue or the jobs from a page of
    another origin than the addressed one is refused whatever the bind; recommendations are
    left alone (behind a proxy that rewrites Host the page's own origin is not the addressed
    one), and the start warns."""
    from fastapi.testclient import TestClient

    from stygig.serving.app import ServerConfig, create_app
    from stygig.serving.command import exposure_note

    config = ServerConfig(artifact=sample[1], allowed_hosts=None)  # bound beyond loopback
    evil = {"Origin": "https://evil.example"}
    with TestClient(create_app(config)) as client:
        deadline = time.monotonic() + 60
        while client.get("/ping").status_code != 200:
            assert time.monotonic() < deadline, "the app never became ready"
            time.sleep(0.05)
        for path in ("/v1/catalog/reload", "/v1/catalog/changes", "/async/invocations"):
            r = client.post(path, content=b"x", headers={"content-type": "text/plain", **evil})
            assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", path
        assert (
            client.post("/v1/catalog/reload", headers=evil | {"Origin": "null"}).status_code == 403
        )
        assert client.post("/v1/catalog/reload").status_code == 200  # no Origin: a script
        own = {"Origin": "http://testserver"}  # the origin the request was addressed to
        assert client.post("/v1/catalog/reload", headers=own).status_code == 200
        r = client.post(
            "/invocations", content=photo(sample), headers={"content-type": "image/jpeg", **evil}
        )
        assert r.status_code == 200, r.text
    note = exposure_note("0.0.0.0", changes=False, jobs=False)
    assert "without a token" in note and "--auth-token-file" in note
    assert "change the catalogue" not in note and "jobs" not in note
    note = exposure_note("0.0.0.0", changes=True, jobs=True)
    assert "change the catalogue" in note and "submit and cancel jobs" in note


def test_a_server_exposed_without_a_token_warns_before_it_binds(
    sample: tuple[Path, Path], tmp_path: Path
) -> None:
    """The warning comes from stygig serve itself, before the port is bound (review,
    session 53). The port is taken here, so the server stops at that check and never
    listens beyond loopback; with a token it says nothing of the kind."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        (tmp_path / "token").write_text("t" * 32)
        for extra, warned in (((), True), (("--auth-token-file", str(tmp_path / "token")), False)):
            log = tmp_path / "log"
            args = ["serve", "--artifact", str(sample[1]), "--host", "0.0.0.0", "--port", port]
            assert exit_code(start_process([*args, *extra], log)) != 0  # the port is taken
            text = log.read_text()
            assert ("without a token" in text) == warned, text
            assert "in use" in text or "taken" in text or "bind" in text, text


def test_a_short_token_is_refused_at_start(sample: tuple[Path, Path], tmp_path: Path) -> None:
    """Item 4: a guessable token would be worse than none: the server refuses to start."""
    token_file = tmp_path / "token"
    token_file.write_text("short")
    log = tmp_path / "log"
    args = ["serve", "--artifact", str(sample[1]), "--port", "1", "--auth-token-file"]
    assert exit_code(start_process([*args, str(token_file)], log)) != 0
    assert "at least 16 characters" in log.read_text()


# -- item 5: client-chosen filter names ---------------------------------------------------------


def test_filter_names_cannot_grow_memory(server: Server) -> None:
    """Item 5: 100k invented filter names grew the server by ~240 MB a request, never freed."""
    before = rss_kb(server)
    body = {"item_ids": ["sku-0014"], "filters": {f"attr{i}": "x" for i in range(100_000)}}
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for _ in range(4):
            t0 = time.monotonic()
            r = client.post("/invocations", json=body)
            assert r.status_code == 413, r.text  # more JSON values than any request holds
            assert time.monotonic() - t0 < 10
        # Within the count limit, names the catalogue does not have are refused too.
        few = {"item_ids": ["sku-0014"], "filters": {f"{SECRET}{i}": "x" for i in range(16)}}
        r = client.post("/invocations", json=few)
        assert r.status_code == 422 and "filterable" in r.json()["error"]["message"]
        assert SECRET not in r.text
        known = {"item_ids": ["sku-0014"], "filters": {"brand": ["Kestrel", "Juniper Lane"]}}
        assert client.post("/invocations", json=known).status_code == 200
    assert rss_kb(server) - before < 100 * 1024


def test_a_json_body_of_many_small_values_is_refused_before_it_is_parsed(server: Server) -> None:
    """Review (s37): 6 MB of ``[[],[],...]`` (within the body limit) took ~1 s of CPU and
    ~150 MB to parse before its 422; twelve at once took the server from 295 MB to 1 GB. A
    body of more JSON values than any request holds is a 413 before it is parsed; a request
    with every list option at its limit is still read."""
    from concurrent.futures import ThreadPoolExecutor

    from stygig.recommendation import MAX_CANDIDATE_IDS, MAX_EXCLUDE_IDS, MAX_FILTERS, MAX_LIST

    bomb = b'{"item_ids": ["sku-0014"], "zz": [' + b"[]," * 1_900_000 + b"[]]}"
    before = rss_kb(server)

    def post(body: bytes, path: str = "/invocations") -> httpx.Response:
        headers = {"content-type": "application/json"}
        return httpx.post(server.url + path, content=body, headers=headers, timeout=60)

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(post, [bomb] * 12))
    assert [r.status_code for r in answers] == [413] * 12
    assert "JSON values" in answers[0].json()["error"]["message"]
    # The twelve 5.7 MB bodies are read at once by design (68 MB, within the bodies' budget)
    # and the allocator keeps its arenas: 90-105 MB measured. Parsing them cost 700 MB.
    assert rss_kb(server) - before < 160 * 1024
    largest = {
        "item_ids": ["sku-0014"],
        "exclude_ids": [f"x{n}" for n in range(MAX_EXCLUDE_IDS)],
        "filters": {f"a{n}": [f"v{m}" for m in range(MAX_LIST)] for n in range(MAX_FILTERS)},
    }
    r = post(json.dumps(largest).encode())
    assert r.status_code == 422 and "filterable" in r.json()["error"]["message"], r.text
    shortlist = {
        "item_ids": ["sku-0014"],
        "candidate_ids": [f"c{n}" for n in range(MAX_CANDIDATE_IDS)],
    }
    assert post(json.dumps(shortlist).encode()).status_code == 404  # read: unknown candidates
    # Review (s38): a photo labelled application/json was a 400 when small and a 413 "too
    # many JSON values" when large (its bytes hold commas): a 400 whatever its size.
    for size in (4_000, 3_600_000):
        photo = b"\xff\xd8\xff\xe0" + b"\x2c\x00" * (size // 2)
        r = post(photo)
        assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_json", r.text


# -- item 8: client mistakes are 4xx, never 500, and never echoed -------------------------------

_NESTED = b'{"k": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
_BAD_JSON: list[Any] = [
    {"item_ids": ["sku-0014"], "seed": -1},
    {"item_ids": ["sku-0014"], "seed": 1.5},
    {"item_ids": ["sku-0014"], "seed": "abc"},
    {"item_ids": ["sku-0014"], "seed": 2**70},
    {"item_ids": ["sku-0014"], "gender": 5},
    {"item_ids": ["sku-0014"], "gender": [SECRET]},
    {"item_ids": ["sku-0014"], "gender": SECRET},
    {"item_ids": ["sku-0014"], "category": 5},
    {"item_ids": ["sku-0014"], "category": {"a": SECRET}},
    {"item_ids": ["sku-0014"], "category": SECRET},
    {"item_ids": ["sku-0014"], "mode": SECRET},
    {"item_ids": ["sku-0014"], "mode": ["outfit"]},
    {"item_ids": ["sku-0014"], "use_color": "false"},
    {"item_ids": ["sku-0014"], "diversity": "abc"},
    {"item_ids": ["sku-0014"], "diversity": True},
    {"item_ids": ["sku-0014"], "k": 1e300},
    {"item_ids": ["sku-0014"], "filters": [SECRET]},
    {"item_ids": ["sku-0014"], "filters": {"brand": {"min": SECRET}}},
    {"item_ids": ["sku-0014"], "filters": {"brand": {"less": 1}}},
    {"item_ids": ["sku-0014"], "filters": {"brand": [[SECRET]]}},
    {"item_ids": ["sku-0014"], "filters": {"price": {"min": 10**400}}},
    {"item_ids": ["sku-0014"], "filters": {"price": -(10**400)}},
    {"item_ids": ["sku-0014"], "filters": {"price": [1, 10**400]}},
    {"item_ids": ["sku-0014"], "include_categories": [SECRET]},
    {"item_ids": ["sku-0014"], "exclude_ids": 5},
    {"item_ids": ["sku-0014"], SECRET: 1},
    {"item_ids": [5]},
    {"item_ids": [SECRET]},
    {"images_b64": SECRET},
    {"image_b64": 5},
    {"images_b64": ["AAAA"] * 100_000},
    [SECRET],
]
_BAD_RAW: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/invocations", {"content": _NESTED, "headers": {"content-type": "application/json"}}),
    (
        "POST",
        "/invocations",
        {
            "content": b'{"k": ' + b"9" * 5000 + b"}",
            "headers": {"content-type": "application/json"},
        },
    ),
    (
        "POST",
        "/invocations",
        {"content": b"\xff\xfe{", "headers": {"content-type": "application/json"}},
    ),
    ("POST", "/invocations?seed=abc", {"content": b"x", "headers": {"content-type": "image/jpeg"}}),
    (
        "POST",
        "/invocations?k=" + "9" * 5000,
        {"content": b"x", "headers": {"content-type": "image/jpeg"}},
    ),
    (
        "POST",
        "/invocations?use_color=maybe",
        {"content": b"x", "headers": {"content-type": "image/jpeg"}},
    ),
    (
        "POST",
        "/invocations?diversity=nan",
        {"content": b"x", "headers": {"content-type": "image/jpeg"}},
    ),
    ("POST", "/invocations", {"content": b"x", "headers": {"content-type": "text/" + SECRET}}),
    ("POST", "/invocations", {"json": {"item_ids": ["sku-0014"]}, "headers": {"accept": SECRET}}),
    ("GET", "/v1/items/sku-0014/recommendations?seed=-1", {}),
    ("GET", "/v1/items/sku-0014/recommendations?filters=%7B%22price%22%3A" + "9" * 400 + "%7D", {}),
    ("GET", "/v1/items/sku-0014/recommendations?gender=" + SECRET, {}),
    ("GET", "/v1/items/" + SECRET, {}),
    ("GET", "/v1/catalog?offset=" + "1" * 31, {}),
    ("GET", "/v1/catalog?category=" + SECRET, {}),
    ("GET", "/static/" + SECRET, {}),
]


def test_client_mistakes_get_4xx_and_no_echo(server: Server) -> None:
    """Item 8: 24 kinds of client input got a 500 (seed -1, gender as a number, JSON nested
    100k deep, a 5,000-digit integer, ...); error messages echoed what the client sent."""
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for body in _BAD_JSON:
            r = client.post("/invocations", json=body)
            assert 400 <= r.status_code < 500, (str(body)[:80], r.status_code, r.text[:200])
            assert SECRET not in r.text, str(body)[:80]
        for method, path, kwargs in _BAD_RAW:
            r = client.request(method, path, **kwargs)
            assert 400 <= r.status_code < 500, (path[:60], r.status_code, r.text[:200])
            assert SECRET not in r.text, path[:60]
        assert client.get("/ping").status_code == 200


# -- item 9: metric labels ----------------------------------------------------------------------


def test_invented_methods_do_not_grow_metrics(server: Server) -> None:
    """Item 9: the method label took any text: 20,000 invented methods grew /metrics to 11 MB."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for i in range(50):  # every route and label value this test can make exists once
            client.request(f"WARM{i}", "/ping")
        size = len(client.get("/metrics").content)
        for i in range(500):  # refused by the parser (501: llhttp knows the methods) or 405
            assert client.request(f"INVENTED{i}", "/ping").status_code in (501, 405)
        text = client.get("/metrics").text
        # Methods the parser knows but the app does not serve reach the app: labelled "other".
        assert client.request("PROPFIND", "/ping").status_code == 405
        labelled = client.get("/metrics").text
    assert "INVENTED" not in text and len(text) - size < 2_000
    assert 'method="other"' in labelled and "PROPFIND" not in labelled


# -- item 11: huge, slow and stalled bodies -----------------------------------------------------


def test_a_declared_huge_body_gets_413_at_once(server: Server) -> None:
    """Item 11: a declared 100 GB Content-Length got no immediate 413."""
    t0 = time.monotonic()
    with raw_request(
        server,
        "POST /invocations HTTP/1.1\nHost: 127.0.0.1\nContent-Type: image/jpeg\n"
        "Content-Length: 100000000000\n",
    ) as sock:
        assert read_status(sock) == 413
    assert time.monotonic() - t0 < 5


def _stream_head(server: Server, first: bytes, piece: bytes, total: int) -> tuple[int, int]:
    """Send ``first`` then ``piece`` after ``piece`` (an endless head) until ``total`` bytes or the
    server stops reading; the answer's status (0: closed or reset before one came) and the bytes
    the server took."""
    sent = 0
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        try:
            sock.sendall(first)
            sent = len(first)
            while sent < total:
                sock.sendall(piece)
                sent += len(piece)
        except OSError:  # the server closed the connection: it stopped reading
            pass
        try:
            return read_status(sock), sent
        except (OSError, IndexError, ValueError):
            return 0, sent


def test_an_oversized_request_head_gets_431_and_holds_nothing(
    server: Server, sample: tuple[Path, Path]
) -> None:
    """A request head has no size limit in llhttp: 80 MB of tiny headers over one connection
    grew the server by 1.8 GB (three such connections: a crash), and one endless header value
    held the event loop for 10 s (every other request waited 9.5 s). Both are now refused at
    64 KiB of head with 431, and the connection closed."""
    before = rss_kb(server)
    start = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    # Within the limit, then over it by one small send: the refusal is read, not reset.
    status, _ = _stream_head(server, start, b"a:b\r\n" * 1000, 70_000)
    assert status == 431
    for piece in (b"a:b\r\n" * 10_000, b"X-Big: " + b"a" * 65_536):
        t0 = time.monotonic()
        status, sent = _stream_head(server, start, piece, 64 << 20)
        assert status in (431, 0)  # refused, or reset while the client was still sending
        assert sent < 32 << 20, sent  # the server stopped reading long before 64 MB
        assert time.monotonic() - t0 < 8  # refused at the limit, not at the head deadline
    assert rss_kb(server) - before < 64 * 1024
    r = httpx.get(f"{server.url}/healthz", timeout=10)
    assert r.status_code == 200


def _chunked(body: bytes, size: int) -> bytes:
    """``body`` as HTTP/1.1 chunks of ``size`` bytes, the last (zero-size) chunk included."""
    parts = [
        b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size])
        for i in range(0, len(body), size)
    ]
    return b"".join(parts) + b"0\r\n"


def test_trailers_and_chunk_framing_cannot_grow_memory_or_hold_the_loop(
    server: Server, sample: tuple[Path, Path]
) -> None:
    """Review, session 36: the head limit stopped at the end of the head, so the trailer
    section after a chunked body's last chunk was unbounded: endless trailer fields to the
    public /ping took a 4 GB server down in 10 s (no token needed), and one endless trailer
    value held the event loop for seconds. Trailers are now refused, and a chunked body's
    framing is bounded; chunked uploads themselves are answered as before."""
    before = rss_kb(server)
    chunked = "Transfer-Encoding: chunked\n"
    # A photo sent in 1 KiB chunks, no trailer: answered.
    head = f"POST /invocations HTTP/1.1\nHost: 127.0.0.1\nContent-Type: image/jpeg\n{chunked}"
    with raw_request(server, head, _chunked(photo(sample), 1024) + b"\r\n") as sock:
        assert read_status(sock) == 200
    # Endless trailer fields after an answered GET, and one endless trailer value after a
    # POST whose body the app is waiting for: the server stops reading within the limit.
    cases = [
        (
            b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n",
            b"X-T: " + b"a" * 50 + b"\r\n",
            {200, 400},  # answered, or refused when the trailers come with the head
        ),
        (
            b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\nX-T: ",
            b"a" * 65_536,
            {431, 0},  # the value never ends: over the framing limit
        ),
        # One chunk size line that never ends (chunk extensions): framing, not body.
        (
            b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n4;x=",
            b"a" * 65_536,
            {431, 400, 0},
        ),
    ]
    for first, piece, statuses in cases:
        t0 = time.monotonic()
        status, sent = _stream_head(server, first, piece * 20, 256 << 20)
        assert status in statuses, (first[:30], status)
        assert sent < 32 << 20, sent  # the server stopped reading long before 256 MB
        assert time.monotonic() - t0 < 8
    assert rss_kb(server) - before < 64 * 1024
    assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200


def test_a_body_sent_to_a_route_that_never_reads_it_must_still_end(
    sample: tuple[Path, Path], tmp_path: Path
) -> None:
    """Review, session 36: the body deadline acted only while the app read the body, so a
    chunked body trickled to GET /healthz (answered at once) held its connection, and a slot of
    --max-connections, for as long as the client went on. Its message must now end within the
    body timeout (and a grace period), or the connection is closed."""
    with capped_server(sample[1], tmp_path / "log", "--body-timeout", "2") as s:
        sock = raw_request(
            s, "GET /healthz HTTP/1.1\nHost: 127.0.0.1\nTransfer-Encoding: chunked\n"
        )
        with sock:
            assert read_status(sock) == 200  # answered without reading the body
            deadline = time.monotonic() + 30
            closed = False
            while not closed and time.monotonic() < deadline:
                try:
                    sock.sendall(b"1\r\nx\r\n")  # one byte of body every 0.5 s
                    readable, _, _ = select.select([sock], [], [], 0.5)
                    closed = bool(readable) and sock.recv(65536) == b""
                except OSError:  # reset by the server
                    closed = True
            assert closed, "the trickled body held its connection for 30 s"


def test_a_large_head_within_the_limit_and_pipelined_requests_are_answered(
    server: Server, sample: tuple[Path, Path]
) -> None:
    """The head limit counts heads only: a 60 KB head sent in one piece with its photo, and
    three requests pipelined in one send, are all answered."""
    pad = "".join(f"X-Pad-{n}: {'p' * 90}\n" for n in range(600))
    body = photo(sample)
    head = (
        f"POST /invocations HTTP/1.1\nHost: 127.0.0.1\nContent-Type: image/jpeg\n{pad}"
        f"Content-Length: {len(body)}\n"
    )
    assert 55_000 < len(head) < 64 * 1024
    with raw_request(server, head, body) as sock:
        assert read_status(sock) == 200
    # Two uploads back to back on one connection, the second's head in the data that ends
    # the first: the bytes before it are the first's body, not framing. (Review, session 36:
    # where one read held over 64 KiB of the first body and the second head, a false 431
    # lost both answers; this server's reads did not split that way here, so this checks the
    # answers, and the reviewer's proto_pipeline4.py, run against the fix, the split.)
    first, second = body + b"\0" * 100_000, body + b"\0" * 900_000
    head = "POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(f"{head}Expect: 100-continue\r\nContent-Length: {len(first)}\r\n\r\n".encode())
        data = b""
        while b"100 Continue" not in data:
            chunk = sock.recv(65536)
            assert chunk, data[:300]
            data += chunk
        sock.sendall(first + f"{head}Content-Length: {len(second)}\r\n\r\n".encode() + second)
        while data.count(b"HTTP/1.1 200 OK") < 2 or not data.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            assert chunk, data[:300]
            data += chunk
    three = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 3
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(three)
        data = b""
        while data.count(b"HTTP/1.1 200") < 3:
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk


def _answers_until_closed(
    sock: socket.socket, within_s: float = 30.0, seen: list[bytes] | None = None
) -> tuple[int, bool]:
    """The answers read from ``sock`` until the server closes it (or ``within_s``), and
    whether it closed; the bytes read are added to ``seen``."""
    data, deadline = b"", time.monotonic() + within_s
    closed = False
    while time.monotonic() < deadline and not closed:
        readable, _, _ = select.select([sock], [], [], 0.5)
        if not readable:
            continue
        try:
            chunk = sock.recv(1 << 16)
        except OSError:  # reset by the server
            chunk = b""
        closed = not chunk
        data += chunk
    if seen is not None:
        seen.append(data)
    return data.count(b"HTTP/1.1 "), closed


def test_pipelined_requests_are_bounded_per_connection(server: Server) -> None:
    """Review, session 42: uvicorn queued every request a read held and read on after each
    answer, so one connection streaming pipelined ``GET /healthz`` (public, no token) grew
    the server by 25 MB/s to its memory cap, after which every photo was a 400. At most 16
    requests are queued behind the one being answered: those are answered, the rest dropped
    unread, and the connection closed (a first version closed at once, answering none of
    them); 16 at once, and 3 (above), are answered and the connection kept."""
    from stygig.serving.protocol import MAX_PIPELINE

    before = rss_kb(server)
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        with contextlib.suppress(OSError):  # the server closes while the client sends
            for _ in range(40):  # 40 x 5,000 requests, 8 MB, unless cut off
                sock.sendall(request * 5_000)
        answers, closed = _answers_until_closed(sock)
    # At most the 17 (running + queued): the server closes with the flood's bytes unread, so
    # its close is a reset, which may drop answers the client had not read yet (12 of 17 once,
    # on a busy machine). The exact count is checked below, with bursts read whole.
    assert closed and answers <= MAX_PIPELINE + 1, answers
    assert rss_kb(server) - before < 32 * 1024
    for burst in (MAX_PIPELINE + 2, MAX_PIPELINE + 1):
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(request * burst)
            # The answers first, however slowly a busy machine sends them; then, for 1 s
            # more, whether the server closes (it closes at once after the last answer).
            data = b""
            deadline = time.monotonic() + 30
            while data.count(b"HTTP/1.1 ") < min(burst, MAX_PIPELINE + 1):
                assert time.monotonic() < deadline, data.count(b"HTTP/1.1 ")
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
            overflow = burst > MAX_PIPELINE + 1
            more, closed = _answers_until_closed(sock, within_s=30 if overflow else 1)
            answers = data.count(b"HTTP/1.1 ") + more
            assert answers == min(burst, MAX_PIPELINE + 1), (burst, answers)
            assert closed == (burst > MAX_PIPELINE + 1)


def test_a_chunked_body_of_tiny_chunks_is_refused(
    server: Server, sample: tuple[Path, Path]
) -> None:
    """Review, session 42: every chunk costs the event loop a few Python calls, so 6 MB sent
    in 1-byte chunks held it for 6 s of CPU (every other client waited). After 64 chunks of
    any size, the chunks must average 1 KiB: a body of 1-byte chunks is a 400 and the
    connection closed; 1 KiB chunks (above) and one chunk are answered."""
    head = (
        "POST /invocations HTTP/1.1\nHost: 127.0.0.1\nContent-Type: image/jpeg\n"
        "Transfer-Encoding: chunked\n"
    )
    cpu = _cpu_seconds(server)
    start = photo(sample)[:256]  # a JPEG's first bytes: the route reads on
    with raw_request(server, head, b"%x\r\n%s\r\n" % (len(start), start)) as sock:
        with contextlib.suppress(OSError):
            for _ in range(100):
                sock.sendall(b"1\r\nX\r\n" * 10_000)
        seen: list[bytes] = []
        answers, closed = _answers_until_closed(sock, seen=seen)
    assert closed and answers == 1 and b'"code":"chunks_too_small"' in seen[0], seen
    assert _cpu_seconds(server) - cpu < 2.0
    # Logged and counted as the 400 it was answered with, not as a client's 499 (the app,
    # reading the body, saw the connection closed).
    wait_for(
        lambda: any(
            '"stygig.access"' in line and '"status": 400, "code": "chunks_too_small"' in line
            for line in server.log_lines()
        )
    )
    with raw_request(server, head, _chunked(photo(sample), 1 << 20) + b"\r\n") as sock:
        assert read_status(sock) == 200
    # A small JSON body streamed a token at a time (a client posting a generator) is read:
    # a body under 1 KiB never meets the rule (a first version refused 771 bytes in 74).
    body = json.dumps({"item_ids": ["sku-0014"], "exclude_ids": [f"xx{n}" for n in range(120)]})
    assert 500 < len(body) < 1024
    json_head = head.replace("image/jpeg", "application/json")
    with raw_request(server, json_head, _chunked(body.encode(), 1) + b"\r\n") as sock:
        assert read_status(sock) == 200


def test_idle_kept_alive_connections_make_room_at_the_connection_limit(
    sample: tuple[Path, Path], tmp_path: Path
) -> None:
    """Review, session 42: connections kept alive after one ``GET /ping`` counted against
    ``--max-connections`` for the keep-alive time (75 s), so 257 of them a minute, no token
    needed, locked every client out. At the limit, the longest-idle kept-alive connections
    (idle 2 s or more) are closed to make room; connections at work are not."""
    flags = ("--max-connections", "3", "--max-body-mb", "64")
    with capped_server(sample[1], tmp_path / "log", *flags) as s, steady_upload(s) as working:
        idle = []
        for _ in range(2):
            sock = raw_request(s, "GET /ping HTTP/1.1\nHost: 127.0.0.1\n")
            data = b""
            while not data.endswith(b"}"):  # the whole answer: what follows is the close
                data += sock.recv(4096)
            idle.append(sock)
        try:
            # A fourth connection: room is made once the idle ones have been idle 2 s (a
            # connection reused at once may have a request on its way).
            def served() -> bool:
                with httpx.Client(timeout=30) as client:
                    r = client.get(f"{s.url}/v1/catalog", params={"limit": 1})
                    return r.status_code == 200

            wait_for(served)
            assert _answers_until_closed(idle[0], 10) == (0, True)  # the longest idle
            assert _answers_until_closed(idle[1], 1) == (0, False)  # one was enough
            assert not closed_by_server(working, trickle=False, within_s=1)
        finally:
            for sock in idle:
                sock.close()


def _answer_code(sock: socket.socket, within_s: float = 30.0) -> str | None:
    """The error code of the answer the server sends on ``sock`` before closing it (None:
    closed without an answer, or not closed within ``within_s``)."""
    seen: list[bytes] = []
    _answers_until_closed(sock, within_s, seen)
    head, _, body = seen[0].partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 "):
        return None
    return str(json.loads(body)["error"]["code"])


def test_slow_requests_make_room_at_the_connection_limit(
    sample: tuple[Path, Path], tmp_path: Path
) -> None:
    """Review, session 46: only idle kept-alive connections made room at the limit, so sockets
    that sent nothing, a request head trickled a line at a time, or a body trickled a byte
    every 14 s, held their slots until their deadlines (10 s, 60 s), and a client reopening
    256 of them locked every other client out at almost no cost. At the limit, a head not
    complete 1 s after it began, then a body arriving at under 32 KiB/s, gives its connection
    up: a 408 ``request_too_slow``, oldest head first, then the slowest body; an upload
    arriving at a fast client's pace is never closed, however long it takes."""
    flags = ("--max-connections", "4", "--head-timeout", "60", "--max-body-mb", "64")
    with capped_server(sample[1], tmp_path / "log", *flags) as s, contextlib.ExitStack() as stack:
        silent = socket.create_connection(("127.0.0.1", s.port), timeout=10)  # sends nothing
        late_head = raw_request(s, "GET /v1/catalog HTTP/1.1\nHost: 127.0.0.1")  # no end of head
        trickle = raw_request(s, UPLOAD_HEAD.format(5000), b"\xff\xd8")  # 2 bytes of 5,000
        for sock in (silent, late_head, trickle):
            stack.callback(sock.close)
        fast = [stack.enter_context(steady_upload(s))]  # the 4 connections allowed are held

        def served() -> bool:
            # The server closes this connection as it answers: it holds no slot afterwards.
            r = httpx.get(
                f"{s.url}/v1/catalog",
                params={"limit": 1},
                headers={"connection": "close"},
                timeout=30,
            )
            assert r.status_code in (200, 503), r.text
            return r.status_code == 200

        # Each whole request closes one slow connection, in order; a fast upload then takes
        # the room it made, so the next request needs room again.
        for closing, kept in ((silent, late_head), (late_head, trickle), (trickle, None)):
            wait_for(served)
            assert _answer_code(closing) == "request_too_slow"
            if kept is not None:
                assert _answers_until_closed(kept, 0.5) == (0, False)
                fast.append(stack.enter_context(steady_upload(s)))
        # Three uploads at work and room for one request, without closing anything.
        assert served()
        assert not any(closed_by_server(sock, trickle=False, within_s=0.5) for sock in fast)
    log = (tmp_path / "log").read_text()
    closed = re.findall(r"closed (\d+) idle kept-alive and (\d+) slow connection", log)
    assert [(int(idle), int(slow)) for idle, slow in closed] == [(0, 1)] * 3, closed
    # The body closed mid-read is logged as it was answered, not as a client's 499.
    access = [json.loads(line) for line in log.splitlines() if '"/invocations"' in line]
    trickled = [e for e in access if e.get("code") == "request_too_slow"]
    assert len(trickled) == 1 and trickled[0]["status"] == 408, access


def test_clients_that_do_not_read_their_answers_make_room_at_the_connection_limit(
    sample: tuple[Path, Path], tmp_path: Path
) -> None:
    """Review, session 50: 20 sockets pipelining 16 x GET /openapi.json (120 KB) and never
    reading held every slot of a --max-connections 20 server, each answer stuck for as long as
    the client liked. Once its answers fill the transport's buffer for a second, such a
    connection is closed at the limit (a whole request gets in), and it is closed anyway after
    protocol.WRITE_TIMEOUT_S."""
    # An answer larger than the kernel's socket buffers take: each is stuck in the transport
    # (kept-alive connections that are merely idle were already closed at the limit).
    examples = tmp_path / "examples"
    examples.mkdir()
    noise = Image.frombytes("RGB", (1200, 1200), os.urandom(1200 * 1200 * 3))
    noise.save(examples / "big.png")
    assert (examples / "big.png").stat().st_size > 4 << 20
    flags = ("--max-connections", "4", "--examples", str(examples))
    with capped_server(sample[1], tmp_path / "log", *flags) as s, contextlib.ExitStack() as stack:
        for _ in range(4):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            sock.settimeout(30)
            sock.connect(("127.0.0.1", s.port))
            stack.callback(sock.close)
            sock.sendall(b"GET /v1/examples/big.png HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 4)
            # Being answered: the server has taken the connection (connect() returns once the
            # kernel has, before the server counts it against the limit).
            assert sock.recv(1, socket.MSG_PEEK)

        def served() -> bool:
            r = httpx.get(f"{s.url}/v1/config", headers={"connection": "close"}, timeout=30)
            assert r.status_code in (200, 503), r.text
            return r.status_code == 200

        wait_for(served)  # room made by closing a connection that did not read
    log = (tmp_path / "log").read_text()
    assert re.search(r"closed 0 idle kept-alive and [1-4] slow connection", log), log[-3000:]
    assert "unhandled error" not in log and '"level": "error"' not in log  # a client's doing
    # An answer the server cut off unsent is logged as its close, 444 answer_not_read (it said
    # 200 before session 50, then the client's 499 until session 52); the sockets this test
    # closes itself at the end are the clients' 499.
    access = [json.loads(line) for line in log.splitlines() if '"/v1/examples/big.png"' in line]
    assert {e["status"] for e in access} <= {200, 444, 499}
    assert any(e["status"] == 444 and e.get("code") == "answer_not_read" for e in access)


def test_stalled_uploads_time_out_and_hold_bounded_memory(
    sample: tuple[Path, Path], tmp_path: Path
) -> None:
    """Item 11: 80 uploads stalled at 5.9 of 6 MB held +626 MB, with no read timeout."""
    flags = ("--body-timeout", "4", "--max-bodies-mb", "24")
    with capped_server(sample[1], tmp_path / "log", *flags) as s:
        before = rss_kb(s)
        head = "POST /invocations HTTP/1.1\nHost: 127.0.0.1\nContent-Type: image/jpeg\nContent-Length: {}\n"
        sockets = [raw_request(s, head.format(6_000_000), b"\xff" * 5_500_000) for _ in range(12)]
        try:
            statuses = sorted(read_status(sock) for sock in sockets)
        finally:
            for sock in sockets:
                sock.close()
        # Every stalled upload is answered: 503 once the body budget is spent, else 408.
        assert set(statuses) <= {408, 503} and 408 in statuses and 503 in statuses, statuses
        assert rss_kb(s) - before < 150 * 1024
        r = httpx.post(
            f"{s.url}/invocations", content=photo(sample), headers={"content-type": "image/jpeg"}
        )
        assert r.status_code == 200


def test_idle_and_trickling_connections_are_closed_so_the_limit_cannot_lock_out(
    sample: tuple[Path, Path], tmp_path: Path
) -> None:
    """Item 11: no connection limit; then (review) sockets that send nothing held every slot of
    ``--max-connections`` for ever. A connection whose request head is not complete within
    ``--head-timeout`` is closed, whether or not a request needs its room (one that does
    closes it sooner: test_slow_requests_make_room_at_the_connection_limit)."""
    flags = ("--max-connections", "4", "--head-timeout", "5")  # slack for a busy machine
    with capped_server(sample[1], tmp_path / "log", *flags) as s:
        page = f"{s.url}/"  # not a health check: those are answered past the limit
        idle = [socket.create_connection(("127.0.0.1", s.port), timeout=30) for _ in range(3)]
        trickle = raw_request(s, "GET /healthz HTTP/1.1")  # a request line, then no end of head
        try:
            t0 = time.monotonic()
            assert all(closed_by_server(sock, trickle=False) for sock in idle)
            assert closed_by_server(trickle, trickle=True)
            assert time.monotonic() - t0 < 25
            wait_for(lambda: httpx.get(page).status_code == 200)
        finally:
            for sock in [*idle, trickle]:
                sock.close()
        # A kept-alive connection idle for longer than the head deadline is still served.
        with raw_request(s, "GET /healthz HTTP/1.1\nHost: 127.0.0.1\n") as sock:
            assert read_status(sock) == 200
            time.sleep(6)  # idle on purpose: longer than --head-timeout
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            # Whatever of the first answer read_status left unread comes first: read until the
            # second answer's status line, however the bytes were split into segments.
            seen = b""
            while b"HTTP/1.1 200 OK" not in seen:
                chunk = sock.recv(65536)
                assert chunk, "the server closed a kept-alive connection"
                seen += chunk


# -- item 13: what public answers reveal, disconnects, HEAD, the schema --------------------------


def test_public_answers_hold_no_server_paths(server: Server, sample: tuple[Path, Path]) -> None:
    """Item 13: /v1/items/{id} and /readyz carried server paths; /docs loaded a CDN."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        item = client.get("/v1/items/sku-0014").json()
        assert "image" not in item and item["image_url"] == "/v1/items/sku-0014/image"
        ready = client.get("/readyz").text
        assert client.get("/docs").status_code == 404
        page = client.get("/").text
    for text in (json.dumps(item), ready):
        assert str(sample[0]) not in text and str(sample[1]) not in text and "/tmp" not in text
    assert "https://" not in page and "http://" not in page  # nothing loaded from elsewhere


def test_a_client_disconnect_is_not_a_server_error(server: Server) -> None:
    """Item 13: a client that hung up mid-body was logged and counted as a 500."""
    metrics = f"{server.url}/metrics"
    with raw_request(
        server,
        "POST /invocations HTTP/1.1\nHost: 127.0.0.1\nContent-Type: image/jpeg\nContent-Length: 100000\n",
        b"\xff\xd8\xff" * 10,
    ):
        pass
    wait_for(lambda: 'route="/invocations",status="499"' in httpx.get(metrics).text)
    text = httpx.get(metrics).text
    assert 'status="500"' not in text
    assert not any("unhandled error" in line for line in server.log_lines())


def test_the_schema_documents_client_errors(server: Server) -> None:
    """Item 13: the OpenAPI schema omitted the 4xx answers; HEAD /ping was 405."""
    assert httpx.head(f"{server.url}/ping").status_code == 200
    schema = httpx.get(f"{server.url}/openapi.json").json()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            documented = set(operation["responses"])
            assert {"400", "401", "413", "422", "503"} <= documented, (method, path)


def test_the_async_queue_limits_are_the_operators(
    sample: tuple[Path, Path], tmp_path: Path
) -> None:
    """Item 10 (review): nothing bounded queued jobs or the inline bytes they hold; the flags
    ``--async-max-queued`` and ``--async-max-queued-mb`` reach the store."""
    flags = ("--jobs-db", str(tmp_path / "jobs.db"), "--async-output", str(tmp_path / "out"))
    small = ("--async-max-queued-mb", "0.001")  # 1 KB: less than one photo
    with capped_server(sample[1], tmp_path / "log", *flags, *small) as s:
        r = httpx.post(
            f"{s.url}/async/invocations",
            content=photo(sample),
            headers={"content-type": "image/jpeg"},
        )
        assert r.status_code == 503 and r.json()["error"]["code"] == "queue_full"
        assert "retry-after" in r.headers
        ok = httpx.post(f"{s.url}/async/invocations", json={"item_ids": ["sku-0014"]})
        assert ok.status_code == 202  # a few bytes fit: the limit counts bytes, not requests


def test_health_checks_are_answered_past_the_connection_limit(
    sample: tuple[Path, Path], tmp_path: Path
) -> None:
    """With every allowed connection held by an upload, /ping was a plain-text 503, so a
    burst could make SageMaker replace a healthy instance (and the 503 of any other request
    was plain text, not StyGig's JSON error). And --max-connections N served N - 1 (uvicorn
    counts the connection asking)."""
    flags = ("--max-connections", "2", "--max-body-mb", "64")
    with capped_server(sample[1], tmp_path / "server.log", *flags) as server:
        head = UPLOAD_HEAD.format(5000)
        with steady_upload(server), steady_upload(server):  # both slots at work

            def full() -> bool:
                r = httpx.post(
                    server.url + "/invocations",
                    content=photo(sample),
                    headers={"content-type": "image/jpeg"},
                    timeout=30,
                )
                if r.status_code != 503:
                    return False
                # StyGig's JSON error, as every other refusal (uvicorn's was plain text)
                assert r.json()["error"]["code"] == "too_many_connections", r.text
                assert r.headers["retry-after"] == "1" and r.headers["connection"] == "close"
                return True

            wait_for(full)  # both slots are held: a third request is refused
            assert httpx.get(server.url + "/ping", timeout=30).status_code == 200
            assert httpx.get(server.url + "/healthz", timeout=30).status_code == 200
        # One slow upload (of the two allowed) leaves room for a request: N means N.
        one = raw_request(server, head, b"\xff\xd8")
        try:
            wait_for(
                lambda: (
                    httpx.post(
                        server.url + "/invocations",
                        content=photo(sample),
                        headers={"content-type": "image/jpeg"},
                        timeout=30,
                    ).status_code
                    == 200
                )
            )
        finally:
            one.close()


def _cpu_seconds(server: Server) -> float:
    fields = Path(f"/proc/{server.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _form(fields: list[tuple[str, str]]) -> tuple[bytes, str]:
    boundary = "stygig-form-boundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields
    ]
    return ("".join(parts) + f"--{boundary}--\r\n").encode(), (
        f"multipart/form-data; boundary={boundary}"
    )


@pytest.mark.parametrize("field", ["item_ids", "exclude_ids", "candidate_ids"])
def test_form_lists_are_counted_before_they_are_split(server: Server, field: str) -> None:
    """Review (s40): a 6 MB form field of comma-separated values was split whole (two million
    strings: ~0.5 s of CPU and +155 MB a request, ``item_ids`` on the event loop) before the
    count was checked; JSON bodies are counted first. Now every list from text is counted from
    its commas and refused at once, naming the field."""
    body, content_type = _form([("item_ids", "sku-0014"), (field, ",".join(["ab"] * 1_950_000))])
    if field == "item_ids":
        body, content_type = _form([(field, ",".join(["ab"] * 1_950_000))])
    cpu = _cpu_seconds(server)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for _ in range(3):
            r = client.post("/v1/recommend", content=body, headers={"content-type": content_type})
            assert r.status_code == 422, r.text[:300]
            assert r.json()["error"]["message"].startswith(f"{field}: at most"), r.text[:300]
        # Reading a 6 MB form costs its parsing (~0.1 s each); splitting it cost 0.5 s more.
        assert (_cpu_seconds(server) - cpu) / 3 < 0.25
        ok, content_type = _form([("item_ids", "sku-0014,sku-0020"), ("exclude_ids", "a,b")])
        r = client.post("/v1/recommend", content=ok, headers={"content-type": content_type})
        assert r.status_code == 200, r.text[:300]


def test_form_photos_are_counted_before_they_are_read(server: Server) -> None:
    """A form holds at most 8 photos, and 16 photos and items together, its uploads and the
    photos of its ``options`` fields counted together (review, session 43). The parser takes up
    to 16 files within the body limit; the 9th is refused before it is copied out of it."""
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 40, 40)).save(buf, "JPEG")
    photo = buf.getvalue()
    with httpx.Client(base_url=server.url, timeout=60) as client:
        r = client.post("/v1/recommend", files=[("image", ("p.jpg", photo, "image/jpeg"))] * 9)
        assert r.status_code == 422, r.text[:300]
        assert r.json()["error"]["message"] == "a query may hold at most 8 photos"
        ids = ",".join(f"sku-{n:04d}" for n in range(10, 19))
        r = client.post(
            "/v1/recommend",
            files=[("image", ("p.jpg", photo, "image/jpeg"))] * 8,
            data={"item_ids": ids},
        )
        assert r.status_code == 422, r.text[:300]
        assert "at most 16 photos and items together" in r.json()["error"]["message"]
        # Photos in several options fields are counted together, before any is decoded.
        b64 = base64.b64encode(photo).decode()
        options = json.dumps({"images_b64": [b64] * 5})
        body, content_type = _form([("options", options), ("options", options)])
        r = client.post("/v1/recommend", content=body, headers={"content-type": content_type})
        assert r.status_code == 422, r.text[:300]
        assert r.json()["error"]["message"] == "a query may hold at most 8 photos"
        r = client.post("/v1/recommend", files=[("image", ("p.jpg", photo, "image/jpeg"))] * 8)
        assert r.status_code == 200, r.text[:300]


@pytest.mark.parametrize(
    "head",
    [
        "GET /v1/config HTTP/2.0\n",
        "GET /v1/config HTTP/2.0\nHost: 127.0.0.1\n",
        "GET /v1/config\n",  # no version: llhttp reads HTTP/0.9
        "POST /invocations HTTP/2.0\nHost: 127.0.0.1\nContent-Type: application/json\n"
        'Content-Length: 26\n\n{"item_ids": ["sku-0001"]}',
    ],
    ids=["2.0", "2.0-with-host", "0.9", "2.0-post"],
)
def test_a_version_other_than_http_1_is_505(server: Server, head: str) -> None:
    """Review (s50): HTTP/2.0 and a line without a version were served as HTTP/1.1, without
    its rule that a request names its Host."""
    body = b""
    if "\n\n" in head:
        head, text = head.split("\n\n")
        head, body = head + "\n", text.encode()
    sock = raw_request(server, head, body)
    try:
        assert read_status(sock) == 505
    finally:
        sock.close()
    for version in ("1.0", "1.1"):
        sock = raw_request(server, f"GET /v1/config HTTP/{version}\nHost: 127.0.0.1\n")
        try:
            assert read_status(sock) == 200
        finally:
            sock.close()


def test_an_absolute_form_targets_host_is_checked_as_the_host(server: Server) -> None:
    """RFC 9112 3.2.2: the target's authority stands for Host. Review (s50): the Host field
    alone was checked, so `GET http://evil.example/...` with `Host: 127.0.0.1` was served."""
    for target, host, status in (
        ("http://evil.example/v1/config", "127.0.0.1", 400),
        ("http://evil.example:80/v1/config?x=1", "127.0.0.1", 400),
        (f"http://127.0.0.1:{server.port}/v1/config", "evil.example", 200),
        ("/v1/config", "127.0.0.1", 200),
        # User information is no host (it read "localhost:x@evil.com" as localhost: s50).
        ("http://localhost:x@evil.example/v1/config", "127.0.0.1", 400),
        ("/v1/config", "localhost:x@evil.example", 400),
        # Several Host fields, or none, are refused as without the target.
        ("http://127.0.0.1/v1/config", "127.0.0.1\nHost: 127.0.0.1", 400),
    ):
        sock = raw_request(server, f"GET {target} HTTP/1.1\nHost: {host}\n")
        try:
            assert read_status(sock) == status, (target, host)
        finally:
            sock.close()
    sock = raw_request(server, "GET http://127.0.0.1/v1/config HTTP/1.1\n")
    try:
        assert read_status(sock) == 400
    finally:
        sock.close()


def test_form_options_fields_share_one_json_value_budget(server: Server) -> None:
    """Review (s40): each of a form's 64 ``options`` fields was counted against the JSON value
    limit alone, so a form held 64 times what a JSON body may."""
    from stygig.recommendation import MAX_JSON_VALUES

    each = json.dumps({"zz": [1] * (MAX_JSON_VALUES // 2)})
    body, content_type = _form([("item_ids", "sku-0014")] + [("options", each)] * 8)
    r = httpx.post(
        server.url + "/v1/recommend",
        content=body,
        headers={"content-type": content_type},
        timeout=60,
    )
    assert r.status_code == 413, r.text[:300]
    assert "JSON values" in r.json()["error"]["message"]


def test_a_byte_order_mark_does_not_lift_the_json_value_bound(server: Server) -> None:
    """Review (s50): a UTF-8 byte order mark (or UTF-16 text) before 5.7 MB of [{},{},...] was
    parsed whole (a second of CPU, 130 MB each; four such clients slowed a photo 250x)."""
    many = b"[" + b"{}," * 1_000_000 + b"{}]"
    for route in ("/invocations", "/v1/outfits/score"):
        for body, status in ((b"\xef\xbb\xbf" + many, 413), (many.decode().encode("utf-16"), 400)):
            r = httpx.post(
                server.url + route,
                content=body,
                headers={"content-type": "application/json"},
                timeout=60,
            )
            assert r.status_code == status, (route, r.text[:300])


@pytest.mark.parametrize(
    ("extra", "status"),
    [
        ("", 413),  # over the body limit, mid-body
        ("Content-Encoding: gzip\r\n", 415),  # refused before the body is read
        ("X-Host: x\r\nHost: elsewhere.example\r\n", 400),  # another name (rebinding)
    ],
    ids=["413-mid-body", "415-at-once", "host-refused"],
)
def test_a_refused_chunked_upload_closes_its_connection(
    server: Server, extra: str, status: int
) -> None:
    """Review (s40): a chunked upload answered before its end (413 mid-body; 401, 403, 415 or
    a refused host at once) kept its connection, and the server read and dropped whatever the
    client went on sending until the message deadline (65 s): 19 GB in 10 s on one
    connection, 70 % of a core on the event loop, with or without a token. The connection
    now closes after the answer."""
    host = "" if "Host:" in extra else "Host: 127.0.0.1\r\n"
    head = (
        f"POST /invocations HTTP/1.1\r\n{host}{extra}Content-Type: image/jpeg\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    piece = b"%x\r\n%s\r\n" % (1 << 16, b"\xff" * (1 << 16))
    answered, sent = _stream_head(server, head, piece * 16, 512 << 20)
    assert answered in (status, 0), answered  # the answer, or reset while still sending
    assert sent < 64 << 20, f"the server read {sent >> 20} MB after its answer"
    assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200


@pytest.mark.parametrize(
    "head",
    [
        "POST /invocations HTTP/1.1\nHost: 127.0.0.1\nContent-Length: -1\n",
        "POST /invocations HTTP/1.1\nHost: 127.0.0.1\nContent-Length: 4\n"
        "Transfer-Encoding: chunked\n",
        "GET /ping HTTP/1.1\nHost: 127.0.0.1\nX-A: a\x00b\n",
        "GET /ping HTTP/1.1\nHost: 127.0.0.1\nX-A: a\n  folded\n",
    ],
    ids=["negative-length", "length-and-chunked", "nul-in-header", "obsolete-fold"],
)
def test_a_request_that_is_not_http_gets_the_json_error(server: Server, head: str) -> None:
    """Review (s40): what llhttp cannot parse got uvicorn's plain-text 400 ("Invalid HTTP
    request received."); every other error is the JSON error body."""
    with raw_request(server, head) as sock:
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break  # the server closes the connection after the answer
            data += chunk
    head_part, _, body = data.partition(b"\r\n\r\n")
    assert head_part.startswith(b"HTTP/1.1 400 "), data[:200]
    assert b"content-type: application/json" in head_part.lower()
    assert json.loads(body)["error"]["code"] == "malformed_http"


def test_a_header_given_twice_is_read_whole(server: Server, sample: tuple[Path, Path]) -> None:
    """Review (s40): the boundary kept the last of a repeated field, so ``Host: evil.example``
    then ``Host: 127.0.0.1`` passed the loopback check (a browser cannot send it, a client
    can), and ``Content-Encoding: gzip`` then ``identity`` passed the 415. Two Hosts are a
    400 (RFC 9112); every Content-Encoding counts."""
    body = photo(sample)
    cases = [
        (f"Host: evil.example\nHost: 127.0.0.1\nContent-Length: {len(body)}\n", 400),
        (
            "Host: 127.0.0.1\nContent-Encoding: gzip\nContent-Encoding: identity\n"
            f"Content-Length: {len(body)}\n",
            415,
        ),
        (
            f"Host: 127.0.0.1\nContent-Encoding: identity, identity\nContent-Length: {len(body)}\n",
            200,
        ),
    ]
    for fields, status in cases:
        head = f"POST /invocations HTTP/1.1\nContent-Type: image/jpeg\n{fields}Connection: close\n"
        with raw_request(server, head, body) as sock:
            assert read_status(sock) == status, fields


def test_a_transfer_coding_other_than_chunked_alone_is_refused(
    server: Server, sample: tuple[Path, Path]
) -> None:
    """Review (s45): the parser reads any coding list that ends in chunked as chunked and
    nothing undid the others, so ``gzip, chunked`` was answered 200 as a plain body, where a
    proxy in front may frame it otherwise (request smuggling). Chunked alone is read."""
    body = photo(sample)
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    cases = [
        ("Transfer-Encoding: gzip, chunked\n", 400),
        ("Transfer-Encoding: x-evil, chunked\n", 400),
        ("Transfer-Encoding: identity, chunked\n", 400),
        ("Transfer-Encoding: gzip\nTransfer-Encoding: chunked\n", 400),
        ("Transfer-Encoding: chunked, chunked\n", 400),
        ("Transfer-Encoding: Chunked\n", 200),
    ]
    for fields, status in cases:
        head = (
            "POST /invocations HTTP/1.1\nHost: 127.0.0.1\nContent-Type: image/jpeg\n"
            f"{fields}Connection: close\n"
        )
        with raw_request(server, head, chunked) as sock:
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        assert data.startswith(b"HTTP/1.1 %d " % status), (fields, data[:300])
        if status == 400:  # (llhttp itself refuses some lists: "chunked, chunked")
            answer = json.loads(data.partition(b"\r\n\r\n")[2])
            codes = ("unsupported_transfer_encoding", "malformed_http")
            assert answer["error"]["code"] in codes, (fields, answer)


def test_a_client_that_half_closes_after_its_request_gets_its_answer(
    server: Server, sample: tuple[Path, Path]
) -> None:
    """Review (s45): a client that shuts down its sending side after a whole request (``nc
    -N``, some proxies) got no answer: the server did the work, the connection was gone. The
    answer (every queued one) is sent, then the connection closes."""
    body = photo(sample)
    head = f"POST /invocations HTTP/1.1\nHost: 127.0.0.1\nContent-Type: image/jpeg\nContent-Length: {len(body)}\n"
    ping = b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with raw_request(server, head, body + ping) as sock:
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):  # ends: the server closes after the last answer
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 "), data[:200]
    assert data.count(b"HTTP/1.1 200 ") == 2  # the pipelined ping too
    assert json.loads(data.split(b"\r\n\r\n", 1)[1].split(b"HTTP/1.1", 1)[0])["items"]
    # Past the pipeline's bound too: the queued answers are sent (review, s47: the request
    # dropped unread looked like a body cut short, and the connection closed at once).
    from stygig.serving.protocol import MAX_PIPELINE

    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(ping * (MAX_PIPELINE + 3))
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.count(b"HTTP/1.1 200 ") == MAX_PIPELINE + 1, data.count(b"HTTP/1.1 200 ")


def test_an_http_1_1_request_without_a_host_is_refused(server: Server) -> None:
    """RFC 9112: an HTTP/1.1 request with no Host, or an empty one, is a 400 (review, s45: it
    was served); HTTP/1.0 need not name one."""
    for head, status in (
        ("GET /healthz HTTP/1.1\nConnection: close\n", 400),
        ("GET /healthz HTTP/1.1\nHost:\nConnection: close\n", 400),
        ("GET /healthz HTTP/1.0\n", 200),
        ("GET /healthz HTTP/1.1\nHost: 127.0.0.1\nConnection: close\n", 200),
    ):
        with raw_request(server, head) as sock:
            assert read_status(sock) == status, head


def test_refused_uploads_repeated_on_one_connection_are_cut_off(server: Server) -> None:
    """Review (s40, R3): a refusal before the body is read (a 415 here; 401, 403, a refused
    host alike) keeps a declared body of modest size readable, so the client sees its answer;
    but one connection repeating such uploads pushed 24 GB in 10 s through the event loop.
    The bytes a connection sends after their answers are bounded over its life (4 x the body
    limit), then it is closed."""
    body = b"\xff" * 5_000_000  # within the 6 MB limit: read and dropped after the 415
    request = (
        b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
        b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    answered, sent = _stream_head(server, request, request, 512 << 20)
    assert answered in (415, 0), answered
    assert sent < 64 << 20, f"the server read {sent >> 20} MB of refused uploads"
    # One refused upload still gets its answer on a connection that stays usable.
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(request)
        assert read_status(sock) == 415
    assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200


def test_a_websocket_upgrade_is_answered_as_plain_http(server: Server) -> None:
    """Review (s40): a WebSocket upgrade reached uvicorn's WebSocket protocol and got an empty
    403 (no route is a WebSocket); it is now the HTTP request it also is: a JSON 404 here."""
    head = (
        "GET /v1/socket HTTP/1.1\nHost: 127.0.0.1\nUpgrade: websocket\nConnection: Upgrade\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\nSec-WebSocket-Version: 13\n"
    )
    with raw_request(server, head) as sock:
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head_part, _, body = data.partition(b"\r\n\r\n")
    assert head_part.startswith(b"HTTP/1.1 404 "), data[:200]
    assert json.loads(body)["error"]["code"] == "not_found"

"""Webhooks as server-side request forgery: what a client's webhook URL may reach, how
delivery retries, how long a hostile receiver may hold a delivery, and what the message says.

Every receiver is a real HTTP server on 127.0.0.1. Nothing here contacts another machine: names
other than ``localhost`` and ``*.invalid`` go through a fake resolver, and the one "public"
address such a resolver hands out is only ever checked, never connected to.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from stygig.errors import InvalidOptionsError
from stygig.jobs.notify import Notifier, event_for
from stygig.jobs.store import Job, JobSpec, JobStore, new_owner
from tests.integration.test_jobs import wait_for

LOOPBACK = ("127.0.0.0/8",)
#: A public address (example.com's) that fake resolvers return; tests never connect to it.
PUBLIC_IP = "93.184.215.14"
EVENT: dict[str, Any] = {"inferenceId": "job-1", "status": "succeeded"}

#: One scripted answer: status and extra headers (a callable value is computed as it is sent).
Answer = tuple[int, dict[str, str | Callable[[], str]]]


@dataclass
class Hit:
    """One request a receiver got."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() on arrival


@dataclass
class Receiver:
    """A webhook receiver on loopback that answers from a script (the last answer repeats)."""

    answers: list[Answer]
    hits: list[Hit] = field(default_factory=list)
    port: int = 0
    sni: list[str] = field(default_factory=list)
    lock: threading.Condition = field(default_factory=threading.Condition)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT/hook``."""
        return f"http://127.0.0.1:{self.port}/hook"

    def wait_for_hits(self, n: int, timeout: float = 20.0) -> list[Hit]:
        """The hits once there are at least ``n`` (fails after ``timeout`` seconds)."""
        with self.lock:
            if not self.lock.wait_for(lambda: len(self.hits) >= n, timeout):
                raise TimeoutError(f"receiver got {len(self.hits)} of {n} requests")
            return list(self.hits)


@contextmanager
def receiver(*answers: Answer, tls: ssl.SSLContext | None = None) -> Iterator[Receiver]:
    """A threaded HTTP(S) server on 127.0.0.1 answering every method from ``answers``."""
    rec = Receiver(list(answers) or [(200, {})])

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with rec.lock:
                rec.hits.append(
                    Hit(self.command, self.path, dict(self.headers), body, time.monotonic())
                )
                rec.lock.notify_all()
                status, headers = rec.answers[min(len(rec.hits), len(rec.answers)) - 1]
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value() if callable(value) else value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _answer

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:

        def remember_sni(_sock: ssl.SSLObject, name: str, _ctx: ssl.SSLContext) -> None:
            rec.sni.append(name)

        tls.sni_callback = remember_sni
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    rec.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def make_notifier() -> Iterator[Callable[..., Notifier]]:
    """Notifiers with tiny backoffs, all closed at the end."""
    made: list[Notifier] = []

    def make(**kw: Any) -> Notifier:
        kw.setdefault("backoff_s", 0.01)
        kw.setdefault("max_backoff_s", 0.05)
        kw.setdefault("timeout_s", 5.0)
        notifier = Notifier(**kw)
        made.append(notifier)
        return notifier

    yield make
    for notifier in made:
        notifier.close()


def fake_resolver(
    table: dict[str, list[str]], calls: list[str] | None = None
) -> Callable[[str, int], Sequence[str]]:
    """A resolver answering from ``table`` (unknown names fail like NXDOMAIN)."""

    def resolve(host: str, port: int) -> Sequence[str]:
        if calls is not None:
            calls.append(host)
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return table[host]

    return resolve


def free_closed_port() -> int:
    """A loopback port nothing listens on (connections to it are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def refused(notifier: Notifier, url: str) -> InvalidOptionsError:
    """The error ``check_url`` raises for ``url`` (fails if it accepts it)."""
    with pytest.raises(InvalidOptionsError) as info:
        notifier.check_url(url)
    assert info.value.http_status == 422
    return info.value


# -- what a client's webhook URL may name -------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "gopher://127.0.0.1:6379/_FLUSHALL",
        "ftp://hooks.example.com/x",
        "dict://hooks.example.com:11211/stat",
        "http://user:secret@hooks.example.com/x",
        "http:///no-host",
        "http://hooks.example.com:99999/x",
        "not a url",
        "https://hooks.example.com/" + "a" * 3000,
    ],
)
def test_check_url_refuses_other_schemes_credentials_and_malformed_urls(
    url: str, make_notifier: Callable[..., Notifier]
) -> None:
    """Hole: any scheme urllib knows (file://, ...) was opened, and nothing was checked at
    submission. Only http(s) URLs with a host, no credentials and a sane length pass."""
    notifier = make_notifier(resolve=fake_resolver({"hooks.example.com": [PUBLIC_IP]}))
    error = refused(notifier, url)
    assert error.code == "invalid_webhook"
    assert "passwd" not in error.message and "secret" not in error.message
    assert "hooks.example.com" not in error.message
    notifier.check_url("https://hooks.example.com/x?token=1")  # the well-formed one passes


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://127.1:8080/",
        "http://2130706433/",  # 127.0.0.1 as one number
        "http://localhost:8080/async/invocations",
        "http://[::1]/",
        "http://10.0.0.1/",
        "http://172.16.5.4/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",  # carrier-grade NAT
        "http://169.254.169.254/latest/meta-data/",
        "http://0.0.0.0:8080/",
        "http://[::]/",
        "http://224.0.0.1/",
        "http://240.0.0.1/",
        "http://[fe80::1]/",
        "http://[fc00::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:169.254.169.254]/",
        "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 of 169.254.169.254
        "http://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
        "https://[::7f00:1]/",  # IPv4-compatible 127.0.0.1
    ],
)
def test_check_url_refuses_internal_addresses(
    url: str, make_notifier: Callable[..., Notifier]
) -> None:
    """Hole: the server POSTed to loopback, private ranges, the metadata service and its own
    API. Every non-public address is refused (the system resolver reads these locally)."""
    error = refused(make_notifier(), url)
    assert error.code == "webhook_not_allowed"
    assert "127" not in error.message and "169.254" not in error.message


def test_check_url_refuses_names_that_resolve_inside(
    make_notifier: Callable[..., Notifier],
) -> None:
    """Hole: a host name was never resolved and checked. A name is refused when any one of its
    addresses is internal, and a name that does not resolve is refused too."""
    resolve = fake_resolver(
        {
            "hooks.example.com": [PUBLIC_IP],
            "internal.example.com": ["127.0.0.1"],
            "mixed.example.com": [PUBLIC_IP, "10.1.2.3"],
            "metadata.example.com": ["169.254.169.254"],
        }
    )
    notifier = make_notifier(resolve=resolve)
    notifier.check_url("https://hooks.example.com/x")
    for name in ("internal", "mixed", "metadata"):
        error = refused(notifier, f"https://{name}.example.com/x")
        assert error.code == "webhook_not_allowed" and "example" not in error.message
    # The real resolver; .invalid is reserved and never resolves.
    error = refused(make_notifier(), "https://nothing-here.invalid/hook")
    assert error.code == "webhook_unresolvable" and "nothing-here" not in error.message


def test_allow_networks_lets_the_operator_open_a_range(
    make_notifier: Callable[..., Notifier],
) -> None:
    """Hole: no way to tell the server which internal receivers are fine. Allowed networks pass,
    everything else internal is still refused, and a bad CIDR is refused at start-up."""
    notifier = make_notifier(allow_networks=LOOPBACK)
    notifier.check_url("http://127.0.0.1:8080/hook")
    notifier.check_url("http://[::ffff:127.0.0.1]:8080/hook")
    assert refused(notifier, "http://169.254.169.254/").code == "webhook_not_allowed"
    assert refused(notifier, "http://[::1]/").code == "webhook_not_allowed"
    with pytest.raises(InvalidOptionsError):
        Notifier(allow_networks=("127.0.0.1/8",))
    with pytest.raises(InvalidOptionsError):
        Notifier(allow_networks=("loopback",))


def test_operator_webhook_must_be_http(make_notifier: Callable[..., Notifier]) -> None:
    """Hole: ``--async-webhook file:///...`` was accepted and opened."""
    with pytest.raises(InvalidOptionsError):
        Notifier(webhook="file:///etc/passwd")
    make_notifier(webhook="http://127.0.0.1:9/hook")  # an internal address is the operator's call


# -- delivery ------------------------------------------------------------------------------------


def test_a_2xx_is_one_post_with_the_event(make_notifier: Callable[..., Notifier]) -> None:
    """Hole: delivery used urllib. One attempt, a POST with the JSON event, nothing else."""
    notifier = make_notifier(allow_networks=LOOPBACK, retries=3)
    with receiver((204, {})) as rec:
        assert notifier.post(rec.url, EVENT) is True
        hits = rec.wait_for_hits(1)
    assert [(h.method, h.path) for h in hits] == [("POST", "/hook")]
    assert json.loads(hits[0].body) == EVENT
    assert hits[0].headers["X-Stygig-Attempt"] == "1"


@pytest.mark.parametrize(
    ("status", "attempts"),
    [(400, 1), (401, 1), (403, 1), (404, 1), (410, 1), (408, 3), (429, 3), (500, 3), (503, 3)],
)
def test_4xx_is_final_and_the_retry_limit_holds(
    status: int, attempts: int, make_notifier: Callable[..., Notifier]
) -> None:
    """Hole: every failure was retried, 4xx included. A 4xx other than 408/429 is final; the
    rest stop at ``retries + 1`` attempts."""
    notifier = make_notifier(allow_networks=LOOPBACK, retries=2)
    with receiver((status, {})) as rec:
        assert notifier.post(rec.url, EVENT) is False
        hits = list(rec.hits)
    assert len(hits) == attempts
    assert [h.headers["X-Stygig-Attempt"] for h in hits] == [str(i + 1) for i in range(attempts)]


def test_503_then_200_is_two_attempts(make_notifier: Callable[..., Notifier]) -> None:
    """Hole: retries were unbounded in total across restarts; here a transient 503 is retried
    and the delivery then counts as done."""
    notifier = make_notifier(allow_networks=LOOPBACK, retries=5)
    with receiver((503, {}), (200, {})) as rec:
        assert notifier.post(rec.url, EVENT) is True
        assert len(rec.hits) == 2


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_retry_after_is_honoured(form: str, make_notifier: Callable[..., Notifier]) -> None:
    """Hole: ``Retry-After`` was ignored. With a backoff of at most 50 ms, the second attempt
    comes only after the pause the receiver asked for."""
    value: str | Callable[[], str]
    if form == "seconds":
        value, at_least = "1", 0.9
    else:

        def value() -> str:
            # Dated as the answer goes out, so a slow start cannot eat the pause; whole
            # seconds only, so 2 to 3 seconds ahead.
            when = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=3)
            return email.utils.format_datetime(when, usegmt=True)

        at_least = 1.5
    notifier = make_notifier(allow_networks=LOOPBACK, retries=1)
    with receiver((503, {"Retry-After": value}), (200, {})) as rec:
        assert notifier.post(rec.url, EVENT) is True
        first, second = rec.wait_for_hits(2)
    assert at_least <= second.at - first.at < 30


def test_retry_after_is_capped(make_notifier: Callable[..., Notifier]) -> None:
    """Hole: a receiver could park a delivery thread for as long as it liked."""
    notifier = make_notifier(allow_networks=LOOPBACK, retries=1, retry_after_cap_s=0.2)
    started = time.monotonic()
    with receiver((429, {"Retry-After": "86400"}), (200, {})) as rec:
        assert notifier.post(rec.url, EVENT) is True
        assert len(rec.hits) == 2
    assert time.monotonic() - started < 15


def test_a_redirect_is_a_failed_attempt_never_followed(
    make_notifier: Callable[..., Notifier],
) -> None:
    """Hole: urllib followed a 302 and turned the POST into a GET to wherever it pointed
    (an allowed receiver could bounce the server onto an internal one)."""
    notifier = make_notifier(allow_networks=LOOPBACK, retries=3)
    with receiver((200, {})) as inner:
        with receiver((302, {"Location": inner.url})) as outer:
            assert notifier.post(outer.url, EVENT) is False
            assert [h.method for h in outer.hits] == ["POST"]
        assert inner.hits == []


def test_connection_refused_stops_at_the_limit(make_notifier: Callable[..., Notifier]) -> None:
    """Hole: network errors were retried forever (4 times a second, across restarts). Each
    attempt resolves the name once; there are exactly ``retries + 1`` of them and no exception."""
    calls: list[str] = []
    notifier = make_notifier(
        allow_networks=LOOPBACK,
        retries=3,
        resolve=fake_resolver({"hooks.test": ["127.0.0.1"]}, calls),
    )
    assert notifier.post(f"http://hooks.test:{free_closed_port()}/hook", EVENT) is False
    assert calls == ["hooks.test"] * 4


def test_the_request_goes_to_the_checked_address(make_notifier: Callable[..., Notifier]) -> None:
    """Hole: the name was resolved again by the HTTP library after any check (DNS rebinding).
    The request is sent to the address that was checked, with the name in ``Host``."""
    notifier = make_notifier(
        allow_networks=LOOPBACK, resolve=fake_resolver({"hooks.test": ["127.0.0.1"]})
    )
    with receiver((200, {})) as rec:
        assert notifier.post(f"http://hooks.test:{rec.port}/hook?x=1", EVENT) is True
        (hit,) = rec.wait_for_hits(1)
    assert hit.headers["Host"] == f"hooks.test:{rec.port}"
    assert hit.path == "/hook?x=1"


def test_dns_rebinding_after_submission_is_refused(
    make_notifier: Callable[..., Notifier],
) -> None:
    """Hole: a name that was public at submission and resolves to loopback at send time
    reached the loopback receiver. The send-time check refuses it, once, without retrying."""
    answers = iter([[PUBLIC_IP]])
    calls: list[str] = []

    def rebinding(host: str, port: int) -> list[str]:
        calls.append(host)
        return next(answers, ["127.0.0.1"])

    notifier = make_notifier(retries=3, resolve=rebinding)
    with receiver((200, {})) as rec:
        url = f"http://rebind.test:{rec.port}/hook"
        notifier.check_url(url)  # at submission: public
        assert notifier.post(url, EVENT) is False
        assert rec.hits == []
    assert calls == ["rebind.test"] * 2


def _self_signed(tmp_path: Path, name: str) -> tuple[Path, Path]:
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.mark.parametrize(("cert_name", "delivered"), [("hooks.test", True), ("other.test", False)])
def test_https_to_the_checked_address_still_verifies_the_name(
    cert_name: str,
    delivered: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    make_notifier: Callable[..., Notifier],
) -> None:
    """Hole: pinning the address must not weaken TLS. The server is asked for the URL's name
    (SNI) and its certificate must match that name."""
    cert, key = _self_signed(tmp_path, cert_name)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trust this certificate only
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    notifier = make_notifier(
        allow_networks=LOOPBACK, retries=0, resolve=fake_resolver({"hooks.test": ["127.0.0.1"]})
    )
    with receiver((200, {}), tls=context) as rec:
        assert notifier.post(f"https://hooks.test:{rec.port}/hook", EVENT) is delivered
        assert len(rec.hits) == int(delivered)
        assert rec.sni and set(rec.sni) == {"hooks.test"}


# -- send(): what the worker calls ---------------------------------------------------------------


def _job(tmp_path: Path, webhook: str | None, input_location: str | None = None) -> Job:
    """A queued job with ``webhook``; its input inline, or stored at ``input_location``."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    with JobStore(tmp_path / "jobs.db", synchronous="NORMAL") as store:
        job, _ = store.submit(
            JobSpec(
                output_location=str(tmp_path / "out"),
                failure_location=str(tmp_path / "err"),
                input_body=None if input_location else b"{}",
                input_location=input_location,
                webhook=webhook,
            )
        )
    return job


@pytest.mark.parametrize("webhook", ["file:///etc/passwd", "http://127.0.0.1:9/hook"])
def test_send_refuses_a_stored_bad_webhook_once_without_raising(
    webhook: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    make_notifier: Callable[..., Notifier],
) -> None:
    """Hole: a stored ``file://`` webhook was opened, then raised on every pass (so the
    notification stayed pending and was retried ~4 times a second, across restarts). Jobs
    stored before the submission check are refused at send time: ``False``, no exception."""
    notifier = make_notifier(retries=3)
    job = _job(tmp_path, webhook)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="stygig.jobs.notify"):
        assert notifier.send(job) is False
    assert time.monotonic() - started < 5
    attempts = [r for r in caplog.records if r.getMessage().startswith("webhook attempt")]
    assert len(attempts) == 1


def test_send_checks_job_webhooks_but_trusts_the_operators(
    tmp_path: Path, make_notifier: Callable[..., Notifier]
) -> None:
    """Hole: a client's webhook reached loopback. The operator's ``--async-webhook`` may name
    an internal receiver; a job's own webhook to the same place is refused."""
    with receiver((200, {})) as rec:
        notifier = make_notifier(webhook=rec.url, retries=1)
        assert notifier.send(_job(tmp_path / "a", None)) is True
        assert len(rec.wait_for_hits(1)) == 1
        assert notifier.send(_job(tmp_path / "b", rec.url.replace("/hook", "/other"))) is False
        rec.wait_for_hits(2)  # the operator's is still told
        assert [h.path for h in rec.hits] == ["/hook", "/hook"]


def test_a_clients_webhook_neither_silences_the_operators_nor_learns_the_input_location(
    tmp_path: Path, make_notifier: Callable[..., Notifier]
) -> None:
    """Review (s37): a job's own webhook replaced the operator's ``--async-webhook`` (a client
    could hide its jobs from an audit), and both carried the job's input location (a server
    path or bucket key the client had named) although docs/security.md says notifications
    show none. Now both are posted; only the operator's channels carry the input location."""
    with receiver((200, {})) as rec:
        hook = rec.url.replace("/hook", "/client")
        job = _job(tmp_path, hook, input_location="s3://shop/in/secret-photo.jpg")
        notifier = make_notifier(webhook=rec.url, allow_networks=LOOPBACK, retries=1)
        assert notifier.send(job) is True
        hits = {h.path: json.loads(h.body) for h in rec.wait_for_hits(2)}
    assert set(hits) == {"/hook", "/client"}
    assert "secret-photo" not in json.dumps(hits["/client"])
    assert hits["/client"]["requestParameters"] == {"contentType": job.content_type}
    assert hits["/hook"]["requestParameters"]["inputLocation"] == "s3://shop/in/secret-photo.jpg"
    assert hits["/client"]["inferenceId"] == hits["/hook"]["inferenceId"] == job.id


def test_close_ends_a_pending_backoff(make_notifier: Callable[..., Notifier]) -> None:
    """Hole: a delivery waiting out a long ``Retry-After`` held up shutdown."""
    notifier = make_notifier(allow_networks=LOOPBACK, retries=3, retry_after_cap_s=60)
    result: list[bool] = []
    with receiver((503, {"Retry-After": "60"})) as rec:
        thread = threading.Thread(target=lambda: result.append(notifier.post(rec.url, EVENT)))
        thread.start()
        rec.wait_for_hits(1)
        closed_at = time.monotonic()
        notifier.close()
        thread.join(20)
        assert not thread.is_alive()
        assert time.monotonic() - closed_at < 10
        assert result == [False] and len(rec.hits) == 1


# -- a receiver that answers slowly on purpose ---------------------------------------------------


@dataclass
class Trickler:
    """A raw HTTP receiver on 127.0.0.1 that accepts a request, sends a status line and then
    one header line every ``every_s`` seconds, never ending the headers (it gives up after
    ``lines`` lines, so a client that waits for it forever still ends the test)."""

    every_s: float = 0.2
    lines: int = 200
    port: int = 0
    accepted: threading.Event = field(default_factory=threading.Event)
    sent: int = 0  # header lines sent so far
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT/hook``."""
        return f"http://127.0.0.1:{self.port}/hook"

    def serve(self, listener: socket.socket) -> None:
        """Answer one connection, a line at a time, until the client goes or ``stop``."""
        while not self.stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                self.accepted.set()
                try:
                    conn.recv(65536)
                    conn.sendall(b"HTTP/1.1 200 OK\r\n")
                    while self.sent < self.lines and not self.stop.wait(self.every_s):
                        conn.sendall(f"X-Trickle-{self.sent}: x\r\n".encode())
                        self.sent += 1
                except OSError:
                    pass  # the client hung up
            return


@contextmanager
def trickler() -> Iterator[Trickler]:
    """A :class:`Trickler` serving in a thread."""
    rec = Trickler()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    rec.port = listener.getsockname()[1]
    thread = threading.Thread(target=rec.serve, args=(listener,), daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        rec.stop.set()
        thread.join(10)
        listener.close()


def test_a_trickling_receiver_is_cut_off_at_the_deadline(
    make_notifier: Callable[..., Notifier],
) -> None:
    """Hole: ``timeout_s`` bounded each read, not the attempt: a receiver sending one header
    line per second held a delivery thread for as long as it liked (4 such receivers stalled
    every notification of the server). An attempt now ends at ``deadline_s``."""
    deadline_s = 1.5
    notifier = make_notifier(
        allow_networks=LOOPBACK, retries=0, timeout_s=2.0, deadline_s=deadline_s
    )
    with trickler() as rec:
        started = time.monotonic()
        assert notifier.post(rec.url, EVENT) is False
        took = time.monotonic() - started
        assert rec.accepted.is_set() and rec.sent >= 1  # it really was trickling
    assert took < deadline_s + 5.0  # the trickle alone would last 40 s


def test_close_cancels_an_attempt_in_flight(make_notifier: Callable[..., Notifier]) -> None:
    """Hole: shutting down (``close``) waited for a delivery blocked on a trickling receiver.
    ``close`` now cancels the attempt wherever it waits."""
    notifier = make_notifier(allow_networks=LOOPBACK, retries=3, timeout_s=5.0, deadline_s=120)
    result: list[bool] = []
    with trickler() as rec:
        thread = threading.Thread(target=lambda: result.append(notifier.post(rec.url, EVENT)))
        thread.start()
        assert rec.accepted.wait(20)
        closed_at = time.monotonic()
        notifier.close()
        thread.join(20)
        assert not thread.is_alive()
        assert time.monotonic() - closed_at < 5.0
    assert result == [False]


# -- what a notification says --------------------------------------------------------------------


def _finished_job(tmp_path: Path, output: str, status: str) -> Job:
    with JobStore(tmp_path / "jobs.db", synchronous="NORMAL") as store:
        store.submit(
            JobSpec(
                output_location=f"{output}/{{id}}.out",
                failure_location=f"{output}/{{id}}-error.out",
                input_body=b"{}",
                id=f"job-{status}",
            )
        )
        owner = new_owner()
        (job,) = store.claim(owner)
        error = {"code": "timeout", "message": "too slow"} if status == "failed" else None
        assert store.finish(job.id, owner, 1, status, error)  # type: ignore[arg-type]
        return store.get(job.id)


@pytest.mark.parametrize("status", ["succeeded", "failed"])
def test_notifications_show_no_server_paths(
    status: str, tmp_path: Path, make_notifier: Callable[..., Notifier]
) -> None:
    """Review item 4: the webhook message carried the raw output/failure location, so a
    receiver learnt the server's folders (``"outputLocation": "/tmp/.../out/<id>.out"``).
    Locations are now shown as the HTTP API shows them: a server folder as the job's output
    route, an ``s3://`` URI as it is."""
    local = _finished_job(tmp_path / "local", str(tmp_path / "out"), status)
    remote = _finished_job(tmp_path / "remote", "s3://shop/results", status)
    with receiver((200, {})) as rec:
        notifier = make_notifier(webhook=rec.url)
        assert notifier.send(local) is True
        (hit,) = rec.wait_for_hits(1)
    sent = json.loads(hit.body)
    assert str(tmp_path) not in hit.body.decode()
    key = "outputLocation" if status == "succeeded" else "failureLocation"
    assert sent["responseParameters"][key] == f"/async/jobs/{local.id}/output"
    suffix = ".out" if status == "succeeded" else "-error.out"
    shown = event_for(remote)["responseParameters"][key]
    assert shown == f"s3://shop/results/{remote.id}{suffix}"


# -- one client's slow webhook holds back nobody else (review, session 40: F4) -------------------


@dataclass
class BlackHole:
    """A TCP server on 127.0.0.1 that accepts connections and never answers (nor closes)."""

    port: int = 0
    accepted: int = 0
    lock: threading.Condition = field(default_factory=threading.Condition)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def wait_for_connections(self, n: int, timeout: float = 20.0) -> int:
        with self.lock:
            if not self.lock.wait_for(lambda: self.accepted >= n, timeout):
                raise TimeoutError(f"the black hole got {self.accepted} of {n} connections")
            return self.accepted


@contextmanager
def black_hole() -> Iterator[BlackHole]:
    hole = BlackHole()
    listener = socket.create_server(("127.0.0.1", 0), backlog=512)
    listener.settimeout(0.1)
    hole.port = listener.getsockname()[1]
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)  # never answered
            with hole.lock:
                hole.accepted += 1
                hole.lock.notify_all()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield hole
    finally:
        stop.set()
        thread.join(10)
        listener.close()
        for conn in held:
            conn.close()


def _finished_jobs(store: JobStore, webhooks: dict[str, str | None]) -> None:
    """Submit and finish one job per ``{id: webhook}``, in that order."""
    for job_id, webhook in webhooks.items():
        store.submit(
            JobSpec(
                "out/{id}.out", "out/{id}-error.out", input_body=b"x", webhook=webhook, id=job_id
            )
        )
        owner = new_owner()
        (job,) = store.claim(owner)
        assert job.id == job_id and store.finish(job_id, owner, job.attempts, "succeeded")


def _heard(rec: Receiver, path: str) -> set[str]:
    """The jobs whose notification reached ``path`` so far."""
    with rec.lock:  # a Condition's lock is re-entrant: callable while waiting on it
        return {json.loads(h.body)["inferenceId"] for h in rec.hits if h.path == path}


def _wait_heard(rec: Receiver, path: str, ids: set[str], timeout: float = 20.0) -> None:
    with rec.lock:
        if not rec.lock.wait_for(lambda: ids <= _heard(rec, path), timeout):
            missing = sorted(ids - _heard(rec, path))
            raise TimeoutError(f"{path} not told of {missing} within {timeout:g} s")


def _notify_states(store: JobStore) -> dict[str, str]:
    with store._lock:
        rows = store._db.execute("SELECT id, notify_state FROM jobs").fetchall()
    return {r["id"]: r["notify_state"] for r in rows}


def test_a_clients_unanswered_webhooks_hold_back_neither_the_operator_nor_other_clients(
    tmp_path: Path,
) -> None:
    """Review, session 40 (F4): notifications shared 4 threads, taken in submission order, and
    a job's own webhook was tried (6 attempts of up to 30 s) before the operator's channels:
    4 jobs whose webhook never answered delayed the operator's notification of an unrelated
    job by 63 s, 12 by 208 s. Now the operator's channels go out at once for every job, the
    black hole's own included; another client's webhook is delivered at once; and the black
    hole gets at most ``webhooks_per_host`` connections at a time. Stopping leaves the black
    hole's notifications pending (at least once: the next process sends them)."""
    from stygig.jobs import JobWorker, WorkerConfig

    store = JobStore(tmp_path / "jobs.db", synchronous="NORMAL")
    with receiver((200, {})) as rec, black_hole() as hole:
        client = rec.url.replace("/hook", "/client")
        slow = {f"slow-{i}": hole.url for i in range(8)}
        _finished_jobs(store, {**slow, "plain": None, "other-client": client})
        # An attempt to the black hole lasts a minute: nothing here waits for one to end.
        notifier = Notifier(
            webhook=rec.url, allow_networks=LOOPBACK, timeout_s=60.0, deadline_s=60.0
        )
        worker = JobWorker(store, lambda: None, WorkerConfig(poll_s=0.05), notifier=notifier)
        worker.start()
        try:
            everyone = {*slow, "plain", "other-client"}
            _wait_heard(rec, "/hook", everyone)  # the operator: every job, at once
            _wait_heard(rec, "/client", {"other-client"})
            hole.wait_for_connections(1)
            assert hole.accepted <= WorkerConfig().webhooks_per_host
            assert _heard(rec, "/client") == {"other-client"}
            done = ("plain", "other-client")
            wait_for(lambda: all(_notify_states(store)[j] == "sent" for j in done), 20)
        finally:
            worker.stop(5.0)
    states = _notify_states(store)
    store.close()
    assert {states[j] for j in slow} == {"pending"}


def test_a_webhook_waiting_to_retry_holds_no_thread(tmp_path: Path) -> None:
    """Review, session 40 (F4): a delivery waiting out its pause (a ``Retry-After``) held a
    delivery thread; with one thread every other notification waited behind it. Now the
    pause holds nothing: with one notification thread, another client's webhook is still
    delivered while the first waits to retry."""
    from stygig.jobs import JobWorker, WorkerConfig

    store = JobStore(tmp_path / "jobs.db", synchronous="NORMAL")
    with receiver((503, {"Retry-After": "60"})) as busy, receiver((200, {})) as good:
        _finished_jobs(store, {"busy": busy.url, "good": good.url})
        notifier = Notifier(allow_networks=LOOPBACK, retries=3, retry_after_cap_s=60.0)
        config = WorkerConfig(poll_s=0.05, notify_threads=1)
        worker = JobWorker(store, lambda: None, config, notifier=notifier)
        worker.start()
        try:
            busy.wait_for_hits(1)
            _wait_heard(good, "/hook", {"good"})
            wait_for(lambda: _notify_states(store)["good"] == "sent", 20)
            assert len(busy.hits) == 1  # still waiting out its 60 s
        finally:
            worker.stop(5.0)
    states = _notify_states(store)
    store.close()
    assert states == {"busy": "pending", "good": "sent"}


def test_clients_webhook_deliveries_are_bounded_per_host_and_in_all(tmp_path: Path) -> None:
    """Review, session 40 (F4): nothing bounded the notifications waiting for slow webhooks.
    Beyond ``webhook_host_backlog`` for one host (or ``webhook_backlog`` in all) a job's own
    webhook is not sent: its notification is recorded failed at once (the operator's channels
    still told), so neither memory nor the pending rows in the store grow without bound."""
    from stygig.jobs import JobWorker, WorkerConfig

    store = JobStore(tmp_path / "jobs.db", synchronous="NORMAL")
    with receiver((200, {})) as rec, black_hole() as hole:
        slow = {f"slow-{i}": hole.url for i in range(5)}
        _finished_jobs(store, slow)
        notifier = Notifier(
            webhook=rec.url, allow_networks=LOOPBACK, timeout_s=60.0, deadline_s=60.0
        )
        config = WorkerConfig(poll_s=0.05, webhooks_per_host=1, webhook_host_backlog=2)
        worker = JobWorker(store, lambda: None, config, notifier=notifier)
        worker.start()
        try:
            _wait_heard(rec, "/hook", set(slow))
            wait_for(lambda: list(_notify_states(store).values()).count("failed") == 3, 20)
            assert hole.wait_for_connections(1) == 1
        finally:
            worker.stop(5.0)
    states = _notify_states(store)
    store.close()
    assert sorted(states.values()) == ["failed"] * 3 + ["pending"] * 2
    assert {states["slow-0"], states["slow-1"]} == {"pending"}  # the first two were taken


def test_a_page_of_slow_deliveries_does_not_hide_the_jobs_behind_it(tmp_path: Path) -> None:
    """Review, session 40 (F4): the worker read the oldest 200 pending notifications each time;
    with 200 of them still being sent (slow webhooks), a later job's was never even read.
    The store is now read a page at a time past those being sent."""
    from stygig.jobs import JobWorker, WorkerConfig

    store = JobStore(tmp_path / "jobs.db", synchronous="NORMAL")
    with receiver((200, {})) as rec, black_hole() as hole:
        slow = {f"slow-{i:03d}": hole.url for i in range(210)}
        _finished_jobs(store, {**slow, "last": rec.url.replace("/hook", "/client")})
        notifier = Notifier(allow_networks=LOOPBACK, timeout_s=60.0, deadline_s=60.0)
        config = WorkerConfig(poll_s=0.05, webhook_host_backlog=300)
        worker = JobWorker(store, lambda: None, config, notifier=notifier)
        worker.start()
        try:
            _wait_heard(rec, "/client", {"last"}, timeout=30)
            webhooks = worker._webhooks
            assert webhooks is not None
            wait_for(lambda: webhooks.pending() == 210, 20)  # the slow ones: all still out
        finally:
            worker.stop(5.0)
    store.close()

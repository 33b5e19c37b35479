"""Tell someone a job ended: an HTTP webhook (retried with backoff) and/or an SNS topic.

The message has the shape of SageMaker's asynchronous-inference notification, so consumers
written for SageMaker read it unchanged::

    {"eventVersion": "1.0", "eventSource": "aws:sagemaker", "eventName": "InferenceResult",
     "inferenceId": "...", "invocationStatus": "Completed" | "Failed", "status": "succeeded",
     "eventTime": "...", "receivedTime": "...",
     "requestParameters": {"inputLocation": "..."},
     "responseParameters": {"outputLocation": "..."},   # or "failureLocation" + "failureReason"
    }

Output and failure locations appear as the HTTP API shows them to clients: an ``s3://`` URI as
it is, a server folder never (the job's output route instead; see
:func:`stygig.jobs.store.shown_location`).

Delivery is at least once: the store marks a notification sent only after it went out, so a
crash in between sends it again after restart. Receivers deduplicate on ``inferenceId``.

A job's own webhook is chosen by a client, so it is treated as hostile (server-side request
forgery): only ``http``/``https``, no credentials in the URL, and every address its host
resolves to must be public unless the operator allowed that network. The check runs when the
job is submitted (:meth:`Notifier.check_url`) and again when the message is sent, and the
request then goes to the very address that was checked, so a DNS answer that changes in
between (DNS rebinding) cannot redirect it. Redirects are never followed. The operator's own
webhook (``--async-webhook``) is trusted for its address but must still be ``http(s)``.

Each attempt has an overall deadline (``deadline_s``), from connecting to the answer's headers:
a receiver that trickles its answer a byte at a time resets a per-read timeout forever, so the
request runs as a task on an event loop (a fresh one in the delivering thread for
:meth:`Notifier.post`, the one of :class:`WebhookDeliveries` for a client's webhook) and is
cancelled at the deadline (a cancel interrupts a read that is waiting, which nothing can do to
a blocking socket read). :meth:`Notifier.close` cancels the attempts in flight the same way.

Attempts stop after ``1 + retries``: a 2xx is delivered; 5xx, 408, 429, network errors and an
attempt past its deadline are retried with capped exponential backoff and full jitter (a
``Retry-After`` is honoured up to a cap); anything else (3xx, other 4xx, an address that is not
allowed) fails at once.

The worker sends the operator's channels (:meth:`Notifier.send_operator`) on threads of their
own, and hands a job's own webhook to :class:`WebhookDeliveries`: every client delivery is a
task on one event loop, so a receiver that never answers holds no thread while it is waited
for or between attempts, and at most a few attempts go to one host at once. So neither the
operator's notifications nor other clients' wait behind one client's unresponsive webhook
(review, session 40).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import ipaddress
import json
import logging
import random
import re
import socket
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from stygig.errors import InvalidOptionsError
from stygig.jobs.store import Job, iso_time

if TYPE_CHECKING:
    import httpx

__all__ = [
    "MAX_WEBHOOK_URL_LENGTH",
    "Notifier",
    "WebhookDeliveries",
    "event_for",
    "resolve_host",
]

log = logging.getLogger("stygig.jobs.notify")

#: Longest webhook URL accepted (longer ones are refused, not truncated).
MAX_WEBHOOK_URL_LENGTH = 2048

_SCHEMES = {"http": 80, "https": 443}
#: Statuses worth another try; every other non-2xx answer is final.
_RETRY_STATUSES = {408, 429}
_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: NAT64's well-known prefix carries an IPv4 address in its last 32 bits.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def event_for(job: Job, *, operator: bool = False) -> dict[str, Any]:
    """The notification message for a finished job (output locations as a client may see
    them). Its input location only for the ``operator``'s own channels (``--async-webhook``,
    the topics): a client's webhook learns no server path or bucket key from it."""
    ok = job.status == "succeeded"
    output, failure = job.shown_locations()
    response: dict[str, Any] = (
        {"outputLocation": output, "contentType": "application/json"}
        if ok
        else {"failureLocation": failure}
    )
    event: dict[str, Any] = {
        "eventVersion": "1.0",
        "eventSource": "aws:sagemaker",
        "eventName": "InferenceResult",
        "inferenceId": job.id,
        "invocationStatus": "Completed" if ok else "Failed",
        "status": job.status,
        "eventTime": iso_time(job.finished_at),
        "receivedTime": iso_time(job.created_at),
        "attempts": job.attempts,
        "requestParameters": {"contentType": job.content_type}
        | ({"inputLocation": job.input_location} if operator else {}),
        "responseParameters": response,
    }
    if not ok:
        event["failureReason"] = (job.error or {}).get("message", "unknown")
        event["errorCode"] = (job.error or {}).get("code")
    return event


def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to for a TCP connection on ``port`` (system resolver)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _is_public(ip: _IPAddress) -> bool:
    """Whether ``ip`` is a globally routable unicast address (nothing internal hides in it)."""
    if isinstance(ip, ipaddress.IPv6Address):
        # Addresses that carry an IPv4 address inside are judged by that address too.
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None and not _is_public(embedded):
            return False
        if ip.is_site_local:
            return False
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified)


class _Outcome(NamedTuple):
    """What one delivery attempt came to."""

    delivered: bool
    retry: bool
    reason: str
    retry_after_s: float | None = None


def _retry_after_s(value: str | None) -> float | None:
    """A ``Retry-After`` header (seconds or an HTTP date) in seconds from now; ``None`` if unusable."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"[0-9]{1,10}", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class _Deliveries:
    """The switch that stops every delivery, and the attempts in flight it cancels."""

    def __init__(self) -> None:
        self.closed = threading.Event()
        self._lock = threading.Lock()
        # Each attempt in flight: a task on its own event loop, in a delivering thread.
        self._running: set[asyncio.Task[Any]] = set()

    @asynccontextmanager
    async def cancellable(self) -> AsyncIterator[None]:
        """Let :meth:`close` cancel the current task while in this block (cancelled at once,
        :class:`asyncio.CancelledError`, when already closed)."""
        task = asyncio.current_task()
        assert task is not None  # run by asyncio.run
        with self._lock:
            if self.closed.is_set():
                raise asyncio.CancelledError
            self._running.add(task)
        try:
            yield
        finally:
            with self._lock:
                self._running.discard(task)

    def close(self) -> None:
        """Set the switch and cancel every attempt in flight."""
        self.closed.set()
        with self._lock:
            for task in self._running:
                # The task's loop runs in a delivering thread; the cancel is handed to it.
                task.get_loop().call_soon_threadsafe(task.cancel)


@dataclass(frozen=True)
class Notifier:
    """Where notifications go. Every field is optional; nothing configured means no message.

    Attributes:
        webhook: a URL that receives a ``POST`` with the JSON message for every job (a job's
            own webhook, given at submission, is told as well). Chosen by the operator, so its
            address is trusted; it must still be ``http(s)``.
        success_topic / error_topic: SNS topic ARNs (boto3; the standard AWS configuration).
        retries: webhook attempts after the first one.
        backoff_s: the first pause between attempts; doubled each time up to ``max_backoff_s``,
            and each pause is drawn uniformly below that bound (full jitter).
        max_backoff_s: the longest pause between attempts.
        retry_after_cap_s: the longest ``Retry-After`` a receiver may ask for.
        timeout_s: per network operation of a webhook request (connect, each read, each
            write).
        deadline_s: the most one webhook attempt may take in all (connecting, sending, the
            answer's status line and headers); at the deadline the request is cancelled and
            the attempt counts as failed (and is retried).
        allow_networks: CIDR networks a job's webhook may point at although they are not public
            (e.g. ``"127.0.0.0/8"`` for a receiver on this host).
        resolve: how a host name becomes addresses (tests substitute their own).
    """

    webhook: str | None = None
    success_topic: str | None = None
    error_topic: str | None = None
    retries: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    retry_after_cap_s: float = 60.0
    timeout_s: float = 10.0
    deadline_s: float = 30.0
    allow_networks: tuple[str, ...] = ()
    resolve: Callable[[str, int], Sequence[str]] = field(default=resolve_host, compare=False)
    _networks: tuple[_IPNetwork, ...] = field(init=False, repr=False, compare=False)
    _deliveries: _Deliveries = field(
        default_factory=_Deliveries, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if self.retries < 0 or min(self.backoff_s, self.max_backoff_s, self.retry_after_cap_s) < 0:
            raise InvalidOptionsError("webhook retries and pauses cannot be negative")
        if self.timeout_s <= 0 or self.deadline_s <= 0:
            raise InvalidOptionsError("the webhook timeout and deadline must be positive")
        networks = []
        for cidr in self.allow_networks:
            try:
                networks.append(ipaddress.ip_network(cidr))
            except ValueError:
                raise InvalidOptionsError(
                    f"allowed webhook network {cidr!r} is not a CIDR network such as 10.0.0.0/8",
                    code="invalid_network",
                ) from None
        object.__setattr__(self, "_networks", tuple(networks))
        if self.webhook:
            self._parse(self.webhook)

    # -- checks ----------------------------------------------------------------------------------

    def check_url(self, url: str) -> None:
        """Refuse a client's webhook URL that is malformed or points at an internal address.

        Raises:
            InvalidOptionsError: ``invalid_webhook`` (not an ``http(s)`` URL with a host and no
                credentials, or longer than :data:`MAX_WEBHOOK_URL_LENGTH`),
                ``webhook_unresolvable`` (the host does not resolve) or ``webhook_not_allowed``
                (an address that is not public and not in ``allow_networks``).
        """
        self._addresses(self._parse(url))

    def _parse(self, url: str) -> httpx.URL:
        import httpx

        # Parsed by the client that sends it, so the check and the request read it alike.
        bad = InvalidOptionsError(
            f"the webhook must be an http:// or https:// URL with a host name, no user:password@, "
            f"and at most {MAX_WEBHOOK_URL_LENGTH} characters",
            code="invalid_webhook",
        )
        if len(url) > MAX_WEBHOOK_URL_LENGTH:
            raise bad
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError, ValueError):
            raise bad from None
        port = parsed.port
        if (
            parsed.scheme not in _SCHEMES
            or parsed.userinfo
            or not parsed.raw_host
            or (port is not None and not 0 < port < 65536)
        ):
            raise bad
        return parsed

    def _addresses(self, url: httpx.URL) -> list[str]:
        """The addresses ``url``'s host resolves to, all of them allowed; refused otherwise."""
        host = url.raw_host.decode("ascii")
        try:
            addresses = [ipaddress.ip_address(a) for a in self.resolve(host, _port(url))]
        except (OSError, UnicodeError, ValueError):
            addresses = []
        if not addresses:
            raise InvalidOptionsError(
                "the webhook's host name does not resolve", code="webhook_unresolvable"
            )
        if not all(self._allowed(a) for a in addresses):
            raise InvalidOptionsError(
                "the webhook points at a loopback, private, link-local or otherwise internal "
                "address; only public addresses are allowed",
                code="webhook_not_allowed",
            )
        return [str(a) for a in addresses]

    def _allowed(self, ip: _IPAddress) -> bool:
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        return _is_public(ip) or any(ip in net for net in self._networks)

    # -- delivery --------------------------------------------------------------------------------

    def wants(self, job: Job) -> bool:
        """Whether anything should be sent for ``job``."""
        return bool(job.webhook) or self.wants_operator(job)

    def wants_operator(self, job: Job) -> bool:
        """Whether the operator's channels (``webhook``, a topic) want ``job``'s notification."""
        topic = self.success_topic if job.status == "succeeded" else self.error_topic
        return bool(self.webhook or topic)

    def send(self, job: Job) -> bool:
        """Deliver ``job``'s notification everywhere configured, in this thread: the operator's
        channels first (:meth:`send_operator`), then the job's own webhook; whether all of it
        went out. Never raises: a failure anywhere is ``False``.

        The worker does not call this: it sends the two parts apart, so that a client's
        webhook never holds up the operator's channels (see the module's docstring).
        """
        ok = self.send_operator(job)
        if job.webhook:  # the client's, and the operator's too: it sees every job
            try:
                ok = self.post(job.webhook, event_for(job)) and ok
            except Exception:
                log.warning("notification for job %s failed", job.id, exc_info=True)
                return False
        return ok

    def send_operator(self, job: Job) -> bool:
        """Deliver ``job``'s notification to the operator's channels (``webhook``, the topic for
        its status), in this thread; whether all of it went out (``True`` when there are none).
        Never raises: a failure anywhere is ``False`` (the caller records it once and does not
        try again)."""
        try:
            ok = True
            own = event_for(job, operator=True)
            if self.webhook:
                ok = self.post(self.webhook, own, trusted=True)
            topic = self.success_topic if job.status == "succeeded" else self.error_topic
            if topic:
                ok = self.publish(topic, own) and ok
            return ok
        except Exception:
            log.warning("notification for job %s failed", job.id, exc_info=True)
            return False

    def post(self, url: str, event: dict[str, Any], *, trusted: bool = False) -> bool:
        """POST ``event`` to ``url`` with retries; whether a 2xx came back. Never raises.

        Unless ``trusted`` (the operator's own webhook), ``url`` is checked like
        :meth:`check_url` before every attempt and the request goes to the checked address.
        Blocks the calling thread, which must not be running an event loop (each attempt runs
        on one of its own).
        """
        attempts = self.retries + 1
        try:
            body = json.dumps(event).encode()
            for attempt in range(1, attempts + 1):
                if self._deliveries.closed.is_set():
                    return False
                outcome = self._attempt(url, body, event, attempt, trusted)
                if outcome.delivered:
                    return True
                if not _again(outcome, attempt, attempts, event):
                    return False
                # An interruptible pause, so close() does not wait out a backoff.
                if self._deliveries.closed.wait(self._pause(attempt, outcome.retry_after_s)):
                    return False
        except Exception:
            log.warning("webhook for job %s failed", event.get("inferenceId"), exc_info=True)
        return False

    def _pause(self, attempt: int, retry_after_s: float | None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        bound = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
        # Full jitter: receivers coming back up are not hit by every sender at the same moment.
        pause = random.uniform(0.0, bound)
        if retry_after_s is not None:
            pause = max(pause, min(retry_after_s, self.retry_after_cap_s))
        return pause

    def _target(self, url: str, trusted: bool) -> tuple[httpx.URL, Sequence[str | None]] | _Outcome:
        """``url`` parsed, and the addresses to send to (``[None]``: the URL's own host, for
        the ``trusted`` operator's webhook; else every address it resolves to, checked); an
        outcome instead when it is refused. Blocks on the system resolver."""
        try:
            target = self._parse(url)
            pinned: Sequence[str | None] = [None] if trusted else self._addresses(target)
        except InvalidOptionsError as e:
            # A name that stopped resolving may come back; a refused address will not.
            return _Outcome(False, e.code == "webhook_unresolvable", e.code)
        return target, pinned

    @staticmethod
    def _headers(event: dict[str, Any], attempt: int) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            "X-Stygig-Inference-Id": str(event.get("inferenceId")),
            "X-Stygig-Attempt": str(attempt),
        }

    def _late(self) -> _Outcome:
        return _Outcome(False, True, f"no answer within the {self.deadline_s:g}-second deadline")

    def _attempt(
        self, url: str, body: bytes, event: dict[str, Any], attempt: int, trusted: bool
    ) -> _Outcome:
        found = self._target(url, trusted)
        if isinstance(found, _Outcome):
            return found
        try:
            return asyncio.run(self._deliver(*found, body, self._headers(event, attempt)))
        except TimeoutError:
            return self._late()
        except asyncio.CancelledError:
            return _Outcome(False, False, "the notifier was closed")

    async def _attempt_async(
        self, url: str, body: bytes, event: dict[str, Any], attempt: int, resolver: Executor
    ) -> _Outcome:
        """One attempt to a client's webhook on the running event loop: the host name resolved
        (and checked) on ``resolver``'s threads within ``deadline_s``, then :meth:`_deliver`.
        :class:`asyncio.CancelledError` when the notifier is closed."""
        lookup = asyncio.get_running_loop().run_in_executor(resolver, self._target, url, False)
        try:
            found = await asyncio.wait_for(lookup, self.deadline_s)
        except TimeoutError:
            return _Outcome(False, True, f"the host did not resolve within {self.deadline_s:g} s")
        if isinstance(found, _Outcome):
            return found
        try:
            return await self._deliver(*found, body, self._headers(event, attempt))
        except TimeoutError:
            return self._late()

    async def _deliver(
        self,
        target: httpx.URL,
        pinned: Sequence[str | None],
        body: bytes,
        headers: dict[str, str],
    ) -> _Outcome:
        """One attempt: POST to each of ``pinned`` (``None``: the URL's own host) until one
        answers, all of it within ``deadline_s`` (:class:`TimeoutError` past it)."""
        import httpx

        reason = "no address"
        # A client for this attempt only: no connection verified for one host name is ever
        # kept for a request to another, and nothing outlives the attempt's event loop.
        async with (
            self._deliveries.cancellable(),
            asyncio.timeout(self.deadline_s),
            httpx.AsyncClient(
                follow_redirects=False,  # a 3xx is a failed attempt, never a GET elsewhere
                timeout=self.timeout_s,
            ) as client,
        ):
            for address in pinned:
                request_url, extensions, sent = target, {}, dict(headers)
                if address is not None:
                    # Connect to the checked address; the server still sees (and TLS verifies)
                    # the name from the URL.
                    request_url = target.copy_with(host=address)
                    sent["Host"] = target.netloc.decode("ascii")
                    if target.scheme == "https" and not _is_ip(target.host):
                        extensions = {"sni_hostname": target.host}
                try:
                    # Streamed and never read: a receiver cannot make us buffer a huge answer.
                    async with client.stream(
                        "POST", request_url, content=body, headers=sent, extensions=extensions
                    ) as response:
                        status = response.status_code
                        retry_after = _retry_after_s(response.headers.get("retry-after"))
                except (httpx.ConnectError, httpx.ConnectTimeout) as e:
                    reason = f"{type(e).__name__}: {e}"
                    continue  # the host's next address may answer
                except Exception as e:
                    return _Outcome(False, True, f"{type(e).__name__}: {e}")
                if 200 <= status < 300:
                    return _Outcome(True, False, f"HTTP {status}")
                retry = status >= 500 or status in _RETRY_STATUSES
                return _Outcome(False, retry, f"HTTP {status}", retry_after if retry else None)
        return _Outcome(False, True, reason)

    def close(self) -> None:
        """Stop delivering: pending pauses end, attempts in flight are cancelled, later ones
        fail. A closed notifier sends nothing again (``send`` returns ``False``)."""
        self._deliveries.close()

    def publish(self, topic_arn: str, event: dict[str, Any]) -> bool:
        """Publish ``event`` to an SNS topic (boto3 retries on its own)."""
        try:
            import boto3

            boto3.client("sns").publish(
                TopicArn=topic_arn,
                Message=json.dumps(event),
                Subject=f"stygig job {event['status']}",
            )
        except Exception:
            log.warning("SNS publish to %s failed", topic_arn, exc_info=True)
            return False
        return True


@dataclass
class _Host:
    """One webhook host's deliveries: its attempt slots, and how many wait or run."""

    slots: asyncio.Semaphore
    deliveries: int = 0


class WebhookDeliveries:
    """Clients' own webhooks, delivered on one event loop (a thread of its own), bounded.

    A job's webhook is the client's choice; one that never answers costs an attempt's whole
    deadline (30 s), six times over. Sent on the few threads every notification shared, four
    such webhooks held back every other job's notification, the operator's included, by about
    a minute, and more of them without limit (review, session 40). Here:

    * each delivery is a task: waiting for an answer or between attempts it holds no thread
      (the host-name lookup, which blocks, runs on ``resolvers`` threads within the host's
      slot, bounded by the attempt's deadline);
    * at most ``concurrency`` attempts are in flight at once, and at most ``per_host`` to one
      webhook host (scheme, host name, port): a host that never answers holds its own slots,
      every other host's deliveries go on;
    * at most ``backlog`` deliveries wait or run at once, ``host_backlog`` of them for one
      host: beyond, :meth:`submit` refuses (the caller records that notification failed), so
      neither memory nor the notifications left pending in the job store grow without bound.

    Retries, pauses, deadlines, the address check before every attempt and the pinned address
    are :class:`Notifier`'s, as for :meth:`Notifier.post`. :meth:`close` (or the notifier's
    ``close``) ends every delivery; their callbacks get ``False``.
    """

    def __init__(
        self,
        notifier: Notifier,
        *,
        concurrency: int = 32,
        per_host: int = 2,
        backlog: int = 1000,
        host_backlog: int = 100,
        resolvers: int = 8,
    ) -> None:
        if min(concurrency, per_host, backlog, host_backlog, resolvers) < 1:
            raise InvalidOptionsError("webhook delivery limits must be at least 1")
        self.notifier = notifier
        self.concurrency = concurrency
        self.per_host = per_host
        self.backlog = backlog
        self.host_backlog = host_backlog
        self._lock = threading.Lock()
        self._hosts: dict[str, _Host] = {}
        self._total = 0
        self._closed = False
        self._slots = asyncio.Semaphore(concurrency)
        self._resolver = ThreadPoolExecutor(resolvers, thread_name_prefix="stygig-webhook-dns")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="stygig-webhooks", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
            # Closed: what is left is cancelled and unwinds (connections closed, callbacks
            # told), then the loop goes.
            left = asyncio.all_tasks(self._loop)
            for task in left:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        finally:
            self._loop.close()

    def pending(self) -> int:
        """Deliveries waiting or running now."""
        with self._lock:
            return self._total

    def _host_key(self, url: str) -> str:
        try:
            target = self.notifier._parse(url)
        except InvalidOptionsError:
            return ""  # refused at its first attempt anyway
        host = target.raw_host.decode("ascii", "replace").lower()
        return f"{target.scheme}://{host}:{_port(target)}"

    def submit(self, url: str, event: dict[str, Any], done: Callable[[bool], None]) -> bool:
        """Deliver ``event`` to a client's webhook ``url``; ``done(delivered)`` is called once
        when it is over (on the delivery thread: it must not block). ``False`` (and ``done``
        never called) when refused: the backlog, or this host's share of it, is full, or the
        deliveries are closed."""
        key = self._host_key(url)
        with self._lock:
            host = self._hosts.get(key)
            if (
                self._closed
                or self._total >= self.backlog
                or (host is not None and host.deliveries >= self.host_backlog)
            ):
                return False
            if host is None:
                host = self._hosts[key] = _Host(asyncio.Semaphore(self.per_host))
            host.deliveries += 1
            self._total += 1
            future = asyncio.run_coroutine_threadsafe(
                self._deliver(url, event, key, host), self._loop
            )

        def over(future: concurrent.futures.Future[bool]) -> None:
            delivered = not future.cancelled() and future.exception() is None and future.result()
            try:
                done(bool(delivered))
            except Exception:
                log.exception("a webhook delivery's callback failed")

        future.add_done_callback(over)
        return True

    async def _deliver(self, url: str, event: dict[str, Any], key: str, host: _Host) -> bool:
        try:
            return await self._attempts(url, event, host)
        except Exception:
            log.warning("webhook for job %s failed", event.get("inferenceId"), exc_info=True)
            return False
        finally:
            with self._lock:
                host.deliveries -= 1
                self._total -= 1
                if host.deliveries == 0 and self._hosts.get(key) is host:
                    del self._hosts[key]

    async def _attempts(self, url: str, event: dict[str, Any], host: _Host) -> bool:
        notifier = self.notifier
        attempts = notifier.retries + 1
        body = json.dumps(event).encode()
        for attempt in range(1, attempts + 1):
            if notifier._deliveries.closed.is_set():
                return False
            # The host's slot first: a host that never answers waits for its own slots without
            # holding one of the shared ones.
            async with host.slots, self._slots:
                outcome = await notifier._attempt_async(url, body, event, attempt, self._resolver)
            if outcome.delivered:
                return True
            if not _again(outcome, attempt, attempts, event):
                return False
            await asyncio.sleep(notifier._pause(attempt, outcome.retry_after_s))
        return False

    def close(self, timeout: float = 10.0) -> None:
        """End every delivery (``done(False)`` for each) and the loop; wait up to ``timeout``."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        self._resolver.shutdown(wait=False, cancel_futures=True)


def _port(url: httpx.URL) -> int:
    return url.port or _SCHEMES[url.scheme]


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _again(outcome: _Outcome, attempt: int, attempts: int, event: dict[str, Any]) -> bool:
    """Log a failed attempt; whether another should follow."""
    log.warning(
        "webhook attempt %d/%d for job %s failed: %s",
        attempt,
        attempts,
        event.get("inferenceId"),
        outcome.reason,
    )
    return outcome.retry and attempt < attempts

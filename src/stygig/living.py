"""A living catalogue: changes accepted while serving, logged durably, followed by replicas.

:class:`LiveCatalog` drives a :class:`~stygig.engine.Recommender`'s catalogue:

* :meth:`LiveCatalog.submit` takes checked :class:`~stygig.catalog.changes.ChangeRequest`\\ s;
  an added item's photo goes through the build's own per-item step
  (:func:`stygig.build.prepare_item_photo`: decode, validate, colour, thumbnail) and the
  artifact's encoder and whitening (:meth:`~stygig.engine.Recommender.embed`) — outside any
  lock. Then, one writer at a time: catch up with the log, make the next snapshot (every change
  checked against the catalogue as the earlier ones left it: a bad one refuses the whole
  request and changes nothing), append the record durably, publish the snapshot, return it.
  Acknowledged means logged and visible to the next request.
* :meth:`LiveCatalog.catch_up` applies records other writers appended (a replica following
  the log, a restarted server replaying it); :meth:`LiveCatalog.follow` does so every
  ``interval`` seconds on a thread of its own.

Readers (requests) never take the lock: they read the snapshot the last publish left, and
they come first for the CPU: a change's work (photos, encoding, applying and logging) runs on
threads of its own at a lowered priority (:data:`CHANGE_NICE`), with an encoder session of its
own (:func:`_single_thread_copy`); the request worker that took the change only waits.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from stygig.build import prepare_item_photo
from stygig.catalog import Item
from stygig.catalog.changelog import ChangeLog, RecordUnconfirmed, SequenceTaken
from stygig.catalog.changes import (
    CatalogChange,
    ChangeRequest,
    validate_row,
)
from stygig.engine import Recommender
from stygig.errors import ImageTooLargeError, InvalidOptionsError, OverloadedError, StygigError
from stygig.features import PreparedImage
from stygig.images import photo_work
from stygig.snapshot import CatalogSnapshot, apply_changes, lineage_root, replay_batches

__all__ = ["LiveCatalog", "replay"]

log = logging.getLogger("stygig.living")

#: How many photos are encoded per encoder call while preparing a bulk request. Per photo,
#: batches of 1-32 cost the same CPU with EfficientNet-Lite0 on 2 cores; a small batch lets
#: encoding start while the next photos are still being decoded.
ENCODE_BATCH = 16
#: Photos of a bulk change decoded ahead of the encoder: bounds the tensors one request holds.
DECODE_AHEAD = 2 * ENCODE_BATCH
#: The most decoding one change request may cost when the caller bounds it (a server does:
#: the work a client causes is bounded by its input; an operator's ``stygig catalog`` is not),
#: in pixels of whole PNG or WebP decoding (:func:`stygig.images.photo_work`; a baseline JPEG
#: costs a 25th of its pixels): 1,000 baseline JPEGs of 6 MP, or 64 lossless WebPs of 4 MP
#: (~2 s of CPU). Without it 999 WebPs of 4 MP, 212 bytes each, made one 360 KB request cost
#: 32 s of CPU (review, session 49).
CHANGE_DECODE_BUDGET = 256_000_000
#: How much lower (``nice``, Linux only: nice values are per thread there) the threads that
#: prepare and encode changes' photos run than the process, so requests take the CPU first and
#: changes use what is left. ``STYGIG_CHANGE_NICE=0`` turns it off.
CHANGE_NICE = 10


def _env_nice() -> int:
    value = os.environ.get("STYGIG_CHANGE_NICE", "").strip()
    if not value:
        return CHANGE_NICE
    try:
        return max(0, min(19, int(value)))
    except ValueError:
        log.warning("STYGIG_CHANGE_NICE is not a whole number; using %d", CHANGE_NICE)
        return CHANGE_NICE


CHANGE_NICE = _env_nice()


def _lower_priority() -> None:
    """Thread initializer: lower this thread's CPU priority by :data:`CHANGE_NICE`. Only on
    Linux, where ``setpriority(PRIO_PROCESS, tid)`` addresses one thread (elsewhere it would
    address a process)."""
    if CHANGE_NICE <= 0 or sys.platform != "linux":
        return
    tid = threading.get_native_id()
    with contextlib.suppress(OSError):
        os.setpriority(
            os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + CHANGE_NICE)
        )


@functools.cache
def _photo_pool() -> ThreadPoolExecutor:
    """Threads that prepare added items' photos (one pool per process, made on first use)."""
    workers = max(1, min(4, os.cpu_count() or 1))
    return ThreadPoolExecutor(
        workers, thread_name_prefix="stygig-change-photo", initializer=_lower_priority
    )


#: Change requests a server works on at once (parsing the body, waiting for their photos and
#: their turn to write); the server answers more with 503.
CHANGE_REQUESTS = 4


@functools.cache
def request_pool() -> ThreadPoolExecutor:
    """Threads that run a server's change requests (at the lowered priority; they mostly
    wait for the threads below), so that a bulk of photos never holds a request worker."""
    return ThreadPoolExecutor(
        CHANGE_REQUESTS, thread_name_prefix="stygig-change-request", initializer=_lower_priority
    )


@functools.cache
def _writer_pool() -> ThreadPoolExecutor:
    """The thread that applies and logs changes (one per process), at the lowered priority."""
    return ThreadPoolExecutor(
        1, thread_name_prefix="stygig-change-write", initializer=_lower_priority
    )


@functools.cache
def _encode_pool() -> ThreadPoolExecutor:
    """The thread that encodes added items' photos (one per process), at the same lowered
    priority: with its own one-thread encoder session, all of a change's CPU work runs on
    low-priority threads, never on the encoder threads requests use."""
    return ThreadPoolExecutor(
        1, thread_name_prefix="stygig-change-encode", initializer=_lower_priority
    )


def _single_thread_copy(encoder: Any) -> Any:
    """A one-thread ONNX Runtime session of ``encoder``'s file, when it is an ONNX encoder on
    the CPU (else ``encoder`` itself)."""
    from stygig.encoders.onnx import OnnxEncoder

    if not isinstance(encoder, OnnxEncoder) or encoder.device != "cpu":
        return encoder
    try:
        return OnnxEncoder(encoder.path, encoder.describe(), threads=1)
    except StygigError:  # the file went away (a replaced artifact): share the request encoder
        log.warning("no encoder session of its own for catalogue changes; sharing the serving one")
        return encoder


class _DecodeBudget:
    """The decoding one change request's photos may cost together (``None``: unbounded), spent
    photo by photo from their headers, from any thread."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.spent = 0
        self._lock = threading.Lock()

    def spend(self, work: int) -> None:
        with self._lock:
            self.spent += work
            over = self.limit is not None and self.spent > self.limit
        if over:
            assert self.limit is not None
            raise ImageTooLargeError(
                f"this photo takes the request's photos over {self.limit / 1e6:,.0f} M pixels "
                "of full-size decoding, the most a request may; send them in several requests "
                "(a baseline JPEG costs least)",
                code="images_too_costly",
            )


@contextlib.contextmanager
def _naming(n: int) -> Any:
    """A 4xx raised inside names change ``n`` (0-based) as the client counts: ``change 3: ...``."""
    try:
        yield
    except StygigError as e:
        e.message = f"change {n + 1}: {e.message}"
        e.args = (e.message,)
        raise


#: How long a change request goes on losing its record number to other writers (each loss:
#: catch up, apply it again) before it is refused, nothing applied (503 ``changes_busy``). A
#: request of 1,000 changes takes about 50 ms to apply, so beside a writer taking ~400 small
#: records a second it loses nearly every try (review, session 52: 12-30 s for one HTTP
#: request, with no bound; the CLI's own timeout then said "may have been applied").
WRITE_RETRY_S = 30.0
#: How many catch-ups :meth:`LiveCatalog.check_no_gap` makes while other writers keep appending
#: (each reads what they wrote; past it the log is plainly alive: its next record was there
#: each time).
_GAP_CHECKS = 100


class LiveCatalog:
    """Changes to ``recommender``'s catalogue through the change log ``changelog``.

    Args:
        recommender: whose catalogue changes (its encoder embeds new photos).
        changelog: the durable log (``None``: changes are refused; nothing to follow).
        load: reads a photo location an added item names (the server passes its allowed
            locations' reader; ``None``: locations are refused, only photo bytes accepted).
    """

    def __init__(
        self,
        recommender: Recommender,
        changelog: ChangeLog | None,
        *,
        load: Callable[[str], bytes] | None = None,
    ) -> None:
        self.recommender = recommender
        self.changelog = changelog
        self.load = load
        self._lock = threading.Lock()  # one writer (submit or catch-up) at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.follow_errors = 0
        self.successor: LiveCatalog | None = None  # set when a hot reload replaced this one
        self._encoder: Any = None  # see _change_encoder
        self._encoder_lock = threading.Lock()
        if changelog is not None:  # made now, off the caller's thread: the first add won't wait
            _encode_pool().submit(self._change_encoder)

    @property
    def snapshot(self) -> CatalogSnapshot:
        return self.recommender.snapshot

    # -- writing -----------------------------------------------------------------------------

    def prepare(
        self, requests: Sequence[ChangeRequest], *, decode_budget: int | None = None
    ) -> list[CatalogChange]:
        """Validate rows and embed the photos of ``requests`` (no lock held; nothing changes).
        ``decode_budget``: the most decoding the photos may cost together (see
        :data:`CHANGE_DECODE_BUDGET`; None: unbounded), checked from their headers before
        any is decoded.

        Raises :mod:`stygig.errors` 4xx types naming the change (``change 3: ...``).
        """
        rec = self.recommender
        taxonomy = rec.taxonomy
        out: list[CatalogChange | None] = []
        pending: list[tuple[int, Item, ChangeRequest]] = []
        for n, req in enumerate(requests):  # rows first: a bad row costs no decoding
            if req.op != "add":
                out.append(CatalogChange(req.op, req.id, fields=dict(req.fields)))
                continue
            item = validate_row(req.row, taxonomy, f"change {n + 1}")
            # The photo's location as checked (never a path the client slipped into the row
            # beside uploaded bytes): the item's ``image`` is only ever what was read.
            image = (req.location or "") if req.photo is None else ""
            pending.append((n, dataclasses.replace(item, image=image), req))
            out.append(None)
        if not pending:
            return [c for c in out if c is not None]
        # Every uploaded photo's header before any photo is decoded: a bad one (not an image,
        # over a limit) costs no decoding of the others, and the request's decoding is
        # bounded (review, session 49: a non-image after 999 good photos was found after 32 s
        # of decoding, and the request could be sent again). A photo named by its location is
        # read once, where it is decoded, and counted there before it is.
        budget = _DecodeBudget(decode_budget)
        for n, _, req in pending:
            if req.photo is not None:
                with _naming(n):
                    budget.spend(photo_work(req.photo))
        # Photos decode in parallel, as a build's do (PIL and NumPy release the GIL), and are
        # encoded in small batches as they come, overlapping the next photos' decoding. All
        # on the low-priority change threads: this thread (a request worker) only waits.
        spec = rec.encoder.preprocess
        # Decoding runs at most DECODE_AHEAD photos ahead of encoding, and at most two encoder
        # batches are in flight: a body of many tiny photos holds a bounded number of tensors.
        jobs: dict[int, Future[PreparedImage]] = {}
        submitted = 0
        in_flight: collections.deque[
            tuple[list[tuple[int, Item, PreparedImage]], Future[np.ndarray]]
        ] = collections.deque()

        def finish_oldest() -> None:
            group, vectors = in_flight.popleft()
            for (n, item, prepared), vector in zip(group, vectors.result(), strict=True):
                out[n] = CatalogChange(
                    "add",
                    item.id,
                    item=item,
                    vector=np.asarray(vector, np.float32),
                    color=prepared.color,
                    thumbnail=prepared.thumbnail,
                )

        try:
            for start in range(0, len(pending), ENCODE_BATCH):
                while submitted < min(start + ENCODE_BATCH + DECODE_AHEAD, len(pending)):
                    req = pending[submitted][2]
                    jobs[submitted] = _photo_pool().submit(self._prepared_photo, req, spec, budget)
                    submitted += 1
                group: list[tuple[int, Item, PreparedImage]] = []
                for i in range(start, min(start + ENCODE_BATCH, len(pending))):
                    n, item, _ = pending[i]
                    with _naming(n):
                        group.append((n, item, jobs.pop(i).result()))
                tensors = [p.tensor for _, _, p in group]
                in_flight.append((group, _encode_pool().submit(self._embed, tensors)))
                if len(in_flight) > 1:
                    finish_oldest()
            while in_flight:
                finish_oldest()
        finally:
            for job in jobs.values():
                job.cancel()
            for _, vectors in in_flight:
                vectors.cancel()
        return [c for c in out if c is not None]

    def _embed(self, tensors: list[np.ndarray]) -> np.ndarray:
        """Encode changes' photos (on the encode thread) with the change encoder, whitened
        like the catalogue."""
        rec = self.recommender
        return rec.project(self._change_encoder().encode(np.stack(tensors)))

    def _change_encoder(self) -> Any:
        """The encoder for changes' photos: for an ONNX model on the CPU, a session of its own
        with one intra-op thread, which runs on the (low-priority) calling thread, so change
        work never occupies the encoder threads requests use; otherwise the recommender's.
        The same graph and file as the recommender's: the same embeddings."""
        if self._encoder is None:
            with self._encoder_lock:
                if self._encoder is None:
                    self._encoder = _single_thread_copy(self.recommender.encoder)
        return self._encoder

    def _prepared_photo(
        self, req: ChangeRequest, spec: Any, budget: _DecodeBudget | None = None
    ) -> PreparedImage:
        data = self._photo(req)
        if budget is not None and req.photo is None:  # a location's: counted as it is read
            budget.spend(photo_work(data))
        return prepare_item_photo(data, spec)

    def _photo(self, req: ChangeRequest) -> bytes:
        if req.photo is not None:
            return req.photo
        if self.load is None or req.location is None:
            raise InvalidOptionsError(
                "photo locations are not accepted here; send the photo's bytes (image_b64)",
                code="location_not_allowed",
            )
        return self.load(req.location)

    def submit(
        self, requests: Sequence[ChangeRequest], *, decode_budget: int | None = None
    ) -> CatalogSnapshot:
        """Apply ``requests`` as one log record; the snapshot that holds them (acknowledged:
        logged durably and visible to the next request). All or nothing. ``decode_budget``:
        see :meth:`prepare`."""
        if self.changelog is None:
            raise InvalidOptionsError(
                "this catalogue takes no changes: no change log is configured",
                code="changes_disabled",
            )
        changes = self.prepare(requests, decode_budget=decode_budget)
        # Applied and logged on the low-priority writer thread (one: writers are serialised
        # anyway); the caller, a request worker, waits without using the CPU.
        done = _writer_pool().submit(self._submit_prepared, changes).result()
        if done is None:
            # A hot reload replaced this catalogue while the photos were prepared: its version
            # may embed them otherwise (another encoder's weights, another whitening), so they
            # are prepared again there, never logged with this version's vectors.
            assert self.successor is not None
            return self.successor.submit(requests, decode_budget=decode_budget)
        return done

    def _submit_prepared(self, changes: list[CatalogChange]) -> CatalogSnapshot | None:
        """Apply and log prepared ``changes``; ``None`` when a hot reload has replaced this
        catalogue (nothing applied: :meth:`submit` prepares them again on the new one)."""
        assert self.changelog is not None
        records = [c.to_record() for c in changes]
        rec = self.recommender
        with self._lock:
            if self.successor is not None:
                return None
            deadline = time.monotonic() + WRITE_RETRY_S
            while True:
                if time.monotonic() > deadline:
                    raise OverloadedError(
                        f"other writers took every record number for {WRITE_RETRY_S:.0f} s while "
                        "this request was applied again on each: nothing of it was logged or "
                        "applied; send it again (smaller requests get in sooner)",
                        code="changes_busy",
                    )
                self._catch_up_locked()
                current = rec.snapshot
                sequence = current.sequence + 1
                new = apply_changes(current, changes, sequence, compat_mode=rec.config.compat_mode)
                try:
                    self.changelog.append(
                        sequence,
                        records,
                        base=current.version,
                        root=lineage_root(current.artifact.manifest, current.version),
                    )
                except SequenceTaken:
                    continue  # another writer took it: apply theirs first, then try the next
                except RecordUnconfirmed:
                    rec.publish(new)  # in the log, so applied (as every replica will): say so
                    raise
                rec.publish(new)
                return new

    # -- following ---------------------------------------------------------------------------

    def catch_up(self) -> int:
        """Apply the records appended since the current snapshot; how many."""
        if self.changelog is None:
            return 0
        with self._lock:
            return self._catch_up_locked()

    def _catch_up_locked(self) -> int:
        assert self.changelog is not None
        return replay(self.recommender, self.changelog)

    def check_no_gap(self) -> None:
        """Catch up, then refuse (:class:`~stygig.catalog.changelog.ChangeLogGapError`) a log
        holding records past one that is missing: the next change would take the missing
        number and be ordered before records already acknowledged, which replicas past it
        never read (review, session 51: a restarted server wrote record 3 under 4 and 5,
        which then undid it). Other writers may append all the while: a record written since
        the catch-up is read, then the log looked at again (review, session 52: a replica
        starting beside a writer took such a record for a gap in 4 of 15 restarts, and a
        reload answered 500)."""
        if self.changelog is None:
            return
        with self._lock:
            for _ in range(_GAP_CHECKS):
                self._catch_up_locked()
                if not self.changelog.more_after(self.snapshot.sequence):
                    return

    def follow(self, interval_s: float) -> None:
        """Catch up every ``interval_s`` seconds on a daemon thread until :meth:`stop`."""
        if self.changelog is None or self._thread is not None:
            return
        if not 0.01 <= interval_s <= 3600:
            raise InvalidOptionsError("the follow interval must be 0.01 to 3600 seconds")

        def loop() -> None:
            _lower_priority()
            while not self._stop.wait(interval_s):
                try:
                    self.catch_up()
                except Exception:  # a storage hiccup: log it, try again next interval
                    self.follow_errors += 1
                    log.exception("following the change log failed")

        self._thread = threading.Thread(target=loop, name="stygig-follow", daemon=True)
        self._thread.start()

    def retire(self, successor: LiveCatalog | None) -> None:
        """Hand over to ``successor`` (a hot reload): stop following; a change being written
        now finishes here first, later ones go to the successor."""
        self.stop()
        with self._lock:
            self.successor = successor

    def stop(self) -> None:
        """Stop following (waits for the current catch-up to finish)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None


def replay(recommender: Recommender, changelog: ChangeLog, until: int | None = None) -> int:
    """Apply ``changelog``'s records after ``recommender``'s current snapshot, up to record
    ``until`` (``None``: every one written); how many. Reads the log, never writes it: a
    restarted server, a replica following, a batch run or ``stygig recommend`` answering with
    the catalogue's changes.

    A record that no longer applies advances the sequence and changes nothing
    (:func:`~stygig.snapshot.apply_record`), the same on every replica and in compaction.
    """
    applied = 0
    batches = replay_batches(
        recommender.snapshot, changelog, compat_mode=recommender.config.compat_mode, until=until
    )
    for snap, records, skipped in batches:
        for sequence, reason in skipped:
            log.error(
                "change log record skipped",
                extra={"fields": {"sequence": sequence, "reason": reason}},
            )
        recommender.publish(snap)
        applied += records
    return applied

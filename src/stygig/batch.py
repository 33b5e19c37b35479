"""Batch runs: recommendations for many inputs at once, resumable, in bounded memory.

::

    stygig batch --artifact A --input SRC --output DST

``SRC`` is one of

* an artifact folder (``manifest.json`` inside): every catalogue item, queried by its id (no
  photo is decoded or embedded again; the nightly refresh);
* a catalogue file (``.csv``, or ``.jsonl`` whose rows have a ``category``): each row by its id
  when the artifact holds it, else by its photo;
* a folder of photos (or an ``s3://`` prefix of them): each photo, keyed by its relative name;
* a manifest (``.jsonl``): ``{"id", "image" | "images" | "item_ids", "options"}`` per line.

``DST`` is a ``.jsonl`` file, a ``.parquet`` file, or an ``s3://`` prefix (JSONL part files).
Each input gets one record: ``{"index", "id", "source", "status": "ok", "recommendation"}``
with the API's response schema, or ``{"status": "error", "error": {"code", "message"}}`` for
that input alone.

Pipeline, as in the build: a thread pool decodes photos a bounded number of groups ahead of the
encoder; the encoder embeds a group in one call; the pool scores and serialises the group's
records; the main thread writes them in input order. Memory holds a few groups, whatever the
input size.

Resume: the output itself says what is done. A JSONL file is scanned (a torn last line is cut
off) and finished indexes are skipped; parts of a prefix cover fixed index ranges and are written
whole (atomic puts), so an existing part is done and a missing one is redone. A Parquet output's
staged parts are also closed once open :data:`PART_SECONDS` (``$STYGIG_BATCH_PART_SECONDS``), so
a killed run loses at most that long's work, not up to ``part_size - 1`` records. A sidecar
``<DST>.batch.json`` (``_batch.json`` inside a prefix) records the run's arguments, so a rerun
with other arguments is refused instead of mixing two runs. A run into a local output holds its
:class:`RunLock`, so a second run of it at once is refused instead of writing every record twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import numpy as np
from tqdm import tqdm

from stygig import storage
from stygig.catalog import Item, Reject, read_catalog
from stygig.catalog.schema import SURROGATE
from stygig.engine import Options, Query, Recommender
from stygig.errors import BatchError, ConfigError, InputError, InvalidOptionsError, StygigError
from stygig.features import fetch_photo
from stygig.pipeline import PreparedQuery
from stygig.recommendation import check_json_values
from stygig.unique_keys import key_name, unique_object

__all__ = [
    "PART_SECONDS",
    "PART_SECONDS_ENV",
    "BatchInput",
    "BatchSummary",
    "RunInProgressError",
    "RunLock",
    "check_output_name",
    "input_record",
    "iter_inputs",
    "listing",
    "open_sink",
    "recommend_group",
    "run_batch",
]

log = logging.getLogger("stygig.batch")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
#: The most inputs one part file may cover (``part_size`` is 1,000 by default).
MAX_PART_SIZE = 1_000_000
_LOOKAHEAD = 3  # groups decoding ahead of the encoder
#: How long a Parquet run's staged part stays open at most (seconds) before it is written, full
#: or not: a killed run redoes at most this long's records. A fast run fills its parts sooner,
#: so it writes no more files; a slow one writes at most one a period.
PART_SECONDS = 20.0
#: The environment variable an operator sets that period with (seconds, more than 0).
PART_SECONDS_ENV = "STYGIG_BATCH_PART_SECONDS"
#: The clock parts are timed with (a test's own in its place).
_now = time.monotonic


def part_seconds_from_env() -> float:
    """``$STYGIG_BATCH_PART_SECONDS``, else :data:`PART_SECONDS` (:class:`ConfigError` when
    it is not a number of seconds above 0: a mistyped bound is said, never replaced)."""
    text = os.environ.get(PART_SECONDS_ENV, "").strip()
    if not text:
        return PART_SECONDS
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < float("inf"):
        raise ConfigError(f"{PART_SECONDS_ENV} must be a number of seconds above 0")
    return seconds


@dataclass(frozen=True)
class BatchInput:
    """One input: what to ask, or why it cannot be asked."""

    index: int
    key: str
    source: str
    images: tuple[str, ...] = ()
    item_ids: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    error: StygigError | None = None


# -- inputs ---------------------------------------------------------------------------------------


def safe_text(text: str) -> str:
    """``text`` as UTF-8 can carry it (a Parquet column, a strict JSON reader): a byte of a
    file name that is not UTF-8 (read by Python as a lone surrogate, ``surrogateescape``) as
    ``\\xNN``, any other lone surrogate as ``\\uNNNN``; text without them as it is. The same
    name always gives the same text, so a rerun keys its inputs alike (review, session 40: one
    such photo name made a Parquet output impossible to finish)."""
    if not SURROGATE.search(text):
        return text

    def escaped(m: re.Match[str]) -> str:
        c = ord(m.group())
        return f"\\x{c - 0xDC00:02x}" if 0xDC80 <= c <= 0xDCFF else f"\\u{c:04x}"

    return SURROGATE.sub(escaped, text)


def _remote_photos(src: str) -> list[str]:
    """The photos under an S3 prefix; none is a mistake (a mistyped prefix, a file of another
    kind), not an empty run recorded as complete."""
    names = [k for k in storage.list_keys(src) if k.lower().endswith(IMAGE_SUFFIXES)]
    if not names:
        raise BatchError(
            f"no photos under {src} (a manifest ends in .jsonl, a catalogue in .csv; "
            "or name the kind with --kind)"
        )
    return names


def _photo_inputs(src: str, names: list[str] | None = None) -> Iterator[BatchInput]:
    """The photos of a folder or an S3 prefix (``names``: the prefix's, already listed)."""
    if storage.is_remote(src):
        base = src.rstrip("/") + "/"
        for i, uri in enumerate(_remote_photos(src) if names is None else names):
            yield BatchInput(i, uri[len(base) :], uri, images=(uri,))
        return
    root = Path(src)
    i = 0
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            if name.lower().endswith(IMAGE_SUFFIXES):
                path = Path(folder) / name
                key, source = path.relative_to(root).as_posix(), str(path)
                # Keyed by its name as text (a byte that is not UTF-8 escaped); read by path.
                yield BatchInput(i, safe_text(key), safe_text(source), (source,))
                i += 1


#: The longest manifest line read (a line of 8 photos in base64 is ~60 MB at most by the
#: image limits; a manifest names photos, it does not hold them).
MAX_MANIFEST_LINE = 16 << 20


def _manifest_lines(src: str) -> Iterator[str | None]:
    """The manifest's lines, read a line at a time, local or remote: memory bounded by
    :data:`MAX_MANIFEST_LINE`, a longer line ``None`` (that input's error); lines end at
    newlines only (U+2028 in a string is text)."""
    for raw in storage.iter_lines(src, max_line_bytes=MAX_MANIFEST_LINE):
        yield None if raw is None else raw.decode("utf-8", errors="replace")


def _manifest_photo(src: str, name: str) -> str:
    """A photo a manifest line names: a URI as it is, a relative path from the manifest's own
    folder (local or in S3). A manifest in S3 never names the local disk of the machine that
    runs the batch (an absolute path or ``file://``)."""
    remote = storage.is_remote(src)
    if remote and (Path(name).is_absolute() or name.startswith("file:")):
        raise InvalidOptionsError(
            "a manifest in S3 names photos beside it or by s3:// URI, never local files",
            code="invalid_location",
        )
    if "://" in name:
        return name
    if remote:
        return storage.join(src.rsplit("/", 1)[0], name)
    return name if Path(name).is_absolute() else str(Path(src).parent / name)


#: A manifest line's keys: its id, its photos (one of the four), its item ids, its options.
_PHOTO_KEYS = ("image", "images", "path", "uri")
_MANIFEST_KEYS = ("id", *_PHOTO_KEYS, "item_ids", "options")


def _manifest_row(row: dict[str, Any]) -> tuple[list[str], list[str], dict[str, Any]]:
    """A manifest line's photos, item ids and options, checked as closely as a request body
    is: an unknown key (a typo, an option beside ``options``), two ways of naming photos, or
    a value of the wrong type (``false``, ``""``, ``[]`` too) is an
    :class:`InvalidOptionsError`, never silently dropped (review, session 42)."""
    unknown = sorted(k for k in row if k not in _MANIFEST_KEYS)
    if unknown:
        raise InvalidOptionsError(
            f"unknown key {key_name(unknown[0])}"
            + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
            + f"; a manifest line holds {', '.join(_MANIFEST_KEYS)} (options go in 'options')"
        )
    given = [k for k in _PHOTO_KEYS if k in row]
    if len(given) > 1:
        raise InvalidOptionsError(
            f"give the photos once: {' or '.join(repr(k) for k in given)}, not both"
        )
    images: Any = []
    if given == ["images"]:
        images = row["images"]
        if not isinstance(images, list) or not all(isinstance(x, str) for x in images):
            raise InvalidOptionsError("'images' must be a list of paths or URIs")
    elif given:
        if not isinstance(row[given[0]], str):
            raise InvalidOptionsError(f"{given[0]!r} must be a path or URI")
        images = [row[given[0]]]
    item_ids = row.get("item_ids", [])
    if not isinstance(item_ids, list) or not all(isinstance(x, str) for x in item_ids):
        raise InvalidOptionsError("'item_ids' must be a list of catalogue ids")
    options = row.get("options", {})
    if not isinstance(options, dict):
        raise InvalidOptionsError("'options' must be an object")
    return images, item_ids, options


def _manifest_inputs(src: str) -> Iterator[BatchInput]:
    for i, line in enumerate(_manifest_lines(src)):
        key = f"line-{i + 1}"
        if line is None:
            err = InvalidOptionsError(
                f"line {i + 1} is over {MAX_MANIFEST_LINE:,} bytes", code="malformed_json"
            )
            yield BatchInput(i, key, f"{src}:{i + 1}", error=err)
            continue
        if i == 0:
            line = line.removeprefix("\ufeff")  # a byte-order mark is not the line's text
        if not line.strip():
            continue
        try:
            # Each value a Python object once parsed: bounded before (1M option keys in one
            # line held 150 MB until its group ran).
            check_json_values(line, what=f"line {i + 1}")
            row = json.loads(line, object_pairs_hook=unique_object)
            if not isinstance(row, dict):
                raise InvalidOptionsError("a manifest line must be a JSON object")
            # A lone surrogate ("\ud800", legal JSON syntax) is no text: no output can carry
            # it as an id, an option or a path (the line was decoded with replacement, so
            # only a \u escape can make one).
            if "\\u" in line and SURROGATE.search(json.dumps(row, ensure_ascii=False)):
                raise InvalidOptionsError(
                    f"line {i + 1} holds a lone UTF-16 surrogate escape (not text)",
                    code="malformed_json",
                )
            given = row.get("id")
            if isinstance(given, int) and not isinstance(given, bool):
                given = str(given)
            if given is not None and not isinstance(given, str):
                raise InvalidOptionsError("'id' must be a string or an integer")
            key = given if given else key
            images, item_ids, options = _manifest_row(row)
            resolved = tuple(_manifest_photo(src, x) for x in images)
            Query(images=resolved, item_ids=tuple(item_ids))  # validates the shape
            yield BatchInput(i, key, f"{src}:{i + 1}", resolved, tuple(item_ids), options)
        except json.JSONDecodeError as e:
            err = InvalidOptionsError(f"line {i + 1} is not JSON: {e}", code="malformed_json")
            yield BatchInput(i, key, f"{src}:{i + 1}", error=err)
        except (RecursionError, ValueError):  # nested too deeply; a 5,000-digit number
            err = InvalidOptionsError(
                f"line {i + 1} is JSON too deep or too long to read", code="malformed_json"
            )
            yield BatchInput(i, key, f"{src}:{i + 1}", error=err)
        except StygigError as e:
            yield BatchInput(i, key, f"{src}:{i + 1}", error=e)


def _catalog_inputs(src: str, known: Callable[[str], bool], by_photo: bool) -> Iterator[BatchInput]:
    read = read_catalog(src, check_images=False)
    rows: list[tuple[int, str, Item | Reject]] = [
        (read.rows.get(item.id, 0), item.id, item) for item in read.items
    ]
    rows += [(r.row, r.id or f"row-{r.row}", r) for r in read.rejects]
    rows.sort(key=lambda t: t[0])
    for i, (_, key, entry) in enumerate(rows):
        if isinstance(entry, Reject):
            message = f"catalogue row {entry.row} rejected ({entry.reason}): {entry.detail}"
            yield BatchInput(i, key, src, error=InvalidOptionsError(message, code="rejected_row"))
        elif known(key) and not by_photo:
            yield BatchInput(i, key, f"item:{key}", item_ids=(key,))
        else:
            yield BatchInput(i, key, entry.image, images=(entry.image,))


def _artifact_inputs(ids: Sequence[str]) -> Iterator[BatchInput]:
    for i, item_id in enumerate(ids):
        yield BatchInput(i, item_id, f"item:{item_id}", item_ids=(item_id,))


def input_kind(src: str) -> str:
    """``artifact``, ``photos``, ``catalog`` or ``manifest``, from what ``src`` looks like."""
    if storage.is_remote(src):
        suffix = src.rsplit("/", 1)[-1].lower()
        if suffix.endswith((".jsonl", ".ndjson")):
            return "manifest"
        if suffix.endswith(".csv"):
            return "catalog"
        return "photos"
    path = Path(src)
    if path.is_dir():
        return "artifact" if (path / "manifest.json").is_file() else "photos"
    if not path.is_file():
        raise BatchError(f"input {src} does not exist")
    if path.suffix.lower() == ".csv":
        return "catalog"
    # The first line that is not blank, read a bounded piece at a time (a one-line export or
    # a binary file is never read whole here).
    with contextlib.closing(storage.iter_lines(src, max_line_bytes=MAX_MANIFEST_LINE)) as lines:
        first = next((line for line in lines if line is None or line.strip()), b"{}")
    if first is None:  # longer than any manifest line: read as a manifest, whose error it is
        return "manifest"
    try:
        row = json.loads(first.decode("utf-8", errors="replace").removeprefix("\ufeff"))
    except (json.JSONDecodeError, RecursionError, ValueError):
        return "manifest"
    return "catalog" if isinstance(row, dict) and "category" in row else "manifest"


def iter_inputs(
    src: str, recommender: Recommender, *, kind: str = "auto", by_photo: bool = False
) -> tuple[Iterator[BatchInput], int | None]:
    """The inputs of ``src`` in a stable order, and how many there are when cheaply known."""
    kind = input_kind(src) if kind == "auto" else kind
    if kind == "artifact":
        from stygig.artifact import Artifact

        own = Path(src).resolve() == recommender.artifact.path.resolve()
        # The recommender's own catalogue as it is now (changes applied: items added since
        # the build, none removed), in row order; another artifact's items as built.
        positions = recommender.artifact.positions
        ids = (
            sorted(positions, key=positions.__getitem__)
            if own
            else [i.id for i in Artifact.load(src, verify=False).items]
        )
        return _artifact_inputs(ids), len(ids)
    if kind == "photos":
        if storage.is_remote(src):
            names = _remote_photos(src)
            return _photo_inputs(src, names), len(names)
        return _photo_inputs(src), None
    if kind == "catalog":
        positions = recommender.artifact.positions
        return _catalog_inputs(src, positions.__contains__, by_photo), None
    if kind == "manifest":
        return _manifest_inputs(src), None
    raise BatchError(f"unknown input kind {kind!r}")


# -- one group: decode -> embed -> score ----------------------------------------------------------


def prepare_input(
    rec: Recommender, inp: BatchInput, default_options: dict[str, Any]
) -> PreparedQuery | StygigError:
    """The pipeline's first step for one input (options checked, photos decoded and
    coloured); the error instead when that fails."""
    if inp.error is not None:
        return inp.error
    try:
        options = Options.from_dict({**default_options, **inp.options})
        query = Query(images=inp.images, item_ids=inp.item_ids)
        return rec.prepare(query, options, color_beside=False, load=fetch_photo)
    except StygigError as e:
        return e
    except (OSError, ValueError):  # one input must never stop the run (e.g. a NUL in a path)
        log.warning("input %s could not be read", inp.key, exc_info=True)
        return InputError("the input could not be read", code="unreadable_input")


@dataclass(frozen=True)
class Record:
    """One input's output line, and its error code when it failed."""

    index: int
    line: str
    error: str | None = None


def input_record(inp: BatchInput, result: bytes | StygigError) -> Record:
    """The output line for one input: its answer, or its error."""
    # Every string as UTF-8 text (no lone surrogate reaches a JSONL or Parquet output).
    head = {"index": inp.index, "id": safe_text(inp.key), "source": safe_text(inp.source)}
    base = json.dumps(head)[:-1]
    if isinstance(result, StygigError):
        error = {"code": safe_text(result.code), "message": safe_text(result.message)}
        line = f'{base}, "status": "error", "error": {json.dumps(error)}}}'
        return Record(inp.index, line, result.code)
    # The answer's own JSON bytes, as the API sends them: serialised once.
    return Record(inp.index, f'{base}, "status": "ok", "recommendation": {result.decode()}}}')


def recommend_group(
    rec: Recommender,
    inputs: Sequence[BatchInput],
    prepared: Sequence[PreparedQuery | StygigError],
    score: Callable[[Callable[[], Record]], Future[Record]] | None = None,
) -> list[Future[Record]]:
    """The pipeline's embed step for a group (its photos in one encoder call), then each
    input's answer (in ``score``'s pool). One future per input; a failure is its record."""
    ok = [i for i, p in enumerate(prepared) if isinstance(p, PreparedQuery)]
    tensors = [t for i in ok for t in prepared[i].tensors]  # type: ignore[union-attr]
    t0 = time.perf_counter()
    vectors = rec.embed(tensors)
    embed_ms = (time.perf_counter() - t0) * 1e3
    offsets: dict[int, tuple[int, int]] = {}
    start = 0
    for i in ok:
        n = len(prepared[i].tensors)  # type: ignore[union-attr]
        offsets[i] = (start, start + n)
        start += n

    def finish(i: int) -> Record:
        inp, prep = inputs[i], prepared[i]
        if isinstance(prep, StygigError):
            return input_record(inp, prep)
        lo, hi = offsets[i]
        if hi > lo:  # the group's encoder call, shared by its photos
            prep.timings.embed = embed_ms * (hi - lo) / max(1, len(tensors))
        try:
            return input_record(inp, rec.answer(prep, vectors[lo:hi]).to_json())
        except StygigError as e:
            return input_record(inp, e)
        except Exception:  # one input must never stop the run
            log.exception("unexpected failure on input %s", inp.key)
            return input_record(inp, StygigError("unexpected failure (the server log says why)"))

    if score is None:
        done: list[Future[Record]] = []
        for i in range(len(inputs)):
            f: Future[Record] = Future()
            f.set_result(finish(i))
            done.append(f)
        return done
    return [score(lambda i=i: finish(i)) for i in range(len(inputs))]  # type: ignore[misc]


# -- outputs --------------------------------------------------------------------------------------


class Sink(Protocol):
    """Where records go; knows which indexes are already written."""

    location: str

    def done(self) -> set[int]:
        """Indexes already in the output."""

    def write(self, records: Sequence[tuple[int, str]]) -> None:
        """Append ``(index, json line)`` pairs (in index order)."""

    def close(self, complete: bool) -> None:
        """Flush; when ``complete``, finalise the output."""


class JsonlSink:
    """One JSONL file, appended to and fsynced per group; resumed by scanning it."""

    def __init__(self, path: Path) -> None:
        self.location = str(path)
        self.path = path
        self._done: set[int] = set()
        path.parent.mkdir(parents=True, exist_ok=True)
        good, last = 0, -1
        if path.exists():
            with path.open("rb") as f:
                for line in f:
                    if not line.endswith(b"\n"):
                        break  # torn by a kill: cut off below
                    try:
                        record = json.loads(line)
                        index = record["index"]
                        if type(index) is not int or "status" not in record:
                            raise ValueError("not a record of a batch run")
                        # Runs write in input order, so indexes only grow: one that does not
                        # (a repeat, a negative one; a merged or hand-edited file) ends the
                        # run's records like garbage would (audit, session 46).
                        if index <= last:
                            raise ValueError("not in input order")
                        last = index
                        self._done.add(index)
                    except (ValueError, KeyError, TypeError, RecursionError, OverflowError):
                        break  # the run's records end here: the rest is done again
                    good += len(line)
            with path.open("r+b") as f:
                f.truncate(good)
        self._file = path.open("ab")

    def done(self) -> set[int]:
        """Indexes found in the file."""
        return self._done

    def write(self, records: Sequence[tuple[int, str]]) -> None:
        """Append whole lines, then fsync: a kill leaves at most a torn last line."""
        self._file.write(b"".join(line.encode() + b"\n" for _, line in records))
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self, complete: bool) -> None:
        """Close the file."""
        self._file.close()


class PartsSink:
    """JSONL parts under a prefix (local folder or ``s3://``), each within a fixed range.

    Part ``part-<start>-<end>.jsonl`` holds the records of indexes ``start <= i < end``; a part
    is written whole, so it exists completely or not at all. Without ``part_seconds`` a part
    covers its whole range of ``part_size`` indexes (an ``s3://`` prefix's). With it (a Parquet
    run's staging) a part is also written once it has been open ``part_seconds`` (timed at each
    write, by :data:`_now`), and when the run stops, so a range may be covered by several parts
    one after the other: each starts where the range's last one ended, never overlapping it.
    """

    def __init__(
        self, prefix: str, part_size: int = 1000, *, part_seconds: float | None = None
    ) -> None:
        if not 0 < part_size <= MAX_PART_SIZE:
            raise InvalidOptionsError(f"part_size must be 1 to {MAX_PART_SIZE:,}")
        if part_seconds is not None and not 0 < part_seconds < float("inf"):
            raise InvalidOptionsError("part_seconds must be above 0")
        self.location = prefix
        self.part_size = part_size
        self.part_seconds = part_seconds
        self._done: set[int] = set()
        self._buffer: list[tuple[int, str]] = []
        self._opened = 0.0  # when the buffered part was begun (by _now)
        # Per range (its first index), where its parts written so far end.
        self._ends: dict[int, int] = {}
        for _, span in own_parts(prefix):
            self._done.update(span)
            self._covered(span)

    def _covered(self, span: range) -> None:
        base = span.start // self.part_size * self.part_size
        self._ends[base] = max(self._ends.get(base, base), span.stop)

    def done(self) -> set[int]:
        """Indexes covered by existing parts."""
        return self._done

    def _flush(self) -> None:
        if not self._buffer:
            return
        first = self._buffer[0][0]
        base = first // self.part_size * self.part_size
        # From where the range's last part ended (the indexes between are no inputs), else
        # from the range's start, as a whole range's part always was.
        start = self._ends.get(base, base)
        start = start if start <= first else base
        end = self._buffer[-1][0] + 1
        body = b"".join(line.encode() + b"\n" for _, line in self._buffer)
        storage.write_bytes(storage.join(self.location, f"part-{start:09d}-{end:09d}.jsonl"), body)
        self._covered(range(start, end))
        self._buffer = []

    def write(self, records: Sequence[tuple[int, str]]) -> None:
        """Buffer records; a part is written once its index range is over, or (with
        ``part_seconds``) once it has been open that long."""
        now = _now()
        for index, line in records:
            if self._buffer and index // self.part_size != self._buffer[0][0] // self.part_size:
                self._flush()
            if not self._buffer:
                self._opened = now
            self._buffer.append((index, line))
        seconds = self.part_seconds
        if seconds is not None and self._buffer and now - self._opened >= seconds:
            self._flush()

    def close(self, complete: bool) -> None:
        """Write the last part when the run completed. When it stopped short, too if parts
        may end anywhere in their range (``part_seconds``): its records are finished work, kept
        as far as storage lets (a failure here is logged, never hiding why the run stopped)."""
        if complete:
            self._flush()
        elif self.part_seconds is not None:
            try:
                self._flush()
            except (StygigError, OSError) as e:
                log.warning("the records of the last part were not kept (%s): redone on resume", e)


class ParquetSink:
    """A Parquet file, staged as JSONL parts beside it and converted once the run completes.

    A staged part is written once ``part_size`` records' range is over or it has been open
    ``part_seconds`` (``None``: :func:`part_seconds_from_env`), whichever comes first, so a
    killed run loses at most that long's records (the Parquet file is written at the end).
    """

    def __init__(
        self, path: Path, part_size: int = 1000, *, part_seconds: float | None = None
    ) -> None:
        self.location = str(path)
        self.path = path
        self.staging = path.with_name(path.name + ".parts")
        seconds = part_seconds_from_env() if part_seconds is None else part_seconds
        self.parts = PartsSink(str(self.staging), part_size, part_seconds=seconds)

    def done(self) -> set[int]:
        """Indexes in the staged parts."""
        return self.parts.done()

    def write(self, records: Sequence[tuple[int, str]]) -> None:
        """Stage records."""
        self.parts.write(records)

    def close(self, complete: bool) -> None:
        """On completion: parts -> one Parquet file (row groups of ``part_size`` rows or
        more, however the parts were cut), staging removed."""
        self.parts.close(complete)
        if not complete:
            return
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError as e:
            raise BatchError("Parquet output needs pyarrow: pip install pyarrow") from e
        schema = pa.schema(
            [
                ("index", pa.int64()),
                ("id", pa.string()),
                ("source", pa.string()),
                ("status", pa.string()),
                ("outfit_item_ids", pa.list_(pa.string())),
                ("error_code", pa.string()),
                ("error_message", pa.string()),
                ("recommendation", pa.string()),  # the API response, JSON
            ]
        )
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        columns: dict[str, list[Any]] = {name: [] for name in schema.names}
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for key, _ in own_parts(str(self.staging)):
                rows = [json.loads(line) for line in storage.read_bytes(key).splitlines()]
                for r in rows:
                    rec = r.get("recommendation")
                    err = r.get("error") or {}
                    columns["index"].append(r["index"])
                    columns["id"].append(_text(r["id"]))
                    columns["source"].append(_text(r.get("source")))
                    columns["status"].append(_text(r["status"]))
                    outfit = (rec or {}).get("outfit") or {}
                    columns["outfit_item_ids"].append(
                        [_text(x) for x in outfit.get("item_ids", [])]
                    )
                    columns["error_code"].append(_text(err.get("code")))
                    columns["error_message"].append(_text(err.get("message")))
                    columns["recommendation"].append(json.dumps(rec) if rec else None)
                if len(columns["index"]) >= self.parts.part_size:
                    writer.write_table(pa.table(columns, schema=schema))
                    columns = {name: [] for name in schema.names}
            if columns["index"]:
                writer.write_table(pa.table(columns, schema=schema))
        os.replace(tmp, self.path)
        shutil.rmtree(self.staging, ignore_errors=True)


def _text(value: Any) -> Any:
    """A staged string as Parquet can hold it (:func:`safe_text`): parts staged before
    records were made safe held lone surrogates, and the conversion failed on every rerun."""
    return safe_text(value) if isinstance(value, str) else value


#: Local output names that promise a format a batch does not write: it writes JSON Lines (any
#: other name) or Parquet (``.parquet``), and ``out.csv`` got JSON Lines without a word
#: (review, session 49). Other suffixes (a date: ``recs.2026-12-04``) are names, not formats.
_OTHER_FORMATS = frozenset(
    [
        ".csv",
        ".tsv",
        ".json",
        ".txt",
        ".xls",
        ".xlsx",
        ".pq",
        ".parq",
        ".avro",
        ".orc",
        ".feather",
        ".arrow",
        ".gz",
        ".bz2",
        ".xz",
        ".zst",
        ".zip",
    ]
)


def check_output_name(dst: str) -> None:
    """Refuse a local output named for a format a batch does not write (see
    :data:`_OTHER_FORMATS`); an ``s3://`` prefix takes parts, whatever its name."""
    if storage.is_remote(dst):
        return
    suffix = Path(dst.rstrip("/")).suffix.lower()
    if suffix in _OTHER_FORMATS:
        raise BatchError(
            f"a batch writes JSON Lines (.jsonl) or Parquet (.parquet), not {suffix}: name "
            "the output for one of them"
        )
    # A file where a folder of the path should be ("File exists (afile)" said nothing).
    for parent in Path(dst).parents:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                what = "a link to nothing" if not parent.exists() else "a file"
                raise BatchError(f"--output {dst}: {parent} is {what}, not a folder")
            break


def open_sink(dst: str, part_size: int = 1000) -> Sink:
    """The sink for ``dst``: ``s3://`` prefix, ``.parquet`` file, or else a JSONL file."""
    if storage.is_remote(dst):
        return PartsSink(dst, part_size)
    path = storage.parse(dst).path
    assert path is not None
    if path.suffix.lower() == ".parquet":
        return ParquetSink(path, part_size)
    return JsonlSink(path)


def run_record(
    src: str,
    dst: str,
    *,
    kind: str,
    by_photo: bool,
    options: dict[str, Any],
    part_size: int,
    **answered_by: Any,
) -> dict[str, Any]:
    """What identifies a batch run (a rerun that differs is refused); ``answered_by`` names
    what answers it (the artifact, an endpoint)."""
    return {
        "input": src,
        "kind": kind,
        "by_photo": by_photo,
        "options": options,
        **answered_by,
        "part_size": part_size if storage.is_remote(dst) or _is_parquet(dst) else None,
    }


class Listing:
    """What a run's inputs are, index by index: a count and a sha256 over each input's index,
    key, source, photos, item ids, options and refusal, fed one input at a time; and how many
    repeat an earlier input's key (8 bytes of hash each: bounded memory). A resume or a rerun
    whose inputs list otherwise is refused, since its output's records are matched to inputs by
    index (review, session 54: a photo added to a folder between a killed run and its rerun
    shifted every index after it, and the output held one photo twice and another never)."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self._keys = array("Q")
        self.count = 0

    def add(self, inp: BatchInput) -> None:
        key = hashlib.blake2b(inp.key.encode("utf-8", "replace"), digest_size=8).digest()
        self._keys.append(int.from_bytes(key, "big"))
        entry = [
            inp.index,
            inp.key,
            inp.source,
            list(inp.images),
            list(inp.item_ids),
            inp.options,
            None if inp.error is None else inp.error.code,
        ]
        self._digest.update(
            json.dumps(entry, sort_keys=True, default=repr).encode("utf-8", "replace")
        )
        self._digest.update(b"\n")
        self.count += 1

    def record(self) -> dict[str, Any]:
        """``{"count", "sha256"}``, as a run record keeps it."""
        return {"count": self.count, "sha256": self._digest.hexdigest()}

    def repeated_keys(self) -> int:
        """Inputs whose key an earlier input has."""
        ordered = np.sort(np.frombuffer(self._keys, np.uint64))
        return int((ordered[1:] == ordered[:-1]).sum())


def listing(inputs: Iterator[BatchInput]) -> dict[str, Any]:
    """:class:`Listing`'s record of ``inputs`` (one pass, nothing kept); warns when inputs
    repeat an earlier input's key (two manifest lines of one id: each gets its record, and a
    consumer keyed by id keeps one: review, session 54)."""
    found = Listing()
    for inp in inputs:
        found.add(inp)
    if repeats := found.repeated_keys():
        log.warning(
            "%d input(s) repeat an earlier input's id: each gets its record, under the same id",
            repeats,
        )
    return found.record()


def _listed_otherwise(src: str, dst: str, then: Any, now: dict[str, Any], done: bool) -> BatchError:
    count = then.get("count") if isinstance(then, dict) else "?"
    how = (
        f"{count} then, {now['count']} now"
        if count != now["count"]
        else f"{count} then and now, listed differently"
    )
    if done:
        return BatchError(
            f"the completed run in {dst} answered the inputs of {src} as they were listed then; "
            f"they list otherwise now ({how}): use --overwrite to answer them again, or another "
            "--output"
        )
    return BatchError(
        f"the inputs of {src} changed since the run in {dst} began ({how}): its records are "
        "matched to inputs by position, so resuming would mix them up; use --overwrite to "
        "start again, or another --output"
    )


class RunInProgressError(StygigError):
    """Another run is writing this output now (exit 8: try again once it has finished)."""

    http_status = 409
    exit_code = 8
    code = "run_in_progress"


class RunLock:
    """A run's hold on its local output: an exclusive ``flock`` on ``<DST>.batch.lock``, taken
    before the run's record is read and kept until the record says complete or the run stops.
    A second run of the same output meanwhile (an overlapping cron entry) is refused with
    :class:`RunInProgressError` instead of appending every record a second time (review,
    session 40). The kernel drops the lock when the process ends, however it ends (``kill -9``
    included), so no stale file ever refuses a run. An ``s3://`` output has none: its parts are
    whole, idempotent writes (two runs at once write each part twice, with the same records).
    """

    def __init__(self, path: Path | None = None, file: BinaryIO | None = None) -> None:
        self.path = path
        self._file = file  # a file object: a lock never let go is dropped when it is collected

    @classmethod
    def take(cls, dst: str) -> RunLock:
        """The lock of ``dst``, held; :class:`RunInProgressError` when another run holds it."""
        if storage.is_remote(dst):
            return cls()
        _refuse_folder(dst)  # before anything is made there
        path = Path(f"{dst}.batch.lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunInProgressError(
                    f"another batch run is writing {dst} now; run this command again once "
                    "it has finished (it resumes or finds the run complete)"
                ) from None
            except BaseException:
                os.close(fd)
                raise
            # The run that held it removes the file as it lets go: a lock taken on a removed
            # file holds nothing, so it is taken again on the file the name leads to now.
            try:
                if os.path.samestat(os.fstat(fd), os.stat(path)):
                    return cls(path, os.fdopen(fd, "r+b", buffering=0))
            except FileNotFoundError:
                pass
            os.close(fd)

    def release(self) -> None:
        """Let go (once; later calls do nothing). The file goes first, while still held."""
        if self._file is None:
            return
        file, self._file = self._file, None
        try:
            if self.path is not None:
                self.path.unlink(missing_ok=True)
        finally:
            file.close()


class _LockedSink:
    """A run's sink that lets go of the run's :class:`RunLock` when it is closed without the
    run completing, or fails to close; a completed run's lock is let go once its record says
    so (:meth:`Tally.finish`). Every runner closes its sink in a ``finally``."""

    def __init__(self, sink: Sink, lock: RunLock) -> None:
        self.inner = sink
        self.location = sink.location
        self.lock = lock

    def done(self) -> set[int]:
        """Indexes already in the output."""
        return self.inner.done()

    def write(self, records: Sequence[tuple[int, str]]) -> None:
        """Append records."""
        self.inner.write(records)

    def close(self, complete: bool) -> None:
        """Close the output; let go of the lock unless the run completed."""
        try:
            self.inner.close(complete)
        except BaseException:
            self.lock.release()
            raise
        if not complete:
            self.lock.release()


def _refuse_folder(dst: str) -> None:
    if not storage.is_remote(dst) and (dst.endswith(("/", os.sep)) or Path(dst).is_dir()):
        raise BatchError(
            f"--output {dst} is a folder: a local output is a .jsonl or .parquet file "
            "(a folder of parts is an s3:// prefix)"
        )


def start_run(
    dst: str,
    run: dict[str, Any],
    overwrite: bool,
    listed: Callable[[], dict[str, Any]] | None = None,
) -> BatchSummary | None:
    """The summary of this same run when it already completed (nothing to do); else the run is
    recorded as started and ``None`` returned. A different earlier run is refused, and so is
    one whose inputs ``listed()`` (:func:`listing`; ``None``: not checked) lists otherwise
    than it did (a run recorded before listings were kept is taken as it is; a completed run
    whose inputs cannot be listed any more stands). Called with the output's
    :class:`RunLock` held (:func:`begin_run`)."""
    _refuse_folder(dst)
    earlier = _check_run(dst, run, overwrite)
    if earlier is not None and earlier.get("complete") and not _output_present(dst, earlier):
        log.warning("%s: the completed run's output is gone or cut short; running it again", dst)
        earlier = None
    then = (earlier or {}).get("run", {}).get("inputs")
    src = str(run.get("input"))
    if earlier is not None and earlier.get("complete"):
        if listed is not None and then is not None:
            try:
                now = listed()
            except StygigError:
                now = then  # the inputs are gone: the completed run's answers stand
            if now != then:
                raise _listed_otherwise(src, dst, then, now, done=True)
        before = dict(earlier["summary"])
        before.update(processed=0, skipped=before["total"], seconds=0.0, items_per_second=0.0)
        return BatchSummary(**before)
    if listed is not None:
        now = listed()
        if earlier is not None and then is not None and now != then:
            raise _listed_otherwise(src, dst, then, now, done=False)
        run["inputs"] = now
    storage.write_bytes(_sidecar(dst), json.dumps({"run": run, "complete": False}).encode())
    return None


def _output_present(dst: str, earlier: dict[str, Any]) -> bool:
    """Whether a completed run's output still holds every record it wrote: the JSONL file its
    whole lines, the parts their indexes, the Parquet file its rows (a lifecycle rule or a
    person may have removed or cut it since; review, session 51: a cut inside the last line
    left it counted, the run "already done" and the file's last record broken)."""
    total = int((earlier.get("summary") or {}).get("total") or 0)
    if storage.is_remote(dst):
        return sum(len(span) for _, span in own_parts(dst)) >= total
    path = storage.parse(dst).path
    assert path is not None
    if not path.is_file():
        return False
    if _is_parquet(dst):
        import pyarrow.parquet as pq

        try:
            return int(pq.ParquetFile(path).metadata.num_rows) >= total
        except (OSError, ValueError):
            return False
    with path.open("rb") as f:  # whole lines only: a cut inside the last one is not a record
        return sum(1 for line in f if line.endswith(b"\n")) >= total


def finish_run(
    dst: str,
    run: dict[str, Any],
    output: str,
    *,
    total: int,
    processed: int,
    skipped: int,
    errors: int,
    seconds: float,
    complete: bool,
    errors_by_code: dict[str, int],
) -> BatchSummary:
    """The run's summary, recorded beside the output when the run completed."""
    summary = BatchSummary(
        output=output,
        total=total,
        processed=processed,
        skipped=skipped,
        errors=errors,
        seconds=round(seconds, 3),
        items_per_second=round(processed / seconds, 2) if seconds > 0 else 0.0,
        complete=complete,
        errors_by_code=errors_by_code,
    )
    if complete:
        record = {"run": run, "complete": True, "summary": summary.to_dict()}
        storage.write_bytes(_sidecar(dst), json.dumps(record).encode())
    return summary


def progress_bar(total: int | None, initial: int, enabled: bool) -> tqdm[Any]:
    """A run's progress bar on stderr: ``initial`` inputs already done (resumed)."""
    return tqdm(
        total=total,
        initial=initial,
        desc="batch",
        unit="item",
        disable=not enabled,
        file=sys.stderr,
        smoothing=0.05,
        dynamic_ncols=True,
    )


def _sidecar(dst: str) -> str:
    return storage.join(dst, "_batch.json") if storage.is_remote(dst) else f"{dst}.batch.json"


def _check_run(dst: str, run: dict[str, Any], overwrite: bool) -> dict[str, Any] | None:
    """The earlier run's record, if it is this same run; refuse a different one."""
    side = _sidecar(dst)
    earlier = None
    if storage.exists(side):
        try:
            earlier = json.loads(storage.read_bytes(side, max_bytes=1 << 20))
        except (ValueError, RecursionError, StygigError):
            earlier = None
        if not isinstance(earlier, dict):
            if not overwrite:
                raise BatchError(
                    f"{side} is not a batch run's record; use --overwrite to start again"
                )
            earlier = None
    if overwrite:
        _remove_output(dst)
        return None
    if earlier is None:
        local = None if storage.is_remote(dst) else storage.parse(dst).path
        # A Parquet output is staged in "<name>.parts" beside it: someone else's folder of
        # that name would be read as finished work and then deleted.
        staging = local.with_name(local.name + ".parts") if local is not None else None
        # In S3, parts of no recorded run (other objects under the prefix, other runs in
        # folders below it, are not this run's and are never read or removed).
        if (local is not None and local.exists()) or (storage.is_remote(dst) and own_parts(dst)):
            raise BatchError(f"{dst} exists but was not written by a batch run; use --overwrite")
        if staging is not None and staging.exists() and _is_parquet(dst):
            raise BatchError(f"{staging} exists but was not written by a batch run")
        return None
    before = earlier.get("run")
    if not isinstance(before, dict) or _arguments(before) != _arguments(run):
        raise BatchError(
            f"{dst} holds a batch run with other arguments ({before}); "
            "use the same arguments to resume, or --overwrite"
        )
    return dict(earlier)


def _arguments(run: dict[str, Any]) -> dict[str, Any]:
    """A run record without its inputs' listing (compared on its own, by :func:`start_run`)."""
    return {k: v for k, v in run.items() if k != "inputs"}


def _remove_output(dst: str) -> None:
    if storage.is_remote(dst):  # a batch run's parts and record only, as in a local folder
        for key, _ in own_parts(dst):
            storage.delete(key)
        if storage.exists(_sidecar(dst)):
            storage.delete(_sidecar(dst))
        return
    path = storage.parse(dst).path  # a file: start_run refuses a local folder
    assert path is not None
    path.unlink(missing_ok=True)
    Path(f"{dst}.batch.json").unlink(missing_ok=True)
    staging = path.with_name(path.name + ".parts")
    if _is_parquet(dst) and staging.is_dir():  # a Parquet run's staging: its parts only
        for key, _ in own_parts(str(staging)):
            Path(key).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            staging.rmdir()  # kept when it holds anything else


def own_parts(prefix: str) -> list[tuple[str, range]]:
    """The batch parts directly under ``prefix`` (a folder or an S3 prefix) and the indexes
    each covers, in name order: never a sub-folder's (another run's output below this one)
    nor any other file (a temporary one a killed write left)."""
    if not storage.is_remote(prefix):
        folder = storage.parse(prefix).path
        assert folder is not None
        if not folder.is_dir():
            return []
        found = [(str(p), _part_range(p.name)) for p in sorted(folder.iterdir()) if p.is_file()]
        return [(key, span) for key, span in found if span is not None]
    base = prefix.rstrip("/") + "/"
    out = []
    for key in storage.list_keys(prefix):
        rest = key[len(base) :] if key.startswith(base) else "/"
        span = None if "/" in rest else _part_range(rest)
        if span is not None:
            out.append((key, span))
    return out


def _is_parquet(dst: str) -> bool:
    return not storage.is_remote(dst) and dst.lower().endswith(".parquet")


def _part_range(name: str) -> range | None:
    """The indexes one of :class:`PartsSink`'s files covers (``part-<start>-<end>.jsonl``);
    None for any other name."""
    if not (name.startswith("part-") and name.endswith(".jsonl")):
        return None
    start, _, end = name[5:-6].partition("-")
    if not (start.isdigit() and end.isdigit() and len(start) < 16 and len(end) < 16):
        return None
    span = range(int(start), int(end))
    # A part covers at most MAX_PART_SIZE inputs: a stray name claiming billions is no part
    # of ours (read as one, it would fill memory with the indexes it claims done).
    return span if 0 < len(span) <= MAX_PART_SIZE else None


# -- the run --------------------------------------------------------------------------------------


@dataclass
class BatchSummary:
    """What a run did."""

    output: str
    total: int
    processed: int
    skipped: int
    errors: int
    seconds: float
    items_per_second: float
    complete: bool = True
    errors_by_code: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly summary."""
        return dict(self.__dict__)


@dataclass
class Tally:
    """A started run's bookkeeping, shared by the local, Ray and endpoint runners: its output
    (``sink``, and the indexes ``done`` there before this run), its inputs, and the counts its
    summary reports. The clock starts once the output's finished parts are read."""

    dst: str
    run: dict[str, Any]
    sink: Sink
    inputs: Iterator[BatchInput]
    total: int | None  # the inputs' count when cheaply known; else the summary counts them
    done: set[int] = field(init=False)
    seen: int = 0
    skipped: int = 0
    processed: int = 0
    errors: int = 0
    errors_by_code: dict[str, int] = field(default_factory=dict)
    started: float = field(init=False)
    lock: RunLock | None = None  # the output's, held until the run's record is written
    consumed: dict[str, Any] | None = None  # every input listed, once todo() went through them

    def __post_init__(self) -> None:
        self.done = self.sink.done()
        self.started = time.perf_counter()  # the run's work starts after the resume scan

    def todo(self) -> Iterator[BatchInput]:
        """The inputs not already in the output (resume), counting each one seen and skipped,
        and listing them as they come (:class:`Listing`): what a completed run records is what
        it answered, not a listing taken a moment before (a photo added in between made the
        rerun of a run that answered it refused: review, session 54)."""
        last = -1  # the largest input index (a manifest's are its line numbers: may skip)
        consumed = Listing()
        for inp in self.inputs:
            consumed.add(inp)
            self.seen += 1
            last = max(last, inp.index)
            if inp.index in self.done:
                self.skipped += 1
                continue
            yield inp
        self.consumed = consumed.record()
        foreign = sum(1 for index in self.done if not 0 <= index <= last)
        if foreign:
            # Reported complete, the output would hold more records than there are inputs.
            raise BatchError(
                f"the output holds {foreign:,} record(s) past this run's last input (index "
                f"{last:,}): it was edited or merged; rerun with --overwrite"
            )

    def write(self, records: Sequence[Record]) -> None:
        """Write ``records`` (in index order) to the output, counting them and their errors."""
        self.sink.write([(r.index, r.line) for r in records])
        for r in records:
            if r.error is not None:
                self.errors += 1
                self.errors_by_code[r.error] = self.errors_by_code.get(r.error, 0) + 1
        self.processed += len(records)

    def finish(self, complete: bool) -> BatchSummary:
        """The run's summary, recorded beside the output when ``complete``
        (:func:`finish_run`); called once the sink is closed. The output's lock is let go."""
        if complete and self.consumed is not None and "inputs" in self.run:
            self.run["inputs"] = self.consumed
        try:
            return finish_run(
                self.dst,
                self.run,
                self.sink.location,
                total=self.seen if self.total is None else self.total,
                processed=self.processed,
                skipped=self.skipped,
                errors=self.errors,
                seconds=time.perf_counter() - self.started,
                complete=complete,
                errors_by_code=self.errors_by_code,
            )
        finally:
            if self.lock is not None:
                self.lock.release()


def checked_options(options: dict[str, Any] | None) -> dict[str, Any]:
    """A run's default options, copied and checked: bad options fail before any work."""
    options = dict(options or {})
    Options.from_dict(options)
    return options


def start_batch(
    recommender: Recommender,
    src: str,
    dst: str,
    *,
    options: dict[str, Any],
    kind: str,
    by_photo: bool,
    part_size: int,
    overwrite: bool,
) -> Tally | BatchSummary:
    """A run answered by ``recommender``'s artifact, started (:func:`start_run`): its tally,
    or the summary of this same run when it already completed. Local and Ray runs share this
    run record, so each resumes the other."""
    manifest = recommender.artifact.manifest
    answered_by = {k: manifest.get(k) for k in ("created_at", "format_version")}
    snap = recommender.snapshot
    if snap.sequence:  # changes applied (a change log): resumed only on the same catalogue
        answered_by["catalog_version"] = snap.catalog_version
    run = run_record(
        src,
        dst,
        kind=kind,
        by_photo=by_photo,
        options=options,
        part_size=part_size,
        artifact=answered_by,
    )
    return begin_run(
        dst,
        run,
        overwrite=overwrite,
        part_size=part_size,
        inputs=lambda: iter_inputs(src, recommender, kind=kind, by_photo=by_photo),
    )


def begin_run(
    dst: str,
    run: dict[str, Any],
    *,
    overwrite: bool,
    part_size: int,
    inputs: Callable[[], tuple[Iterator[BatchInput], int | None]],
    lock: RunLock | None = None,
) -> Tally | BatchSummary:
    """Start the run ``run`` into ``dst`` (:func:`start_run`): its tally over ``inputs()``
    (listed only then) and its output, or the summary of this same run when it already
    completed. Every runner starts here, whatever its run record. The output's
    :class:`RunLock` (``lock``, already taken, or taken here) is held by the tally until the
    run ends: another run of the same output at once is refused."""
    check_output_name(dst)  # before any lock of this call: a refused name leaves nothing
    held = lock if lock is not None else RunLock.take(dst)
    try:
        finished = start_run(dst, run, overwrite, lambda: listing(inputs()[0]))
        if finished is not None:
            held.release()
            return finished
        listed, total = inputs()
        sink = _LockedSink(open_sink(dst, part_size), held)
        return Tally(dst, run, sink, listed, total, lock=held)
    except BaseException:
        held.release()
        raise


def run_batch(
    recommender: Recommender,
    src: str,
    dst: str,
    *,
    options: dict[str, Any] | None = None,
    kind: str = "auto",
    by_photo: bool = False,
    batch_size: int = 32,
    workers: int | None = None,
    part_size: int = 1000,
    overwrite: bool = False,
    progress: bool = True,
) -> BatchSummary:
    """Recommend for every input of ``src`` into ``dst``, continuing an interrupted run."""
    options = checked_options(options)
    workers = workers or os.cpu_count() or 2
    tally = start_batch(
        recommender,
        src,
        dst,
        options=options,
        kind=kind,
        by_photo=by_photo,
        part_size=part_size,
        overwrite=overwrite,
    )
    if isinstance(tally, BatchSummary):
        return tally  # this same run already completed
    bar = progress_bar(tally.total, len(tally.done), progress)
    complete = False
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="batch") as pool:
        decoding: deque[tuple[list[BatchInput], list[Future[Any]]]] = deque()
        scoring: deque[list[Future[Record]]] = deque()

        def groups() -> Iterator[list[BatchInput]]:
            group: list[BatchInput] = []
            for inp in tally.todo():
                group.append(inp)
                if len(group) == batch_size:
                    yield group
                    group = []
            if group:
                yield group

        source = groups()

        def submit_next() -> None:
            group = next(source, None)
            if group is not None:
                futures = [pool.submit(prepare_input, recommender, inp, options) for inp in group]
                decoding.append((group, futures))

        def drain(keep: int) -> None:
            while len(scoring) > keep:
                records = [f.result() for f in scoring.popleft()]
                tally.write(records)
                bar.update(len(records))

        try:
            for _ in range(_LOOKAHEAD):
                submit_next()
            while decoding:
                group, futures = decoding.popleft()
                prepared = [f.result() for f in futures]
                submit_next()
                scoring.append(recommend_group(recommender, group, prepared, score=pool.submit))
                drain(keep=1)
            drain(keep=0)
            complete = True
        finally:
            bar.close()
            tally.sink.close(complete)
    return tally.finish(complete)

"""Where bytes live: read and write plain paths, ``file://`` URIs and ``s3://`` URIs.

One small surface for the async jobs and batch runs::

    read_bytes(uri) -> bytes          write_bytes(uri, data)   (atomic: readers see all or nothing)
    read_bytes(uri, max_bytes=n)      (a regular file / object of at most n bytes, never more read)
    read_beneath(folder, path, max_bytes=n)   (the same, no symbolic link followed below folder)
    exists(uri) -> bool               delete(uri)
    list_keys(prefix) -> [uri, ...]   join(prefix, name) -> uri
    with local_copy(uri) as path: ...  (an object as a local file, for readers that need a path)
    remove_stale_temps(prefix)        (temporary files a crashed local write left behind)

S3 goes through boto3 (the ``aws`` extra) with its standard configuration: credentials, region
and endpoint come from the environment (``AWS_ACCESS_KEY_ID``, ``AWS_DEFAULT_REGION``,
``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3`` for an S3-compatible server such as MinIO or
moto) or ``~/.aws/config``. A local write goes to a temporary file in the same folder and is
renamed into place; an S3 ``PutObject`` is atomic by itself.

Error messages name the location and the system's reason: they are for the operator (the CLI,
the server log). What a client may see of them is decided by :mod:`stygig.locations`.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import tempfile
import threading
import time
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from stygig.errors import (
    InputError,
    NotFoundError,
    PayloadTooLargeError,
    StorageError,
    StygigError,
)

__all__ = [
    "Location",
    "StorageError",
    "check_s3_key",
    "delete",
    "exists",
    "is_remote",
    "join",
    "list_keys",
    "local_copy",
    "local_path",
    "parse",
    "read_beneath",
    "read_bytes",
    "remove_stale_temps",
    "write_bytes",
]


@dataclass(frozen=True)
class Location:
    """A parsed location: ``scheme`` is ``"file"`` (``path`` set) or ``"s3"`` (bucket, key)."""

    scheme: str
    path: Path | None = None
    bucket: str = ""
    key: str = ""

    def __str__(self) -> str:
        if self.scheme == "s3":
            return f"s3://{self.bucket}/{self.key}"
        return str(self.path)


def parse(uri: str | Path) -> Location:
    """A plain path, ``file://`` or ``s3://`` URI as a :class:`Location`."""
    text = str(uri)
    if text.startswith("s3://"):
        # Split by hand, not as a URL: "?" and "#" are characters of an S3 key, not a query or
        # a fragment (urlparse cut "red.jpg?v=2.jpg" to "red.jpg", another object: review,
        # session 54).
        bucket, _, key = text[len("s3://") :].partition("/")
        if not bucket:
            raise StorageError(f"{text!r} names no bucket", code="invalid_location")
        if not _BUCKET.fullmatch(bucket):
            raise StorageError(
                f"{bucket[:100]!r} is not an S3 bucket name (3-255 letters, digits, "
                "'.', '-' or '_'; buckets made since 2018: 3-63 lowercase)",
                code="invalid_location",
            )
        # Kept as written: "s3://b//x" is the key "/x", which S3 holds apart from "x" (a
        # listed key with a leading "/" was read as the object without it: review, session 54).
        check_s3_key(key)
        return Location("s3", bucket=bucket, key=key)
    if "://" in text and not text.startswith("file://"):
        raise StorageError(
            f"{text!r}: only plain paths, file:// and s3:// are supported", code="invalid_location"
        )
    return Location("file", path=Path(local_path(text)))


# Every bucket name S3 has ever accepted (older buckets in us-east-1 may hold capitals and '_'):
# anything else (a port, user info, spaces) is refused here, before any work is done for it.
_BUCKET = re.compile(r"[A-Za-z0-9._-]{3,255}")
S3_KEY_MAX_BYTES = 1024  # S3's limit on an object key, in UTF-8 bytes


def check_s3_key(key: str) -> None:
    """Refuse an S3 object key longer than S3 takes (said before any work is done for it)."""
    size = len(key.encode("utf-8", "surrogatepass"))
    if size > S3_KEY_MAX_BYTES:
        raise StorageError(
            f"an S3 object key is at most {S3_KEY_MAX_BYTES} bytes of UTF-8; this one is {size}",
            code="invalid_location",
        )


def local_path(uri: str) -> str:
    """The path a plain path or ``file://`` URI names, as written: decoded, not normalised
    (``Path`` would drop ``.`` and empty segments; :func:`parse` gives that form)."""
    return unquote(urlparse(uri).path) if uri.startswith("file://") else uri


def is_remote(uri: str | Path) -> bool:
    """Whether ``uri`` is an ``s3://`` location."""
    return str(uri).startswith("s3://")


def join(prefix: str | Path, name: str) -> str:
    """``prefix`` + ``/`` + ``name`` for either kind of location."""
    text = str(prefix)
    if is_remote(text):
        return text.rstrip("/") + "/" + name if not text.endswith("://") else text + name
    return str(Path(text) / name)


_client_lock = threading.Lock()
_clients: dict[int, Any] = {}


def _s3() -> Any:
    """One boto3 S3 client per process (clients are thread-safe; creating one is not)."""
    pid = os.getpid()
    with _client_lock:
        client = _clients.get(pid)
        if client is None:
            try:
                import boto3
                from botocore.config import Config
            except ImportError as e:  # pragma: no cover - depends on the install
                raise StorageError(
                    "s3:// locations need boto3: pip install 'stygig[aws]'", code="missing_extra"
                ) from e
            client = boto3.client(
                "s3", config=Config(retries={"max_attempts": 5, "mode": "standard"})
            )
            _clients[pid] = client
        return client


@contextmanager
def _s3_errors(loc: Location) -> Iterator[None]:
    """Turn a failing S3 call on ``loc`` into the StyGig error that says what happened; StyGig's
    own errors (boto3 missing) pass through unchanged."""
    try:
        yield
    except StygigError:
        raise
    except Exception as e:
        raise _s3_error(e, loc) from e


def _s3_error(e: Exception, loc: Location) -> StygigError:
    code = ""
    response = getattr(e, "response", None)
    if isinstance(response, dict):
        code = str(response.get("Error", {}).get("Code", ""))
    if code in ("NoSuchKey", "404", "NotFound"):
        return NotFoundError(f"{loc} does not exist", code="location_not_found")
    if code == "NoSuchBucket":
        return NotFoundError(f"bucket {loc.bucket!r} does not exist", code="location_not_found")
    return StorageError(f"{loc}: {e}")


# O_NONBLOCK: opening a FIFO without a writer would otherwise block the reader forever.
_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
# A folder on the way down. O_PATH (Linux) needs no read permission, and with O_NOFOLLOW it
# opens a symlink itself (fstat tells); without O_PATH a symlink fails with ELOOP.
_STEP_FLAGS = getattr(os, "O_PATH", os.O_RDONLY | os.O_NONBLOCK) | getattr(os, "O_CLOEXEC", 0)


def read_bytes(uri: str | Path, *, max_bytes: int | None = None) -> bytes:
    """The whole object at ``uri`` (:class:`~stygig.errors.NotFoundError` when absent).

    With ``max_bytes``, the read is bounded: only a regular file or an object of at most that
    size is read (:class:`~stygig.errors.PayloadTooLargeError`, code ``input_too_large``,
    otherwise), its size is checked before any byte is read, and never more than
    ``max_bytes + 1`` bytes are (the object may grow meanwhile). A local file is opened
    non-blocking, so a FIFO or a device is refused (code ``not_a_regular_file``), not waited on.
    """
    loc = parse(uri)
    if loc.scheme == "s3":
        with _s3_errors(loc):
            if max_bytes is None:
                body: bytes = _s3().get_object(Bucket=loc.bucket, Key=loc.key)["Body"].read()
                return body
            return _read_s3_bounded(loc, max_bytes)
    assert loc.path is not None
    if max_bytes is None:
        try:
            return loc.path.read_bytes()
        except OSError as e:
            raise _os_error(e, loc) from e
    fd, size = _open_regular(loc)
    return _read_fd_bounded(fd, size, loc, max_bytes)


def read_head(uri: str | Path, max_bytes: int) -> bytes:
    """The first ``max_bytes`` bytes of the object at ``uri``, whatever its size (a ranged
    read in S3; a regular local file only, as :func:`read_bytes` with a bound)."""
    loc = parse(uri)
    if loc.scheme == "s3":
        with _s3_errors(loc):
            client = _s3()
            return _s3_first(client, loc, max_bytes) if _s3_size(client, loc) else b""
    fd, _ = _open_regular(loc)
    return _read_fd(fd, max_bytes, loc)


def iter_lines(
    uri: str | Path, *, max_line_bytes: int = 64 << 20
) -> Generator[bytes | None, None, None]:
    """The object or file at ``uri`` line by line, read as a stream: lines end at ``\n`` (a
    ``\r`` before it is dropped), and memory is bounded by ``max_line_bytes``, not by the
    object or its longest line. A line over that is ``None`` (its bytes skipped), so a
    reader can say which line was too long and go on. A local path is opened non-blocking:
    a FIFO or a device is refused (``not_a_regular_file``), not waited on."""
    loc = parse(uri)
    if loc.scheme == "s3":
        with _s3_errors(loc):
            body = _s3().get_object(Bucket=loc.bucket, Key=loc.key)["Body"]
            try:
                yield from _split_lines(body.iter_chunks(1 << 16), max_line_bytes)
            finally:
                body.close()
        return
    fd, _ = _open_regular(loc)
    with os.fdopen(fd, "rb") as handle:
        yield from _split_lines(iter(lambda: handle.read(1 << 16), b""), max_line_bytes)


def _split_lines(chunks: Iterator[bytes], max_line: int) -> Iterator[bytes | None]:
    pending = bytearray()
    over = False  # the current line passed max_line: its bytes are dropped
    for chunk in chunks:
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            if not over:
                pending += chunk[start:end]
            yield None if over or len(pending) > max_line else bytes(pending).removesuffix(b"\r")
            pending.clear()
            over = False
            start = end + 1
        if not over:
            pending += chunk[start:]
            if len(pending) > max_line:
                over = True
                pending.clear()
    if over:
        yield None
    elif pending:
        yield bytes(pending).removesuffix(b"\r")


def read_beneath(folder: str | Path, path: str | Path, *, max_bytes: int) -> bytes:
    """The regular file ``path`` inside ``folder`` (both resolved already), read like
    ``read_bytes(path, max_bytes=...)`` but reached without following any symbolic link below
    ``folder``: each component is opened relative to the one before, with ``O_NOFOLLOW``.
    So a path checked once cannot be sent elsewhere by a symlink swapped in afterwards: that
    is a :class:`~stygig.errors.StorageError` with code ``location_changed``. A hard link is a
    file like any other and is read.
    """
    loc = Location("file", path=Path(path))
    parts = os.path.relpath(path, folder).split(os.sep)
    if any(part in ("", ".", "..") for part in parts):
        raise StorageError(f"{path} is not inside {folder}", code="invalid_location")
    try:
        fd = os.open(folder, _STEP_FLAGS | getattr(os, "O_DIRECTORY", 0))  # the operator's
        try:
            for name in parts[:-1]:
                step = os.open(name, _STEP_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
                os.close(fd)
                fd = step
                kind = os.fstat(fd).st_mode
                if stat.S_ISLNK(kind):
                    raise OSError(errno.ELOOP, "a symbolic link on the way")
                if not stat.S_ISDIR(kind):
                    raise OSError(errno.ENOTDIR, "not a folder on the way")
            file_fd = os.open(parts[-1], _READ_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
        finally:
            os.close(fd)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise StorageError(f"{loc}: a symbolic link on the way", code="location_changed") from e
        raise _os_error(e, loc) from e
    return _read_fd_bounded(file_fd, _regular(file_fd, loc), loc, max_bytes)


def _os_error(e: OSError, loc: Location) -> StygigError:
    """What a failing local open or read of ``loc`` means (a missing folder on the way is a
    missing file)."""
    if e.errno in (errno.ENOENT, errno.ENOTDIR):
        return NotFoundError(f"{loc} does not exist", code="location_not_found")
    return StorageError(f"{loc}: {e}")


def _too_large(loc: Location, max_bytes: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"{loc} is larger than {max_bytes:,} bytes", code="input_too_large")


def _open_regular(loc: Location) -> tuple[int, int]:
    """``(descriptor, size)`` of the regular local file ``loc``, opened non-blocking (so a
    FIFO is not waited on); see :func:`_regular`."""
    assert loc.path is not None
    try:
        fd = os.open(loc.path, _READ_FLAGS)
    except OSError as e:
        raise _os_error(e, loc) from e
    except ValueError:  # a NUL character in the path: no file has that name
        raise InputError("a path holds a NUL character", code="invalid_location") from None
    return fd, _regular(fd, loc)


def _regular(fd: int, loc: Location) -> int:
    """The size of the file open as ``fd``, checked on the file actually opened, not whatever
    the path names by now: anything but a regular file is ``not_a_regular_file`` (``fd``
    closed). Reads on it then block as usual."""
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"{loc} is not a regular file", code="not_a_regular_file")
        os.set_blocking(fd, True)
    except BaseException as e:
        os.close(fd)
        if isinstance(e, OSError):
            raise _os_error(e, loc) from e
        raise
    return info.st_size


def _read_fd(fd: int, limit: int, loc: Location) -> bytes:
    """Up to ``limit`` bytes of the file open as ``fd`` (closed here)."""
    try:
        chunks: list[bytes] = []
        left = limit
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as e:
        raise _os_error(e, loc) from e
    finally:
        os.close(fd)
    return b"".join(chunks)


def _read_fd_bounded(fd: int, size: int, loc: Location, max_bytes: int) -> bytes:
    """At most ``max_bytes`` of the regular file open as ``fd``, ``size`` bytes when opened
    (closed here)."""
    if size > max_bytes:
        os.close(fd)
        raise _too_large(loc, max_bytes)
    data = _read_fd(fd, max_bytes + 1, loc)
    if len(data) > max_bytes:
        raise _too_large(loc, max_bytes)  # it grew after the size check
    return data


def _read_s3_bounded(loc: Location, max_bytes: int) -> bytes:
    client = _s3()
    size = _s3_size(client, loc)
    if size > max_bytes:
        raise _too_large(loc, max_bytes)
    if size == 0:
        return b""  # nothing to read (and a Range on an empty object is an error)
    data = _s3_first(client, loc, max_bytes + 1)
    if len(data) > max_bytes:
        raise _too_large(loc, max_bytes)  # replaced by a bigger object since the HEAD
    return data


def _s3_size(client: Any, loc: Location) -> int:
    return int(client.head_object(Bucket=loc.bucket, Key=loc.key)["ContentLength"])


def _s3_first(client: Any, loc: Location, n: int) -> bytes:
    """At most the first ``n`` bytes of a non-empty object: the Range bounds the transfer
    whatever the object's size is by now."""
    if n <= 0:
        return b""
    response = client.get_object(Bucket=loc.bucket, Key=loc.key, Range=f"bytes=0-{n - 1}")
    stream = response["Body"]
    try:
        data: bytes = stream.read(n)
    finally:
        stream.close()
    return data[:n]


def new_file_mode() -> int:
    """The permissions ``open()`` gives a new file here (``0o666`` less the umask), read from
    ``/proc`` (setting the umask to learn it would race with other threads' files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o644


_NAME_MAX = 255  # bytes in one file name (Linux, macOS)


def new_temp_file(folder: Path, prefix: str, suffix: str = "") -> tuple[int, str]:
    """``tempfile.mkstemp`` in ``folder``, with the permissions of a file ``open()`` makes: a
    file renamed into place from it is readable as any other written there (mkstemp's 0600
    left artifacts and change logs unreadable to the container's own user).

    A ``prefix`` too long for a file name with mkstemp's 8 characters and ``suffix`` is cut
    before its last character (its separator): a write to a 250-byte name failed with "File
    name too long" (review, session 49)."""
    room = _NAME_MAX - 8 - len(os.fsencode(suffix))
    raw = os.fsencode(prefix)
    if len(raw) > room:  # (the bytes themselves: a letter cut in two is still a file name)
        prefix = os.fsdecode(raw[: room - 1]) + prefix[-1]
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)
    try:
        os.fchmod(fd, new_file_mode())
    except BaseException:
        os.close(fd)
        Path(name).unlink(missing_ok=True)
        raise
    return fd, name


# What write_bytes' temporary files are called (mkstemp: "." + name + "." + 8 random characters
# + ".tmp"): only those are ever cleaned up.
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def write_bytes(uri: str | Path, data: bytes, *, content_type: str | None = None) -> str:
    """Write ``data`` to ``uri`` atomically (all or nothing), creating folders; the location."""
    loc = parse(uri)
    if loc.scheme == "s3":
        extra = {"ContentType": content_type} if content_type else {}
        with _s3_errors(loc):
            _s3().put_object(Bucket=loc.bucket, Key=loc.key, Body=data, **extra)
        return str(loc)
    assert loc.path is not None
    try:
        loc.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = new_temp_file(loc.path.parent, f".{loc.path.name}.", ".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, loc.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as e:
        raise StorageError(f"{loc}: {e}") from e
    return str(loc.path)


def remove_stale_temps(prefix: str | Path, *, older_than_s: float = 600.0) -> int:
    """Delete the temporary files of local writes that never finished (a crash between the
    write and the rename) directly in the folder ``prefix``; how many.

    Only files older than ``older_than_s`` go, so a write in progress in another process is
    never hit. S3 writes leave nothing behind (a ``PutObject`` is atomic): nothing to do.
    """
    if is_remote(prefix):
        return 0
    folder = parse(prefix).path
    assert folder is not None
    cutoff = time.time() - older_than_s
    removed = 0
    try:
        entries = os.scandir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return 0
    except OSError as e:
        raise StorageError(f"{folder}: {e}") from e
    with entries:
        for entry in entries:
            if not _TEMP_NAME.match(entry.name):
                continue
            try:
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISREG(info.st_mode) and info.st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue  # another process cleaned it up first
    return removed


@contextmanager
def local_copy(uri: str | Path) -> Iterator[Path]:
    """A local file with the contents of ``uri``, for code that reads files by path (the
    catalogue reader): a local location is itself; an ``s3://`` object is streamed to disk
    (never held in memory whole) under a temporary folder, with the object's own file name so
    its suffix still says its format, and removed when the block ends."""
    loc = parse(uri)
    if loc.scheme != "s3":
        assert loc.path is not None
        yield loc.path
        return
    name = loc.key.rsplit("/", 1)[-1] or "object"
    with tempfile.TemporaryDirectory(prefix="stygig-copy-") as folder:
        path = Path(folder) / name
        with _s3_errors(loc), path.open("wb") as f:
            _s3().download_fileobj(loc.bucket, loc.key, f)
        yield path


def exists(uri: str | Path) -> bool:
    """Whether an object or file is at ``uri``."""
    loc = parse(uri)
    if loc.scheme == "s3":
        try:
            with _s3_errors(loc):
                _s3().head_object(Bucket=loc.bucket, Key=loc.key)
        except NotFoundError:
            return False
        return True
    assert loc.path is not None
    return loc.path.is_file()


def delete(uri: str | Path) -> None:
    """Remove the object at ``uri`` (nothing happens when it is absent)."""
    loc = parse(uri)
    if loc.scheme == "s3":
        with _s3_errors(loc):
            _s3().delete_object(Bucket=loc.bucket, Key=loc.key)
        return
    assert loc.path is not None
    loc.path.unlink(missing_ok=True)


def list_keys(prefix: str | Path, *, folder: bool = True) -> list[str]:
    """Every object under ``prefix`` (a folder or an S3 prefix), sorted, as locations.

    An S3 prefix is a folder (``folder``): ``s3://b/recs/shard1`` lists ``recs/shard1/...``,
    never ``recs/shard10/...``. ``folder=False`` lists every key that starts with it (an id
    prefix among a folder's names)."""
    loc = parse(prefix)
    if loc.scheme == "s3":
        out: list[str] = []
        key = loc.key
        if folder and key and not key.endswith("/"):
            key += "/"
        with _s3_errors(loc):
            pages = _s3().get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=key)
            for page in pages:
                out.extend(f"s3://{loc.bucket}/{obj['Key']}" for obj in page.get("Contents", []))
        return sorted(out)
    assert loc.path is not None
    if not loc.path.is_dir():
        return []
    return sorted(str(p) for p in loc.path.rglob("*") if p.is_file())

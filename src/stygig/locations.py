"""Which stored locations a client may name, and what it may learn about them.

A client of the async API names its input (``X-Amzn-SageMaker-InputLocation``, ``image_uri(s)``)
and the server reads it with its own file permissions and cloud credentials. So by default no
client-chosen location is read at all; the operator allows prefixes::

    locations = InputLocations(["s3://shop/in/", "/srv/uploads"], max_bytes=6 * 1024 * 1024)
    locations.check(uri)          # at submission: a refused location is a 4xx before the 202
    data = locations.read(uri)    # in the worker: checked again, then a bounded read

Every refusal has one code, ``location_not_allowed``, whether the location exists or not, so a
client learns nothing about what lies outside the allowed prefixes. A local path must be
absolute, hold no ``.``, ``..`` or empty segments and be written under an allowed folder: that
is decided on its text alone, before the file system is asked anything, so the answer for a
path outside never depends on what is there (a file, nothing, a symlink). Then it is resolved
(symlinks inside the folder may lead to another allowed folder, never out), and read by
walking the resolved path from the allowed folder without following any symlink
(:func:`stygig.storage.read_beneath`): a component swapped for a symlink after the check is
refused, not followed. Only regular files are read, at most ``max_bytes``. Hard links inside
an allowed folder are files like any other: whoever can write there can link what they can
read. An S3 key must start with an allowed prefix and hold no ``.``/``..``/empty segments
(which some S3 servers would normalise).

:func:`public_errors` turns storage errors into what a client may see: the kind of failure and
a stable code, never the location, a server path or the system's reason (those are logged).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import NamedTuple
from urllib.parse import urlparse

from stygig import storage
from stygig.errors import InvalidOptionsError, StorageError, StygigError

__all__ = ["LOCATION_NOT_ALLOWED", "InputLocations", "public_errors"]

log = logging.getLogger("stygig.locations")

LOCATION_NOT_ALLOWED = "location_not_allowed"

# What a client is told for each storage error code it may learn about ("the input location"
# + reason); anything else is a generic storage error.
_PUBLIC_REASONS = {
    "location_not_found": "does not exist",
    "not_a_regular_file": "is not a regular file",
    "input_too_large": "is too large",
    "location_changed": "changed while it was being opened",
}


@contextmanager
def public_errors(what: str, *, max_bytes: int | None = None) -> Iterator[None]:
    """Storage errors inside the block as a client may see them: the same error class and code,
    a message that names only ``what``; the full message goes to the server log."""
    try:
        yield
    except StygigError as e:
        log.warning("%s: %s (%s)", what, e.message, e.code)
        reason = _PUBLIC_REASONS.get(e.code)
        if reason is None:
            raise StorageError(f"{what} could not be read", code="storage_error") from None
        if e.code == "input_too_large" and max_bytes is not None:
            reason = f"is larger than {max_bytes:,} bytes"
        raise type(e)(f"{what} {reason}", code=e.code) from None


def _refused(flag: str) -> InvalidOptionsError:
    return InvalidOptionsError(
        "the input location is not in a prefix this server may read; allowed prefixes are "
        f"set by the operator ({flag})",
        code=LOCATION_NOT_ALLOWED,
    )


def _under(path: str, folder: str) -> bool:
    return path.startswith(folder.rstrip(os.sep) + os.sep)


class _Folder(NamedTuple):
    """An allowed local folder, as the operator wrote it (absolute) and resolved."""

    given: str
    real: str


class _Target(NamedTuple):
    """What to read for a location: an S3 URI (``folder`` None) or a resolved local path and
    the resolved allowed folder it is in."""

    location: str
    folder: str | None


class InputLocations:
    """The locations a client may name, and the bounded reads of them.

    Args:
        prefixes: allowed S3 prefixes (``s3://bucket/`` or ``s3://bucket/in/``; a prefix is a
            folder: ``s3://b/in`` allows ``s3://b/in/x``, not ``s3://b/inbox/x``) and local
            folders (plain paths or ``file://``). Empty: every client-chosen location is refused.
        max_bytes: the most one read returns (bigger inputs fail with ``input_too_large``).
        flag: the operator's option that sets ``prefixes``, named in a refusal (review, s40:
            a catalogue photo's refusal named the async endpoint's).
    """

    def __init__(
        self,
        prefixes: Iterable[str] = (),
        *,
        max_bytes: int = 6 * 1024 * 1024,
        flag: str = "--allow-input-prefix",
    ) -> None:
        if max_bytes < 1:
            raise InvalidOptionsError("max_bytes must be at least 1")
        self.max_bytes = max_bytes
        self.flag = flag
        folders: list[_Folder] = []
        s3: list[tuple[str, str]] = []
        for prefix in prefixes:
            loc = storage.parse(prefix)
            if loc.scheme == "s3":
                key = loc.key if not loc.key or loc.key.endswith("/") else loc.key + "/"
                s3.append((loc.bucket, key))
            else:
                assert loc.path is not None
                folders.append(_Folder(os.path.abspath(loc.path), os.path.realpath(loc.path)))
        self._folders = tuple(folders)
        self._s3 = tuple(s3)

    def check(self, uri: str) -> None:
        """Refuse ``uri`` unless a client may name it:
        :class:`~stygig.errors.InvalidOptionsError` (``location_not_allowed``)."""
        self._target(uri)

    def _target(self, uri: str) -> _Target:
        try:
            loc = storage.parse(uri)
        except StygigError:
            raise _refused(self.flag) from None  # another scheme (http, ...): never read
        if loc.scheme == "s3":
            return _Target(self._check_s3(uri, loc), None)
        if uri.startswith("file://") and urlparse(uri).netloc not in ("", "localhost"):
            raise _refused(self.flag)  # a file on another host: not a local path at all
        # On the text alone: resolving a path outside first would let the answer depend on
        # what is there (a ".." after a symlink resolves elsewhere than after a folder).
        text = storage.local_path(uri)
        segments = text.split("/")
        if segments[0] or "\x00" in text or any(s in ("", ".", "..") for s in segments[1:]):
            raise _refused(self.flag)  # relative, or not one plain name per segment
        if not any(_under(text, f.given) or _under(text, f.real) for f in self._folders):
            raise _refused(self.flag)
        try:
            real = os.path.realpath(text)  # where it really is (symlinks inside followed)
        except (OSError, ValueError):
            raise _refused(self.flag) from None
        inside = [f.real for f in self._folders if _under(real, f.real)]
        if not inside:
            raise _refused(self.flag)  # a symlink inside led out
        return _Target(real, max(inside, key=len))

    def _check_s3(self, uri: str, loc: storage.Location) -> str:
        canonical = str(loc)
        segments = loc.key.split("/")
        # "?" and "#" are read by some tools as a query or fragment; control characters were
        # dropped by the URL parser once (review, session 54): no one key they stand for.
        odd = any(c in "?#\x7f" or c < " " for c in loc.key)
        if canonical != uri or odd or any(s in ("", ".", "..") for s in segments):
            raise _refused(
                self.flag
            )  # "?", "#", "//", "." or ".." in the key: no one key it stands for
        if not any(
            loc.bucket == bucket and loc.key.startswith(prefix) for bucket, prefix in self._s3
        ):
            raise _refused(self.flag)
        return canonical

    def read(self, uri: str) -> bytes:
        """The bytes at ``uri`` (checked again: the path may have changed since submission), at
        most ``max_bytes``; errors say what went wrong, never where."""
        target = self._target(uri)
        with public_errors("the input location", max_bytes=self.max_bytes):
            if target.folder is None:
                return storage.read_bytes(target.location, max_bytes=self.max_bytes)
            return storage.read_beneath(target.folder, target.location, max_bytes=self.max_bytes)

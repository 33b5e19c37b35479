"""The durable, ordered change log beside an artifact: a folder or an ``s3://`` prefix.

One record per accepted request, named by its sequence number (``000000000042.json``), holding
the changes in order. A record is written whole or not at all and never overwritten:

* a folder: the record goes to a temporary file, is flushed and ``fsync``-ed, then hard-linked
  to its name (``link`` fails if the name exists: two writers can never both take one
  number), and the folder is ``fsync``-ed before :meth:`ChangeLog.append` returns;
* S3: ``PutObject`` with ``If-None-Match: *`` (atomic, and refused if the key exists).

So a record that exists was acknowledged or about to be; a writer killed with -9 leaves at most
a temporary file, never a half record. A record linked whose folder's ``fsync`` then fails is
:class:`RecordUnconfirmed`: it exists, readers apply it, so the writer applies it too and says
so. An S3 put whose answer is lost (or whose retry is refused: the key exists) is known by what
the key holds: this record (written), another (taken), none (not written); when that read is
not answered either, :class:`RecordUnknown`. Readers (:meth:`ChangeLog.read_since`) take records in
order and stop at the first missing number.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from pathlib import Path
from typing import Any

from stygig import storage
from stygig.errors import StorageError

__all__ = [
    "ChangeLog",
    "ChangeLogGapError",
    "RecordUnconfirmed",
    "RecordUnknown",
    "SequenceTaken",
]

_NAME = re.compile(r"^(\d{12})\.json$")
#: How old a writer's temporary file must be to be a killed writer's (review, session 42).
STALE_TEMPORARY_S = 600.0
_WIDTH = 12


class SequenceTaken(Exception):
    """Another writer appended this sequence number first: catch up, then try the next."""


class RecordUnconfirmed(StorageError):
    """Record ``sequence`` is in the log, but the storage did not confirm that it is durable.

    It is read and applied like any other record (every replica will), so it is not a failed
    write: the writer applies it and tells its client, who must not send it again blindly.
    """

    http_status = 503
    code = "change_unconfirmed"

    def __init__(self, sequence: int) -> None:
        super().__init__(
            f"the change was logged as record {sequence} and is applied, but the change log's "
            "storage did not confirm that it is durable (sending it again logs it again)"
        )
        self.sequence = sequence


class RecordUnknown(StorageError):
    """The storage did not answer the write of record ``sequence``, nor the read that would
    have told whether it landed: the change may be in the log (then every replica, this one
    included, applies it when it next catches up) or not."""

    http_status = 503
    code = "change_unknown"

    def __init__(self, sequence: int) -> None:
        super().__init__(
            f"the change log's storage did not answer: the change may have been logged as "
            f"record {sequence} (then it is applied when the catalogue next catches up) or "
            "not; read the items back before sending it again"
        )
        self.sequence = sequence


def _name(sequence: int) -> str:
    return f"{sequence:0{_WIDTH}d}.json"


#: How many bytes of records one read takes at most (past the first record): what a replay
#: holds at once, however large the records a client's bulk requests made.
READ_BYTES = 32 << 20


class ChangeLogGapError(StorageError):
    """A log holding records past one that is missing (:meth:`ChangeLog.more_after`); the
    message names the numbers, never the log's location."""

    code = "change_log_gap"


class ChangeLog:
    """Append and read the records of one change log (see the module docstring)."""

    def __init__(self, location: str | Path) -> None:
        self.location = str(location)
        self.remote = storage.is_remote(self.location)
        if not self.remote:
            path = storage.parse(self.location).path
            assert path is not None
            self.folder: Path = Path(path)
            self._sweep_temporaries()

    def _sweep_temporaries(self) -> None:
        """Remove the temporary files of writers killed between writing a record and linking
        it (each up to a record's size, ~17 MB; a live writer's exists for milliseconds):
        those older than :data:`STALE_TEMPORARY_S`, when a log is opened (a server's start)."""
        try:
            entries = list(os.scandir(self.folder))
        except OSError:  # not there yet, or unreadable: the first write says so
            return
        old = time.time() - STALE_TEMPORARY_S
        for entry in entries:
            if entry.name.startswith(".record.") and entry.name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    if entry.stat(follow_symlinks=False).st_mtime < old:
                        os.unlink(entry.path)

    def __repr__(self) -> str:
        return "ChangeLog(...)"  # never a server path in a message

    # -- writing -----------------------------------------------------------------------------

    def append(self, sequence: int, changes: list[dict[str, Any]], **meta: Any) -> None:
        """Write record ``sequence`` durably; :class:`SequenceTaken` if it exists already,
        :class:`RecordUnconfirmed` if it was written but its durability is not confirmed."""
        body = json.dumps(
            {"sequence": sequence, **meta, "changes": changes}, separators=(",", ":")
        ).encode()
        if self.remote:
            self._append_s3(sequence, body)
        else:
            self._append_local(sequence, body)

    def _append_local(self, sequence: int, body: bytes) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = storage.new_temp_file(self.folder, ".record.", ".tmp")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(body)
                    handle.flush()
                    os.fsync(handle.fileno())
                try:
                    os.link(tmp, self.folder / _name(sequence))
                except FileExistsError:
                    raise SequenceTaken(sequence) from None
            finally:
                Path(tmp).unlink(missing_ok=True)
        except OSError as e:
            raise StorageError(f"the change log cannot be written: {e.strerror}") from None
        # The record exists from here on: a reader may apply it already.
        try:
            dir_fd = os.open(self.folder, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError:
            raise RecordUnconfirmed(sequence) from None

    def _append_s3(self, sequence: int, body: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        loc = storage.parse(storage.join(self.location, _name(sequence)))
        s3 = storage._s3()
        try:
            s3.put_object(
                Bucket=loc.bucket,
                Key=loc.key,
                Body=body,
                IfNoneMatch="*",
                ContentType="application/json",
            )
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            if code not in ("PreconditionFailed", "ConditionalRequestConflict", "412"):
                raise StorageError(f"the change log cannot be written ({code})") from None
            # Taken, perhaps by this very put: the client retries a put whose answer was
            # lost, and the retry finds the first one's record.
            if self._read_back(s3, loc, sequence) != body:
                raise SequenceTaken(sequence) from None
        except BotoCoreError:
            # No answer (a connection cut, a timeout): the put may have landed. What is at the
            # key says: this body (written), another (taken), nothing (not written).
            found = self._read_back(s3, loc, sequence)
            if found is None:
                raise StorageError("the change log cannot be written (no answer)") from None
            if found != body:
                raise SequenceTaken(sequence) from None

    @staticmethod
    def _read_back(s3: Any, loc: storage.Location, sequence: int) -> bytes | None:
        """The record at ``loc`` (``None``: there is none); :class:`RecordUnknown` when the
        storage does not answer this either."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            data: bytes = s3.get_object(Bucket=loc.bucket, Key=loc.key)["Body"].read()
        except ClientError as e:
            if str(e.response.get("Error", {}).get("Code", "")) in ("NoSuchKey", "404"):
                return None
            raise RecordUnknown(sequence) from None
        except BotoCoreError:
            raise RecordUnknown(sequence) from None
        return data

    # -- reading -----------------------------------------------------------------------------

    def sequences(self, after: int = 0) -> list[int]:
        """The record numbers above ``after``, in order."""
        if self.remote:
            loc = storage.parse(self.location)
            prefix = loc.key if not loc.key or loc.key.endswith("/") else loc.key + "/"
            out: list[int] = []
            pages = (
                storage._s3()
                .get_paginator("list_objects_v2")
                .paginate(Bucket=loc.bucket, Prefix=prefix, StartAfter=prefix + _name(after))
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    found = _NAME.match(obj["Key"][len(prefix) :])
                    if found and int(found.group(1)) > after:
                        out.append(int(found.group(1)))
            return sorted(out)
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return []
        except OSError as e:
            raise StorageError(f"the change log cannot be listed: {e.strerror}") from None
        return sorted(n for m in map(_NAME.match, names) if m and (n := int(m.group(1))) > after)

    def read(self, sequence: int) -> dict[str, Any]:
        """Record ``sequence`` as written."""
        uri = storage.join(self.location, _name(sequence))
        return self._parsed(sequence, storage.read_bytes(uri))

    def read_since(
        self, after: int, limit: int | None = None, max_bytes: int | None = READ_BYTES
    ) -> list[dict[str, Any]]:
        """The records after ``after``, in order, up to the first gap (a number not written
        yet), at most ``limit``, and no more once ``max_bytes`` of them are read (at least one:
        a record of 1,000 adds is ~17 MB parsed into more, so 64 at once held over 1 GB).

        A folder is probed by name (``after + 1``, ``after + 2``, ... until one is missing),
        so a writer's catch-up before every change costs one failed ``open``, not a listing
        of the whole log; an S3 prefix is listed from ``after``.
        """
        out: list[dict[str, Any]] = []
        read = 0

        def room() -> bool:
            return (limit is None or len(out) < limit) and (max_bytes is None or read < max_bytes)

        if not self.remote:
            sequence = after + 1
            while room():
                try:
                    data = (self.folder / _name(sequence)).read_bytes()
                except FileNotFoundError:
                    break
                except OSError as e:
                    raise StorageError(f"the change log cannot be read: {e.strerror}") from None
                out.append(self._parsed(sequence, data))
                read += len(data)
                sequence += 1
            return out
        expected = after + 1
        for sequence in self.sequences(after):
            if sequence != expected or not room():
                break
            data = storage.read_bytes(storage.join(self.location, _name(sequence)))
            out.append(self._parsed(sequence, data))
            read += len(data)
            expected += 1
        return out

    @staticmethod
    def _parsed(sequence: int, data: bytes) -> dict[str, Any]:
        """The record; one that is not a record of this number (edited or damaged by hand:
        this module writes none) is ``{"sequence": n, "changes": [], "unreadable": why}``,
        which every replay skips alike (review, session 42: it stopped every server sharing
        the log, and none could start again)."""
        try:
            record = json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return {"sequence": sequence, "changes": [], "unreadable": "not valid JSON"}
        if (
            not isinstance(record, dict)
            or record.get("sequence") != sequence
            or not isinstance(record.get("changes"), list)
        ):
            why = "not a record of its number"
            return {"sequence": sequence, "changes": [], "unreadable": why}
        return record

    def more_after(self, reached: int) -> bool:
        """Whether records follow record ``reached``: ``False`` when none is written, ``True``
        when the next one is (written since ``reached`` was read), and
        :class:`ChangeLogGapError` when later ones are but the next is missing. The next is
        asked for by name: a listing taken while writers append is no snapshot of the log (it
        may miss a record written before one it shows)."""
        later = self.sequences(reached)
        if not later:
            return False
        if storage.exists(storage.join(self.location, _name(reached + 1))):
            return True
        raise ChangeLogGapError(
            f"the change log holds records up to {later[-1]}, but record {reached + 1} is "
            "missing: restore it from a copy of the log before serving changes (a change "
            "written now would take its number, before records already acknowledged)"
        )

    def last_sequence(self) -> int:
        """The highest record number (0: an empty log)."""
        found = self.sequences(0)
        return found[-1] if found else 0

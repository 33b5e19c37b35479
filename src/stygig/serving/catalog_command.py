"""``stygig catalog``: change a living catalogue from the command line, and ``serve``'s flags
for it.

Subcommands (each against a running server, ``--url``, or an artifact folder, ``--artifact``,
whose change log is ``--change-log`` or the folder beside it named ``<artifact>.changes``)::

    stygig catalog add --photo P.jpg --field id=A1 --field category=jeans --field price=49
    stygig catalog remove A1 [A2 ...]
    stygig catalog update A1 --set available=false --set price=39
    stygig catalog apply changes.jsonl           (one change object per line; see
                                                   docs/living-catalog.md)
    stygig catalog status
    stygig catalog compact --artifact A --out A2  (folds the log into a new artifact version)

Only the standard library is imported here at import time (the CLI builds its parser from
every command module); the work is imported when a subcommand runs.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "CatalogSettings",
    "add_answer_flags",
    "add_catalog_flags",
    "answer_change_log",
    "apply_answer_change_log",
    "catalog_settings",
    "default_change_log",
    "register",
    "unapplied_changes_note",
]

#: The most bytes of changes one HTTP request carries (the server's body limit is 6 MB).
_MAX_REQUEST_BYTES = 4 * 1024 * 1024
_MAX_REQUEST_CHANGES = 500


@dataclass(frozen=True)
class CatalogSettings:
    """How ``stygig serve`` keeps its catalogue alive.

    Attributes:
        change_log: the change log (a folder or an ``s3://`` prefix).
        follow_interval_s: how often to apply what other replicas appended (``None``: never).
        photo_prefixes: locations (S3 prefixes, local folders) an added item's photo may name.
        watch: a pointer (file or S3 object) holding the artifact folder to serve; when it
            changes, the server hot-reloads that version (SIGHUP reloads too).
        watch_interval_s: how often the pointer is read.
    """

    change_log: str | None = None
    follow_interval_s: float | None = 1.0
    photo_prefixes: tuple[str, ...] = ()
    watch: str | None = None
    watch_interval_s: float = 5.0

    def __post_init__(self) -> None:
        from stygig.errors import InvalidOptionsError

        if self.follow_interval_s is not None and not 0.01 <= self.follow_interval_s <= 3600:
            raise InvalidOptionsError("--follow-interval must be 0.01 to 3600 seconds (0: off)")
        if not 0.1 <= self.watch_interval_s <= 3600:
            raise InvalidOptionsError("--watch-interval must be 0.1 to 3600 seconds")


def default_change_log(artifact: str | Path) -> str:
    """The change log beside an artifact folder: ``<folder>.changes``."""
    text = str(artifact).rstrip("/")
    return text + ".changes"


def add_answer_flags(p: argparse.ArgumentParser) -> None:
    """The change-log flags of the commands that answer from an artifact folder (``recommend``,
    ``batch``): its changes are applied unless they say otherwise."""
    p.add_argument(
        "--change-log",
        help="answer with this change log's changes applied (a folder or s3:// prefix; "
        "default: <artifact>.changes when that folder exists, where `stygig catalog "
        "--artifact` writes)",
    )
    p.add_argument(
        "--no-change-log",
        action="store_true",
        help="answer from the artifact as built, without its change log's changes",
    )


def answer_change_log(artifact: str | Path, given: str | None, *, use: bool = True) -> str | None:
    """The change log a command answering from ``artifact`` applies: ``given``
    (``--change-log``), else ``<artifact>.changes`` when that folder exists; ``None`` when
    there is none or ``use`` is false (``--no-change-log``)."""
    from stygig import storage
    from stygig.errors import InvalidOptionsError

    if not use:
        if given:
            raise InvalidOptionsError("--change-log and --no-change-log do not go together")
        return None
    if given:
        if not storage.is_remote(given) and not Path(given).is_dir():
            raise InvalidOptionsError(f"--change-log {given}: no such change log folder")
        return given
    if storage.is_remote(str(artifact)):
        return None
    where = default_change_log(artifact)
    return where if Path(where).is_dir() else None


def apply_answer_change_log(
    recommender: Any, artifact: str | Path, where: str | None
) -> str | None:
    """Bring ``recommender``'s catalogue up to the change log ``where``
    (:func:`answer_change_log`), as a server with ``--change-log`` would answer; what to tell
    the user on standard error: the records applied, or, answering from ``artifact`` as built
    (``where`` ``None``), the records its log holds that the answers leave out (``None``:
    nothing to say)."""
    from stygig.catalog.changelog import ChangeLog
    from stygig.living import replay

    if where is None:
        return unapplied_changes_note(artifact)
    applied = replay(recommender, ChangeLog(where))
    if not applied:
        return None
    snap = recommender.snapshot
    return (
        f"applied {applied} change record(s) from {where}: catalogue {snap.catalog_version}, "
        f"{snap.live_items} items (--no-change-log: the artifact as built)"
    )


def unapplied_changes_note(artifact: str | Path) -> str | None:
    """What to tell the user of a command that answers from ``artifact`` as built
    (``--no-change-log``, a server without ``--change-log``) while its change log (``<artifact>.changes``) holds records:
    ``stygig catalog status`` counts them, this command's answers do not."""
    from stygig import storage
    from stygig.catalog.changelog import ChangeLog
    from stygig.errors import StygigError

    if storage.is_remote(str(artifact)):
        return None
    where = default_change_log(artifact)
    if not Path(where).is_dir():
        return None
    try:
        count = len(ChangeLog(where).sequences())
    except StygigError:
        return None
    if not count:
        return None
    return (
        f"note: {where} holds {count} change record(s) that these answers do not include "
        "(the artifact as built)"
    )


def add_catalog_flags(p: argparse.ArgumentParser) -> None:
    """``serve``'s living-catalogue flags."""
    p.add_argument(
        "--change-log",
        default=os.environ.get("STYGIG_CHANGE_LOG"),
        help="accept catalogue changes, logged here (a folder or s3:// prefix; default "
        "$STYGIG_CHANGE_LOG); replayed at start, followed while serving",
    )
    p.add_argument(
        "--follow-interval",
        type=float,
        default=1.0,
        help="seconds between reads of the change log for other replicas' changes (0: off)",
    )
    p.add_argument(
        "--catalog-photos",
        action="append",
        default=[],
        help="a folder or s3:// prefix an added item's photo may name (repeat)",
    )
    p.add_argument(
        "--watch",
        help="a file or s3:// object holding the artifact folder to serve: a new one is "
        "hot-reloaded (as on SIGHUP)",
    )
    p.add_argument("--watch-interval", type=float, default=5.0, help="seconds between reads")


def catalog_settings(args: argparse.Namespace) -> CatalogSettings | None:
    """The settings ``add_catalog_flags`` parsed (``None``: no living catalogue)."""
    if not args.change_log and not args.watch:
        return None
    return CatalogSettings(
        change_log=args.change_log or None,
        follow_interval_s=args.follow_interval or None,
        photo_prefixes=tuple(args.catalog_photos),
        watch=args.watch,
        watch_interval_s=args.watch_interval,
    )


# -- stygig catalog ------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    """Add ``catalog`` and its subcommands to ``stygig``'s argparse subparsers."""
    p = subparsers.add_parser("catalog", help="change a living catalogue (add, remove, update)")
    sub = p.add_subparsers(dest="catalog_command", required=True)

    def target(q: argparse.ArgumentParser) -> None:
        q.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8080")
        q.add_argument("--artifact", help="an artifact folder (changes go to its change log)")
        q.add_argument("--change-log", help="the change log (default: <artifact>.changes)")
        q.add_argument("--timeout", type=float, default=120.0, help="seconds per HTTP request")
        q.add_argument("--json", action="store_true", help="print the result as JSON")

    q = sub.add_parser("add", help="add (or replace) one item with its photo")
    q.add_argument("--photo", required=True, help="the item's photo (a local file)")
    q.add_argument("--field", action="append", default=[], help="a row field: name=value")
    target(q)
    q.set_defaults(func=_cmd_add)

    q = sub.add_parser("remove", help="remove items")
    q.add_argument("ids", nargs="+")
    target(q)
    q.set_defaults(func=_cmd_remove)

    q = sub.add_parser("update", help="change an item's fields (stock, price, attributes)")
    q.add_argument("id")
    q.add_argument("--set", action="append", default=[], required=True, help="name=value")
    target(q)
    q.set_defaults(func=_cmd_update)

    q = sub.add_parser("apply", help="apply a JSON Lines file of changes")
    q.add_argument("file", help="a JSON Lines file of changes, or - for standard input")
    q.add_argument(
        "--from-line",
        type=int,
        default=1,
        metavar="N",
        help="skip the file's lines before N (resume after a refusal: the error says which "
        "lines went in and the N to give)",
    )
    target(q)
    q.set_defaults(func=_cmd_apply)

    q = sub.add_parser("status", help="the catalogue version (artifact + sequence)")
    target(q)
    q.set_defaults(func=_cmd_status)

    q = sub.add_parser("compact", help="fold the change log into a new artifact version")
    q.add_argument("--artifact", required=True)
    q.add_argument("--change-log", help="the change log (default: <artifact>.changes)")
    q.add_argument("--out", required=True, help="the new artifact folder")
    q.add_argument("--point", help="write the new folder's path to this watch pointer")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_cmd_compact)


def _value(text: str) -> Any:
    """``--set`` values: JSON when they parse (``false``, ``3``, ``null``), else text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _pairs(pairs: list[str], flag: str) -> dict[str, Any]:
    from stygig.errors import InvalidOptionsError

    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise InvalidOptionsError(f"{flag} takes name=value")
        out[name.strip()] = _value(value)
    return out


def _cmd_add(args: argparse.Namespace) -> int:
    row = _pairs(args.field, "--field")
    photo = _read_photo(args.photo)
    change = {"op": "add", "item": row, "image_b64": base64.b64encode(photo).decode()}
    return _send(args, [change])


def _cmd_remove(args: argparse.Namespace) -> int:
    return _send(args, [{"op": "remove", "id": i} for i in args.ids])


def _cmd_update(args: argparse.Namespace) -> int:
    return _send(args, [{"op": "update", "id": args.id, "set": _pairs(args.set, "--set")}])


#: The largest changes file `catalog apply` reads (changes with photos inline are large).
CHANGES_FILE_MAX_BYTES = 512 << 20


def _cmd_apply(args: argparse.Namespace) -> int:
    from stygig.catalog.changes import json_line
    from stygig.errors import InputError, InvalidOptionsError, StygigError
    from stygig.storage import read_bytes
    from stygig.unique_keys import DuplicateKeyError

    path = Path(args.file)
    try:
        if args.file == "-":  # standard input, as a pipe: `... | stygig catalog apply -`
            raw = sys.stdin.buffer.read(CHANGES_FILE_MAX_BYTES + 1)
            if len(raw) > CHANGES_FILE_MAX_BYTES:
                raise InputError(f"over {CHANGES_FILE_MAX_BYTES:,} bytes")
            path = Path.cwd() / "-"  # photos named in it are relative to this folder
        else:
            # Bounded, and a FIFO or a device refused rather than waited on (review, session
            # 36: a FIFO hung the command and the file was read whole, whatever its size).
            raw = read_bytes(path, max_bytes=CHANGES_FILE_MAX_BYTES)
        lines = raw.decode("utf-8-sig").split("\n")  # JSON Lines; a BOM is dropped
    except UnicodeDecodeError:
        raise InputError("cannot read the changes file: it is not UTF-8 text") from None
    except (OSError, StygigError) as e:
        raise InputError(f"cannot read the changes file: {e}") from None
    if args.from_line < 1:
        raise InvalidOptionsError("--from-line must be 1 or more")
    changes: list[_Line] = []
    for number, line in enumerate(lines, 1):
        if number < args.from_line or not line.strip():
            continue
        try:
            # A key given twice is refused here as the server refuses it (review of session
            # 42's fixes: the last one was applied from a folder)
            change = json_line(line, number)
        except DuplicateKeyError as e:
            raise InputError(f"line {number}: {e.message}", code=e.code) from None
        changes.append(_Line(number, _inline_photo(change, path.parent, args.url is not None)))
    return _send(args, changes)


@dataclass(frozen=True)
class _Line:
    """One change of a changes file and its line number there."""

    number: int
    change: Any
    word: str = "line"  # "change" for the changes a command's arguments make

    @property
    def label(self) -> str:
        return f"{self.word} {self.number}"


def _refused(part: list[_Line], message: str, done: dict[str, Any] | None) -> str:
    """What to tell the operator when the changes of ``part`` (one request or group, applied
    all or nothing) were refused after ``done`` (the answer of the last part that went in):
    the refused line by its number in the file, what went in before it and how to resume.

    The server and the living catalogue number a request's changes from 1 (``change N: ...``,
    ``line N: ...``); that is put back as the file's line."""
    found = re.match(r"(?:change|line) (\d+)(:.*)", message, re.S)
    if found and 1 <= int(found.group(1)) <= len(part):
        message = f"{part[int(found.group(1)) - 1].label}{found.group(2)}"
    lines = f"lines {part[0].number}-{part[-1].number}"
    if part[0].word != "line":  # a command's own changes: one request
        return message
    if done is None:
        return f"{message} (nothing was applied: {lines} go in together or not at all)"
    return (
        f"{message}; none of {lines} was applied, but the lines before line {part[0].number} "
        f"were ({done['applied']} change(s); catalogue {done.get('catalog_version')}): once "
        f"it is fixed, send the rest with --from-line {part[0].number}"
    )


#: The error codes of a change whose record the storage did not confirm: it went in
#: (``change_unconfirmed``) or may have (``change_unknown``), so it is not "refused".
_UNSURE = {"change_unconfirmed": True, "change_unknown": False}


def _unsure(part: list[_Line], message: str, went_in: bool) -> str:
    """What to tell the operator when the storage did not confirm the record of ``part``: it
    went in (``went_in``) or may have, so resuming must not send it twice."""
    if part[0].word != "line":  # a command's own changes: one request
        return message
    lines, nxt = f"lines {part[0].number}-{part[-1].number}", part[-1].number + 1
    if went_in:
        return f"{message}; {lines} went in: send the rest with --from-line {nxt}"
    return (
        f"{message}; {lines} may have gone in: once the storage answers, `stygig catalog "
        f"status` says (its sequence below the record named: resume with --from-line "
        f"{part[0].number}, else with --from-line {nxt})"
    )


def _inline_photo(change: Any, folder: Path, remote: bool) -> Any:
    """For a server: a local photo path an add names is read here and sent as bytes."""
    if not remote or not isinstance(change, dict) or change.get("op") != "add":
        return change
    if "image_b64" in change:
        return change
    item: dict[str, Any] = change["item"] if isinstance(change.get("item"), dict) else {}
    location = change.get("image", item.get("image"))
    if isinstance(location, str) and "://" not in location:
        photo = _read_photo(folder / location)
        change = {k: v for k, v in change.items() if k != "image"}
        change["item"] = {k: v for k, v in item.items() if k != "image"}
        change["image_b64"] = base64.b64encode(photo).decode()
    return change


def _read_photo(path: str | Path) -> bytes:
    """A photo file, bounded by the image byte limit; a FIFO or a device is refused, not read
    (a FIFO hung the command, /dev/zero filled its memory)."""
    from stygig.images import DEFAULT_LIMITS
    from stygig.storage import read_bytes

    return read_bytes(path, max_bytes=DEFAULT_LIMITS.max_bytes)


def _send(args: argparse.Namespace, changes: list[_Line] | list[Any]) -> int:
    """Send a file's changes, or a command's (numbered as changes)."""
    changes = [
        c if isinstance(c, _Line) else _Line(n, c, "change") for n, c in enumerate(changes, 1)
    ]
    result = _send_http(args, changes) if args.url else _send_local(args, changes)
    _print(args, result)
    return 0


def _print(args: argparse.Namespace, result: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"catalogue {result.get('catalog_version')}: {result.get('items')} items"
            + (f", {result['applied']} change(s) applied" if "applied" in result else "")
        )


def _batches(changes: list[_Line]) -> list[tuple[list[_Line], bytes]]:
    """The changes in requests of at most 500 changes or 4 MB, each with its lines."""
    out: list[tuple[list[_Line], bytes]] = []
    part: list[_Line] = []
    lines: list[bytes] = []
    size = 0
    for change in changes:
        line = json.dumps(change.change, separators=(",", ":")).encode() + b"\n"
        if lines and (size + len(line) > _MAX_REQUEST_BYTES or len(lines) >= _MAX_REQUEST_CHANGES):
            out.append((part, b"".join(lines)))
            part, lines, size = [], [], 0
        part.append(change)
        lines.append(line)
        size += len(line)
    if lines:
        out.append((part, b"".join(lines)))
    return out


def _send_http(args: argparse.Namespace, changes: list[_Line]) -> dict[str, Any]:
    import httpx

    from stygig.auth import bearer_headers
    from stygig.errors import ServerError, StygigError

    url = args.url.rstrip("/")
    headers = {**bearer_headers(), "content-type": "application/x-ndjson"}
    result: dict[str, Any] | None = None
    applied = 0
    with httpx.Client(timeout=args.timeout) as client:
        if not changes:
            return _get_status(client, url)
        for part, body in _batches(changes):
            try:
                r = client.post(f"{url}/v1/catalog/changes", content=body, headers=headers)
            except httpx.HTTPError as e:
                # A request sent and not answered (a timeout) may have been applied.
                where = f"lines {part[0].number}-{part[-1].number}"
                before = (
                    f"the lines before line {part[0].number} were applied ({applied} change(s)); "
                    if result is not None
                    else ""
                )
                raise ServerError(
                    f"the server could not be reached ({type(e).__name__}) with {where}: "
                    f"{before}whether {where} were applied, `stygig catalog status` and the "
                    "items say"
                ) from None
            data = (
                r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
            )
            if r.status_code != 200:
                err = data.get("error", {}) if isinstance(data, dict) else {}
                code = str(err.get("code", "server_error"))
                if code in _UNSURE:
                    message = _unsure(part, str(err.get("message", "")), _UNSURE[code])
                    raise ServerError(f"the server's change log ({r.status_code}): {message}")
                message = _refused(part, str(err.get("message", "")), result)
                error = StygigError(
                    f"the server refused the changes ({r.status_code}): {message}",
                    code=code,
                )
                error.exit_code = 2 if r.status_code < 500 else 7
                raise error
            applied += int(data.get("applied", 0))
            result = {**data, "applied": applied}
    assert result is not None  # there was a change, so a request
    return result


def _get_status(client: Any, url: str) -> dict[str, Any]:
    from stygig.auth import bearer_headers
    from stygig.errors import ServerError

    r = client.get(f"{url}/v1/catalog/version", headers=bearer_headers())
    if r.status_code != 200:
        raise ServerError(f"the server answered {r.status_code}")
    data: dict[str, Any] = r.json()
    return data


def _live(args: argparse.Namespace, *, writing: bool = True) -> Any:
    from stygig.artifact import Artifact
    from stygig.catalog.changelog import ChangeLog
    from stygig.engine import Recommender
    from stygig.errors import InvalidOptionsError
    from stygig.images import DEFAULT_LIMITS
    from stygig.living import LiveCatalog
    from stygig.storage import read_bytes

    if not args.artifact:
        raise InvalidOptionsError("give --url (a running server) or --artifact (a folder)")
    log = ChangeLog(args.change_log or default_change_log(args.artifact))
    live = LiveCatalog(
        Recommender(Artifact.load(args.artifact)),
        log,
        # The operator's own command: any location it can read (a photo's size is bounded).
        load=lambda loc: read_bytes(loc, max_bytes=DEFAULT_LIMITS.max_bytes),
    )
    if not writing:  # `status`: what the records before any gap make
        live.catch_up()
        return live
    # Caught up, and refused over a gap as a server is: a change written into a gap would be
    # ordered before records already acknowledged (review, session 52: two replicas then
    # answered differently under one catalog_version).
    live.check_no_gap()
    return live


def _send_local(args: argparse.Namespace, changes: list[_Line]) -> dict[str, Any]:
    from stygig.catalog.changelog import RecordUnconfirmed, RecordUnknown
    from stygig.catalog.changes import MAX_CHANGES, parse_change
    from stygig.errors import StygigError

    live = _live(args)
    base = Path(args.file).parent if getattr(args, "file", None) else Path.cwd()
    requests = []
    for line in changes:
        change = line.change
        if isinstance(change, dict) and change.get("op") == "add" and "image_b64" not in change:
            item: dict[str, Any] = change["item"] if isinstance(change.get("item"), dict) else {}
            location = change.get("image", item.get("image"))
            # (a NUL is refused by the change's own check, not a resolve's ValueError)
            if isinstance(location, str) and "://" not in location and "\0" not in location:
                resolved = str((base / location).resolve())
                change = {**change, "image": resolved}
                if "image" in item:  # the same location, said the same way in both places
                    change["item"] = {**item, "image": resolved}
        requests.append(parse_change(change, line.label))
    done: dict[str, Any] | None = None
    applied = 0
    for start in range(0, len(requests), MAX_CHANGES):
        group = requests[start : start + MAX_CHANGES]
        try:
            live.submit(group)
        except (RecordUnconfirmed, RecordUnknown) as e:
            went_in = isinstance(e, RecordUnconfirmed)
            e.message = _unsure(changes[start : start + MAX_CHANGES], e.message, went_in)
            e.args = (e.message,)
            raise
        except StygigError as e:
            e.message = _refused(changes[start : start + MAX_CHANGES], e.message, done)
            e.args = (e.message,)
            raise
        applied += len(group)
        done = _status_of(live.snapshot) | {"applied": applied}
    return _status_of(live.snapshot) | {"applied": applied}


def _status_of(snap: Any) -> dict[str, Any]:
    return {
        "catalog_version": snap.catalog_version,
        "artifact_version": snap.version,
        "sequence": snap.sequence,
        "items": snap.live_items,
    }


def _cmd_status(args: argparse.Namespace) -> int:
    if args.url:
        import httpx

        with httpx.Client(timeout=args.timeout) as client:
            result = _get_status(client, args.url.rstrip("/"))
    else:
        result = _status_of(_live(args, writing=False).snapshot)
    _print(args, result)
    return 0


def _cmd_compact(args: argparse.Namespace) -> int:
    from stygig.catalog.changelog import ChangeLog
    from stygig.compaction import compact

    log = ChangeLog(args.change_log or default_change_log(args.artifact))
    result = compact(args.artifact, log, args.out)
    if args.point:
        from stygig.storage import write_bytes

        write_bytes(args.point, str(Path(args.out).resolve()).encode())
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"compacted {result['parent']} + {result['last_sequence']} changes -> "
            f"{result['version']} ({result['items']} items)",
            file=sys.stdout,
        )
        if result["skipped"]:
            print(
                f"skipped {len(result['skipped'])} record(s) that no longer applied, as the "
                f"servers did: sequence {', '.join(map(str, result['skipped'][:20]))}",
                file=sys.stdout,
            )
    return 0

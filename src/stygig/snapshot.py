"""One state of a living catalogue, and the next state after some changes.

A :class:`CatalogSnapshot` is everything a request reads about the catalogue: the artifact's
view (items, colours, embeddings, index, positions), the columns and filters, the learned
scorer, the version. Snapshots are never written once published: :func:`apply_changes` makes
the next one (copy-on-write of what changed, shared arrays for the rest), and the recommender
swaps its reference in one assignment, so a request that took a snapshot at its start sees the
whole catalogue before a change or the whole catalogue after it, never half of one.

Rows only ever grow: a removed item's row is a tombstone, a replaced item gets a new row at the
end (its old row dies), so row numbers in a running request stay valid. Appended vectors go
into spare capacity after the rows published snapshots can see, so adding an item copies no
embeddings (until the capacity doubles).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from stygig.answer import ArtifactRef
from stygig.artifact import Artifact
from stygig.catalog.changes import CatalogChange, change_from_record, merge_update
from stygig.catalog.loaders import MISSING_WORDS
from stygig.catalog.schema import Item
from stygig.columns import CatalogColumns
from stygig.compat.scorer import LearnedScorer
from stygig.errors import CatalogFullError, InvalidOptionsError, NotFoundError, StygigError
from stygig.index import IndexRows, LiveIndex, is_exhaustive
from stygig.rowfile import FileRows
from stygig.rows import Overlay, Rows, SpareRows, StackedRows
from stygig.scan import Int8Scan, Scan, make_scan

if TYPE_CHECKING:
    from stygig.catalog.changelog import ChangeLog

__all__ = [
    "CatalogSnapshot",
    "apply_changes",
    "apply_record",
    "artifact_version",
    "snapshot_of",
]

#: How many recent stock changes a snapshot remembers (for pages asking "what sold out
#: since I loaded?").
RECENT_STOCK_EVENTS = 10_000
#: What changes may grow a living catalogue to (a built catalogue may start above a bound;
#: changes then add no more): distinct genders, usages and filterable names (each a column
#: rebuilt, a list in /v1/config and in messages), and rows that died since the artifact was
#: built or compacted (a replaced item's old row keeps its vector until compaction), at most
#: this many or as many as there are live items, whichever is more: past it, changes that
#: replace an item's row (an add of an id it has, a category change) are refused; others are
#: taken.
MAX_GENDERS = 16
MAX_USAGES = 64
MAX_FILTERABLE = 256
MAX_DEAD_ROWS = 20_000


def artifact_version(manifest: dict[str, Any]) -> str:
    """The artifact's version: the manifest's ``version`` when it has one (compaction writes
    it), else the first 12 hex digits of the sha256 of its file checksums (so two copies of
    one build have one version)."""
    given = manifest.get("version")
    if isinstance(given, str) and given:
        return given
    files = json.dumps(manifest.get("files", {}), sort_keys=True).encode()
    return hashlib.sha256(files).hexdigest()[:12]


@dataclass(frozen=True)
class CatalogSnapshot:
    """The catalogue as one request sees it (never written once published)."""

    artifact: Artifact  # items / colours / embeddings / index / positions of this state
    columns: CatalogColumns
    exact: bool
    learned: LearnedScorer | None
    ref: ArtifactRef
    version: str  # the artifact version
    sequence: int  # the last change-log record applied (0: none)
    thumbnails: Mapping[str, bytes] = field(default_factory=dict)  # changed items' JPEGs
    # (sequence, item id, in stock?) of recent stock changes, oldest first
    stock_events: tuple[tuple[int, str, bool], ...] = ()
    buffer: SpareRows | None = None  # the embeddings' (or added rows') backing rows
    # an exact catalogue's rows in int8 as loaded (rows appended since are scanned in float32)
    scan: Int8Scan | None = None
    # stock_events hold every stock change after this record (those before were folded into
    # the artifact by compaction, or dropped past RECENT_STOCK_EVENTS)
    events_from: int = 0

    @property
    def catalog_version(self) -> str:
        """``"<artifact version>+<sequence>"``: equal on replicas that applied the same log."""
        return f"{self.version}+{self.sequence}"

    @functools.cached_property
    def rows(self) -> Any:
        """The vectors a request reads besides the search (MMR's redundancy, exact scores of a
        filtered candidate set, an item query's own vector, outfit scores): the embeddings,
        except under an approximate index whose embeddings are not in memory and which keeps
        its own copy of every row (an ``ivfpq`` catalogue's float16 rows, already in the page
        cache for re-ranking): then that copy (:class:`~stygig.index.IndexRows`), so requests
        never read ``embeddings.npy``. (Changes still do: a learned scorer is made again from
        every row when items are added, and compaction reads the exact rows.)"""
        emb = self.artifact.embeddings
        if self.exact or isinstance(emb, np.ndarray):  # in memory or mapped: read as it is
            return emb
        return IndexRows.of(self.artifact.index) or emb

    @property
    def live_items(self) -> int:
        return len(self.artifact.positions)

    def is_live(self, pos: int) -> bool:
        """Whether row ``pos`` is an item of the catalogue now (not removed nor replaced)."""
        index = self.artifact.index
        return not (index.n_removed and index.removed is not None and index.removed[pos])


def snapshot_of(
    artifact: Artifact,
    *,
    encoder: str,
    compat_mode: str,
    columns: CatalogColumns | None = None,
    sequence: int | None = None,
    scan: Scan = "auto",
) -> CatalogSnapshot:
    """The first snapshot of a freshly loaded artifact (no changes applied on top); ``scan``:
    how an exact catalogue's rows are scanned (:func:`stygig.scan.make_scan`)."""
    columns = columns or CatalogColumns(artifact)
    exact = is_exhaustive(artifact.index)
    version = artifact_version(artifact.manifest)
    folded = int((artifact.manifest.get("catalog") or {}).get("last_sequence", 0) or 0)
    seq = folded if sequence is None else sequence
    return CatalogSnapshot(
        artifact=artifact,
        columns=columns,
        exact=exact,
        learned=_learned(artifact, columns, artifact.embeddings, compat_mode),
        ref=ArtifactRef(encoder, len(artifact.positions), version, seq, f"{version}+{seq}"),
        version=version,
        sequence=seq,
        scan=make_scan(artifact.embeddings, scan) if exact else None,
        events_from=seq,
    )


def _learned(
    artifact: Artifact, columns: CatalogColumns, embeddings: np.ndarray, compat_mode: str
) -> LearnedScorer | None:
    model = artifact.compat
    if model is None or compat_mode == "rules":
        return None
    return LearnedScorer(
        model,
        embeddings,
        columns.rgb,
        columns.category_names,
        columns.category_codes,
        [i.id for i in artifact.items],
        compat_mode,
        attributes=[i.attributes for i in artifact.items],
    )


def apply_changes(
    snap: CatalogSnapshot,
    changes: Sequence[CatalogChange],
    sequence: int,
    *,
    compat_mode: str = "rules",
    bounded: bool = True,
) -> CatalogSnapshot:
    """The snapshot after ``changes`` (in order), at change-log record ``sequence``.

    ``bounded``: refuse changes past the living catalogue's bounds (:data:`MAX_GENDERS`, ...,
    an item's attributes): for changes being submitted. A replay of the log (``False``)
    applies what was accepted, whatever the bounds are now.

    Every change is checked against the catalogue as the earlier ones left it: removing or
    updating an unknown id is :class:`NotFoundError` (404), an update that makes the row invalid
    (an unknown category, a bad price) :class:`InvalidOptionsError` (422). On any error nothing
    changes: ``snap`` is untouched and no new snapshot exists.
    """
    art = snap.artifact
    n = len(art.items)
    # This batch's changes, kept beside the catalogue until the end: row -> replaced item,
    # appended items and colours, id -> row (None: removed), id -> thumbnail (None: dropped).
    # The catalogue's own containers are then changed once (:mod:`stygig.rows`: at the cost
    # of what changed, not of the catalogue).
    replaced: dict[int, Any] = {}
    new_items: list[Any] = []
    new_colors: list[dict[str, Any]] = []
    moved: dict[str, int | None] = {}
    thumbs: dict[str, bytes | None] = {}

    def item_at(pos: int) -> Any:
        return new_items[pos - n] if pos >= n else replaced.get(pos) or art.items[pos]

    def color_at(pos: int) -> dict[str, Any]:
        return new_colors[pos - n] if pos >= n else art.colors[pos]

    def position(item_id: str) -> int | None:
        return moved[item_id] if item_id in moved else art.positions.get(item_id)

    dim = art.embeddings.shape[1]
    added: list[np.ndarray] = []  # vectors of appended rows, in order
    labels: list[str] = []  # their outfit slots
    dead: list[int] = []
    superseded: list[int] = []  # rows that died for a new row of their item (kept: memory)
    touched: list[int] = []
    events: list[tuple[int, str, bool]] = []
    new_attributes: set[int] = set()  # rows whose attributes changed (a compat model input)
    taxonomy = art.taxonomy

    def append(item: Any, vector: np.ndarray, color: dict[str, Any]) -> None:
        old = position(item.id)
        if old is not None:
            dead.append(old)
            superseded.append(old)
        row = n + len(new_items)
        new_items.append(item)
        new_colors.append(color)
        added.append(np.asarray(vector, np.float32).reshape(dim))
        labels.append(taxonomy.slot_of(item.category))
        moved[item.id] = row
        touched.append(row)

    @functools.cache
    def gone_before() -> frozenset[str]:
        """Ids whose latest recent stock event before these changes is "unavailable"."""
        last = {item_id: in_stock for _, item_id, in_stock in snap.stock_events}
        return frozenset(i for i, ok in last.items() if not ok)

    def gone_lately(item_id: str) -> bool:
        """Whether ``item_id``'s latest recent stock event says "unavailable" (a removal)."""
        for _, seen, in_stock in reversed(events):
            if seen == item_id:
                return not in_stock
        return item_id in gone_before()

    for k, change in enumerate(changes):
        pos = position(change.id)
        if change.op == "add":
            assert change.item is not None and change.vector is not None
            if change.vector.shape[-1] != dim:
                raise InvalidOptionsError(f"change {k + 1}: the vector has the wrong dimension")
            was = item_at(pos).in_stock if pos is not None else None
            if was is None and gone_lately(change.id):
                was = False  # removed earlier (a page marked it sold out): back now
            append(change.item, change.vector, dict(change.color or {}))
            if change.thumbnail:
                thumbs[change.id] = change.thumbnail
            if was is not None and was != change.item.in_stock:
                events.append((sequence, change.id, change.item.in_stock))
            continue
        if pos is None:
            raise NotFoundError(
                f"change {k + 1}: the item id is not in the catalogue", code="unknown_item"
            )
        if change.op == "remove":
            dead.append(pos)
            moved[change.id] = None
            thumbs[change.id] = None
            events.append((sequence, change.id, False))
            continue
        old = item_at(pos)
        new = merge_update(
            old,
            change.fields,
            taxonomy,
            where=f"change {k + 1}",
            bounded=bounded,
            missing=frozenset() if change.literal else MISSING_WORDS,
        )
        if new.attributes != old.attributes:
            new_attributes.add(pos)
        if new.in_stock != old.in_stock:
            events.append((sequence, change.id, new.in_stock))
        if new.category != old.category:
            # Another slot: the row moves (a new row in its new slot's part, the old one dies).
            append(new, _row_vector(snap, added, pos, dim), color_at(pos))
        elif pos >= n:
            new_items[pos - n] = new
            touched.append(pos)
        else:
            replaced[pos] = new
            touched.append(pos)

    # A row that died keeps its vector until compaction, never its text: no answer reads a
    # dead row, and a replaced item's 64 attributes of 2,000 characters made the bound on dead
    # rows one of gigabytes (about 130 KiB a row, audit of session 46).
    for pos in dead:
        if pos >= n:
            new_items[pos - n] = _tombstone(new_items[pos - n])
        else:
            replaced[pos] = _tombstone(item_at(pos))
    items = _rows(art.items).changed(replaced, new_items)
    colors = _rows(art.colors).changed({}, new_colors) if new_colors else art.colors
    positions = _overlay(art.positions).changed(
        {i: p for i, p in moved.items() if p is not None},
        removed=[i for i, p in moved.items() if p is None and i in art.positions],
    )
    thumbnails = _overlay(snap.thumbnails)
    if thumbs:
        thumbnails = thumbnails.changed(
            {i: b for i, b in thumbs.items() if b is not None},
            removed=[i for i, b in thumbs.items() if b is None and i in thumbnails],
        )
    buffer, embeddings = _grown(snap, art.embeddings, added, dim)
    index = art.index if isinstance(art.index, LiveIndex) else LiveIndex(art.index, art.embeddings)
    index = index.changed(embeddings, dead, labels)
    artifact = dataclasses.replace(
        art, items=items, colors=colors, embeddings=embeddings, index=index, positions=positions
    )
    if bounded:
        _check_growth(snap, artifact, touched, superseding=bool(superseded))
    # Dead rows too: their columns' values (a brand, the attribute caches) are let go with
    # their text, and the columns stay those a fresh build of these rows makes.
    columns = snap.columns.evolve(artifact, [*touched, *dead])
    # The learned scorer projects every row (O(items x dim)): made again when rows were
    # appended. Attributes changed in place (a model that reads them) re-project their rows
    # alone; other updates (stock, price) change none of its inputs (embeddings, colours,
    # categories, ids, attributes), so a stream of them costs no projection.
    learned = snap.learned
    if learned is not None and added:
        learned = _learned(artifact, columns, embeddings, compat_mode)
    elif learned is not None and new_attributes:  # a no-op for a model without attributes
        rows = np.array(sorted(new_attributes), np.int64)
        learned = learned.with_attributes(
            rows, embeddings[rows], columns.rgb[rows], [items[int(r)].attributes for r in rows]
        )
    every = (*snap.stock_events, *events)
    recent = every[-RECENT_STOCK_EVENTS:]
    dropped = every[-RECENT_STOCK_EVENTS - 1][0] if len(every) > RECENT_STOCK_EVENTS else 0
    ref = dataclasses.replace(
        snap.ref,
        items=len(positions),
        sequence=sequence,
        catalog=f"{snap.version}+{sequence}",
    )
    return dataclasses.replace(
        snap,
        artifact=artifact,
        columns=columns,
        learned=learned,
        ref=ref,
        sequence=sequence,
        thumbnails=thumbnails,
        stock_events=recent,
        events_from=max(snap.events_from, dropped),
        buffer=buffer,
    )


def _check_growth(
    snap: CatalogSnapshot, artifact: Artifact, touched: Sequence[int], *, superseding: bool
) -> None:
    """Refuse (409 ``catalog_full``) changes that would take the catalogue past a bound
    (:data:`MAX_GENDERS`, ...): checked before any column is rebuilt, so a refused change
    costs nothing of the catalogue's size."""
    cols, items = snap.columns, artifact.items
    fresh = [items[r] for r in set(touched)]
    grown = (
        ("genders", cols.gender_names, {i.gender for i in fresh} - {None}, MAX_GENDERS),
        ("usages", cols.usage_names, {i.usage for i in fresh} - {None}, MAX_USAGES),
        (
            "filterable names",
            cols.filterable,
            set().union(*(i.attributes.keys() for i in fresh)),
            MAX_FILTERABLE,
        ),
    )
    for what, known, values, bound in grown:
        new = len(values - set(known))
        if new and len(known) + new > bound:
            raise CatalogFullError(
                f"a living catalogue holds at most {bound} {what} (it has {len(known)}, "
                "those of its removed and replaced items counted until it is compacted): use "
                "one it has, or compact (stygig catalog compact) or rebuild the catalogue"
            )
    live, dead = len(artifact.positions), len(items) - len(artifact.positions)
    if superseding and dead > max(MAX_DEAD_ROWS, live):  # removes and new ids: taken
        kept = len(snap.artifact.items) - len(snap.artifact.positions)
        raise CatalogFullError(
            f"the catalogue keeps {kept} replaced or removed rows until it is compacted: "
            "compact it (stygig catalog compact) and reload before replacing items or changing "
            "their category; other changes are still taken"
        )


def _tombstone(item: Item) -> Item:
    """What a dead row keeps of its item: the fields its columns were made from that are
    bounded (labels, availability), no text."""
    return Item(
        id=item.id,
        image="",
        category=item.category,
        gender=item.gender,
        usage=item.usage,
        available=item.available,
        stock=item.stock,
    )


#: Ancestors a compacted artifact remembers (its records' bases may be any of them: a server
#: that was not reloaded after a compaction goes on writing against the artifact it serves).
MAX_LINEAGE = 64


def ancestors(manifest: Mapping[str, Any]) -> list[str]:
    """The artifacts a compacted artifact was made from, oldest first (``catalog.lineage``,
    then ``catalog.parent``); none for a build."""
    catalog = manifest.get("catalog")
    if not isinstance(catalog, Mapping):
        return []
    earlier = catalog.get("lineage")
    names = [*(earlier if isinstance(earlier, list) else []), catalog.get("parent")]
    return list(dict.fromkeys(n for n in names if isinstance(n, str)))[-MAX_LINEAGE:]


def lineage_root(manifest: Mapping[str, Any], version: str) -> str:
    """The build every version of this catalogue was compacted from (its oldest ancestor, or
    itself): a change-log record written on any of them applies to all of them, ancestors and
    descendants alike, since they all replay one log.

    A compacted manifest names it (``catalog.root``, inherited by every compaction): the
    oldest of its 64 remembered ancestors is the root only until the 65th compaction (review,
    session 42: from then on a replica one version behind took new records for another
    build's and skipped them). Manifests compacted before it was written: that oldest one."""
    catalog = manifest.get("catalog")
    root = catalog.get("root") if isinstance(catalog, Mapping) else None
    if isinstance(root, str):
        return root
    older = ancestors(manifest)
    return older[0] if older else version


def lineage(manifest: Mapping[str, Any], version: str) -> frozenset[str]:
    """The artifact versions whose change-log records apply to this artifact: its own and its
    :func:`ancestors`."""
    return frozenset({version, *ancestors(manifest)})


#: Records a replay reads from a change log at a time (their bytes are bounded too,
#: :meth:`~stygig.catalog.changelog.ChangeLog.read_since`): a long log is never held at once.
REPLAY_BATCH = 64


def replay_batches(
    snap: CatalogSnapshot,
    changelog: ChangeLog,
    *,
    compat_mode: str = "rules",
    until: int | None = None,
) -> Iterator[tuple[CatalogSnapshot, int, list[tuple[int, str]]]]:
    """``changelog``'s records after ``snap``, up to record ``until`` (``None``: every one
    written), applied a batch at a time (:func:`apply_record`): per batch, the snapshot after
    it, how many records it held and the ``(sequence, reason)`` of those skipped. Servers,
    replicas, compaction and the commands answering from an artifact all replay this way."""
    while until is None or snap.sequence < until:
        limit = REPLAY_BATCH if until is None else min(REPLAY_BATCH, until - snap.sequence)
        records = changelog.read_since(snap.sequence, limit)
        if not records:
            return
        skipped = []
        for record in records:
            snap, reason = apply_record(snap, record, compat_mode=compat_mode)
            if reason is not None:
                skipped.append((snap.sequence, reason))
        yield snap, len(records), skipped


def apply_record(
    snap: CatalogSnapshot, record: Mapping[str, Any], *, compat_mode: str = "rules"
) -> tuple[CatalogSnapshot, str | None]:
    """The snapshot after one change-log record, and ``None``; or, for a record that no longer
    applies (it cannot happen to records a server wrote on this catalogue: a log written
    against another artifact, or edited by hand), the snapshot with only the sequence advanced
    and the reason (an error type's name). Servers, replicas and compaction all replay with
    this, so they agree on every record, even a bad one."""
    sequence = int(record["sequence"])
    base, root = record.get("base"), record.get("root")
    # ChangeLog's stand-in for a damaged record, or one whose base or root is no version name
    # (an array there stopped every server replaying the log: review of session 42's fixes).
    if record.get("unreadable") or not all(v is None or isinstance(v, str) for v in (base, root)):
        return apply_changes(snap, [], sequence, compat_mode=compat_mode), "UnreadableRecord"
    manifest = snap.artifact.manifest
    # Ours: written on this version or an ancestor, or on a version compacted from this one
    # (a replica reloaded before this one, a compaction started from an older version): the
    # same root build.
    ours = (
        base is None
        or base in lineage(manifest, snap.version)
        or root == lineage_root(manifest, snap.version)
    )
    if not ours:
        # Written against another artifact (review, session 36: `stygig build --out A` over
        # A left A's change log, whose items then came back into the new A, with vectors of
        # the old one's space, and whose removals would have hit the new one's items).
        return apply_changes(snap, [], sequence, compat_mode=compat_mode), "ForeignBase"
    try:
        changes = [change_from_record(c) for c in record["changes"]]
        # Bounds are checked when a change is submitted: a replay applies what was accepted.
        applied = apply_changes(snap, changes, sequence, compat_mode=compat_mode, bounded=False)
        return applied, None
    except (StygigError, KeyError, ValueError, TypeError) as e:
        return apply_changes(snap, [], sequence, compat_mode=compat_mode), type(e).__name__


def _rows(values: Sequence[Any]) -> Rows[Any]:
    return values if isinstance(values, Rows) else Rows(values)


def _overlay(values: Mapping[str, Any]) -> Overlay[str, Any]:
    return values if isinstance(values, Overlay) else Overlay(values)


def _row_vector(snap: CatalogSnapshot, added: list[np.ndarray], pos: int, dim: int) -> np.ndarray:
    """The vector of row ``pos``: published, or appended earlier in this batch."""
    n = len(snap.artifact.embeddings)
    return np.asarray(snap.artifact.embeddings[pos] if pos < n else added[pos - n]).reshape(dim)


def _grown(
    snap: CatalogSnapshot, embeddings: Any, added: list[np.ndarray], dim: int
) -> tuple[SpareRows | None, Any]:
    """The embeddings with ``added`` rows after them, written into spare capacity when the
    backing rows have it (:class:`~stygig.rows.SpareRows`: rows no published snapshot can
    see), else into a bigger copy. Embeddings mapped from disk stay mapped: added rows go
    after them in memory (:class:`~stygig.rows.StackedRows`), so a large artifact never
    becomes resident."""
    if not added:
        return snap.buffer, embeddings
    tail = np.stack(added).astype(np.float32).reshape(len(added), dim)
    if isinstance(embeddings, StackedRows):
        spare, rows = _appended(snap.buffer, embeddings.tail, tail)
        return spare, StackedRows(embeddings.base, rows)
    if isinstance(embeddings, np.memmap | FileRows):
        spare, rows = _appended(None, embeddings[:0], tail)
        return spare, StackedRows(embeddings, rows)
    return _appended(snap.buffer, embeddings, tail)


def _appended(
    spare: SpareRows | None, rows: np.ndarray, tail: np.ndarray
) -> tuple[SpareRows, np.ndarray]:
    """``rows`` with ``tail`` after them, as a prefix of ``spare`` (or of a bigger copy)."""
    if spare is None or not spare.extends(rows, len(tail)):
        spare = SpareRows.around(np.asarray(rows, np.float32), len(tail))
    return spare, spare.append(len(rows), tail)

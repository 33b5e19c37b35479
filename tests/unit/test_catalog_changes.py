"""A living catalogue in process: stock, changes, the change log, replay, every index kind."""

from __future__ import annotations

import base64
import json
import os
import re
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stygig import living, snapshot
from stygig.artifact import Artifact
from stygig.catalog.changelog import ChangeLog, SequenceTaken
from stygig.catalog.changes import parse_change, parse_changes_jsonl
from stygig.engine import Options, Query, Recommender
from stygig.errors import (
    CatalogFullError,
    ImageTooLargeError,
    InputError,
    InvalidImageError,
    InvalidOptionsError,
    NotFoundError,
    OverloadedError,
    StorageError,
)
from stygig.features import prepare_image
from stygig.images import photo_work
from stygig.index import MERGE_ROWS, ExactIndex, LiveIndex, build_index
from stygig.living import LiveCatalog

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _photo(catalog: Path, name: str = "blue-jeans.jpg") -> str:
    return base64.b64encode((catalog / "queries" / name).read_bytes()).decode()


def _add(catalog: Path, item_id: str, category: str = "jeans", **fields: object) -> dict:
    return {
        "op": "add",
        "item": {"id": item_id, "category": category, "gender": "men", **fields},
        "image_b64": _photo(catalog),
    }


def _ids(rec: Recommender, photo: bytes, **options: object) -> list[str]:
    answer = rec.recommend(Query(images=(photo,)), Options(mode="similar", k_total=100, **options))
    return [i.id for i in answer.items]


def test_stock_is_first_class(live: tuple[LiveCatalog, Path]) -> None:
    catalog, folder = live
    rec = catalog.recommender
    photo = (folder / "queries" / "blue-jeans.jpg").read_bytes()
    first = _ids(rec, photo)[0]
    snap = catalog.submit([parse_change({"op": "update", "id": first, "set": {"stock": 0}})])
    assert snap.sequence == 1 and rec.snapshot is snap
    assert first not in _ids(rec, photo)  # the next request sees it sold out
    assert first in _ids(rec, photo, include_unavailable=True)
    answer = rec.recommend(Query(images=(photo,)), Options(mode="similar"))
    assert answer.artifact.sequence == 1 and answer.artifact.catalog.endswith("+1")
    catalog.submit(
        [parse_change({"op": "update", "id": first, "set": {"available": True, "stock": 5}})]
    )
    assert first in _ids(rec, photo)
    # Price and any attribute change live, and filters see them at once.
    catalog.submit(
        [parse_change({"op": "update", "id": first, "set": {"price": 1.5, "fit": "slim"}})]
    )
    hits = _ids(rec, photo, filters={"fit": "slim"})
    assert hits == [first]
    assert rec.artifact.items[rec.position(first)].price == 1.5
    # A sold-out item given as a candidate is ranked, marked so (review, session 42: it was
    # dropped without a word); the caller's own filters still apply.
    catalog.submit([parse_change({"op": "update", "id": first, "set": {"stock": 0}})])
    others = [i.id for i in rec.artifact.items if i.id != first][:3]
    shortlist = rec.recommend(Query(images=(photo,)), Options(candidate_ids=(first, *others)))
    ranked = {i.id: i for i in shortlist.items}
    assert set(ranked) == {first, *others} and ranked[first].available is False
    excluded = rec.recommend(
        Query(images=(photo,)), Options(candidate_ids=(first, *others), exclude_ids=(first,))
    )
    assert first not in {i.id for i in excluded.items}


def test_add_replace_remove(live: tuple[LiveCatalog, Path]) -> None:
    catalog, folder = live
    rec = catalog.recommender
    before = rec.snapshot
    n = before.live_items
    photo = (folder / "queries" / "blue-jeans.jpg").read_bytes()
    snap = catalog.submit([parse_change(_add(folder, "new-1", price=10))])
    assert snap.live_items == n + 1
    assert _ids(rec, photo)[0] == "new-1"  # the same photo: its nearest item
    # The old snapshot is untouched (a request that started before still reads it).
    assert before.live_items == n and "new-1" not in before.artifact.positions
    # Replace: same id, a new row; the old row is a tombstone.
    row = rec.position("new-1")
    catalog.submit([parse_change(_add(folder, "new-1", category="jeans", price=12))])
    assert rec.position("new-1") != row and rec.snapshot.live_items == n + 1
    assert _ids(rec, photo).count("new-1") == 1
    catalog.submit([parse_change({"op": "remove", "id": "new-1"})])
    assert "new-1" not in _ids(rec, photo, include_unavailable=True)
    with pytest.raises(NotFoundError):
        rec.position("new-1")


def test_bad_changes_change_nothing(live: tuple[LiveCatalog, Path], tmp_path: Path) -> None:
    catalog, folder = live
    rec = catalog.recommender
    before = rec.snapshot
    bad = [
        _add(folder, "x", category="spaceship"),  # unknown category
        {"op": "add", "item": {"id": "y", "category": "jeans"}, "image_b64": "bm90IGFuIGltYWdl"},
        {"op": "update", "id": "nope", "set": {"price": 3}},
        {"op": "update", "id": before.artifact.items[0].id, "set": {"price": "cheap"}},
    ]
    errors = (InvalidOptionsError, InvalidImageError, NotFoundError)
    for change in bad:
        with pytest.raises(errors) as caught:
            catalog.submit([parse_change(_add(folder, "ok-1")), parse_change(change)])
        assert "spaceship" not in caught.value.message and "cheap" not in caught.value.message
        assert rec.snapshot is before
    assert ChangeLog(tmp_path / "log").last_sequence() == 0
    for text in ("{", '{"op": "drop"}', '{"op": "update", "id": "a"}', "[1]"):
        with pytest.raises(InputError) as e2:
            parse_changes_jsonl(text.encode())
        assert e2.value.http_status < 500
    # Audit, session 47: each was "not a JSON object"; said as it is, without the text.
    said = {
        '{"op": "remove", "id": "a"}\r{"op": "remove", "id": "b"}\r': "more than one JSON value",
        '{"op": "remove", "id": "a", "n": ' + "9" * 5_000 + "}": "a number too long to read",
        "[" * 100_000: "nested too deeply",
    }
    for text, why in said.items():
        with pytest.raises(InputError) as e4:
            parse_changes_jsonl(text.encode())
        assert e4.value.message.startswith(f"line 1: {why}"), e4.value.message
    # Review, session 42: a change line naming a key twice kept the last (422 now, named)
    twice = '{"op": "update", "id": "a", "set": {"price": 3}, "set": {"price": 4}}'
    with pytest.raises(InvalidOptionsError) as e3:
        parse_changes_jsonl(('{"op": "remove", "id": "b"}\n' + twice).encode())
    assert e3.value.code == "duplicate_key"
    assert e3.value.message == "the key 'set' is given twice in line 2; give it once"


def test_a_photo_named_by_its_location_is_read_once_and_counted_in_the_budget(
    live: tuple[LiveCatalog, Path],
) -> None:
    """Code review, session 49: the header pass read every located photo (S3, a file) one
    after another, then the decode read each again. Each is read once now, where it is
    decoded, and counted there."""
    catalog, folder = live
    photo = (folder / "queries" / "blue-jeans.jpg").read_bytes()
    reads: list[str] = []
    lock = threading.Lock()

    def load(location: str) -> bytes:
        with lock:
            reads.append(location)
        return photo

    located = LiveCatalog(catalog.recommender, catalog.changelog, load=load)
    rows = [
        {"op": "add", "item": {"id": f"at-{i}", "category": "jeans"}, "image": f"shop/{i}.jpg"}
        for i in range(5)
    ]
    changes = located.prepare([parse_change(r) for r in rows])
    assert [c.id for c in changes] == [f"at-{i}" for i in range(5)]
    assert sorted(reads) == [f"shop/{i}.jpg" for i in range(5)]
    work = photo_work(photo)
    with pytest.raises(ImageTooLargeError) as over:
        located.prepare([parse_change(r) for r in rows], decode_budget=2 * work)
    assert over.value.code == "images_too_costly"
    # Decoded in parallel: the photo that tips it over is the third read, whichever that was.
    assert re.match(r"change [345]: this photo takes the request's photos over", over.value.message)


def test_an_attribute_given_as_a_field_and_in_attributes_is_a_422() -> None:
    """Review, session 49: kept one of the two values, by the order of the keys."""
    changes = (
        {
            "op": "add",
            "item": {
                "id": "t",
                "category": "jeans",
                "colour": "red",
                "attributes": {"colour": "blue"},
            },
            "image_b64": "eA==",
        },
        {"op": "update", "id": "t", "set": {"colour": "green", "attributes": {"colour": "pink"}}},
        {"op": "update", "id": "t", "set": {"attributes": {"colour": "pink"}, "colour": "green"}},
    )
    for change in changes:
        with pytest.raises(InvalidOptionsError) as caught:
            parse_change(change, "change 2")
        assert caught.value.code == "field_given_twice"
        assert caught.value.message == (
            "change 2: the attribute 'colour' is given twice, as a field and in 'attributes'; "
            "give it once"
        )
    one_each = {"op": "update", "id": "t", "set": {"colour": "red", "attributes": {"fit": "slim"}}}
    assert parse_change(one_each).fields == one_each["set"]


def test_a_removed_items_gender_is_no_longer_the_catalogues(
    live: tuple[LiveCatalog, Path],
) -> None:
    """Review, session 49: a removed item's gender stayed listed and accepted. Its tombstone
    keeps it (and it counts towards MAX_GENDERS until compaction, as the 409 says), but a
    request may no longer state it."""
    catalog, folder = live
    catalog.submit([parse_change(_add(folder, "odd-1", gender="gg0"))])
    cols = catalog.snapshot.columns
    assert "gg0" in cols.genders_held
    photo = (folder / "queries" / "blue-jeans.jpg").read_bytes()
    assert _ids(catalog.recommender, photo, gender="gg0")
    catalog.submit([parse_change({"op": "remove", "id": "odd-1"})])
    cols = catalog.snapshot.columns
    assert "gg0" in cols.gender_names and "gg0" not in cols.genders_held
    assert {"men", "women"} <= set(cols.genders_held)
    with pytest.raises(InvalidOptionsError) as caught:
        _ids(catalog.recommender, photo, gender="gg0")
    assert caught.value.message.startswith("the stated gender is not in this catalogue")
    assert "gg0" not in caught.value.message
    # The bound counts it until compaction, and says so.
    full = [
        parse_change(_add(folder, f"odd-{n}", gender=f"gh{n}")) for n in range(snapshot.MAX_GENDERS)
    ]
    with pytest.raises(CatalogFullError) as over:
        catalog.submit(full)
    assert "counted until it is compacted" in over.value.message


def test_replay_and_two_writers(live: tuple[LiveCatalog, Path], tmp_path: Path) -> None:
    catalog, folder = live
    first = catalog.recommender
    other = LiveCatalog(
        Recommender(Artifact.load(tmp_path / "artifact")), ChangeLog(tmp_path / "log")
    )
    photo = (folder / "queries" / "blue-jeans.jpg").read_bytes()
    ids = [i.id for i in first.artifact.items[:6]]

    def write(who: LiveCatalog, tag: str) -> None:
        for i in range(5):
            who.submit([parse_change(_add(folder, f"{tag}-{i}"))])
            who.submit([parse_change({"op": "update", "id": ids[i], "set": {"w": tag}})])

    threads = [
        threading.Thread(target=write, args=(c, t)) for c, t in ((catalog, "a"), (other, "b"))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    catalog.catch_up()
    other.catch_up()
    assert catalog.snapshot.sequence == other.snapshot.sequence == 20
    log_seqs = ChangeLog(tmp_path / "log").sequences()
    assert log_seqs == list(range(1, 21))
    # A restart replays exactly the log: the same catalogue, the same answer.
    restarted = LiveCatalog(
        Recommender(Artifact.load(tmp_path / "artifact")), ChangeLog(tmp_path / "log")
    )
    assert restarted.catch_up() == 20
    for rec in (other.recommender, restarted.recommender):
        assert rec.snapshot.artifact.positions.keys() == first.snapshot.artifact.positions.keys()
        assert _ids(rec, photo) == _ids(first, photo)
    a = first.recommend(Query(images=(photo,)), Options()).to_dict()
    b = restarted.recommender.recommend(Query(images=(photo,)), Options()).to_dict()
    assert a["artifact"] == b["artifact"] and a["items"] == b["items"]
    restarted.check_no_gap()  # a whole log: nothing to say
    # Review (s51): a record missing under later ones replayed only up to the gap, and the
    # next change took the missing number, ordered before records already acknowledged.
    record = next((tmp_path / "log").glob("*00000003*"))
    record.rename(tmp_path / "record-3-moved-away")
    gapped = LiveCatalog(
        Recommender(Artifact.load(tmp_path / "artifact")), ChangeLog(tmp_path / "log")
    )
    assert gapped.catch_up() == 2
    with pytest.raises(StorageError, match="holds records up to 20, but record 3 is missing"):
        gapped.check_no_gap()


def test_log_sequences_are_exclusive(tmp_path: Path) -> None:
    log = ChangeLog(tmp_path / "log")
    log.append(1, [{"op": "remove", "id": "a"}])
    with pytest.raises(SequenceTaken):
        log.append(1, [{"op": "remove", "id": "b"}])
    (tmp_path / "log" / ".record.partial.tmp").write_bytes(b'{"seq')  # a crash's leftover
    log.append(3, [])  # a gap: readers stop before it
    assert [r["sequence"] for r in log.read_since(0)] == [1]
    assert (
        json.loads((tmp_path / "log" / "000000000001.json").read_text())["changes"][0]["id"] == "a"
    )


@pytest.mark.parametrize("kind", ["exact", "flat", "ivf", "hnsw", "split"])
def test_every_index_kind_takes_changes(kind: str) -> None:
    rng = np.random.default_rng(0)
    n, d = 3000, 32
    x = rng.standard_normal((n + 400, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = [("a", "b", "c")[i % 3] for i in range(n + 400)]
    if kind == "split":
        base = build_index(x[:n], "flat", partitions=labels[:n], partition_by="slot")
    else:
        params = {"nlist": 16, "nprobe": 16} if kind == "ivf" else {}
        base = build_index(x[:n], kind, **params)
    live = LiveIndex(base, x[:n])
    live = live.changed(x, removed_rows=range(0, 300), labels=labels[n:])
    # Merge the appended rows into the base (as past MERGE_ROWS appended rows).
    merged = live._merged(live.base, x, labels[n:], live.removed)
    oracle = ExactIndex(x)
    oracle.remove(np.arange(300))
    q = x[n : n + 50] + 0.01
    want = oracle.search(q, 10)[1]
    for index in (live, LiveIndex(merged, x, live.removed)):
        got = index.search(q, 10)[1]
        recall = np.mean([len(set(g) & set(w)) / 10 for g, w in zip(got, want, strict=True)])
        assert recall >= (0.99 if kind in ("exact", "flat", "split") else 0.9), kind
        assert not np.isin(got, np.arange(300)).any()
        if kind == "split":
            _s, i = index.search_each(q, 5)
            assert (i >= n).any()
    assert MERGE_ROWS > 400


def test_change_work_runs_below_requests(live: tuple[LiveCatalog, Path]) -> None:
    """Changes' photos are prepared, encoded and applied on lowered-priority threads, and the
    change encoder gives the request encoder's vectors."""
    catalog, folder = live
    rec = catalog.recommender
    photo = (folder / "queries" / "blue-jeans.jpg").read_bytes()
    catalog.submit([parse_change(_add(folder, "low-1"))])
    row = rec.snapshot.artifact.positions["low-1"]
    want = rec.embed([prepare_image(photo, rec.encoder.preprocess).tensor])[0]
    np.testing.assert_allclose(rec.snapshot.artifact.embeddings[row], want, atol=1e-6)
    if sys.platform != "linux" or living.CHANGE_NICE == 0:
        return
    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    changes = [t for t in threading.enumerate() if t.name.startswith("stygig-change-")]
    assert {t.name.rsplit("_", 1)[0] for t in changes} >= {
        "stygig-change-photo",
        "stygig-change-encode",
        "stygig-change-write",
    }
    for t in changes:
        assert t.native_id is not None
        assert os.getpriority(os.PRIO_PROCESS, t.native_id) >= min(19, mine + living.CHANGE_NICE)


def test_a_bulk_decodes_a_bounded_window_ahead_of_the_encoder(
    live: tuple[LiveCatalog, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bulk of many photos (more than the decode window and several encoder batches): every
    photo is embedded as a single add embeds it, in order, while at most DECODE_AHEAD + two
    encoder batches of photos are decoded and waiting for the encoder at any time (a body of
    tiny photos once held every one of them decoded at once)."""

    catalog, folder = live
    names = sorted(p.name for p in (folder / "queries").glob("*.jpg"))
    n = 3 * living.ENCODE_BATCH + living.DECODE_AHEAD + 9
    bulk = [
        parse_change(
            {**_add(folder, f"bulk-{i}"), "image_b64": _photo(folder, names[i % len(names)])}
        )
        for i in range(n)
    ]
    done = threading.Condition()
    state = {"running": 0, "waiting": 0, "most": 0}
    decode, embed = LiveCatalog._prepared_photo, LiveCatalog._embed

    def counted_decode(self: LiveCatalog, req: object, *args: object) -> object:
        with done:
            state["running"] += 1
        try:
            return decode(self, req, *args)
        finally:
            with done:
                state["running"] -= 1
                state["waiting"] += 1
                state["most"] = max(state["most"], state["waiting"])
                done.notify_all()

    def counted_embed(self: LiveCatalog, tensors: list) -> object:
        # The encoder lags: it starts only once every decode handed out so far has finished,
        # so decoding runs as far ahead as prepare() lets it.
        pool = living._photo_pool()
        with done:
            done.wait_for(lambda: state["running"] == 0 and pool._work_queue.empty(), 30)
            state["waiting"] -= len(tensors)
        return embed(self, tensors)

    monkeypatch.setattr(LiveCatalog, "_prepared_photo", counted_decode)
    monkeypatch.setattr(LiveCatalog, "_embed", counted_embed)
    changes = catalog.prepare(bulk)
    assert [c.id for c in changes] == [f"bulk-{i}" for i in range(n)]
    assert state["most"] <= living.DECODE_AHEAD + 2 * living.ENCODE_BATCH
    single = catalog.prepare([bulk[n - 1]])[0]
    assert np.allclose(changes[-1].vector, single.vector, atol=1e-5)


def test_every_photo_header_is_checked_before_any_photo_is_decoded(
    live: tuple[LiveCatalog, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review, session 49: a request of 999 good photos and a non-image last decoded all 999
    (32 s of CPU) before it was refused, and could be sent again. Headers come first now: a
    bad one is refused, named, with no photo decoded; so is a request whose photos together
    would cost more decoding than its budget."""
    catalog, folder = live
    decoded: list[object] = []
    decode = LiveCatalog._prepared_photo

    def counted(self: LiveCatalog, req: object, *args: object) -> object:
        decoded.append(req)
        return decode(self, req, *args)

    monkeypatch.setattr(LiveCatalog, "_prepared_photo", counted)
    good = [parse_change(_add(folder, f"good-{i}")) for i in range(3)]
    not_image = {"op": "add", "item": {"id": "bad", "category": "jeans"}, "image_b64": "bm90IGFu"}
    with pytest.raises(InvalidImageError) as caught:
        catalog.prepare([*good, parse_change(not_image)])
    assert caught.value.code == "not_an_image"
    assert caught.value.message.startswith("change 4: ")
    assert decoded == []
    # The budget: in pixels of whole decoding, from the headers (photo_work).
    work = photo_work(base64.b64decode(_photo(folder)))
    with pytest.raises(ImageTooLargeError) as over:
        catalog.prepare(good, decode_budget=3 * work - 1)
    assert over.value.code == "images_too_costly" and over.value.http_status == 413
    assert decoded == []
    assert [c.id for c in catalog.prepare(good, decode_budget=3 * work)] == [g.id for g in good]
    assert len(decoded) == 3
    assert catalog.prepare(good)  # no budget: an operator's own command


def test_a_record_that_no_longer_applies_is_skipped_alike_by_servers_and_compaction(
    live: tuple[LiveCatalog, Path], tmp_path: Path
) -> None:
    from stygig.compaction import compact

    catalog, _folder = live
    rec = catalog.recommender
    first = rec.artifact.items[0].id
    catalog.submit([parse_change({"op": "update", "id": first, "set": {"stock": 0}})])
    log = catalog.changelog
    assert log is not None
    # Another writer's records: one names an item this catalogue never had, one is fine.
    log.append(2, [{"op": "update", "id": "never-here", "set": {"stock": 1}}])
    log.append(3, [{"op": "remove", "id": rec.artifact.items[1].id}])
    assert catalog.catch_up() == 2
    snap = rec.snapshot
    assert snap.sequence == 3 and rec.artifact.items[1].id not in snap.artifact.positions
    summary = compact(snap.artifact.path, log, tmp_path / "v2")
    assert summary["skipped"] == [2] and summary["last_sequence"] == 3
    compacted = Artifact.load(tmp_path / "v2")
    assert sorted(compacted.positions) == sorted(snap.artifact.positions)
    assert not compacted.items[compacted.positions[first]].in_stock


def test_records_written_against_another_artifact_are_never_replayed(
    live: tuple[LiveCatalog, Path], tmp_path: Path
) -> None:
    """Review, session 36: `stygig build --out A` over an artifact left A's change log, and
    its records came back into the new A (items whose vectors were of the old artifact's
    space; a removal would have hit one of the new items). A record applies only to the
    artifact it was written against or one compacted from it, however many compactions
    later (a server not reloaded goes on writing against the artifact it serves)."""
    from stygig.compaction import compact, replay

    catalog, _folder = live
    rec = catalog.recommender
    v0 = rec.snapshot.version
    first, second, third = (item.id for item in rec.artifact.items[:3])
    catalog.submit([parse_change({"op": "update", "id": first, "set": {"stock": 0}})])
    log = catalog.changelog
    assert log is not None and log.read_since(0, 10)[0]["base"] == v0
    log.append(2, [{"op": "remove", "id": second}], base="an-artifact-built-before")
    snap, skipped = replay(rec.artifact, log)
    assert skipped == [2] and second in snap.artifact.positions  # the foreign removal: not done
    assert not snap.artifact.items[snap.artifact.positions[first]].in_stock
    one = compact(rec.artifact.path, log, tmp_path / "v1")
    assert one["skipped"] == [2]
    log.append(3, [{"op": "update", "id": second, "set": {"stock": 0}}], base=v0)
    v1 = Artifact.load(tmp_path / "v1")
    snap, skipped = replay(v1, log)  # written against v0 after the compaction: applies
    assert skipped == [] and not snap.artifact.items[snap.artifact.positions[second]].in_stock
    compact(tmp_path / "v1", log, tmp_path / "v2")
    v2 = Artifact.load(tmp_path / "v2")
    assert v2.manifest["catalog"]["lineage"] == [v0]
    log.append(4, [{"op": "update", "id": third, "set": {"stock": 0}}], base=v0)
    log.append(5, [{"op": "remove", "id": third}], base="another-lineage")
    snap, skipped = replay(v2, log)  # two compactions later, still v0's line: applies
    assert skipped == [5] and not snap.artifact.items[snap.artifact.positions[third]].in_stock


def test_the_catalog_command_reads_a_photo_file_bounded(tmp_path: Path) -> None:
    """``stygig catalog add --photo`` and ``catalog apply`` read photos the operator names: a
    FIFO hung the command and /dev/zero filled its memory; both are refused at once."""
    from stygig.errors import StygigError
    from stygig.serving.catalog_command import _read_photo

    fifo = tmp_path / "fifo.jpg"
    os.mkfifo(fifo)
    photo = tmp_path / "ok.jpg"
    photo.write_bytes(b"\xff\xd8 bytes")
    assert _read_photo(photo) == b"\xff\xd8 bytes"
    for source in (fifo, Path("/dev/zero")):
        with pytest.raises(StygigError):
            _read_photo(source)


def test_a_changes_body_of_many_small_values_is_refused_before_it_is_parsed() -> None:
    """Review (s37): a few MB of ``[[],[],...]`` cost a second and 150 MB to parse before
    being refused. A body of more JSON values than 1,000 changes hold is a 413 unparsed, as
    JSON or JSON Lines; 1,000 changes with attributes are read."""
    from stygig.catalog.changes import JSON_VALUES_PER_CHANGE, MAX_CHANGES
    from stygig.errors import PayloadTooLargeError
    from stygig.serving.catalog_changes import parse_changes_body

    bomb = b'{"changes": [' + b"[]," * (MAX_CHANGES * JSON_VALUES_PER_CHANGE) + b"[]]}"
    with pytest.raises(PayloadTooLargeError, match="JSON values"):
        parse_changes_body(bomb, "application/json")
    with pytest.raises(PayloadTooLargeError, match="JSON values"):
        parse_changes_body(
            b'{"op": "update", "id": "a", "zz": [' + b"[]," * 200_000 + b"[]]}\n",
            "application/x-ndjson",
        )
    change = {"op": "update", "id": "sku-1", "set": {f"field{n}": n for n in range(40)}}
    many = {"changes": [change] * MAX_CHANGES}
    assert len(parse_changes_body(json.dumps(many).encode(), "application/json")) == MAX_CHANGES
    lines = "\n".join(json.dumps(change) for _ in range(MAX_CHANGES)).encode()
    assert len(parse_changes_body(lines, "application/x-ndjson")) == MAX_CHANGES


def test_records_written_on_a_compacted_version_apply_to_its_ancestors(
    live: tuple[LiveCatalog, Path], tmp_path: Path
) -> None:
    """Review (s38): a record written by a server on compacted v1 named v1 as its base, so a
    replica still on v0, and a compaction started from v0 (as the docs' example does), skipped
    it as foreign while counting its sequence: acknowledged changes lost for good. Records
    name the build they all descend from (`root`), and apply on every version of it."""
    from stygig.compaction import compact, replay

    catalog, folder = live
    rec = catalog.recommender
    log = catalog.changelog
    assert log is not None
    v0 = rec.snapshot.version
    first = rec.artifact.items[0].id
    catalog.submit([parse_change({"op": "update", "id": first, "set": {"stock": 0}})])
    compact(rec.artifact.path, log, tmp_path / "v1")
    newer = LiveCatalog(Recommender(Artifact.load(tmp_path / "v1")), log)
    newer.catch_up()
    newer.submit([parse_change(_add(folder, "NEW-1"))])
    record = log.read_since(1, 10)[0]
    assert record["base"] == newer.snapshot.version != v0 and record["root"] == v0
    assert catalog.catch_up() == 1  # the replica on v0 follows it
    assert "NEW-1" in rec.snapshot.artifact.positions
    snap, skipped = replay(rec.artifact, log)  # a compaction from v0
    assert skipped == [] and "NEW-1" in snap.artifact.positions
    log.append(3, [{"op": "remove", "id": first}], base="elsewhere", root="another-build")
    assert replay(rec.artifact, log)[1] == [3]  # another build's line: still foreign


def test_changes_prepared_across_a_hot_reload_are_prepared_again_on_the_new_version(
    live: tuple[LiveCatalog, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review (s38): a bulk add that straddled a hot reload was logged on the new version
    with vectors from the old version's encoder and whitening (its own photo no longer found
    it). Such changes are prepared again on the new version."""
    import shutil

    catalog, folder = live
    shutil.copytree(catalog.recommender.artifact.path, tmp_path / "next")
    successor = LiveCatalog(Recommender(Artifact.load(tmp_path / "next")), catalog.changelog)
    monkeypatch.setattr(  # the new version embeds otherwise (another whitening, say)
        successor.recommender, "project", lambda v: -np.asarray(v, np.float32)
    )
    prepare = catalog.prepare

    def reload_meanwhile(requests: list, decode_budget: int | None = None) -> list:
        prepared = prepare(requests, decode_budget=decode_budget)
        catalog.retire(successor)  # the reload swaps in while the photos were prepared
        return prepared

    monkeypatch.setattr(catalog, "prepare", reload_meanwhile)
    snap = catalog.submit([parse_change(_add(folder, "ACROSS"))])
    assert snap is successor.snapshot and "ACROSS" in snap.artifact.positions
    vector = np.asarray(snap.artifact.embeddings[snap.artifact.positions["ACROSS"]])
    expected = successor.prepare([parse_change(_add(folder, "ACROSS"))])[0].vector
    assert np.allclose(vector, expected, atol=1e-5)


def test_a_removed_item_added_again_is_available_again_since(
    live: tuple[LiveCatalog, Path],
) -> None:
    """Review (s38): after remove then add, `?since=` kept the id among the sold out (the
    add made no stock event for an id with no row), and the page marked it "Sold out"."""
    catalog, folder = live
    item = catalog.recommender.artifact.items[0]
    catalog.submit([parse_change({"op": "remove", "id": item.id})])
    catalog.submit([parse_change(_add(folder, item.id))])
    last = {i: ok for _, i, ok in catalog.snapshot.stock_events}
    assert last[item.id] is True
    catalog.submit([parse_change(_add(folder, "BRAND-NEW"))])
    assert "BRAND-NEW" not in {i for _, i, _ in catalog.snapshot.stock_events}  # no noise


def test_a_replay_holds_a_bounded_number_of_bytes(tmp_path: Path) -> None:
    """Review (s38): a replay read 64 records at once; one request of 1,000 tiny photos makes
    a ~17 MB record, so a restart held over 1 GB. Reads stop at a byte bound (one record at
    least), and a replay still applies every record."""
    log = ChangeLog(tmp_path / "log")
    for n in range(1, 6):
        log.append(n, [{"op": "update", "id": f"x{n}", "set": {"note": "y" * 1000}}])
    assert len(log.read_since(0, 64, max_bytes=2500)) == 3
    assert len(log.read_since(0, 64, max_bytes=1)) == 1
    assert len(log.read_since(0, 64)) == 5


def test_text_numbers_and_labels_are_bounded_like_json_ones(
    live: tuple[LiveCatalog, Path],
) -> None:
    """Review (s38): a price sent as text ("1e300") passed the bound JSON numbers get, and a
    gender of 2,000 characters was accepted though no request can name it."""
    catalog, _folder = live
    first = catalog.recommender.artifact.items[0].id
    for fields in ({"price": "1e300"}, {"gender": "x" * 2000}, {"usage": "y" * 201}):
        with pytest.raises(InputError):
            catalog.submit([parse_change({"op": "update", "id": first, "set": fields})])
    catalog.submit([parse_change({"op": "update", "id": first, "set": {"price": "19.90"}})])


def test_since_says_when_its_lists_may_be_incomplete(
    live: tuple[LiveCatalog, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review (s38): after a compaction (or past the events kept), `?since=` answered empty
    lists for changes it no longer knew of, and a page kept showing a sold-out item as
    available. `complete` says whether the lists cover everything after `since`."""
    from stygig import snapshot
    from stygig.compaction import compact
    from stygig.serving.catalog_changes import version_body

    catalog, _folder = live
    first, second, third = (i.id for i in catalog.recommender.artifact.items[:3])

    class Service:
        def __init__(self, rec: Recommender) -> None:
            self.rec = rec

        def require(self) -> Recommender:
            return self.rec

    catalog.submit([parse_change({"op": "update", "id": first, "set": {"stock": 0}})])
    body = version_body(Service(catalog.recommender), since=0)  # type: ignore[arg-type]
    assert body["unavailable_since"] == [first] and body["complete"] is True
    assert catalog.changelog is not None
    compact(catalog.recommender.artifact.path, catalog.changelog, tmp_path / "v1")
    v1 = Recommender(Artifact.load(tmp_path / "v1"))
    body = version_body(Service(v1), since=0)  # type: ignore[arg-type]
    assert body["unavailable_since"] == [] and body["complete"] is False
    assert version_body(Service(v1), since=1)["complete"] is True  # type: ignore[arg-type]
    monkeypatch.setattr(snapshot, "RECENT_STOCK_EVENTS", 2)
    for n, item in enumerate((second, third), start=2):
        catalog.submit([parse_change({"op": "update", "id": item, "set": {"stock": 0}})])
        assert catalog.snapshot.events_from == (n - 2)  # the third event drops the first
    body = version_body(Service(catalog.recommender), since=0)  # type: ignore[arg-type]
    assert (
        body["complete"] is False
        and version_body(  # type: ignore[arg-type]
            Service(catalog.recommender), since=1
        )["complete"]
        is True
    )


def test_the_available_filter_reads_what_the_answer_shows(live: tuple[LiveCatalog, Path]) -> None:
    """Review (s38): a filter on `available` read the row's flag, the answer's `available`
    counts stock too: `available: true` returned items the same answer showed unavailable."""
    catalog, _folder = live
    rec = catalog.recommender
    sold = [i.id for i in rec.artifact.items[:6]]
    catalog.submit([parse_change({"op": "update", "id": i, "set": {"stock": 0}}) for i in sold])
    query = Query(item_ids=(rec.artifact.items[10].id,))
    for value, shown in (("true", True), ("false", False)):
        out = rec.recommend(
            query,
            Options(
                mode="similar", k_total=100, include_unavailable=True, filters={"available": value}
            ),
        ).to_dict()
        assert out["items"] and {i["available"] for i in out["items"]} == {shown}


def test_a_record_of_any_shape_edited_by_hand_is_skipped_and_the_log_goes_on(
    live: tuple[LiveCatalog, Path], tmp_path: Path
) -> None:
    """Review, session 42: a record whose change was ``1`` raised ``AttributeError`` in the
    replay, so every server sharing the log answered 500 to every change and none could start
    again. Whatever a hand-edited record holds, it is skipped as the docs say, by servers and
    compaction alike, and the records after it apply."""
    from stygig.compaction import compact, replay

    catalog, _folder = live
    rec = catalog.recommender
    log = catalog.changelog
    assert log is not None
    first = rec.artifact.items[0].id
    vector = base64.b64encode(np.ones(3, "<f4").tobytes()).decode()
    bad: list[object] = [
        [1],
        [None],
        ["update"],
        [[{"op": "update"}]],
        [{"op": "update", "id": first, "set": [1]}],
        [{"op": "update", "id": ["a"], "set": {"stock": 1}}],
        [{"op": "update", "id": {"a": 1}, "set": {"stock": 1}}],
        [{"op": "add", "id": "x", "item": 5, "vector": vector}],
        [{"op": "add", "id": "x", "item": {"id": "x", "category": "dress"}, "vector": "!!"}],
        [{"op": "add", "id": "x", "item": {"id": "x", "category": "dress"}, "vector": vector}],
        [{"op": "add", "id": "x", "item": {"id": "x"}, "vector": vector, "color": [1]}],
        [{"op": "remove"}],
        [{"op": 7, "id": first}],
    ]
    sequence = 0
    for changes in bad:
        sequence += 1
        log.append(sequence, changes)  # type: ignore[arg-type]
    # Not a record of its number at all: the log reads it as one to skip.
    for raw in (
        '{"changes": {"a": 1}}',
        '{"changes": "text"}',
        '{"base": []}',
        '{"root": {"a": 1}}',
        "[1]",
        "not json",
        "[" * 100_000,
    ):
        sequence += 1
        log.append(sequence, [])
        path = Path(log.location) / f"{sequence:012d}.json"
        record = json.loads(path.read_text(encoding="utf-8"))
        if raw.startswith("{"):
            raw = json.dumps({**record, **json.loads(raw)})
        path.write_text(raw, encoding="utf-8")
    sequence += 1
    log.append(sequence, [{"op": "update", "id": first, "set": {"stock": 0}}])
    assert catalog.catch_up() == sequence
    snap = rec.snapshot
    assert snap.sequence == sequence
    assert not snap.artifact.items[snap.artifact.positions[first]].in_stock
    _, skipped = replay(rec.artifact, log)
    assert skipped == list(range(1, sequence))
    summary = compact(rec.artifact.path, log, tmp_path / "v1")
    assert summary["skipped"] == list(range(1, sequence))
    compacted = Artifact.load(tmp_path / "v1")
    assert not compacted.items[compacted.positions[first]].in_stock


def test_the_root_build_survives_any_number_of_compactions() -> None:
    """Review, session 42: a compacted manifest remembers 64 ancestors, and the root was the
    oldest of them, so from the 65th compaction on the newest version named another root than
    the one before it, and a replica (or compaction) still on that one skipped its records
    as another build's. The root is written in the manifest and inherited."""
    from stygig.compaction import catalog_entry
    from stygig.snapshot import MAX_LINEAGE, lineage_root

    manifests = [{"version": "v0"}]
    for n in range(1, MAX_LINEAGE + 5):
        parent = manifests[-1]
        catalog = catalog_entry(parent, str(parent["version"]), n)
        manifests.append({"version": f"v{n}", "catalog": catalog})
    assert {lineage_root(m, str(m["version"])) for m in manifests} == {"v0"}
    assert len(manifests[-1]["catalog"]["lineage"]) == MAX_LINEAGE  # still bounded
    # A manifest compacted before the root was written: the oldest ancestor it remembers.
    old = {"version": "v9", "catalog": {"parent": "v8", "lineage": ["v3", "v4"]}}
    assert lineage_root(old, "v9") == "v3"


def test_a_killed_writers_temporary_record_is_removed_when_the_log_is_opened(
    tmp_path: Path,
) -> None:
    """Review, session 42: a writer killed between writing a record's temporary file and
    linking it left the file (up to ~17 MB) in the log folder for ever. Opening the log (a
    server's start) removes those older than 10 minutes; a live writer's is left alone."""
    import time

    from stygig.catalog.changelog import STALE_TEMPORARY_S

    folder = tmp_path / "log"
    log = ChangeLog(folder)
    log.append(1, [{"op": "remove", "id": "a"}])
    stale, fresh = folder / ".record.dead.tmp", folder / ".record.live.tmp"
    for path in (stale, fresh):
        path.write_bytes(b"{}")
    then = time.time() - STALE_TEMPORARY_S - 60
    os.utime(stale, (then, then))
    ChangeLog(folder)
    assert not stale.exists() and fresh.exists()
    assert ChangeLog(folder).last_sequence() == 1


def test_a_record_whose_folder_sync_fails_is_applied_and_said_to_be_unconfirmed(
    live: tuple[LiveCatalog, Path],
    monkeypatch: pytest.MonkeyPatch,
    fail_folder_sync: Callable[[], None],
) -> None:
    """The record is linked before the folder's ``fsync``: it exists, every reader applies it.
    Its writer applied nothing and answered "cannot be written" (suspected, session 44): the
    client was told a change failed that the catalogue then showed."""
    from stygig.catalog.changelog import RecordUnconfirmed

    catalog, _ = live
    rec = catalog.recommender
    first = rec.artifact.items[0].id
    fail_folder_sync()
    with pytest.raises(RecordUnconfirmed) as caught:
        catalog.submit([parse_change({"op": "update", "id": first, "set": {"stock": 0}})])
    assert caught.value.http_status == 503 and caught.value.code == "change_unconfirmed"
    assert "record 1 and is applied" in caught.value.message
    assert str(catalog.changelog.folder) not in caught.value.message  # no server path
    # Applied here as in the log: the next request sees it, the next change is record 2.
    assert rec.snapshot.sequence == 1
    assert not rec.artifact.items[rec.position(first)].in_stock
    assert [r["sequence"] for r in catalog.changelog.read_since(0)] == [1]
    monkeypatch.undo()
    snap = catalog.submit([parse_change({"op": "update", "id": first, "set": {"stock": 3}})])
    assert snap.sequence == 2 and rec.artifact.items[rec.position(first)].in_stock


def test_a_record_that_cannot_be_linked_is_a_storage_error_and_changes_nothing(
    live: tuple[LiveCatalog, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from stygig.catalog import changelog
    from stygig.catalog.changelog import RecordUnconfirmed
    from stygig.errors import StorageError

    catalog, _ = live
    rec = catalog.recommender
    first = rec.artifact.items[0].id

    def no_link(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(changelog.os, "link", no_link)
    with pytest.raises(StorageError) as caught:
        catalog.submit([parse_change({"op": "update", "id": first, "set": {"stock": 0}})])
    assert not isinstance(caught.value, RecordUnconfirmed) and caught.value.http_status == 500
    assert rec.snapshot.sequence == 0 and rec.artifact.items[rec.position(first)].in_stock
    assert catalog.changelog.read_since(0) == []
    assert not [p for p in catalog.changelog.folder.iterdir() if p.name.startswith(".record.")]


def test_json_text_is_taken_as_written_and_only_null_is_no_value(
    live: tuple[LiveCatalog, Path],
) -> None:
    """Review (s45): the changes API cleared "None", "NULL", "NA", "N/A" and "NaN" as a
    catalogue file's cells are (a brand "None" became no brand; an item "NA" was refused as
    "a required field is empty"; a price "NaN" was taken as no price). JSON says no value
    with null."""
    catalog, folder = live
    rec = catalog.recommender
    add = _add(folder, "NA", brand="None", name="NULL", fit="n/a")
    catalog.submit([parse_change(add)])
    item = rec.artifact.items[rec.position("NA")]
    assert (item.brand, item.name, item.attributes["fit"]) == ("None", "NULL", "n/a")
    catalog.submit([parse_change({"op": "update", "id": "NA", "set": {"brand": "NA"}})])
    assert rec.artifact.items[rec.position("NA")].brand == "NA"
    catalog.submit([parse_change({"op": "update", "id": "NA", "set": {"brand": None}})])
    assert rec.artifact.items[rec.position("NA")].brand is None
    with pytest.raises(InvalidOptionsError):
        catalog.submit([parse_change({"op": "update", "id": "NA", "set": {"price": "NaN"}})])
    with pytest.raises(InvalidOptionsError):
        catalog.submit([parse_change(_add(folder, "nan-price", price="NaN"))])


def test_an_update_logged_before_json_text_was_literal_replays_as_it_applied(
    live: tuple[LiveCatalog, Path], tmp_path: Path
) -> None:
    """A record without ``literal`` (logged before 2026-12-03) applied "NA" as no value when it
    was written: a replica replaying it now must apply it alike."""
    catalog, _ = live
    rec = catalog.recommender
    first = rec.artifact.items[0].id
    catalog.submit([parse_change({"op": "update", "id": first, "set": {"brand": "Acme"}})])
    catalog.changelog.append(2, [{"op": "update", "id": first, "set": {"brand": "NA"}}])
    catalog.changelog.append(
        3, [{"op": "update", "id": first, "set": {"name": "NA"}, "literal": True}]
    )
    assert catalog.catch_up() == 2
    item = rec.artifact.items[rec.position(first)]
    assert item.brand is None and item.name == "NA"


def test_a_filter_that_can_only_be_a_mistake_is_a_422_naming_it(
    live: tuple[LiveCatalog, Path],
) -> None:
    """Review (s45): a filter whose value cannot be of its field's kind answered 200 with no
    items, which a client cannot tell from "nothing in stock"."""
    catalog, _ = live
    rec = catalog.recommender
    first = rec.artifact.items[0].id
    catalog.submit([parse_change({"op": "update", "id": first, "set": {"fit": "slim"}})])
    query = Query(item_ids=(rec.artifact.items[10].id,))
    wrong = {
        "price": "cheap",
        "stock": ["many"],
        "fit": {"min": 1},  # a range on a field of text
        "available": "maybe",
        "category": "spaceship",
    }
    for name, value in wrong.items():
        with pytest.raises(InvalidOptionsError, match=rf"^filters\.{name}: "):
            rec.recommend(query, Options(filters={name: value}))
    for name, value in {"price": "40", "fit": ["slim", 3], "available": "true"}.items():
        rec.recommend(query, Options(filters={name: value}))
    rec.recommend(query, Options(filters={"price": {"min": 1}, "category": "dress"}))


def test_a_record_written_after_the_catch_up_is_no_gap(
    live: tuple[LiveCatalog, Path], tmp_path: Path
) -> None:
    """Review, session 52: the gap check compared the sequence reached with a listing taken
    after the catch-up, so a record another writer appended in between was "missing": a
    replica starting beside a writer died (4 of 15 restarts), a reload answered 500. Here the
    other writer appends exactly there, twice; the check reads both records and says nothing."""
    catalog, _ = live
    writer = catalog.recommender.artifact.items[0].id

    class Busy(ChangeLog):
        appended = 0

        def sequences(self, after: int = 0) -> list[int]:
            if self.appended < 2:  # another replica's change, written before this listing
                self.appended += 1
                catalog.submit([parse_change({"op": "update", "id": writer, "set": {"stock": 7}})])
            return super().sequences(after)

    starting = LiveCatalog(
        Recommender(Artifact.load(tmp_path / "artifact")), Busy(tmp_path / "log")
    )
    starting.check_no_gap()
    assert starting.snapshot.sequence == catalog.snapshot.sequence == 2


def test_compaction_refuses_a_log_with_a_gap(
    live: tuple[LiveCatalog, Path], tmp_path: Path
) -> None:
    """Review, session 52: compaction replayed up to the first missing record and wrote a
    version without every record past it (exit 0, no word); servers loading it then stopped
    on the gap. Refused, naming the numbers, as a server start is."""
    from stygig.catalog.changelog import ChangeLogGapError
    from stygig.compaction import compact

    catalog, _ = live
    item = catalog.recommender.artifact.items[0].id
    for stock in (1, 2, 3):
        catalog.submit([parse_change({"op": "update", "id": item, "set": {"stock": stock}})])
    next((tmp_path / "log").glob("*00000002.json")).rename(tmp_path / "record-2-moved-away")
    with pytest.raises(ChangeLogGapError, match="holds records up to 3, but record 2 is missing"):
        compact(tmp_path / "artifact", ChangeLog(tmp_path / "log"), tmp_path / "v2")
    assert not (tmp_path / "v2").exists()


def test_a_request_that_keeps_losing_its_record_number_is_refused_in_bounded_time(
    live: tuple[LiveCatalog, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review, session 52: each time another writer took the next number first, a request
    caught up and was applied again; beside a steady stream of small writes a request of
    1,000 changes lost nearly every try (12-30 s, no bound). Past WRITE_RETRY_S it is refused
    (503 changes_busy), nothing of it logged or applied, and the other writer's records are."""
    catalog, _ = live
    item = catalog.recommender.artifact.items[0].id
    (change,) = catalog.prepare([parse_change({"op": "update", "id": item, "set": {"stock": 9}})])
    theirs = change.to_record()

    class Contended(ChangeLog):
        def append(self, sequence: int, changes: list[dict], **meta: object) -> None:
            super().append(sequence, [theirs], **meta)  # another writer got there first
            raise SequenceTaken

    monkeypatch.setattr(living, "WRITE_RETRY_S", 0.3)
    losing = LiveCatalog(
        Recommender(Artifact.load(tmp_path / "artifact")), Contended(tmp_path / "log")
    )
    mine = parse_change({"op": "update", "id": item, "set": {"price": 1.5}})
    with pytest.raises(OverloadedError) as busy:
        losing.submit([mine])
    assert busy.value.code == "changes_busy" and busy.value.http_status == 503
    written = ChangeLog(tmp_path / "log").read_since(0)
    assert len(written) >= 2 and all(r["changes"] == [theirs] for r in written)
    losing.catch_up()
    assert losing.snapshot.sequence == len(written)  # theirs applied, mine not
    row = losing.snapshot.artifact.positions[item]
    assert losing.snapshot.artifact.items[row].price != 1.5


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        ({"attributes": {"e\u0301clat": "x"}}, "composed"),  # e + combining acute
        ({"e\u0301clat": "x"}, "composed"),
        ({"attributes": {"ID": "other"}}, "named as an item field"),
        ({"attributes": {"Category": "jeans"}}, "named as an item field"),
        ({"Category": "evening"}, "named as an item field"),  # at the top level: an attribute
        ({"PRICE": 3}, "named as an item field"),
    ],
)
def test_field_names_that_print_alike_are_one_name(fields: dict[str, Any], said: str) -> None:
    """Review, session 53: "\u00e9clat" and "e\u0301clat" were two attributes of one item,
    and "ID" or "Category" attributes stood beside the item's own fields."""
    with pytest.raises(InvalidOptionsError, match=said):
        parse_change({"op": "update", "id": "sku-1", "set": fields})
    parse_change({"op": "update", "id": "sku-1", "set": {"attributes": {"\u00e9clat": "x"}}})
    with pytest.raises(InvalidOptionsError, match="named as an item field"):  # an add's item
        parse_change({"op": "add", "item": {"id": "n-1", "category": "jeans", "ID": "x"}})


def test_a_compaction_publishes_its_heads_and_model_with_the_rest(
    live: tuple[LiveCatalog, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review, session 53: the heads (and a compatibility model) were added to the new folder
    after it was published, so a compaction stopped between the two left the new version
    without them, under the very version the whole one carries."""
    from stygig import compaction

    catalog, _ = live
    rec = catalog.recommender
    assert rec.artifact.heads  # the sample artifact has them
    catalog.submit(
        [parse_change({"op": "update", "id": rec.artifact.items[0].id, "set": {"stock": 0}})]
    )
    write = compaction._write

    def stopped_after_publishing(*args: Any, **kwargs: Any) -> Path:
        write(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(compaction, "_write", stopped_after_publishing)
    assert catalog.changelog is not None
    with pytest.raises(KeyboardInterrupt):
        compaction.compact(rec.artifact.path, catalog.changelog, tmp_path / "v1")
    done = Artifact.load(tmp_path / "v1")
    assert set(done.heads) == set(rec.artifact.heads)
    assert done.manifest["category_head"]["file"] in done.manifest["files"]

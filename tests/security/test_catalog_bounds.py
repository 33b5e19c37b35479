"""A living catalogue's changes come from clients: what they may write is bounded and checked.

Holes covered (a hostile review, 2026-12-02): a lone UTF-16 surrogate (a JSON escape) in an
added id or a field made every answer holding the item a 500, also after a restart; an
attribute named ``id`` or ``category`` renamed items, replaced other items and duplicated ids;
attributes, genders, usages and filterable names grew without bound (each new label rebuilt
every column; a 422 listed 94,501 names); rows replaced by category flips piled up in memory
(48 x the bodies that made them); bulk change requests held the request workers, so answers
waited seconds; U+2028 inside a JSON Lines string split its line; NaN and 4,000-digit numbers
were taken as values.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from stygig import snapshot as snapshot_module
from stygig.artifact import Artifact
from stygig.catalog.changelog import ChangeLog
from stygig.catalog.changes import (
    MAX_ITEM_ATTRIBUTES,
    parse_change,
    parse_changes_jsonl,
)
from stygig.catalog.loaders import read_catalog
from stygig.catalog.schema import id_problem
from stygig.engine import Options, Query, Recommender
from stygig.errors import CatalogFullError, InputError, InvalidOptionsError
from stygig.living import CHANGE_REQUESTS, LiveCatalog
from tests.integration.server_fixtures import free_port, wait_ready

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _add(catalog: Path, item_id: str, **fields: Any) -> dict[str, Any]:
    photo = base64.b64encode((catalog / "queries" / "blue-jeans.jpg").read_bytes()).decode()
    item = {"id": item_id, "category": "jeans", "gender": "men", **fields}
    return {"op": "add", "item": item, "image_b64": photo}


def _update(item_id: str, **fields: Any) -> dict[str, Any]:
    return {"op": "update", "id": item_id, "set": fields}


def _refused(change: Any) -> InvalidOptionsError:
    with pytest.raises(InvalidOptionsError) as caught:
        parse_change(change)
    return caught.value


# -- text no answer can encode, names that are not what they seem --------------------------


@pytest.mark.parametrize(
    "bad",
    [
        "Z\udc80",
        "x\ud800y",
        "sku-0001\u200b",
        "a\u2028b",
        "a\u2029b",
        "a\u0085b",
        "\ufeffsku",
        "cafe\u0301",  # review (s40): prints as "caf\u00e9", another item's id
        # review (s45): each printed as "sku-0014", a second item beside it
        "sku-0014\u2061",
        "sku-0014\u3164",
        "sku-0014\u115f",
        "sku-0014\uffa0",
        "sku-0014\u034f",
        "sku-0014\u17b4",
        "sku-0014\u206a",
        "sku-0014\U0001d173",
        "sku-0014\ufe0f",
        "sku-0014\u2800",
        "sku-\u00ad0014",
        "sku-0014\u200e",
        "sku-0014\u061c",
        "sku-0014\u00a0",  # stripped, it replaced "sku-0014"
        "\u3000sku-0014",
        " sku-0014",
        "sku\u2002-0014",  # a space other than ' '
    ],
)
def test_an_id_is_visible_encodable_text(sample: tuple[Path, Path], bad: str) -> None:
    assert id_problem(bad) is not None
    assert id_problem("sku-0001 caf\u00e9 \u00fcber-\u6f22\u5b57") is None
    assert id_problem("\u06a9\u0641\u0634\u200c\u0648\u0631\u0632\u0634\u06cc") is None  # ZWNJ
    error = _refused(_add(sample[0], bad))
    assert bad not in error.message
    assert id_problem("\ud55c\uae00") is None  # Hangul syllables: composed is NFC


@pytest.mark.parametrize("name", ["a\u202eb", "fit\u200b", "\u2061fit", "a\u2028b"])
def test_a_field_name_is_visible_text(sample: tuple[Path, Path], name: str) -> None:
    """Review (s45): an attribute named with a right-to-left override was kept, and shown to
    every client in messages and /v1/config, where it reversed the text after it."""
    change = _add(sample[0], "sku-new")
    change["item"]["attributes"] = {name: "x"}
    assert "field name" in _refused(change).message
    update = {"op": "update", "id": "sku-0001", "set": {name: "x"}}
    assert "field name" in _refused(update).message
    change["item"]["attributes"] = {"fit \u200c\u200d": "x"}  # what Persian spelling needs
    parse_change(change)


def test_an_item_whose_id_an_older_rule_took_is_still_updated(
    live: tuple[LiveCatalog, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review (s40): an update re-checked the item's own id against today's rule, so an item
    built before ids had to be NFC could no longer be updated (a 422 naming a wrong type), and
    its logged updates were skipped at replay."""
    from stygig.catalog import changes, loaders

    catalog, folder = live
    old_id = "cafe\u0301"
    for module in (changes, loaders):  # as before the rule
        monkeypatch.setattr(module, "id_problem", lambda value: None)
    catalog.submit([parse_change(_add(folder, old_id))])
    monkeypatch.undo()
    snap = catalog.submit([parse_change(_update(old_id, price=12.5, name="Slim"))])
    item = snap.artifact.items[snap.artifact.positions[old_id]]
    assert (item.id, item.price, item.name) == (old_id, 12.5, "Slim")
    fresh = LiveCatalog(
        Recommender(Artifact.load(tmp_path / "artifact")), ChangeLog(tmp_path / "log")
    )
    assert fresh.catch_up() == 2
    replayed = fresh.snapshot.artifact.items[fresh.snapshot.artifact.positions[old_id]]
    assert (replayed.price, replayed.name) == (12.5, "Slim")


def test_ids_that_differ_only_in_unicode_form_are_not_two_items(tmp_path: Path) -> None:
    """Review (s40): "caf\u00e9" composed and decomposed built as two items that print alike."""
    (tmp_path / "a.jpg").write_bytes(b"not checked")
    path = tmp_path / "catalog.csv"
    path.write_text("id,image,category\ncaf\u00e9,a.jpg,jeans\ncafe\u0301,a.jpg,jeans\n")
    result = read_catalog(path, check_images=False)
    assert [i.id for i in result.items] == ["caf\u00e9"]
    assert [(r.row, r.reason) for r in result.rejects] == [(2, "bad_value")]


def test_text_with_a_lone_surrogate_is_refused_everywhere_in_a_change(
    live: tuple[LiveCatalog, Path],
) -> None:
    catalog, folder = live
    first = catalog.snapshot.artifact.items[0].id
    for change in (
        _update(first, name="x\ud800"),
        _update(first, **{"fit\udc80": "slim"}),
        _update(first, attributes={"fit": "\udfff"}),
        _add(folder, "new-1", brand="\ud83d"),
    ):
        _refused(change)
    # The same, as JSON escapes in a JSON Lines body (how a client sends them).
    with pytest.raises(InvalidOptionsError):
        parse_changes_jsonl(json.dumps(_update(first, name="x\ud800")).encode())
    # A real astral character (a surrogate *pair* in the escape) is text: taken.
    snap = catalog.submit(
        parse_changes_jsonl(json.dumps(_update(first, name="ok \U0001f457")).encode())
    )
    item = snap.artifact.items[snap.artifact.positions[first]]
    assert item.name == "ok \U0001f457"
    answer = catalog.recommender.recommend(Query(item_ids=(first,)), Options(mode="similar"))
    assert json.loads(answer.to_json())


def test_a_json_lines_catalogue_row_with_a_lone_surrogate_is_rejected_alone(
    tmp_path: Path,
) -> None:
    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"not checked")
    rows = [
        {"id": "ok-1", "image": "a.jpg", "category": "jeans"},
        {"id": "bad-1", "image": "a.jpg", "category": "jeans", "name": "x\ud800"},
        {"id": "bad\udc80", "image": "a.jpg", "category": "jeans"},
        {"id": "ok-2", "image": "a.jpg", "category": "jeans"},
    ]
    path = tmp_path / "catalog.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))  # ASCII: \\udXXX escapes
    result = read_catalog(path, check_images=False)
    assert [i.id for i in result.items] == ["ok-1", "ok-2"]
    assert sorted(r.row for r in result.rejects) == [2, 3]


ESCAPES = "Slim \x1b]0;OWNED\x07\x1b]52;c;ZWNobyBoaQ==\x07\x1b[2J jeans"


def test_control_characters_never_enter_catalogue_text(
    live: tuple[LiveCatalog, Path], tmp_path: Path
) -> None:
    """Review (s40): a client's change (or a catalogue row) put terminal escape sequences in an
    item's name, and ``stygig recommend`` printed them to the operator's terminal (retitled
    it, wrote its clipboard with OSC 52, cleared it). A change holding a control character is
    refused, a catalogue row holding one is rejected alone; tabs and line ends stay text."""
    catalog, folder = live
    first = catalog.snapshot.artifact.items[0].id
    for change in (
        _update(first, name=ESCAPES),
        _update(first, attributes={"fit": "a\x00b"}),
        _update(first, **{"fi\x9bt": "slim"}),
        _add(folder, "new-1", brand="\x7f"),
    ):
        _refused(change)
    pasted = "two\tlines\r\nok\x0bpasted\x0cfrom a word processor"  # whitespace: text
    snap = catalog.submit(parse_changes_jsonl(json.dumps(_update(first, name=pasted)).encode()))
    assert snap.artifact.items[snap.artifact.positions[first]].name == pasted
    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"not checked")
    rows = [
        {"id": "ok-1", "image": "a.jpg", "category": "jeans"},
        {"id": "bad-1", "image": "a.jpg", "category": "jeans", "name": ESCAPES},
        {"id": "bad-2", "image": "a.jpg", "category": "jeans", "fi\x1bt": "slim"},
        {"id": "ok-2", "image": "a.jpg", "category": "jeans", "name": "a\tb"},
    ]
    path = tmp_path / "catalog.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = read_catalog(path, check_images=False)
    assert [i.id for i in result.items] == ["ok-1", "ok-2"]
    assert {r.row: r.reason for r in result.rejects} == {2: "bad_value", 3: "bad_value"}


def test_column_names_are_bounded_and_unnamed_columns_are_no_attribute(tmp_path: Path) -> None:
    """Review (s40): a 130,000-character column name went into every item (and into every 422
    listing the filterable names), and an empty one became an attribute named ''."""
    (tmp_path / "a.jpg").write_bytes(b"not checked")
    path = tmp_path / "catalog.csv"
    path.write_text("id,image,category,fit,\nok-1,a.jpg,jeans,slim,x\n")
    result = read_catalog(path, check_images=False)
    assert [i.attributes for i in result.items] == [{"fit": "slim"}]
    path.write_text(f"id,image,category,{'x' * 201}\nbad-1,a.jpg,jeans,slim\n")
    result = read_catalog(path, check_images=False)
    assert not result.items and [r.reason for r in result.rejects] == ["bad_value"]
    assert "column name is over 200" in result.rejects[0].detail


def test_a_json_lines_body_at_its_bound_may_space_its_changes() -> None:
    """Review (s40): 1,000 changes each followed by a blank line, and the body's final line
    end, were refused by the count of line ends made to stop millions of blank lines."""
    from stygig.catalog.changes import MAX_CHANGES

    line = json.dumps(_update("a", price=1))
    body = ("\n".join([line] * MAX_CHANGES).replace("\n", "\n\n") + "\n").encode()
    assert len(parse_changes_jsonl(body)) == MAX_CHANGES
    with pytest.raises(InvalidOptionsError, match="blank lines"):
        parse_changes_jsonl(line.encode() + b"\n" * (2 * MAX_CHANGES + 2))


def test_json_lines_end_at_newlines_only() -> None:
    """U+2028 and U+0085 inside a string are text (``str.splitlines`` cut lines there)."""
    body = '{"op": "update", "id": "a", "set": {"name": "x\u2028y\u0085z"}}\n'.encode()
    [change] = parse_changes_jsonl(body)
    assert change.fields["name"] == "x\u2028y\u0085z"


@pytest.mark.parametrize(
    "value", ["NaN", "Infinity", "-Infinity", "1" + "0" * 4000, "1e300", "-2e15"]
)
def test_a_number_is_finite_and_bounded(value: str) -> None:
    body = b'{"op": "update", "id": "a", "set": {"price": ' + value.encode() + b"}}"
    with pytest.raises(InputError) as caught:
        parse_changes_jsonl(body)
    assert caught.value.http_status in (400, 422)


def test_an_attribute_never_stands_in_for_an_item_field(live: tuple[LiveCatalog, Path]) -> None:
    catalog, folder = live
    items = catalog.snapshot.artifact.items
    first, other = items[0].id, items[1].id
    for change in (
        _update(first, attributes={"id": "EVIL"}),
        _update(first, attributes={"id": other}),
        _update(first, attributes={"category": "dress"}),
        _update(first, attributes={"price": 1}),
        _add(folder, "new-1", attributes={"id": other}),
        _add(folder, "new-2", attributes={"available": "false"}),
    ):
        error = _refused(change)
        assert "item field" in error.message
    before = catalog.snapshot
    assert before.artifact.items[before.artifact.positions[first]].id == first


# -- bounds on what changes may grow ---------------------------------------------------------


def test_an_update_cannot_pile_attributes_onto_an_item(live: tuple[LiveCatalog, Path]) -> None:
    catalog, _ = live
    first = catalog.snapshot.artifact.items[0].id
    half = MAX_ITEM_ATTRIBUTES // 2 + 1
    catalog.submit([parse_change(_update(first, **{f"a{n}": "x" for n in range(half)}))])
    with pytest.raises(InvalidOptionsError) as caught:
        catalog.submit([parse_change(_update(first, **{f"b{n}": "x" for n in range(half)}))])
    assert caught.value.code == "too_many_attributes"
    # An add counts top-level and nested attributes together (64 + 64 fit each object).
    _, folder = live
    top = {f"t{n}": "x" for n in range(40)}
    nested = {f"n{n}": "x" for n in range(40)}
    with pytest.raises(InvalidOptionsError) as added:
        catalog.prepare([parse_change(_add(folder, "wide", **top, attributes=nested))])
    assert added.value.code == "too_many_attributes"
    # Deleting some (null) and setting others in their place is fine.
    catalog.submit([parse_change(_update(first, **{f"a{n}": None for n in range(half)}, b0="y"))])


def test_new_labels_and_attribute_names_are_bounded(
    live: tuple[LiveCatalog, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog, _ = live
    cols = catalog.snapshot.columns
    items = catalog.snapshot.artifact.items
    monkeypatch.setattr(snapshot_module, "MAX_GENDERS", len(cols.gender_names) + 1)
    monkeypatch.setattr(snapshot_module, "MAX_USAGES", len(cols.usage_names) + 1)
    monkeypatch.setattr(snapshot_module, "MAX_FILTERABLE", len(cols.filterable) + 1)
    for field, first, second in (
        ("gender", "gender-one", "gender-two"),
        ("usage", "usage-one", "usage-two"),
        ("fabric-one", "x", None),
    ):
        if second is None:  # a new attribute name: one fits, the next does not
            catalog.submit([parse_change(_update(items[0].id, **{field: first}))])
            change = _update(items[1].id, **{"fabric-two": "y"})
        else:
            catalog.submit([parse_change(_update(items[0].id, **{field: first}))])
            change = _update(items[1].id, **{field: second})
        before = catalog.snapshot
        with pytest.raises(CatalogFullError) as caught:
            catalog.submit([parse_change(change)])
        assert caught.value.http_status == 409 and catalog.snapshot is before
    # A label the catalogue has is always taken.
    catalog.submit([parse_change(_update(items[2].id, gender="gender-one"))])


def test_replaced_rows_are_bounded_until_compaction(
    live: tuple[LiveCatalog, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A category change gives the item a new row and keeps the old one (its vector) until
    compaction: past the bound such changes are refused, others still taken."""
    catalog, folder = live
    monkeypatch.setattr(snapshot_module, "MAX_DEAD_ROWS", 0)  # the bound: the live count
    snap = catalog.snapshot
    live_items = snap.live_items
    first = snap.artifact.items[0]
    flips = ("jeans", "dress")
    refused = None
    for n in range(live_items + 2):
        try:
            catalog.submit([parse_change(_update(first.id, category=flips[n % 2]))])
        except CatalogFullError as e:
            refused = (n, e)
            break
    assert refused is not None and refused[0] == live_items, refused  # flip live + 1
    assert "compact" in refused[1].message
    # Updates in place, removes and new ids are still taken.
    catalog.submit([parse_change(_update(first.id, price=3, stock=2))])
    catalog.submit([parse_change({"op": "remove", "id": snap.artifact.items[1].id})])
    catalog.submit([parse_change(_add(folder, "brand-new"))])
    with pytest.raises(CatalogFullError):
        catalog.submit([parse_change(_add(folder, "brand-new"))])  # replacing it: a new row


def test_replaced_rows_keep_no_text(live: tuple[LiveCatalog, Path]) -> None:
    """Audit, session 46: a replaced row kept its whole item until compaction, so the bound
    on replaced rows (a count) let a client hold ~130 KiB a row (64 attributes of 2,000
    characters): gigabytes. A dead row keeps its vector and labels, no text; the live item
    is unchanged."""
    catalog, folder = live
    heavy = {"name": "n" * 2_000, "attributes": {f"a{i}": "x" * 2_000 for i in range(60)}}
    for _ in range(3):  # two replaced rows, then the live one
        catalog.submit([parse_change(_add(folder, "heavy", brand="b" * 2_000, **heavy))])
    catalog.submit([parse_change(_add(folder, "gone", **heavy))])
    catalog.submit([parse_change({"op": "remove", "id": "gone"})])
    snap = catalog.snapshot
    items, live_rows = snap.artifact.items, set(snap.artifact.positions.values())
    dead = [items[p] for p in range(len(items)) if p not in live_rows]
    assert {i.id for i in dead} >= {"heavy", "gone"} and len(dead) >= 3
    assert all(not i.attributes and i.name is None and i.brand is None for i in dead)
    kept = items[snap.artifact.positions["heavy"]]
    assert kept.attributes == heavy["attributes"] and kept.brand == "b" * 2_000


# -- change requests never hold the request workers -----------------------------------------


@contextmanager
def _living_server(art: Path, log: Path) -> Iterator[str]:
    import uvicorn

    from stygig.serving.app import ServerConfig, create_app
    from stygig.serving.catalog_command import CatalogSettings

    port = free_port()
    config = ServerConfig(
        artifact=art,
        catalog=CatalogSettings(change_log=str(log), follow_interval_s=None),
        warmup_rounds=1,
        threads=2,
    )
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config), host="127.0.0.1", port=port, log_config=None, lifespan="on"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_ready(f"http://127.0.0.1:{port}", thread, timeout=120)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(60)


def test_change_requests_never_hold_the_request_workers(
    sample: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As many change requests as the server runs at once, each held inside its change (as a
    bulk of photos to encode holds it for a minute): a recommendation is still answered (the
    two request workers were both held before), one more change request is 503 at once, and
    the held ones finish when let go. Slow uploads hold no slot: four connections sending a
    change body a byte at a time left every honest change a 503 (review, session 42)."""
    art = tmp_path / "artifact"
    shutil.copytree(sample[1], art)
    release, entered, holding = threading.Event(), threading.Semaphore(0), threading.Event()
    submit = LiveCatalog.submit

    def held(self: LiveCatalog, requests: Any, **kwargs: Any) -> Any:
        if not holding.is_set():
            return submit(self, requests, **kwargs)
        entered.release()
        assert release.wait(120)
        return submit(self, requests, **kwargs)

    monkeypatch.setattr(LiveCatalog, "submit", held)
    from stygig.serving import requests as serving_requests

    routed, media_type = threading.Semaphore(0), serving_requests.media_type

    def seen(value: str | None) -> str:
        routed.release()  # the change route reads the type first, then the body
        return media_type(value)

    monkeypatch.setattr(serving_requests, "media_type", seen)
    photo = (sample[0] / "queries" / "blue-jeans.jpg").read_bytes()
    with (
        _living_server(art, tmp_path / "log") as url,
        ThreadPoolExecutor(8) as pool,
        httpx.Client(base_url=url, timeout=120) as client,
    ):
        first = client.get("/v1/catalog", params={"limit": 1}).json()["items"][0]["id"]
        port = int(url.rsplit(":", 1)[1])
        uploads = []
        while routed.acquire(blocking=False):  # only the uploads' count from here
            pass
        for _ in range(CHANGE_REQUESTS):
            upload = socket.create_connection(("127.0.0.1", port), timeout=30)
            upload.sendall(
                b"POST /v1/catalog/changes HTTP/1.1\r\nhost: 127.0.0.1\r\n"
                b"content-type: application/json\r\ncontent-length: 100\r\n\r\n{"
            )
            uploads.append(upload)
        try:
            for _ in range(CHANGE_REQUESTS):  # each upload in the route, reading its body
                assert routed.acquire(timeout=60)
            honest = client.post("/v1/catalog/changes", json=_update(first, price=7))
            assert honest.status_code == 200, honest.text
        finally:
            for upload in uploads:
                upload.close()
        holding.set()
        pending = [
            pool.submit(client.post, "/v1/catalog/changes", json=_update(first, price=n))
            for n in range(CHANGE_REQUESTS)
        ]
        try:
            for _ in range(CHANGE_REQUESTS):
                assert entered.acquire(timeout=60)
            # Two recommendations at once (so neither is answered on the event loop alone).
            answers = [
                pool.submit(
                    client.post,
                    "/invocations",
                    content=photo,
                    headers={"content-type": "image/jpeg"},
                )
                for _ in range(2)
            ]
            assert [a.result(timeout=60).status_code for a in answers] == [200, 200]
            busy = client.post("/v1/catalog/changes", json=_update(first, price=99))
            assert busy.status_code == 503 and busy.json()["error"]["code"] == "changes_busy"
        finally:
            release.set()
        assert sorted(p.result(timeout=60).json()["sequence"] for p in pending) == list(
            range(2, CHANGE_REQUESTS + 2)
        )


def test_a_replay_applies_what_was_accepted_whatever_the_bounds_are_now(
    live: tuple[LiveCatalog, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bounds are checked at submission: a restart (or a replica, or compaction) under lower
    bounds than the writer's must not drop changes the writer acknowledged."""
    catalog, _ = live
    first = catalog.snapshot.artifact.items[0].id
    for n, category in enumerate(("dress", "jeans", "dress")):
        catalog.submit([parse_change(_update(first, category=category, price=100 + n))])
    monkeypatch.setattr(snapshot_module, "MAX_DEAD_ROWS", 0)
    monkeypatch.setattr(snapshot_module, "MAX_GENDERS", 0)
    fresh = LiveCatalog(
        Recommender(Artifact.load(tmp_path / "artifact")), ChangeLog(tmp_path / "log")
    )
    assert fresh.catch_up() == 3
    item = fresh.snapshot.artifact.items[fresh.snapshot.artifact.positions[first]]
    assert (item.category, item.price) == ("dress", 102)


def test_a_logged_change_with_a_lone_surrogate_is_skipped_on_replay() -> None:
    """Logs written before the surrogate check could hold one: replayed, it would make every
    answer holding the item a 500 again."""
    from stygig.catalog.changes import change_from_record

    assert change_from_record({"op": "update", "id": "a", "set": {"name": "ok"}}).fields
    with pytest.raises(ValueError):
        change_from_record({"op": "update", "id": "a", "set": {"name": "x\ud800"}})


def test_change_refusals_name_the_right_flag_and_status(
    sample: tuple[Path, Path], tmp_path: Path
) -> None:
    """Review (s40): a photo location outside the catalogue's photo folders was refused naming
    the async endpoint's --allow-input-prefix (which never allows catalogue photos), and a body
    of another content type was a 422, where every other route answers 415."""
    art = tmp_path / "artifact"
    shutil.copytree(sample[1], art)
    with _living_server(art, tmp_path / "log") as url, httpx.Client(base_url=url) as client:
        plain = client.post(
            "/v1/catalog/changes", content=b"op=add", headers={"content-type": "text/plain"}
        )
        assert plain.status_code == 415, plain.text
        assert plain.json()["error"]["code"] == "unsupported_content_type"
        item = {"id": "new-1", "category": "jeans", "gender": "men"}
        outside = {"op": "add", "item": item, "image": str(sample[0] / "queries" / "x.jpg")}
        refused = client.post("/v1/catalog/changes", json=outside)
        assert refused.status_code == 422, refused.text
        message = refused.json()["error"]["message"]
        assert "--catalog-photos" in message and "--allow-input-prefix" not in message
        assert str(sample[0]) not in refused.text


def test_the_cli_writes_out_the_control_characters_of_older_text(
    live: tuple[LiveCatalog, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Text accepted before control characters were refused (a change log, an artifact built
    earlier) still reaches ``stygig recommend``'s table: its escapes are written out, never
    sent to the operator's terminal (review, s40)."""
    from stygig.catalog import changes
    from stygig.cli import main

    catalog, _ = live
    items = catalog.snapshot.artifact.items
    monkeypatch.setattr(changes, "text_problem", lambda value: None)  # as before the rule
    catalog.submit([parse_change(_update(i.id, name=ESCAPES)) for i in items])
    monkeypatch.undo()
    argv = ["recommend", "--artifact", str(tmp_path / "artifact"), "--item", items[0].id]
    assert main([*argv, "--change-log", str(tmp_path / "log")]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "Slim \\u001b]0;OWNED\\u0007" in out  # the name is there, written out
    # A line end in a name is written out too: it printed a line of the table of its own.
    catalog.submit([parse_change(_update(i.id, name="x\nfake  line")) for i in items])
    assert main([*argv, "--change-log", str(tmp_path / "log")]) == 0
    out = capsys.readouterr().out
    assert "x\\nfake  line" in out and "\nfake  line" not in out


def test_the_change_route_documents_its_body_and_answer(
    sample: tuple[Path, Path], tmp_path: Path
) -> None:
    """Review (s40): POST /v1/catalog/changes had no request body in the OpenAPI document.
    Bodies the server takes validate against it, one it refuses does not, and the answer
    validates against its documented 200."""
    import jsonschema

    art = tmp_path / "artifact"
    shutil.copytree(sample[1], art)
    with _living_server(art, tmp_path / "log") as url, httpx.Client(base_url=url) as client:
        document = client.get("/openapi.json")
        assert document.status_code == 200, document.text[:300]
        route = document.json()["paths"]["/v1/catalog/changes"]["post"]
        body = jsonschema.Draft202012Validator(
            route["requestBody"]["content"]["application/json"]["schema"]
        )
        assert "application/x-ndjson" in route["requestBody"]["content"]
        answer = jsonschema.Draft202012Validator(
            {
                **route["responses"]["200"]["content"]["application/json"]["schema"],
                "components": document.json()["components"],
            }
        )
        first = client.get("/v1/catalog", params={"limit": 1}).json()["items"][0]["id"]
        for change in (
            _add(sample[0], "new-1", name="Slim jeans", price=30),
            _update(first, price=12.5, attributes={"fit": "slim"}),
            {"changes": [_update(first, name="x"), {"op": "remove", "id": "new-1"}]},
        ):
            assert not list(body.iter_errors(change)), change
            r = client.post("/v1/catalog/changes", json=change)
            assert r.status_code == 200, r.text
            assert not list(answer.iter_errors(r.json()))
        beside = {"op": "add", "id": "new-2", "item": {"category": "jeans"}}  # id beside
        beside["image_b64"] = _add(sample[0], "x")["image_b64"]
        assert not list(body.iter_errors(beside))
        assert client.post("/v1/catalog/changes", json=beside).status_code == 200
        for wrong in ({"op": "rename", "id": first}, {"op": "remove"}, {"changes": []}):
            assert list(body.iter_errors(wrong))
            assert client.post("/v1/catalog/changes", json=wrong).status_code == 422


def test_an_add_names_its_photo_once(sample: tuple[Path, Path]) -> None:
    """Review (s45): an add with both bytes and a location (even one no operator allowed) was
    taken with the location silently dropped; the async API refuses the same as ambiguous."""
    both = {**_add(sample[0], "sku-new"), "image": "/etc/passwd"}
    with pytest.raises(InputError) as caught:
        parse_change(both)
    assert caught.value.code == "ambiguous_input" and "/etc/passwd" not in caught.value.message
    inside = _add(sample[0], "sku-new")
    inside["item"]["image"] = "/etc/passwd"
    with pytest.raises(InputError):
        parse_change(inside)
    two = {"op": "add", "item": {"id": "x", "category": "jeans", "image": "a.jpg"}, "image": "b"}
    with pytest.raises(InvalidOptionsError, match="differ"):
        parse_change(two)
    parse_change(_add(sample[0], "sku-new"))  # bytes alone

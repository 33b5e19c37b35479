"""A living catalogue over real HTTP: two servers on one log, kill -9, hot reload, the CLI.

The servers are real processes (uvicorn on the app, as ``stygig serve`` runs it), started by
this file's ``__main__`` with the living-catalogue settings.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from stygig.errors import InputError
from tests.integration.server_fixtures import REPO, free_port, wait_ready

pytestmark = pytest.mark.slow

#: Concurrent clients in the hot-reload test (100 in the benchmark).
CLIENTS = 24


@contextmanager
def living_server(
    artifact: Path,
    log: Path,
    out: Path,
    *,
    watch: Path | None = None,
    watch_interval: float = 0.5,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    args = [sys.executable, __file__, str(artifact), str(log), str(port)]
    if watch is not None:
        args += [str(watch), str(watch_interval)]
    with out.open("ab") as handle:
        process = subprocess.Popen(
            args,
            cwd=REPO,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])},
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, timeout=120)
        yield url, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def _until(check: Any, timeout: float = 30.0) -> Any:
    """Poll ``check()`` until it returns something truthy (a deadline, never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def _photo(catalog: Path, name: str = "blue-jeans.jpg") -> bytes:
    return (catalog / "queries" / name).read_bytes()


def _add(catalog: Path, item_id: str, name: str = "blue-jeans.jpg") -> dict[str, Any]:
    photo = base64.b64encode(_photo(catalog, name)).decode()
    item = {"id": item_id, "category": "jeans", "gender": "men", "price": 20}
    return {"op": "add", "item": item, "image_b64": photo}


def _similar(client: httpx.Client, photo: bytes) -> dict[str, Any]:
    r = client.post(
        "/invocations",
        content=photo,
        headers={"content-type": "image/jpeg"},
        params={"mode": "similar", "k_total": 20},
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


@pytest.fixture
def workspace(sample: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path, Path]:
    art = tmp_path / "artifact"
    shutil.copytree(sample[1], art)
    return sample[0], art, tmp_path / "artifact.changes"


def test_two_servers_one_log_converge(workspace: tuple[Path, Path, Path], tmp_path: Path) -> None:
    catalog, art, log = workspace
    out = tmp_path / "servers.log"
    photo = _photo(catalog)
    with (
        living_server(art, log, out) as (url_a, _),
        living_server(art, log, out) as (url_b, _),
        httpx.Client(base_url=url_a, timeout=60) as a,
        httpx.Client(base_url=url_b, timeout=60) as b,
    ):
        first = _similar(a, photo)["items"][0]["id"]
        r = a.post("/v1/catalog/changes", json=_add(catalog, "new-a"))
        assert r.status_code == 200 and r.json()["sequence"] == 1
        # The writer sees its change on the very next request.
        assert _similar(a, photo)["items"][0]["id"] == "new-a"
        body = "\n".join(
            json.dumps(c)
            for c in (
                {"op": "update", "id": first, "set": {"stock": 0}},
                {"op": "update", "id": "new-a", "set": {"price": 15.5}},
                _add(catalog, "new-b", "black-shoes.jpg"),
            )
        )
        r = b.post(
            "/v1/catalog/changes", content=body, headers={"content-type": "application/x-ndjson"}
        )
        assert r.status_code == 200 and r.json()["sequence"] == 2, r.text
        # A bad change: 4xx with the reason, nothing changes, no record is written.
        bad = {"op": "update", "id": first, "set": {"category": "spaceship"}}
        r = a.post("/v1/catalog/changes", json=bad)
        assert r.status_code == 422 and r.json()["error"]["code"] == "unknown_category"
        # An infinite price (JSON's non-standard Infinity) would make item answers invalid JSON.
        r = a.post(
            "/v1/catalog/changes",
            content=f'{{"op":"update","id":"{first}","set":{{"price":Infinity}}}}',
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 422 and r.json()["error"]["code"] == "bad_value", r.text
        for client in (a, b):
            assert _until(lambda c=client: c.get("/v1/catalog/version").json()["sequence"] == 2)
        answers = [_similar(c, photo) for c in (a, b)]
        assert answers[0]["artifact"] == answers[1]["artifact"]
        assert answers[0]["artifact"]["catalog"].endswith("+2")
        assert [i["id"] for i in answers[0]["items"]] == [i["id"] for i in answers[1]["items"]]
        assert first not in [i["id"] for i in answers[0]["items"]]  # sold out
        assert a.get("/v1/items/new-a").json()["price"] == 15.5
        assert b.get("/v1/items/new-b/image").status_code == 200
        version = a.get("/v1/catalog/version", params={"since": 1}).json()
        assert first in version["unavailable_since"]
    assert sorted(p.name for p in log.iterdir()) == ["000000000001.json", "000000000002.json"]


def test_kill_9_loses_no_acknowledged_change(
    workspace: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _catalog, art, log = workspace
    out = tmp_path / "server.log"
    acked: dict[str, int] = {}
    with living_server(art, log, out) as (url, process), httpx.Client(base_url=url) as client:
        ids = [i["id"] for i in client.get("/v1/catalog", params={"limit": 50}).json()["items"]]
        stop = threading.Event()

        def stream() -> None:
            for n in range(1000):
                if stop.is_set():
                    return
                item_id = ids[n % len(ids)]
                change = {"op": "update", "id": item_id, "set": {"counter": str(n)}}
                try:
                    r = client.post("/v1/catalog/changes", json=change, timeout=30)
                except httpx.HTTPError:
                    return  # the server died mid-request: not acknowledged
                if r.status_code == 200:
                    acked[item_id] = n

        writer = threading.Thread(target=stream)
        writer.start()
        assert _until(lambda: len(acked) >= 20, timeout=120)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        stop.set()
        writer.join(60)
    last = max(acked.values())
    with living_server(art, log, out) as (url, _), httpx.Client(base_url=url) as client:
        version = client.get("/v1/catalog/version").json()
        records = sorted(p.name for p in log.iterdir() if p.suffix == ".json")
        # Every record is applied once: the sequence is the number of records written.
        assert version["sequence"] == len(records) >= last + 1
        for item_id, n in acked.items():
            item = client.get(f"/v1/items/{item_id}").json()
            assert int(item["attributes"]["counter"]) >= n  # acknowledged: never lost


def test_a_change_request_costing_more_decoding_than_its_budget_is_a_413_before_any(
    workspace: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """Review, session 49: 999 lossless WebPs of 4 MP (212 bytes each, a 360 KB body) cost 32 s
    of CPU. A server bounds a change request's decoding (CHANGE_DECODE_BUDGET), from the
    photos' headers: one photo over makes a 413, and nothing changes."""
    from PIL import Image

    from stygig.living import CHANGE_DECODE_BUDGET

    _, art, log = workspace
    buffer = io.BytesIO()
    Image.new("RGB", (2000, 2000), (200, 30, 30)).save(buffer, "WEBP", lossless=True)
    webp = base64.b64encode(buffer.getvalue()).decode()
    fits = CHANGE_DECODE_BUDGET // (2000 * 2000)
    item = {"category": "jeans", "gender": "men"}
    body = [
        {"op": "add", "item": {**item, "id": f"w{i}"}, "image_b64": webp} for i in range(fits + 1)
    ]
    with (
        living_server(art, log, tmp_path / "server.log") as (url, _),
        httpx.Client(base_url=url, timeout=120) as client,
    ):
        r = client.post("/v1/catalog/changes", json={"changes": body})
        assert r.status_code == 413, r.text
        error = r.json()["error"]
        assert error["code"] == "images_too_costly" and "several requests" in error["message"]
        assert client.get("/v1/catalog/version").json()["sequence"] == 0
    assert not log.exists() or not any(log.iterdir())


def test_a_removed_items_gender_is_neither_listed_nor_accepted(
    workspace: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """Review, session 49: /v1/config and the 422s' "known" lists named the genders of items
    removed since."""
    catalog, art, log = workspace
    add = _add(catalog, "odd-1")
    add["item"]["gender"] = "gg0"
    with (
        living_server(art, log, tmp_path / "server.log") as (url, _),
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        assert client.post("/v1/catalog/changes", json=add).status_code == 200
        assert "gg0" in client.get("/v1/config").json()["genders"]
        assert client.get("/v1/catalog", params={"gender": "gg0"}).json()["items"]
        r = client.post("/v1/catalog/changes", json={"op": "remove", "id": "odd-1"})
        assert r.status_code == 200, r.text
        assert "gg0" not in client.get("/v1/config").json()["genders"]
        r = client.get("/v1/catalog", params={"gender": "gg0"})
        assert r.status_code == 422 and "gg0" not in r.text


def test_a_server_starts_again_after_its_first_item_was_removed(
    workspace: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """Found in session 35 (a Ray Serve replica would not start): the warm-up queried the
    artifact's first item by id, so once a logged change had removed that item, replaying the
    log at start made the warm-up fail and the server never became ready."""
    from stygig.artifact import Artifact

    _catalog, art, log = workspace
    first = Artifact.load(art).items[0].id
    out = tmp_path / "server.log"
    with living_server(art, log, out) as (url, _), httpx.Client(base_url=url) as client:
        r = client.post("/v1/catalog/changes", json={"op": "remove", "id": first})
        assert r.status_code == 200, r.text
    with living_server(art, log, out) as (url, _), httpx.Client(base_url=url) as client:
        assert client.get("/ping").status_code == 200
        assert client.get(f"/v1/items/{first}").status_code == 404
        assert client.get("/v1/catalog/version").json()["sequence"] == 1


def test_hot_reload_under_load(workspace: tuple[Path, Path, Path], tmp_path: Path) -> None:
    catalog, art, log = workspace
    pointer = tmp_path / "serve-this"
    pointer.write_text(str(art))
    photo = _photo(catalog)
    out = tmp_path / "server.log"
    # Reloads come only from SIGHUP and POST (the pointer is not polled in between): a poll
    # between writing the pointer and the POST would take the reload, and the POST would
    # answer "reloaded": false.
    with living_server(art, log, out, watch=pointer, watch_interval=3600) as (url, process):
        with httpx.Client(base_url=url, timeout=60) as client:
            r = client.post("/v1/catalog/changes", json=_add(catalog, "new-1"))
            assert r.status_code == 200
        # Compaction folds the log into a new version (the CLI, against the folders).
        args = _cli(
            [
                "compact",
                "--artifact",
                str(art),
                "--change-log",
                str(log),
                "--out",
                str(tmp_path / "v2"),
                "--json",
            ]
        )
        assert args.func(args) == 0
        manifest = json.loads((tmp_path / "v2" / "manifest.json").read_text())
        assert manifest["catalog"]["last_sequence"] == 1
        failures: list[int] = []
        seen: set[str] = set()  # the artifact versions answers came from
        done = threading.Event()

        def load() -> None:
            with httpx.Client(base_url=url, timeout=120) as c:
                while not done.is_set():
                    try:
                        r = c.post(
                            "/invocations", content=photo, headers={"content-type": "image/jpeg"}
                        )
                    except httpx.HTTPError:
                        failures.append(0)  # a dropped connection is a failed request too
                        continue
                    if r.status_code != 200:
                        failures.append(r.status_code)
                    else:
                        seen.add(r.json()["artifact"]["version"])

        # CLIENTS concurrent clients (the benchmark runs 100: bench_catalog_changes.py).
        workers = [threading.Thread(target=load) for _ in range(CLIENTS)]
        for w in workers:
            w.start()
        try:
            old = _until(lambda: set(seen), 120)
            # An unverifiable version is refused: the server stays on the old one.
            broken = tmp_path / "broken"
            shutil.copytree(tmp_path / "v2", broken)
            with (broken / "items.jsonl").open("a") as handle:
                handle.write("\n")
            pointer.write_text(str(broken))
            with httpx.Client(base_url=url, timeout=120) as c:
                r = c.post("/v1/catalog/reload")
                assert r.status_code == 409 and r.json()["error"]["code"] == "reload_refused"
                pointer.write_text(str(tmp_path / "v2"))
                process.send_signal(signal.SIGHUP)
                new = manifest["version"]
                assert _until(
                    lambda: c.get("/v1/catalog/version").json()["artifact_version"] == new, 60
                )
                after = _similar(c, photo)
                assert after["artifact"]["catalog"] == f"{new}+1"
                assert after["items"][0]["id"] == "new-1"
                # And back to the first version (POST), under the same load.
                pointer.write_text(str(art))
                assert c.post("/v1/catalog/reload").json()["reloaded"] is True
                # The load's own answers came from both versions: it ran across the swaps.
                assert _until(lambda: new in seen, 60)
        finally:
            done.set()
            for w in workers:
                w.join(120)
        assert failures == []
        assert old and len(seen) == 2


@pytest.fixture
def s3_log(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An ``s3://`` change-log prefix on a moto server (in-process, on a free port)."""
    pytest.importorskip("moto")
    import boto3
    from moto.server import ThreadedMotoServer

    from stygig import storage

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
    }.items():
        monkeypatch.setenv(key, value)
    storage._clients.clear()
    try:
        boto3.client("s3").create_bucket(Bucket="shop")
        yield "s3://shop/catalog/changes"
    finally:
        storage._clients.clear()
        server.stop()


def test_a_watching_server_starts_on_the_version_its_pointer_names(
    workspace: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """Review (s38): a restarted (or added) --watch replica loaded --artifact, replayed the
    log on that ancestor and served it (192 items instead of 978) until its first watch
    tick. It starts on the pointer's version; a pointer naming nothing readable falls back to
    --artifact with a warning."""
    from stygig.artifact import Artifact
    from stygig.catalog.changelog import ChangeLog
    from stygig.catalog.changes import parse_change
    from stygig.compaction import compact
    from stygig.engine import Recommender
    from stygig.living import LiveCatalog

    catalog, art, log = workspace
    live = LiveCatalog(Recommender(Artifact.load(art)), ChangeLog(log))
    live.submit([parse_change(_add(catalog, "new-1"))])
    v2 = compact(art, ChangeLog(log), tmp_path / "v2")["version"]
    pointer = tmp_path / "serve-this"
    pointer.write_text(str(tmp_path / "v2"))
    out = tmp_path / "server.log"
    with living_server(art, log, out, watch=pointer, watch_interval=3600) as (url, _):
        version = httpx.get(f"{url}/v1/catalog/version", timeout=30).json()
        assert version["artifact_version"] == v2 and version["sequence"] == 1
    pointer.write_text(str(tmp_path / "nothing-here"))
    with living_server(art, log, out, watch=pointer, watch_interval=3600) as (url, _):
        version = httpx.get(f"{url}/v1/catalog/version", timeout=30).json()
        assert version["artifact_version"] != v2 and version["sequence"] == 1
    assert "names no readable artifact" in out.read_text()
    # Review, session 49: a version whose files fail their checksums killed a starting
    # replica (the running ones refuse it and go on); it starts on --artifact, and the
    # watch's refusals say why.
    pointer.write_text(str(tmp_path / "v2"))
    rows = tmp_path / "v2" / "embeddings.npy"
    data = bytearray(rows.read_bytes())
    data[-10] ^= 0xFF
    rows.write_bytes(bytes(data))
    with living_server(art, log, out, watch=pointer, watch_interval=0.2) as (url, _):
        version = httpx.get(f"{url}/v1/catalog/version", timeout=30).json()
        assert version["artifact_version"] != v2 and version["sequence"] == 1
        said = "hot reload refused: the new artifact version cannot be verified"
        assert _until(lambda: said in out.read_text())
    text = out.read_text()
    assert "the watched pointer's artifact cannot be loaded (artifact_checksum_mismatch)" in text
    assert "(artifact_checksum_mismatch); still serving" in text


def test_s3_change_log_two_writers_converge(
    s3_log: str, workspace: tuple[Path, Path, Path]
) -> None:
    from stygig.artifact import Artifact
    from stygig.catalog.changelog import ChangeLog, SequenceTaken
    from stygig.catalog.changes import parse_change
    from stygig.engine import Recommender
    from stygig.living import LiveCatalog

    catalog, art, _ = workspace
    one, two = (LiveCatalog(Recommender(Artifact.load(art)), ChangeLog(s3_log)) for _ in "12")
    one.submit([parse_change(_add(catalog, "s3-a"))])
    # The other writer has not seen record 1: it catches up first, then takes number 2.
    snap = two.submit([parse_change({"op": "update", "id": "s3-a", "set": {"stock": 0}})])
    assert snap.sequence == 2 and not snap.artifact.items[snap.columns.position("s3-a")].in_stock
    assert one.catch_up() == 1 and one.snapshot.catalog_version == two.snapshot.catalog_version
    with pytest.raises(SequenceTaken):  # numbers are taken exclusively (If-None-Match)
        ChangeLog(s3_log).append(2, [])


class _LostAnswers:
    """An S3 client whose ``put_object`` answer never arrives (a connection cut): after the
    put landed (``lands``) or before it was sent; ``get_object`` may be cut too. ``retried``:
    the client sends the landed put again, as botocore's retries do, and returns what S3
    answers to that (412: the key exists)."""

    def __init__(self, real: object, *, lands: bool, reads: bool = True, retried: bool = False):
        self._real, self._lands, self._reads, self._retried = real, lands, reads, retried

    def __getattr__(self, name: str) -> object:
        return getattr(self._real, name)

    def put_object(self, **kwargs: object) -> object:
        from botocore.exceptions import ReadTimeoutError

        if self._lands:
            self._real.put_object(**kwargs)  # type: ignore[attr-defined]
        if self._retried:
            return self._real.put_object(**kwargs)  # type: ignore[attr-defined]
        raise ReadTimeoutError(endpoint_url="http://127.0.0.1")

    def get_object(self, **kwargs: object) -> object:
        from botocore.exceptions import ConnectionClosedError

        if not self._reads:
            raise ConnectionClosedError(endpoint_url="http://127.0.0.1")
        return self._real.get_object(**kwargs)  # type: ignore[attr-defined]


def test_an_s3_record_whose_answer_is_lost_is_known_by_what_the_key_holds(
    s3_log: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A put whose answer is lost may have landed: what is at the key says whether it did
    (before, a lost answer was an unhandled error, a 500, whatever had happened)."""
    from stygig import storage
    from stygig.catalog import changelog
    from stygig.catalog.changelog import ChangeLog, RecordUnknown, SequenceTaken
    from stygig.errors import StorageError

    log = ChangeLog(f"{s3_log}/lost-answers")  # moto's buckets outlive its servers
    real = storage._s3()

    def client(**how: bool) -> None:
        monkeypatch.setattr(changelog.storage, "_s3", lambda: _LostAnswers(real, **how))

    client(lands=True)  # landed: written, nothing to say
    log.append(1, [{"op": "remove", "id": "a"}])
    assert [r["changes"][0]["id"] for r in log.read_since(0)] == ["a"]
    # Landed, and the retry is refused (412): its own record, not another writer's (before,
    # SequenceTaken: the writer applied record 1 as another's, then wrote its changes again).
    client(lands=True, retried=True)
    log.append(2, [{"op": "remove", "id": "b"}])
    log.append(3, [])
    client(lands=False)  # never landed: a plain storage error, nothing there
    with pytest.raises(StorageError) as caught:
        log.append(4, [{"op": "remove", "id": "c"}])
    assert type(caught.value) is StorageError and log.sequences() == [1, 2, 3]
    client(lands=False)  # another writer's record is there: the number is taken
    with pytest.raises(SequenceTaken):
        log.append(1, [{"op": "remove", "id": "d"}])
    client(lands=False, retried=True)  # refused (412) for another writer's record: taken
    with pytest.raises(SequenceTaken):
        log.append(2, [{"op": "remove", "id": "e"}])
    client(lands=False, reads=False)  # nothing answers: unknown, and said so
    with pytest.raises(RecordUnknown) as unknown:
        log.append(4, [{"op": "remove", "id": "f"}])
    assert unknown.value.http_status == 503 and "record 4" in unknown.value.message
    monkeypatch.setattr(changelog.storage, "_s3", lambda: real)
    assert log.sequences() == [1, 2, 3]
    assert [r["changes"][0]["id"] for r in log.read_since(0) if r["changes"]] == ["a", "b"]


def test_a_change_whose_record_is_unconfirmed_is_a_503_that_says_it_is_applied(
    workspace: tuple[Path, Path, Path], fail_folder_sync: Any
) -> None:
    from fastapi.testclient import TestClient

    from stygig.serving.app import ServerConfig, create_app
    from stygig.serving.catalog_command import CatalogSettings

    _, art, log = workspace
    config = ServerConfig(
        artifact=art,
        catalog=CatalogSettings(change_log=str(log), follow_interval_s=None),
        warmup_rounds=1,
    )
    with TestClient(create_app(config)) as client:
        assert _until(lambda: client.get("/ping").status_code == 200, 120)
        assert client.get("/v1/items/sku-0001").status_code == 200
        fail_folder_sync()
        r = client.post("/v1/catalog/changes", json={"op": "remove", "id": "sku-0001"})
        assert r.status_code == 503, r.text
        error = r.json()["error"]
        assert error["code"] == "change_unconfirmed" and "record 1" in error["message"]
        assert str(log) not in r.text and "Input/output" not in r.text
        assert client.get("/v1/catalog/version").json()["sequence"] == 1
        assert client.get("/v1/items/sku-0001").status_code == 404  # removed: applied


def test_change_routes_need_the_token(workspace: tuple[Path, Path, Path]) -> None:
    from fastapi.testclient import TestClient

    from stygig.serving.app import ServerConfig, create_app
    from stygig.serving.catalog_command import CatalogSettings

    catalog, art, log = workspace
    token = "t0ken-for-the-living-catalogue"
    config = ServerConfig(
        artifact=art,
        catalog=CatalogSettings(change_log=str(log), follow_interval_s=None),
        auth_token=token,
        warmup_rounds=1,
    )
    with TestClient(create_app(config)) as client:
        assert _until(lambda: client.get("/ping").status_code == 200, 120)
        change = {"op": "remove", "id": "sku-0001"}
        for path, method in (
            ("/v1/catalog/changes", "post"),
            ("/v1/catalog/version", "get"),
            ("/v1/catalog/reload", "post"),
        ):
            r = client.request(method.upper(), path, json=change if method == "post" else None)
            assert r.status_code == 401, path
        assert not log.exists()  # nothing was written
        auth = {"authorization": f"Bearer {token}"}
        r = client.post("/v1/catalog/changes", json=change, headers=auth)
        assert r.status_code == 200 and r.json()["sequence"] == 1
        # A malformed body: 4xx, never a 500, and nothing is written.
        for body in (b"{", b'{"op": "add", "item": {"id": "x"}}', b"\xff\xfe"):
            r = client.post(
                "/v1/catalog/changes",
                content=body,
                headers={**auth, "content-type": "application/x-ndjson"},
            )
            assert 400 <= r.status_code < 500
        assert client.get("/v1/catalog/version", headers=auth).json()["sequence"] == 1
        assert catalog.exists()


def _cli(argv: list[str]) -> argparse.Namespace:
    from stygig.serving.catalog_command import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["catalog", *argv])


def test_cli_apply_refuses_a_nul_in_a_photo_path_as_its_change(
    workspace: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """Review, session 41: a NUL in a local photo path was a ``ValueError`` traceback (from
    resolving it), where its ``file://...%00`` form was a clean ``change 1:`` error."""
    _, art, _ = workspace
    for image in ("a\0.jpg", f"{tmp_path.as_uri()}/a%00.jpg"):
        change = {"op": "add", "item": {"id": "nul-1", "category": "dress"}, "image": image}
        (tmp_path / "changes.jsonl").write_text(json.dumps(change) + "\n", encoding="utf-8")
        args = _cli(["apply", str(tmp_path / "changes.jsonl"), "--artifact", str(art)])
        with pytest.raises(InputError, match="line 1: a path holds a NUL character"):
            args.func(args)


def test_cli_apply_says_lines_went_in_when_their_record_is_unconfirmed(
    workspace: tuple[Path, Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    fail_folder_sync: Any,
) -> None:
    """A record the storage did not confirm went in: the operator is told to resume after
    it, not that nothing was applied (which a rerun would apply twice)."""
    from stygig.catalog.changelog import RecordUnconfirmed

    _, art, _ = workspace
    path = tmp_path / "changes.jsonl"
    rows = [{"op": "update", "id": "sku-0001", "set": {"stock": i}} for i in (1, 2, 3)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    fail_folder_sync()
    args = _cli(["apply", str(path), "--artifact", str(art)])
    with pytest.raises(RecordUnconfirmed) as unsure:
        args.func(args)
    message = unsure.value.message
    assert "lines 1-3 went in: send the rest with --from-line 4" in message, message
    assert "nothing was applied" not in message
    monkeypatch.undo()
    status = _cli(["status", "--artifact", str(art), "--json"])
    status.func(status)
    assert json.loads(capsys.readouterr().out)["sequence"] == 1


def test_cli_apply_says_which_lines_went_in_and_resumes(
    workspace: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Review, session 42: a file sent in parts (500 changes a request, 1,000 a group on a
    folder) whose later part was refused left the earlier parts applied while the error said
    only "change 50" (of the part: line 550 of the file), so a rerun applied them twice. The
    error names the file's line and what went in; ``--from-line`` sends the rest."""
    from stygig.errors import StygigError

    _, art, log = workspace

    def changes(n: int, bad: int) -> Path:
        rows = [
            {"op": "update", "id": "nope" if i == bad else "sku-0001", "set": {"stock": i}}
            for i in range(1, n + 1)
        ]
        path = tmp_path / f"changes-{n}.jsonl"
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
        return path

    # A folder: groups of 1,000; line 1,050 refused after the first group went in.
    args = _cli(["apply", str(changes(1100, 1050)), "--artifact", str(art)])
    with pytest.raises(StygigError) as refused:
        args.func(args)
    message = refused.value.message
    assert message.startswith("line 1050: ") and "--from-line 1001" in message, message
    assert "(1000 change(s);" in message
    status = _cli(["status", "--artifact", str(art), "--json"])
    status.func(status)
    assert json.loads(capsys.readouterr().out)["sequence"] == 1
    with living_server(art, log, tmp_path / "server.log") as (url, _):
        # A server: requests of 500; line 550 refused after lines 1-500 went in (sequence 2).
        path = changes(600, 550)
        args = _cli(["apply", str(path), "--url", url])
        with pytest.raises(StygigError) as refused:
            args.func(args)
        message = refused.value.message
        assert "(404): line 550: " in message and "--from-line 501" in message, message
        with httpx.Client() as client:
            assert client.get(f"{url}/v1/catalog/version").json()["sequence"] == 2
        # Fixed, the rest goes in once: one more record, the last stock is line 600's.
        path.write_text(path.read_text(encoding="utf-8").replace('"nope"', '"sku-0001"'))
        args = _cli(["apply", str(path), "--url", url, "--from-line", "501", "--json"])
        assert args.func(args) == 0
        assert json.loads(capsys.readouterr().out)["applied"] == 100
        with httpx.Client() as client:
            assert client.get(f"{url}/v1/catalog/version").json()["sequence"] == 3
            item = client.get(f"{url}/v1/items/sku-0001").json()
        assert item["stock"] == 600
        # A key given twice is refused as the server refuses it, before anything is sent.
        twice = tmp_path / "twice.jsonl"
        twice.write_text('{"op": "update", "id": "sku-0001", "set": {"stock": 1, "stock": 2}}\n')
        args = _cli(["apply", str(twice), "--url", url])
        with pytest.raises(StygigError, match=r"line 1: .* given twice"):
            args.func(args)
        # A refusal of the first part: nothing went in.
        args = _cli(["apply", str(changes(3, 2)), "--url", url])
        with pytest.raises(StygigError, match=r"line 2: .*nothing was applied: lines 1-3"):
            args.func(args)


def test_cli_against_folder_and_server(
    workspace: tuple[Path, Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    catalog, art, log = workspace
    changes = tmp_path / "changes.jsonl"
    shutil.copy(catalog / "queries" / "red-dress.jpg", tmp_path / "dress.jpg")
    rows = [
        {"op": "add", "item": {"id": "cli-1", "category": "dress", "image": "dress.jpg"}},
        {"op": "update", "id": "cli-1", "set": {"available": False}},
    ]
    # Saved by an editor that writes a byte-order mark (read as line 1 "not a JSON object"
    # before: review, session 35).
    changes.write_text("\ufeff" + "\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    args = _cli(["apply", str(changes), "--artifact", str(art), "--json"])
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out)["sequence"] == 1
    # A FIFO named as the changes file hung the command (review, session 36): refused at once;
    # a pipe is read as standard input ("-").
    os.mkfifo(tmp_path / "fifo.jsonl")
    args = _cli(["apply", str(tmp_path / "fifo.jsonl"), "--artifact", str(art)])
    with pytest.raises(InputError, match="cannot read the changes file"):
        args.func(args)
    piped = json.dumps({"op": "update", "id": "cli-1", "set": {"available": True}}) + "\n"
    monkeypatch.setattr(sys, "stdin", argparse.Namespace(buffer=io.BytesIO(piped.encode())))
    args = _cli(["apply", "-", "--artifact", str(art), "--json"])
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out)["sequence"] == 2
    with living_server(art, log, tmp_path / "server.log") as (url, _):
        args = _cli(["remove", "cli-1", "--url", url, "--json"])
        assert args.func(args) == 0
        assert json.loads(capsys.readouterr().out)["catalog_version"].endswith("+3")
        args = _cli(["update", "sku-0001", "--set", "stock=3", "--url", url, "--json"])
        assert args.func(args) == 0
        capsys.readouterr()
        args = _cli(["status", "--url", url, "--json"])
        assert args.func(args) == 0
        assert json.loads(capsys.readouterr().out)["sequence"] == 4


if __name__ == "__main__":
    # python tests/integration/test_living_catalog.py ARTIFACT LOG PORT [WATCH [SECONDS]]: one server.
    import uvicorn

    from stygig.serving.app import ServerConfig, create_app
    from stygig.serving.catalog_command import CatalogSettings

    artifact, change_log, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    watch = sys.argv[4] if len(sys.argv) > 4 else None
    interval = float(sys.argv[5]) if len(sys.argv) > 5 else 0.5
    settings = CatalogSettings(
        change_log=change_log, follow_interval_s=0.2, watch=watch, watch_interval_s=interval
    )
    config = ServerConfig(artifact=Path(artifact), catalog=settings, warmup_rounds=1, threads=2)
    uvicorn.run(create_app(config), host="127.0.0.1", port=port, log_config=None, lifespan="on")


def test_a_gap_in_the_log_is_refused_by_the_cli_and_by_a_reload(
    workspace: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Review, session 52: with a record missing under later ones, `stygig catalog update
    --artifact` wrote its change into the gap (exit 0), ordered before records already
    acknowledged, and two replicas then answered differently under one catalog_version; a
    reload onto a version whose replay meets the gap answered 500 and stayed put. Both are
    refused now, the server keeps serving, and nothing is written."""
    from stygig.artifact import Artifact
    from stygig.catalog.changelog import ChangeLog, ChangeLogGapError
    from stygig.catalog.changes import parse_change
    from stygig.compaction import compact
    from stygig.engine import Recommender
    from stygig.living import LiveCatalog

    _, art, log = workspace
    live = LiveCatalog(Recommender(Artifact.load(art)), ChangeLog(log))
    change = {"op": "update", "id": "sku-0001", "set": {"stock": 1}}
    live.submit([parse_change(change)])
    compact(art, ChangeLog(log), tmp_path / "v2")  # at record 1
    for stock in (2, 3, 4):
        live.submit([parse_change({**change, "set": {"stock": stock}})])
    pointer = tmp_path / "serve-this"
    pointer.write_text(str(art))
    with living_server(art, log, tmp_path / "server.log", watch=pointer, watch_interval=3600) as (
        url,
        _,
    ):
        next(log.glob("*00000003.json")).rename(tmp_path / "record-3-moved-away")
        args = _cli(["update", "sku-0002", "--set", "price=99", "--artifact", str(art)])
        with pytest.raises(ChangeLogGapError, match="up to 4, but record 3 is missing"):
            args.func(args)
        assert ChangeLog(log).sequences() == [1, 2, 4]  # nothing written into the gap
        status = _cli(["status", "--artifact", str(art), "--json"])  # reads: up to the gap
        capsys.readouterr()
        status.func(status)
        assert json.loads(capsys.readouterr().out)["sequence"] == 2
        pointer.write_text(str(tmp_path / "v2"))
        with httpx.Client(base_url=url, timeout=120) as c:
            before = c.get("/v1/catalog/version").json()
            r = c.post("/v1/catalog/reload")
            assert r.status_code == 409, r.text
            error = r.json()["error"]
            assert error["code"] == "reload_refused"
            assert "record 3 is missing" in error["message"]
            assert str(tmp_path) not in error["message"]
            assert c.get("/v1/catalog/version").json() == before  # still serving it


def test_a_client_reads_its_own_change_on_another_server_by_its_sequence(
    workspace: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review, session 53: behind one URL (Ray's proxy, a load balancer) the next request may
    reach a server that has not followed the log yet, and a change just acknowledged was not
    in its answer (26 of 50 answers in the second after a change, with two Ray replicas).
    ``X-Stygig-Min-Sequence: N`` (N: the change's ``sequence``) makes any server catch up to
    record N before it answers, or say it cannot."""
    from fastapi.testclient import TestClient

    from stygig.artifact import Artifact
    from stygig.catalog.changelog import ChangeLog
    from stygig.catalog.changes import parse_change
    from stygig.engine import Recommender
    from stygig.errors import StorageError
    from stygig.living import LiveCatalog
    from stygig.serving import app as app_module
    from stygig.serving.app import ServerConfig, create_app
    from stygig.serving.catalog_command import CatalogSettings

    _, art, log = workspace
    monkeypatch.setattr(app_module, "MIN_SEQUENCE_WAIT_S", 0.3)
    first = json.loads((art / "items.jsonl").read_text().splitlines()[0])["id"]
    # This server never follows the log by itself: only the header makes it catch up.
    settings = CatalogSettings(change_log=str(log), follow_interval_s=None)
    config = ServerConfig(artifact=art, catalog=settings, warmup_rounds=0)
    with TestClient(create_app(config)) as client:
        assert _until(lambda: client.get("/ping").status_code == 200, 60)
        other = LiveCatalog(Recommender(Artifact.load(art)), ChangeLog(log))  # another server
        update = {"op": "update", "id": first, "set": {"stock": 0}}
        sequence = other.submit([parse_change(update)]).sequence
        assert sequence == 1
        path = f"/v1/items/{first}"
        assert client.get(path).json()["available"] is True  # not followed: the old answer
        wanted = {"X-Stygig-Min-Sequence": str(sequence)}
        assert client.get(path, headers=wanted).json()["available"] is False
        r = client.get("/v1/catalog/version", headers={"X-Stygig-Min-Sequence": "0"})
        assert r.status_code == 200 and r.json()["sequence"] == 1
        r = client.get(path, headers={"X-Stygig-Min-Sequence": "2"})  # not in the log
        assert r.status_code == 503 and r.json()["error"]["code"] == "catalog_behind"
        assert r.headers["retry-after"] == "1" and "holds no record 2" in r.text
        for bad in ("-1", "one", "1" * 16, "1.0", " "):
            r = client.get(path, headers={"X-Stygig-Min-Sequence": bad})
            assert r.status_code == 400 and r.json()["error"]["code"] == "bad_header", bad
        twice = [("X-Stygig-Min-Sequence", "0"), ("X-Stygig-Min-Sequence", "0")]
        r = client.get(path, headers=twice)
        assert r.status_code == 400 and "x-stygig-min-sequence" in r.json()["error"]["message"]
        # Review of the change (s53): bounded, as a client's value must be. The health checks
        # and the page never wait; past the waiters' bound, and when the log cannot be read,
        # a 503 at once (a storage error was a 500 with a traceback).
        far = {"X-Stygig-Min-Sequence": "9" * 15}
        assert client.get("/ping", headers=far).status_code == 200
        assert client.get("/healthz", headers=far).status_code == 200
        other.submit([parse_change({**update, "set": {"stock": 3}})])  # record 2
        monkeypatch.setattr(app_module, "MIN_SEQUENCE_WAITERS", 0)
        r = client.get(path, headers={"X-Stygig-Min-Sequence": "2"})
        assert r.status_code == 503 and "too many" in r.text
        monkeypatch.setattr(app_module, "MIN_SEQUENCE_WAITERS", 16)

        def unreadable(self: Any) -> int:
            raise StorageError("the change log cannot be listed")

        monkeypatch.setattr(ChangeLog, "last_sequence", unreadable)
        r = client.get(path, headers={"X-Stygig-Min-Sequence": "2"})
        assert r.status_code == 503 and "cannot be read" in r.text
        monkeypatch.undo()
        r = client.get(path, headers={"X-Stygig-Min-Sequence": "2"})
        assert r.status_code == 200 and r.json()["stock"] == 3
    plain = ServerConfig(artifact=art, warmup_rounds=0)  # no change log: never record 1
    with TestClient(create_app(plain)) as client:
        assert _until(lambda: client.get("/ping").status_code == 200, 60)
        r = client.get(path, headers={"X-Stygig-Min-Sequence": "1"})
        assert r.status_code == 409 and r.json()["error"]["code"] == "catalog_behind"
        assert client.get(path, headers={"X-Stygig-Min-Sequence": "0"}).status_code == 200

from __future__ import annotations

import csv
import hashlib
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stygig.artifact import (
    FORMAT_VERSION,
    MANIFEST,
    Artifact,
    encoder_pooling,
    file_sha256,
    write_artifact,
)
from stygig.catalog import Item, Reject, Taxonomy
from stygig.errors import ArtifactError

ENCODER = {"name": "test", "dim": 8, "runtime": "numpy"}


def _write(out: Path, n: int = 20, **kwargs: object) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    items = [Item(id=f"i{k}", image=f"/img/{k}.jpg", category="shirt") for k in range(n)]
    colors = [{"rgb": [k, k, k]} for k in range(n)]
    rejects = [Reject(3, "bad", "missing_image", "image file not found: x.jpg", {"id": "bad"})]
    args: dict[str, object] = {
        "items": items,
        "colors": colors,
        "embeddings": x,
        "taxonomy": Taxonomy.load(),
        "encoder_info": ENCODER,
        "rejects": rejects,
        **kwargs,
    }
    return write_artifact(out, **args)  # type: ignore[arg-type]


def test_write_and_load_round_trip(tmp_path: Path) -> None:
    path = _write(tmp_path / "art", index_kind="flat")
    art = Artifact.load(path)
    m = art.manifest
    assert m["format_version"] == 2  # unsplit index: readable by format-2 readers
    assert m["counts"]["items"] == 20 and m["counts"]["rejects_by_reason"] == {"missing_image": 1}
    assert m["index"]["kind"] == "flat" and m["encoder"] == ENCODER
    assert {"embeddings.npy", "items.jsonl", "index.faiss", "taxonomy.yaml", "rejects.csv"} <= set(
        m["files"]
    )
    assert "numpy" in m["versions"] and m["versions"]["stygig"]
    assert art.items[3].id == "i3" and art.colors[3] == {"rgb": [3, 3, 3]}
    assert art.positions["i7"] == 7
    ids = art.index.search(art.embeddings[5], 1)[1]
    assert ids[0, 0] == 5
    rejects = (path / "rejects.csv").read_text().splitlines()
    assert rejects[0] == "row,id,reason,detail,raw" and "missing_image" in rejects[1]
    assert art.summary()["counts"]["items"] == 20


def test_index_split_by_slot_is_format_3_and_round_trips(tmp_path: Path) -> None:
    from stygig.index import PartitionedIndex

    path = _write(tmp_path / "art", index_kind="flat", index_params={"partition_by": "slot"})
    art = Artifact.load(path)
    m = art.manifest
    assert m["format_version"] == 3 < FORMAT_VERSION
    assert m["index"]["params"]["partition_by"] == "slot"
    assert {"index-partitions.npy", "index-part0.faiss"} <= set(m["files"])
    assert "index.faiss" not in m["files"]
    assert isinstance(art.index, PartitionedIndex)
    assert art.index.search(art.embeddings[5], 1)[1][0, 0] == 5
    with pytest.raises(ArtifactError, match="partition_by"):
        _write(tmp_path / "bad", index_params={"partition_by": "colour"})


def test_newer_format_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "art")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="upgrade stygig"):
        Artifact.load(path)


def test_checksum_mismatch_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "art")
    with (path / "items.jsonl").open("a") as f:
        f.write("\n")
    with pytest.raises(ArtifactError, match="checksum"):
        Artifact.load(path)
    Artifact.load(path, verify=False)  # an explicit opt-out still loads


def test_missing_file_and_not_an_artifact(tmp_path: Path) -> None:
    path = _write(tmp_path / "art")
    (path / "taxonomy.yaml").unlink()
    with pytest.raises(ArtifactError, match="missing"):
        Artifact.load(path)
    with pytest.raises(ArtifactError, match="not a StyGig artifact"):
        Artifact.load(tmp_path)


def test_overwrite_is_atomic_and_leaves_no_temp_dirs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stygig.artifact import _exchange

    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    exchanges = _exchange(tmp_path / "x", tmp_path / "y")
    (tmp_path / "x").rmdir()
    (tmp_path / "y").rmdir()
    _write(tmp_path / "art", n=10)
    # Review (s51): the old folder was renamed away, then the new one into its place; a
    # process killed between the two left no artifact at the name. One exchange now: the
    # artifact's name is never renamed away.
    renamed: list[str] = []
    rename = Path.rename

    def watched(self: Path, target: Any) -> Any:
        renamed.append(self.name)
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", watched)
    _write(tmp_path / "art", n=12)
    assert ("art" in renamed) is not exchanges  # two renames only where it cannot exchange
    assert Artifact.load(tmp_path / "art").manifest["counts"]["items"] == 12
    assert [p.name for p in tmp_path.iterdir()] == ["art"]


def test_a_write_killed_midway_leaves_nothing_after_the_next_write(tmp_path: Path) -> None:
    """Review (s41): a build killed with -9 while writing left its hidden partial artifact
    (as large as the real one) for ever. A write holds a lock on its folders while it works;
    the next write of the same output removes those no one holds (a process that died holds
    none), never a live writer's, whatever its process id or container, nor a young one."""
    import subprocess
    import sys
    import time

    def folder(name: str, age_s: float = 3600.0) -> Path:
        path = tmp_path / name
        (path / "sub").mkdir(parents=True)
        (path / "embeddings.npy").write_bytes(b"x" * 1000)
        then = time.time() - age_s
        os.utime(path, (then, then))
        return path

    dead = folder(".art.stygig-tmp-k7q2x9ab")  # a writer killed mid-way
    old = folder(".art.stygig-old-1a2b3c4d")  # killed between its two renames
    young = folder(".art.stygig-tmp-justmade", age_s=0)  # its writer may not hold it yet
    live = folder(".art.stygig-tmp-livewrtr")
    other = folder(".other.stygig-tmp-k7q2x9ab")  # another output's
    # another process holds `live` (as a writer in any process or container would)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDONLY);"
            " fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.read()",
            str(live),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        _write(tmp_path / "art", n=10)
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            ["art", young.name, live.name, other.name]
        )
        assert not dead.exists() and not old.exists()
    finally:
        holder.communicate("", timeout=30)


def test_a_folder_that_is_not_an_artifact_is_never_replaced(tmp_path: Path) -> None:
    """``stygig build --out`` replaces its output folder: pointed by mistake at the catalogue's
    own folder it deleted the CSV and every photo. Only an artifact, an empty folder or
    nothing is replaced; anything else is refused and left as it was."""
    shop = tmp_path / "shop"
    shop.mkdir()
    (shop / "catalog.csv").write_text("precious")
    (tmp_path / "file").write_text("also precious")
    (tmp_path / "link").symlink_to(tmp_path / "empty-target", target_is_directory=True)
    for out in (shop, tmp_path / "file", tmp_path / "link"):
        with pytest.raises(ArtifactError, match="not a StyGig artifact"):
            _write(out, n=4)
    assert (shop / "catalog.csv").read_text() == "precious"
    assert (tmp_path / "file").read_text() == "also precious"
    # Review, session 36: any file named manifest.json passed, and a web app's folder (its
    # manifest.json is a PWA's) was replaced by the build; so was an unreadable manifest.
    for name, text in (("webapp", '{"name": "My PWA"}'), ("broken", "{not json")):
        (tmp_path / name / "src").mkdir(parents=True)
        (tmp_path / name / "manifest.json").write_text(text)
        (tmp_path / name / "src" / "app.js").write_text("precious")
        with pytest.raises(ArtifactError, match="not a StyGig artifact"):
            _write(tmp_path / name, n=4)
        assert (tmp_path / name / "src" / "app.js").read_text() == "precious"
    (tmp_path / "empty").mkdir()
    _write(tmp_path / "empty", n=4)  # an empty folder, then an artifact: both replaced
    _write(tmp_path / "empty", n=5)
    assert Artifact.load(tmp_path / "empty").manifest["counts"]["items"] == 5
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_rejects_csv_shows_catalogue_text_never_as_a_formula(tmp_path: Path) -> None:
    """rejects.csv is opened in spreadsheets: an id like =HYPERLINK(...) was a live formula."""
    bad = '=HYPERLINK("http://evil.example","x")'
    rejects = [
        Reject(2, bad, "missing_image", "@SUM(1)", {"id": bad}),
        Reject(3, "ok", "x", "d", {}),
    ]
    path = _write(tmp_path / "art", n=4, rejects=rejects)
    with (path / "rejects.csv").open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[1][1:4] == ["'" + bad, "missing_image", "'@SUM(1)"]
    assert json.loads(rows[1][4]) == {"id": bad}  # the raw row as JSON text, never a formula
    assert rows[2][1] == "ok"
    # Review, session 36: terminal escapes and bidi overrides went out raw (`cat rejects.csv`
    # retitled and cleared the terminal); they are written as \\u escapes, text stays text.
    rejects = [
        Reject(2, "esc\x1b]0;PWNED\x07\x1b[2J", "bad_value", "i/\x1b[31mRED.jpg\x00", {}),
        Reject(3, "bidi\u202eexe.gpj", "x", "café, a tab\there", {}),
    ]
    path = _write(tmp_path / "art2", n=4, rejects=rejects)
    text = (path / "rejects.csv").read_text(encoding="utf-8")
    assert not any(c in text for c in "\x1b\x07\x00\u202e")
    rows = list(csv.reader(text.splitlines()))
    assert rows[1][1] == "esc\\u001b]0;PWNED\\u0007\\u001b[2J"
    assert rows[1][3] == "i/\\u001b[31mRED.jpg\\u0000"
    assert rows[2][1:4] == ["bidi\\u202eexe.gpj", "x", "café, a tab\there"]


def test_an_artifact_gets_the_umask_modes_not_private_ones(tmp_path: Path) -> None:
    """Built as one user and served as another: the folder and files follow the umask (mkdtemp
    made the folder 0700)."""
    old = os.umask(0o022)
    try:
        path = _write(tmp_path / "art", n=4)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in path.iterdir() if p.is_file()} == {0o644}


def test_files_rewritten_later_keep_the_umask_modes(tmp_path: Path) -> None:
    """Review (s38): a file added to an artifact (train-compat's model) left manifest.json
    0600 (mkstemp's mode kept through the rename): the container's own user could no longer
    load an artifact another user trained. So were every storage.write_bytes file and every
    change-log record."""
    from stygig.artifact import add_file
    from stygig.catalog.changelog import ChangeLog
    from stygig.storage import write_bytes

    old = os.umask(0o027)
    try:
        path = _write(tmp_path / "art", n=4)
        add_file(path, "extra.bin", lambda p: p.write_bytes(b"x"), key="extra", entry={})
        write_bytes(tmp_path / "out" / "record.json", b"{}")
        ChangeLog(tmp_path / "log").append(1, [])
    finally:
        os.umask(old)
    assert stat.S_IMODE((path / "manifest.json").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "out" / "record.json").stat().st_mode) == 0o640
    assert {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "log").iterdir()} == {0o640}


def test_empty_or_misaligned_inputs_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no valid items"):
        _write(tmp_path / "a", n=0)
    with pytest.raises(ArtifactError, match="same length"):
        write_artifact(
            tmp_path / "b",
            items=[Item("x", "x.jpg", "shirt")],
            colors=[],
            embeddings=np.zeros((1, 8), np.float32),
            taxonomy=Taxonomy.load(),
            encoder_info=ENCODER,
            rejects=[],
        )
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


# Integrity and confinement: every file listed and verified, every path inside the artifact.


def _manifest(path: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((path / MANIFEST).read_text())
    return manifest


def _save(path: Path, manifest: dict[str, Any]) -> None:
    (path / MANIFEST).write_text(json.dumps(manifest))


def _refused(path: Path, code: str, *, verify: bool = True) -> str:
    """Load ``path``, expect ``code``; the message, checked to name no absolute path."""
    with pytest.raises(ArtifactError) as caught:
        Artifact.load(path, verify=verify)
    assert caught.value.code == code, caught.value.message
    assert str(path.parent) not in caught.value.message
    return caught.value.message


def _onnx_artifact(out: Path, model: bytes = b"an onnx graph") -> Path:
    """An artifact whose encoder runs on ONNX (the graph's bytes are never parsed here)."""
    source = out.parent / "encoder.onnx"
    source.write_bytes(model)
    info = {**ENCODER, "runtime": "onnx", "onnx_file": "encoder.onnx"}
    info["onnx_sha256"] = file_sha256(source)
    return _write(out, encoder_info=info, extra_files={"encoder.onnx": source})


def test_an_empty_or_absent_checksum_list_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "art")
    manifest = _manifest(path)
    _save(path, {**manifest, "files": {}})
    assert "lists no file checksums" in _refused(path, "artifact_no_checksums")
    del manifest["files"]
    _save(path, manifest)
    _refused(path, "artifact_no_checksums")
    Artifact.load(path, verify=False)  # the explicit opt-out skips checksums, not confinement


def test_a_malformed_checksum_entry_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "art")
    manifest = _manifest(path)
    manifest["files"]["items.jsonl"] = {"sha256": 7}
    _save(path, manifest)
    _refused(path, "artifact_bad_manifest")


def test_an_unlisted_file_or_folder_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "art")
    (path / "notes.txt").write_text("not part of the build")
    assert "'notes.txt' is not listed" in _refused(path, "artifact_unlisted_file")
    (path / "notes.txt").unlink()
    (path / "extra").mkdir()
    _refused(path, "artifact_unlisted_file")
    (path / "extra").rmdir()
    Artifact.load(path)


def test_an_edited_file_whose_entry_was_dropped_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "art")
    manifest = _manifest(path)
    del manifest["files"]["items.jsonl"]
    _save(path, manifest)
    _refused(path, "artifact_unlisted_file")


def test_checksum_and_missing_file_codes_name_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "art")
    with (path / "taxonomy.yaml").open("a") as f:
        f.write("# edited\n")
    assert "'taxonomy.yaml'" in _refused(path, "artifact_checksum_mismatch")
    (path / "taxonomy.yaml").unlink()
    assert "'taxonomy.yaml' is missing" in _refused(path, "artifact_file_missing")


@pytest.mark.parametrize("verify", [True, False])
def test_a_symlinked_file_is_refused_even_without_verification(
    tmp_path: Path, verify: bool
) -> None:
    path = _write(tmp_path / "art")
    outside = tmp_path / "outside.yaml"
    (path / "taxonomy.yaml").rename(outside)
    (path / "taxonomy.yaml").symlink_to(outside)  # same bytes: only the link gives it away
    assert "symbolic link" in _refused(path, "artifact_symlink", verify=verify)


def test_a_symlinked_manifest_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "art")
    outside = tmp_path / "manifest.json"
    (path / MANIFEST).rename(outside)
    (path / MANIFEST).symlink_to(outside)
    _refused(path, "artifact_symlink", verify=False)


UNSAFE_NAMES = ["../../x.onnx", "/etc/passwd", "sub/encoder.onnx", "..", "", "a\\b", 3]


@pytest.mark.parametrize("name", UNSAFE_NAMES)
@pytest.mark.parametrize("verify", [True, False])
def test_an_onnx_file_outside_the_artifact_is_refused(
    tmp_path: Path, name: object, verify: bool
) -> None:
    path = _onnx_artifact(tmp_path / "art")
    manifest = _manifest(path)
    manifest["encoder"]["onnx_file"] = name
    _save(path, manifest)
    message = _refused(path, "artifact_unsafe_path", verify=verify)
    assert "encoder.onnx_file" in message
    if isinstance(name, str) and len(name) > 2:
        assert name not in message  # the author's value (maybe a server path) is not echoed


@pytest.mark.parametrize("name", UNSAFE_NAMES[:4])
def test_unsafe_names_anywhere_in_the_manifest_are_refused(tmp_path: Path, name: str) -> None:
    path = _write(tmp_path / "art")
    manifest = _manifest(path)
    manifest["files"][name] = manifest["files"]["rejects.csv"]
    _save(path, manifest)
    _refused(path, "artifact_unsafe_path", verify=False)
    del manifest["files"][name]
    manifest["compat"] = {"file": name}
    _save(path, manifest)
    _refused(path, "artifact_unsafe_path", verify=False)


def test_onnx_sha256_must_match_the_onnx_file(tmp_path: Path) -> None:
    path = _onnx_artifact(tmp_path / "art")
    Artifact.load(path)
    manifest = _manifest(path)
    manifest["encoder"]["onnx_sha256"] = "0" * 64
    _save(path, manifest)
    assert "onnx_sha256" in _refused(path, "artifact_onnx_mismatch")
    del manifest["encoder"]["onnx_sha256"]
    _save(path, manifest)
    _refused(path, "artifact_onnx_mismatch")


def test_an_onnx_encoder_without_its_listed_file_is_refused(tmp_path: Path) -> None:
    path = _onnx_artifact(tmp_path / "art")
    manifest = _manifest(path)
    del manifest["files"]["encoder.onnx"]
    (path / "encoder.onnx").unlink()
    _save(path, manifest)
    _refused(path, "artifact_file_missing")


EFFNET = {"name": "efficientnet-lite0", "dim": 8}


def test_an_efficientnet_record_says_how_its_vectors_were_pooled() -> None:
    assert encoder_pooling({**EFFNET, "pooling": "gem-p3"}) == "gem-p3"
    assert encoder_pooling({**EFFNET, "pooling": "avg"}) == "avg"
    assert encoder_pooling(EFFNET) == "avg"  # built before the record: the average pool
    assert encoder_pooling({"name": "clip-vit-b-32", "pooling": "x"}) is None  # no such choice
    assert encoder_pooling(ENCODER) is None


@pytest.mark.parametrize(
    "value", ["max", "", "gem", "GEM-P3", " gem-p3", 0, False, None, 3, ["avg"]]
)
def test_a_pooling_record_no_reader_knows_is_refused_at_load(tmp_path: Path, value: Any) -> None:
    """Never a silent fallback: an edited or hostile record fails the load, naming the field
    and the value (cut short), not the path."""
    with pytest.raises(ArtifactError, match=r"encoder\.pooling") as caught:
        encoder_pooling({**EFFNET, "pooling": value})
    assert repr(value)[:40] in caught.value.message
    path = _write(tmp_path / "art", encoder_info={**EFFNET, "runtime": "onnx", "pooling": value})
    with pytest.raises(ArtifactError, match=r"encoder\.pooling"):
        Artifact.load(path)


@pytest.mark.parametrize(
    ("record", "version"),
    [
        ({**EFFNET, "runtime": "torch", "pooling": "gem-p3"}, FORMAT_VERSION),
        ({**EFFNET, "runtime": "torch", "pooling": "avg"}, 2),
        ({**EFFNET, "runtime": "onnx", "pooling": "gem-p3"}, 2),  # the graph holds its pool
        (ENCODER, 2),
    ],
)
def test_a_gem_torch_artifact_is_a_format_older_readers_refuse(
    tmp_path: Path, record: dict[str, Any], version: int
) -> None:
    """A reader from before the pooling record would rebuild a torch-runtime EfficientNet
    average-pooled and embed queries unlike the rows: that artifact is written as format 4,
    which such readers refuse ("upgrade stygig")."""
    path = _write(tmp_path / "art", encoder_info=record, index_kind="flat")
    assert json.loads((path / MANIFEST).read_text())["format_version"] == version


def _edited_rows(path: Path, row: int, edit: Callable[[dict[str, Any]], None]) -> None:
    """Edit one row of items.jsonl and re-sign it in the manifest (its checksum passes)."""
    lines = (path / "items.jsonl").read_text(encoding="utf-8").splitlines()
    data = json.loads(lines[row])
    edit(data)
    lines[row] = json.dumps(data)
    (path / "items.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    manifest = _manifest(path)
    raw = (path / "items.jsonl").read_bytes()
    manifest["files"]["items.jsonl"] = {
        "sha256": hashlib.sha256(raw).hexdigest(),
        "bytes": len(raw),
    }
    _save(path, manifest)


@pytest.mark.parametrize(
    ("edit", "said"),
    [
        (lambda d: d.update(category="spaceship"), "row 4's category is not one of"),
        (lambda d: d.update(gender=["men"]), "item field 'gender' is not text"),
        (lambda d: d.update(usage={"a": 1}), "item field 'usage' is not text"),
        (lambda d: d.update(available="false"), "'available' is not true or false"),
        (lambda d: d.update(stock=-3), "'stock' is not a whole number"),
        (lambda d: d.update(price=float("nan")), "'price' is not a non-negative number"),
        (lambda d: d.update(attributes={"fit": 3}), "'attributes' is not a mapping"),
        (lambda d: d.update(color={"rgb": [1, 2]}), "row 4's colour is not a colour summary"),
        (lambda d: d.update(color={"rgb": [1, 2, 300]}), "row 4's colour"),
        (lambda d: d.update(color={"rgb": "red"}), "row 4's colour"),
        (lambda d: d.update(color={"hsl": [float("nan"), 0, 0]}), "row 4's colour"),
        (lambda d: d.update(color={"palette": [{"rgb": [1, 2, 3], "share": 7}]}), "row 4's colour"),
        (lambda d: d.update(color=[1, 2, 3]), "row 4's colour"),
    ],
)
def test_a_re_signed_row_of_the_wrong_kind_is_refused_at_load(
    tmp_path: Path, edit: Callable[[dict[str, Any]], None], said: str
) -> None:
    """Review (session 51): these loaded, then failed every request naming the item (a 500, or
    a server that could not start) or were misread (``"available": "false"`` was available)."""
    path = _write(tmp_path / "a")
    _edited_rows(path, 3, edit)
    assert said in _refused(path, "artifact_error")


def test_embeddings_that_are_not_finite_unit_vectors_are_refused_at_load(tmp_path: Path) -> None:
    """Review (session 51): a NaN row never appeared in results and failed as a query; rows
    x50 were served with similarities of 927."""
    for name, change in (("nan", np.nan), ("scaled", 50.0)):
        path = _write(tmp_path / name)
        x = np.load(path / "embeddings.npy")
        x[5] = x[5] * change
        np.save(path / "embeddings.npy", x)
        manifest = _manifest(path)
        raw = (path / "embeddings.npy").read_bytes()
        entry = {"sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw)}
        manifest["files"]["embeddings.npy"] = entry
        _save(path, manifest)
        assert "row 6 is not a finite unit vector" in _refused(path, "artifact_error")


@pytest.mark.parametrize(
    ("edit", "said"),
    [
        (lambda m: m.update(format_version=True), "no integer 'format_version'"),
        (lambda m: m.update(format_version=-7), "no integer 'format_version'"),
        (lambda m: m.update(encoder="tiny"), "'encoder' is not an object"),
        (lambda m: m["encoder"].update(dim="abc"), "'encoder.dim' is not a whole number"),
        (lambda m: m["encoder"].update(name=["x"]), "'encoder.name' is not text"),
        (lambda m: m.update(build="x"), "'build' is not an object"),
        (lambda m: m.update(counts="x"), "'counts' is not an object"),
        (lambda m: m["index"].update(kind=["flat"]), "'index.kind' is not text"),
        (lambda m: m["index"].update(dim="8"), "'index.dim' is not a whole number"),
        (
            lambda m: m["encoder"].update(preprocess={"std": [0, 0, 0]}),
            "'encoder.preprocess.std' has a value that is not above 0",
        ),
        (
            lambda m: m["encoder"].update(preprocess={"mean": [float("nan"), 0, 0]}),
            "'encoder.preprocess.mean' is not three finite numbers",
        ),
    ],
)
def test_a_manifest_part_of_the_wrong_kind_is_refused_at_load(
    tmp_path: Path, edit: Callable[[dict[str, Any]], None], said: str
) -> None:
    """Review (session 51): each of these was a traceback at load, or at every photo query."""
    path = _write(tmp_path / "a")
    manifest = _manifest(path)
    edit(manifest)
    _save(path, manifest)
    assert said in _refused(path, "artifact_bad_manifest")


def test_rows_of_another_width_than_a_photos_vector_are_refused_at_load(tmp_path: Path) -> None:
    """Review (session 51): a manifest whose whitening entry was dropped (or whose encoder
    width was edited) loaded, then every photo query failed on the widths."""
    path = _write(tmp_path / "a")
    manifest = _manifest(path)
    manifest["encoder"]["dim"] = 16
    _save(path, manifest)
    assert "a photo's vector is 16-d (the encoder's), the catalogue's rows are 8-d" in _refused(
        path, "artifact_error"
    )

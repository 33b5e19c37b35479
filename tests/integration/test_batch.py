"""Batch runs: every input once, bad records isolated, resume after a kill -9."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stygig.batch import run_batch
from stygig.cli import main as batch_main
from stygig.engine import Recommender
from stygig.errors import BatchError
from tests.integration.server_fixtures import REPO, running_server


@pytest.fixture(scope="module")
def rec(sample: tuple[Path, Path]) -> Recommender:
    return Recommender.from_path(sample[1])


def _records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_nightly_refresh_every_item_once(rec: Recommender, tmp_path: Path) -> None:
    out = tmp_path / "all.jsonl"
    summary = run_batch(rec, str(rec.artifact.path), str(out), options={"k": 2}, progress=False)
    records = _records(out)
    ids = [i.id for i in rec.artifact.items]
    assert [r["id"] for r in records] == ids and summary.processed == len(ids)
    assert all(r["status"] == "ok" for r in records)
    first = records[0]["recommendation"]
    assert isinstance(first, dict) and first["outfit"]["slots"] and first["by_category"]
    # Same arguments again: already complete, nothing redone.
    again = run_batch(rec, str(rec.artifact.path), str(out), options={"k": 2}, progress=False)
    assert again.processed == 0 and again.skipped == len(ids)
    with pytest.raises(BatchError, match="other arguments"):
        run_batch(rec, str(rec.artifact.path), str(out), options={"k": 3}, progress=False)
    # Review (s37): a completed run whose output was removed or cut short since said
    # "already done" and wrote nothing; it runs again.
    out.write_bytes(b"".join(out.read_bytes().splitlines(keepends=True)[:3]))
    cut = run_batch(rec, str(rec.artifact.path), str(out), options={"k": 2}, progress=False)
    assert cut.processed == len(ids) - 3 and cut.skipped == 3  # the 3 kept lines are done
    assert [r["id"] for r in _records(out)] == ids
    # Review (s51): cut inside the last record, it still counted as a line: "already done",
    # and the file's last record stayed broken. The broken record is written again.
    out.write_bytes(out.read_bytes()[:-50])
    tail = run_batch(rec, str(rec.artifact.path), str(out), options={"k": 2}, progress=False)
    assert tail.processed == 1 and tail.skipped == len(ids) - 1
    assert [r["id"] for r in _records(out)] == ids
    out.unlink()
    gone = run_batch(rec, str(rec.artifact.path), str(out), options={"k": 2}, progress=False)
    assert gone.processed == len(ids) and len(_records(out)) == len(ids)


def test_overwrite_and_staging_never_touch_files_a_run_did_not_write(
    rec: Recommender, tmp_path: Path
) -> None:
    """A folder named like a Parquet output's staging ("<out>.parts") was read as finished
    parts and then deleted; ``--overwrite`` onto a folder raised IsADirectoryError."""
    src = str(rec.artifact.path)
    staging = tmp_path / "out.parquet.parts"
    staging.mkdir()
    (staging / "part-000000000-000000100.jsonl").write_text("not this run's\n")
    with pytest.raises(BatchError, match="not written by a batch run"):
        run_batch(rec, src, str(tmp_path / "out.parquet"), progress=False)
    assert (staging / "part-000000000-000000100.jsonl").read_text() == "not this run's\n"
    # A file where the output's folder should be (review, session 54: "File exists (afile)").
    (tmp_path / "afile").write_text("keep")
    with pytest.raises(BatchError, match=r"afile is a file, not a folder"):
        run_batch(rec, src, str(tmp_path / "afile" / "sub" / "out.jsonl"), progress=False)
    assert (tmp_path / "afile").read_text() == "keep"
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep")
    with pytest.raises(BatchError, match="is a folder"):
        run_batch(rec, src, str(folder), overwrite=True, progress=False)
    assert (folder / "notes.txt").read_text() == "keep"
    # Review (s49): "out.csv" got JSON Lines without a word; refused before anything is made.
    for name in ("named.csv", "named.JSON", "named.jsonl.gz"):
        with pytest.raises(BatchError, match=r"writes JSON Lines \(\.jsonl\) or Parquet"):
            run_batch(rec, src, str(tmp_path / name), progress=False)
    assert not list(tmp_path.glob("*named*")) and not list(tmp_path.glob(".*named*"))
    from stygig.batch import check_output_name

    for name in ("recs.2026-12-04", "recs", "r.ndjson", "r.Parquet", "s3://shop/recs.csv"):
        check_output_name(name if "://" in name else str(tmp_path / name))
    # Review (s37): "recs/" (named like the docs' S3 prefixes) made the folder, left a hidden
    # record in it and failed with "Is a directory" on every run.
    with pytest.raises(BatchError, match="is a folder"):
        run_batch(rec, src, str(tmp_path / "recs") + "/", progress=False)
    assert not (tmp_path / "recs").exists() and not (tmp_path / "recs.batch.json").exists()
    # Review (s37): the guard was case-sensitive (".PARQUET" staged into the operator's
    # folder), --overwrite of a .jsonl output removed "<out>.parts" whatever it held, and the
    # staging's listing read any file there (a killed write's temporary one) as a part.
    upper = tmp_path / "up.PARQUET.parts"
    upper.mkdir()
    (upper / "part-000000000-000000100.jsonl").write_text("not this run's\n")
    with pytest.raises(BatchError, match="not written by a batch run"):
        run_batch(rec, src, str(tmp_path / "up.PARQUET"), progress=False)
    beside = tmp_path / "r.jsonl.parts"
    beside.mkdir()
    (beside / "keep-me.txt").write_text("keep")
    run_batch(rec, src, str(tmp_path / "r.jsonl"), overwrite=True, progress=False)
    assert (beside / "keep-me.txt").read_text() == "keep"
    from stygig.batch import own_parts

    (beside / "part-000000000-000000010.jsonl").write_text("{}\n")
    (beside / ".part-000000010-000000020.jsonl.ab12cd34.tmp").write_text("{torn")
    (beside / "sub").mkdir()
    (beside / "sub" / "part-000000020-000000030.jsonl").write_text("{}\n")
    assert [(Path(k).name, s) for k, s in own_parts(str(beside))] == [
        ("part-000000000-000000010.jsonl", range(0, 10))
    ]
    prefix = tmp_path / "parts"
    first = run_batch(rec, src, str(prefix), progress=False)
    again = run_batch(rec, src, str(prefix), overwrite=True, progress=False)
    assert again.processed == first.processed and not again.skipped


def test_batch_options_are_typed_like_the_servers(
    sample: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--option` values are parsed as the HTTP API parses them: booleans, numbers, lists."""
    artifact = sample[1]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "q", "item_ids": ["sku-0014"]}) + "\n")
    out = tmp_path / "out.jsonl"
    argv = ["batch", "--artifact", str(artifact), "--input", str(manifest), "--output", str(out)]
    options = ["use_color=false", "diversity=0.5", "exclude_categories=hat,belt", "k=2"]
    assert batch_main([*argv, "--quiet", *(f"--option={o}" for o in options)]) == 0
    answer = _records(out)[0]["recommendation"]
    assert isinstance(answer, dict)
    items = answer["items"]
    assert items and all(i["category"] not in ("hat", "belt") for i in items)
    assert all(" + " not in i["reason"] for i in items)  # no colour harmony in the reasons
    assert all(len(v) <= 2 for v in answer["by_category"].values())
    bad = [*argv, "--overwrite", "--quiet", "--option", "use_color=maybe"]
    assert batch_main(bad) == 2
    assert "use_color must be true or false" in capsys.readouterr().err
    assert batch_main([*argv, "--overwrite", "--quiet", "--options", "{not json"]) == 2


def test_manifest_bad_records_are_isolated(
    sample: tuple[Path, Path], rec: Recommender, tmp_path: Path
) -> None:
    catalog, _ = sample
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    lines = [
        json.dumps({"id": "photo", "image": str(catalog / "queries" / "blue-jeans.jpg")}),
        "{not json",
        json.dumps({"id": "unknown", "item_ids": ["no-such-sku"]}),
        json.dumps({"id": "corrupt", "image": "corrupt.jpg"}),  # relative to the manifest
        json.dumps({"id": "missing", "image": "missing.jpg"}),
        json.dumps({"id": "bad-options", "item_ids": ["sku-0001"], "options": {"k": 0}}),
        json.dumps({"id": "item", "item_ids": ["sku-0001"], "options": {"mode": "similar"}}),
        # Each of these stopped the whole run with a traceback, 0 bytes written.
        json.dumps({"id": "images-number", "images": 5}),
        json.dumps({"id": "ids-number", "item_ids": 5}),
        '{"id": "long", "item_ids": ["sku-0001"], "k": ' + "9" * 5000 + "}",
        "[" * 100_000 + "]" * 100_000,
    ]
    fifo = tmp_path / "fifo.jpg"
    os.mkfifo(fifo)  # read blocking, it would wait for a writer forever
    lines.append(json.dumps({"id": "fifo", "image": str(fifo)}))
    photo = catalog / "queries" / "blue-jeans.jpg"
    lines.append(json.dumps({"id": "file-uri", "image": photo.as_uri()}))
    lines.append(json.dumps({"id": "http", "image": "http://example.invalid/x.jpg"}))
    # Review (s37): a NUL in a path stopped the run with a traceback at every rerun; a line of
    # a million option keys was held whole until its group ran; ids were Python reprs.
    shutil.copy(photo, tmp_path / "beside.jpg")
    lines.append(json.dumps({"id": "nul", "image": "beside.jpg\u0000x"}))
    lines.append(
        '{"id": "many", "item_ids": ["sku-0001"], "options": {'
        + ",".join(f'"o{n}": 1' for n in range(30_000))
        + "}}"
    )
    lines.append(json.dumps({"id": None, "item_ids": ["sku-0001"]}))
    lines.append(json.dumps({"id": 42, "item_ids": ["sku-0001"]}))
    lines.append(json.dumps({"id": {"a": 1}, "item_ids": ["sku-0001"]}))
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("\ufeff" + "\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out.parquet"
    summary = run_batch(rec, str(manifest), str(out), progress=False)
    assert summary.processed == 19 and summary.errors == 14

    import pyarrow.parquet as pq

    table = pq.read_table(out).to_pylist()
    status = {r["id"]: (r["status"], r["error_code"]) for r in table}
    assert status["photo"] == ("ok", None) and status["item"] == ("ok", None)
    assert status["line-2"] == ("error", "malformed_json")
    assert status["unknown"] == ("error", "unknown_item")
    assert status["bad-options"] == ("error", "invalid_options")
    assert status["corrupt"][0] == "error" and status["missing"][0] == "error"
    assert status["images-number"] == status["ids-number"] == ("error", "invalid_options")
    assert status["line-10"] == ("error", "malformed_json")
    assert status["line-11"] == ("error", "payload_too_large")  # counted before it is parsed
    assert status["fifo"] == ("error", "not_a_regular_file")
    assert status["file-uri"] == ("ok", None)  # file:// as the docs say (was image_not_found)
    assert status["http"] == ("error", "invalid_location")
    assert status["nul"] == ("error", "invalid_image")  # a record, not a traceback
    assert status["line-16"] == ("error", "payload_too_large")  # its id is never read
    assert status["line-17"] == ("ok", None) and status["42"] == ("ok", None)
    assert status["line-19"] == ("error", "invalid_options")  # an object is not an id
    assert status["photo"] == ("ok", None)  # the first line, after a byte-order mark
    assert json.loads(table[0]["recommendation"])["outfit"] is not None
    assert not out.with_name("out.parquet.parts").exists()


def test_a_manifest_line_is_checked_as_closely_as_a_request_body(
    sample: tuple[Path, Path], rec: Recommender, tmp_path: Path
) -> None:
    """Review, session 42: unknown keys (an option beside ``options``, a typo) were dropped,
    ``options: false`` read as none, ``image`` beside ``images`` dropped, ``"item_ids": "x"``
    wrapped, and a key given twice kept its last value. Each is that line's error now."""
    shirt = str(sample[0] / "queries" / "blue-jeans.jpg")
    lines = {
        "top-level-k": {"item_ids": ["sku-0014"], "k": 1},
        "typo": {"item_ids": ["sku-0014"], "opts": {"k": 1}},
        "options-false": {"item_ids": ["sku-0014"], "options": False},
        "options-list": {"item_ids": ["sku-0014"], "options": []},
        "options-text": {"item_ids": ["sku-0014"], "options": ""},
        "image-and-images": {"images": [shirt], "image": shirt},
        "image-and-path": {"image": shirt, "path": shirt},
        "images-false": {"images": False, "image": shirt},
        "image-null": {"image": None, "item_ids": ["sku-0014"]},
        "ids-text": {"item_ids": "sku-0014"},
        "ids-false": {"item_ids": False, "image": shirt},
        # the documented shapes still work
        "ok-image": {"image": shirt, "options": {"k": 2}},
        "ok-path": {"path": shirt},
        "ok-images": {"images": [shirt], "item_ids": ["sku-0014"]},
        "ok-ids": {"item_ids": ["sku-0014"]},
    }
    text = [json.dumps({"id": key, **row}) for key, row in lines.items()]
    text.append('{"id": "twice", "item_ids": ["sku-0014"], "options": {"k": 2, "k": 5}}')
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(text) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    run_batch(rec, str(manifest), str(out), progress=False)
    records = {str(r["id"]): r for r in _records(out)}
    ok = {k for k in records if k.startswith("ok-")}
    assert {k for k, r in records.items() if r["status"] == "ok"} == ok
    errors = {k: r["error"] for k, r in records.items() if k not in ok}
    twice = errors.pop("line-16")  # a line that cannot be read has no id of its own
    assert twice == {"code": "duplicate_key", "message": "the key 'k' is given twice; give it once"}
    assert set(errors) == set(lines) - ok
    assert all(e["code"] == "invalid_options" for e in errors.values()), errors  # type: ignore[index]
    assert "unknown key 'k'" in errors["top-level-k"]["message"]  # type: ignore[index]
    assert "unknown key 'opts'" in errors["typo"]["message"]  # type: ignore[index]
    assert "'options' must be an object" in errors["options-false"]["message"]  # type: ignore[index]
    assert "not both" in errors["image-and-images"]["message"]  # type: ignore[index]
    assert "'item_ids' must be a list" in errors["ids-text"]["message"]  # type: ignore[index]


def test_resume_cuts_a_torn_line_and_finishes(rec: Recommender, tmp_path: Path) -> None:
    src = str(rec.artifact.path)
    full = tmp_path / "full.jsonl"
    run_batch(rec, src, str(full), progress=False)
    lines = full.read_text(encoding="utf-8").splitlines(keepends=True)
    part = tmp_path / "part.jsonl"
    run_batch(rec, src, str(part), progress=False)
    part.write_text("".join(lines[:40]) + lines[40][:25], encoding="utf-8")  # killed mid-line
    sidecar = Path(f"{part}.batch.json")
    state = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**state, "complete": False}))
    summary = run_batch(rec, src, str(part), progress=False)
    assert summary.skipped == 40 and summary.processed == len(lines) - 40
    indexes = [r["index"] for r in _records(part)]
    assert indexes == list(range(len(lines)))


@pytest.mark.parametrize(
    "edit", ["a repeat", "a negative index", "a boolean index", "an index of no input"]
)
def test_resume_keeps_each_input_once_whatever_the_file_holds(
    rec: Recommender, tmp_path: Path, edit: str
) -> None:
    """Audit, session 46: a resumed output with a repeated, negative, boolean or
    out-of-range index was reported complete with more records than inputs."""
    src = str(rec.artifact.path)
    part = tmp_path / "part.jsonl"
    run_batch(rec, src, str(part), progress=False)
    lines = part.read_text(encoding="utf-8").splitlines(keepends=True)
    n = len(lines)
    odd = {
        "a repeat": lines[3],
        "a negative index": json.dumps({**json.loads(lines[4]), "index": -1}) + "\n",
        "a boolean index": json.dumps({**json.loads(lines[4]), "index": True}) + "\n",
        "an index of no input": json.dumps({**json.loads(lines[4]), "index": 10**12}) + "\n",
    }[edit]
    kept = n if edit == "an index of no input" else 10
    part.write_text("".join(lines[:kept]) + odd + "".join(lines[kept:]), encoding="utf-8")
    sidecar = Path(f"{part}.batch.json")
    sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), "complete": False}))
    if edit == "an index of no input":
        with pytest.raises(BatchError, match=r"1 record\(s\) past this run's last input"):
            run_batch(rec, src, str(part), progress=False)
        assert not json.loads(sidecar.read_text())["complete"]
        return
    summary = run_batch(rec, src, str(part), progress=False)
    assert summary.complete and summary.skipped == kept  # the rest is done again
    assert [r["index"] for r in _records(part)] == list(range(n))


def test_inputs_listed_otherwise_than_when_the_run_began_are_refused(
    rec: Recommender, sample: tuple[Path, Path], tmp_path: Path
) -> None:
    """Review, session 54: records are matched to inputs by index, and a photo added to the
    folder between a killed run and its rerun shifted every index after it (the output held
    one photo twice and never the new one, reported complete); a completed run rerun on a
    grown folder said "already done"."""
    photos = tmp_path / "photos"
    shutil.copytree(sample[0] / "images", photos)
    names = sorted(p.name for p in photos.iterdir())[:12]
    for extra in sorted(photos.iterdir())[12:]:
        extra.unlink()
    out = tmp_path / "out.jsonl"
    run_batch(rec, str(photos), str(out), progress=False)
    lines = out.read_text(encoding="utf-8").splitlines(keepends=True)
    assert [json.loads(line)["id"] for line in lines] == names
    out.write_text("".join(lines[:5]), encoding="utf-8")  # killed after 5 records
    sidecar = Path(f"{out}.batch.json")
    sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), "complete": False}))
    added = photos / (names[0][:-4] + "-b.jpg")  # sorts before names[1]: shifts the rest
    shutil.copy(photos / names[0], added)
    with pytest.raises(
        BatchError, match=r"inputs of .* changed since the run .* \(12 then, 13 now"
    ):
        run_batch(rec, str(photos), str(out), progress=False)
    assert len(out.read_text(encoding="utf-8").splitlines()) == 5  # nothing written
    # Put back, the run resumes and completes; grown again, the completed run is refused too.
    added.unlink()
    assert run_batch(rec, str(photos), str(out), progress=False).skipped == 5
    assert [r["id"] for r in _records(out)] == names
    shutil.copy(photos / names[0], photos / "zz-new.jpg")
    with pytest.raises(BatchError, match=r"the completed run .* list otherwise now \(12 then, 13"):
        run_batch(rec, str(photos), str(out), progress=False)
    # The same count listed otherwise (one photo renamed) is refused as well.
    (photos / "zz-new.jpg").unlink()
    (photos / names[3]).rename(photos / ("a" + names[3]))
    with pytest.raises(BatchError, match=r"12 then and now, listed differently"):
        run_batch(rec, str(photos), str(out), progress=False)
    # Inputs that are gone: the completed run's answers stand, as before.
    (photos / ("a" + names[3])).rename(photos / names[3])
    moved = tmp_path / "moved"
    photos.rename(moved)
    assert run_batch(rec, str(photos), str(out), progress=False).skipped == 12
    moved.rename(photos)
    fresh = run_batch(rec, str(photos), str(out), overwrite=True, progress=False)
    assert fresh.complete and fresh.processed == 12


def test_a_completed_run_records_the_inputs_it_answered(
    rec: Recommender, sample: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review, session 54: a photo added between the listing taken at the start and the run's
    own pass was answered, but the run recorded the listing without it, and its rerun with
    nothing changed was refused."""
    import stygig.batch as batch

    photos = tmp_path / "photos"
    photos.mkdir()
    first = sorted((sample[0] / "images").iterdir())[:3]
    for path in first:
        shutil.copy(path, photos / path.name)
    real = batch.listing

    def listing_then_a_photo(inputs: Iterator[batch.BatchInput]) -> dict[str, object]:
        found = real(inputs)
        shutil.copy(first[0], photos / "zz-late.jpg")
        return found

    monkeypatch.setattr(batch, "listing", listing_then_a_photo)
    out = tmp_path / "out.jsonl"
    done = run_batch(rec, str(photos), str(out), progress=False)
    assert done.complete and done.processed == 4
    monkeypatch.setattr(batch, "listing", real)
    again = run_batch(rec, str(photos), str(out), progress=False)
    assert again.processed == 0 and again.skipped == 4


def test_a_manifest_that_repeats_an_id_is_answered_whole_and_warned_about(
    rec: Recommender, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Review, session 54: two lines of one id (or 1 and "1") gave two records of that id
    without a word; a consumer keyed by id kept one."""
    rows = [{"id": "dup", "item_ids": ["sku-0014"]}, {"id": "dup", "item_ids": ["sku-0030"]}]
    rows += [{"id": 1, "item_ids": ["sku-0014"]}, {"id": "1", "item_ids": ["sku-0030"]}]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with caplog.at_level("WARNING", logger="stygig.batch"):
        summary = run_batch(rec, str(manifest), str(tmp_path / "out.jsonl"), progress=False)
    assert summary.complete and summary.processed == 4
    assert [r["id"] for r in _records(tmp_path / "out.jsonl")] == ["dup", "dup", "1", "1"]
    assert "2 input(s) repeat an earlier input's id" in caplog.text


def test_a_manifest_with_blank_lines_resumes(rec: Recommender, tmp_path: Path) -> None:
    """A manifest's indexes are its line numbers, so blank lines leave gaps: a resumed run
    takes the records before the cut as its own (review, s47: the first version of the check
    for records of no input refused them)."""
    rows = [json.dumps({"id": f"r{n}", "item_ids": ["sku-0014"]}) for n in range(6)]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n\n".join(rows) + "\n", encoding="utf-8")  # indexes 0, 2, ... 10
    out = tmp_path / "out.jsonl"
    run_batch(rec, str(manifest), str(out), progress=False)
    lines = out.read_text(encoding="utf-8").splitlines(keepends=True)
    assert [json.loads(line)["index"] for line in lines] == [0, 2, 4, 6, 8, 10]
    out.write_text("".join(lines[:5]), encoding="utf-8")  # done up to index 8 of 6 inputs
    sidecar = Path(f"{out}.batch.json")
    sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), "complete": False}))
    summary = run_batch(rec, str(manifest), str(out), progress=False)
    assert summary.complete and summary.skipped == 5 and summary.processed == 1
    assert [r["index"] for r in _records(out)] == [0, 2, 4, 6, 8, 10]


def test_kill_9_half_way_then_resume(sample: tuple[Path, Path], tmp_path: Path) -> None:
    _, artifact = sample
    ids = [
        json.loads(line)["id"]
        for line in (artifact / "items.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    manifest = tmp_path / "m.jsonl"
    n = 1000
    manifest.write_text(
        "".join(
            json.dumps({"id": f"q{i}", "item_ids": [ids[i % len(ids)]]}) + "\n" for i in range(n)
        )
    )
    out = tmp_path / "out.jsonl"
    args = ["--artifact", str(artifact), "--input", str(manifest), "--output", str(out)]
    cmd = [
        sys.executable,
        "-m",
        "stygig.cli",
        "batch",
        *args,
        "--quiet",
        "--batch-size",
        "16",
    ]
    process = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (
            out.exists() and out.stat().st_size > 0 and len(out.read_bytes().splitlines()) >= 100
        ):
            assert process.poll() is None, "the batch finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(10)
    written = len(out.read_bytes().splitlines())
    assert 100 <= written < n
    assert batch_main(["batch", *args, "--quiet", "--batch-size", "16"]) == 0
    records = _records(out)
    assert sorted(int(str(r["index"])) for r in records) == list(range(n))  # each exactly once
    assert all(r["status"] == "ok" for r in records)


def test_answers_from_an_artifact_apply_its_change_log(
    sample: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`stygig catalog add/remove --artifact A` writes A's change log, which `catalog status`
    counts and a server with --change-log applies; `stygig recommend` and `stygig batch`
    answered from A as built (s37: with a warning). They apply it now: an added item is a
    query and a candidate, a removed one is in no answer and no --all-items run, a run
    resumes only on the same catalogue; --no-change-log answers from A as built, saying so."""
    artifact = tmp_path / "art"
    shutil.copytree(sample[1], artifact)

    def recommend(*extra: str) -> tuple[dict[str, object], str]:
        argv = ["recommend", "--artifact", str(artifact), "--json", "--k", "6", *extra]
        assert batch_main(argv) == 0
        out, err = capsys.readouterr()
        return json.loads(out), err

    def shown(answer: dict[str, object]) -> set[str]:
        groups = answer["by_category"]
        assert isinstance(groups, dict)
        return {str(i["id"]) for items in groups.values() for i in items}

    built, err = recommend("--item", "sku-0001")
    assert err == ""
    gone = sorted(shown(built))[0]  # an item the answer holds: removing it must show
    photo = sample[0] / "images" / "sku-0002.jpg"
    add = ["catalog", "add", "--artifact", str(artifact), "--photo", str(photo)]
    add += ["--field", "id=new-top", "--field", "category=top", "--field", "name=New top"]
    assert batch_main(add) == 0
    assert batch_main(["catalog", "remove", gone, "--artifact", str(artifact)]) == 0
    capsys.readouterr()

    now, err = recommend("--item", "sku-0001")
    assert "applied 2 change record(s)" in err
    assert gone not in shown(now)
    assert recommend("--item", "new-top")[0]["query"]  # the added item is a query now
    as_built, err = recommend("--item", "sku-0001", "--no-change-log")
    assert "2 change record(s) that these answers do not include" in err
    assert shown(as_built) == shown(built)
    # A server without --change-log answers from the artifact as built: it says so at start.
    with running_server(artifact, tmp_path / "serve.log") as server:
        assert httpx.get(f"{server.url}/v1/items/new-top").status_code == 404
    said = (tmp_path / "serve.log").read_text(encoding="utf-8")
    assert "2 change record(s) that these answers do not include" in said
    assert "serve with --change-log" in said
    both = ["recommend", "--artifact", str(artifact), "--item", "sku-0001"]
    assert batch_main([*both, "--no-change-log", "--change-log", str(tmp_path / "x")]) == 2
    assert batch_main([*both, "--change-log", str(tmp_path / "missing")]) == 2
    capsys.readouterr()

    out = tmp_path / "out.jsonl"
    argv = ["batch", "--artifact", str(artifact), "--all-items", "--output", str(out), "--quiet"]
    assert batch_main(argv) == 0
    assert "applied 2 change record(s)" in capsys.readouterr().err
    records = _records(out)
    ids = [str(r["id"]) for r in records]
    assert "new-top" in ids and gone not in ids and len(ids) == len(set(ids))
    assert all(r["status"] == "ok" for r in records)
    for r in records:
        assert gone not in shown(r["recommendation"])  # type: ignore[arg-type]
    # One more change: the same arguments no longer name the same run (its catalogue moved).
    assert batch_main(["catalog", "remove", "new-top", "--artifact", str(artifact)]) == 0
    capsys.readouterr()
    assert batch_main(argv) == 2
    assert "other arguments" in capsys.readouterr().err
    # As built: every item of the build, the removed one too, said so before the run.
    old = tmp_path / "old.jsonl"
    argv = ["batch", "--artifact", str(artifact), "--all-items", "--output", str(old)]
    assert batch_main([*argv, "--quiet", "--no-change-log"]) == 0
    assert "3 change record(s) that these answers do not include" in capsys.readouterr().err
    assert [r["id"] for r in _records(old)] == [
        i.id for i in Recommender.from_path(artifact).artifact.items
    ]


def _strict_records(path: Path) -> list[dict[str, object]]:
    """A JSONL output as a strict reader takes it: UTF-8, no lone surrogate in any string."""
    records = [json.loads(line) for line in path.read_bytes().decode("utf-8").splitlines()]
    json.dumps(records, ensure_ascii=False).encode("utf-8")  # raises on a lone surrogate
    return records


def test_names_that_are_not_text_are_escaped_or_refused_and_the_run_finishes(
    sample: tuple[Path, Path], rec: Recommender, tmp_path: Path
) -> None:
    """Review, session 40: a photo file name holding a byte that is not UTF-8, or a manifest
    id "x\\ud800y", had every record computed, then the Parquet conversion failed
    (UnicodeEncodeError, exit 1), and again on every rerun, --overwrite included; JSONL wrote
    lone-surrogate escapes a strict reader refuses. The name is keyed with the byte escaped;
    a manifest line holding a lone surrogate is that line's error record."""
    catalog, _ = sample
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(catalog / "queries" / "blue-jeans.jpg", photos / "jeans.jpg")
    with open(os.fsencode(photos) + b"/bad\xffname.jpg", "wb") as f:
        f.write((catalog / "queries" / "blue-jeans.jpg").read_bytes())
    for name in ("p.parquet", "p.jsonl"):
        out = tmp_path / name
        summary = run_batch(rec, str(photos), str(out), progress=False)
        assert summary.complete and summary.processed == 2 and summary.errors == 0
        assert run_batch(rec, str(photos), str(out), progress=False).skipped == 2  # complete
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "p.parquet").to_pylist()
    assert [(r["id"], r["status"]) for r in table] == [
        ("bad\\xffname.jpg", "ok"),  # the byte escaped; the photo read by its own name
        ("jeans.jpg", "ok"),
    ]
    assert table[0]["source"] == f"{photos}/bad\\xffname.jpg"
    records = _strict_records(tmp_path / "p.jsonl")
    assert [(r["id"], r["status"]) for r in records] == [(r["id"], "ok") for r in table]

    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        '{"id": "ok", "item_ids": ["sku-0001"]}\n'
        '{"id": "x\\ud800y", "item_ids": ["sku-0002"]}\n'
        '{"id": "in-ids", "item_ids": ["sku-0001\\udcff"]}\n'
        '{"id": "in-path", "image": "a\\udcff.jpg"}\n'
        '{"id": "in-options", "item_ids": ["sku-0001"], "options": {"mode": "\\ud800"}}\n'
        '{"id": "pair-\\ud83d\\ude00", "item_ids": ["sku-0003"]}\n',  # a pair is a character
        encoding="utf-8",
    )
    out = tmp_path / "m.parquet"
    summary = run_batch(rec, str(manifest), str(out), progress=False)
    assert summary.complete and summary.processed == 6 and summary.errors == 4
    rows = {r["id"]: r for r in pq.read_table(out).to_pylist()}
    assert rows["ok"]["status"] == rows["pair-\U0001f600"]["status"] == "ok"
    for line in (2, 3, 4, 5):
        row = rows[f"line-{line}"]
        assert (row["status"], row["error_code"]) == ("error", "malformed_json")
        message = f"line {line} holds a lone UTF-16 surrogate escape (not text)"
        assert row["error_message"] == message
    jsonl = tmp_path / "m-out.jsonl"
    run_batch(rec, str(manifest), str(jsonl), progress=False)
    assert [r["id"] for r in _strict_records(jsonl)] == list(rows)


def test_a_parquet_run_staged_with_names_that_are_not_text_finishes(
    sample: tuple[Path, Path], rec: Recommender, tmp_path: Path
) -> None:
    """Review, session 40: parts staged before records were made text hold lone surrogates;
    the run that resumes them converts them (escaped) instead of failing on every rerun."""
    catalog, _ = sample
    photos = tmp_path / "photos"
    photos.mkdir()
    with open(os.fsencode(photos) + b"/bad\xffname.jpg", "wb") as f:
        f.write((catalog / "queries" / "blue-jeans.jpg").read_bytes())
    jsonl = tmp_path / "p.jsonl"
    run_batch(rec, str(photos), str(jsonl), progress=False)
    record = _records(jsonl)[0]
    out = tmp_path / "p.parquet"
    run_batch(rec, str(photos), str(out), progress=False)
    # As a run before the fix left it: staged, not converted, the name as Python read it.
    sidecar = Path(f"{out}.batch.json")
    sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), "complete": False}))
    out.unlink()
    staged = {**record, "id": "bad\udcffname.jpg", "source": f"{photos}/bad\udcffname.jpg"}
    staging = tmp_path / "p.parquet.parts"
    staging.mkdir()
    (staging / "part-000000000-000000001.jsonl").write_text(json.dumps(staged) + "\n")
    summary = run_batch(rec, str(photos), str(out), progress=False)
    assert summary.complete and summary.skipped == 1 and summary.processed == 0
    import pyarrow.parquet as pq

    (row,) = pq.read_table(out).to_pylist()
    assert row["id"] == "bad\\xffname.jpg" and row["status"] == "ok"
    assert not staging.exists()


# A real `stygig batch` process held before its first input is read, until the test writes a
# line to its stdin: "started" on its stdout says it holds its output (review, session 40).
_HELD_RUN = """
import sys, threading
import stygig.batch as batch
from stygig.cli import main

real, gate, opened = batch.prepare_input, threading.Lock(), []


def held(*args, **kwargs):
    with gate:
        if not opened:
            print("started", flush=True)
            sys.stdin.readline()
            opened.append(True)
    return real(*args, **kwargs)


batch.prepare_input = held
sys.exit(main(sys.argv[1:]))
"""


@contextlib.contextmanager
def _held_run(argv: list[str]) -> Iterator[subprocess.Popen[str]]:
    """A batch process started and held at its first input (its output's lock taken); killed
    on the way out if it still runs."""
    with subprocess.Popen(
        [sys.executable, "-c", _HELD_RUN, *argv],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()  # the run's own word, or EOF if it failed first
            assert line == "started\n", f"the held run exited with {process.wait(30)}"
            yield process
        finally:
            process.kill()


def test_a_second_run_of_a_run_in_progress_is_refused(
    sample: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Review, session 40: two runs of the same command at once (an overlapping nightly cron
    entry) both resumed the same record, both appended every record and both said complete.
    The second is refused (exit 8) while the first lives, --overwrite included, and nothing
    of the first is touched; once it ends, however it ends (kill -9 too), a run goes on."""
    _, artifact = sample
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        "".join(json.dumps({"id": f"q{i}", "item_ids": ["sku-0001"]}) + "\n" for i in range(40))
    )
    for name in ("out.jsonl", "out.parquet"):
        out = tmp_path / name
        argv = ["batch", "--artifact", str(artifact), "--input", str(manifest), "--output"]
        argv += [str(out), "--quiet", "--batch-size", "8"]
        with _held_run(argv) as first:
            sidecar = Path(f"{out}.batch.json").read_bytes()
            for extra in ([], ["--overwrite"]):
                assert batch_main([*argv, *extra]) == 8
                err = capsys.readouterr().err
                assert f"another batch run is writing {out} now" in err
                assert Path(f"{out}.batch.json").read_bytes() == sidecar
            assert not out.exists() or out.read_bytes() == b""  # the first is held: no record
            assert first.stdin is not None
            first.stdin.write("go\n")
            first.stdin.flush()
            assert first.wait(120) == 0
        if name.endswith(".jsonl"):
            indexes = [r["index"] for r in _records(out)]
        else:
            import pyarrow.parquet as pq

            indexes = [r["index"] for r in pq.read_table(out).to_pylist()]
        assert indexes == list(range(40))  # each exactly once
        assert not Path(f"{out}.batch.lock").exists()
        assert batch_main(argv) == 0  # the same run, complete: nothing to do
        assert "written now: 0" in capsys.readouterr().out

    # Killed while it holds the output: the kernel lets go, and the next run resumes it.
    out = tmp_path / "killed.jsonl"
    argv = ["batch", "--artifact", str(artifact), "--input", str(manifest), "--output"]
    argv += [str(out), "--quiet"]
    with _held_run(argv) as first:
        first.send_signal(signal.SIGKILL)
        assert first.wait(30) == -signal.SIGKILL
    assert Path(f"{out}.batch.lock").exists()  # left by the kill: it holds nothing
    assert batch_main(argv) == 0
    assert [r["index"] for r in _records(out)] == list(range(40))
    assert not Path(f"{out}.batch.lock").exists()

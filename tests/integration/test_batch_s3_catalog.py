"""A catalogue in S3 given to ``stygig batch`` (or read by the build) never names the local disk
of the machine that reads it, as a manifest in S3 never does (review, session 40: its absolute
paths and file:// URIs were read, and through an endpoint base64-uploaded to the input bucket).
S3 is moto's server on 127.0.0.1 (``s3_env``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stygig import storage
from stygig.batch import run_batch
from stygig.catalog import read_catalog
from stygig.cli import main
from stygig.engine import Recommender
from tests.integration.test_storage_s3 import s3_env

__all__ = ["s3_env"]  # the fixture, used by name

SECRET = b"TOPSECRET-CONTENT"
REFUSED = "a catalogue in S3 names photos beside it or by s3:// URI, never local files"


@pytest.fixture
def s3_catalog(
    s3_env: dict[str, str], sample: tuple[Path, Path], tmp_path: Path
) -> tuple[str, list[str]]:
    """``s3://shop/cat40/cat.csv``: rows naming a local file by absolute path and by file://
    URI, a local photo, a photo beside the catalogue and one by s3:// URI; and the local paths."""
    secret = tmp_path / "secret.txt"
    secret.write_bytes(SECRET + b"\n")
    photo = sample[0] / "queries" / "blue-jeans.jpg"
    local = tmp_path / "local.jpg"
    local.write_bytes(photo.read_bytes())
    storage.write_bytes("s3://shop/cat40/rel.jpg", photo.read_bytes())
    storage.write_bytes("s3://shop/elsewhere/uri.jpg", photo.read_bytes())
    rows = [
        f"x1,{secret},top",
        f"x2,{secret.as_uri()},top",
        f"x3,{local},top",
        f"x4,file://localhost{local},top",
        "x5,rel.jpg,top",
        "x6,s3://shop/elsewhere/uri.jpg,top",
    ]
    body = "id,image,category\n" + "\n".join(rows) + "\n"
    storage.write_bytes("s3://shop/cat40/cat.csv", body.encode())
    return "s3://shop/cat40/cat.csv", [str(tmp_path), secret.as_uri()]


def test_local_names_in_an_s3_catalogue_are_rejected_rows(
    s3_catalog: tuple[str, list[str]],
) -> None:
    src, _ = s3_catalog
    for check_images in (False, True):  # the batch reads without checking; the build checks
        read = read_catalog(src, check_images=check_images)
        assert [(i.id, i.image) for i in read.items] == [
            ("x5", "s3://shop/cat40/rel.jpg"),
            ("x6", "s3://shop/elsewhere/uri.jpg"),
        ]
        assert [(r.id, r.reason, r.detail) for r in read.rejects] == [
            (f"x{n}", "missing_image", REFUSED) for n in (1, 2, 3, 4)
        ]


def test_a_batch_never_reads_nor_uploads_local_files_an_s3_catalogue_names(
    s3_catalog: tuple[str, list[str]],
    sample: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    src, local = s3_catalog
    out = tmp_path / "out.jsonl"
    summary = run_batch(Recommender.from_path(sample[1]), src, str(out), progress=False)
    assert (
        summary.complete and summary.errors == 4 and summary.errors_by_code == {"rejected_row": 4}
    )
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [(r["id"], r["status"]) for r in records] == [
        ("x1", "error"),
        ("x2", "error"),
        ("x3", "error"),
        ("x4", "error"),
        ("x5", "ok"),
        ("x6", "ok"),
    ]
    for r in records[:4]:
        assert r["error"]["message"].endswith(REFUSED) and r["source"] == src
    text = out.read_text(encoding="utf-8")
    assert not any(path in text for path in local)  # no local path echoed

    # Through an async endpoint (moto's runtime): nothing of the local files is uploaded.
    argv = ["batch", "--endpoint-name", "shop-async", "--input-prefix", "s3://shop/async40/"]
    argv += ["--input", src, "--output", str(tmp_path / "ep.jsonl"), "--timeout", "5"]
    assert main([*argv, "--interval", "0.05", "--quiet"]) == 0
    capsys.readouterr()
    ep = [json.loads(x) for x in (tmp_path / "ep.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(r["id"], r["status"]) for r in ep] == [(r["id"], r["status"]) for r in records]
    uploaded = [storage.read_bytes(k) for k in storage.list_keys("s3://shop/async40/")]
    assert uploaded and not any(b"images_b64" in body for body in uploaded)
    assert not any(SECRET in body or b"VE9QU0VDUkVU" in body for body in uploaded)


def test_an_s3_catalogue_with_a_local_images_folder_is_confined_to_it(
    s3_env: dict[str, str], sample: tuple[Path, Path], tmp_path: Path
) -> None:
    """``--images`` naming a local folder confines an S3 catalogue's photos to that folder, as
    an S3 folder does (review, session 41: absolute paths, file:// URIs and '..' were read)."""
    images, private = tmp_path / "imgs", tmp_path / "private"
    images.mkdir()
    private.mkdir()
    photo = (sample[0] / "queries" / "blue-jeans.jpg").read_bytes()
    (images / "ok.jpg").write_bytes(photo)
    (private / "secret.jpg").write_bytes(photo)
    rows = [
        "rel,ok.jpg,top",
        f"abs,{private / 'secret.jpg'},top",
        f"uri,{(private / 'secret.jpg').as_uri()},top",
        "dotdot,../private/secret.jpg,top",
        "gone,absent.jpg,top",
    ]
    body = "id,image,category\n" + "\n".join(rows) + "\n"
    storage.write_bytes("s3://shop/cat41/cat.csv", body.encode())
    for check_images in (False, True):
        read = read_catalog("s3://shop/cat41/cat.csv", images_dir=images, check_images=check_images)
        kept = [(i.id, i.image) for i in read.items]
        assert kept[0] == ("rel", str(images / "ok.jpg"))
        assert [i for i, _ in kept] == (["rel"] if check_images else ["rel", "gone"])
        refused = [(r.id, r.reason, r.detail) for r in read.rejects]
        assert refused[:3] == [
            ("abs", "missing_image", REFUSED),
            ("uri", "missing_image", REFUSED),
            ("dotdot", "missing_image", "image path leaves the --images folder"),
        ]
        assert read.rejects[2].raw["image"] == "../private/secret.jpg"  # as the row gave it
        assert [r.id for r in read.rejects[3:]] == (["gone"] if check_images else [])
    # Photos beside the catalogue in S3: it is read from a temporary copy, whose folder a
    # reject's raw values named ("/tmp/stygig-copy-.../../private/secret.jpg"; review, s49).
    read = read_catalog("s3://shop/cat41/cat.csv")
    [dotdot] = [r for r in read.rejects if r.id == "dotdot"]
    assert dotdot.detail == "image path leaves the catalogue's folder"
    assert dotdot.raw["image"] == "../private/secret.jpg"

"""Build real artifacts from real files, reload them, and check the round trip."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stygig.artifact import Artifact
from stygig.build import build_artifact, make_build_encoder
from stygig.cli import main
from stygig.encoders import load_encoder
from stygig.features import prepare_image
from stygig.sample_catalog import generate_sample_catalog
from tests.conftest import KAGGLE_DIR, require_dataset
from tests.integration.server_fixtures import REPO


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_sample_catalog(tmp_path_factory.mktemp("sample") / "catalog")


def test_sample_catalogue_builds_and_round_trips(sample: Path, tmp_path: Path) -> None:
    encoder = load_encoder("tiny")
    result = build_artifact(sample, tmp_path / "art", encoder, progress=False)
    assert result.items == 131 and result.rejects == {}
    art = Artifact.load(result.path)
    assert art.manifest["encoder"]["name"] == "tiny"
    assert art.manifest["counts"]["by_category"]["jeans"] == 11
    # 131 items >= 2 x 64 dims: whitening is on by default, fitted and stored.
    assert art.whitening is not None and art.manifest["whitening"]["input_dim"] == encoder.dim
    # Round trip: re-embedding an item's photo (then whitening it) gives the stored embedding.
    for pos in (0, 57, 130):
        item = art.items[pos]
        raw = encoder.encode(prepare_image(item.image, encoder.preprocess).tensor[None])
        again = art.whitening.apply(raw)[0]
        assert np.allclose(again, art.embeddings[pos], atol=1e-4)
        assert art.index.search(again, 1)[1][0, 0] == pos
    color = art.colors[0]
    assert len(color["rgb"]) == 3 and color["hex"].startswith("#")


def test_a_build_publishes_its_category_heads_with_the_rest(
    sample: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review, session 53: the heads were added to the published folder after it replaced
    the old artifact, so a build stopped between the two (Ctrl-C, SIGTERM) left an artifact
    without them that loaded and served, and a kill while they were written left a stray file
    that made every load refuse it. They are in the folder when it is published: a stop right
    after publishing leaves the whole artifact."""
    from stygig import build

    write = build.write_artifact

    def stopped_after_publishing(*args: Any, **kwargs: Any) -> Path:
        write(*args, **kwargs)
        raise KeyboardInterrupt  # the very next moment of the build: the operator's Ctrl-C

    monkeypatch.setattr(build, "write_artifact", stopped_after_publishing)
    with pytest.raises(KeyboardInterrupt):
        build_artifact(sample, tmp_path / "art", load_encoder("tiny"), progress=False)
    art = Artifact.load(tmp_path / "art")
    assert art.heads and art.manifest["category_head"]["file"] in art.manifest["files"]


def test_bad_rows_never_stop_a_build(sample: Path, tmp_path: Path) -> None:
    folder = tmp_path / "cat"
    shutil.copytree(sample.parent, folder)
    images = folder / "images"
    (images / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    good = (images / "sku-0001.jpg").read_bytes()
    (images / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (images / "text.jpg").write_text("hello")
    with (folder / "catalog.csv").open() as f:
        rows = list(csv.DictReader(f))[:10]
    extra = [
        {**rows[0], "id": "c1", "image": "images/corrupt.jpg"},
        {**rows[0], "id": "c2", "image": "images/truncated.jpg"},
        {**rows[0], "id": "c3", "image": "images/text.jpg"},
        {**rows[0], "id": "m1", "image": "images/nope.jpg"},
        {**rows[1]},  # duplicate id
        {**rows[0], "id": "u1", "category": "spacesuit"},
        {**rows[0], "id": "e1", "category": ""},
    ]
    with (folder / "bad.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows + extra)
    result = build_artifact(
        folder / "bad.csv", tmp_path / "art", load_encoder("tiny"), progress=False
    )
    assert result.items == 10
    assert result.rejects == {
        "corrupt_image": 3,
        "missing_image": 1,
        "duplicate_id": 1,
        "unknown_category": 1,
        "missing_field": 1,
    }
    with (result.path / "rejects.csv").open() as f:
        lines = list(csv.DictReader(f))
    assert {r["id"] for r in lines} >= {"c1", "c2", "c3", "m1", "u1"}
    assert [int(r["row"]) for r in lines] == sorted(int(r["row"]) for r in lines)
    assert next(r for r in lines if r["id"] == "c2")["reason"] == "corrupt_image"


def test_cli_build_and_inspect(
    sample: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "art"
    code = main(
        ["build", "--catalog", str(sample), "--encoder", "tiny", "--out", str(out), "--quiet"]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "items: 131" in printed and "images/s" in printed
    assert main(["inspect", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "tiny" in shown and "jeans" in shown and "checksums      ok" in shown
    (out / "embeddings.npy").write_bytes(b"tampered")
    assert main(["inspect", str(out)]) == 4
    assert "checksum" in capsys.readouterr().err


def test_a_build_with_no_valid_row_says_why(
    sample: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Review, session 36: every row rejected (here: photos looked for in the wrong folder)
    ended with "see the rejects summary", which was never printed, and no rejects.csv. The
    error now counts the reasons and gives the first rows'."""
    args = ["build", "--catalog", str(sample), "--encoder", "tiny", "--quiet"]
    code = main([*args, "--images", str(tmp_path), "--out", str(tmp_path / "a")])
    assert code == 4
    err = capsys.readouterr().err
    assert "131 rows rejected (missing_image 131)" in err and "row 1: image file not found" in err
    assert not (tmp_path / "a").exists()


def test_build_and_batch_refuse_sizes_below_one(
    sample: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Review, session 36: `--batch-size 0` and `--workers -1` ended in tracebacks after the
    catalogue was read, `--batch-size -5` dropped every row; now usage errors (exit 2)."""
    base = ["build", "--catalog", str(sample), "--encoder", "tiny", "--out", str(tmp_path / "a")]
    batch = ["batch", "--artifact", str(tmp_path / "a"), "--input", str(sample), "--output", "o"]
    for args in (
        [*base, "--batch-size", "0"],
        [*base, "--batch-size", "-5"],
        [*base, "--workers", "-1"],
        [*batch, "--batch-size", "0"],
        [*batch, "--workers", "0"],
    ):
        with pytest.raises(SystemExit) as stopped:
            main(args)
        assert stopped.value.code == 2, args
        assert "expected a whole number of 1 or more" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()


def test_running_out_of_memory_is_a_sentence_not_a_traceback(
    sample: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Review, session 36: a catalogue too large for the machine ended in a MemoryError
    traceback."""
    import stygig.build

    def exhausted(*args: object, **kwargs: object) -> None:
        raise MemoryError

    monkeypatch.setattr(stygig.build, "read_catalog", exhausted)
    args = ["build", "--catalog", str(sample), "--encoder", "tiny", "--out", str(tmp_path / "a")]
    assert main([*args, "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "out of memory" in err and "Traceback" not in err


def test_a_build_stopped_by_sigterm_leaves_nothing_behind(sample: Path, tmp_path: Path) -> None:
    """Review, session 36: SIGTERM while the artifact was written killed the process and left
    its partial folder (`.<out>.XXXX/`) beside the output for good. It now ends the build as
    Ctrl-C does: the partial folder removed, exit 130."""
    script = f"""
import os, signal, sys
import stygig.artifact as artifact
from stygig.cli import main
write = artifact._write_rejects
def stopped(*args):
    os.kill(os.getpid(), signal.SIGTERM)  # mid-write: the partial folder exists now
    write(*args)
artifact._write_rejects = stopped
sys.exit(main(["build", "--catalog", {str(sample)!r}, "--encoder", "tiny",
               "--out", {str(tmp_path / "art")!r}, "--quiet"]))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert done.returncode == 130, (done.returncode, done.stderr[-500:])
    assert "interrupted" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no .art.* folder, no art


def test_a_build_decodes_on_at_most_eight_threads_unless_told(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Review, session 36: one decode thread per core, each up to ~320 MB for a large PNG
    master: 20 GB on a 64-core build box whatever the catalogue's size."""
    import os

    import stygig.build

    for cores, threads in ((64, 8), (2, 2), (None, 2)):
        monkeypatch.setattr(os, "cpu_count", lambda cores=cores: cores)
        assert stygig.build.default_workers() == threads, cores


def test_cli_reports_unreadable_catalogue(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "build",
            "--catalog",
            str(tmp_path / "none.csv"),
            "--encoder",
            "tiny",
            "--out",
            str(tmp_path / "a"),
        ]
    )
    assert code == 3
    assert "not found" in capsys.readouterr().err


@pytest.mark.shared_data
@pytest.mark.slow
def test_kaggle_slice_with_efficientnet_onnx(tmp_path: Path) -> None:
    """A 200-photo slice of the real Kaggle data, the real encoder, through ONNX Runtime."""
    pytest.importorskip("torch")
    styles = require_dataset(KAGGLE_DIR) / "styles.csv"
    lines = styles.read_text().splitlines()
    (tmp_path / "styles.csv").write_text("\n".join(lines[:201]) + "\n")
    with make_build_encoder("efficientnet-lite0") as (encoder, files):
        result = build_artifact(
            tmp_path / "styles.csv",
            tmp_path / "art",
            encoder,
            images_dir=KAGGLE_DIR / "images",
            extra_files=files,
            progress=False,
        )
    art = Artifact.load(result.path)
    assert art.manifest["encoder"]["runtime"] == "onnx" and (result.path / "encoder.onnx").is_file()
    # GeM in the graph (stamped) and in the record; format 2: an ONNX graph holds its own pool
    assert art.manifest["encoder"]["pooling"] == "gem-p3" and art.manifest["format_version"] == 2
    assert result.items + sum(result.rejects.values()) == 200
    from stygig.engine import load_artifact_encoder

    served = load_artifact_encoder(art)
    pos = 17
    again = served.encode(prepare_image(art.items[pos].image, served.preprocess).tensor[None])[0]
    assert float(again @ art.embeddings[pos]) > 0.9999


def test_the_read_step_shows_its_progress(
    sample: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Review, session 53: reading a catalogue (every row's photo checked) showed nothing:
    14.5 s of silence for 200,000 rows before the embedding's bar began."""
    build_artifact(sample, tmp_path / "art", load_encoder("tiny"), progress=True)
    err = capsys.readouterr().err
    assert "reading the catalogue" in err and "131 rows" in err
    build_artifact(sample, tmp_path / "quiet", load_encoder("tiny"), progress=False)
    assert "reading the catalogue" not in capsys.readouterr().err

"""`stygig build --nprobe`: the probes an IVF index searches, recorded with the index."""

from __future__ import annotations

from pathlib import Path

import pytest

from stygig.artifact import Artifact, read_manifest
from stygig.cli import main


def test_nprobe_reaches_the_index_and_bad_values_are_refused(
    sample: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    catalog = sample[0] / "catalog.csv"
    common = ["build", "--catalog", str(catalog), "--encoder", "tiny", "--quiet"]
    out = tmp_path / "ivf"
    argv = [*common, "--out", str(out), "--index", "ivf", "--nprobe", "3", "--no-category-head"]
    assert main(argv) == 0
    assert read_manifest(out)["index"]["params"]["nprobe"] == 3
    assert Artifact.load(out).index.params()["nprobe"] == 3
    capsys.readouterr()
    assert main([*common, "--out", str(tmp_path / "bad"), "--nprobe", "0"]) != 0
    err = capsys.readouterr().err
    assert "--nprobe must be 1 to 65536" in err and "Traceback" not in err
    assert not (tmp_path / "bad" / "manifest.json").exists()

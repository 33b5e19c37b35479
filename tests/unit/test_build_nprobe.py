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


@pytest.mark.slow
def test_compaction_asks_the_index_for_what_the_operator_asked(
    sample: tuple[Path, Path], tmp_path: Path
) -> None:
    """`--nprobe` is recorded as asked (`index.requested`) and compaction asks it again, on the
    new version's index sized afresh; a build that asked nothing keeps each kind's default."""
    from stygig.catalog.changelog import ChangeLog
    from stygig.compaction import compact

    catalog = sample[0] / "catalog.csv"
    common = ["build", "--catalog", str(catalog), "--encoder", "tiny", "--quiet"]
    for name, extra, want in (("asked", ["--nprobe", "3"], 3), ("default", [], None)):
        art = tmp_path / name
        argv = [*common, "--out", str(art), "--index", "ivf", "--no-category-head", *extra]
        assert main(argv) == 0
        built = read_manifest(art)["index"]
        assert built["requested"] == ({"nprobe": 3} if want else {})
        out = tmp_path / f"{name}-compacted"
        compact(art, ChangeLog(tmp_path / f"{name}-log"), out)
        again = read_manifest(out)["index"]
        assert again["kind"] == "ivf" and again["requested"] == built["requested"]
        assert again["params"]["nprobe"] == (want or built["params"]["nprobe"])


@pytest.mark.slow
def test_compaction_chooses_auto_afresh_when_the_catalogue_outgrows_a_flat_index(
    sample: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--index auto` is recorded as asked (`index.requested_kind`): a catalogue built flat
    that has grown past the flat limit is compacted into the split IVF index `auto` gives that
    size, not kept flat; an explicit kind stays that kind."""
    import stygig.index
    from stygig.catalog.changelog import ChangeLog
    from stygig.compaction import compact

    catalog = sample[0] / "catalog.csv"
    common = ["build", "--catalog", str(catalog), "--encoder", "tiny", "--quiet"]
    built = {}
    for kind in ("auto", "flat"):
        art = tmp_path / kind
        assert main([*common, "--out", str(art), "--index", kind, "--no-category-head"]) == 0
        built[kind] = read_manifest(art)["index"]
        assert built[kind]["kind"] == "flat" and built[kind]["requested_kind"] == kind
    n = read_manifest(tmp_path / "auto")["counts"]["items"]
    # The catalogue "outgrows" flat search: the limits scaled down to the sample's size.
    monkeypatch.setattr(stygig.index, "FLAT_MAX_ITEMS", n // 2)
    monkeypatch.setattr(stygig.index, "PART_FLAT_MAX_ITEMS", 2)
    for kind, want, split in (("auto", "ivf", True), ("flat", "flat", False)):
        out = tmp_path / f"{kind}-compacted"
        compact(tmp_path / kind, ChangeLog(tmp_path / f"{kind}-log"), out)
        again = read_manifest(out)["index"]
        assert again["kind"] == want and again["requested_kind"] == kind
        assert ("parts" in again["params"]) is split
        assert Artifact.load(out).index.ntotal == n

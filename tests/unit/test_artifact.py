from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stygig.artifact import FORMAT_VERSION, Artifact, write_artifact
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
    assert m["format_version"] == FORMAT_VERSION == 3
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


def test_overwrite_is_atomic_and_leaves_no_temp_dirs(tmp_path: Path) -> None:
    _write(tmp_path / "art", n=10)
    _write(tmp_path / "art", n=12)
    assert Artifact.load(tmp_path / "art").manifest["counts"]["items"] == 12
    assert [p.name for p in tmp_path.iterdir()] == ["art"]


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

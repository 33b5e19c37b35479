"""``embeddings.npy`` left on disk on load: for ``ivfpq`` artifacts and files past a size
(memory-mapped under an exhaustive index, read row by row under an approximate one).

A mapped artifact must answer exactly as one read whole, still verify its checksums, and a
living catalogue must change on top of it (it builds new arrays, never writing the map).
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stygig import artifact as artifact_module
from stygig.artifact import Artifact, wants_mmap, write_artifact
from stygig.catalog import Item, Taxonomy
from stygig.errors import ArtifactError
from stygig.index import warm_index
from stygig.rowfile import FileRows

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _answer(rec: Any, query: Any, options: Any) -> str:
    got = rec.recommend(query, options).to_dict()
    got.pop("timings_ms", None)
    return json.dumps(got, sort_keys=True)


def _copy(sample: tuple[Path, Path], tmp_path: Path) -> Path:
    art = tmp_path / "artifact"
    shutil.copytree(sample[1], art)
    return art


@pytest.mark.slow
def test_files_past_the_threshold_are_mapped_and_answer_alike(
    sample: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stygig.engine import Options, Query, Recommender

    art = _copy(sample, tmp_path)
    whole = Artifact.load(art)
    assert not isinstance(whole.embeddings, np.memmap)  # small, not ivfpq: read whole
    monkeypatch.setattr(artifact_module, "MMAP_MIN_BYTES", 1)  # forced threshold
    mapped = Artifact.load(art)  # checksums verified, streaming
    assert isinstance(mapped.embeddings, np.memmap) and not mapped.embeddings.flags.writeable
    np.testing.assert_array_equal(mapped.embeddings, whole.embeddings)
    a, b = Recommender(whole), Recommender(mapped)
    photos = sorted((sample[0] / "queries").glob("*.jpg"))
    assert photos
    queries = [Query(images=(p.read_bytes(),)) for p in photos]
    queries.append(Query(item_ids=(whole.items[3].id,)))
    for options in (Options(), Options(mode="similar", k_total=20)):
        for query in queries:
            assert _answer(b, query, options) == _answer(a, query, options)


def test_a_mapped_artifact_still_refuses_an_edited_file(
    sample: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    art = _copy(sample, tmp_path)
    monkeypatch.setattr(artifact_module, "MMAP_MIN_BYTES", 1)
    data = bytearray((art / "embeddings.npy").read_bytes())
    data[-1] ^= 0x01
    (art / "embeddings.npy").write_bytes(bytes(data))
    with pytest.raises(ArtifactError) as e:
        Artifact.load(art)
    assert e.value.code == "artifact_checksum_mismatch"


def test_a_living_catalogue_changes_on_a_mapped_artifact(
    sample: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Adds, updates and removals on a read-only map: new arrays, the same answers as on an
    artifact read whole, and the artifact's file untouched."""
    from stygig.catalog.changelog import ChangeLog
    from stygig.catalog.changes import parse_change
    from stygig.engine import Options, Query, Recommender
    from stygig.living import LiveCatalog

    art = _copy(sample, tmp_path)
    before = (art / "embeddings.npy").read_bytes()
    photo = (sample[0] / "queries" / "blue-jeans.jpg").read_bytes()
    whole = Recommender(Artifact.load(art))
    monkeypatch.setattr(artifact_module, "MMAP_MIN_BYTES", 1)
    mapped = Recommender(Artifact.load(art))
    assert isinstance(mapped.embeddings, np.memmap)
    first = whole.artifact.items[0].id
    changes = [
        {
            "op": "add",
            "item": {"id": "new-jeans", "category": "jeans", "gender": "men"},
            "image_b64": base64.b64encode(photo).decode(),
        },
        {"op": "update", "id": first, "set": {"stock": 0}},
        {"op": "remove", "id": whole.artifact.items[1].id},
    ]
    answers = []
    for i, rec in enumerate((whole, mapped)):
        live = LiveCatalog(rec, ChangeLog(tmp_path / f"log{i}"))
        live.submit([parse_change(c) for c in changes])
        assert rec.artifact.positions["new-jeans"] == len(rec.embeddings) - 1
        answers.append(_answer(rec, Query(images=(photo,)), Options(mode="similar", k_total=50)))
    assert answers[0] == answers[1]
    assert (art / "embeddings.npy").read_bytes() == before


def _items(n: int, dim: int = 16) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return {
        "items": [Item(id=f"i{k}", image=f"/img/{k}.jpg", category="shirt") for k in range(n)],
        "colors": [{"rgb": [k % 255, 0, 0]} for k in range(n)],
        "embeddings": x,
        "taxonomy": Taxonomy.load(),
        "encoder_info": {"name": "test", "dim": dim, "runtime": "numpy"},
        "rejects": [],
    }


@pytest.mark.parametrize("split", [False, True], ids=["one-index", "per-slot"])
def test_ivfpq_artifacts_always_leave_their_embeddings_on_disk(tmp_path: Path, split: bool) -> None:
    import faiss

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        params = {"nlist": 2, "m": 8, "partition_by": "slot" if split else "none"}
        path = write_artifact(
            tmp_path / "pq", index_kind="ivfpq", index_params=params, **_items(64)
        )
    finally:
        faiss.omp_set_num_threads(threads)
    art = Artifact.load(path)
    assert wants_mmap(path, art.manifest)
    # Not exhaustive: rows are read as asked, never through a map (stygig.rowfile).
    assert isinstance(art.embeddings, FileRows)
    whole = Artifact.load(path, mmap=False)
    assert isinstance(whole.embeddings, np.ndarray) and not isinstance(whole.embeddings, np.memmap)
    np.testing.assert_array_equal(np.asarray(art.embeddings), whole.embeddings)
    q = whole.embeddings[:5]
    np.testing.assert_array_equal(art.index.search(q, 5)[1], whole.index.search(q, 5)[1])
    # A server warms the index before it reports ready: every part's rows file is read.
    rows_files = sorted(path.glob("index*-vectors.faiss"))
    assert len(rows_files) == (len(art.index.parts) if split else 1)
    assert warm_index(art.index) == sum(f.stat().st_size for f in rows_files)
    flat = write_artifact(tmp_path / "flat", index_kind="flat", **_items(64))
    assert not wants_mmap(flat, Artifact.load(flat).manifest)
    assert warm_index(Artifact.load(flat).index) == 0  # held in memory: nothing to warm

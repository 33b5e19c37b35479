"""Rows of a ``.npy`` matrix read with ``pread`` (stygig.rowfile), never through a map."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import stygig.index as index_module
from stygig.artifact import Artifact
from stygig.errors import ArtifactError
from stygig.index import IndexRows
from stygig.rowfile import FileRows, pread_rows
from stygig.rows import StackedRows


@pytest.fixture()
def matrix(tmp_path: Path) -> tuple[Path, np.ndarray]:
    whole = np.random.default_rng(0).standard_normal((40, 6)).astype(np.float32)
    np.save(tmp_path / "x.npy", whole)
    return tmp_path / "x.npy", whole


def test_file_rows_read_like_the_array(matrix: tuple[Path, np.ndarray]) -> None:
    file, whole = matrix
    rows = FileRows(file)
    assert len(rows) == 40 and rows.shape == (40, 6) and rows.dtype == np.float32
    assert rows.ndim == 2
    for key in (0, 39, -1, -40, np.int64(7)):
        np.testing.assert_array_equal(rows[key], whole[key])
    for key in (slice(0, 5), slice(None), slice(3, 37, 4), slice(30, 10, -3), slice(5, 5)):
        np.testing.assert_array_equal(rows[key], whole[key])
    picks = np.array([39, 0, 20, 20, 5, -1, 6])  # unsorted, repeated, negative
    np.testing.assert_array_equal(rows[picks], whole[picks])
    grid = np.array([[3, 2, 1], [1, 1, 39]])  # the MMR gather: (groups, depth) -> 3-d
    np.testing.assert_array_equal(rows[grid], whole[grid])
    np.testing.assert_array_equal(rows[whole[:, 0] > 0], whole[whole[:, 0] > 0])
    np.testing.assert_array_equal(np.asarray(rows), whole)
    np.testing.assert_array_equal(np.asarray(rows, np.float64), whole.astype(np.float64))
    assert rows[[]].shape == (0, 6)
    got = rows[np.arange(10)]
    got[0] = 0.0  # a read is the caller's own array
    np.testing.assert_array_equal(rows[0], whole[0])
    for bad in (40, -41, np.array([0, 40]), np.ones(39, bool)):
        with pytest.raises(IndexError):
            rows[bad]
    for wrong in (True, (0, 1), np.array([0.5])):
        with pytest.raises(TypeError):
            rows[wrong]


def test_reads_map_nothing(matrix: tuple[Path, np.ndarray]) -> None:
    """The point of it: after reads the file is in no mapping of this process."""
    file, whole = matrix
    rows = FileRows(file)
    for start in range(0, 40, 7):
        np.testing.assert_array_equal(rows[np.arange(start, 40, 3)], whole[start::3])
    assert str(file.resolve()) not in Path("/proc/self/maps").read_text()


def test_pread_rows_reads_runs_and_refuses_a_short_file(tmp_path: Path) -> None:
    data = bytes(range(100))
    (tmp_path / "r").write_bytes(data)
    import os

    fd = os.open(tmp_path / "r", os.O_RDONLY)
    try:
        got = pread_rows(fd, 4, 8, np.array([0, 1, 2, 5, 9], np.int64))
        want = b"".join(data[4 + 8 * r : 12 + 8 * r] for r in (0, 1, 2, 5, 9))
        assert got == want and pread_rows(fd, 4, 8, np.array([], np.int64)) == b""
        with pytest.raises(ArtifactError):
            pread_rows(fd, 4, 8, np.array([11, 12], np.int64))  # past the end
    finally:
        os.close(fd)


def test_long_runs_are_read_in_bounded_calls(
    matrix: tuple[Path, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run longer than one read may return (Linux: ~2 GiB) is read in several calls
    straight into the result: here with the bounds shrunk to a few rows."""
    from stygig import rowfile

    file, whole = matrix
    monkeypatch.setattr(rowfile, "_SMALL_RUN", 2 * 24)  # two 24-byte rows
    monkeypatch.setattr(rowfile, "_MAX_READ", 5 * 24 + 8)  # not a whole number of rows
    rows = FileRows(file)
    np.testing.assert_array_equal(rows[:], whole)
    np.testing.assert_array_equal(np.asarray(rows), whole)
    picks = np.array([0, 1, 5, 6, 7, 8, 9, 10, 11, 12, 13, 30, 39])
    np.testing.assert_array_equal(rows[picks], whole[picks])


def test_a_bad_file_is_an_artifact_error(tmp_path: Path) -> None:
    np.save(tmp_path / "one.npy", np.zeros(5, np.float32))
    np.save(tmp_path / "objects.npy", np.array([[{}]], object), allow_pickle=True)
    (tmp_path / "text.npy").write_text("not a matrix")
    np.save(tmp_path / "cut.npy", np.zeros((10, 4), np.float32))
    with open(tmp_path / "cut.npy", "r+b") as f:
        f.truncate(f.seek(0, 2) - 16)
    for name in ("one.npy", "objects.npy", "text.npy", "cut.npy"):
        with pytest.raises(ArtifactError) as e:
            FileRows(tmp_path / name)
        assert str(tmp_path) not in str(e.value)  # names the file, not the server's path


@pytest.mark.slow
def test_an_approximate_artifact_answers_and_changes_alike_from_disk(
    sample: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sample catalogue built with an ``ivfpq`` index, its embeddings left on disk: answers
    read the index's own float16 rows, never ``embeddings.npy`` (at 10M items that file cannot
    share the page cache with the rows), and agree with the artifact read whole (float32) on
    every item and order, numbers within float16 precision, before and after items are added
    (the added rows then stack on the file's); the file is never mapped."""
    import faiss

    from stygig.build import build_artifact
    from stygig.catalog.changelog import ChangeLog
    from stygig.catalog.changes import parse_change
    from stygig.encoders import load_encoder
    from stygig.engine import Options, Query, Recommender
    from stygig.living import LiveCatalog

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        path = build_artifact(
            sample[0] / "catalog.csv",
            tmp_path / "pq",
            load_encoder("tiny"),
            progress=False,
            index_kind="ivfpq",
            index_params={"nlist": 2, "m": 16},
        ).path
        recs = {
            name: Recommender(Artifact.load(path, mmap=mmap))
            for name, mmap in (("disk", True), ("whole", False))
        }
        assert isinstance(recs["disk"].embeddings, FileRows)
        photos = sorted((sample[0] / "queries").glob("*.jpg"))

        def answers(rec: Recommender) -> list[Any]:
            out = []
            queries = [Query(images=(p.read_bytes(),)) for p in photos]
            queries.append(Query(item_ids=(rec.artifact.items[3].id, rec.artifact.items[9].id)))
            for query in queries:
                for options in (Options(k_total=12, diversity=0.4), Options(mode="similar")):
                    got = rec.recommend(query, options).to_dict()
                    got.pop("timings_ms")
                    out.append(got)
            return out

        def alike(disk: list[Any], whole: list[Any]) -> None:
            same_text, numbers = _split(disk), _split(whole)
            assert same_text[0] == numbers[0]  # ids, order, names, reasons, categories
            np.testing.assert_allclose(same_text[1], numbers[1], atol=1e-3)

        reads = []
        take = FileRows.take
        monkeypatch.setattr(
            FileRows, "take", lambda self, rows: reads.append(rows) or take(self, rows)
        )
        alike(answers(recs["disk"]), answers(recs["whole"]))
        assert sum(r.size for r in reads) == 0  # no row of embeddings.npy read to answer
        # Past MERGE_ROWS appended rows go into the base index (its in-memory segment); later
        # ones stay appended; a removed row is read too.
        monkeypatch.setattr(index_module, "MERGE_ROWS", 2)
        for name, rec in recs.items():
            live = LiveCatalog(rec, ChangeLog(tmp_path / f"log-{name}"))
            for n, photo in enumerate(photos[:4]):
                change = {
                    "op": "add",
                    "item": {
                        "id": f"new-{n}",
                        "category": ("jeans", "hat")[n % 2],
                        "gender": "men",
                    },
                    "image_b64": base64.b64encode(photo.read_bytes()).decode(),
                }
                live.submit([parse_change(change)])
            live.submit([parse_change({"op": "remove", "id": rec.artifact.items[5].id})])
        snap = recs["disk"].snapshot
        assert isinstance(snap.rows, IndexRows) and len(snap.rows) == len(snap.artifact.embeddings)
        exact = np.asarray(recs["whole"].embeddings)
        np.testing.assert_allclose(snap.rows[np.arange(len(exact))], exact, atol=5e-4)
        emb = recs["disk"].artifact.embeddings
        assert isinstance(emb, StackedRows) and isinstance(emb.base, FileRows)
        reads.clear()
        np.testing.assert_array_equal(np.asarray(emb), np.asarray(recs["whole"].embeddings))
        reads.clear()
        alike(answers(recs["disk"]), answers(recs["whole"]))
        assert sum(r.size for r in reads) == 0
        assert str((path / "embeddings.npy").resolve()) not in Path("/proc/self/maps").read_text()
    finally:
        faiss.omp_set_num_threads(threads)


def _split(answers: list[Any]) -> tuple[str, list[float]]:
    """An answer list as its JSON with every float blanked, and the floats in order."""
    floats: list[float] = []

    def walk(value: Any) -> Any:
        if isinstance(value, float):
            floats.append(value)
            return "<float>"
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return json.dumps(walk(answers), sort_keys=True), floats

"""The int8 scan of exact catalogues (stygig.scan): its bound holds, and what it finds and ranks
is what the float32 scan finds and ranks, bit for bit, with the catalogue changing too."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from stygig.artifact import Artifact
from stygig.catalog.changes import CatalogChange
from stygig.encoders import load_encoder
from stygig.engine import Recommender
from stygig.errors import ConfigError
from stygig.index import similarities, top_k
from stygig.recommendation import Options
from stygig.scan import (
    CHECK_SIGMAS,
    SCAN_MIN_BYTES,
    Int8Scan,
    Scores,
    _model,
    _rows_products,
    full_range_codes,
    make_scan,
)
from stygig.scoring import ScoringConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from synthetic import synthetic_artifact


def clustered(n: int, dim: int, seed: int, *, spread: float = 0.35) -> np.ndarray:
    """Unit vectors around a few centres, a tenth of them exact copies of others (ties)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(12, dim))
    x = centres[rng.integers(0, 12, n)] + spread * rng.normal(size=(n, dim))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    copies = rng.choice(n, n // 10, replace=False)
    x[copies] = x[rng.integers(0, n, len(copies))]
    return x


#: What this CPU's kernel adds without saturating: full-range codes need VNNI (the scan never
#: makes them elsewhere, and they saturate there: errors of 0.06 against a bound of 0.012).
VNNI = full_range_codes()
LEVELS = 127 if VNNI else 63
needs_vnni = pytest.mark.skipif(not VNNI, reason="full-range int8 codes need x86 VNNI")


@pytest.mark.parametrize("levels", [pytest.param(127, marks=needs_vnni), 63])
@pytest.mark.parametrize("dim", [64, 512])
def test_the_approximate_products_stay_within_their_bound(dim: int, levels: int) -> None:
    rows = clustered(3000, dim, seed=dim)
    scan = Int8Scan(rows, levels=levels)
    rng = np.random.default_rng(1)
    for m in (1, 3):
        for _ in range(10):
            q = rows[rng.integers(0, len(rows), m)] + 0.1 * rng.normal(size=(m, dim))
            q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
            approx, slack = scan.products(q)
            error = np.abs(approx - rows @ q.T)
            assert error.max() <= slack
            # a bound that lets everything through would refine every row: it is a few
            # thousandths, a few times the largest error seen
            assert slack < 0.03 and error.max() > slack / 8


def test_the_scan_gives_the_same_products_on_any_number_of_threads() -> None:
    # the rows are split between threads: each product is still one int32 sum, scaled once
    rows = clustered(5000, 512, seed=7)
    q = rows[[3, 1234, 4999]] + 0.01
    one = Int8Scan(rows, threads=1).products(q)
    two = Int8Scan(rows, threads=2).products(q)
    assert np.array_equal(one[0], two[0]) and one[1] == two[1]


def test_the_nearest_rows_are_the_float32_scans_bit_for_bit() -> None:
    rows = clustered(4000, 64, seed=3)
    scan = Int8Scan(rows[:3500])  # the last 500 rows: added after the scan was made
    removed = np.zeros(len(rows), bool)
    removed[np.random.default_rng(4).choice(len(rows), 300, replace=False)] = True
    rng = np.random.default_rng(5)
    for trial in range(40):
        m = 1 + trial % 3
        q = rows[rng.integers(0, len(rows), m)] + 0.05 * rng.normal(size=(m, 64))
        q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
        drop = removed if trial % 2 else None
        found = Scores(rows, q, scan)
        assert found.approximate
        scores, ids = found.nearest(25, drop)
        want = np.concatenate([similarities(rows, q[j : j + 1]) for j in range(m)], axis=1)
        want_scores, want_ids = top_k(want.T, 25, drop)
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_array_equal(scores, want_scores)
        # the rows it made exact are the float32 scan's sums, and so are the appended ones
        done = found._exact
        # (7-bit codes: twice the rounding error, so more rows near the answer)
        assert done is not None and done[3500:].all()
        assert done.sum() < len(rows) / (4 if VNNI else 2)
        np.testing.assert_array_equal(found.values[done], want[done])


@pytest.mark.parametrize("dim", [16, 17, 100, 512, 1280])
def test_rows_rescored_in_place_are_the_float32_scans_sums(dim: int) -> None:
    rows = np.random.default_rng(dim).normal(size=(2000, dim)).astype(np.float32)
    ids = np.sort(np.random.default_rng(1).choice(2000, 300, replace=False))
    for m in (1, 3):
        q = np.random.default_rng(m).normal(size=(m, dim)).astype(np.float32)
        full = np.concatenate([similarities(rows, q[j : j + 1]) for j in range(m)], axis=1)
        np.testing.assert_array_equal(_rows_products(rows, ids, q), full[ids])
        # rows FAISS cannot read in place (not contiguous) are gathered first: the same sums
        wide = np.concatenate([rows, rows], axis=1)[:, :dim]
        np.testing.assert_array_equal(_rows_products(wide, ids, q), full[ids])


def test_fewer_live_rows_than_asked_never_bring_back_a_removed_one() -> None:
    rows = clustered(200, 32, seed=9)
    removed = np.ones(len(rows), bool)
    removed[[3, 50, 120]] = False
    q = rows[50:51]
    scores, ids = Scores(rows, q, Int8Scan(rows)).nearest(10, removed)
    want_scores, want_ids = top_k(similarities(rows, q).T, 10, removed)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(scores, want_scores)
    assert sorted(ids[0][:3]) == [3, 50, 120] and (ids[0][3:] == -1).all()


def test_codes_use_the_full_range_only_where_the_kernel_sums_in_32_bits(tmp_path: Path) -> None:
    """Without VNNI, ONNX Runtime's AVX2 kernel adds pairs of products into saturating 16-bit
    lanes: codes must stay within +-63 there (2 x 255 x 63 < 32767)."""
    cpus = {
        "vnni": "flags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n",
        "avx-vnni": "flags\t\t: fpu sse2 avx2 avx_vnni\n",
        "avx2": "flags\t\t: fpu sse2 avx2 avx512f\n",
        "arm": "Features\t: fp asimd asimddp\n",
    }
    for name, text in cpus.items():
        (tmp_path / name).write_text(text)
    assert full_range_codes(str(tmp_path / "vnni")) and full_range_codes(str(tmp_path / "avx-vnni"))
    assert not full_range_codes(str(tmp_path / "avx2"))
    assert not full_range_codes(str(tmp_path / "arm"))
    assert not full_range_codes(str(tmp_path / "missing"))
    assert Int8Scan(clustered(50, 32, seed=1)).levels == (127 if full_range_codes() else 63)


def test_rows_whose_rounding_errors_line_up_are_scanned_in_float32(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The error bound models rounding errors as independent: rows with a flat tail just under
    half a step (every tail code rounds to 0, every error of one sign) break it, and the
    scan's check at load sends such a catalogue to the float32 scan."""
    dim, rng = 256, np.random.default_rng(10)
    odd = np.zeros((40, dim), np.float32)
    odd[:, 0], odd[:, 1:] = 100.0, 0.39  # tail 0.39 < half of a step of 100 / 127 (or 63)
    rows = np.concatenate([odd, rng.normal(size=(400, dim)).astype(np.float32)])
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    with caplog.at_level("WARNING", logger="stygig.scan"):
        assert make_scan(rows, "int8", levels=LEVELS) is None
    assert "scanned in float32" in caplog.text
    assert Int8Scan(rows, levels=LEVELS).check(rows) > CHECK_SIGMAS
    plain = clustered(440, dim, seed=11)
    assert Int8Scan(plain, levels=LEVELS).check(plain) < 5.5
    assert isinstance(make_scan(plain, "int8"), Int8Scan)


def test_the_scan_is_made_where_it_pays() -> None:
    rows = clustered(SCAN_MIN_BYTES // (4 * 1024), 1024, seed=6)  # 16 MiB of float32 rows
    assert isinstance(make_scan(rows, "auto"), Int8Scan)
    assert make_scan(rows[:-1], "auto") is None  # smaller: the float32 rows stay in cache
    assert make_scan(np.ascontiguousarray(rows[:, :64]), "auto") is None  # as many, narrow
    assert isinstance(make_scan(rows[:10], "int8"), Int8Scan)
    assert make_scan(rows, "float32") is None
    assert make_scan(rows[:, :8], "int8") is None  # FAISS sums narrow rows by their place
    with pytest.raises(ConfigError, match="exact_scan"):
        ScoringConfig.from_dict({"exact_scan": "int4"})


def test_the_graph_is_valid_onnx() -> None:
    onnx = pytest.importorskip("onnx")
    model = onnx.load_from_string(_model(np.zeros((16, 5), np.int8), np.ones(5, np.float32)))
    onnx.checker.check_model(model)
    (node,) = model.graph.node
    assert (node.op_type, node.domain) == ("DynamicQuantizeMatMul", "com.microsoft")
    assert sorted(tuple(t.dims) for t in model.graph.initializer) == [(5,), (16, 5)]


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3,000 items of the tiny encoder's width, clustered, with exact duplicates."""
    encoder = load_encoder("tiny")
    return synthetic_artifact(
        tmp_path_factory.mktemp("scan") / "art",
        3000,
        encoder_info=encoder.describe(),
        vectors=clustered(3000, encoder.dim, seed=7, spread=0.5),
        index_kind="flat",
        seed=7,
    )


def _answer(rec: Recommender, vectors: np.ndarray, colors: list, ids: list, opts: Options) -> str:
    prepared = rec.prepare_embedded(vectors, colors, opts, ids)
    out = rec.answer(prepared, vectors if len(vectors) else None).to_dict()
    out.pop("timings_ms")
    return json.dumps(out, sort_keys=True)


@pytest.mark.parametrize("vnni", [pytest.param(True, marks=needs_vnni), False])
def test_answers_are_the_float32_scans_while_the_catalogue_changes(
    catalogue: Path, vnni: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("stygig.scan.full_range_codes", lambda: vnni)
    config = ScoringConfig.load()
    art = Artifact.load(catalogue)
    fp32 = Recommender(art, config=dataclasses.replace(config, exact_scan="float32"))
    int8 = Recommender(art, config=dataclasses.replace(config, exact_scan="int8"))
    assert fp32.snapshot.scan is None and int8.snapshot.scan is not None
    assert int8.snapshot.scan.levels == (127 if vnni else 63)
    rows, colors = np.asarray(art.embeddings), art.colors
    ids = [i.id for i in art.items]
    rng = np.random.default_rng(8)

    def compare(rounds: int) -> int:
        same = 0
        for r in range(rounds):
            j = int(rng.integers(0, len(rows)))
            opts = Options(k=1 + r % 4, diversity=(0.0, 0.3)[r % 2], seed=r)
            if r % 5 == 4:
                opts = Options(mode="similar", k=3)
            if r % 3 == 2:  # catalogue items as the query: several query vectors
                pair = [ids[j % len(ids)], ids[(j * 7 + 1) % len(ids)]]
                vec, cols, items = np.zeros((0, rows.shape[1]), np.float32), [], pair
            else:
                v = rows[j] + (0.02, 0.3)[r % 2] * rng.normal(size=rows.shape[1])
                vec = (v / np.linalg.norm(v)).astype(np.float32)[None, :]
                cols, items = [colors[j]], []
            assert _answer(int8, vec, cols, items, opts) == _answer(fp32, vec, cols, items, opts)
            same += 1
        return same

    assert compare(40) == 40
    # Items added (rows after the scan's, scanned in float32), removed and replaced.
    changes = [
        CatalogChange(
            "add",
            f"new-{n}",
            item=dataclasses.replace(art.items[n], id=f"new-{n}"),
            vector=rows[n],  # an exact copy of a scanned row: a tie across the two parts
            color=colors[n],
        )
        for n in range(0, 300, 3)
    ]
    changes += [CatalogChange("remove", ids[n]) for n in range(1, 300, 3)]
    for rec in (fp32, int8):
        rec.apply(changes, 1)
    assert int8.snapshot.scan is not None and int8.snapshot.scan.rows == len(rows)
    ids = [i for i in ids if i in int8.snapshot.artifact.positions]
    assert len(ids) == len(rows) - 100
    assert compare(40) == 40

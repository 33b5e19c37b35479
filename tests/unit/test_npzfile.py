"""Every ``.npz`` StyGig reads (compatibility model, category heads, whitening, a Ray build's
parts) is checked before NumPy reads it, so reading costs at most the file's size; a tampered
``compat.npz`` is refused at load instead of giving NaN scores or failing every request
(review, session 51: a 5 MB file claiming 300M co-occurrence rows took 3.9 GB; an infinite
outfit absence weight gave ``outfit score nan`` and an AUC of 0 %)."""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stygig.compat.model import CompatModel
from stygig.npzfile import load_npz
from tests.unit.test_compat import small_model


def _npz(**arrays: Any) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _rewrite(data: bytes, name: str, member: bytes, compress: int = zipfile.ZIP_STORED) -> bytes:
    """``data`` with member ``name`` replaced by ``member`` bytes."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            body = member if info.filename == name else src.read(info)
            dst.writestr(info.filename, body, compress_type=compress)
    return out.getvalue()


def _refused(source: bytes, said: str) -> None:
    with pytest.raises(ValueError, match=re.escape(said)), load_npz(source):
        pass


def test_a_plain_npz_loads_from_a_path_or_bytes(tmp_path: Path) -> None:
    data = _npz(a=np.arange(6, dtype=np.float32).reshape(2, 3), s=np.array(["x", "yz"]))
    (tmp_path / "f.npz").write_bytes(data)
    for source in (tmp_path / "f.npz", data):
        with load_npz(source) as got:
            assert got["a"].tolist() == [[0, 1, 2], [3, 4, 5]] and got["s"].tolist() == ["x", "yz"]


def test_a_compressed_member_is_refused_before_it_is_unpacked() -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, big=np.zeros(10_000_000, np.float32))  # 40 MB in ~40 KB
    assert len(buf.getvalue()) < 100_000
    _refused(buf.getvalue(), "'big.npy' is compressed")


def test_a_header_claiming_more_than_its_member_holds_is_refused() -> None:
    data = _npz(keys=np.arange(4, dtype=np.int64))
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<i8", "fortran_order": False, "shape": (300_000_000,)}
    )
    forged = _rewrite(data, "keys.npy", header.getvalue() + np.arange(4, dtype=np.int64).tobytes())
    _refused(forged, "'keys.npy' holds 32 bytes of data but its header says")


def test_objects_and_non_archives_are_refused() -> None:
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    _refused(_rewrite(_npz(x=np.zeros(1)), "x.npy", buf.getvalue()), "holds Python objects")
    for junk in (b"", b"PK\x03\x04 cut", b"not a zip at all"):
        _refused(junk, "not an .npz archive")
    _refused(_rewrite(_npz(x=np.zeros(1)), "x.npy", b"garbage, not npy"), "is not a .npy array")


def _model() -> CompatModel:
    outfits = [["x", "y"], ["x", "z"], ["y", "z"]]
    vectors = {"id_ids": np.array(["x", "y"]), "id_vectors": np.zeros((2, 3), np.float32)}
    return small_model(np.random.default_rng(1), outfits, **vectors)


_TAMPERED: dict[str, Callable[[CompatModel], CompatModel]] = {
    "outfit_absent_weight inf": lambda m: replace(m, outfit_absent_weight=float("inf")),
    "whitening NaN": lambda m: replace(
        m,
        white_mean=np.full(4, np.nan, np.float32),
        white_projection=np.zeros((4, 5), np.float32),
        white_scale=np.ones(5, np.float32),
    ),
    "attention shape": lambda m: replace(m, attention=np.zeros((2, 2), np.float32)),
    "attention NaN": lambda m: replace(m, attention=np.full((3, 3), np.nan, np.float32)),
    "item vectors width": lambda m: replace(m, id_vectors=np.zeros((2, 7), np.float32)),
    "item vectors NaN": lambda m: replace(m, id_vectors=np.full((2, 3), np.nan, np.float32)),
    "co-occurrence unsorted": lambda m: replace(
        m, cooccurrence=replace(m.cooccurrence, keys=m.cooccurrence.keys[::-1].copy())
    ),
    "co-occurrence key out of range": lambda m: replace(
        m, cooccurrence=replace(m.cooccurrence, keys=m.cooccurrence.keys + 100)
    ),
    "co-occurrence negative count": lambda m: replace(
        m, cooccurrence=replace(m.cooccurrence, counts=-m.cooccurrence.counts)
    ),
    "style rows NaN": lambda m: replace(
        m,
        style_ids=np.array(["x"]),
        style_rows=np.full((1, 2), np.nan, np.float16),
        style_checks=np.zeros(1, np.uint32),
    ),
}


def test_an_untampered_model_round_trips(tmp_path: Path) -> None:
    model = _model()
    loaded = CompatModel.load(model.save(tmp_path / "compat.npz"))
    assert loaded.cooccurrence.keys.tolist() == model.cooccurrence.keys.tolist()
    assert loaded.id_vectors.shape == (2, 3)


@pytest.mark.parametrize("case", sorted(_TAMPERED))
def test_a_tampered_model_is_refused_at_load(case: str, tmp_path: Path) -> None:
    path = tmp_path / "compat.npz"
    _TAMPERED[case](_model()).save(path)
    with pytest.raises(ValueError, match="compatibility model"):
        CompatModel.load(path)


@pytest.mark.parametrize(
    ("member", "value", "said"),
    [
        ("info.npy", np.array(json.dumps([1, 2])), "info is not a JSON object"),
        ("categories.npy", np.array([1.0, 2.0]), "categories is not text"),
        ("w1.npy", np.full((14, 6), "x"), "not of numbers"),
    ],
)
def test_a_model_member_of_another_kind_is_refused_at_load(
    member: str, value: np.ndarray, said: str, tmp_path: Path
) -> None:
    path = _model().save(tmp_path / "compat.npz")
    buf = io.BytesIO()
    np.save(buf, value)
    path.write_bytes(_rewrite(path.read_bytes(), member, buf.getvalue()))
    with pytest.raises(ValueError, match=said):
        CompatModel.load(path)


def test_a_member_header_that_is_no_literal_is_refused() -> None:
    # Review (s51): an unclosed bracket in a .npy header was a tokenize.TokenError traceback.
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "<f4", "fortran_order": False, "shape": (1,)}
    )
    header = buf.getvalue().replace(b"(1,)", b"(1, ")
    _refused(_rewrite(_npz(x=np.zeros(1, np.float32)), "x.npy", header + bytes(4)), "x.npy")


@pytest.mark.parametrize(
    "error",
    [
        OverflowError("int too large"),
        SyntaxError("not a literal"),
        __import__("tokenize").TokenError("EOF in multi-line statement"),
    ],
)
def test_an_artifact_file_whose_reader_overflows_or_cannot_tokenize_is_one_error(
    error: Exception,
) -> None:
    # Review (s51): "stock": 1e400 in items.jsonl, inf in whitening settings and an unclosed
    # bracket in a .npy header were tracebacks at load.
    from stygig.artifact import _reading
    from stygig.errors import ArtifactError

    with pytest.raises(ArtifactError, match="artifact cannot be read: 'f'"), _reading("f"):
        raise error


def test_whitening_arrays_that_make_no_whitening_are_refused(tmp_path: Path) -> None:
    # Review (s51): NaN scales, a narrow projection or a short scale loaded, then every
    # photo query failed.
    from stygig.errors import ArtifactError
    from stygig.whitening import Whitening

    good = Whitening.fit(np.random.default_rng(0).normal(size=(40, 6)), dim=4)
    assert Whitening.load(good.save(tmp_path / "w.npz")).projection.shape == (6, 4)
    for bad in (
        replace(good, scale=np.full(4, np.nan, np.float32)),
        replace(good, mean=np.full(6, np.inf, np.float32)),
        replace(good, projection=good.projection[:, :3]),
        replace(good, scale=good.scale[:2]),
    ):
        with pytest.raises(ArtifactError, match="cannot read whitening file"):
            Whitening.load(bad.save(tmp_path / "w.npz"))


def test_yaml_aliases_of_lists_or_mappings_are_refused() -> None:
    # Review (s51): nested aliases in a 6.8 KB taxonomy.yaml stood for billions of entries
    # (5.5 GB, 40 s, then MemoryError). An alias of a scalar stays allowed.
    import yaml

    from stygig.unique_keys import load_yaml

    assert load_yaml("a: &x one\nb: *x\n") == {"a": "one", "b": "one"}
    bomb = "a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n"
    with pytest.raises(yaml.YAMLError, match=r"alias \(\*a\) of a list or mapping"):
        load_yaml(bomb)
    with pytest.raises(yaml.YAMLError, match="alias"):
        load_yaml("m: &m {k: v}\nn: *m\n")

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import stygig
from stygig.errors import InvalidOptionsError


def test_every_export_resolves_and_is_listed() -> None:
    for name in stygig.__all__:
        assert getattr(stygig, name) is not None, name
    assert sorted(stygig._EXPORTS) == sorted(n for n in stygig.__all__ if n != "__version__")


def test_unknown_attribute() -> None:
    with pytest.raises(AttributeError):
        _ = stygig.NotAThing  # type: ignore[attr-defined]


def test_import_is_light_and_core_never_imports_the_shell() -> None:
    code = (
        "import sys, stygig.engine, stygig.build, stygig.artifact;"
        "bad = [m for m in sys.modules if m.startswith(('stygig.serving', 'stygig.cli',"
        " 'stygig.jobs', 'stygig.deploy', 'torch', 'fastapi'))];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize(
    ("make", "said"),
    [
        (lambda: stygig.Query(images="shirt.jpg"), "not one photo"),  # type: ignore[arg-type]
        (lambda: stygig.Query(images=b"\xff\xd8"), "not one photo"),  # type: ignore[arg-type]
        (lambda: stygig.Query(item_ids="sku-0014"), "not one id"),  # type: ignore[arg-type]
        (lambda: stygig.Query(images=(123,)), "images[0] must be a photo's bytes or path"),  # type: ignore[arg-type]
        (lambda: stygig.Query(images=(None,)), "not NoneType"),  # type: ignore[arg-type]
        (lambda: stygig.Query(item_ids=("a", 1)), "item_ids[1] must be a string"),  # type: ignore[arg-type]
    ],
)
def test_a_query_of_the_wrong_shape_is_a_typed_error_naming_the_field(
    make: object, said: str
) -> None:
    """A bare path was iterated a character at a time ("at most 8 photos"), a bare id read as
    repeated letters, and a photo of another type was a raw TypeError (review, session 50)."""
    with pytest.raises(InvalidOptionsError) as caught:
        make()  # type: ignore[operator]
    assert said in str(caught.value)


def test_options_may_be_a_mapping_and_embeddings_are_checked(sample: tuple[Path, Path]) -> None:
    """recommend(q, {"k": 3}) was an AttributeError; answer() with vectors of the wrong width or
    holding NaN failed deep in scoring (an IndexError): typed errors now (review, session 50)."""
    rec = stygig.Recommender.from_path(sample[1])
    item = rec.artifact.items[0].id
    query = stygig.Query(item_ids=(item,))
    by_mapping = rec.recommend(query, {"k": 2}).to_dict()
    by_options = rec.recommend(query, stygig.Options(k=2)).to_dict()
    del by_mapping["timings_ms"], by_options["timings_ms"]
    assert by_mapping == by_options
    with pytest.raises(InvalidOptionsError):
        rec.recommend(query, {"kk": 2})
    with pytest.raises(InvalidOptionsError):
        rec.recommend(query, 3)  # type: ignore[arg-type]
    photo = next((sample[0] / "queries").glob("*.jpg"))
    prepared = rec.prepare(stygig.Query(images=(photo,)))
    width = rec.embeddings.shape[1]
    for bad, said in (
        (np.zeros((1, 10), np.float32), f"shape (photos, {width})"),
        (np.full((1, width), np.nan, np.float32), "finite"),
        (np.full((1, width), np.inf, np.float32), "finite"),
    ):
        with pytest.raises(ValueError, match=said.replace("(", r"\(").replace(")", r"\)")):
            rec.answer(prepared, bad)
    good = rec.embed(prepared.tensors)
    assert rec.answer(prepared, good).items


def test_the_readmes_python_example_runs_as_written(
    sample: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's library example, run in a folder laid out as `make demo` leaves it."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", readme, re.S)
    demo = tmp_path / "build" / "demo"
    demo.mkdir(parents=True)
    (demo / "artifact").symlink_to(sample[1])
    (demo / "catalog").symlink_to(sample[0])
    monkeypatch.chdir(tmp_path)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md", "exec"), {})
    lines = printed.getvalue().splitlines()
    # The vote (the tests' artifact is the tiny encoder's: whatever it votes), RGB and votes;
    # then one line per outfit slot.
    assert re.fullmatch(r"[a-z-]+ \[\d+, \d+, \d+\] \{.+\}", lines[0]), lines[0]
    assert len(lines) >= 3 and all(" sku-" in line for line in lines[1:-1])
    assert "'embed'" in lines[-1]

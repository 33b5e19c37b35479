"""The Kaggle demo's one-click examples are checked against the catalogue they are shown
with: each category offers the first held-out photo the built artifact votes right
(`stygig pick-examples`), never one it votes another category, and never one the server would
not serve. Real photos (../shared/datasets/fashion-products) and the real EfficientNet-Lite0
weights."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from stygig.build import build_artifact, make_build_encoder
from stygig.cli import main
from stygig.demo_examples import pick_examples
from stygig.engine import Options, Query, Recommender
from stygig.errors import CatalogError, InvalidOptionsError
from stygig.sample_catalog import CANDIDATES_FILE, kaggle_demo_catalog

KAGGLE = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "fashion-products"

pytest.importorskip("efficientnet_lite_pytorch")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if not (KAGGLE / "styles.csv").is_file():
        pytest.skip(f"the Kaggle 'Fashion Product Images' copy is not at {KAGGLE}")
    root = tmp_path_factory.mktemp("demo-kaggle")
    csv_path = kaggle_demo_catalog(KAGGLE, root / "catalog", limit=240)
    with make_build_encoder("efficientnet-lite0") as (encoder, files):
        build_artifact(csv_path, root / "artifact", encoder, extra_files=files, progress=False)
    return root / "catalog", root / "artifact"


@pytest.fixture
def catalog(demo: tuple[Path, Path], tmp_path: Path) -> Path:
    """The demo's catalogue folder, a copy of its own per test (photos hard-linked)."""
    return Path(shutil.copytree(demo[0], tmp_path / "catalog", copy_function=_link))


def _link(source: str, target: str) -> None:
    Path(target).hardlink_to(source)


def _rows(folder: Path) -> list[dict[str, str]]:
    with (folder / CANDIDATES_FILE).open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _write_rows(folder: Path, rows: list[dict[str, str]]) -> None:
    (folder / CANDIDATES_FILE).unlink()  # a hard link to the fixture's: never written through
    with (folder / CANDIDATES_FILE).open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=("category", "file", "example"), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def test_each_category_offers_the_first_photo_voted_right(
    demo: tuple[Path, Path], catalog: Path
) -> None:
    artifact = demo[1]
    rows = _rows(catalog)
    queries = catalog / "queries"
    # As drawn, queries/ offers each category's first photo under its example name.
    firsts = {r["category"]: r for r in reversed(rows)}
    assert {p.name for p in queries.glob("*.jpg")} == {r["example"] for r in firsts.values()}
    bag = next(r for r in rows if r["category"] == "handbag")
    shirts = [r for r in rows if r["category"] == "shirt"]
    assert len(shirts) >= 2
    # A handbag photo listed first among the shirts: voted "handbag", so never offered as a
    # shirt; the shirts' next photo is tried. Before it, a missing photo, a corrupt one and a
    # link (the server serves no link), each tried as unreadable.
    (catalog / "candidates" / "corrupt-shirt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a JPEG")
    (catalog / "candidates" / "linked-shirt.jpg").symlink_to(catalog / "candidates" / bag["file"])
    odd = [
        {"category": "shirt", "file": name, "example": "odd-shirt.jpg"}
        for name in ("gone-shirt.jpg", "corrupt-shirt.jpg", "linked-shirt.jpg")
    ]
    misplaced = {"category": "shirt", "file": bag["file"], "example": "bag-as-shirt.jpg"}
    at = rows.index(shirts[0])
    rows[at:at] = [*odd, misplaced]
    _write_rows(catalog, rows)
    (queries / "bag-as-shirt.jpg").write_bytes(b"a stale copy")  # named by the list: removed
    (queries / "mine.jpg").write_bytes(b"the operator's own")  # named by no row: left alone
    # A link where an example goes is replaced by the photo itself: the server serves no link
    # (review of the fixes, session 43: a link to the candidate was kept as "the same file").
    for r in rows:
        target = queries / r["example"]
        if not target.exists() and (catalog / "candidates" / r["file"]).is_file():
            target.symlink_to(catalog / "candidates" / r["file"])

    checks = pick_examples(artifact, catalog)

    by_category = {c.category: c for c in checks}
    assert list(by_category) == list(dict.fromkeys(r["category"] for r in rows))
    shirt = by_category["shirt"]
    assert shirt.tried[:4] == (
        ("gone-shirt.jpg", "unreadable"),
        ("corrupt-shirt.jpg", "unreadable"),
        ("linked-shirt.jpg", "unreadable"),
        (bag["file"], "handbag"),
    )
    assert shirt.offered not in (None, "bag-as-shirt.jpg", "odd-shirt.jpg")
    rec = Recommender.from_path(artifact)
    offered = set()
    for check in checks:
        listed = [r for r in rows if r["category"] == check.category]
        assert [f for f, _ in check.tried] == [r["file"] for r in listed][: len(check.tried)]
        assert all(v != check.category for _, v in check.tried[:-1])
        if check.offered is None:
            assert len(check.tried) == len(listed) and "not offered" in check.line()
            continue
        assert check.tried[-1][1] == check.category
        winner = next(r for r in listed if r["file"] == check.tried[-1][0])
        assert check.offered == winner["example"]
        offered.add(check.offered)
        photo = queries / check.offered
        assert photo.read_bytes() == (catalog / "candidates" / winner["file"]).read_bytes()
        assert not photo.is_symlink()
        answer = rec.recommend(Query(images=(photo.read_bytes(),)), Options(k=1))
        assert answer.query[0].category == check.category  # voted right, checked afresh
    # queries/ holds the offered photos and what the list does not name, nothing else.
    assert {p.name for p in queries.glob("*.jpg")} == offered | {"mine.jpg"}
    assert len(offered) >= 6
    assert pick_examples(artifact, catalog) == checks  # a second run: the same


def test_the_command_prints_each_category_and_refuses_a_bad_list_or_a_stale_artifact(
    demo: tuple[Path, Path], catalog: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    artifact = demo[1]
    assert main(["pick-examples", "--artifact", str(artifact), "--catalog-dir", str(catalog)]) == 0
    out = capsys.readouterr().out
    assert "shirt: " in out and " -> shirt" in out
    assert "categories offered in" in out
    rows = _rows(catalog)
    for bad in ("../../etc/passwd", ".hidden.jpg", "Blue Shirt.jpg", "x.png"):
        _write_rows(catalog, [*rows, {"category": "shirt", "file": bad, "example": "x.jpg"}])
        with pytest.raises(CatalogError, match=f"line {len(rows) + 2}") as caught:
            pick_examples(artifact, catalog)
        assert "passwd" not in str(caught.value) and str(tmp_path) not in str(caught.value)
    # An example name under two categories (the second's pass removed the first's offer).
    _write_rows(
        catalog,
        [*rows, {"category": "jeans", "file": rows[0]["file"], "example": rows[0]["example"]}],
    )
    with pytest.raises(CatalogError, match=f"line {len(rows) + 2}: its example name is another"):
        pick_examples(artifact, catalog)
    (catalog / CANDIDATES_FILE).unlink()
    (catalog / CANDIDATES_FILE).write_bytes(b"category,file,example\nshirt,\xff\xfe.jpg,x.jpg\n")
    with pytest.raises(CatalogError, match="cannot be read"):
        pick_examples(artifact, catalog)
    _write_rows(catalog, rows)
    # A linked queries/ (or candidates/) folder: its files would be replaced outside the demo.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / rows[0]["example"]).write_bytes(b"someone else's")
    shutil.rmtree(catalog / "queries")
    (catalog / "queries").symlink_to(elsewhere)
    with pytest.raises(CatalogError, match="queries/ is a link"):
        pick_examples(artifact, catalog)
    assert (elsewhere / rows[0]["example"]).read_bytes() == b"someone else's"
    (catalog / "queries").unlink()
    # A catalogue drawn again (another limit) without building its artifact again.
    kaggle_demo_catalog(KAGGLE, tmp_path / "redrawn", limit=60, seed=3)
    # Copies, never hard links to the download (review, session 54: written through the
    # demo's folder, a photo of the shared dataset changed too).
    drawn = [
        p for d in ("images", "candidates", "queries") for p in (tmp_path / "redrawn" / d).iterdir()
    ]
    assert drawn and all(p.stat().st_nlink == 1 for p in drawn)
    with pytest.raises(CatalogError, match="not built from this folder"):
        pick_examples(artifact, tmp_path / "redrawn")
    (catalog / CANDIDATES_FILE).unlink()
    assert main(["pick-examples", "--artifact", str(artifact), "--catalog-dir", str(catalog)]) != 0
    assert "candidates.csv" in capsys.readouterr().err


def test_a_stopped_draw_is_drawn_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review, session 43: a run stopped after catalog.csv was written (before candidates.csv
    and the README) was refused ever after as "other files". The README is written first, so
    the folder is known as the demo's and drawn again."""
    import stygig.sample_catalog as sc

    if not (KAGGLE / "styles.csv").is_file():
        pytest.skip(f"the Kaggle 'Fashion Product Images' copy is not at {KAGGLE}")
    real = csv.DictWriter
    writers: list[str] = []

    def stop_at_the_second(f: object, fieldnames: object, **kwargs: object) -> object:
        writers.append(str(fieldnames))
        if len(writers) == 2:  # catalog.csv written, candidates.csv next
            raise KeyboardInterrupt
        return real(f, fieldnames, **kwargs)  # type: ignore[call-overload]

    out = tmp_path / "catalog"
    monkeypatch.setattr(sc.csv, "DictWriter", stop_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        kaggle_demo_catalog(KAGGLE, out, limit=40)
    monkeypatch.undo()
    assert (out / "catalog.csv").is_file() and not (out / CANDIDATES_FILE).read_text()
    assert "being written" in (out / "README.txt").read_text()
    csv_path = kaggle_demo_catalog(KAGGLE, out, limit=40)
    assert len(csv_path.read_text().splitlines()) == 41 and (out / CANDIDATES_FILE).is_file()
    assert "being written" not in (out / "README.txt").read_text()


def test_a_redraw_never_writes_through_a_linked_folder(tmp_path: Path) -> None:
    """Review of the fixes, session 43: a redraw removes the old photos of queries/ and
    candidates/; through a link they would be someone else's."""
    if not (KAGGLE / "styles.csv").is_file():
        pytest.skip(f"the Kaggle 'Fashion Product Images' copy is not at {KAGGLE}")
    out = tmp_path / "catalog"
    kaggle_demo_catalog(KAGGLE, out, limit=40)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "mine.jpg").write_bytes(b"someone else's")
    shutil.rmtree(out / "candidates")
    (out / "candidates").symlink_to(elsewhere)
    with pytest.raises(InvalidOptionsError, match="is a link"):
        kaggle_demo_catalog(KAGGLE, out, limit=40)
    assert (elsewhere / "mine.jpg").read_bytes() == b"someone else's"


def _odd_copy(root: Path, rows: int = 300, *, photos: str = "images") -> Path:
    """The first ``rows`` rows of the Kaggle download with their photos under ``photos``."""
    if not (KAGGLE / "styles.csv").is_file():
        pytest.skip(f"the Kaggle 'Fashion Product Images' copy is not at {KAGGLE}")
    lines = (KAGGLE / "styles.csv").read_text(encoding="utf-8").splitlines()
    kept = [lines[0]]
    (root / photos).mkdir(parents=True)
    for line in lines[1:]:
        item = line.split(",", 1)[0]
        if (KAGGLE / "images" / f"{item}.jpg").is_file():
            shutil.copyfile(KAGGLE / "images" / f"{item}.jpg", root / photos / f"{item}.jpg")
            kept.append(line)
        if len(kept) > rows:
            break
    (root / "styles.csv").write_text("\n".join(kept) + "\n", encoding="utf-8")
    return root


def test_an_odd_or_cut_copy_of_the_download_is_said_in_numbers(tmp_path: Path) -> None:
    """Review, session 53: a copy whose photos sat in images/images/ (a common unzip) ended with
    one line and no number; a copy cut short made empty example photos and said it was done."""
    nested = _odd_copy(tmp_path / "nested", photos="images/images")
    with pytest.raises(CatalogError) as refused:
        kaggle_demo_catalog(nested, tmp_path / "out-nested", limit=40)
    said = str(refused.value)
    assert "300 missing_image" in said and "images/<id>.jpg" in said
    cut = _odd_copy(tmp_path / "cut")
    photos = sorted((cut / "images").glob("*.jpg"))
    for photo in photos[::3]:  # an interrupted unzip: a third of them empty
        photo.write_bytes(b"")
    csv_path = kaggle_demo_catalog(cut, tmp_path / "out-cut", limit=60)
    written = [
        *(csv_path.parent / "queries").glob("*.jpg"),
        *(csv_path.parent / "candidates").glob("*.jpg"),
    ]
    assert written and all(p.stat().st_size > 0 for p in written)
    assert len(csv_path.read_text().splitlines()) > 1

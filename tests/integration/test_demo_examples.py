"""The Kaggle demo's one-click examples are checked against the catalogue they are shown
with: each category offers the first held-out photo the built artifact votes right
(`stygig pick-examples`), never one it votes another category. Real photos
(../shared/datasets/fashion-products) and the real EfficientNet-Lite0 weights."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from stygig.build import build_artifact, make_build_encoder
from stygig.cli import main
from stygig.demo_examples import pick_examples
from stygig.engine import Options, Query, Recommender
from stygig.errors import CatalogError
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


def _listed(folder: Path) -> list[dict[str, str]]:
    with (folder / CANDIDATES_FILE).open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_each_category_offers_the_first_photo_voted_right(
    demo: tuple[Path, Path], tmp_path: Path
) -> None:
    catalog, artifact = demo
    rows = _listed(catalog)
    bag = next(r["file"] for r in rows if r["category"] == "handbag")
    # A handbag photo listed first among the shirts: voted "handbag", so never offered as a
    # shirt; the shirts' next photo is tried.
    shirts = [r for r in rows if r["category"] == "shirt"]
    assert len(shirts) >= 2
    rows.insert(rows.index(shirts[0]), {"category": "shirt", "file": bag})
    with (catalog / CANDIDATES_FILE).open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=("category", "file"), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    stale = catalog / "queries" / shirts[-1]["file"]
    stale.write_bytes((catalog / "candidates" / shirts[-1]["file"]).read_bytes())

    checks = pick_examples(artifact, catalog)

    by_category = {c.category: c for c in checks}
    assert list(by_category) == list(dict.fromkeys(r["category"] for r in rows))
    shirt = by_category["shirt"]
    assert shirt.tried[0] == (bag, "handbag") and shirt.offered != bag
    rec = Recommender.from_path(artifact)
    offered = set()
    for check in checks:
        files = [r["file"] for r in rows if r["category"] == check.category]
        assert [f for f, _ in check.tried] == files[: len(check.tried)]  # in order
        assert all(v != check.category for _, v in check.tried[:-1])
        if check.offered is None:
            assert len(check.tried) == len(files) and "not offered" in check.line()
            continue
        offered.add(check.offered)
        photo = (catalog / "queries" / check.offered).read_bytes()
        answer = rec.recommend(Query(images=(photo,)), Options(k=1))
        assert answer.query[0].category == check.category  # voted right, checked afresh
    # queries/ holds exactly the offered photos: a photo voted wrong (or a stale copy) is gone.
    assert {p.name for p in (catalog / "queries").glob("*.jpg")} == offered
    assert len(offered) >= 6
    assert bag not in offered or by_category["handbag"].offered == bag


def test_the_command_prints_each_category_and_refuses_a_bad_list(
    demo: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    catalog, artifact = demo
    assert main(["pick-examples", "--artifact", str(artifact), "--catalog-dir", str(catalog)]) == 0
    out = capsys.readouterr().out
    assert "shirt: " in out and " -> shirt" in out
    assert "categories offered in" in out
    bad = tmp_path / "bad"
    (bad / "candidates").mkdir(parents=True)
    (bad / CANDIDATES_FILE).write_text("category,file\nshirt,../../etc/passwd\n")
    with pytest.raises(CatalogError, match="line 2") as caught:
        pick_examples(artifact, bad)
    assert "passwd" not in str(caught.value) and str(tmp_path) not in str(caught.value)
    (bad / CANDIDATES_FILE).unlink()
    assert main(["pick-examples", "--artifact", str(artifact), "--catalog-dir", str(bad)]) != 0
    assert "candidates.csv" in capsys.readouterr().err

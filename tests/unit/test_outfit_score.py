"""Scoring a set of items (``Recommender.score_outfit``), ranking given candidates
(``Options.candidate_ids``), the page's example photos and the demo catalogue from the Kaggle
download."""

from __future__ import annotations

import csv
import functools
import io
import os
import shutil
from dataclasses import replace
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from PIL import Image

from stygig.answer import outfit_score_schema
from stygig.engine import Options, Query, Recommender
from stygig.errors import (
    CatalogError,
    ConfigError,
    InvalidOptionsError,
    NotFoundError,
)
from stygig.evaluation.fitb import outfit_score
from stygig.recommendation import (
    MAX_CANDIDATE_IDS,
    MAX_OUTFIT_ITEMS,
    OutfitRequest,
    options_schema,
    outfit_request_schema,
    split_json_request,
)
from stygig.sample_catalog import (
    find_kaggle_styles,
    is_drawn_sample,
    kaggle_demo_catalog,
    plan_sample_catalog,
)
from tests.conftest import closed_schema

KAGGLE = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "fashion-products"
SET = ["sku-0014", "sku-0040", "sku-0085", "sku-0115"]  # shirt, jeans, loafers, handbag


@pytest.fixture(scope="module")
def rec(sample: tuple[Path, Path]) -> Recommender:
    return Recommender.from_path(sample[1])


# -- score_outfit -------------------------------------------------------------------------------


def test_each_pair_is_the_recommendation_score_both_ways(rec: Recommender) -> None:
    out = rec.score_outfit(SET)
    assert [(p.a, p.b) for p in out.pairs] == [
        (SET[i], SET[j]) for i in range(len(SET)) for j in range(i + 1, len(SET))
    ]
    for pair in out.pairs:
        there = float(rec.score_items([pair.a], [pair.b])[0])
        back = float(rec.score_items([pair.b], [pair.a])[0])
        assert pair.score == pytest.approx((there + back) / 2, abs=1e-4)
        assert -1.0 <= pair.similarity <= 1.0 and 0.0 <= pair.harmony <= 1.0
        assert pair.boost == (1.15 if pair.compatible else 1.0)
        assert pair.learned is None
    # the same numbers a recommendation shows for the candidate
    answer = rec.recommend(Query(item_ids=(SET[0],)), Options(candidate_ids=(SET[1],)))
    assert answer.items[0].score == pytest.approx(
        float(rec.score_items([SET[0]], [SET[1]])[0]), abs=1e-4
    )


def test_each_item_is_scored_as_the_completion_of_the_others(rec: Recommender) -> None:
    out = rec.score_outfit(SET)
    assert [i.id for i in out.items] == SET
    for n, item in enumerate(out.items):
        rest = SET[:n] + SET[n + 1 :]
        assert item.score == pytest.approx(float(rec.score_items(rest, [item.id])[0]), abs=1e-4)
    # Overall: the weakest item's fit to the rest, the evaluation's outfit score; the pairs'
    # mean beside it.
    lowest = min(out.items, key=lambda i: (i.score, i.id))
    assert out.score == lowest.score and out.weakest_item == lowest.id
    assert out.score == pytest.approx(outfit_score(SET, rec.score_items), abs=1e-4)
    assert out.pair_mean == pytest.approx(np.mean([p.score for p in out.pairs]), abs=1e-4)
    assert out.pair_mean == pytest.approx(outfit_score(SET, rec.score_items, "pairs"), abs=1e-3)
    weakest = min(out.pairs, key=lambda p: p.score)
    assert out.weakest_pair == [weakest.a, weakest.b]
    assert out.compatible == all(p.compatible for p in out.pairs)
    assert out.scoring == "rules" and out.learned is None and out.use_color
    assert out.artifact.items == len(rec.artifact.items)


def test_without_colour_the_score_is_similarity_and_boost(rec: Recommender) -> None:
    out = rec.score_outfit(OutfitRequest(tuple(SET[:2]), use_color=False))
    pair = out.pairs[0]
    w = rec.config.similarity_weight
    assert pair.score == pytest.approx(w * pair.similarity * pair.boost, abs=1e-4)
    assert out.use_color is False


def test_the_json_is_what_its_schema_says(rec: Recommender) -> None:
    schema = outfit_score_schema()
    defs = schema.pop("$defs", {})
    validator = jsonschema.Draft202012Validator(
        {**closed_schema(schema), "components": {"schemas": closed_schema(defs)}}  # type: ignore[dict-item]
    )
    data = rec.score_outfit(SET).to_dict()
    assert not [e.message for e in validator.iter_errors(data)]
    assert set(data["timings_ms"]) == {"score"}


@pytest.mark.parametrize(
    ("ids", "error"),
    [
        (["sku-0014"], InvalidOptionsError),
        (["sku-0014", "sku-0014"], InvalidOptionsError),
        ([f"sku-{n:04d}" for n in range(1, MAX_OUTFIT_ITEMS + 2)], InvalidOptionsError),
        (["sku-0014", "secret-client-text"], NotFoundError),
        (["sku-0014", ""], InvalidOptionsError),
    ],
)
def test_bad_sets_are_refused_without_echoing_them(
    rec: Recommender, ids: list[str], error: type[Exception]
) -> None:
    with pytest.raises(error) as caught:
        rec.score_outfit(ids)
    assert "secret-client-text" not in str(caught.value)


def test_the_request_type_checks_its_fields() -> None:
    ok = OutfitRequest.from_dict({"item_ids": ["a", "b"], "use_color": False})
    assert ok == OutfitRequest(("a", "b"), use_color=False)
    for bad in (
        {},
        {"item_ids": "a,b"},
        {"item_ids": ["a", "b"], "use_color": "false"},
        {"item_ids": ["a", "b"], "secret-client-key": 1},
        {"item_ids": ["a", 5]},
    ):
        with pytest.raises(InvalidOptionsError) as caught:
            OutfitRequest.from_dict(bad)
        assert "secret-client-key" not in str(caught.value)
    schema = outfit_request_schema()
    assert schema["properties"]["item_ids"]["maxItems"] == MAX_OUTFIT_ITEMS
    assert schema["required"] == ["item_ids"] and schema["additionalProperties"] is False


def test_a_compatibility_model_adds_its_part(tmp_path: Path) -> None:
    from stygig.artifact import Artifact, add_compat_model
    from stygig.scoring import ScoringConfig
    from stygig.training.compat import TrainConfig, train_compat
    from tests.unit.test_compat import _artifact

    path, outfits = _artifact(tmp_path)
    model = train_compat(
        Artifact.load(path), outfits, TrainConfig(epochs=1), progress=False, log=lambda _: None
    ).model
    # An outfit absence weight of its own, so outfit item scores differ from recommendations
    # wherever two styled items were never styled together.
    model = replace(model, outfit_absent_weight=model.absent_weight - 5.0, rules_weight=2.0)
    add_compat_model(path, model, {"note": "outfit score test"})
    ids = ["shirt-1-0", "trousers-1-1", "sandals-1-2"]
    for mode in ("learned", "learned+rules"):
        rec = Recommender(
            Artifact.load(path), config=ScoringConfig.from_dict({"compat_mode": mode})
        )
        out = rec.score_outfit(ids)
        assert out.scoring == mode
        assert all(isinstance(p.learned, float) for p in out.pairs)
        # The parts add up, from what the answer and /v1/config show (review, session 42:
        # the rules' weight was only in the manifest).
        assert out.rules_weight == (0.0 if mode == "learned" else model.rules_weight)
        cfg = rec.config
        for pair in out.pairs:
            rules = cfg.similarity_weight * pair.similarity + cfg.harmony_weight * pair.harmony
            want = pair.learned + out.rules_weight * rules * pair.boost
            assert pair.score == pytest.approx(want, abs=3e-4)
        assert all(isinstance(i.learned, float) for i in out.items)
        assert out.learned == pytest.approx(np.mean([p.learned for p in out.pairs]), abs=1e-4)
        for pair in out.pairs:
            there = float(rec.score_items([pair.a], [pair.b])[0])
            back = float(rec.score_items([pair.b], [pair.a])[0])
            assert pair.score == pytest.approx((there + back) / 2, abs=1e-4)
        as_outfit = functools.partial(rec.score_items, outfit=True)
        for n, item in enumerate(out.items):
            rest = ids[:n] + ids[n + 1 :]
            assert item.score == pytest.approx(float(as_outfit(rest, [item.id])[0]), abs=1e-4)
        assert out.score == pytest.approx(outfit_score(ids, as_outfit), abs=1e-4)
    # The outfit weight moves outfit scores by exactly its difference x the absence share.
    rec = Recommender(
        Artifact.load(path), config=ScoringConfig.from_dict({"compat_mode": "learned"})
    )
    co = model.cooccurrence
    styled = [i for i in co.item_ids.tolist() if i in rec.snapshot.artifact.positions][:12]
    given, cands = styled[:3], styled[3:]
    share = co.absent(co.codes(given), co.codes(cands), co.lookup(co.codes(given), co.codes(cands)))
    assert share.sum() > 0
    moved = rec.score_items(given, cands, outfit=True) - rec.score_items(given, cands)
    assert moved == pytest.approx(-5.0 * share.mean(axis=0), abs=1e-4)


# -- candidate_ids ------------------------------------------------------------------------------


def test_only_the_given_candidates_are_ranked_with_the_usual_parts(rec: Recommender) -> None:
    candidates = ("sku-0030", "sku-0040", "sku-0050", "sku-0060", "sku-0005", "sku-0020")
    out = rec.recommend(Query(item_ids=("sku-0014",)), Options(candidate_ids=candidates))
    assert sorted(i.id for i in out.items) == sorted(candidates)  # same-slot shirt included
    expected = rec.score_items(["sku-0014"], list(candidates))
    by_id = dict(zip(candidates, expected.tolist(), strict=True))
    assert [i.score for i in out.items] == sorted((i.score for i in out.items), reverse=True)
    for item in out.items:
        assert item.score == pytest.approx(by_id[item.id], abs=1e-4)
        assert item.reason and item.harmony_rule
    shown = {i.id for rows in out.by_category.values() for i in rows}
    assert shown <= set(candidates)
    similar = rec.recommend(
        Query(item_ids=("sku-0014",)), Options(candidate_ids=candidates, mode="similar")
    )
    assert sorted(i.id for i in similar.items) == sorted(candidates)


def test_candidates_pass_the_stated_filters_not_the_voted_gender(
    rec: Recommender, sample: tuple[Path, Path]
) -> None:
    women = [i.id for i in rec.artifact.items if i.gender == "women"][:3]
    men = [i.id for i in rec.artifact.items if i.gender == "men"][:3]
    photo = sample[0] / "queries" / "red-dress.jpg"
    voted = rec.recommend(Query(images=(photo,)), Options(candidate_ids=(*women, *men)))
    assert {i.id for i in voted.items} == {*women, *men}
    stated = rec.recommend(
        Query(images=(photo,)), Options(candidate_ids=(*women, *men), gender="men")
    )
    assert {i.id for i in stated.items} == set(men)
    excluded = rec.recommend(
        Query(images=(photo,)), Options(candidate_ids=(*women, *men), exclude_ids=(women[0],))
    )
    assert women[0] not in {i.id for i in excluded.items}


def test_bad_candidates_are_refused_before_any_work(rec: Recommender) -> None:
    query = Query(item_ids=("sku-0014",))
    with pytest.raises(NotFoundError) as unknown:
        rec.prepare(query, Options(candidate_ids=("sku-0040", "secret-client-text")))
    assert "secret-client-text" not in str(unknown.value)
    # Which one, by its place (review, session 42: it named neither field nor place).
    assert str(unknown.value).startswith("candidate_ids[1]: ")
    with pytest.raises(NotFoundError, match=r"^item_ids\[1\]: "):
        rec.prepare(Query(item_ids=("sku-0014", "nope")), Options())
    with pytest.raises(InvalidOptionsError):
        rec.prepare(query, Options(candidate_ids=("sku-0014", "sku-0040")))
    with pytest.raises(InvalidOptionsError, match="at most once"):
        Options(candidate_ids=("sku-0040", "sku-0040"))
    with pytest.raises(InvalidOptionsError, match="candidate_ids"):
        Options(candidate_ids=tuple(f"x{n}" for n in range(MAX_CANDIDATE_IDS + 1)))
    assert Options.from_dict({"candidate_ids": ["a", "b"]}).candidate_ids == ("a", "b")
    schema = options_schema()["properties"]["candidate_ids"]
    assert schema["maxItems"] == MAX_CANDIDATE_IDS and schema["type"] == "array"
    # An item twice in the query (review, s45: taken, its votes weighed twice).
    with pytest.raises(InvalidOptionsError, match=r"^item_ids\[2\] repeats item_ids\[0\]"):
        Query(item_ids=("sku-0014", "sku-0040", "sku-0014"))


def test_a_long_partial_outfit_of_catalogue_items_can_be_completed(
    rec: Recommender, sample: tuple[Path, Path]
) -> None:
    """FITB from outside: MANGO's outfits hold up to 13 items, so a question shows up to 12.
    A query holds up to 16 photos and items together (a catalogue item is a look-up), and at
    most 8 photos (each is decoded and encoded)."""
    ids = [i.id for i in rec.artifact.items]
    given, candidates = tuple(ids[:12]), tuple(ids[12:16])
    out = rec.recommend(Query(item_ids=given), Options(candidate_ids=candidates))
    assert sorted(i.id for i in out.items) == sorted(candidates)
    assert [p.source for p in out.query] == [f"item:{i}" for i in given]
    expected = dict(zip(candidates, rec.score_items(list(given), list(candidates)), strict=True))
    for item in out.items:
        assert item.score == pytest.approx(float(expected[item.id]), abs=1e-4)
    with pytest.raises(InvalidOptionsError, match="at most 16 photos and items together"):
        Query(item_ids=tuple(ids[:17]))
    photo = sample[0] / "queries" / "red-dress.jpg"
    with pytest.raises(InvalidOptionsError, match="at most 8 photos"):
        Query(images=(photo,) * 9)
    assert len(Query(images=(photo,) * 8, item_ids=tuple(ids[:8])).item_ids) == 8
    with pytest.raises(InvalidOptionsError, match="at most 8 photos"):
        split_json_request({"images_b64": ["AA=="] * 9})
    with pytest.raises(InvalidOptionsError, match="at most 8 photos"):  # counted together
        split_json_request({"image_b64": "AA==", "images_b64": ["AA=="] * 8})
    with pytest.raises(InvalidOptionsError, match="item_ids: at most 16"):
        split_json_request({"item_ids": ids[:17]})


# -- the page's example photos ------------------------------------------------------------------


def test_examples_are_an_allow_list_read_once(tmp_path: Path, sample: tuple[Path, Path]) -> None:
    from stygig.serving.catalog_api import MAX_EXAMPLES, load_examples

    folder = tmp_path / "examples"
    folder.mkdir()
    photo = (sample[0] / "queries" / "grey-shirt.jpg").read_bytes()
    (folder / "grey-shirt.jpg").write_bytes(photo)
    (folder / "notes.txt").write_text("not a photo")
    (folder / "big.jpg").write_bytes(photo + b"\0" * 5000)
    (folder / "sub.jpg").mkdir()  # a folder with a photo's name
    (folder / "bad name.jpg").write_bytes(photo)
    (folder / ".hidden.jpg").write_bytes(photo)
    # Review, session 36: links were followed (passwd.jpg -> /etc/passwd was served as a
    # photo) and any bytes with a photo's suffix were served as one.
    secret = tmp_path / "secret.txt"
    secret.write_text("db-password=hunter2")
    (folder / "passwd.jpg").symlink_to(secret)
    (folder / "photo-link.jpg").symlink_to(folder / "grey-shirt.jpg")  # a link, even to a photo
    (folder / "text.jpg").write_text("db-password=hunter2")
    (folder / "shirt.png").write_bytes(photo)  # a JPEG named .png
    os.mkfifo(folder / "pipe.jpg")  # never waited on
    found = load_examples(folder, max_bytes=len(photo) + 100)
    assert list(found) == ["grey-shirt.jpg"]
    example = found["grey-shirt.jpg"]
    assert example.label == "Grey shirt" and example.media_type == "image/jpeg"
    assert example.body == photo
    assert example.card().url == "/v1/examples/grey-shirt.jpg"
    png = io.BytesIO()
    Image.open(io.BytesIO(photo)).save(png, "PNG")
    for n in range(MAX_EXAMPLES + 3):
        (folder / f"x{n:02d}.png").write_bytes(png.getvalue())
    assert len(load_examples(folder, max_bytes=10**6)) == MAX_EXAMPLES
    assert load_examples(None, 10) == {}
    with pytest.raises(ConfigError) as caught:
        load_examples(tmp_path / "missing", 10)
    assert str(tmp_path) not in str(caught.value)


# -- the drawn sample and the Kaggle demo -------------------------------------------------------


def test_the_drawn_sample_is_told_from_real_catalogues(rec: Recommender) -> None:
    from stygig.catalog import Item

    assert is_drawn_sample(rec.artifact.items)
    real = [Item(id=str(n), image="x.jpg", category="shirt", brand="Acme") for n in range(5)]
    assert not is_drawn_sample(real)
    assert not is_drawn_sample([])
    assert len(plan_sample_catalog()) == len(rec.artifact.items)


def _kaggle_or_skip() -> Path:
    if not (KAGGLE / "styles.csv").is_file():
        pytest.skip(f"the Kaggle 'Fashion Product Images' copy is not at {KAGGLE}")
    return KAGGLE


@pytest.mark.slow
def test_kaggle_demo_catalogue_is_balanced_and_holds_out_its_examples(tmp_path: Path) -> None:
    from stygig.catalog.loaders import read_catalog

    source = _kaggle_or_skip()
    csv_path = kaggle_demo_catalog(source, tmp_path / "demo", limit=120)
    read = read_catalog(csv_path)
    assert len(read.items) == 120 and not read.rejects
    counts: dict[str, int] = {}
    for item in read.items:
        counts[item.category] = counts.get(item.category, 0) + 1
    assert max(counts.values()) - min(c for c in counts.values() if c > 1) <= 1
    assert {"shirt", "jeans", "casual-shoes", "handbag"} <= set(counts)
    queries = sorted((tmp_path / "demo" / "queries").glob("*.jpg"))
    assert len(queries) >= 6 and any(q.name.endswith("-shirt.jpg") for q in queries)
    candidates = sorted((tmp_path / "demo" / "candidates").glob("*.jpg"))
    assert len(candidates) > len(queries)  # spares, for a first photo voted wrong
    assert {q.name for q in queries} <= {c.name for c in candidates}
    in_catalogue = {(tmp_path / "demo" / i.image).read_bytes() for i in read.items}
    assert not any(c.read_bytes() in in_catalogue for c in candidates)  # held out
    assert not is_drawn_sample(read.items)
    again = kaggle_demo_catalog(source, tmp_path / "again", limit=120)
    assert again.read_bytes() == csv_path.read_bytes()  # same download, same seed


@pytest.mark.slow
def test_a_sample_catalogue_never_writes_over_other_files(tmp_path: Path) -> None:
    """Review, session 36: `sample-catalog --from-kaggle D --out D` unlinked the download's own
    photos (source and target were one file), and `--out` an operator's folder replaced its
    catalog.csv. A folder holding anything but a catalogue written here is refused; the
    sample's own folder is written again, as `make demo` does."""
    from stygig.sample_catalog import generate_sample_catalog

    shop = tmp_path / "shop"
    shop.mkdir()
    (shop / "catalog.csv").write_text("id,image,category\nMY-REAL-1,photos/a.jpg,top\n")
    with pytest.raises(InvalidOptionsError, match="holds other files"):
        generate_sample_catalog(shop)
    assert "MY-REAL-1" in (shop / "catalog.csv").read_text()
    again = generate_sample_catalog(tmp_path / "sample")
    assert generate_sample_catalog(tmp_path / "sample") == again  # its own folder: rewritten
    # A run stopped before its README (written last) left photo folders only: written again
    # (review, session 36: `make demo` was refused after an interrupted run).
    (tmp_path / "sample" / "README.txt").unlink()
    (tmp_path / "sample" / "catalog.csv").unlink()
    assert generate_sample_catalog(tmp_path / "sample") == again
    download = tmp_path / "kaggle"
    (download / "images").mkdir(parents=True)
    (download / "images" / "1.jpg").write_bytes(b"a photo")
    (download / "styles.csv").write_text("id,gender,masterCategory\n")
    for out in (download, download / "demo", tmp_path):
        with pytest.raises(InvalidOptionsError, match="apart from the Kaggle download"):
            kaggle_demo_catalog(download, out, limit=20)
    assert (download / "images" / "1.jpg").read_bytes() == b"a photo"


def test_kaggle_styles_are_found_where_the_download_unpacks(tmp_path: Path) -> None:
    source = _kaggle_or_skip()
    unpacked = tmp_path / "archive" / "myntradataset"
    (unpacked / "images").mkdir(parents=True)
    with (source / "styles.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[:41]
    with (unpacked / "styles.csv").open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    for row in rows[1:]:
        shutil.copyfile(source / "images" / f"{row[0]}.jpg", unpacked / "images" / f"{row[0]}.jpg")
    assert find_kaggle_styles(tmp_path / "archive") == unpacked / "styles.csv"
    csv_path = kaggle_demo_catalog(tmp_path / "archive", tmp_path / "demo", limit=20)
    assert len(csv_path.read_text().splitlines()) == 21
    with pytest.raises(CatalogError) as caught:
        find_kaggle_styles(tmp_path / "demo" / "images")
    assert str(tmp_path) not in str(caught.value)
    with pytest.raises(InvalidOptionsError):
        kaggle_demo_catalog(tmp_path / "archive", tmp_path / "x", limit=5)

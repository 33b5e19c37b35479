"""The compatibility model's style features: measured from catalogue photos at training, stored
per item in the model, absent (and scored without) for photos and items added later."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stygig.artifact import Artifact, add_compat_model
from stygig.compat import CompatModel, ItemFeatures
from stygig.engine import Options, Query, Recommender
from stygig.scoring import ScoringConfig

pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite_pytorch")


def _photo(path: Path, style: int, k: int, seed: int = 0) -> Path:
    """A striped (odd styles) or plain (even) garment photo, its colour by style."""
    rng = np.random.default_rng([style, k, seed])
    img = np.full((240, 240, 3), 235, np.uint8)
    colour = np.array([60 * style, 40 + 5 * k, 200 - 40 * style], np.uint8)
    img[40:200, 60:180] = colour
    if style % 2:
        img[40:200:12, 60:180] = 255 - colour
    img = np.clip(img.astype(int) + rng.integers(-6, 7, img.shape), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(path, quality=92)
    return path


def _artifact(root: Path, *, missing: str | None = None) -> tuple[Path, dict[str, list[str]]]:
    """test_compat's 24 items (2 per style), each with a real photo but ``missing``'s."""
    from tests.unit.test_compat import _artifact as with_items

    (root / "img").mkdir(parents=True)

    def image(item_id: str, c: int, style: int, k: int) -> str:
        path = root / "img" / f"{item_id}.jpg"
        if item_id != missing:
            _photo(path, style, k, c)
        return str(path)

    return with_items(root, per_style=2, image=image)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CompatModel, list[str]]:
    from stygig.training.compat import TrainConfig, train_compat

    root = tmp_path_factory.mktemp("style")
    path, outfits = _artifact(root, missing="sandals-3-1")
    logged: list[str] = []
    cfg = TrainConfig(epochs=2, style_dims=8)
    result = train_compat(Artifact.load(path), outfits, cfg, progress=False, log=logged.append)
    add_compat_model(path, result.model, {"note": "style"})
    return path, result.model, logged


@pytest.mark.slow
def test_training_stores_the_style_of_every_readable_catalogue_photo(
    trained: tuple[Path, CompatModel, list[str]],
) -> None:
    _, model, logged = trained
    ids = model.style_ids.tolist()
    assert len(ids) == 23 and "sandals-3-1" not in ids and ids == sorted(ids)
    assert model.style_rows.shape == (23, 8) and model.style_width == 9
    assert model.style_rows.dtype == np.float16  # as compat.npz stores them
    spread = model.style_rows.astype(np.float32).std(axis=0)
    assert np.all(np.diff(spread) <= 1e-2 * spread[0]) and spread[-1] > 0  # strongest first
    info = model.info["style"]
    assert info["blocks"] == [10, 15] and info["features"] == 2 * (112 + 320)
    assert info["items"] == 23 and info["unreadable"] == 1 and info["dims"] == 8
    assert any("1 of 24 catalogue photos could not be read" in line for line in logged)
    # The MLP reads the style: its first layer has a row per style column and the flag.
    width = len(model.emb_mean) + 7 + len(model.categories) + len(model.attr_vocab)
    assert model.w1.shape[0] == width + 9
    assert np.abs(model.w1[-9:]).sum() > 0


@pytest.mark.slow
def test_style_rows_are_looked_up_by_id_and_unknown_ids_have_none(
    trained: tuple[Path, CompatModel, list[str]],
) -> None:
    path, model, _ = trained
    art = Artifact.load(path)
    ids = ["shirt-1-0", "sandals-3-1", "shirt-2-1"]
    vectors = np.stack([art.embeddings[art.positions[i]] for i in ids])
    vectors[2] = vectors[2] + 0.01  # another photo under the same id: another embedding
    rows = model.style_of([*ids, "not-an-item"], np.vstack([vectors, vectors[:1]]))
    at = model.style_ids.tolist().index("shirt-1-0")
    assert np.array_equal(rows[0, :-1], model.style_rows[at]) and rows[0, -1] == 1.0
    # The unreadable photo, the changed photo and an unknown id: zeros, flag 0.
    assert not rows[1:].any()


@pytest.mark.slow
def test_a_model_with_style_round_trips_and_a_model_without_loads_as_before(
    trained: tuple[Path, CompatModel, list[str]], tmp_path: Path
) -> None:
    _, model, _ = trained
    loaded = CompatModel.load(model.save(tmp_path / "compat.npz"))
    assert np.array_equal(loaded.style_ids, model.style_ids)
    assert np.array_equal(loaded.style_rows, model.style_rows)
    assert np.array_equal(loaded.style_checks, model.style_checks)
    with np.load(tmp_path / "compat.npz") as data:
        old = {k: data[k] for k in data.files if not k.startswith("style_")}
    old["w1"] = old["w1"][: -model.style_width]
    with (tmp_path / "old.npz").open("wb") as handle:
        np.savez(handle, **old)
    assert CompatModel.load(tmp_path / "old.npz").style_width == 0
    bad = dict(
        old,
        style_ids=model.style_ids[:3],
        style_rows=model.style_rows,
        style_checks=model.style_checks,
    )
    with (tmp_path / "bad.npz").open("wb") as handle:
        np.savez(handle, **bad)
    with pytest.raises(ValueError):
        CompatModel.load(tmp_path / "bad.npz")


@pytest.mark.slow
def test_inputs_without_style_are_the_zero_row_and_a_zero_flag(
    trained: tuple[Path, CompatModel, list[str]],
) -> None:
    _, model, _ = trained
    art = Artifact.load(trained[0])
    from stygig.training.compat import artifact_features

    feats = artifact_features(art, model.categories)
    no_style = model.inputs(feats)
    style = model.style_of([i.id for i in art.items], art.embeddings)
    with_style = model.inputs(
        ItemFeatures(feats.embeddings, feats.colour, feats.category, None, style)
    )
    assert not no_style[:, -model.style_width :].any()
    assert np.array_equal(no_style[:, : -model.style_width], with_style[:, : -model.style_width])
    assert with_style[:, -1].sum() == 23.0


@pytest.mark.slow
def test_photos_and_catalogue_items_are_recommended_with_a_style_model(
    trained: tuple[Path, CompatModel, list[str]],
) -> None:
    path, _, _ = trained
    rec = Recommender(
        Artifact.load(path), config=ScoringConfig.from_dict({"compat_mode": "learned"})
    )
    by_item = rec.recommend(Query(item_ids=("shirt-1-0",)), Options(k=2)).to_dict()
    assert by_item["items"] and all(isinstance(i["learned"], float) for i in by_item["items"])
    photo = Path(Artifact.load(path).items[0].image).read_bytes()
    by_photo = rec.recommend(Query(images=(photo,)), Options(k=2)).to_dict()
    assert by_photo["items"] and all(isinstance(i["learned"], float) for i in by_photo["items"])


@pytest.mark.slow
def test_the_catalogue_items_style_changes_their_learned_scores(
    trained: tuple[Path, CompatModel, list[str]],
) -> None:
    """Serving reads the trained table: scores differ from the same model without it."""
    from dataclasses import replace

    from stygig.compat.scorer import LearnedScorer

    path, model, _ = trained
    art = Artifact.load(path)
    ids = [i.id for i in art.items]
    names = sorted({i.category for i in art.items})
    codes = np.array([names.index(i.category) for i in art.items], np.int64)
    rgb = np.array([c["rgb"] for c in art.colors], np.float32)
    args = (np.asarray(art.embeddings), rgb, names, codes, ids, "learned")
    scorer = LearnedScorer(model, *args)
    blind = LearnedScorer(
        replace(model, style_ids=np.array(["none"]), style_rows=model.style_rows[:1]), *args
    )
    cand = np.arange(len(ids))
    rules = np.zeros(len(ids))
    seen = scorer.score(scorer.rows_view(np.array([0])), cand, rules)[1]
    unseen = blind.score(blind.rows_view(np.array([0])), cand, rules)[1]
    assert not np.allclose(seen, unseen)


def test_reduce_style_standardises_and_keeps_the_leading_components() -> None:
    from stygig.training.style import reduce_style

    rng = np.random.default_rng(0)
    raw = rng.normal(size=(50, 6)) @ rng.normal(size=(6, 20)) * rng.uniform(1, 9, 20) + 10.0
    out = reduce_style(raw, 4)
    assert out.shape == (50, 4) and np.allclose(out.mean(axis=0), 0.0, atol=1e-4)
    assert np.all(np.diff(out.std(axis=0)) < 0)  # the strongest components first
    # A rotation of the standardised features: all components keep every row's length.
    z = (raw - raw.mean(axis=0)) / raw.std(axis=0)
    full = reduce_style(raw, 64)
    assert full.shape == (50, 6)  # the rows vary along 6 directions only
    assert np.allclose(np.linalg.norm(full, axis=1), np.linalg.norm(z, axis=1), rtol=1e-4)
    assert np.array_equal(out, reduce_style(raw.copy(), 4))  # deterministic, signs included
    assert reduce_style(raw[:3], 64).shape == (3, 2)  # at most n - 1 components
    assert reduce_style(raw[:1], 4).shape == (1, 0)
    assert reduce_style(np.repeat(raw[:3], 4, axis=0), 64).shape == (12, 2)  # repeated rows


def test_measure_style_marks_unreadable_photos(tmp_path: Path) -> None:
    from stygig.training.style import measure_style

    good = _photo(tmp_path / "good.jpg", 1, 0)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    raw, readable = measure_style(
        [good, corrupt, tmp_path / "absent.jpg"], progress=False, log=lambda _: None
    )
    assert readable.tolist() == [True, False, False]
    assert raw.shape == (3, 864) and raw[0].any() and not raw[1:].any()


@pytest.mark.parametrize("value", ["-1", "x", "1.5"])
def test_train_compat_refuses_a_style_dims_that_is_not_a_count(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from stygig.training.command import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(
            ["train-compat", "--outfits", "o.csv", "--artifact", "a", "--style-dims", value]
        )
    assert exit_info.value.code == 2
    assert "--style-dims" in capsys.readouterr().err


@pytest.mark.slow
def test_style_dims_0_trains_without_reading_a_photo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stygig.training import style
    from stygig.training.compat import TrainConfig, train_compat

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("a photo was read")

    monkeypatch.setattr(style, "measure_style", refuse)
    path, outfits = _artifact(tmp_path)
    cfg = TrainConfig(epochs=1, style_dims=0)
    result = train_compat(Artifact.load(path), outfits, cfg, progress=False, log=lambda _: None)
    assert result.model.style_width == 0 and result.model.info["style"] == {}


@pytest.mark.slow
def test_retraining_keeps_the_style_rows_while_the_photos_are_unchanged(
    trained: tuple[Path, CompatModel, list[str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from stygig.training import style
    from stygig.training.compat import TrainConfig, _kept_style, train_compat

    measured: list[int] = []
    real = style.measure_style

    def counted(*args: object, **kwargs: object) -> object:
        measured.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(style, "measure_style", counted)
    path, outfits = _artifact(tmp_path)  # every photo readable
    cfg = TrainConfig(epochs=1, style_dims=8)
    first = train_compat(Artifact.load(path), outfits, cfg, progress=False, log=lambda _: None)
    add_compat_model(path, first.model, {"note": "style"})
    assert measured == [1]
    art = Artifact.load(path)
    logged: list[str] = []
    again = train_compat(art, outfits, cfg, progress=False, log=logged.append)
    assert measured == [1]  # no photo read: the rows are the current model's
    assert np.array_equal(again.model.style_rows, first.model.style_rows)
    assert np.array_equal(again.model.style_ids, first.model.style_ids)
    assert again.model.info["style"] == first.model.info["style"]
    assert any("24 rows, every item's embedding unchanged" in line for line in logged)
    # Another width, one photo changed (its embedding row), or an item gone: measured again.
    rows = np.asarray(art.embeddings, np.float32)
    assert _kept_style(art, rows, TrainConfig(style_dims=4)) is None
    changed = rows.copy()
    changed[art.positions["shirt-2-1"]] += 0.01
    assert _kept_style(art, changed, TrainConfig(style_dims=8)) is None
    assert _kept_style(art, rows, cfg) is not None
    fewer = dataclasses.replace(art, items=art.items[1:])
    assert _kept_style(fewer, rows[1:], cfg) is None
    # A model that found a photo unreadable is never reused: the photo may be readable now
    # (review, session 43: a mended photo stayed without style and every row was stale).
    kaggle_path, model, _ = trained
    assert model.info["style"]["unreadable"] == 1
    held = Artifact.load(kaggle_path)
    assert _kept_style(held, np.asarray(held.embeddings, np.float32), cfg) is None

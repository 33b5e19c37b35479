"""A photo unlike anything in the catalogue is said to be (stygig.familiarity)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stygig.artifact import Artifact
from stygig.engine import Recommender
from stygig.familiarity import likeness_rows, nearest_profile, unlike_threshold
from stygig.recommendation import Query
from stygig.whitening import Whitening
from tests.conftest import encode


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_the_profile_is_each_row_s_nearest_other_row() -> None:
    rng = np.random.default_rng(3)
    vectors = _unit(rng.normal(size=(300, 16)))
    vectors[7] = vectors[8]  # the same photo under two ids: not each other's nearest
    profile = nearest_profile(vectors)
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    sims[7, 8] = sims[8, 7] = -np.inf
    nearest = sims.max(axis=1)
    assert profile is not None and profile["sample"] == profile["among"] == 300
    for key, q in (("p01", 1), ("p05", 5), ("p50", 50)):
        assert profile[key] == pytest.approx(float(np.percentile(nearest, q)), abs=1e-4)
    assert nearest_profile(vectors[:49]) is None  # too few items to say how alike they are


def test_a_catalogue_listing_each_photo_twice_still_marks_only_odd_photos() -> None:
    rng = np.random.default_rng(4)
    photos = _unit(rng.normal(size=(200, 16)))
    sizes = np.repeat(photos, 3, axis=0)  # every photo under three SKUs (S, M, L)
    once, thrice = nearest_profile(photos), nearest_profile(sizes)
    assert once is not None and thrice is not None
    assert thrice["p01"] == pytest.approx(once["p01"], abs=0.02)
    assert thrice["p50"] == pytest.approx(once["p50"], abs=0.02)
    threshold = unlike_threshold(thrice)
    assert threshold is not None and threshold < 0.9  # before: 1.0, every photo marked
    # Every row the same photo: no "other item" at all, so no profile.
    assert nearest_profile(np.repeat(photos[:1], 60, axis=0)) is None


def test_a_nan_row_does_not_turn_the_profile_off() -> None:
    vectors = _unit(np.random.default_rng(5).normal(size=(120, 8)))
    vectors[3] = np.nan
    profile = nearest_profile(vectors)
    assert profile is not None and np.isfinite(profile["p01"])


def test_a_large_catalogue_is_sampled_within_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    import stygig.familiarity as familiarity

    monkeypatch.setattr(familiarity, "SAMPLE", 50)
    monkeypatch.setattr(familiarity, "REFERENCE", 400)
    monkeypatch.setattr(familiarity, "_CHUNK", 128)  # several blocks
    vectors = _unit(np.random.default_rng(0).normal(size=(1000, 8)))
    profile = nearest_profile(vectors)
    assert profile is not None and (profile["sample"], profile["among"]) == (50, 400)
    # Among fewer rows the nearest is no nearer: the profile errs low, never high.
    whole = vectors @ vectors.T
    np.fill_diagonal(whole, -np.inf)
    assert profile["p50"] <= float(np.percentile(whole.max(axis=1), 50)) + 1e-6


def test_likeness_undoes_the_whitening_s_scale() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 12)) * np.linspace(5.0, 0.1, 12)  # a few strong directions
    white = Whitening.fit(x.astype(np.float32))
    rows = white.apply(x[:20].astype(np.float32))
    centred = (x[:20] - white.mean) @ white.projection  # rotated, not rescaled
    expected = centred / np.linalg.norm(centred, axis=1, keepdims=True)
    np.testing.assert_allclose(likeness_rows(rows, white.scale), expected, atol=1e-5)
    # Without whitening the rows are compared as they are.
    np.testing.assert_allclose(likeness_rows(rows, None), rows, atol=1e-6)
    profile = nearest_profile(white.apply(x.astype(np.float32)), white.scale)
    assert profile is not None and profile["space"] == "unwhitened"


@pytest.mark.parametrize(
    "profile",
    [
        None,
        {},
        {"p01": "x", "p50": 0.8},
        {"p01": float("nan"), "p50": 0.8},
        {"p01": 10**400, "p50": 0.8},  # json reads it as an int no float holds
        [0.6, 0.8],
    ],
)
def test_a_missing_or_broken_profile_marks_nothing(profile: object) -> None:
    assert unlike_threshold(profile) is None


def test_the_threshold_lies_below_the_catalogue_s_own_spread() -> None:
    assert unlike_threshold({"p01": 0.6, "p50": 0.8}) == pytest.approx(0.5)


def test_a_photo_unlike_the_catalogue_is_marked_and_still_answered(
    sample: tuple[Path, Path], tmp_path: Path
) -> None:
    artifact = sample[1]
    art = Artifact.load(artifact)
    profile = art.manifest["nearest_similarity"]
    assert profile["sample"] == profile["among"] == len(art.items)
    assert profile["space"] == ("unwhitened" if art.whitening is not None else "plain")
    assert 0.0 < profile["p01"] <= profile["p05"] <= profile["p50"] <= 1.0
    rec = Recommender(art)
    noise = np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    odd = rec.recommend(Query(images=(encode(Image.fromarray(noise), "PNG"),)))
    assert odd.query[0].unlike_catalogue is True
    assert odd.items  # the answer is still given, marked
    own = art.items[0].image  # a catalogue item's own photo is as like it as can be
    plain = rec.recommend(Query(images=(Path(own).read_bytes(),)))
    assert plain.query[0].unlike_catalogue is False
    assert plain.query[0].likeness == pytest.approx(1.0, abs=1e-3)
    assert odd.query[0].likeness is not None and odd.query[0].likeness < profile["p01"]
    # The same photo with catalogue items beside it: the same likeness (its own nearest item
    # among them is still the catalogue's).
    nearest = plain.query[0].neighbors[0].id
    beside = rec.recommend(Query(images=(Path(own).read_bytes(),), item_ids=(nearest,)))
    assert beside.query[0].likeness == plain.query[0].likeness
    item = rec.recommend(Query(item_ids=(art.items[0].id,))).query[0]
    assert item.unlike_catalogue is None and item.likeness is None
    body = json.loads(odd.to_json())
    assert body["query"][0]["unlike_catalogue"] is True

    # An artifact written before the profile: nothing is marked.
    old = tmp_path / "old"
    shutil.copytree(artifact, old)
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["nearest_similarity"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    again = Recommender(Artifact.load(old)).recommend(
        Query(images=(encode(Image.fromarray(noise), "PNG"),))
    )
    assert again.query[0].unlike_catalogue is None

"""The stacked gender decision: fitted at build time beside the category head, stored in its
file with a checksum, deciding a photo's gender in the engine (unless ``use_category_head`` is
off), skipped with a reason on a catalogue without enough men's and women's items."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from stygig.answer import GenderDecision
from stygig.artifact import Artifact, file_sha256, read_manifest
from stygig.category_head import (
    GENDER_MIN_ITEMS,
    GENDER_PAIR,
    HEAD_FILE,
    CategoryHead,
    GenderHead,
    add_category_head,
    fit_artifact_heads,
    gender_stack_features,
    load_heads,
    save_heads,
)
from stygig.engine import Options, Query, Recommender
from stygig.errors import ArtifactError
from stygig.gender import StackedGender, decide_gender

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _gendered(n: int = 300, d: int = 16, seed: int = 0) -> tuple[np.ndarray, list[str | None]]:
    """Men's and women's items told apart by one direction, drowned for the neighbours by
    noise in the others (the probe reads it, a 10-neighbour vote mostly does not), and a few
    unisex ones."""
    rng = np.random.default_rng(seed)
    sign = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    x = rng.standard_normal((n, d))
    x[:, 0] = 0.6 * sign + 0.25 * rng.standard_normal(n)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    genders: list[str | None] = ["men" if s > 0 else "women" for s in sign]
    for i in range(0, n, 15):
        genders[i] = "unisex"
    return x.astype(np.float32), genders


def test_the_stack_is_fitted_on_the_catalogue_and_round_trips(tmp_path: Path) -> None:
    x, genders = _gendered()
    heads, info = fit_artifact_heads(
        x, {}, k={}, genders=genders, gender_k=10, gender_min_confidence=0.8
    )
    report = info["fields"]["gender"]
    assert "skipped" not in report, report
    head = heads["gender"]
    assert isinstance(head, GenderHead) and head.stacker is not None
    assert head.labels == GENDER_PAIR and head.k == 10 and 0.5 <= head.gate <= 1.0
    # The gate keeps the vote's catalogue error and is confident more often.
    assert report["stacked"]["confidently_wrong"] <= report["vote"]["confidently_wrong"]
    assert report["stacked"]["confident"] > report["vote"]["confident"]
    assert report["men"] + report["women"] == sum(g in GENDER_PAIR for g in genders)
    assert head.describe()["stack"]["gate"] == head.gate
    loaded = load_heads(save_heads(heads, tmp_path / HEAD_FILE))["gender"]
    assert isinstance(loaded, GenderHead) and loaded.stacker is not None
    assert loaded.gate == head.gate and loaded.k == head.k
    np.testing.assert_array_equal(loaded.stacker.weights, head.stacker.weights)
    features = gender_stack_features(
        np.array([[0.0, 2.0]]), np.array([2.5]), np.array([0.9]), np.array([[0.2, 0.8]])
    )
    assert features.shape == (1, 8)
    np.testing.assert_allclose(
        loaded.stacker.predict_proba(features), head.stacker.predict_proba(features)
    )


def test_too_few_gendered_items_skip_the_stack_with_a_reason() -> None:
    x, genders = _gendered(n=2 * GENDER_MIN_ITEMS - 2)  # GENDER_MIN_ITEMS - 1 of each
    heads, info = fit_artifact_heads(x, {}, k={}, genders=genders)
    assert "gender" not in heads
    assert f"it needs {GENDER_MIN_ITEMS} items each" in info["fields"]["gender"]["skipped"]
    heads, info = fit_artifact_heads(x[:1], {}, k={}, genders=genders[:1])  # one item
    assert heads == {} and "skipped" in info["fields"]["gender"]


def test_the_sample_build_records_why_it_has_no_stack(sample: tuple[Path, Path]) -> None:
    fields = read_manifest(sample[1])["build"]["category_head"]["fields"]
    assert f"it needs {GENDER_MIN_ITEMS} items each" in fields["gender"]["skipped"]
    assert "gender" not in Artifact.load(sample[1]).heads


def _stack_head(art: Artifact, p_women: float, gate: float) -> GenderHead:
    """A stack over the stored vectors whose stacker always says ``p_women``."""
    d, zeros = art.embeddings.shape[1], np.zeros(2, np.float32)
    probe = CategoryHead(
        field="gender",
        labels=GENDER_PAIR,
        mean=np.zeros(d, np.float32),
        scale=np.ones(d, np.float32),
        weights=np.zeros((d, 2), np.float32),
        bias=zeros,
        l2=0.0,
        iterations=1,
        n_fit=len(art.items),
    )
    logit = float(np.log(p_women / (1 - p_women)))
    stacker = CategoryHead(
        field="gender_stack",
        labels=GENDER_PAIR,
        mean=np.zeros(8, np.float32),
        scale=np.ones(8, np.float32),
        weights=np.zeros((8, 2), np.float32),
        bias=np.array([0.0, logit], np.float32),
        l2=0.0,
        iterations=1,
        n_fit=len(art.items),
    )
    return GenderHead(**probe.__dict__, stacker=stacker, gate=gate, k=10)


def _with_stack(sample: tuple[Path, Path], tmp_path: Path, p_women: float, gate: float) -> Path:
    art = tmp_path / "artifact"
    shutil.copytree(sample[1], art)
    loaded = Artifact.load(art)
    add_category_head(art, {**loaded.heads, "gender": _stack_head(loaded, p_women, gate)})
    return art


def test_the_stack_decides_the_photos_gender(sample: tuple[Path, Path], tmp_path: Path) -> None:
    photo = (sample[0] / "queries" / "blue-jeans.jpg").read_bytes()
    art = _with_stack(sample, tmp_path, p_women=0.95, gate=0.9)
    manifest = read_manifest(art)
    assert manifest["files"][HEAD_FILE]["sha256"] == file_sha256(art / HEAD_FILE)
    assert manifest["category_head"]["heads"]["gender"]["stack"]["gate"] == 0.9
    rec = Recommender.from_path(art)
    answer = rec.recommend(Query(images=(photo,)), Options(mode="outfit"))
    assert answer.gender.source == "photo" and answer.gender.value == "women"
    assert answer.gender.confidence == 0.95 and not answer.gender.hedged
    assert answer.query[0].gender == "women"
    assert all(i.gender in ("women", "unisex", None) for i in answer.items)
    assert answer.to_dict()["gender"]["confidence"] == 0.95
    # Off: today's vote, exactly as the artifact without the stack answers.
    plain = Recommender(replace(Artifact.load(sample[1]), heads={}))
    today = plain.recommend(Query(images=(photo,)), Options(mode="outfit"))
    off = rec.recommend(Query(images=(photo,)), Options(mode="outfit", use_category_head=False))
    assert off.gender == today.gender
    assert [i.id for i in off.items] == [i.id for i in today.items]
    # A stated gender and a catalogue item still win.
    stated = rec.recommend(Query(images=(photo,)), Options(gender="men"))
    assert stated.gender.source == "stated" and stated.gender.value == "men"
    item = next(i for i in rec.artifact.items if i.gender == "men")
    by_item = rec.recommend(Query(item_ids=(item.id,)))
    assert by_item.gender.source == "item" and by_item.gender.value == "men"


def test_below_its_gate_the_stack_hedges(sample: tuple[Path, Path], tmp_path: Path) -> None:
    photo = (sample[0] / "queries" / "blue-jeans.jpg").read_bytes()
    rec = Recommender.from_path(_with_stack(sample, tmp_path, p_women=0.3, gate=0.9))
    answer = rec.recommend(Query(images=(photo,)), Options(mode="outfit"))
    gender = answer.gender
    assert gender.source == "uncertain" and gender.hedged and gender.value is None
    assert gender.guess == "men" and gender.confidence == 0.7
    assert all(i.gender in ("unisex", None) for i in answer.items)


def test_decide_gender_leaves_unmodelled_photos_to_the_vote() -> None:
    names = ["boys", "men", "unisex", "women"]
    votes = [{0: 3.0, 1: 0.5}]  # the vote: boys, 86 %

    def decide(stated: str | None, stack: StackedGender) -> GenderDecision:
        return decide_gender(
            stated=stated,
            item_genders=[],
            photo_votes=votes,
            names=names,
            min_confidence=0.8,
            mode="outfit",
            can_hedge=True,
            stacked=stack,
        )

    stack = StackedGender(GENDER_PAIR, 0.9, [None])  # a boys' neighbour: not modelled
    decision = decide(None, stack)
    assert decision.value == "boys" and decision.confidence == 0.857
    both = StackedGender(GENDER_PAIR, 0.9, [0.99, 0.93])  # two photos: the mean, 0.96
    decision = decide(None, both)
    assert decision.value == "women" and decision.source == "photo" and decision.confidence == 0.96
    stated = decide("Men", both)
    assert stated.value == "men" and stated.source == "stated"


def test_a_tampered_or_inconsistent_stack_is_refused(
    sample: tuple[Path, Path], tmp_path: Path
) -> None:
    art = _with_stack(sample, tmp_path, p_women=0.95, gate=0.9)
    data = bytearray((art / HEAD_FILE).read_bytes())
    data[len(data) // 3] ^= 0xFF
    (art / HEAD_FILE).write_bytes(bytes(data))
    with pytest.raises(ArtifactError) as caught:
        Artifact.load(art)
    assert caught.value.code == "artifact_checksum_mismatch"
    head = _stack_head(Artifact.load(sample[1]), 0.95, 0.9)
    path = save_heads({"gender": replace(head, gate=1.5)}, tmp_path / "bad.npz")
    with pytest.raises(ArtifactError, match="cannot read category head file"):
        load_heads(path)


def test_the_stack_is_fitted_only_where_it_will_decide() -> None:
    """Photos with a kids' item among their neighbours are left to the vote when served, so
    the stacker and its gate are fitted on the other rows only."""
    x, genders = _gendered(n=400, seed=3)
    for i in range(1, 400, 20):
        genders[i] = "boys"
    heads, info = fit_artifact_heads(
        x, {}, k={}, genders=genders, gender_k=10, gender_min_confidence=0.8
    )
    report = info["fields"]["gender"]
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    nearest = np.argsort(-sims, axis=1, kind="stable")[:, :10]
    boys = np.array([g == "boys" for g in genders])
    expected = int((~boys[nearest].any(axis=1)).sum())
    assert 0 < expected < len(x)  # both kinds of rows are there
    assert report["served_rows"] == expected
    assert "gender" in heads, report  # enough rows remain: the stack is fitted on them


def test_a_catalogue_mostly_of_kids_neighbours_skips_the_stack() -> None:
    """Enough men's and women's items overall, but too few photos the stack would decide: the
    build skips it with the reason instead of fitting a gate on a handful of rows."""
    x, genders = _gendered(n=400, seed=3)
    for i in range(1, 400, 3):
        genders[i] = "boys" if i % 2 else "girls"
    heads, info = fit_artifact_heads(
        x, {}, k={}, genders=genders, gender_k=30, gender_min_confidence=0.8
    )
    report = info["fields"]["gender"]
    assert "gender" not in heads
    assert report["served_rows"] < 2 * GENDER_MIN_ITEMS
    assert "where the stack would decide" in report["skipped"]


def test_fit_and_engine_share_the_unmodelled_rule() -> None:
    from stygig.category_head import unmodelled_gender

    assert [unmodelled_gender(g) for g in ("men", "women", "unisex", None)] == [False] * 4
    assert unmodelled_gender("boys") and unmodelled_gender("girls")

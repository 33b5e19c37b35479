"""The category head: fit, predict, merge with the vote, storage, and no leakage in evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stygig.category_head import (
    HEAD_FILE,
    CategoryHead,
    add_category_head,
    cross_fit,
    fold_of,
    load_artifact_heads,
    load_heads,
    merge_votes,
    neighbour_votes,
    save_heads,
    unwhiten,
)
from stygig.errors import ArtifactError, InvalidOptionsError, StygigError
from stygig.evaluation.category import head_accuracy
from stygig.evaluation.split import Split
from stygig.scoring import vote
from stygig.whitening import Whitening


def _blobs(n_per: int = 40, classes: int = 3, d: int = 16, seed: int = 0, spread: float = 0.6):
    """Unit vectors around ``classes`` random centres, labelled ``c0``, ``c1``, ..."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, d))
    x = np.concatenate([c + spread * rng.standard_normal((n_per, d)) for c in centres])
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    labels = [f"c{c}" for c in range(classes) for _ in range(n_per)]
    return x, labels


def test_fit_learns_separable_classes_and_probabilities_sum_to_one():
    x, labels = _blobs()
    head = CategoryHead.fit(x, labels, iterations=200)
    proba = head.predict_proba(x)
    assert proba.shape == (len(x), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert np.mean(np.array(head.predict(x)) == np.array(labels)) > 0.95
    assert head.labels == ("c0", "c1", "c2")
    assert head.describe()["n_fit"] == len(x)


def test_fit_is_deterministic_and_skips_unlabelled_rows():
    x, labels = _blobs()
    a = CategoryHead.fit(x, labels, iterations=50)
    b = CategoryHead.fit(x, labels, iterations=50)
    np.testing.assert_array_equal(a.weights, b.weights)
    with_gaps = [None if i % 7 == 0 else v for i, v in enumerate(labels)]
    head = CategoryHead.fit(x, with_gaps, iterations=50)
    assert head.n_fit == sum(v is not None for v in with_gaps)


def test_bad_input_is_a_stygig_error():
    x, labels = _blobs()
    with pytest.raises(InvalidOptionsError):
        CategoryHead.fit(x, labels[:-1])
    with pytest.raises(InvalidOptionsError):
        CategoryHead.fit(x, ["only"] * len(x))
    head = CategoryHead.fit(x, labels, iterations=5)
    with pytest.raises(StygigError, match="16-d"):
        head.predict_proba(np.zeros((1, 8), np.float32))


def test_proba_for_reindexes_to_other_names():
    x, labels = _blobs()
    head = CategoryHead.fit(x, labels, iterations=100)
    names = ["c2", "unknown", "c0", "c1"]
    out = head.proba_for(x[:5], names)
    ref = head.predict_proba(x[:5])
    np.testing.assert_allclose(out[:, 0], ref[:, 2])
    np.testing.assert_array_equal(out[:, 1], 0.0)
    np.testing.assert_allclose(out[:, 2], ref[:, 0])


def test_merge_vote_weights():
    proba = np.array([[0.1, 0.8, 0.1]])
    labels, sims = np.array([[0, 0, 0, 2, 2]]), np.linspace(0.9, 0.5, 5)[None]

    def merged(w: float) -> int:
        return int(merge_votes(proba, labels, sims, w)[0])

    assert merged(0.0) == 0  # the plain vote
    assert merged(1.0) == 1  # the head alone
    # 0.5 * 0.8 = 0.40 for class 1 against 0.5 * (0.1 + 0.6) = 0.35 for class 0
    assert merged(0.5) == 1
    assert merged(0.3) == 0
    assert merge_votes(np.zeros((1, 3)), np.full((1, 5), -1), sims, 0.0)[0] == -1
    with pytest.raises(InvalidOptionsError):
        merged(1.5)


def _todays_merge(proba, labels, sims, k, w):  # type: ignore[no-untyped-def]
    """The merge as the engine made it before the vote was searched (the reference)."""
    v = vote(labels[:k], sims[:k])
    score = w * np.asarray(proba, np.float64)
    for code, n in v.counts.items():
        score[code] += (1.0 - w) * n / k
    if (w == 0.0 and not v.counts) or (w == 1.0 and not proba.any()):
        return -1
    tied = np.flatnonzero(np.isclose(score, score.max(), rtol=0.0, atol=1e-9))
    if len(tied) > 1 and v.similarity:
        s = np.array([v.similarity.get(int(c), float("-inf")) for c in tied])
        tied = tied[s == s.max()]
    return int(tied[0])


@pytest.mark.slow
def test_plain_five_vote_merge_is_todays_merge():
    """k 5 at temperature 0 decides exactly as before, ties (equal counts, equal similarities,
    scores a float-rounding apart) included."""
    rng = np.random.default_rng(5)
    labels = rng.integers(-1, 4, size=(3000, 20))
    sims = np.round(np.sort(rng.random((3000, 20)), axis=1)[:, ::-1], 1)  # many equal sums
    proba = rng.integers(0, 5, size=(3000, 4)) / 10.0
    for w in (0.0, 0.1, 0.3, 0.4, 0.5, 0.7, 1.0):
        merged = merge_votes(proba, labels, sims, w, k=5, temperature=0.0)
        expected = [
            _todays_merge(p, lab, s, 5, w) for p, lab, s in zip(proba, labels, sims, strict=True)
        ]
        np.testing.assert_array_equal(merged, expected)


def test_weighted_shares():
    labels = np.array([[1, 0, 0, -1]])
    sims = np.array([[0.9, 0.8, 0.8, 0.7]])
    plain = neighbour_votes(labels, sims, 2, k=4)
    np.testing.assert_allclose(plain.shares(), [[0.5, 0.25]])  # an unlabelled one abstains
    hot = neighbour_votes(labels, sims, 2, k=4, temperature=0.1)
    w = np.exp(-1.0)
    total = 1 + 2 * w + np.exp(-2.0)
    np.testing.assert_allclose(hot.shares(), [[2 * w / total, 1 / total]])
    np.testing.assert_array_equal(hot.counts, [[2, 1]])
    # a nearer single neighbour outweighs two farther ones when the temperature is low
    assert merge_votes(np.zeros((1, 2)), labels, sims, 0.0, k=4, temperature=0.02)[0] == 1
    assert merge_votes(np.zeros((1, 2)), labels, sims, 0.0, k=4, temperature=0.0)[0] == 0


def test_merge_at_weight_zero_is_the_engine_vote():
    rng = np.random.default_rng(3)
    labels = rng.integers(-1, 4, size=(200, 5))
    sims = np.sort(rng.random((200, 5)), axis=1)[:, ::-1]
    proba = rng.random((200, 4))
    merged = merge_votes(proba, labels, sims, 0.0)
    expected = [vote(lab, s).winner for lab, s in zip(labels, sims, strict=True)]
    np.testing.assert_array_equal(merged, expected)


def test_save_load_round_trip(tmp_path: Path):
    x, labels = _blobs()
    sub = CategoryHead.fit(x, labels, field="subCategory", iterations=20).with_weight(0.4)
    heads = {"category": CategoryHead.fit(x, labels, iterations=20), "subCategory": sub}
    path = save_heads(heads, tmp_path / HEAD_FILE)
    loaded = load_heads(path)
    assert set(loaded) == {"category", "subCategory"}
    assert loaded["subCategory"].head_weight == 0.4
    assert (loaded["category"].vote_k, loaded["category"].temperature) == (5, 0.0)
    np.testing.assert_array_equal(loaded["category"].weights, heads["category"].weights)
    np.testing.assert_allclose(
        loaded["category"].predict_proba(x), heads["category"].predict_proba(x)
    )
    with np.load(path, allow_pickle=False) as data:  # plain arrays only
        assert all(data[k].dtype != object for k in data.files)


def test_vote_settings_round_trip_and_old_files_load_as_the_plain_vote(tmp_path: Path):
    x, labels = _blobs()
    head = CategoryHead.fit(x, labels, iterations=5, vote_k=20, temperature=0.05)
    loaded = load_heads(save_heads({"category": head}, tmp_path / HEAD_FILE))["category"]
    assert (loaded.vote_k, loaded.temperature) == (20, 0.05)
    assert loaded.describe()["vote_k"] == 20 and loaded.describe()["temperature"] == 0.05
    # a file written before the vote was searched has neither key
    old = tmp_path / "old.npz"
    with np.load(tmp_path / HEAD_FILE, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    meta = json.loads(bytes(arrays["meta"]).decode())
    for entry in meta:
        del entry["vote_k"], entry["temperature"]
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(old, **arrays)
    legacy = load_heads(old)["category"]
    # 0: the engine's configured vote_k, the plain vote its weight was cross-fitted against
    assert (legacy.vote_k, legacy.temperature) == (0, 0.0)
    np.testing.assert_array_equal(legacy.weights, head.weights)


@pytest.mark.parametrize(
    "vote_k, temperature", [(-1, 0.0), (65, 0.0), (5, -0.1), (5, 1.5), (5, 1e-9), (5.5, 0.0)]
)
def test_vote_settings_out_of_bounds_are_refused(tmp_path: Path, vote_k, temperature):  # type: ignore[no-untyped-def]
    x, labels = _blobs()
    with pytest.raises(InvalidOptionsError, match="vote_k"):
        CategoryHead.fit(x, labels, iterations=5, vote_k=vote_k, temperature=temperature)
    head = CategoryHead.fit(x, labels, iterations=5)
    path = save_heads({"category": head}, tmp_path / HEAD_FILE)
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    meta = json.loads(bytes(arrays["meta"]).decode())
    meta[0].update(vote_k=vote_k, temperature=temperature)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(path, **arrays)
    with pytest.raises(ArtifactError):
        load_heads(path)


def test_load_refuses_a_bad_file_without_quoting_it(tmp_path: Path):
    bad = tmp_path / HEAD_FILE
    bad.write_bytes(b"secret-contents-not-an-npz")
    with pytest.raises(ArtifactError) as err:
        load_heads(bad)
    assert "secret" not in str(err.value) and str(tmp_path) not in str(err.value)


def test_whitened_vectors_are_unwhitened_for_the_head():
    x, labels = _blobs(n_per=60, d=8)
    w = Whitening.fit(x)
    stored = w.apply(x)
    centred = x - w.mean
    np.testing.assert_allclose(
        unwhiten(stored, w), centred / np.linalg.norm(centred, axis=1, keepdims=True), atol=1e-4
    )
    head = CategoryHead.fit(stored, labels, whitening=w, iterations=50)
    assert head.input == "unwhitened"
    with pytest.raises(InvalidOptionsError, match="whitening"):
        head.predict_proba(stored)
    assert head.predict_proba(stored, w).shape == (len(x), 3)


def test_cross_fit_chooses_a_weight_out_of_fold():
    x, labels = _blobs(n_per=30, spread=1.0)
    head, fit = cross_fit(x, labels, folds=3, iterations=60)
    assert fit.folds == 3 and 0.0 <= head.head_weight <= 1.0
    assert head.head_weight == fit.head_weight
    assert {r["head_weight"] for r in fit.grid} >= {0.0, 1.0}
    assert set(fit.accuracy) == {"vote", "vote_weighted", "head", "merged"}
    assert fit.accuracy["merged"] >= max(fit.accuracy["vote"], fit.accuracy["head"]) - 1e-9
    assert (head.vote_k, head.temperature) == (fit.vote_k, fit.temperature) == (5, 0.0)
    folds = fold_of(90, 3)
    assert sorted(np.bincount(folds).tolist()) == [30, 30, 30]


def test_cross_fit_searches_the_vote_and_keeps_the_plain_one_on_ties():
    x, labels = _blobs(n_per=30, spread=1.0)
    grids = {"vote_ks": (5, 7, 10, 15, 20), "temperatures": (0.0, 0.02, 0.05, 0.1, 0.2)}
    head, fit = cross_fit(x, labels, folds=3, iterations=60, **grids)  # type: ignore[arg-type]
    assert len(fit.vote_grid) == 25 and (head.vote_k, head.temperature) == (
        fit.vote_k,
        fit.temperature,
    )
    best = max(r["accuracy"] for r in fit.vote_grid)
    assert fit.accuracy["merged"] == best >= fit.accuracy["vote"]
    # the choice is the fewest neighbours, then the lowest temperature, among the best
    first = min((r["k"], r["temperature"]) for r in fit.vote_grid if r["accuracy"] == best)
    assert (fit.vote_k, fit.temperature) == first
    # separable classes: every vote is perfect, so the plain 5-vote at weight 0 is kept
    easy, easy_labels = _blobs(n_per=30, spread=0.05)
    head, fit = cross_fit(easy, easy_labels, folds=3, iterations=20, **grids)  # type: ignore[arg-type]
    assert (head.vote_k, head.temperature, head.head_weight) == (5, 0.0, 0.0)


def test_add_category_head_lists_the_file_with_its_checksum(tmp_path: Path):
    from stygig.artifact import MANIFEST, file_sha256

    root = tmp_path / "art"
    root.mkdir()
    (root / MANIFEST).write_text(
        json.dumps({"format_version": 2, "encoder": {"name": "tiny"}, "files": {}}),
        encoding="utf-8",
    )
    x, labels = _blobs()
    head = CategoryHead.fit(x, labels, iterations=20)
    target = add_category_head(root, {"category": head}, {"cross_fit": {"folds": 5}})
    manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    assert manifest["files"][HEAD_FILE]["sha256"] == file_sha256(target)
    assert manifest["category_head"]["heads"]["category"]["classes"] == 3
    assert load_artifact_heads(root, manifest)["category"].labels == head.labels
    assert load_artifact_heads(root, {"files": {}}) == {}
    del manifest["files"][HEAD_FILE]
    with pytest.raises(ArtifactError, match="checksum"):
        load_artifact_heads(root, manifest)


# -- the evaluation never trains the head on a query --------------------------------------------


def _split(n: int, queries: list[int]) -> Split:
    mask = np.ones(n, bool)
    mask[queries] = False
    return Split(np.flatnonzero(mask), np.array(sorted(queries), np.int64))


def test_head_accuracy_never_sees_the_queries(monkeypatch: pytest.MonkeyPatch):
    """Whatever the query rows hold (vectors and labels), the fitted head is the same."""
    import stygig.category_head as ch

    x, labels = _blobs(n_per=30)
    queries = list(range(0, len(x), 5))
    split = _split(len(x), queries)
    fitted: list[CategoryHead] = []
    real_fit = ch.CategoryHead.fit.__func__  # type: ignore[attr-defined]

    def spy(cls, data, values, **kw):  # type: ignore[no-untyped-def]
        head = real_fit(cls, data, values, **kw)
        fitted.append(head)
        return head

    monkeypatch.setattr(ch.CategoryHead, "fit", classmethod(spy))
    first = head_accuracy(x, labels, split)
    weights_first = [h.weights.copy() for h in fitted]
    fitted.clear()

    x2, labels2 = x.copy(), list(labels)
    rng = np.random.default_rng(9)
    for q in queries:  # scramble every query: other vectors, other labels
        x2[q] = rng.standard_normal(x.shape[1]).astype(np.float32)
        labels2[q] = "c0"
    second = head_accuracy(x2, labels2, split)
    assert [h.n_fit for h in fitted] and all(h.n_fit <= len(split.catalog) for h in fitted)
    for a, b in zip(weights_first, (h.weights for h in fitted), strict=True):
        np.testing.assert_array_equal(a, b)
    assert first["head_weight"] == second["head_weight"]
    assert first["cross_fit"] == second["cross_fit"]
    assert len(first["cross_fit"]["vote_grid"]) > 1  # the vote's (k, temperature) searched too
    assert first["head_settings"] == second["head_settings"]


def test_head_accuracy_refuses_a_query_in_the_catalogue():
    x, labels = _blobs(n_per=10)
    leaky = Split(np.arange(len(x)), np.array([0, 1, 2]))
    with pytest.raises(InvalidOptionsError, match="query row"):
        head_accuracy(x, labels, leaky)
    split = _split(len(x), [0, 1])
    with pytest.raises(InvalidOptionsError):
        head_accuracy(x, labels, split, held_out=np.array([0, 1, 5]))


def test_head_accuracy_reports_vote_head_and_merge():
    x, labels = _blobs(n_per=30, spread=0.9)
    split = _split(len(x), list(range(0, len(x), 4)))
    out = head_accuracy(x, labels, split)
    assert out["n"] == len(split.queries)
    for key in ("vote", "head", "merged"):
        assert 0.0 <= out[key] <= 1.0
    assert out["query_grid_informative"][0]["accuracy"] == out["vote_weighted"]


@pytest.mark.slow
def test_eval_category_head_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """``stygig eval --only category --category-head`` on the drawn sample (tiny encoder)."""
    import argparse

    from stygig.evaluation.command import register
    from tests.unit.test_evaluation import _fake_datasets, latest_run

    datasets = _fake_datasets(tmp_path)
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    out = tmp_path / "eval"
    argv = ["eval", "--datasets", str(datasets), "--encoder", "tiny", "--out", str(out)]
    args = parser.parse_args([*argv, "--only", "category", "--category-head", "--quiet"])
    assert args.func(args) == 0
    metrics = json.loads((latest_run(out) / "metrics.json").read_text())
    heads = metrics["category"]["head"]
    assert set(heads) == {"articleType", "subCategory"}
    for name, row in heads.items():
        assert row["n"] == metrics["split"]["queries"]
        # the head's "vote" is the evaluation's own whitened vote
        assert row["vote"] == metrics["category"]["whitened"][name]["accuracy"]
        assert row["cross_fit"]["folds"] == 5 and 0.0 <= row["head_weight"] <= 1.0
        assert row["head_settings"]["n_fit"] <= metrics["split"]["catalog"]
        assert row["head_settings"]["input"] == "unwhitened"
    printed = capsys.readouterr().out
    assert "category head, articleType" in printed
    # The drawn sample has too few men's items for the gender stack: skipped, with the reason.
    assert (
        "items each of men and women" in metrics["validity_whitened_gender_stack"]["fit"]["skipped"]
    )
    assert "gender stack: skipped (it needs" in printed


def test_no_neighbour_left_lets_the_head_decide() -> None:
    """Every neighbour filtered out (the query's own items, removed rows): an empty vote, no
    crash; the merge then follows the head."""
    from stygig.category_head import merge_shares, neighbour_votes

    for t in (0.0, 0.05):
        votes = neighbour_votes(
            np.zeros((1, 0), np.int64), np.zeros((1, 0), np.float32), 4, k=5, temperature=t
        )
        assert votes.shares().shape == (1, 4) and not votes.shares().any()
        proba = np.array([[0.1, 0.6, 0.2, 0.1]])
        assert merge_shares(proba, votes, 0.3).tolist() == [1]


def test_vote_settings_are_bounded_and_old_files_use_the_engine_k() -> None:
    from stygig.category_head import MAX_VOTE_K, _check_vote

    for k, t in ((5, 0.0), (0, 0.0), (MAX_VOTE_K, 1.0), (7, 0.02)):
        _check_vote(k, t)
    for k, t in ((-1, 0.0), (MAX_VOTE_K + 1, 0.0), (5.9, 0.0), (True, 0.0), (5, 1e-300),
                 (5, 2.0), (5, float("nan"))):  # fmt: skip
        with pytest.raises(InvalidOptionsError):
            _check_vote(k, t)  # type: ignore[arg-type]


def test_a_configured_vote_k_beyond_the_bound_skips_the_head_not_the_build() -> None:
    """``vote_k`` is the operator's (ScoringConfig allows up to 10,000): past what a head
    merges, the build goes on without the category head and says why."""
    from stygig.category_head import MAX_VOTE_K, fit_artifact_heads

    x, labels = _blobs()
    heads, report = fit_artifact_heads(x, {"category": labels}, k={"category": MAX_VOTE_K + 1})
    assert "category" not in heads
    assert "vote_k" in report["fields"]["category"]["skipped"]

"""The category head in production: written by the build, refused when tampered with, used by
the engine's vote (and said so in the answer), carried over by compaction."""

from __future__ import annotations

import base64
import csv
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from stygig.artifact import MANIFEST, Artifact, file_sha256, read_manifest
from stygig.catalog.changelog import ChangeLog
from stygig.catalog.changes import parse_change
from stygig.category_head import (
    HEAD_FILE,
    MIN_ITEMS_PER_CLASS,
    CategoryHead,
    add_category_head,
    fit_artifact_heads,
    skip_reason,
)
from stygig.cli import main
from stygig.compaction import compact
from stygig.engine import Options, Query, Recommender
from stygig.errors import ArtifactError, InvalidOptionsError
from stygig.living import LiveCatalog
from stygig.whitening import Whitening

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _copy(sample: tuple[Path, Path], tmp_path: Path) -> Path:
    art = tmp_path / "artifact"
    shutil.copytree(sample[1], art)
    return art


def _query(sample: tuple[Path, Path], name: str = "blue-jeans.jpg") -> bytes:
    return (sample[0] / "queries" / name).read_bytes()


# -- the build ----------------------------------------------------------------------------------


def test_a_default_build_writes_the_heads_with_their_checksum(sample: tuple[Path, Path]) -> None:
    art = sample[1]
    manifest = read_manifest(art)
    assert manifest["files"][HEAD_FILE]["sha256"] == file_sha256(art / HEAD_FILE)
    entry = manifest["category_head"]
    assert entry["file"] == HEAD_FILE
    assert set(entry["heads"]) == {"category"}
    for name, head in entry["heads"].items():
        report = entry["fields"][name]
        assert report["head_weight"] == head["head_weight"] > 0
        assert report["folds"] == 5 and report["k"] == (5 if name == "category" else 10)
        assert head["input"] == "unwhitened"  # the sample build is whitened
    build = manifest["build"]
    assert build["seconds"]["category_head"] > 0
    assert "grid" not in build["category_head"]["fields"]["category"]
    loaded = Artifact.load(art)
    assert set(loaded.heads) == {"category"}
    assert loaded.heads["category"].n_fit == manifest["counts"]["items"]


@pytest.mark.slow
def test_no_category_head_flag_and_the_build_line(
    sample: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    catalog = sample[0] / "catalog.csv"
    common = ["build", "--catalog", str(catalog), "--encoder", "tiny", "--quiet"]
    assert main([*common, "--out", str(tmp_path / "off"), "--no-category-head"]) == 0
    assert "category head: off (--no-category-head)" in capsys.readouterr().out
    manifest = read_manifest(tmp_path / "off")
    assert not (tmp_path / "off" / HEAD_FILE).exists()
    assert HEAD_FILE not in manifest["files"] and "category_head" not in manifest
    assert Artifact.load(tmp_path / "off").heads == {}

    assert main([*common, "--out", str(tmp_path / "on")]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("category head"))
    assert "category (weight" in line and "time:" in line


def test_too_few_labels_skip_the_head_with_a_reason(
    sample: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with (sample[0] / "catalog.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    small = tmp_path / "catalog.csv"
    with small.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows[:8]:  # a handful of items: no class has 5 of them
            writer.writerow({**row, "image": str(sample[0] / row["image"])})
    out = tmp_path / "art"
    argv = ["build", "--catalog", str(small), "--encoder", "tiny", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("category head"))
    assert "category skipped" in line
    manifest = read_manifest(out)
    assert "category_head" not in manifest and not (out / HEAD_FILE).exists()
    reason = manifest["build"]["category_head"]["fields"]["category"]["skipped"]
    assert f"{MIN_ITEMS_PER_CLASS}+ items" in reason


def test_skip_rule_and_a_useless_head_is_not_kept() -> None:
    assert skip_reason(["a"] * 5 + ["b"] * 4) is not None  # one class with 5 items
    assert skip_reason(["a"] * 5 + ["b"] * 5 + [None, ""]) is None
    assert skip_reason([None] * 20) is not None
    # Tight, far-apart classes: the vote alone is right everywhere, so every weight ties and
    # the cross-fit keeps the smallest, 0: a head that changes nothing is not stored.
    rng = np.random.default_rng(0)
    centres = 10 * np.eye(8, dtype=np.float32)[:3]
    x = np.concatenate([c + 0.1 * rng.standard_normal((20, 8)) for c in centres])
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    labels = [f"c{c}" for c in range(3) for _ in range(20)]
    heads, info = fit_artifact_heads(x, {"category": labels}, k={"category": 5})
    report = info["fields"]["category"]
    assert report["accuracy"]["vote"] == 1.0 and report["head_weight"] == 0.0
    assert heads == {} and "weight 0" in report["skipped"]


def test_a_large_catalogue_is_fitted_on_a_bounded_sample() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((90, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = [f"c{int(v[0] > 0)}{int(v[1] > 0)}" for v in x]  # learnable: signs of two axes
    heads, info = fit_artifact_heads(x, {"category": labels}, k={"category": 5}, max_rows=40)
    report = info["fields"]["category"]
    assert report["rows"] == 40 and heads["category"].n_fit == 40


# -- the engine ---------------------------------------------------------------------------------


def test_the_head_folded_for_queries_gives_the_same_probabilities() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((120, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = [f"c{i % 4}" for i in range(120)]
    for dim in (None, 10):  # every direction kept, and fewer
        whitening = Whitening.fit(x, dim=dim)
        y = whitening.apply(x)
        head = CategoryHead.fit(y, labels, iterations=30, whitening=whitening)
        form = head.for_queries(whitening)
        assert form is not None
        expected = head.predict_proba(y[:7], whitening)
        np.testing.assert_allclose(form.predict_proba(y[:7]), expected, atol=1e-5)
        np.testing.assert_allclose(form.predict_proba(y[3])[0], expected[3], atol=1e-5)
    plain = CategoryHead.fit(x, labels, iterations=30)
    stored = plain.for_queries()
    assert stored is not None
    np.testing.assert_allclose(stored.predict_proba(x[:7]), plain.predict_proba(x[:7]), atol=1e-5)
    skewed = replace(whitening, projection=2 * whitening.projection)  # not orthonormal
    assert head.for_queries(skewed) is None


def _confident_head(art: Artifact, category: str) -> CategoryHead:
    """A head over the stored vectors that always says ``category`` (probability ~1)."""
    labels = tuple(sorted({i.category for i in art.items}))
    d, c = art.embeddings.shape[1], len(labels)
    bias = np.full(c, -20.0, np.float32)
    bias[labels.index(category)] = 20.0
    return CategoryHead(
        field="category",
        labels=labels,
        mean=np.zeros(d, np.float32),
        scale=np.ones(d, np.float32),
        weights=np.zeros((d, c), np.float32),
        bias=bias,
        l2=0.0,
        iterations=1,
        n_fit=len(art.items),
        head_weight=0.9,
        input="stored",
    )


def test_the_merged_answer_follows_the_head_when_it_disagrees_with_the_vote(
    sample: tuple[Path, Path], tmp_path: Path
) -> None:
    art = _copy(sample, tmp_path)
    photo = _query(sample)
    plain = Recommender(replace(Artifact.load(art), heads={})).recommend(Query(images=(photo,)))
    voted = plain.query[0].category
    assert voted is not None and plain.query[0].heads == []
    other = next(c for c in ("hat", "sneakers", "handbag") if c != voted)
    loaded = Artifact.load(art)
    add_category_head(art, {"category": _confident_head(loaded, other)})
    rec = Recommender.from_path(art)
    answer = rec.recommend(Query(images=(photo,)))
    part = answer.query[0]
    # Said as the head's (review, session 54: "vote" above a vote another category won).
    assert part.category == other and part.category_source == "head"
    assert plain.query[0].category_source == "vote"
    assert part.votes == plain.query[0].votes  # the neighbours' votes are still shown
    (decision,) = part.heads
    assert decision.field == "category" and decision.value == other and decision.vote == voted
    assert decision.weight == 0.9 and decision.k == 5
    best = decision.scores[0]
    assert best.label == other and best.probability > 0.99
    assert best.score == pytest.approx(0.9 * best.probability + 0.1 * best.votes / 5, abs=1e-4)
    assert voted in {s.label for s in decision.scores}
    # The outfit is built around the head's category: never an item of its slot.
    slot = part.slot
    assert answer.outfit is not None and slot not in answer.outfit.slots
    # The JSON answer carries it too.
    heads = answer.to_dict()["query"][0]["heads"]
    assert heads[0]["value"] == other and heads[0]["scores"][0]["label"] == other
    # A caller may ask for the vote alone.
    off = rec.recommend(Query(images=(photo,)), Options(use_category_head=False))
    assert off.query[0].category == voted and off.query[0].heads == []


def test_stated_categories_and_catalogue_items_are_not_decided_by_the_head(
    sample: tuple[Path, Path],
) -> None:
    rec = Recommender.from_path(sample[1])
    photo = _query(sample)
    stated = rec.recommend(Query(images=(photo,)), Options(category="jeans"))
    assert stated.query[0].category == "jeans"
    assert stated.query[0].heads == []
    item = rec.artifact.items[0].id
    by_item = rec.recommend(Query(item_ids=(item,)))
    assert by_item.query[0].heads == [] and by_item.query[0].category_source == "catalog"


# -- integrity ----------------------------------------------------------------------------------


def test_a_tampered_head_file_is_refused_at_load(sample: tuple[Path, Path], tmp_path: Path) -> None:
    art = _copy(sample, tmp_path)
    data = bytearray((art / HEAD_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (art / HEAD_FILE).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=HEAD_FILE) as caught:
        Artifact.load(art)
    assert caught.value.code == "artifact_checksum_mismatch"
    # Unverified, a file that is not a head file is still refused, without its contents.
    (art / HEAD_FILE).write_bytes(b"not a head file")
    with pytest.raises(ArtifactError, match="cannot read category head file") as caught:
        Artifact.load(art, verify=False)
    assert "not a head" not in caught.value.message


def test_a_head_for_other_vectors_is_refused(sample: tuple[Path, Path], tmp_path: Path) -> None:
    art = _copy(sample, tmp_path)
    loaded = Artifact.load(art)
    head = _confident_head(loaded, "hat")
    narrow = replace(head, mean=head.mean[:8], scale=head.scale[:8], weights=head.weights[:8])
    add_category_head(art, {"category": narrow})  # listed with a valid checksum
    with pytest.raises(ArtifactError, match="does not read this artifact's vectors"):
        Artifact.load(art)


def test_a_manifest_naming_an_unlisted_head_is_refused(
    sample: tuple[Path, Path], tmp_path: Path
) -> None:
    art = _copy(sample, tmp_path)
    manifest = json.loads((art / MANIFEST).read_text(encoding="utf-8"))
    del manifest["files"][HEAD_FILE]
    (art / HEAD_FILE).unlink()
    (art / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(ArtifactError, match="not listed with a checksum"):
        Artifact.load(art)


# -- the living catalogue -----------------------------------------------------------------------


def test_compaction_carries_the_heads_over(sample: tuple[Path, Path], tmp_path: Path) -> None:
    art = _copy(sample, tmp_path)
    log = ChangeLog(tmp_path / "log")
    live = LiveCatalog(Recommender(Artifact.load(art)), log)
    photo = base64.b64encode(_query(sample)).decode()
    item = {"id": "added-1", "category": "jeans", "gender": "men", "usage": "Casual"}
    live.submit([parse_change({"op": "add", "item": item, "image_b64": photo})])
    out = tmp_path / "compacted"
    summary = compact(art, log, out)
    assert summary["items"] == Artifact.load(art).manifest["counts"]["items"] + 1
    before, after = read_manifest(art), read_manifest(out)
    assert after["files"][HEAD_FILE]["sha256"] == file_sha256(out / HEAD_FILE)
    assert after["category_head"]["heads"] == before["category_head"]["heads"]
    assert after["category_head"]["fields"] == before["category_head"]["fields"]
    old, new = Artifact.load(art).heads, Artifact.load(out).heads
    assert set(new) == set(old)
    for name in old:  # the same heads, not refitted on the added item
        np.testing.assert_array_equal(new[name].weights, old[name].weights)
        assert new[name].n_fit == old[name].n_fit
    answer = Recommender.from_path(out).recommend(Query(images=(_query(sample),)))
    assert [h.field for h in answer.query[0].heads] == ["category"]


def test_a_diverged_head_is_never_stored(sample: tuple[Path, Path], tmp_path: Path) -> None:
    art = _copy(sample, tmp_path)
    head = _confident_head(Artifact.load(art), "hat")
    weights = head.weights.copy()
    weights[0, 0] = np.nan
    before = (art / HEAD_FILE).read_bytes()
    with pytest.raises(InvalidOptionsError, match="not all finite"):
        add_category_head(art, {"category": replace(head, weights=weights)})
    assert (art / HEAD_FILE).read_bytes() == before  # the stored head is untouched
    Artifact.load(art)  # and still verifies

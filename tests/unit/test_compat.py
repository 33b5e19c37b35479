"""The learned compatibility model on tiny synthetic outfits (no shared data, seconds)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from stygig.artifact import FORMAT_VERSION, Artifact, add_compat_model, write_artifact
from stygig.catalog import Item, Taxonomy
from stygig.compat import CompatModel, Cooccurrence, ItemFeatures, item_features, rgb_to_lab
from stygig.encoders import load_encoder
from stygig.engine import Options, Query, Recommender
from stygig.scoring import ScoringConfig

CATEGORIES = ("shirt", "trousers", "sandals")
STYLES = 4


def _artifact(root: Path, per_style: int = 6) -> tuple[Path, dict[str, list[str]]]:
    """Items of 3 categories in 4 hidden styles; each outfit takes one item per category from
    one style, so the style (visible in the embedding) is what makes items go together."""
    encoder = load_encoder("tiny")
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(STYLES, encoder.dim))
    items, colors, vectors = [], [], []
    for cat in CATEGORIES:
        for style in range(STYLES):
            for k in range(per_style):
                items.append(Item(id=f"{cat}-{style}-{k}", image="x.jpg", category=cat))
                colors.append({"rgb": [60 * style, 40, 200 - 40 * style]})
                vectors.append(centres[style] + 0.6 * rng.normal(size=encoder.dim))
    x = np.array(vectors, np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    path = write_artifact(
        root / "art",
        items=items,
        colors=colors,
        embeddings=x,
        taxonomy=Taxonomy.load(),
        encoder_info=encoder.describe(),
        rejects=[],
        index_kind="exact",
    )
    outfits = {}
    for o in range(120):
        style = int(rng.integers(STYLES))
        outfits[f"o{o:03d}"] = [
            f"{cat}-{style}-{int(rng.integers(per_style))}" for cat in CATEGORIES
        ]
    return path, outfits


def _write_outfits(path: Path, outfits: dict[str, list[str]]) -> Path:
    lines = ["cod_outfit,cod_modelo_color"]
    lines += [f"{o},{i}" for o, items in outfits.items() for i in items]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[str]]]:
    from stygig.training.command import register

    root = tmp_path_factory.mktemp("compat")
    path, outfits = _artifact(root)
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    csv = _write_outfits(root / "outfits.csv", outfits)
    args = parser.parse_args(
        ["train-compat", "--outfits", str(csv), "--artifact", str(path), "--epochs", "6", "--quiet"]
    )
    assert args.func(args) == 0
    return path, outfits


def test_rgb_to_lab_reference_colours() -> None:
    lab = rgb_to_lab([[255, 255, 255], [0, 0, 0], [255, 0, 0]])
    assert lab[0] == pytest.approx([100.0, 0.0, 0.0], abs=0.5)
    assert lab[1] == pytest.approx([0.0, 0.0, 0.0], abs=0.5)
    assert lab[2] == pytest.approx([53.2, 80.1, 67.2], abs=1.0)


def test_cooccurrence_counts_pairs_both_ways() -> None:
    co = Cooccurrence.from_outfits([["a", "b", "c"], ["a", "b"], ["c", "d"]])
    q, c = co.codes(("a", "zz")), co.codes(("b", "c", "d", "new"))
    counts = co.lookup(q, c)
    assert counts.tolist() == [[2.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    assert co.lookup(co.codes(("d",)), co.codes(("c",)))[0, 0] == 1.0


def test_model_scores_are_vectorised_and_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    d, c, h, dim = 5, 2, 6, 3
    f = d + 7 + c
    model = CompatModel(
        categories=("a", "b"),
        emb_mean=np.zeros(d, np.float32),
        emb_scale=np.ones(d, np.float32),
        w1=rng.normal(size=(f, h)).astype(np.float32),
        b1=np.zeros(h, np.float32),
        w2=rng.normal(size=(h, dim)).astype(np.float32),
        b2=np.zeros(dim, np.float32),
        masks=rng.normal(size=(c + 1, c + 1, dim)).astype(np.float32),
        bias=rng.normal(size=(c + 1, c + 1)).astype(np.float32),
        cooc_weight=0.5,
        cooccurrence=Cooccurrence.from_outfits([["x", "y"]]),
    )
    feats = item_features(
        rng.normal(size=(6, d)), rng.integers(0, 255, (6, 3)), ["a", "b", None, "a", "b", "b"], "ab"
    )
    assert isinstance(feats, ItemFeatures) and feats.category.tolist() == [0, 1, -1, 0, 1, 1]
    g = model.project(feats)
    assert np.allclose(np.linalg.norm(g, axis=1), 1.0, atol=1e-5)
    q, cand = np.array([0, 2]), np.array([1, 3, 4, 5])
    fast = model.score(g[q], feats.category[q], g[cand], feats.category[cand])
    cats = np.where(feats.category >= 0, feats.category, 2)
    slow = [
        np.mean(
            [
                g[i] @ (model.masks[cats[i], cats[j]] * g[j]) + model.bias[cats[i], cats[j]]
                for i in q
            ]
        )
        for j in cand
    ]
    assert fast == pytest.approx(slow, abs=1e-5)
    again = CompatModel.load(model.save(tmp_path / "compat.npz"))
    assert again.categories == model.categories and again.cooc_weight == 0.5
    assert np.array_equal(again.cooccurrence.keys, model.cooccurrence.keys)
    assert again.score(g[q], feats.category[q], g[cand], feats.category[cand]) == pytest.approx(
        fast, abs=1e-6
    )


def test_format_1_artifacts_still_load(tmp_path: Path) -> None:
    path, _ = _artifact(tmp_path, per_style=1)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["format_version"] == 2 < FORMAT_VERSION  # unsplit index: still format 2
    manifest["format_version"] = 1
    (path / "manifest.json").write_text(json.dumps(manifest))
    art = Artifact.load(path)
    assert art.compat is None and Recommender(art).learned is None


def test_training_stores_a_model_that_learns_styles(
    trained: tuple[Path, dict[str, list[str]]],
) -> None:
    path, _ = trained
    art = Artifact.load(path)  # checksums include compat.npz
    manifest = art.manifest
    assert manifest["format_version"] == 2 and "compat.npz" in manifest["files"]
    entry = manifest["compat"]
    assert entry["file"] == "compat.npz" and entry["seed"] == 0
    assert entry["split"]["test_outfits_never_seen"] == 24
    assert art.compat is not None and art.summary()["compat"]["best_epoch"] >= 1
    # Validation FITB on held-out outfits is far above chance (25 %).
    assert entry["validation"]["val_uniform"] >= 0.6


def test_recommender_uses_the_model_per_compat_mode(
    trained: tuple[Path, dict[str, list[str]]],
) -> None:
    path, _ = trained
    art = Artifact.load(path)
    given, cands = ["shirt-1-0"], ["trousers-1-2", "trousers-2-2", "trousers-3-2"]
    scores = {
        mode: Recommender(art, config=ScoringConfig.from_dict({"compat_mode": mode})).score_items(
            given, cands
        )
        for mode in ("rules", "learned", "learned+rules")
    }
    assert int(np.argmax(scores["learned"])) == 0  # same style
    assert not np.allclose(scores["rules"], scores["learned"])
    rec = Recommender(art, config=ScoringConfig.from_dict({"compat_mode": "learned"}))
    out = rec.recommend(Query(item_ids=("shirt-1-0",)), Options(k=2)).to_dict()
    assert out["items"] and all(isinstance(i["learned"], float) for i in out["items"])
    assert all(i["score"] == pytest.approx(i["learned"], abs=1e-3) for i in out["items"])
    rules = Recommender(art, config=ScoringConfig.from_dict({"compat_mode": "rules"}))
    plain = rules.recommend(Query(item_ids=("shirt-1-0",)), Options(k=2)).to_dict()
    assert all(i["learned"] is None for i in plain["items"])


def test_replacing_the_model_keeps_the_artifact_valid(
    trained: tuple[Path, dict[str, list[str]]],
) -> None:
    path, _ = trained
    model = Artifact.load(path).compat
    assert model is not None
    add_compat_model(path, model, {"note": "replaced"})
    art = Artifact.load(path)
    assert art.manifest["compat"]["note"] == "replaced" and art.compat is not None


def test_eval_puts_learned_scorers_beside_v4(
    trained: tuple[Path, dict[str, list[str]]], tmp_path: Path
) -> None:
    from stygig.evaluation.fitb import evaluate_outfits
    from stygig.evaluation.report import fitb_table

    path, outfits = trained
    csv = _write_outfits(tmp_path / "outfits.csv", outfits)
    result = evaluate_outfits(Artifact.load(path), csv, tmp_path, seed=0)
    for name in ("v4", "learned", "learned+rules"):
        assert 0.0 <= result["accuracy"][name]["uniform"]["accuracy"] <= 1.0
        assert 0.0 <= result["auc"][name] <= 1.0
    # Held-out outfits, never trained on: well above chance (25 %).
    assert result["accuracy"]["learned"]["uniform"]["accuracy"] >= 0.5
    assert result["compat_model"]["file"] == "compat.npz"
    table = fitb_table({"fitb": result})
    assert "| learned+rules |" in table and "| cooccurrence+popularity |" in table
    assert result["headline"]["scorer"] == "learned+rules"
    assert result["model_split"]["seed"] == 0


def test_training_is_reproducible(tmp_path: Path) -> None:
    from stygig.training.compat import TrainConfig, train_compat

    path, outfits = _artifact(tmp_path)
    art = Artifact.load(path)
    runs = [
        train_compat(art, outfits, TrainConfig(epochs=2), progress=False, log=lambda _: None)
        for _ in range(2)
    ]
    assert np.array_equal(runs[0].model.w1, runs[1].model.w1)
    assert np.array_equal(runs[0].model.masks, runs[1].model.masks)
    assert [r["val_uniform"] for r in runs[0].history] == [
        r["val_uniform"] for r in runs[1].history
    ]

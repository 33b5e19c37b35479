"""Fit the colour-family classifier of ``stygig.color`` and write ``stygig/data/color_model.json``.

    python benchmarks/fit_color.py [--datasets DIR] [--side PX] [--out PATH] [--check-only]

Every labelled photo of ``fashion-products`` (Kaggle, ``baseColour``) and ``mango-outfits``
(MANGO, ``des_agrup_color_eng``), as ``benchmarks/bench_color.py`` reads them, is decoded,
shrunk to ``--side`` (64 px, what the model is for) and turned into
:func:`stygig.color.color_features`. A softmax regression over the 12 families is fitted on the
*tuning* half only (``crc32(id)`` even, the half ``bench_color.py`` does not report as
held-out). A MANGO label names a group of families (GREY is black or grey, WHITE is white or
beige), so its likelihood is the summed probability of the group's families. Photos are
weighted so that every label of a dataset weighs the same and both datasets weigh the same;
Kaggle's grey, the label its photographs agree with least, weighs ``GREY_BOOST`` times more.
Full-batch Adam from zero weights, a fixed number of steps: the same data give the same model.

It prints the held-out agreement of the fitted model (the same argmax the colour step takes),
and, as a check that the recipe is not fitted to one split, the held-out agreement of a second
model fitted on another split (``crc32(id) % 4`` in {0, 3}, held out {1, 2}), which is not
written. ``--check-only`` writes nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from stygig.color import ColorModel, color_features, load_family_table
from stygig.images import decode_image, fit_array

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_color import DEFAULT_DATASETS, REPO, load_items

DATASETS = ("fashion-products", "mango-outfits")
SIDE = 64
STEPS = 800
LEARNING_RATE = 0.1
L2 = 1e-4  # on the summed, weight-normalised loss
GREY_BOOST = 1.5  # Kaggle "grey" (Grey, Grey Melange, Charcoal)


def load(root: Path, side: int) -> dict[str, Any]:
    """Features, allowed families (a row of booleans per photo), dataset, label and id."""
    table = load_family_table()
    parts: dict[str, list[Any]] = {k: [] for k in ("x", "allowed", "dataset", "label", "id")}
    for k, name in enumerate(DATASETS):
        fold = table.datasets[name]
        to_target, excluded = fold["labels"], set(fold.get("excluded") or [])
        family_to_target = fold.get("families") or {}
        targets = np.array([family_to_target.get(f, f) for f in table.families])
        for item in load_items(name, root):
            if item.label in excluded or item.label not in to_target:
                continue
            img = fit_array(decode_image(item.path), side)
            parts["x"].append(color_features(img))
            parts["allowed"].append(targets == to_target[item.label])
            parts["dataset"].append(k)
            parts["label"].append(to_target[item.label])
            parts["id"].append(item.id)
    return {k: np.array(v) for k, v in parts.items()}


def sample_weights(data: dict[str, Any], train: np.ndarray) -> np.ndarray:
    """Every (dataset, label) of the training photos weighs the same; grey more (see above)."""
    weight = np.zeros(len(train))
    for k in range(len(DATASETS)):
        for label in np.unique(data["label"][train & (data["dataset"] == k)]):
            group = train & (data["dataset"] == k) & (data["label"] == label)
            weight[group] = 1.0 / group.sum()
    weight[train & (data["dataset"] == 0) & (data["label"] == "grey")] *= GREY_BOOST
    normalised: np.ndarray = weight / weight.sum()
    return normalised


def fit(x: np.ndarray, allowed: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Softmax regression weights ``(features, families)``: loss -log P(allowed families)."""
    w = np.zeros((x.shape[1], allowed.shape[1]))
    m, v = np.zeros_like(w), np.zeros_like(w)
    for step in range(1, STEPS + 1):
        z = x @ w
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        q = p * allowed
        q /= q.sum(axis=1, keepdims=True)
        grad = x.T @ ((p - q) * weight[:, None]) + L2 * w
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad**2
        w -= LEARNING_RATE * (m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-8)
    weights: np.ndarray = w
    return weights


def report(data: dict[str, Any], w: np.ndarray, held_out: np.ndarray, title: str) -> None:
    """Held-out agreement per dataset, balanced over labels, and per label."""
    model = ColorModel(load_family_table().families, w)
    agree = np.array([a[model.family(x)] for x, a in zip(data["x"], data["allowed"], strict=True)])
    print(title)
    for k, name in enumerate(DATASETS):
        s = held_out & (data["dataset"] == k)
        labels = sorted(set(data["label"][s]), key=lambda t: -np.sum(data["label"][s] == t))
        recall = {t: agree[s & (data["label"] == t)].mean() for t in labels}
        print(
            f"  {name:17s} held-out {agree[s].mean():.1%} (n {s.sum()}), mean over labels "
            f"{np.mean(list(recall.values())):.1%}; fitted half {agree[~held_out & (data['dataset'] == k)].mean():.1%}"
        )
        print("    " + "  ".join(f"{t} {r:.0%}" for t, r in recall.items()))


def _json(document: dict[str, Any]) -> str:
    """The model file: readable fields first, then one line per feature's weights."""
    rows = document.pop("weights")
    head = json.dumps(document, indent=2)[:-2]
    body = ",\n".join(f"    {json.dumps(row)}" for row in rows)
    return f'{head},\n  "weights": [\n{body}\n  ]\n}}\n'


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    parser.add_argument("--side", type=int, default=SIDE, help="colour input size, px")
    out = REPO / "src" / "stygig" / "data" / "color_model.json"
    parser.add_argument("--out", type=Path, default=out)
    parser.add_argument("--check-only", action="store_true", help="write no model")
    args = parser.parse_args(argv)
    if not all((args.datasets / name).is_dir() for name in DATASETS):
        print(f"skipped: datasets {DATASETS} not found under {args.datasets} (see its README)")
        return 0
    started = time.perf_counter()
    data = load(args.datasets, args.side)
    print(f"{len(data['id'])} photos, features in {time.perf_counter() - started:.0f} s")
    quarter = np.array([zlib.crc32(i.encode()) % 4 for i in data["id"]])
    splits = {
        "crc32(id) % 2 == 1 (the benchmark's split; written)": quarter % 2 == 1,
        "crc32(id) % 4 in {1, 2} (a second split; not written)": np.isin(quarter, (1, 2)),
    }
    for i, (title, held_out) in enumerate(splits.items()):
        w = fit(data["x"], data["allowed"], sample_weights(data, ~held_out))
        report(data, w, held_out, f"held out {title}")
        if i == 0 and not args.check_only:
            model = ColorModel(load_family_table().families, w)
            provenance = {
                "made_by": "python benchmarks/fit_color.py" + f" --side {args.side}",
                "fitted_on": "tuning halves (crc32(id) even) of fashion-products and "
                "mango-outfits; see benchmarks/fit_color.py",
                "photos_fitted": int((~held_out).sum()),
                "side_px": args.side,
            }
            args.out.write_text(_json(model.to_dict(**provenance)), encoding="utf-8")
            print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

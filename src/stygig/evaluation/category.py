"""Category vote accuracy: do a held-out photo's 5 nearest catalogue items vote its category?

Protocol (``docs/evaluation.md``): the artifact is built once from every photo; a seeded split
stratified by the canonical category marks 20 % of the rows as queries. Queries search only the
catalogue rows (the held-out rows are simply not in the matrix searched), which is the same as
building from the catalogue part alone, since each photo's embedding depends only on the photo.
The vote is the engine's own (:func:`stygig.scoring.vote`: majority, ties by summed similarity).

With ``head=True`` a category head (:mod:`stygig.category_head`) is fitted on the catalogue rows
only (:func:`head_accuracy` refuses a split whose catalogue holds a query row) and merged with
the same vote, at the weight its cross-fit on the catalogue chose.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from stygig.errors import InvalidOptionsError
from stygig.evaluation.split import Split, stratified_split
from stygig.scoring import label_codes as encode_labels
from stygig.scoring import vote, weighted_winner
from stygig.whitening import Whitening

if TYPE_CHECKING:
    from stygig.artifact import Artifact
    from stygig.engine import Recommender

__all__ = [
    "color_agreement",
    "confusions",
    "encode_labels",
    "evaluate_photos",
    "head_accuracy",
    "knn_vote",
    "outfit_validity",
    "tune_whitening",
    "vote_accuracy",
    "whitened_artifact",
]

_CHUNK = 1024


def knn_vote(
    catalog: np.ndarray, catalog_labels: np.ndarray, queries: np.ndarray, k: int = 5
) -> np.ndarray:
    """Predicted label code of each query row by the top-``k`` neighbour vote (inner product)."""
    preds = np.empty(len(queries), np.int64)
    kk = min(k, len(catalog))
    for start in range(0, len(queries), _CHUNK):
        sims = queries[start : start + _CHUNK] @ catalog.T
        top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        top_s = np.take_along_axis(sims, top, 1)
        for row, (ids, s) in enumerate(zip(top, top_s, strict=True)):
            preds[start + row] = vote(catalog_labels[ids], s).winner
    return preds


def knn_neighbours(
    catalog: np.ndarray, queries: np.ndarray, k: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's ``k`` nearest catalogue rows (positions into ``catalog``), best first, and
    their similarities."""
    kk = min(k, len(catalog))
    ids = np.empty((len(queries), kk), np.int64)
    sims = np.empty((len(queries), kk), np.float32)
    for start in range(0, len(queries), _CHUNK):
        block = queries[start : start + _CHUNK] @ catalog.T
        top = np.argpartition(-block, kk - 1, axis=1)[:, :kk]
        s = np.take_along_axis(block, top, 1)
        order = np.argsort(-s, axis=1, kind="stable")
        ids[start : start + len(block)] = np.take_along_axis(top, order, 1)
        sims[start : start + len(block)] = np.take_along_axis(s, order, 1)
    return ids, sims


def head_accuracy(
    vectors: np.ndarray,
    values: Sequence[str | None],
    split: Split,
    *,
    held_out: np.ndarray | None = None,
    whitening: Whitening | None = None,
    field: str = "category",
    k: int = 5,
    seed: int = 0,
    other_vote: tuple[int, float] | None = None,
) -> dict[str, Any]:
    """The category head against the plain vote on the held-out queries of ``split``.

    The head is cross-fitted (:func:`stygig.category_head.cross_fit`) on ``split.catalog`` rows
    only — the vectors and labels of every other row are never passed to it — and chooses its
    weight against the vote there. ``held_out`` (default ``split.queries``) are all rows kept
    out of the catalogue (a ``limit`` scores only some of them): none may be a catalogue row.
    The vote's neighbours and temperature are searched with the weight, on the catalogue, as a
    build searches them (:data:`~stygig.category_head.VOTE_K_GRID`,
    :data:`~stygig.category_head.TEMPERATURE_GRID`). Reported: the plain ``k``-vote, the
    vote at the chosen (k, temperature) alone (``vote_weighted``), at ``other_vote`` (another
    head's chosen (k, temperature), e.g. the category's for the subCategory), the head alone,
    the two merged at the chosen settings (the figure, what the engine does), and the merge at
    every weight of the grid (informative only: chosen on the queries, it would flatter).
    """
    from stygig.category_head import TEMPERATURE_GRID, VOTE_K_GRID, cross_fit, merge_votes

    catalog = np.asarray(split.catalog, np.int64)
    queries = np.asarray(split.queries, np.int64)
    kept_out = queries if held_out is None else np.asarray(held_out, np.int64)
    if np.isin(catalog, kept_out).any() or np.isin(catalog, queries).any():
        raise InvalidOptionsError("category head: a query row is in the catalogue it is fitted on")
    names, codes = encode_labels(list(values))
    fit_vectors = np.ascontiguousarray(vectors[catalog])
    head, fit = cross_fit(
        fit_vectors,
        [values[i] for i in catalog.tolist()],
        field=field,
        k=k,
        seed=seed,
        whitening=whitening,
        vote_ks=VOTE_K_GRID,
        temperatures=TEMPERATURE_GRID,
    )
    query_vectors = vectors[queries]
    proba = head.proba_for(query_vectors, names, whitening)
    widest = max(k, head.vote_k, other_vote[0] if other_vote is not None else 0)
    nb, nb_sims = knn_neighbours(fit_vectors, query_vectors, widest)
    nb_labels = codes[catalog][nb]
    truth = codes[queries]
    known = truth >= 0

    def accuracy(pred: np.ndarray) -> float:
        return float((pred[known] == truth[known]).mean()) if known.any() else float("nan")

    def merged_at(w: float, vote_k: int = head.vote_k, t: float = head.temperature) -> np.ndarray:
        return merge_votes(proba, nb_labels, nb_sims, w, k=vote_k, temperature=t)

    merged = merged_at(head.head_weight)
    out: dict[str, Any] = {
        "n": int(known.sum()),
        "vote": accuracy(merged_at(0.0, k, 0.0)),
        "vote_weighted": accuracy(merged_at(0.0)),
        "head": accuracy(proba.argmax(axis=1)),
        "merged": accuracy(merged),
        "head_weight": head.head_weight,
        "vote_k": head.vote_k,
        "temperature": head.temperature,
        "top_confusions": confusions(truth[known], merged[known], names),
        "head_settings": head.describe(),
        "cross_fit": fit.describe(),
        "query_grid_informative": [
            {"head_weight": w, "accuracy": accuracy(merged_at(w))}
            for w in (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0)
        ],
    }
    if other_vote is not None:
        out["vote_other"] = {
            "vote_k": other_vote[0],
            "temperature": other_vote[1],
            "accuracy": accuracy(merged_at(0.0, *other_vote)),
        }
    return out


def vote_accuracy(
    catalog: np.ndarray,
    catalog_labels: np.ndarray,
    queries: np.ndarray,
    query_labels: np.ndarray,
    names: Sequence[str],
    *,
    k: int = 5,
) -> dict[str, Any]:
    """Accuracy of :func:`knn_vote` plus the most frequent confusions."""
    preds = knn_vote(catalog, catalog_labels, queries, k)
    known = query_labels >= 0
    correct = preds[known] == query_labels[known]
    return {
        "accuracy": float(correct.mean()) if correct.size else float("nan"),
        "n": int(known.sum()),
        "top_confusions": confusions(query_labels[known], preds[known], names),
    }


def confusions(
    true: np.ndarray, pred: np.ndarray, names: Sequence[str], *, top: int = 10
) -> list[dict[str, Any]]:
    """The ``top`` most frequent (true, predicted) mistakes, with counts."""
    pairs = Counter((int(t), int(p)) for t, p in zip(true, pred, strict=True) if t != p and p >= 0)
    return [
        {"true": names[t], "predicted": names[p], "count": n}
        for (t, p), n in sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    ]


def tune_whitening(
    vectors: np.ndarray,
    labels: Sequence[str],
    *,
    seed: int = 0,
    dims: Sequence[int | None] = (None, 768, 512, 384, 256, 128),
    shrinkages: Sequence[float] = (0.0, 0.05, 0.1, 0.2, 0.4),
    powers: Sequence[float] = (1.0, 0.75, 0.5),
) -> list[dict[str, Any]]:
    """Grid-search whitening on the catalogue only: an inner 80/20 split of ``vectors``.

    Returns one row per setting, best first; the evaluation queries are never seen.
    """
    inner = stratified_split(labels, seed=seed + 1)
    names, codes = encode_labels(list(labels))
    fit_rows, val_rows = vectors[inner.catalog], vectors[inner.queries]
    rows = [
        {
            "dim": None,
            "shrinkage": None,
            "power": None,
            "accuracy": vote_accuracy(
                fit_rows, codes[inner.catalog], val_rows, codes[inner.queries], names
            )["accuracy"],
        }
    ]
    for dim in dims:
        if dim is not None and dim > vectors.shape[1]:
            continue
        for shrinkage in shrinkages:
            for power in powers:
                w = Whitening.fit(fit_rows, dim=dim, shrinkage=shrinkage, power=power)
                acc = vote_accuracy(
                    w.apply(fit_rows),
                    codes[inner.catalog],
                    w.apply(val_rows),
                    codes[inner.queries],
                    names,
                )["accuracy"]
                rows.append({"dim": dim, "shrinkage": shrinkage, "power": power, "accuracy": acc})
    return sorted(rows, key=lambda r: -float(r["accuracy"]))


def _gender_ok(query: str | None, item: str | None) -> bool:
    return query in (None, "unisex") or item in (None, "unisex", query)


def outfit_validity(
    recommender: Recommender,
    query_rows: Sequence[int],
    held_out: Sequence[int],
    *,
    seed: int = 0,
    state_gender: bool = False,
) -> dict[str, Any]:
    """Share of outfit-mode recommendations that fit the query's *true* category and gender.

    With ``state_gender`` the caller states the shopper's gender (as a shop app that knows its
    user would) instead of the engine inferring it from the photo's neighbours.

    ``query_rows`` are artifact rows used as query photos (their stored embedding and colour
    stand in for the photo, exactly what the build computed from it); every ``held_out`` row is
    removed from the index, which keeps it out of the neighbours and the candidates alike, so a
    query never meets itself.
    """
    from stygig.engine import Options

    artifact = recommender.artifact
    artifact.index.remove(np.asarray(held_out, np.int64))
    rows = np.asarray(query_rows, np.int64)
    tally = Counter[str]()
    # A shop states the genders its catalogue holds: one that only held-out rows have is not
    # the catalogue's any more, and a request stating it is refused (a 422 when served).
    held = set(recommender.columns.genders_held) if state_gender else set()
    for pos in rows.tolist():
        truth = artifact.items[pos]
        given = truth.gender if truth.gender and truth.gender != "unisex" else None
        stated = given if given and given.lower() in held else None
        tally["gender_not_stated"] += bool(state_gender and given and stated is None)
        options = Options(mode="outfit", seed=seed, gender=stated)
        # The pipeline's own path, with the build's embedding and colour as the embed step.
        prepared = recommender.prepare_embedded(
            artifact.embeddings[pos : pos + 1], [artifact.colors[pos]], options
        )
        rec = recommender.answer(prepared)
        outfit_ids = set(rec.outfit.item_ids if rec.outfit else ())
        tally["hedged"] += rec.gender.hedged
        tally["items"] += len(rec.items)
        tally["outfit_slots"] += len(outfit_ids)
        for row in rec.items:
            for scope in ("items", "outfit") if row.id in outfit_ids else ("items",):
                cat_ok = recommender.taxonomy.compatible(truth.category, row.category)
                gender_ok = _gender_ok(truth.gender, row.gender)
                tally[f"{scope}_n"] += 1
                tally[f"{scope}_category"] += cat_ok
                tally[f"{scope}_gender"] += gender_ok
                tally[f"{scope}_both"] += cat_ok and gender_ok
        tally["queries_without_items"] += not rec.items
    out: dict[str, Any] = {"queries": len(rows), **{k: v for k, v in tally.items() if "_n" in k}}
    for scope in ("items", "outfit"):
        n = max(tally[f"{scope}_n"], 1)
        for what in ("category", "gender", "both"):
            out[f"{scope}_{what}_valid"] = tally[f"{scope}_{what}"] / n
    out["queries_without_items"] = tally["queries_without_items"]
    if state_gender:  # queries whose gender only held-out rows have: the engine inferred it
        out["gender_not_stated"] = tally["gender_not_stated"]
    # What hedging an uncertain gender with unisex items costs: how often, and how full answers are.
    out["hedged_share"] = tally["hedged"] / max(len(rows), 1)
    out["items_per_query"] = tally["items"] / max(len(rows), 1)
    out["outfit_slots_per_query"] = tally["outfit_slots"] / max(len(rows), 1)
    return out


def color_agreement(artifact: Artifact, rows: Sequence[int]) -> dict[str, Any]:
    """How often the photo's dominant colour family equals its ``baseColour`` folded to families.

    Both sides use :mod:`stygig.color`'s own family table (``data/color_families.yaml``, section
    ``fashion-products``); excluded or unknown labels (``Multi``, metallics) are left out, counted.
    """
    from stygig.color import color_families, load_family_table
    from stygig.harmony import rgb_array

    spec = load_family_table().datasets.get("fashion-products", {})
    fold: dict[str, str] = dict(spec.get("labels") or {})
    rows = list(rows)
    base = [artifact.items[pos].attributes.get("baseColour", "") for pos in rows]
    kept = [i for i, b in enumerate(base) if b in fold]
    rgb = rgb_array([artifact.colors[rows[i]] for i in kept])
    photo = color_families(rgb).tolist() if kept else []
    pairs = Counter((fold[base[i]], str(p)) for i, p in zip(kept, photo, strict=True))
    n = len(kept)
    hits = sum(v for (a, b), v in pairs.items() if a == b)
    misses = sorted(((v, a, b) for (a, b), v in pairs.items() if a != b), reverse=True)[:8]
    return {
        "agreement": hits / n if n else float("nan"),
        "n": n,
        "left_out": len(rows) - n,
        "top_confusions": [{"base": a, "photo": b, "count": v} for v, a, b in misses],
    }


def whitened_artifact(artifact: Artifact, whitening: Whitening) -> Artifact:
    """A copy of a plain ``artifact`` as a build with ``whitening`` stores it: its embeddings
    (and exact index) whitened, and the transform kept for the queries.

    It lets the engine be measured on a whitening fitted on part of the catalogue only,
    without rebuilding.
    """
    from stygig.index import ExactIndex

    vectors = whitening.apply(np.asarray(artifact.embeddings, np.float32))
    return replace(artifact, embeddings=vectors, index=ExactIndex(vectors), whitening=whitening)


def _vote_block(
    vectors: np.ndarray, split: Split, labels: dict[str, list[str | None]]
) -> dict[str, Any]:
    out = {}
    for name, values in labels.items():
        names, codes = encode_labels(values)
        out[name] = vote_accuracy(
            vectors[split.catalog],
            codes[split.catalog],
            vectors[split.queries],
            codes[split.queries],
            names,
        )
    return out


def evaluate_photos(
    artifact: Artifact,
    *,
    seed: int = 0,
    limit: int | None = None,
    tune: bool = False,
    head: bool = False,
) -> dict[str, Any]:
    """Category votes (plain and whitened), colour agreement and outfit validity.

    The split is stratified by the native ``articleType`` (else the canonical category);
    ``limit`` caps the number of query photos (a seeded sample). ``head`` adds the category
    head (:func:`head_accuracy`) on the whitened vectors, as a default build stores them.
    """
    from stygig.engine import Recommender

    items = artifact.items
    strata = [i.attributes.get("articleType") or i.category for i in items]
    split = stratified_split(strata, seed=seed)
    held_out = split.queries
    if limit is not None and len(split.queries) > limit:
        picked = np.random.default_rng(seed).choice(split.queries, limit, replace=False)
        split = Split(split.catalog, np.sort(picked))
    labels: dict[str, list[str | None]] = {
        "subCategory": [i.attributes.get("subCategory") for i in items],
        "articleType": [i.category for i in items],
        "gender": [i.gender for i in items],
    }
    emb = np.asarray(artifact.embeddings, np.float32)
    whitening = Whitening.fit(emb[split.catalog])
    white = whitening.apply(emb)
    out: dict[str, Any] = {
        "split": {**split.sizes(), "held_out": len(held_out), "stratified_by": "articleType"},
        "category": {
            "plain": _vote_block(emb, split, labels),
            "whitened": _vote_block(white, split, labels),
            "whitening": whitening.describe(),
        },
        "color": color_agreement(artifact, split.queries.tolist()),
    }
    if head:
        heads: dict[str, Any] = {}
        for name in ("articleType", "subCategory"):
            category = heads.get("articleType")  # the engine's category vote, for comparison
            heads[name] = head_accuracy(
                white,
                labels[name],
                split,
                held_out=held_out,
                whitening=whitening,
                field="category" if name == "articleType" else name,
                seed=seed,
                other_vote=None
                if category is None
                else (category["vote_k"], category["temperature"]),
            )
        out["category"]["head"] = heads
    if tune:
        grid = tune_whitening(
            emb[split.catalog], [str(labels["articleType"][i]) for i in split.catalog], seed=seed
        )
        best = next(r for r in grid if r["shrinkage"] is not None)
        tuned = Whitening.fit(
            emb[split.catalog], **{k: best[k] for k in ("dim", "shrinkage", "power")}
        )
        out["category"]["whitening_tuning"] = grid
        out["category"]["whitened_tuned"] = _vote_block(tuned.apply(emb), split, labels)
        out["category"]["whitening_tuned"] = tuned.describe()
    queries, removed = split.queries.tolist(), held_out.tolist()
    recommender = Recommender(artifact)
    out["validity"] = outfit_validity(recommender, queries, removed, seed=seed)
    whitened_art = whitened_artifact(artifact, whitening)
    white_rec = Recommender(whitened_art, encoder=recommender.encoder)
    # One run per threshold; the default threshold and 0 (always guess) are among them.
    runs = {
        t: outfit_validity(
            replace_config(white_rec, gender_min_confidence=t), queries, removed, seed=seed
        )
        for t in GENDER_THRESHOLDS
    }
    default = white_rec.config.gender_min_confidence
    out["validity_whitened"] = runs.get(default) or outfit_validity(
        white_rec, queries, removed, seed=seed
    )
    out["validity_whitened_stated_gender"] = outfit_validity(
        white_rec, queries, removed, seed=seed, state_gender=True
    )
    out["validity_whitened_always_guess"] = runs[0.0]
    out["gender_confidence"] = gender_confidence_curve(
        white_rec, white[split.catalog], split.catalog, runs
    )
    if head:
        out["validity_whitened_gender_stack"] = gender_stack_validity(
            white_rec, white, whitening, split.catalog, queries, removed, seed=seed
        )
    return out


def gender_stack_validity(
    recommender: Recommender,
    vectors: np.ndarray,
    whitening: Whitening,
    catalog: np.ndarray,
    queries: Sequence[int],
    removed: Sequence[int],
    *,
    seed: int = 0,
) -> dict[str, Any]:
    """Outfit validity with the gender stack (:func:`stygig.category_head.fit_gender_stack`)
    deciding the photo's gender: fitted as a build fits it (:func:`fit_artifact_heads`), on
    the ``catalog`` rows of the stored ``vectors`` alone (``whitening`` made them), then the
    held-out ``queries`` answered by the engine with it. ``fit``: the build's report."""
    from stygig.category_head import fit_artifact_heads

    if np.isin(np.asarray(queries), catalog).any():
        raise InvalidOptionsError("gender stack: a query row is in the catalogue it is fitted on")
    config = recommender.config
    items = recommender.artifact.items
    heads, info = fit_artifact_heads(
        vectors[catalog],
        {},
        k={},
        whitening=whitening,
        genders=[items[i].gender for i in catalog.tolist()],
        gender_k=config.attribute_vote_k,
        gender_min_confidence=config.gender_min_confidence,
    )
    report = info["fields"]["gender"]
    if "gender" not in heads:
        return {"fit": report}
    # The head reads un-whitened vectors: the artifact carries the whitening, as a build's does.
    artifact = replace(
        recommender.artifact,
        heads={**recommender.artifact.heads, **heads},
        whitening=whitening,
    )
    stacked = type(recommender)(artifact, encoder=recommender.encoder, config=config)
    return {"fit": report, **outfit_validity(stacked, queries, removed, seed=seed)}


#: Thresholds of ``gender_min_confidence`` the evaluation reports (0 = always guess).
GENDER_THRESHOLDS = (0.0, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9)


def gender_confidence_curve(
    recommender: Recommender,
    catalog_vectors: np.ndarray,
    catalog_rows: np.ndarray,
    runs: dict[float, dict[str, Any]],
) -> dict[str, Any]:
    """What ``gender_min_confidence`` trades: validity against hedged (unisex-only) answers.

    ``calibration`` is measured on the catalogue alone (each catalogue photo voted by the other
    catalogue photos, leave-one-out): the share of photos confident at each threshold and how
    often their voted gender is right — what a retailer can compute to pick the threshold
    without any query photos. ``queries`` summarises ``runs``, the :func:`outfit_validity` of
    the held-out query photos at each threshold.
    """
    k = recommender.config.attribute_vote_k
    genders = recommender.columns.gender_codes[catalog_rows]
    names = recommender.columns.gender_names
    unisex = names.index("unisex") if "unisex" in names else -2
    conf = np.empty(len(catalog_rows))
    right = np.empty(len(catalog_rows), bool)
    for start in range(0, len(catalog_rows), _CHUNK):
        sims = catalog_vectors[start : start + _CHUNK] @ catalog_vectors.T
        np.fill_diagonal(sims[:, start : start + _CHUNK], -np.inf)
        top = np.argsort(-sims, axis=1)[:, :k]
        for row, (ids, s) in enumerate(zip(top, np.take_along_axis(sims, top, 1), strict=True)):
            labels = np.where(genders[ids] == unisex, -1, genders[ids])
            weights = {g: max(w, 0.0) for g, w in vote(labels, s).similarity.items()}
            i = start + row
            won = weighted_winner(weights)
            if won is None:
                conf[i], right[i] = 0.0, True
                continue
            conf[i] = won[1]
            right[i] = genders[i] in (won[0], unisex) or genders[i] < 0
    calibration = [
        {
            "threshold": t,
            "confident_share": float((conf >= t).mean()),
            "confident_correct": float(right[conf >= t].mean()) if (conf >= t).any() else None,
        }
        for t in sorted(runs)
    ]
    curve = []
    for t, v in sorted(runs.items()):
        curve.append(
            {
                "threshold": t,
                **{
                    key: v[key]
                    for key in (
                        "items_both_valid",
                        "items_gender_valid",
                        "outfit_both_valid",
                        "hedged_share",
                        "items_per_query",
                        "outfit_slots_per_query",
                    )
                },
            }
        )
    return {
        "default": recommender.config.gender_min_confidence,
        "calibration": calibration,
        "queries": curve,
    }


def replace_config(recommender: Recommender, **changes: Any) -> Recommender:
    """The same artifact and encoder under a scoring config with ``changes``."""
    from stygig.engine import Recommender as _Recommender

    return _Recommender(
        recommender.artifact,
        encoder=recommender.encoder,
        config=replace(recommender.config, **changes),
    )

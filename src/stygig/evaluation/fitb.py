"""Fill-in-the-blank (FITB) on stylist outfits, and outfit compatibility AUC.

A question hides one item of a test outfit; the candidates are the hidden item and three items
of the same product type taken from other outfits, drawn either

* ``uniform``: uniformly over the distinct same-type items, or
* ``matched``: proportionally to how many outfits each item appears in (the very weighting that
  a hidden item, picked from an outfit, carries), so that popularity alone cannot tell them apart.

A scorer gives each candidate a number given the rest of the outfit; the highest wins, ties are
broken by a seeded coin. Questions depend only on ``(seed, outfits file, item types)`` and are
written as JSONL, so any outfits file in the ``cod_outfit,cod_modelo_color`` format can be scored.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from stygig.errors import CatalogError

if TYPE_CHECKING:
    from stygig.artifact import Artifact
    from stygig.engine import Recommender
    from stygig.scoring import CompatMode, ScoringConfig

__all__ = [
    "SAMPLINGS",
    "Question",
    "Scorer",
    "answer",
    "auc",
    "compatibility_auc",
    "engine_scorers",
    "evaluate_outfits",
    "fitb_accuracy",
    "make_questions",
    "occurrences",
    "read_outfits",
    "read_questions",
    "write_questions",
]

SAMPLINGS = ("uniform", "matched")

#: ``scorer(given_ids, candidate_ids) -> one score per candidate`` (higher = better completion).
Scorer = Callable[[Sequence[str], Sequence[str]], np.ndarray]


@dataclass(frozen=True)
class Question:
    """One FITB question: the visible items, the candidates and which one was hidden."""

    outfit: str
    given: tuple[str, ...]
    hidden: str
    candidates: tuple[str, ...]
    answer: int
    sampling: str
    item_type: str
    cold_start: bool

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Question:
        """Inverse of :func:`dataclasses.asdict` (lists back to tuples)."""
        return cls(
            outfit=str(data["outfit"]),
            given=tuple(data["given"]),
            hidden=str(data["hidden"]),
            candidates=tuple(data["candidates"]),
            answer=int(data["answer"]),
            sampling=str(data["sampling"]),
            item_type=str(data["item_type"]),
            cold_start=bool(data["cold_start"]),
        )


def read_outfits(path: str | Path) -> dict[str, list[str]]:
    """``{outfit id: [item ids in file order]}`` from a ``cod_outfit,cod_modelo_color`` CSV."""
    path = Path(path)
    if not path.is_file():
        raise CatalogError(f"outfits file not found: {path}")
    outfits: dict[str, list[str]] = {}
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if not {"cod_outfit", "cod_modelo_color"} <= set(reader.fieldnames or ()):
            raise CatalogError(f"{path}: expected columns cod_outfit,cod_modelo_color")
        for row in reader:
            outfit, item = (
                (row["cod_outfit"] or "").strip(),
                (row["cod_modelo_color"] or "").strip(),
            )
            if outfit and item and item not in outfits.setdefault(outfit, []):
                outfits[outfit].append(item)
    return outfits


def occurrences(outfits: Iterable[Sequence[str]]) -> Counter[str]:
    """How many outfits each item appears in."""
    return Counter(item for outfit in outfits for item in set(outfit))


def _type_pools(
    outfits: Mapping[str, Sequence[str]], types: Mapping[str, str]
) -> tuple[dict[str, list[str]], Counter[str], dict[str, list[str]]]:
    """Outfits without untyped items, how often each item occurs, and the items of each type."""
    clean = {o: [i for i in items if i in types] for o, items in outfits.items()}
    counts = occurrences(clean.values())
    pools: dict[str, list[str]] = {}
    for item in sorted(counts):
        pools.setdefault(types[item], []).append(item)
    return clean, counts, pools


def make_questions(
    outfits: Mapping[str, Sequence[str]],
    types: Mapping[str, str],
    test_ids: Sequence[str],
    train_ids: Sequence[str],
    *,
    seed: int = 0,
    negatives: int = 3,
) -> list[Question]:
    """One question per test outfit and sampling (see the module docstring).

    Items without a type (not in the catalogue) are dropped from outfits first; outfits left
    with fewer than two items, or whose hidden item has too few same-type alternatives, are
    skipped. The hidden item is the same for both samplings of an outfit.
    """
    clean, counts, pools = _type_pools(outfits, types)
    trained = set(occurrences(clean[o] for o in train_ids if o in clean))
    pool_weights = {t: np.array([counts[i] for i in p], np.float64) for t, p in pools.items()}
    questions: list[Question] = []
    for k, outfit in enumerate(sorted(test_ids)):
        items = clean.get(outfit, [])
        if len(items) < 2:
            continue
        hidden = items[int(np.random.default_rng([seed, k, 0]).integers(len(items)))]
        kind = types[hidden]
        in_outfit = set(items)
        allowed = np.array([i not in in_outfit for i in pools[kind]], bool)
        if allowed.sum() < negatives:
            continue
        for s, sampling in enumerate(SAMPLINGS):
            rng = np.random.default_rng([seed, k, s + 1])
            weights = pool_weights[kind] * allowed if sampling == "matched" else allowed * 1.0
            picked = rng.choice(len(weights), negatives, replace=False, p=weights / weights.sum())
            candidates = [hidden, *(pools[kind][j] for j in picked)]
            order = rng.permutation(len(candidates))
            questions.append(
                Question(
                    outfit=outfit,
                    given=tuple(i for i in items if i != hidden),
                    hidden=hidden,
                    candidates=tuple(candidates[j] for j in order),
                    answer=int(np.flatnonzero(order == 0)[0]),
                    sampling=sampling,
                    item_type=kind,
                    cold_start=hidden not in trained,
                )
            )
    return questions


def write_questions(questions: Iterable[Question], path: Path) -> Path:
    """One JSON object per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for q in questions:
            handle.write(json.dumps(asdict(q)) + "\n")
    return path


def read_questions(path: Path) -> list[Question]:
    """Questions written by :func:`write_questions`."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [Question.from_dict(json.loads(line)) for line in lines if line.strip()]


def answer(questions: Sequence[Question], scorer: Scorer, *, seed: int = 0) -> np.ndarray:
    """Index of the chosen candidate per question (ties broken by a seeded coin)."""
    rng = np.random.default_rng(seed)
    out = np.empty(len(questions), np.int64)
    for n, q in enumerate(questions):
        scores = np.asarray(scorer(q.given, q.candidates), np.float64)
        best = np.flatnonzero(scores >= scores.max() - 1e-9)
        out[n] = int(best[rng.integers(len(best))]) if len(best) > 1 else int(best[0])
    return out


def fitb_accuracy(
    questions: Sequence[Question], scorer: Scorer, *, seed: int = 0
) -> dict[str, dict[str, float | int]]:
    """Accuracy per sampling, overall and on the cold-start subset."""
    chosen = answer(questions, scorer, seed=seed)
    right = chosen == np.array([q.answer for q in questions], np.int64)
    out: dict[str, dict[str, float | int]] = {}
    for sampling in SAMPLINGS:
        mask = np.array([q.sampling == sampling for q in questions], bool)
        cold = mask & np.array([q.cold_start for q in questions], bool)
        out[sampling] = {
            "accuracy": float(right[mask].mean()) if mask.any() else float("nan"),
            "n": int(mask.sum()),
            "cold_start_accuracy": float(right[cold].mean()) if cold.any() else float("nan"),
            "cold_start_n": int(cold.sum()),
        }
    return out


def auc(positive: npt.ArrayLike, negative: npt.ArrayLike) -> float:
    """Area under the ROC curve: P(positive > negative), ties counting one half."""
    pos, neg = np.asarray(positive, np.float64), np.asarray(negative, np.float64)
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    values = np.concatenate([pos, neg])
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), np.float64)
    sorted_vals = values[order]
    # Average ranks over runs of equal values (1-based ranks).
    starts = np.flatnonzero(np.r_[True, sorted_vals[1:] != sorted_vals[:-1]])
    ends = np.r_[starts[1:], len(values)]
    for a, b in zip(starts, ends, strict=True):
        ranks[order[a:b]] = (a + b + 1) / 2.0
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u / (pos.size * neg.size))


def outfit_score(items: Sequence[str], scorer: Scorer) -> float:
    """Mean pairwise score: each item scored as a completion of each other item."""
    scores = [np.asarray(scorer([a], [b for b in items if b != a])) for a in items]
    return float(np.mean(np.concatenate(scores)))


def compatibility_auc(
    outfits: Mapping[str, Sequence[str]],
    types: Mapping[str, str],
    test_ids: Sequence[str],
    scorers: Mapping[str, Scorer],
    *,
    seed: int = 0,
) -> dict[str, float | int]:
    """AUC of real test outfits against the same outfits with every item swapped for a
    uniformly drawn item of the same type (from the outfits file, never one already in it)."""
    clean, _, pools = _type_pools(outfits, types)
    real: list[list[str]] = []
    fake: list[list[str]] = []
    for k, outfit in enumerate(sorted(test_ids)):
        items = clean.get(outfit, [])
        if len(items) < 2:
            continue
        rng = np.random.default_rng([seed, k, 9])
        swapped = []
        for item in items:
            choices = [c for c in pools[types[item]] if c not in items and c not in swapped]
            if not choices:
                break
            swapped.append(choices[int(rng.integers(len(choices)))])
        if len(swapped) == len(items):
            real.append(items)
            fake.append(swapped)
    out: dict[str, float | int] = {"n_outfits": len(real)}
    for name, scorer in scorers.items():
        pos = [outfit_score(o, scorer) for o in real]
        neg = [outfit_score(o, scorer) for o in fake]
        out[name] = auc(pos, neg)
    return out


def engine_scorers(recommender: Recommender, train_counts: Mapping[str, int]) -> dict[str, Scorer]:
    """The V4 engine and the baselines, all as :data:`Scorer` functions."""
    from stygig.color import harmony

    pos = recommender.artifact.positions
    emb, hsl, rules = recommender.embeddings, recommender.columns.hsl, recommender.harmony_rules

    def rows(ids: Sequence[str]) -> np.ndarray:
        return np.array([pos[i] for i in ids], np.int64)

    def cosine(given: Sequence[str], cands: Sequence[str]) -> np.ndarray:
        out: np.ndarray = (emb[rows(cands)] @ emb[rows(given)].T).mean(axis=1)
        return out

    def colour(given: Sequence[str], cands: Sequence[str]) -> np.ndarray:
        c = hsl[rows(cands)]
        out: np.ndarray = np.mean([harmony(hsl[g], c, rules)[0] for g in rows(given)], axis=0)
        return out

    def popularity(given: Sequence[str], cands: Sequence[str]) -> np.ndarray:
        return np.array([train_counts.get(c, 0) for c in cands], np.float64)

    def random(given: Sequence[str], cands: Sequence[str]) -> np.ndarray:
        return np.zeros(len(cands))

    return {
        "v4": recommender.score_items,
        "cosine": cosine,
        "harmony": colour,
        "popularity": popularity,
        "random": random,
    }


def evaluate_outfits(
    artifact: Artifact,
    outfits_file: Path,
    out_dir: Path,
    *,
    seed: int = 0,
    limit: int | None = None,
) -> dict[str, Any]:
    """FITB accuracy (both samplings, cold start), compatibility AUC and baselines.

    Item types are the catalogue's native ``des_product_type`` (else the canonical category).
    The questions are written to ``<out_dir>/fitb-<outfits file stem>-seed<seed>.jsonl``.
    """
    from stygig.engine import Recommender
    from stygig.evaluation.category import whitened_artifact
    from stygig.evaluation.split import split_ids
    from stygig.whitening import Whitening

    types = item_types(artifact)
    outfits = read_outfits(outfits_file)
    train, test = split_ids(list(outfits), seed=seed)
    if limit is not None:
        test = test[:limit]
    questions = make_questions(outfits, types, test, train, seed=seed)
    path = write_questions(questions, out_dir / f"fitb-{outfits_file.stem}-seed{seed}.jsonl")
    train_counts = occurrences(outfits[o] for o in train)
    # "v4" is the rules alone, whatever the packaged compat_mode says.
    recommender = Recommender(artifact, config=scoring_config("rules"))
    scorers = engine_scorers(recommender, train_counts)
    if artifact.compat is not None:
        # The learned model (stygig train-compat) was trained on train outfits of the same
        # split of outfits.csv; its test outfits are the ones scored here.
        for mode in ("learned", "learned+rules"):
            scorers[mode] = Recommender(
                artifact, encoder=recommender.encoder, config=scoring_config(mode)
            ).score_items
    # Whitening fitted on the whole MANGO catalogue, as a build would: no outfit is seen.
    whitening = Whitening.fit(np.asarray(artifact.embeddings, np.float32))
    if whitening.dim == artifact.embeddings.shape[1]:
        white = whitened_artifact(artifact, whitening.apply(artifact.embeddings))
        more = engine_scorers(
            Recommender(white, encoder=recommender.encoder, config=recommender.config),
            train_counts,
        )
        scorers |= {"v4_whitened": more["v4"], "cosine_whitened": more["cosine"]}
    accuracy = {name: fitb_accuracy(questions, s, seed=seed) for name, s in scorers.items()}
    compat = compatibility_auc(
        outfits,
        types,
        test,
        {k: v for k, v in scorers.items() if k not in ("popularity", "random")},
        seed=seed,
    )
    in_catalog = sum(1 for items in outfits.values() for i in items if i in types)
    return {
        "outfits_file": str(outfits_file),
        "compat_model": artifact.manifest.get("compat"),
        "questions_file": str(path),
        "split": {"train_outfits": len(train), "test_outfits": len(test)},
        "outfit_items": sum(len(v) for v in outfits.values()),
        "outfit_items_in_catalog": in_catalog,
        "questions": len(questions),
        "accuracy": accuracy,
        "auc": compat,
    }


def item_types(artifact: Artifact) -> dict[str, str]:
    """Each item's product type: the native ``des_product_type``, else the canonical category."""
    return {i.id: i.attributes.get("des_product_type") or i.category for i in artifact.items}


def scoring_config(compat_mode: CompatMode) -> ScoringConfig:
    """The packaged scoring configuration with ``compat_mode`` (``rules``: the V4 rules alone,
    as FITB's "v4" and the trainer's rules scorer both use them)."""
    from dataclasses import replace

    from stygig.scoring import ScoringConfig

    return replace(ScoringConfig.load(), compat_mode=compat_mode)

"""Fill-in-the-blank (FITB) on stylist outfits, outfit compatibility AUC, and what statistics
alone achieve on the same questions.

A question hides one item of a test outfit; the candidates are the hidden item and three items
of the same product type taken from other outfits, drawn either

* ``uniform``: uniformly over the distinct same-type items,
* ``matched``: proportionally to how many outfits each item appears in (the very weighting that
  a hidden item, picked from an outfit, carries), so that popularity alone cannot tell them
  apart: the headline figure, or
* ``collection``: the same-type items whose reference numbers are nearest the hidden item's
  (MANGO's ``cod_modelo_color`` model number: neighbours are the same collection drop), a
  different garment each (hard negatives), or
* ``cold``: only for a hidden item in no train outfit, uniformly over the same-type items in no
  train outfit either: cold start where no candidate has a history. (An unseen answer among
  matched negatives is nearly always the one candidate without history: the rule "pick the
  one never styled" answered 89 % of those, review of session 53.)

A scorer gives each candidate a number given the rest of the outfit; the highest wins, ties are
broken by a seeded coin. Answers are *seen* (the hidden item is in a train outfit, one the model
learned from) or *unseen* (cold start). Questions depend only on ``(seed, outfits, item types)``
(an outfit's items are drawn from in sorted order, so listing them otherwise asks the same
questions) and are written as JSONL, so any outfits file in the ``cod_outfit,cod_modelo_color`` format can
be scored. The compatibility AUC sets real test outfits against the same outfits with every item
swapped, and with one item swapped, for a random item of the same type.
"""

from __future__ import annotations

import csv
import functools
import json
import logging
import re
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from stygig.catalog.schema import MAX_ID, id_problem
from stygig.errors import ArtifactError, CatalogError, ConfigError
from stygig.evaluation.split import outfits_fingerprint

if TYPE_CHECKING:
    from stygig.artifact import Artifact
    from stygig.engine import Recommender
    from stygig.scoring import CompatMode, ScoringConfig

__all__ = [
    "HEADLINE",
    "SAMPLINGS",
    "Question",
    "Scorer",
    "answer",
    "auc",
    "check_model_split",
    "compatibility_auc",
    "engine_scorers",
    "evaluate_outfits",
    "fitb_accuracy",
    "make_questions",
    "occurrences",
    "read_outfits",
    "read_questions",
    "reference_number",
    "statistics_scorers",
    "write_questions",
]

SAMPLINGS = ("uniform", "matched", "collection", "cold")
#: The scorers that are outfit statistics alone (train outfits, no model, no content).
STATISTICS = (
    "cooccurrence",
    "cooccurrence+popularity",
    "cooccurrence+absence",
    "popularity",
    "no-history",
)
#: The figure to read first: popularity alone is at chance on it.
HEADLINE = "matched"
_REFERENCE = re.compile(r"(\d+)")
# Train outfits are keyed apart from a separate test file's ids (``--test-outfits``).
_TRAIN_KEY = "\x00train:"

#: ``scorer(given_ids, candidate_ids) -> one score per candidate`` (higher = better completion).
Scorer = Callable[[Sequence[str], Sequence[str]], np.ndarray]

log = logging.getLogger(__name__)


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


#: The most items an outfit may hold (MANGO's largest: 13). A larger one is not a look but a
#: list (a catalogue dump under one id, say): its pairs grow with its square, and one outfit
#: of 881 items made training ask for 50 GB. Such outfits are left out, and said.
MAX_OUTFIT_ITEMS = 50


def read_outfits(path: str | Path, *, warn: bool = True) -> dict[str, list[str]]:
    """``{outfit id: [item ids in file order]}`` from a ``cod_outfit,cod_modelo_color`` CSV
    (an item listed twice in an outfit counts once; outfits of more than
    :data:`MAX_OUTFIT_ITEMS` items are left out with a warning, and so are rows without both
    values). A file that cannot be what it claims is refused, naming the line: a column
    named twice, or a value that is no id (an unclosed quote swallowed the next rows into
    one "id" with line breaks, audit of session 47; control characters, over 200
    characters). ``warn``: off for a read that only checks the file (the run reads it again
    and warns then: eval printed each warning twice; review, session 51)."""
    path = Path(path)
    if path.is_dir():
        raise CatalogError(f"outfits file {path} is a folder")
    if not path.is_file():
        raise CatalogError(f"outfits file not found: {path}")
    outfits: dict[str, dict[str, None]] = {}  # ordered sets: a membership test is O(1)
    incomplete = 0
    checked: set[str] = set()  # item ids found valid (most appear in several outfits)
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(_bounded_lines(handle, path))
        start = 1  # the line the row being read begins on (a quoted field may span lines)
        try:
            names = reader.fieldnames or ()
            if not {"cod_outfit", "cod_modelo_color"} <= set(names):
                raise CatalogError(f"{path}: expected columns cod_outfit,cod_modelo_color")
            if len(set(names)) != len(names):
                raise CatalogError(f"{path}: the header names a column twice")
            while True:
                start = reader.line_num + 1
                row = next(reader, None)
                if row is None:
                    break
                outfit, item = (
                    (row["cod_outfit"] or "").strip(),
                    (row["cod_modelo_color"] or "").strip(),
                )
                if not (outfit and item):
                    incomplete += 1
                    continue
                if outfit not in outfits and (problem := _outfit_id_problem(outfit)):
                    raise CatalogError(f"{path}, line {start}: cod_outfit: {problem}")
                if item not in checked and (problem := id_problem(item)):
                    raise CatalogError(f"{path}, line {start}: cod_modelo_color: {problem}")
                checked.add(item)
                outfits.setdefault(outfit, {})[item] = None
        except UnicodeDecodeError:
            # Text is decoded ahead in blocks: the line is found in the bytes (review, s51:
            # a bad byte on line 3 was reported on line 1).
            raise CatalogError(f"{path}: not UTF-8 text (line {_undecodable_line(path)})") from None
        except csv.Error as e:
            raise CatalogError(f"{path}, line {start}: not a CSV row ({e})") from None
    if incomplete and warn:
        log.warning("%s: %d row(s) without an outfit or an item left out", path, incomplete)
    large = [o for o, items in outfits.items() if len(items) > MAX_OUTFIT_ITEMS]
    if large and warn:
        log.warning(
            "%s: %d outfit(s) of more than %d items left out (an outfit is a look of a few "
            "garments), e.g. %r",
            path,
            len(large),
            MAX_OUTFIT_ITEMS,
            large[0][:60],
        )
    return {o: list(items) for o, items in outfits.items() if len(items) <= MAX_OUTFIT_ITEMS}


#: The longest line an outfits file may have (two ids of at most MAX_ID characters and a few
#: more columns fit many times over): a longer one is refused as it is read, so one line of
#: 1 GB is not held whole first (review, session 51: 2.2 GB before its refusal).
MAX_LINE_CHARS = 1 << 16


def _bounded_lines(handle: TextIO, path: Path) -> Iterator[str]:
    """The file's lines, each read at most :data:`MAX_LINE_CHARS` characters at a time."""
    number = 0
    while line := handle.readline(MAX_LINE_CHARS + 1):
        number += 1
        if len(line) > MAX_LINE_CHARS:
            raise CatalogError(f"{path}, line {number}: over {MAX_LINE_CHARS:,} characters")
        yield line


def _undecodable_line(path: Path) -> int:
    """The number of the first line of ``path`` that is not UTF-8 (lines read bounded)."""
    with path.open("rb") as raw:
        number = 0
        while line := raw.readline(MAX_LINE_CHARS * 4 + 1):
            number += 1
            try:
                (line[3:] if number == 1 and line.startswith(b"\xef\xbb\xbf") else line).decode()
            except UnicodeDecodeError:
                return number
    return number


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _outfit_id_problem(value: str) -> str | None:
    """Why ``value`` cannot be an outfit id (None: it can)."""
    if len(value) > MAX_ID or _CONTROL.search(value):
        return f"an id is 1 to {MAX_ID} characters, without line breaks or control characters"
    return None


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


def reference_number(item: str) -> int | None:
    """The model number leading an item id (MANGO ``51000622-02`` -> 51000622), else None."""
    match = _REFERENCE.match(item)
    return int(match.group(1)) if match else None


def outfit_key(outfit: str) -> int:
    """What an outfit's draws (its hidden item, negatives, swaps) are seeded with beside the
    run's seed: its own id, so a file that shares outfits with another shares their questions
    (they were seeded by the outfit's place in the sorted list: one added line redrew every
    question and moved the headline by up to 15 points: review, session 42)."""
    return zlib.crc32(outfit.encode("utf-8", "surrogatepass"))


def make_questions(
    outfits: Mapping[str, Sequence[str]],
    types: Mapping[str, str],
    test_ids: Sequence[str],
    train_ids: Sequence[str],
    *,
    seed: int = 0,
    negatives: int = 3,
    samplings: Sequence[str] = SAMPLINGS,
) -> list[Question]:
    """One question per test outfit and sampling (see the module docstring).

    Items without a type (not in the catalogue) are dropped from outfits first; outfits left
    with fewer than two items, or whose hidden item has too few same-type alternatives, are
    skipped (``collection`` also when the ids carry no reference numbers). The hidden item is
    the same for every sampling of an outfit, and each sampling draws from its own generator,
    so asking for fewer samplings leaves the others' questions unchanged; every draw is seeded
    by ``seed`` and the outfit's id (:func:`outfit_key`), not by its place among the others,
    and an outfit's items are drawn from sorted, not in the order the file lists them (which
    moved a small file's headline by 10 points: review, session 53). ``cold_start``: the
    hidden item is in none of the ``train_ids`` outfits.
    """
    unknown = set(samplings) - set(SAMPLINGS)
    if unknown:
        raise ConfigError(f"unknown FITB sampling {sorted(unknown)}; choose from {SAMPLINGS}")
    clean, counts, pools = _type_pools(outfits, types)
    trained = set(occurrences(clean[o] for o in train_ids if o in clean))
    pool_weights = {t: np.array([counts[i] for i in p], np.float64) for t, p in pools.items()}
    pool_refs = {
        t: np.array([reference_number(i) or -1 for i in p], np.int64) for t, p in pools.items()
    }
    questions: list[Question] = []
    untrained = {t: np.array([i not in trained for i in p], bool) for t, p in pools.items()}
    for outfit in sorted(test_ids):
        items = sorted(set(clean.get(outfit, [])))
        if len(items) < 2:
            continue
        k = outfit_key(outfit)
        hidden = items[int(np.random.default_rng([seed, k, 0]).integers(len(items)))]
        kind = types[hidden]
        in_outfit = set(items)
        allowed = np.array([i not in in_outfit for i in pools[kind]], bool)
        if allowed.sum() < negatives:
            continue
        for s, sampling in enumerate(SAMPLINGS):
            if sampling not in samplings:
                continue
            rng = np.random.default_rng([seed, k, s + 1])
            if sampling == "cold":
                fresh = allowed & untrained[kind]
                if hidden in trained or fresh.sum() < negatives:
                    continue
                picked = rng.choice(len(fresh), negatives, replace=False, p=fresh / fresh.sum())
            elif sampling == "collection":
                near = _nearest_references(hidden, pool_refs[kind], allowed, negatives, rng)
                if near is None:
                    continue
                picked = near
            else:
                weights = pool_weights[kind] * allowed if sampling == "matched" else allowed * 1.0
                picked = rng.choice(
                    len(weights), negatives, replace=False, p=weights / weights.sum()
                )
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


def _nearest_references(
    hidden: str, refs: np.ndarray, allowed: np.ndarray, negatives: int, rng: np.random.Generator
) -> np.ndarray | None:
    """Pool positions of the ``negatives`` items nearest ``hidden`` by reference number (not
    its own model: another colour of the same garment is no wrong answer); ties by a coin."""
    own = reference_number(hidden)
    if own is None:
        return None
    usable = np.flatnonzero(allowed & (refs >= 0) & (refs != own))
    if len(usable) < negatives:
        return None
    distance = np.abs(refs[usable] - own)
    order = np.lexsort((rng.random(len(usable)), distance))
    out: np.ndarray = usable[order[:negatives]]
    return out


def write_questions(questions: Iterable[Question], path: Path) -> Path:
    """One JSON object per line, in a new file: another run's questions are never replaced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        handle = path.open("x", encoding="utf-8")
    except FileExistsError as e:
        raise ConfigError(
            f"questions file {path.name} exists already; every run writes its own"
        ) from e
    with handle:
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
    """Accuracy per sampling present: overall, on unseen (cold-start) and on seen answers."""
    return _accuracy(questions, answer(questions, scorer, seed=seed))


def _accuracy(
    questions: Sequence[Question], chosen: np.ndarray
) -> dict[str, dict[str, float | int]]:
    """:func:`fitb_accuracy` of the candidates ``chosen`` for ``questions``."""
    right = chosen == np.array([q.answer for q in questions], np.int64)
    cold_all = np.array([q.cold_start for q in questions], bool)
    out: dict[str, dict[str, float | int]] = {}
    for sampling in SAMPLINGS:
        mask = np.array([q.sampling == sampling for q in questions], bool)
        if not mask.any() and sampling not in ("uniform", "matched"):
            continue
        cold, seen = mask & cold_all, mask & ~cold_all
        out[sampling] = {
            "accuracy": _share(right, mask),
            "n": int(mask.sum()),
            "cold_start_accuracy": _share(right, cold),
            "cold_start_n": int(cold.sum()),
            "seen_accuracy": _share(right, seen),
            "seen_n": int(seen.sum()),
        }
    return out


def _share(right: np.ndarray, mask: np.ndarray) -> float:
    return float(right[mask].mean()) if mask.any() else float("nan")


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


#: How an outfit's items make one outfit score: ``"weakest"``, the lowest of the items' scores
#: as the completion of all the others (an outfit is as good as its least fitting item: what
#: ``POST /v1/outfits/score`` reports); ``"pairs"``, the mean over ordered pairs (the first
#: round's measure, kept beside it).
OUTFIT_AGGREGATES = ("weakest", "pairs")


def outfit_score(items: Sequence[str], scorer: Scorer, aggregate: str = "weakest") -> float:
    """One score for an outfit (:data:`OUTFIT_AGGREGATES`)."""
    if aggregate == "pairs":
        scores = [np.asarray(scorer([a], [b for b in items if b != a])) for a in items]
        return float(np.mean(np.concatenate(scores)))
    if aggregate != "weakest":
        raise ConfigError(f"outfit aggregate must be one of {OUTFIT_AGGREGATES}, not {aggregate!r}")
    return min(float(np.asarray(scorer([b for b in items if b != a], [a]))[0]) for a in items)


def compatibility_auc(
    outfits: Mapping[str, Sequence[str]],
    types: Mapping[str, str],
    test_ids: Sequence[str],
    scorers: Mapping[str, Scorer],
    *,
    seed: int = 0,
    swap: str = "all",
    aggregate: str = "weakest",
) -> dict[str, float | int]:
    """AUC of real test outfits against the same outfits with items swapped for uniformly drawn
    items of the same type (from the outfits, never one already in the outfit).

    ``swap="all"``: every item swapped (mixes lines and collections: easy); ``"one"``: one item
    (seeded) swapped, the rest kept, so the score must notice a single misfit. Outfits are
    scored by :func:`outfit_score` with ``aggregate``.
    """
    if swap not in ("all", "one"):
        raise ConfigError(f"swap must be 'all' or 'one', not {swap!r}")
    clean, _, pools = _type_pools(outfits, types)
    real: list[list[str]] = []
    fake: list[list[str]] = []
    for outfit in sorted(test_ids):
        items = sorted(set(clean.get(outfit, [])))  # as listed or not: the same swaps
        if len(items) < 2:
            continue
        rng = np.random.default_rng([seed, outfit_key(outfit), 9 if swap == "all" else 10])
        targets = range(len(items)) if swap == "all" else [int(rng.integers(len(items)))]
        swapped = list(items)
        for n in targets:
            taken = set(items) | set(swapped)
            choices = [c for c in pools[types[items[n]]] if c not in taken]
            if not choices:
                break
            swapped[n] = choices[int(rng.integers(len(choices)))]
        else:
            real.append(items)
            fake.append(swapped)
    out: dict[str, float | int] = {"n_outfits": len(real)}
    for name, scorer in scorers.items():
        pos = [outfit_score(o, scorer, aggregate) for o in real]
        neg = [outfit_score(o, scorer, aggregate) for o in fake]
        out[name] = auc(pos, neg)
    return out


def statistics_scorers(train_outfits: Iterable[Sequence[str]]) -> dict[str, Scorer]:
    """What outfit statistics alone achieve (counted on the train outfits only):

    * ``cooccurrence``: how many train outfits hold the candidate with each visible item, summed;
    * ``cooccurrence+popularity``: the same, ties broken by the candidate's train outfit count;
    * ``cooccurrence+absence``: the same, ties broken by how few visible items the candidate
      was *never* styled with although both were styled (the learned model's absence term, as
      a statistic: it favours an item without history over one that had its chances);
    * ``no-history``: 1 for a candidate in no train outfit, else 0 (no content at all: the
      answer of a matched question with an unseen answer is nearly always the one candidate
      without history, so this rule is what the unseen figure must be read against);
    * ``popularity`` (popular-by-type: all candidates share the type) is in
      :func:`engine_scorers`.
    """
    from stygig.compat.model import Cooccurrence

    outfits = [list(dict.fromkeys(o)) for o in train_outfits]
    counts = occurrences(outfits)
    table = Cooccurrence.from_outfits(outfits)
    top = float(max(counts.values(), default=0) + 1)

    def cooccurrence(given: Sequence[str], cands: Sequence[str]) -> np.ndarray:
        pairs = table.lookup(table.codes(tuple(given)), table.codes(tuple(cands)))
        out: np.ndarray = pairs.sum(axis=0).astype(np.float64)
        return out

    def with_popularity(given: Sequence[str], cands: Sequence[str]) -> np.ndarray:
        pop = np.array([counts.get(c, 0) for c in cands], np.float64)
        out: np.ndarray = cooccurrence(given, cands) * top + pop
        return out

    def with_absence(given: Sequence[str], cands: Sequence[str]) -> np.ndarray:
        q, c = table.codes(tuple(given)), table.codes(tuple(cands))
        absent = Cooccurrence.absent(q, c, table.lookup(q, c)).sum(axis=0)
        out: np.ndarray = cooccurrence(given, cands) * (len(given) + 1) - absent
        return out

    def no_history(given: Sequence[str], cands: Sequence[str]) -> np.ndarray:
        return np.array([counts.get(c, 0) == 0 for c in cands], np.float64)

    return {
        "cooccurrence": cooccurrence,
        "cooccurrence+popularity": with_popularity,
        "cooccurrence+absence": with_absence,
        "no-history": no_history,
    }


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


def check_model_split(
    artifact: Artifact,
    outfits: Mapping[str, Sequence[str]],
    train_ids: Sequence[str],
    *,
    seed: int,
    outfits_name: str,
) -> dict[str, Any] | None:
    """The artifact's compatibility model's training split, once checked to be this one.

    Raises :class:`~stygig.errors.ArtifactError` when the model was trained on other outfits
    than ``train_ids`` (another seed, another outfits file) or does not say what it was trained
    on: its "held-out" questions would include outfits it learned from (``eval --seed 1`` on the
    seed-0 model reported 93.3 % / 89.1 %). None when the artifact has no model.
    """
    model = artifact.compat
    if model is None:
        return None
    ours = outfits_fingerprint(outfits, train_ids)
    recorded = model.training_split
    if recorded is None:
        raise ArtifactError(
            "the artifact's compatibility model does not record the outfits it was trained on "
            "(trained before this check existed), so it cannot be scored fairly: retrain it "
            f"with `stygig train-compat --outfits {outfits_name} --seed {seed} ...`",
            code="compat_split_unknown",
        )
    theirs = str(recorded.get("train_fingerprint"))
    if theirs != ours or recorded.get("seed") != seed:
        same_file = recorded.get("outfits_fingerprint") == outfits_fingerprint(outfits)
        raise ArtifactError(
            "the artifact's compatibility model was trained on "
            f"{'' if same_file else 'another outfits file, '}split seed {recorded.get('seed')} "
            f"({_count(recorded.get('train_outfits'))} train outfits, fingerprint {theirs[:12]}), "
            f"but this evaluation splits {outfits_name} with seed {seed} ({len(train_ids):,} "
            f"train outfits, fingerprint {ours[:12]}): its test outfits may include outfits "
            "the model learned from. Evaluate with the model's seed and outfits file, or "
            f"retrain for this split: `stygig train-compat --outfits {outfits_name} "
            f"--seed {seed} ...`"
            + ("" if same_file else "; to score another file's outfits use --test-outfits"),
            code="compat_split_mismatch",
        )
    return dict(recorded)


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "?"


def inside_train_outfits(
    pool: Mapping[str, Sequence[str]],
    types: Mapping[str, str],
    test: Sequence[str],
    train_outfits: Sequence[Sequence[str]],
    own: Mapping[str, int] | None = None,
) -> set[str]:
    """The test outfits (ids into ``pool``) whose catalogue items (those in ``types``, at least
    two) are all in one train outfit: identical to it, or a part of it. ``own``: a test
    outfit's own place among ``train_outfits``, which does not count (an outfit inside
    another of the same list)."""
    holding: dict[str, set[int]] = {}
    for n, outfit in enumerate(train_outfits):
        for item in outfit:
            holding.setdefault(item, set()).add(n)
    inside = set()
    for o in test:
        items = {i for i in pool.get(o, ()) if i in types}
        known = len(items) >= 2 and all(i in holding for i in items)
        if known and set.intersection(*(holding[i] for i in items)) - {(own or {}).get(o, -1)}:
            inside.add(o)
    return inside


def near_train_outfits(
    pool: Mapping[str, Sequence[str]],
    types: Mapping[str, str],
    test: Sequence[str],
    train_outfits: Sequence[Sequence[str]],
) -> set[str]:
    """The test outfits (ids into ``pool``) of at least three catalogue items (those in
    ``types``) of which one train outfit holds all but one: a train outfit with an item added
    or changed. Co-occurrence alone answers 84 % of their matched questions on MANGO (47 % of
    the others': review, session 42), so they measure memory more than held-out quality."""
    holding: dict[str, list[int]] = {}
    for n, outfit in enumerate(train_outfits):
        for item in set(outfit):
            holding.setdefault(item, []).append(n)
    near = set()
    for o in test:
        items = {i for i in pool.get(o, ()) if i in types}
        if len(items) < 3:
            continue
        shared = Counter(n for i in items for n in holding.get(i, ()))
        if shared and max(shared.values()) >= len(items) - 1:
            near.add(o)
    return near


def evaluate_outfits(
    artifact: Artifact,
    outfits_file: Path,
    out_dir: Path,
    *,
    seed: int = 0,
    limit: int | None = None,
    test_outfits_file: Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """FITB accuracy (every sampling; seen / unseen answers), compatibility AUC (every item and
    one item swapped; outfits scored by their weakest item, and by the pairs' mean with one
    item swapped), and the baselines, all on the same questions.

    ``outfits_file`` is split with ``seed`` (``split_ids``): its train outfits are what a model
    learns from, and what popularity, co-occurrence and "seen" are counted on; a model in the
    artifact must have been trained on exactly them (:func:`check_model_split`). The questions
    come from its test outfits, or from *every* outfit of ``test_outfits_file`` when given.
    Item types are the catalogue's native ``des_product_type`` (else the canonical category).
    The questions are written to ``<out_dir>/fitb-<test file stem>-seed<seed>.jsonl``, a new
    file (``out_dir`` is the run's own folder).
    """
    from stygig.engine import Recommender
    from stygig.evaluation.category import whitened_artifact
    from stygig.evaluation.split import split_ids
    from stygig.whitening import Whitening

    types = item_types(artifact)
    outfits = read_outfits(outfits_file)
    train, test = split_ids(list(outfits), seed=seed)
    model_split = check_model_split(
        artifact, outfits, train, seed=seed, outfits_name=outfits_file.name
    )
    questions_from = outfits_file
    pool: Mapping[str, Sequence[str]] = outfits
    train_keys = train
    if test_outfits_file is not None:
        # Every outfit of the file is a test outfit; negatives come from it and the train
        # outfits; "seen" still means "in a train outfit" (what the model learned from).
        others = read_outfits(test_outfits_file)
        questions_from = test_outfits_file
        train_keys = [_TRAIN_KEY + o for o in train]
        pool = {**{_TRAIN_KEY + o: outfits[o] for o in train}, **others}
        test = sorted(others)
    train_sets = {frozenset(outfits[o]) for o in train}
    identical = sum(frozenset(pool[o]) in train_sets for o in test if o in pool)
    # A test outfit whose catalogue items all sit in one train outfit (the same outfit under
    # another id, or a part of one) asks what the model was shown: left out of every question
    # and AUC, and counted (MANGO seed 0: co-occurrence alone answers 97.5 % of those).
    inside = inside_train_outfits(pool, types, test, [outfits[o] for o in train])
    # A train outfit with one item added or changed: left out too, and the headline with
    # them in is reported beside (review, session 42: 15 % of MANGO's questions).
    rest = [o for o in test if o not in inside]
    near = near_train_outfits(pool, types, rest, [outfits[o] for o in train])
    # Refused: a file mostly of train outfits, or almost wholly of them with an item changed
    # (in a small catalogue, three random items share two with some train outfit by chance).
    memorised = len(inside) * 2 > len(test) or (len(inside) + len(near)) * 10 > 9 * len(test)
    if test and memorised:
        raise CatalogError(
            f"{questions_from}: {len(inside) + len(near)} of its {len(test)} test outfit(s) "
            "are (parts of) train outfits, or train outfits with one item added or changed: "
            "scoring them would measure memory of the outfits the model learned from, not "
            "held-out quality"
        )
    # --limit counts the outfits asked about (near ones left out first: review of session
    # 42's fixes), and as many near ones for the figure with them.
    test = [o for o in rest if o not in near][:limit]
    near_asked = sorted(near)[:limit]
    # Left out of the questions, and of what their negatives and swaps are drawn from (they
    # doubled train items' matched weights and moved the other outfits' questions: review,
    # session 53); the figure with the near copies draws from them, the exact repeats aside.
    asked_pool = {o: v for o, v in pool.items() if o not in inside and o not in near}
    near_pool = {o: v for o, v in pool.items() if o not in inside}
    questions = make_questions(asked_pool, types, test, train_keys, seed=seed)
    if not questions:  # every figure would be a blank over nothing: said, not reported
        found = sum(1 for o in test for i in asked_pool.get(o, ()) if i in types)
        raise CatalogError(
            f"{questions_from}: no question could be made from its {len(test)} test outfit(s) "
            f"({found} of their items are in the catalogue; a question needs an outfit of at "
            "least two catalogue items of known types)"
        )
    path = write_questions(questions, out_dir / f"fitb-{questions_from.stem}-seed{seed}.jsonl")
    train_outfits = [outfits[o] for o in train]
    train_counts = occurrences(train_outfits)
    # "v4" is the rules alone, whatever the packaged compat_mode says.
    recommender = Recommender(artifact, config=scoring_config("rules"))
    scorers = engine_scorers(recommender, train_counts)
    scorers |= statistics_scorers(train_outfits)
    # Outfit scores (the AUCs) score each item as a member of the outfit, as
    # POST /v1/outfits/score does: the model's outfit absence weight.
    as_outfit: dict[str, Scorer] = {}
    if artifact.compat is not None:
        for mode in ("learned", "learned+rules"):
            learned = Recommender(
                artifact, encoder=recommender.encoder, config=scoring_config(mode)
            )
            scorers[mode] = learned.score_items
            as_outfit[mode] = functools.partial(learned.score_items, outfit=True)
    # Whitening fitted on the whole MANGO catalogue, as a build would: no outfit is seen.
    whitening = Whitening.fit(np.asarray(artifact.embeddings, np.float32))
    white = whitened_artifact(artifact, whitening)
    more = engine_scorers(
        Recommender(white, encoder=recommender.encoder, config=recommender.config),
        train_counts,
    )
    scorers |= {"v4_whitened": more["v4"], "cosine_whitened": more["cosine"]}
    # The engine's and the statistics' figures with the near copies asked too: their
    # questions after the others, answered in the same pass (the draws that break ties come
    # in question order, so the first questions' answers are those of a pass without them).
    near_questions = make_questions(near_pool, types, near_asked, train_keys, seed=seed)
    both = [*questions, *near_questions]
    accuracy: dict[str, dict[str, dict[str, float | int]]] = {}
    with_near_copies: dict[str, dict[str, dict[str, float | int]]] = {}
    # A progress bar over the scorers (a large --test-outfits file ran minutes in silence).
    for name, scorer in tqdm(
        scorers.items(), desc=f"FITB, {len(questions):,} questions", disable=not progress
    ):
        if name not in ("learned", "learned+rules", "v4", *STATISTICS):
            accuracy[name] = fitb_accuracy(questions, scorer, seed=seed)
            continue
        chosen = answer(both, scorer, seed=seed)
        accuracy[name] = _accuracy(questions, chosen[: len(questions)])
        with_near_copies[name] = _accuracy(both, chosen)
    for_auc = {k: v for k, v in scorers.items() if k != "random"}
    outfit_auc = for_auc | as_outfit
    compat = compatibility_auc(asked_pool, types, test, outfit_auc, seed=seed, swap="all")
    single = compatibility_auc(asked_pool, types, test, outfit_auc, seed=seed, swap="one")
    # The first round's outfit score (pairs' mean of the recommendation scores), for comparison.
    single_pairs = compatibility_auc(
        asked_pool, types, test, for_auc, seed=seed, swap="one", aggregate="pairs"
    )
    # The items of the outfits the questions come from (the test file's own, when given).
    asked = outfits if test_outfits_file is None else others
    in_catalog = sum(1 for items in asked.values() for i in items if i in types)
    return {
        "outfits_file": str(outfits_file),
        "test_outfits_file": None if test_outfits_file is None else str(test_outfits_file),
        "compat_model": artifact.manifest.get("compat"),
        "model_split": model_split,
        "questions_file": str(path),
        "split": {
            "seed": seed,
            "train_outfits": len(train),
            "test_outfits": len(test),
            "train_fingerprint": outfits_fingerprint(outfits, train),
            "test_outfits_identical_to_a_train_outfit": identical,
            "test_outfits_inside_a_train_outfit_left_out": len(inside),
            "test_outfits_near_a_train_outfit_left_out": len(near),
            "test_outfits_near_a_train_outfit_asked_with_them": len(near_asked),
        },
        "outfit_items": sum(len(v) for v in asked.values()),
        "outfit_items_in_catalog": in_catalog,
        "questions": len(questions),
        "questions_per_sampling": dict(Counter(q.sampling for q in questions)),
        "accuracy": accuracy,
        "auc": compat,
        "auc_single_swap": single,
        "auc_single_swap_pair_mean": single_pairs,
        "outfit_score": (
            "weakest item, items scored as outfit members (the model's outfit absence weight); "
            "the first round: pairs' mean of recommendation scores, auc_single_swap_pair_mean"
        ),
        "accuracy_with_near_copies": with_near_copies,
        "questions_with_near_copies": len(questions) + len(near_questions),
        "headline": headline(accuracy, compat, single, with_near_copies),
    }


def headline(
    accuracy: Mapping[str, Mapping[str, Mapping[str, float | int]]],
    auc_all: Mapping[str, float | int],
    auc_one: Mapping[str, float | int],
    with_near_copies: Mapping[str, Mapping[str, Mapping[str, float | int]]] | None = None,
) -> dict[str, Any]:
    """The figures to read first, for the engine's default scorer (learned + rules when a model
    is present, else the V4 rules), beside what statistics alone reach on the same questions:
    co-occurrence + popularity (the issue's yardstick) and the best statistic."""
    name = next(n for n in ("learned+rules", "learned", "v4") if n in accuracy)
    baseline = "cooccurrence+popularity"

    def get(scorer: str, sampling: str, key: str = "accuracy") -> float:
        return float(accuracy.get(scorer, {}).get(sampling, {}).get(key, float("nan")))

    out: dict[str, Any] = {
        "scorer": name,
        "sampling": HEADLINE,
        "matched": get(name, "matched"),
        "matched_cold_start": get(name, "matched", "cold_start_accuracy"),
        "matched_seen": get(name, "matched", "seen_accuracy"),
        # What the unseen figure is read against: the rule that picks the one candidate
        # without history, no content at all; and cold start where no candidate has one.
        "matched_cold_start_no_history_rule": get("no-history", "matched", "cold_start_accuracy"),
        "cold": get(name, "cold"),
        "cold_n": get(name, "cold", "n"),
        "collection": get(name, "collection"),
        "uniform": get(name, "uniform"),
        "auc_single_swap": float(auc_one.get(name, float("nan"))),
        "auc_all_swapped": float(auc_all.get(name, float("nan"))),
        "baseline": baseline,
        "baseline_matched": get(baseline, "matched"),
    }
    out["margin_over_baseline_matched"] = out["matched"] - out["baseline_matched"]
    if with_near_copies is not None and name in with_near_copies:
        # The same figure with the test outfits near a train outfit asked too (before s42).
        out["matched_with_near_copies"] = float(
            with_near_copies[name].get("matched", {}).get("accuracy", float("nan"))
        )
    # The strongest statistic on the headline questions, whichever it is.
    stats = [n for n in STATISTICS if n in accuracy]
    if stats:
        best = max(stats, key=lambda n: get(n, "matched"))
        out["best_baseline"] = best
        out["best_baseline_matched"] = get(best, "matched")
        out["margin_over_best_baseline_matched"] = out["matched"] - out["best_baseline_matched"]
    return out


def item_types(artifact: Artifact) -> dict[str, str]:
    """Each item's product type: the native ``des_product_type``, else the canonical category."""
    return {i.id: i.attributes.get("des_product_type") or i.category for i in artifact.items}


def scoring_config(compat_mode: CompatMode) -> ScoringConfig:
    """The packaged scoring configuration with ``compat_mode`` (``rules``: the V4 rules alone,
    as FITB's "v4" and the trainer's rules scorer both use them)."""
    from dataclasses import replace

    from stygig.scoring import ScoringConfig

    return replace(ScoringConfig.load(), compat_mode=compat_mode)

"""A category head: a linear probe fitted at build time on the catalogue's own labels.

The top-5 neighbour vote (:func:`stygig.scoring.vote`) reads a photo's category off its five
nearest catalogue items. The catalogue's labels hold more than five neighbours can say: a
multinomial logistic regression over the stored embeddings (the artifact's, whitened when the
artifact is) learns which directions separate heels from flats over *every* labelled item.
At query time the two are merged (:func:`merge_votes`)::

    score(c) = head_weight * p_head(c) + (1 - head_weight) * share(c)

where ``share(c)`` is class ``c``'s part of the vote of the photo's ``vote_k`` nearest items
(:func:`neighbour_votes`): each neighbour votes ``exp((s - s1) / temperature)``, ``s1`` being
the nearest one's similarity, and a share is the class's votes over their total; temperature 0
is the plain count (``votes(c) / k``, the engine's own vote). ``head_weight``, ``vote_k`` and
``temperature`` are chosen together on the catalogue alone (:func:`cross_fit`): out-of-fold head
probabilities (k-fold, so no item is scored by a head trained on it) against leave-one-out
neighbour votes. Nothing here sees an evaluation query: the evaluation fits on its catalogue
rows only (:mod:`stygig.evaluation.category`).

**Input.** The head reads the vectors the artifact stores and the engine searches with. On a
whitened artifact those have every direction scaled to equal variance, noise included, and a
probe over them overfits (Kaggle: 84.9 % against 88.0 % on the plain vectors); so a head fitted
on whitened vectors first undoes the whitening (:func:`unwhiten`: ``normalise((y / scale) @
P.T)``, which is ``normalise(x - mean)`` exactly when every direction is kept) and records
``input: "unwhitened"``; :meth:`CategoryHead.predict_proba` then needs the artifact's
:class:`~stygig.whitening.Whitening`.

Fitting is NumPy only: full-batch Adam on the softmax cross-entropy with an L2 penalty, from
zeros, a fixed number of steps, so a fit is deterministic. Inputs are standardised per
dimension (mean and scale from the fitting rows) so one learning rate suits any encoder.

Stored as one ``.npz`` of plain arrays (no pickle), one head per labelled field
(``category``, ``subCategory``, ...): :func:`save_heads` / :func:`load_heads`;
:func:`add_category_head` adds the file to a built artifact with its checksum in the manifest,
as :func:`stygig.artifact.add_compat_model` does for the compatibility model.

**In a build** (:func:`fit_artifact_heads`, called by :func:`stygig.build.finish_build`): one
head per field in :data:`HEAD_FIELDS` (the category; the usage is supported, but its head
gained 0.2 point held out for 40 % of the fit time, so builds leave it out), each
cross-fitted against the vote the engine runs for it: for the category, the weighted vote of
:data:`VOTE_K_GRID` x :data:`TEMPERATURE_GRID` that merges best (the plain ``vote_k`` count
when nothing beats it); for the usage, the plain ``attribute_vote_k`` count. A field is skipped, with its reason in the manifest, when
fewer than :data:`MIN_CLASSES` of its classes have :data:`MIN_ITEMS_PER_CLASS` labelled items
each (too few to fit and cross-fit on), or when the cross-fit gives the head weight 0 (the vote
alone is best there: a head would cost every query time and change nothing). A catalogue of
more than :data:`MAX_FIT_ROWS` items is fitted on a seeded sample of that many.

**The gender stack** (:func:`fit_gender_stack`, fitted by :func:`fit_artifact_heads` when a
build gives the items' genders): a head over men's and women's items and a small logistic
stacker over it and the engine's gender vote (:func:`gender_stack_features`), with a gate
chosen so that the catalogue's confidently-wrong share equals the plain vote's at
``gender_min_confidence``; stored as the ``"gender"`` entry (a :class:`GenderHead`) of the same
file. It decides between :data:`GENDER_PAIR` only (:mod:`stygig.gender`).

**Serving.** The engine (:meth:`stygig.engine.Recommender.answer`) merges a photo's vote with
the head's probabilities (:meth:`CategoryHead.for_queries` folds the head, un-whitening
included, into one matrix over the stored vectors). Items added to a living catalogue, and the
artifact versions compaction writes, keep the build's heads: nothing refits them but a build.
"""

from __future__ import annotations

import functools
import json
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any

import numpy as np

from stygig.encoders.base import l2_normalize
from stygig.errors import ArtifactError, InvalidOptionsError
from stygig.npzfile import load_npz
from stygig.whitening import Whitening

__all__ = [
    "DEFAULT_HEAD_WEIGHT",
    "DEFAULT_ITERATIONS",
    "DEFAULT_L2",
    "GENDER_MIN_ITEMS",
    "GENDER_PAIR",
    "HEAD_FIELDS",
    "HEAD_FILE",
    "MAX_FIT_ROWS",
    "MIN_CLASSES",
    "MIN_ITEMS_PER_CLASS",
    "SEARCHED_FIELDS",
    "TEMPERATURE_GRID",
    "VOTE_K_GRID",
    "CategoryHead",
    "CrossFit",
    "GenderHead",
    "NeighbourVotes",
    "QueryHead",
    "add_category_head",
    "cross_fit",
    "fit_artifact_heads",
    "fit_gender_stack",
    "fold_of",
    "gender_skip_reason",
    "gender_stack_features",
    "head_entry",
    "load_artifact_heads",
    "load_heads",
    "merge_shares",
    "merge_votes",
    "neighbour_votes",
    "save_heads",
    "skip_reason",
    "unwhiten",
]

HEAD_FILE = "category_head.npz"

#: Fit settings (Kaggle, efficientnet-lite0, chosen on an inner split of the catalogue only;
#: ``docs/evaluation.md``). ``DEFAULT_HEAD_WEIGHT`` is used when no cross-fit chose one.
DEFAULT_L2 = 1e-3
DEFAULT_ITERATIONS = 300
DEFAULT_LEARNING_RATE = 0.01
DEFAULT_HEAD_WEIGHT = 0.7

#: The labelled fields a build fits heads for: the ones the engine infers by a neighbour vote.
HEAD_FIELDS = ("category",)
#: The fields whose vote (neighbours, temperature) a build's cross-fit searches
#: (:data:`VOTE_K_GRID`, :data:`TEMPERATURE_GRID`); the usage head is merged with the engine's
#: plain ``attribute_vote_k`` vote.
SEARCHED_FIELDS = ("category",)
#: A field gets a head only when at least MIN_CLASSES classes have MIN_ITEMS_PER_CLASS labelled
#: items each: fewer, and the 5-fold cross-fit has a class absent from most folds' training rows
#: (nothing to learn it from, nothing to choose a weight on).
MIN_CLASSES = 2
MIN_ITEMS_PER_CLASS = 5
#: A build fits its heads on at most this many items (a seeded sample of a larger catalogue):
#: the cross-fit's leave-one-out neighbour search costs rows squared.
MAX_FIT_ROWS = 20_000

_WEIGHT_GRID = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
#: The category vote's neighbours and temperatures a build's cross-fit searches with the head
#: weight (Kaggle efficientnet-lite0: 20 neighbours at 0.05 beat the plain 5-vote on the
#: catalogue and held out; ``docs/evaluation.md``). A stored head's are bounded by these limits.
VOTE_K_GRID = (5, 7, 10, 15, 20)
TEMPERATURE_GRID = (0.0, 0.02, 0.05, 0.1, 0.2)
MAX_VOTE_K = 64
MAX_TEMPERATURE = 1.0
MIN_TEMPERATURE = 1e-3  # below it a share is one neighbour's: use 0
_CHUNK = 1024


@dataclass(frozen=True)
class CategoryHead:
    """A fitted softmax-regression head over embeddings: ``labels[argmax]`` is its choice."""

    field: str  # "category" (the item's canonical category) or an attribute name
    labels: tuple[str, ...]  # class names, sorted; column c of ``weights``
    mean: np.ndarray  # (d,) of the fitting rows
    scale: np.ndarray  # (d,) 1 / standard deviation of the fitting rows
    weights: np.ndarray  # (d, C)
    bias: np.ndarray  # (C,)
    l2: float
    iterations: int
    n_fit: int
    head_weight: float = DEFAULT_HEAD_WEIGHT  # weight of the head against the vote
    input: str = "stored"  # "stored" vectors as they are, or "unwhitened" (see module doc)
    vote_k: int = 5  # neighbours in the vote the head is merged with (0: the engine's vote_k)
    temperature: float = 0.0  # their vote's similarity weighting (0: plain counts)

    @property
    def dim(self) -> int:
        """Width of the embeddings the head reads."""
        return int(self.mean.shape[0])

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        labels: Sequence[str | None],
        *,
        field: str = "category",
        l2: float = DEFAULT_L2,
        iterations: int = DEFAULT_ITERATIONS,
        learning_rate: float = DEFAULT_LEARNING_RATE,
        head_weight: float = DEFAULT_HEAD_WEIGHT,
        whitening: Whitening | None = None,
        vote_k: int = 5,
        temperature: float = 0.0,
    ) -> CategoryHead:
        """Fit on rows of ``x`` labelled ``labels`` (``None`` or ``""``: unlabelled, skipped).

        ``x`` are the stored vectors; ``whitening`` is the transform that made them (the
        artifact's), undone before fitting (and then needed at prediction).

        Raises:
            InvalidOptionsError: shapes that do not match, fewer than two labelled rows or
                classes, or settings out of range.
        """
        data = np.asarray(x, np.float32)
        if data.ndim != 2 or data.shape[0] != len(labels):
            raise InvalidOptionsError("category head: x must be (n, d) with one label per row")
        data = data if whitening is None else unwhiten(data, whitening)
        if l2 < 0 or iterations < 1 or learning_rate <= 0 or not 0.0 <= head_weight <= 1.0:
            raise InvalidOptionsError("category head: l2 >= 0, iterations >= 1, lr > 0")
        _check_vote(vote_k, temperature)
        keep = np.array([bool(v) for v in labels], bool)
        names = tuple(sorted({str(v) for v in labels if v}))
        if keep.sum() < 2 or len(names) < 2:
            raise InvalidOptionsError("category head needs at least 2 labelled rows and classes")
        index = {name: c for c, name in enumerate(names)}
        y = np.array([index[str(v)] for v in labels if v], np.int64)
        rows = data[keep]
        mean = rows.mean(axis=0)
        scale = 1.0 / (rows.std(axis=0) + 1e-6)
        z = (rows - mean) * scale
        weights, bias = _adam_softmax(z, y, len(names), l2, iterations, learning_rate)
        return cls(
            field=field,
            labels=names,
            mean=mean.astype(np.float32),
            scale=scale.astype(np.float32),
            weights=weights,
            bias=bias,
            l2=float(l2),
            iterations=int(iterations),
            n_fit=len(y),
            head_weight=float(head_weight),
            input="stored" if whitening is None else "unwhitened",
            vote_k=int(vote_k),
            temperature=float(temperature),
        )

    def logits(self, x: np.ndarray, whitening: Whitening | None = None) -> np.ndarray:
        """``(n, C)`` class scores of rows of ``x`` (one row may be given as a vector)."""
        data = np.asarray(x, np.float32)
        if data.ndim == 1:
            data = data[None, :]
        if self.input == "unwhitened":
            if whitening is None:
                raise InvalidOptionsError("this category head needs the artifact's whitening")
            data = unwhiten(data, whitening)
        if data.ndim != 2 or data.shape[1] != self.dim:
            raise InvalidOptionsError(
                f"category head expects {self.dim}-d vectors, not {data.shape[-1]}-d"
            )
        out: np.ndarray = ((data - self.mean) * self.scale) @ self.weights + self.bias
        return out

    def predict_proba(self, x: np.ndarray, whitening: Whitening | None = None) -> np.ndarray:
        """``(n, C)`` class probabilities, rows summing to 1, columns in :attr:`labels` order."""
        return _softmax(self.logits(x, whitening))

    def predict(self, x: np.ndarray, whitening: Whitening | None = None) -> list[str]:
        """The head's choice for each row."""
        return [self.labels[c] for c in self.predict_proba(x, whitening).argmax(axis=1)]

    def proba_for(
        self, x: np.ndarray, names: Sequence[str], whitening: Whitening | None = None
    ) -> np.ndarray:
        """Probabilities re-indexed to ``names`` (e.g. the catalogue columns' category codes):
        ``(n, len(names))``; a name the head never saw gets 0."""
        proba = self.predict_proba(x, whitening)
        out = np.zeros((proba.shape[0], len(names)), np.float32)
        index = {name: c for c, name in enumerate(self.labels)}
        for j, name in enumerate(names):
            c = index.get(name)
            if c is not None:
                out[:, j] = proba[:, c]
        return out

    def for_queries(self, whitening: Whitening | None = None) -> QueryHead | None:
        """The head folded into one ``(d, C)`` matrix over the stored vectors, for answering
        one query at a time (:class:`QueryHead`: the same probabilities, without the ``d x d``
        un-whitening product). ``None`` when it cannot be folded: a whitening whose directions
        are not orthonormal (a fitted one always is)."""
        sw = self.scale[:, None] * self.weights  # standardisation folded into the weights
        bias = (self.bias - (self.mean * self.scale) @ self.weights).astype(np.float32)
        if self.input == "stored":
            return QueryHead(np.ascontiguousarray(sw, np.float32), bias, None)
        if whitening is None:
            raise InvalidOptionsError("this category head needs the artifact's whitening")
        p = np.asarray(whitening.projection, np.float64)
        if not np.allclose(p.T @ p, np.eye(p.shape[1]), atol=1e-4):
            return None
        # unwhiten(y) = z P^T / |z P^T| with z = y / scale, and |z P^T| = |z| (orthonormal P).
        inverse = (1.0 / np.asarray(whitening.scale, np.float64))[:, None]
        folded = inverse * (p.T @ np.asarray(sw, np.float64))
        return QueryHead(
            np.ascontiguousarray(folded, np.float32),
            bias,
            np.asarray(1.0 / whitening.scale, np.float32),
        )

    def with_weight(self, head_weight: float) -> CategoryHead:
        """The same head with another weight against the vote."""
        if not 0.0 <= head_weight <= 1.0:
            raise InvalidOptionsError("head_weight must be within [0, 1]")
        return replace(self, head_weight=float(head_weight))

    def describe(self) -> dict[str, Any]:
        """Settings and size, for the manifest or a metrics file."""
        return {
            "method": "softmax-regression",
            "field": self.field,
            "classes": len(self.labels),
            "input_dim": self.dim,
            "l2": self.l2,
            "iterations": self.iterations,
            "n_fit": self.n_fit,
            "head_weight": self.head_weight,
            "vote_k": self.vote_k,
            "temperature": self.temperature,
            "input": self.input,
        }


def _check_vote(vote_k: int, temperature: float) -> None:
    """Refuse a vote outside :data:`MAX_VOTE_K` neighbours (0: the engine's configured
    ``vote_k``, what heads stored before the vote was searched used) and a temperature other
    than 0 or within ``[MIN_TEMPERATURE, MAX_TEMPERATURE]``."""
    k_ok = isinstance(vote_k, int | np.integer) and not isinstance(vote_k, bool)
    t_ok = temperature == 0.0 or MIN_TEMPERATURE <= temperature <= MAX_TEMPERATURE
    if not (k_ok and 0 <= vote_k <= MAX_VOTE_K and t_ok):
        raise InvalidOptionsError(
            f"category head: vote_k must be an integer within [0, {MAX_VOTE_K}] and temperature "
            f"0 or within [{MIN_TEMPERATURE:g}, {MAX_TEMPERATURE:g}]"
        )


@dataclass(frozen=True)
class QueryHead:
    """A :class:`CategoryHead` folded for queries (:meth:`CategoryHead.for_queries`):
    ``logits = (y @ weights) / |y * inv_scale| + bias`` on the stored vectors ``y`` (without
    ``inv_scale``: ``y @ weights + bias``)."""

    weights: np.ndarray  # (d, C)
    bias: np.ndarray  # (C,)
    inv_scale: np.ndarray | None  # 1 / the whitening's scale, for an "unwhitened" head

    def predict_proba(self, y: np.ndarray) -> np.ndarray:
        """``(n, C)`` class probabilities of rows of ``y`` (one row may be given as a vector)."""
        data = np.asarray(y, np.float32)
        if data.ndim == 1:
            data = data[None, :]
        logits = data @ self.weights
        if self.inv_scale is not None:
            norm = np.linalg.norm(data * self.inv_scale, axis=1, keepdims=True)
            logits = logits / np.maximum(norm, 1e-12)
        return _softmax(logits + self.bias)


@dataclass(frozen=True)
class GenderHead(CategoryHead):
    """The gender head (a probe over men's and women's items, as a :class:`CategoryHead`) with
    the stacked decision fitted over it (:func:`fit_gender_stack`).

    ``stacker`` is a logistic model over :func:`gender_stack_features` (the photo's ``k``
    neighbours' gender vote, this head's log-odds, how many neighbours voted, the nearest
    similarity); its probability of the likelier of :attr:`labels` is the decision's confidence,
    trusted from ``gate`` up (chosen on the catalogue: :func:`fit_gender_stack`).
    """

    stacker: CategoryHead | None = None
    gate: float = 1.0
    k: int = 10

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        if self.stacker is not None:
            out["stack"] = {"features": len(GENDER_STACK_FEATURES), "gate": self.gate, "k": self.k}
        return out


def unwhiten(y: np.ndarray, whitening: Whitening) -> np.ndarray:
    """Whitened, normalised rows back in the encoder's directions: ``normalise((y / scale) @
    P.T)`` (``normalise(x - mean)`` when the whitening keeps every direction)."""
    data = np.asarray(y, np.float32)
    if data.ndim == 1:
        data = data[None, :]
    if data.shape[1] != whitening.dim:
        raise InvalidOptionsError(
            f"category head: whitened vectors are {whitening.dim}-d, not {data.shape[1]}-d"
        )
    return l2_normalize((data / whitening.scale) @ whitening.projection.T)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


def _adam_softmax(
    z: np.ndarray, y: np.ndarray, classes: int, l2: float, iterations: int, lr: float
) -> tuple[np.ndarray, np.ndarray]:
    """Full-batch Adam on mean cross-entropy + ``l2/2 * |W|^2``, from zeros (deterministic)."""
    n, d = z.shape
    w = np.zeros((d, classes), np.float32)
    b = np.zeros(classes, np.float32)
    m_w, v_w = np.zeros_like(w), np.zeros_like(w)
    m_b, v_b = np.zeros_like(b), np.zeros_like(b)
    onehot = np.zeros((n, classes), np.float32)
    onehot[np.arange(n), y] = 1.0
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for step in range(1, iterations + 1):
        grad = (_softmax(z @ w + b) - onehot) / n
        g_w = z.T @ grad + l2 * w
        g_b = grad.sum(axis=0)
        m_w = beta1 * m_w + (1 - beta1) * g_w
        v_w = beta2 * v_w + (1 - beta2) * g_w * g_w
        m_b = beta1 * m_b + (1 - beta1) * g_b
        v_b = beta2 * v_b + (1 - beta2) * g_b * g_b
        c1, c2 = 1 - beta1**step, 1 - beta2**step
        w -= lr * (m_w / c1) / (np.sqrt(v_w / c2) + eps)
        b -= lr * (m_b / c1) / (np.sqrt(v_b / c2) + eps)
    return w.astype(np.float32), b.astype(np.float32)


# -- merging with the neighbour vote ------------------------------------------------------------


@dataclass(frozen=True)
class NeighbourVotes:
    """The vote of each query's nearest neighbours, per class code (:func:`neighbour_votes`)."""

    weight: np.ndarray  # (n, C) the votes each class gets
    total: np.ndarray  # (n,) the votes' total: a class's share is weight / total
    counts: np.ndarray  # (n, C) how many of the neighbours voted for each class
    similarity: np.ndarray  # (n, C) their summed similarity (ties in the merge)

    def shares(self) -> np.ndarray:
        """``(n, C)`` each class's share of the vote."""
        out: np.ndarray = self.weight / np.maximum(self.total, 1e-300)[:, None]
        return out


def neighbour_votes(
    labels: np.ndarray, sims: np.ndarray, classes: int, *, k: int, temperature: float = 0.0
) -> NeighbourVotes:
    """The vote of each query's ``k`` nearest neighbours: label codes ``labels (n, >= k)``
    (``-1``: unlabelled, votes for no class) and similarities ``sims``, best first.

    Temperature 0 is the engine's plain vote: one vote per neighbour, over a total of ``k``.
    Above 0 each neighbour votes ``exp((s - s1) / temperature)`` (``s1``: the nearest one's
    similarity, so the nearest votes 1 and farther ones less), over the total of the votes of
    the neighbours found. Sums run in neighbour order in float64, as
    :func:`stygig.scoring.vote` adds them, so the similarity that breaks ties is the same.
    """
    lab = np.atleast_2d(np.asarray(labels, np.int64))[:, :k]  # (n, 0): no neighbour left
    s = np.atleast_2d(np.asarray(sims, np.float64))[:, : lab.shape[1]]
    n, width = lab.shape
    if temperature == 0.0 or width == 0:
        votes = np.ones_like(s)
        total = np.full(n, float(max(k, 1)))
    else:
        votes = np.exp((s - s[:, :1]) / temperature)
        total = np.bincount(np.repeat(np.arange(n), width), votes.ravel(), minlength=n)
    known = (lab >= 0) & (lab < classes)  # a code beyond the columns votes for none
    flat = (np.arange(n)[:, None] * classes + np.where(known, lab, 0))[known]

    def per_class(values: np.ndarray) -> np.ndarray:
        summed = np.bincount(flat, values[known], minlength=n * classes)
        out: np.ndarray = summed.reshape(n, classes)
        return out

    return NeighbourVotes(
        per_class(votes), total, per_class(np.ones_like(s)).astype(np.int64), per_class(s)
    )


def merge_shares(proba: np.ndarray, votes: NeighbourVotes, head_weight: float) -> np.ndarray:
    """The merged choice for each query: ``argmax_c w * proba[c] + (1 - w) * share(c)``.

    ``proba (n, C)`` is indexed by the same codes as the vote (the vote's label codes; see
    :meth:`CategoryHead.proba_for`). Scores within 1e-9 of the best tie; ties go to the larger
    summed neighbour similarity, then the lower code. ``head_weight`` 0 is the plain vote
    (:func:`stygig.scoring.vote`'s winner at temperature 0), 1 the head alone. A query where
    neither side has an opinion gets -1.
    """
    if not 0.0 <= head_weight <= 1.0:
        raise InvalidOptionsError("head_weight must be within [0, 1]")
    p = np.asarray(proba, np.float64).reshape(votes.weight.shape)
    score = head_weight * p + ((1.0 - head_weight) * votes.weight) / votes.total[:, None]
    best = score.max(axis=1, keepdims=True) if score.size else score[:, :1]
    tied = np.abs(score - best) <= 1e-9
    voted = votes.counts > 0
    key = np.where(tied, np.where(voted, votes.similarity, -1e300), -np.inf)
    out = key.argmax(axis=1) if score.size else np.zeros(len(score), np.int64)
    if head_weight == 0.0:
        out[~voted.any(axis=1)] = -1
    if head_weight == 1.0:
        out[~p.any(axis=1)] = -1
    result: np.ndarray = out.astype(np.int64)
    return result


def merge_votes(
    proba: np.ndarray,
    neighbour_labels: np.ndarray,
    neighbour_sims: np.ndarray,
    head_weight: float,
    *,
    k: int | None = None,
    temperature: float = 0.0,
) -> np.ndarray:
    """:func:`merge_shares` with the vote of the first ``k`` (default: all) neighbours at
    ``temperature`` (:func:`neighbour_votes`): ``proba (n, C)``, neighbour label codes and
    similarities ``(n, >= k)`` (``-1``: unknown label, ignored)."""
    width = neighbour_labels.shape[1] if neighbour_labels.ndim == 2 else 0
    votes = neighbour_votes(
        neighbour_labels,
        neighbour_sims,
        np.asarray(proba).shape[-1],
        k=width if k is None else k,
        temperature=temperature,
    )
    return merge_shares(proba, votes, head_weight)


# -- cross-fitting on the catalogue -------------------------------------------------------------


def fold_of(n: int, folds: int, seed: int = 0) -> np.ndarray:
    """A seeded fold number in ``[0, folds)`` for each of ``n`` rows (balanced sizes)."""
    order = np.random.default_rng([seed, 16]).permutation(n)
    fold = np.empty(n, np.int64)
    fold[order] = np.arange(n) % folds
    return fold


@dataclass(frozen=True)
class CrossFit:
    """Out-of-fold results on the fitting rows: what chose ``head_weight``, ``vote_k`` and
    ``temperature``."""

    head_weight: float
    accuracy: dict[str, float]  # "vote", "head", "merged": out-of-fold / leave-one-out
    grid: list[dict[str, float]]  # accuracy at each weight, at the chosen vote
    folds: int
    vote_k: int = 5
    temperature: float = 0.0
    # each searched vote (k, temperature) at its best weight
    vote_grid: list[dict[str, float]] = dataclass_field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return {
            "head_weight": self.head_weight,
            "vote_k": self.vote_k,
            "temperature": self.temperature,
            "folds": self.folds,
            "accuracy": self.accuracy,
            "grid": self.grid,
            "vote_grid": self.vote_grid,
        }


def _loo_neighbours(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` nearest other rows (inner product) and their similarities."""
    n = len(x)
    kk = min(k, n - 1)
    ids = np.empty((n, kk), np.int64)
    sims = np.empty((n, kk), np.float32)
    for start in range(0, n, _CHUNK):
        block = x[start : start + _CHUNK] @ x.T
        rows = np.arange(start, min(start + _CHUNK, n))
        block[rows - start, rows] = -np.inf
        top = np.argpartition(-block, kk - 1, axis=1)[:, :kk]
        s = np.take_along_axis(block, top, 1)
        order = np.argsort(-s, axis=1, kind="stable")
        ids[rows] = np.take_along_axis(top, order, 1)
        sims[rows] = np.take_along_axis(s, order, 1)
    return ids, sims


def cross_fit(
    x: np.ndarray,
    labels: Sequence[str | None],
    *,
    field: str = "category",
    k: int = 5,
    folds: int = 5,
    seed: int = 0,
    l2: float = DEFAULT_L2,
    iterations: int = DEFAULT_ITERATIONS,
    whitening: Whitening | None = None,
    on_fit: Callable[[], object] | None = None,
    neighbours: tuple[np.ndarray, np.ndarray] | None = None,
    vote_ks: Sequence[int] = (),
    temperatures: Sequence[float] = (0.0,),
) -> tuple[CategoryHead, CrossFit]:
    """The head fitted on all rows, with ``head_weight`` and its vote chosen by ``folds``-fold
    cross-fitting.

    Each row's head probabilities come from the fold fit that excluded it; its vote from its
    nearest *other* rows (in ``x`` as stored: what the engine searches): ``k`` of them by plain
    count (the engine's vote, reported as ``"vote"``), or any of ``vote_ks`` at any of
    ``temperatures`` (:func:`neighbour_votes`). The (weight, k, temperature) that merges them
    best is stored on the returned head; ties go to the smaller weight (the vote being the
    known quantity), then the fewer neighbours, then the lower temperature, so a catalogue
    where the plain ``k``-vote does as well keeps it. ``whitening``: as in
    :meth:`CategoryHead.fit`. ``on_fit`` is called after each of the ``folds + 1`` fits
    (progress). ``neighbours``: each row's nearest other rows and their similarities, best
    first (default: computed from ``x``; given, they may come from other vectors than the head
    reads, e.g. the stored ones while ``x`` is un-whitened); a searched vote needing more
    neighbours than given (or than the rows hold) is left out.
    """
    done = on_fit or (lambda: None)
    data = np.asarray(x, np.float32)
    names = sorted({str(v) for v in labels if v})
    index = {name: c for c, name in enumerate(names)}
    codes = np.array([index[str(v)] if v else -1 for v in labels], np.int64)
    fit = functools.partial(
        CategoryHead.fit, field=field, l2=l2, iterations=iterations, whitening=whitening
    )
    if len(data) < max(2 * folds, k + 1):
        head = fit(data, labels, vote_k=k)
        done()
        return head, CrossFit(head.head_weight, {}, [], 0, vote_k=k)
    for t in temperatures:
        _check_vote(k, t)
    fold = fold_of(len(data), folds, seed)
    proba = np.zeros((len(data), len(names)), np.float32)
    for f in range(folds):
        train, held = fold != f, fold == f
        part = fit(data[train], [labels[i] for i in np.flatnonzero(train).tolist()])
        proba[held] = part.proba_for(data[held], names, whitening)
        done()
    ks = sorted({k, *vote_ks})
    nb_ids, nb_sims = _loo_neighbours(data, ks[-1]) if neighbours is None else neighbours
    ks = [kk for kk in ks if kk <= nb_ids.shape[1]]
    nb_labels = codes[nb_ids[:, : ks[-1]]]
    known = codes >= 0
    rows: list[dict[str, float]] = []  # every searched (k, temperature, weight), its accuracy
    plain: dict[float, float] = {}  # the engine's plain k-vote at each weight
    for kk in ks:
        for t in sorted({0.0, *temperatures}) if kk == k else sorted(set(temperatures)):
            votes = neighbour_votes(nb_labels, nb_sims, len(names), k=kk, temperature=t)
            for w in _WEIGHT_GRID:
                pred = merge_shares(proba, votes, w)
                acc = float((pred[known] == codes[known]).mean())
                if kk == k and t == 0.0:
                    plain[w] = acc
                if t in temperatures:
                    rows.append({"k": kk, "temperature": t, "head_weight": w, "accuracy": acc})

    def choice(r: dict[str, float]) -> tuple[float, ...]:
        # the best accuracy; ties: the smaller weight, then fewer neighbours, then lower T
        return (r["accuracy"], -r["head_weight"], -r["k"], -r["temperature"])

    best = max(rows, key=choice)
    weight, vote_k, temperature = best["head_weight"], int(best["k"]), best["temperature"]
    chosen = [r for r in rows if (r["k"], r["temperature"]) == (vote_k, temperature)]
    grid = [{"head_weight": r["head_weight"], "accuracy": r["accuracy"]} for r in chosen]
    by_vote: dict[tuple[float, float], list[dict[str, float]]] = {}
    for r in rows:
        by_vote.setdefault((r["k"], r["temperature"]), []).append(r)
    vote_grid = [max(group, key=choice) for group in by_vote.values()]
    accuracy = {
        "vote": plain[0.0],
        "head": grid[-1]["accuracy"],
        "vote_weighted": max((r for r in rows if r["head_weight"] == 0.0), key=choice)["accuracy"],
        "merged": best["accuracy"],
    }
    head = fit(data, labels, head_weight=weight, vote_k=vote_k, temperature=temperature)
    done()
    return head, CrossFit(weight, accuracy, grid, folds, vote_k, temperature, vote_grid)


# -- the gender decision: a stacked vote + head ---------------------------------------------------

#: The two genders the gender head and its stacker decide between. Other genders (boys, girls)
#: are not modelled: a photo whose neighbours include them is decided by the plain vote.
GENDER_PAIR = ("men", "women")
#: Items for anyone: their neighbours abstain from the vote and do not stop the stack.
UNISEX = "unisex"
#: A build fits the gender stack only when the catalogue has this many men's and women's items
#: each: the gate is chosen on the catalogue's own confidently-wrong photos, a rare event.
GENDER_MIN_ITEMS = 50
GENDER_STACK_FEATURES = (
    "share - 1/2",
    "log-odds of the share",
    "head log-odds",
    "voting share",
    "(share - 1/2) * voting share",
    "share log-odds * voting share",
    "nearest similarity",
    "head log-odds * voting share",
)


def _fit_stacker(features: np.ndarray, labels: Sequence[str | None]) -> CategoryHead:
    """The stacker: a logistic model over :func:`gender_stack_features` (settings measured on
    Kaggle efficientnet-lite0, catalogue only; ``docs/evaluation.md``)."""
    return CategoryHead.fit(
        features, labels, field="gender_stack", iterations=500, l2=1e-4, learning_rate=0.05
    )


def gender_stack_features(
    pair_weight: np.ndarray, all_weight: np.ndarray, nearest: np.ndarray, head_proba: np.ndarray
) -> np.ndarray:
    """The stacker's ``(n, 8)`` inputs (:data:`GENDER_STACK_FEATURES`).

    ``pair_weight (n, 2)``: the neighbours' summed positive similarity per gender of
    :data:`GENDER_PAIR`; ``all_weight (n,)``: that of every neighbour (unisex ones included);
    ``nearest (n,)``: the nearest neighbour's similarity; ``head_proba (n, 2)``: the gender
    head's probabilities over the pair.
    """
    v = np.asarray(pair_weight, np.float64).reshape(-1, 2)
    tot = v.sum(axis=1)
    share = np.where(tot > 0, v[:, 1] / np.maximum(tot, 1e-9), 0.5)
    frac = tot / np.maximum(np.asarray(all_weight, np.float64), 1e-9)
    p = np.asarray(head_proba, np.float64).reshape(-1, 2)
    lp = np.log(np.clip(p[:, 1], 1e-4, 1 - 1e-4) / np.clip(p[:, 0], 1e-4, 1.0))
    ls = np.log(np.clip(share, 0.02, 0.98) / np.clip(1 - share, 0.02, 0.98))
    near = np.asarray(nearest, np.float64).ravel()
    cols = [share - 0.5, ls, lp, frac, (share - 0.5) * frac, ls * frac, near, lp * frac]
    return np.stack(cols, axis=1).astype(np.float32)


def _pair_weights(
    codes: np.ndarray, nb_ids: np.ndarray, nb_sims: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the neighbours' positive similarity summed per pair gender (``codes``: 0 / 1
    for :data:`GENDER_PAIR`, -1 otherwise) and over every neighbour."""
    sims = np.maximum(np.asarray(nb_sims, np.float64), 0.0)
    labels = codes[nb_ids]
    pair = np.stack([(sims * (labels == c)).sum(axis=1) for c in (0, 1)], axis=1)
    return pair, sims.sum(axis=1)


def _confident_wrong(conf: np.ndarray, wrong: np.ndarray, threshold: float) -> tuple[float, float]:
    """Shares of all rows that are confident (``conf >= threshold``) and confidently wrong."""
    c = conf >= threshold
    return float(c.mean()), float((c & wrong).mean())


def _gate_for(conf: np.ndarray, wrong: np.ndarray, budget: float) -> float | None:
    """The smallest threshold among ``conf``'s values whose confidently-wrong share of all
    rows is at most ``budget`` (``None``: none is)."""
    order = np.argsort(-conf, kind="stable")
    c, w = conf[order], np.cumsum(wrong[order])
    best = None
    n = len(conf)
    for t in np.unique(c)[::-1]:  # descending: the confident set grows
        last = int(np.searchsorted(-c, -t, side="right")) - 1  # rows with conf >= t
        if w[last] / n > budget:
            break
        best = float(t)
    return best


def unmodelled_gender(gender: str | None) -> bool:
    """Whether a neighbour of this gender leaves a photo to the plain vote: a gender that is
    neither of :data:`GENDER_PAIR`, nor unisex, nor missing (boys, girls). The one rule the
    stack's fit and the engine both apply."""
    return gender not in (None, UNISEX, *GENDER_PAIR)


def gender_skip_reason(genders: Sequence[str | None]) -> str | None:
    """Why ``genders`` are too few for the gender stack (``None``: enough): fewer than
    :data:`GENDER_MIN_ITEMS` items of either gender of :data:`GENDER_PAIR`."""
    counts = Counter(g for g in genders if g in GENDER_PAIR)
    if min(counts[g] for g in GENDER_PAIR) >= GENDER_MIN_ITEMS:
        return None
    few = [f"{counts[g]} {g}'s items" for g in GENDER_PAIR if counts[g] < GENDER_MIN_ITEMS]
    return (
        f"it needs {GENDER_MIN_ITEMS} items each of {' and '.join(GENDER_PAIR)}: {', '.join(few)}"
    )


def fit_gender_stack(
    plain: np.ndarray,
    genders: Sequence[str | None],
    neighbours: tuple[np.ndarray, np.ndarray],
    *,
    k: int,
    min_confidence: float,
    folds: int = 5,
    seed: int = 0,
    on_fit: Callable[[], object] | None = None,
) -> tuple[GenderHead | None, dict[str, Any]]:
    """The gender head and its stacker, fitted on the catalogue alone.

    ``plain``: the vectors the head reads (un-whitened); ``genders``: each row's gender;
    ``neighbours``: each row's nearest *other* rows and similarities in the stored vectors,
    best first, at least ``k`` (the engine's ``attribute_vote_k``). Out of fold throughout: the
    head's probabilities come from ``folds`` fits that excluded the row, the votes from its
    other rows, and the stacker's probabilities from another ``folds`` fits over those
    features. The gate is the smallest threshold at which the stacker's confidently-wrong share
    of the catalogue is no larger than the plain vote's at ``min_confidence`` (the configured
    ``gender_min_confidence``): the same error, fewer hedged answers.

    Returns the head (``None`` when skipped) and its report (``skipped``: fewer than
    :data:`GENDER_MIN_ITEMS` men's or women's items; no gate reaches the vote's error; or the
    stacker is confident no more often than the vote at that error).
    """
    done = on_fit or (lambda: None)
    t0 = time.perf_counter()
    labels = [g if g in GENDER_PAIR else None for g in genders]
    counts = Counter(g for g in labels if g)
    report: dict[str, Any] = {"k": k, "rows": len(labels), **{g: counts[g] for g in GENDER_PAIR}}
    reason = gender_skip_reason(genders)
    if reason is not None:
        report["skipped"] = reason
        return None, report
    data = np.asarray(plain, np.float32)
    codes = np.array([GENDER_PAIR.index(g) if g else -1 for g in labels], np.int64)
    fold = fold_of(len(data), folds, seed)
    proba = np.zeros((len(data), 2), np.float32)
    for f in range(folds):
        train, held = fold != f, fold == f
        part = CategoryHead.fit(
            data[train], [labels[i] for i in np.flatnonzero(train).tolist()], field="gender"
        )
        proba[held] = part.proba_for(data[held], GENDER_PAIR)
        done()
    head = CategoryHead.fit(data, labels, field="gender")
    done()
    nb_ids, nb_sims = neighbours[0][:, :k], neighbours[1][:, :k]
    pair, total = _pair_weights(codes, nb_ids, nb_sims)
    features = gender_stack_features(pair, total, nb_sims[:, 0], proba)
    # The engine's stack decides only photos whose neighbours are all of the pair, unisex or
    # without a gender (a kids' item among them leaves the photo to the vote): the stacker and
    # its gate are fitted and calibrated on those rows alone, as they will be used.
    other = np.array([unmodelled_gender(g) for g in genders], bool)
    served = ~other[nb_ids].any(axis=1)
    report["served_rows"] = int(served.sum())
    reason = gender_skip_reason([genders[i] for i in np.flatnonzero(served).tolist()])
    if reason is not None:
        report["skipped"] = f"where the stack would decide (no kids' neighbours): {reason}"
        return None, report
    fold2 = fold_of(len(data), folds, seed + 1)
    stacked = np.zeros((len(data), 2), np.float32)
    for f in range(folds):
        train, held = served & (fold2 != f), served & (fold2 == f)
        part = _fit_stacker(features[train], [labels[i] for i in np.flatnonzero(train).tolist()])
        stacked[held] = part.proba_for(features[held], GENDER_PAIR)
        done()
    stacker = _fit_stacker(features[served], [labels[i] for i in np.flatnonzero(served).tolist()])
    done()
    pair, proba, stacked, codes = pair[served], proba[served], stacked[served], codes[served]
    known = codes >= 0
    voted = pair.sum(axis=1) > 0
    vote_conf = np.where(voted, pair.max(axis=1) / np.maximum(pair.sum(axis=1), 1e-12), 0.0)
    vote_wrong = known & voted & (pair.argmax(axis=1) != codes)
    vote_confident, budget = _confident_wrong(vote_conf, vote_wrong, min_confidence)
    stack_conf = stacked.max(axis=1)
    stack_wrong = known & (stacked.argmax(axis=1) != codes)
    gate = _gate_for(stack_conf, stack_wrong, budget)
    report["accuracy"] = {
        "vote": float((pair.argmax(axis=1)[known & voted] == codes[known & voted]).mean()),
        "head": float((proba.argmax(axis=1)[known] == codes[known]).mean()),
        "stacked": float((stacked.argmax(axis=1)[known] == codes[known]).mean()),
    }
    report["vote"] = {
        "min_confidence": min_confidence,
        "confident": round(vote_confident, 4),
        "confidently_wrong": round(budget, 5),
    }
    report["seconds"] = round(time.perf_counter() - t0, 2)
    if gate is None:
        report["skipped"] = "no stacker threshold is as rarely confidently wrong as the vote"
        return None, report
    confident, wrong = _confident_wrong(stack_conf, stack_wrong, gate)
    report["stacked"] = {
        "gate": round(gate, 4),
        "confident": round(confident, 4),
        "confidently_wrong": round(wrong, 5),
    }
    report["gate"] = gate
    if confident <= vote_confident:
        report["skipped"] = "the vote alone hedges no more often at the same error"
        return None, report
    fields = {**head.__dict__, "labels": tuple(head.labels)}
    return GenderHead(**fields, stacker=stacker, gate=gate, k=k), report


def skip_reason(labels: Sequence[str | None]) -> str | None:
    """Why a field's ``labels`` are too few for a head (``None``: enough): fewer than
    :data:`MIN_CLASSES` classes with :data:`MIN_ITEMS_PER_CLASS` labelled items each."""
    counts = Counter(str(v) for v in labels if v)
    big = sum(n >= MIN_ITEMS_PER_CLASS for n in counts.values())
    if big >= MIN_CLASSES:
        return None
    return (
        f"{big} of {len(counts)} labelled classes have {MIN_ITEMS_PER_CLASS}+ items "
        f"(a head needs {MIN_CLASSES})"
    )


def fit_artifact_heads(
    vectors: np.ndarray,
    labels: Mapping[str, Sequence[str | None]],
    *,
    k: Mapping[str, int],
    whitening: Whitening | None = None,
    folds: int = 5,
    seed: int = 0,
    max_rows: int = MAX_FIT_ROWS,
    on_fit: Callable[[], object] | None = None,
    genders: Sequence[str | None] | None = None,
    gender_k: int = 10,
    gender_min_confidence: float = 0.8,
) -> tuple[dict[str, CategoryHead], dict[str, Any]]:
    """The heads a build stores: one per field of ``labels`` (row-aligned with ``vectors``, the
    artifact's stored vectors; ``whitening``: the transform that made them), each chosen by
    :func:`cross_fit` against a ``k[field]``-neighbour vote (for :data:`SEARCHED_FIELDS`,
    against any vote of :data:`VOTE_K_GRID` and :data:`TEMPERATURE_GRID` too); with ``genders``
    (row-aligned),
    also the gender head and its stacked decision (:func:`fit_gender_stack`, against a
    ``gender_k``-neighbour vote gated at ``gender_min_confidence``), stored as ``"gender"``.

    A catalogue of more than ``max_rows`` items is fitted on a seeded sample of that many (the
    cross-fit's neighbour search grows with the square of the rows). The vectors are
    un-whitened and the neighbours found once for every field.

    Returns the heads worth keeping and, for the manifest, per field either the cross-fit and
    fit time or ``{"skipped": reason}`` (labels too few: :func:`skip_reason`; or a chosen head
    weight of 0). ``on_fit`` is called after every fit (``folds + 1`` per fitted field).
    """
    data = np.asarray(vectors)
    rows = np.arange(len(data))
    if len(data) > max_rows:
        rows = np.sort(np.random.default_rng([seed, 17]).choice(len(data), max_rows, False))
        data = data[rows]
    data = np.ascontiguousarray(data, np.float32)
    picked = rows.tolist()
    sampled = {name: [values[i] for i in picked] for name, values in labels.items()}
    heads: dict[str, CategoryHead] = {}
    fields: dict[str, Any] = {}
    todo = [name for name, values in sampled.items() if skip_reason(values) is None]
    for name in set(sampled) - set(todo):
        fields[name] = {"skipped": skip_reason(sampled[name])}
    for name in [n for n in todo if k[n] > MAX_VOTE_K]:
        todo.remove(name)
        fields[name] = {"skipped": f"vote_k {k[name]} is above the {MAX_VOTE_K} a head merges"}
    sampled_genders = None if genders is None else [genders[i] for i in picked]
    stack = sampled_genders is not None and gender_skip_reason(sampled_genders) is None
    if todo or stack:
        t0 = time.perf_counter()
        wanted = [k[name] for name in todo] + ([gender_k] if stack else [])
        wanted += [max(VOTE_K_GRID)] if set(todo) & set(SEARCHED_FIELDS) else []
        neighbours = _loo_neighbours(data, max(wanted))
        plain = data if whitening is None else unwhiten(data, whitening)
        shared = (time.perf_counter() - t0) / len(wanted)
    for name in todo:
        t0 = time.perf_counter()
        head, fit = cross_fit(
            plain,
            sampled[name],
            field=name,
            k=k[name],
            folds=folds,
            seed=seed,
            on_fit=on_fit,
            neighbours=neighbours,
            vote_ks=VOTE_K_GRID if name in SEARCHED_FIELDS else (),
            temperatures=TEMPERATURE_GRID if name in SEARCHED_FIELDS else (0.0,),
        )
        if whitening is not None:  # fitted on the un-whitened vectors: it needs the whitening
            head = replace(head, input="unwhitened")
        seconds = time.perf_counter() - t0 + shared
        report = {"k": k[name], "rows": len(data), "seconds": round(seconds, 2), **fit.describe()}
        if fit.folds == 0:
            report["skipped"] = "too few items to cross-fit the head's weight"
        elif head.head_weight == 0.0:
            report["skipped"] = "the cross-fit chose head weight 0: the vote alone is best"
        else:
            heads[name] = head
        fields[name] = report
    if sampled_genders is not None and not stack:
        fields["gender"] = {"skipped": gender_skip_reason(sampled_genders)}
    elif sampled_genders is not None:
        gender, report = fit_gender_stack(
            plain,
            sampled_genders,
            neighbours,
            k=gender_k,
            min_confidence=gender_min_confidence,
            folds=folds,
            seed=seed,
            on_fit=on_fit,
        )
        if "seconds" in report:
            report["seconds"] = round(report["seconds"] + shared, 2)
        if gender is not None:
            heads["gender"] = gender if whitening is None else replace(gender, input="unwhitened")
        fields["gender"] = report
    return heads, {"fields": dict(sorted(fields.items()))}


# -- storage ------------------------------------------------------------------------------------


def save_heads(heads: Mapping[str, CategoryHead], path: Path) -> Path:
    """Write ``{field: head}`` as one ``.npz`` of plain arrays (no pickle); returns ``path``."""
    arrays: dict[str, np.ndarray] = {}
    meta = []
    for n, (field, head) in enumerate(sorted(heads.items())):
        if head.field != field:
            raise InvalidOptionsError(f"head for {head.field!r} stored under {field!r}")
        stacker = head.stacker if isinstance(head, GenderHead) else None
        try:  # what load would refuse is never written (a diverged fit: NaN weights)
            for checked in (head,) if stacker is None else (head, stacker):
                _check_shapes(checked)
        except ValueError as e:
            raise InvalidOptionsError(f"the {field} head cannot be stored: {e}") from e
        for key in ("mean", "scale", "weights", "bias"):
            arrays[f"h{n}_{key}"] = np.asarray(getattr(head, key), np.float32)
        entry: dict[str, Any] = {
            "field": field,
            "labels": list(head.labels),
            "l2": head.l2,
            "iterations": head.iterations,
            "n_fit": head.n_fit,
            "head_weight": head.head_weight,
            "vote_k": head.vote_k,
            "temperature": head.temperature,
            "input": head.input,
        }
        if isinstance(head, GenderHead) and stacker is not None:
            for key in ("mean", "scale", "weights", "bias"):
                arrays[f"h{n}_stack_{key}"] = np.asarray(getattr(stacker, key), np.float32)
            entry["stack"] = {
                "labels": list(stacker.labels),
                "l2": stacker.l2,
                "iterations": stacker.iterations,
                "n_fit": stacker.n_fit,
                "gate": head.gate,
                "k": head.k,
            }
        meta.append(entry)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        np.savez(handle, **arrays)  # type: ignore[arg-type]
    return path


def load_heads(path: Path) -> dict[str, CategoryHead]:
    """Read a file written by :func:`save_heads`.

    Raises:
        ArtifactError: the file is missing, malformed or inconsistent (the message names the
            file, never its contents).
    """
    name = Path(path).name
    try:
        with load_npz(Path(path)) as data:  # no member unpacks beyond the file's size
            meta = json.loads(bytes(data["meta"]).decode("utf-8"))
            heads = {}
            for n, entry in enumerate(meta):
                head = _stored_head(
                    str(entry["field"]),
                    entry,
                    data,
                    f"h{n}_",
                    head_weight=float(entry["head_weight"]),
                    input=str(entry.get("input", "stored")),
                    # files written before the vote was searched: 0, the engine's own plain
                    # vote_k, which their weight was cross-fitted against
                    vote_k=entry.get("vote_k", 0),
                    temperature=float(entry.get("temperature", 0.0)),
                )
                if "stack" in entry:
                    head = _with_stack(head, entry["stack"], data, f"h{n}_stack_")
                heads[head.field] = head
    except (OSError, KeyError, ValueError, TypeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"cannot read category head file {name!r}") from e
    return heads


def _stored_head(
    field: str, entry: Mapping[str, Any], data: Any, key: str, **extra: Any
) -> CategoryHead:
    """One head as :func:`save_heads` stored it (arrays ``<key>mean`` ...), checked."""
    head = CategoryHead(
        field=field,
        labels=tuple(str(v) for v in entry["labels"]),
        mean=data[f"{key}mean"],
        scale=data[f"{key}scale"],
        weights=data[f"{key}weights"],
        bias=data[f"{key}bias"],
        l2=float(entry["l2"]),
        iterations=int(entry["iterations"]),
        n_fit=int(entry["n_fit"]),
        **extra,
    )
    _check_shapes(head)
    return head


def _with_stack(head: CategoryHead, entry: Mapping[str, Any], data: Any, key: str) -> GenderHead:
    """``head`` with the stacker stored beside it (:func:`save_heads`)."""
    stacker = _stored_head("gender_stack", entry, data, key)
    gate, k = float(entry["gate"]), int(entry["k"])
    if (
        head.labels != GENDER_PAIR
        or stacker.labels != GENDER_PAIR
        or stacker.dim != len(GENDER_STACK_FEATURES)
        or not 0.5 <= gate <= 1.0
        or k < 1
    ):
        raise ValueError("inconsistent gender stack")
    return GenderHead(**head.__dict__, stacker=stacker, gate=gate, k=k)


def _check_shapes(head: CategoryHead) -> None:
    try:
        _check_vote(head.vote_k, head.temperature)
    except InvalidOptionsError as e:
        raise ValueError(str(e)) from e
    d, c = head.dim, len(head.labels)
    if (
        head.mean.shape != (d,)  # a 2-D mean broadcast into every query (review, session 51)
        or head.scale.shape != (d,)
        or head.weights.shape != (d, c)
        or head.bias.shape != (c,)
        or not 0.0 <= head.head_weight <= 1.0
        or head.input not in ("stored", "unwhitened")
        or len(set(head.labels)) != c
    ):
        raise ValueError("inconsistent category head arrays")
    # A head that diverged (a NaN or an infinity anywhere) would answer every request with
    # NaN probabilities: refused at load, and never written (save_heads checks too).
    if not all(np.isfinite(a).all() for a in (head.mean, head.scale, head.weights, head.bias)):
        raise ValueError("category head arrays are not all finite")


def add_category_head(
    path: str | Path, heads: Mapping[str, CategoryHead], info: dict[str, Any] | None = None
) -> Path:
    """Add (or replace) the category heads of the built artifact at ``path``.

    :data:`HEAD_FILE` with a ``category_head`` entry (each head's
    :meth:`~CategoryHead.describe`, plus ``info``, e.g. the cross-fit), through
    :func:`stygig.artifact.add_file` (checksum in the manifest, written atomically).
    """
    from stygig.artifact import add_file

    return add_file(
        path,
        HEAD_FILE,
        lambda partial: save_heads(heads, partial),
        "category_head",
        head_entry(heads, info),
    )


def head_entry(
    heads: Mapping[str, CategoryHead], info: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The manifest's ``category_head`` entry of ``heads`` (each head's
    :meth:`~CategoryHead.describe`, plus ``info``)."""
    return {
        "file": HEAD_FILE,
        "heads": {field: head.describe() for field, head in sorted(heads.items())},
        **(info or {}),
    }


def load_artifact_heads(
    root: str | Path,
    manifest: Mapping[str, Any],
    *,
    dim: int | None = None,
    whitening: Whitening | None = None,
) -> dict[str, CategoryHead]:
    """The heads of an artifact (``{}`` when it has none); :meth:`stygig.artifact.Artifact.load`
    calls it after verifying every listed file's checksum (so an edited head file is refused
    there, ``artifact_checksum_mismatch``).

    ``dim`` (the stored vectors' width) and ``whitening`` (the artifact's), when given, check
    that each head reads the vectors this artifact has.

    Raises:
        ArtifactError: the manifest names the head but does not list its file with a
            checksum; the file is unreadable; or a head does not fit the artifact's vectors.
    """
    entry = manifest.get("category_head")
    if not entry:
        return {}
    if HEAD_FILE not in (manifest.get("files") or {}):
        raise ArtifactError(f"artifact refused: {HEAD_FILE!r} is not listed with a checksum")
    heads = load_heads(Path(root) / HEAD_FILE)
    for head in heads.values():
        if dim is None:
            break
        if head.input == "stored":
            fits = head.dim == dim
        else:
            fits = whitening is not None and head.dim == whitening.projection.shape[0]
        if not fits:
            raise ArtifactError(
                f"artifact refused: the {head.field!r} head in {HEAD_FILE!r} does not read "
                "this artifact's vectors (rebuild the artifact)"
            )
    return heads

"""Train the compatibility model on stylists' outfits (torch, CPU, seeded, minutes).

Protocol (``docs/compat.md``): the outfits are split with the evaluation's own
:func:`~stygig.evaluation.split.split_ids` (same seed, same 20 % test outfits, never seen here);
the train outfits are split again (10 %, seed + 1) into *fit* and *validation* outfits. Each
epoch asks, for every fit outfit and every item in it, "which of these completes the rest?":
the hidden item against negatives of the same product type drawn from fit outfits, most by
popularity and the others among the nearest reference numbers (the same collection drop), with
a softmax cross-entropy loss plus an outfit ranking loss. Validation FITB uses the evaluation's
own :func:`~stygig.evaluation.fitb.make_questions` on the validation outfits.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from stygig.compat.features import COLOUR_DIM, ItemFeatures, item_features
from stygig.compat.model import (
    CompatModel,
    Cooccurrence,
    embedding_check,
    group_key,
    whiten_rows,
)
from stygig.errors import CatalogError
from stygig.evaluation.fitb import (
    Question,
    Scorer,
    compatibility_auc,
    fitb_accuracy,
    inside_train_outfits,
    item_types,
    make_questions,
    reference_number,
)
from stygig.evaluation.split import outfits_fingerprint, split_ids
from stygig.harmony import rgb_array

if TYPE_CHECKING:
    from stygig.artifact import Artifact

__all__ = ["TrainConfig", "TrainResult", "artifact_features", "item_types", "train_compat"]


#: MANGO's catalogue attributes (``product_data.csv``) the model reads by default.
MANGO_ATTRIBUTES = (
    "des_agrup_color_eng",
    "des_color_specification_esp",
    "des_age",
    "des_line",
    "des_fabric",
    "des_product_category",
    "des_product_aggregated_family",
    "des_product_family",
    "des_product_type",
)

#: The evaluation's share of test outfits (``split_ids``' default), never read by training.
TEST_FRACTION = 0.2
#: The samplings validation asks (the criterion reads matched and collection; the evaluation's
#: cold-start sampling is not one the model is chosen by).
_VAL_SAMPLINGS = ("uniform", "matched", "collection")


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters; the defaults are the ones ``docs/compat.md`` reports."""

    seed: int = 0
    epochs: int = 8
    batch: int = 256
    hidden: int = 256
    dim: int = 64
    # Negatives per training question, all of the hidden item's product type: drawn uniformly,
    # by popularity (as FITB "matched") and among the nearest reference numbers (as FITB
    # "collection": the same collection drop, another garment).
    neg_uniform: int = 0
    neg_matched: int = 6
    neg_collection: int = 4
    collection_window: int = 6  # collection negatives are drawn among this many nearest
    lr: float = 2e-3
    weight_decay: float = 1e-4
    dropout: float = 0.3
    val_fraction: float = 0.1
    # Validation questions and swaps are drawn this many times (other seeds: other hidden items
    # and negatives) from the same validation outfits, to steady model selection.
    val_repeats: int = 3
    whiten: bool = False  # PCA-whiten the embeddings first (fitted on the whole catalogue)
    # Catalogue attribute fields used as input features (those an item lacks are left out).
    attributes: tuple[str, ...] = MANGO_ATTRIBUTES
    group_cooc: bool = True  # garment-level co-occurrence (colours of one garment) as a term
    absence: bool = True  # a learned term for pairs of styled items never styled together
    attention: bool = False  # category-pair attention over the visible items
    pair_loss: float = 0.0  # weight of a per-pair logistic loss (calibrates scores across items)
    outfit_loss: float = 3.0  # weight of a ranking loss: real outfits above one-swapped ones
    swa_start: int = 3  # from this epoch on, also try the running mean of the weights (0: off)
    # Each catalogue photo's style (stygig.training.style), reduced to this many components
    # (0: none); in training an item loses it with probability style_dropout, as a query
    # photo or an item added later has none.
    style_dims: int = 256
    style_dropout: float = 0.3
    item_vectors: bool = False  # learn a vector per item of the fit outfits (added to g)
    id_dropout: float = 0.5  # share of items trained without their vector (keeps content alive)
    threads: int = 2
    rules_grid: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
    # The absence weight for outfit scores (CompatModel.outfit_absent_weight), chosen after
    # training by the validation single-swap AUC among the learned weight and these.
    outfit_absence_grid: tuple[float, ...] = (-1.5, -2.0, -2.5, -3.0, -3.5, -4.0, -5.0, -6.0)


@dataclass(frozen=True)
class _Validation:
    """What model selection reads: the validation questions (every draw), the outfits they
    and the swaps come from, item types, the validation outfit ids and the draws' seeds."""

    questions: Sequence[Question]
    outfits: Mapping[str, Sequence[str]]
    types: Mapping[str, str]
    ids: Sequence[str]
    seeds: Sequence[int]


@dataclass
class TrainResult:
    """The trained model and what happened."""

    model: CompatModel
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    split: dict[str, int] = field(default_factory=dict)


def artifact_features(artifact: Artifact, categories: Sequence[str]) -> ItemFeatures:
    """Features of every catalogue row of ``artifact``."""
    return item_features(
        artifact.embeddings,
        rgb_array(artifact.colors),
        [i.category for i in artifact.items],
        categories,
    )


class _Net(nn.Module):
    """The torch twin of :class:`CompatModel` (same parameters, same formula)."""

    def __init__(
        self, n_in: int, n_cat: int, cfg: TrainConfig, n_ids: int = 0, style_width: int = 0
    ) -> None:
        super().__init__()
        # The input's last style_width columns are the style and its flag.
        self.style_width, self.style_dropout = style_width, cfg.style_dropout
        self.ids = nn.Embedding(n_ids + 1, cfg.dim)  # row n_ids: no vector
        nn.init.zeros_(self.ids.weight)
        self.ids.weight.requires_grad_(cfg.item_vectors)
        self.n_ids, self.id_dropout = n_ids, cfg.id_dropout
        self.lin1 = nn.Linear(n_in, cfg.hidden)
        self.lin2 = nn.Linear(cfg.hidden, cfg.dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.masks = nn.Parameter(torch.full((n_cat + 1, n_cat + 1, cfg.dim), 4.0))
        self.bias = nn.Parameter(torch.zeros(n_cat + 1, n_cat + 1))
        self.cooc_weight = nn.Parameter(torch.tensor(0.5))
        self.group_weight = nn.Parameter(torch.tensor(0.5 if cfg.group_cooc else 0.0))
        self.group_weight.requires_grad_(cfg.group_cooc)
        self.absent_weight = nn.Parameter(torch.tensor(0.0))
        self.absent_weight.requires_grad_(cfg.absence)
        self.attention = nn.Parameter(torch.zeros(n_cat + 1, n_cat + 1))
        self.attention.requires_grad_(cfg.attention)

    def project(self, x: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        if self.training and self.style_width and self.style_dropout:
            # Some items without their style (all zeros, the flag too), as photos are.
            x = x.clone()
            x[torch.rand(len(x)) < self.style_dropout, -self.style_width :] = 0.0
        g = self.lin2(self.drop(torch.relu(self.lin1(x))))
        if ids is not None:
            if self.training and self.id_dropout:
                drop = torch.rand(ids.shape) < self.id_dropout
                ids = torch.where(drop, torch.full_like(ids, self.n_ids), ids)
            g = g + self.ids(ids)
        return nn.functional.normalize(g, dim=-1)

    def forward(
        self,
        rows: torch.Tensor,  # (U, F): the distinct items of the batch
        given: torch.Tensor,  # (B, G) indices into rows
        given_cat: torch.Tensor,  # (B, G)
        given_ok: torch.Tensor,  # (B, G) bool
        cand: torch.Tensor,  # (B, K) indices into rows
        cand_cat: torch.Tensor,  # (B, K)
        cooc: torch.Tensor,  # (B, G, K)
        group_cooc: torch.Tensor,  # (B, G, K)
        absent: torch.Tensor,  # (B, G, K) Cooccurrence.absent of each pair
        row_ids: torch.Tensor | None = None,  # (U,) per-item vector index of each row
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(candidate scores (B, K), pair scores (B, G, K))``."""
        g = self.project(rows, row_ids)  # each distinct item once: most rows repeat within a batch
        gq, gc = g[given], g[cand]
        masks = self.masks[given_cat[:, :, None], cand_cat[:, None, :]]  # (B, G, K, D)
        pair = (gq[:, :, None, :] * masks * gc[:, None, :, :]).sum(-1)
        pair = pair + self.bias[given_cat[:, :, None], cand_cat[:, None, :]]
        pair = pair + self.cooc_weight * torch.log1p(cooc)
        pair = pair + self.group_weight * torch.log1p(group_cooc)
        pair = pair + self.absent_weight * absent
        logits = self.attention[given_cat[:, :, None], cand_cat[:, None, :]]
        logits = logits.masked_fill(~given_ok[:, :, None], -1e4)
        w = torch.softmax(logits, dim=1) * given_ok.float()[:, :, None]
        out: torch.Tensor = (pair * w).sum(1) / w.sum(1).clamp(min=1e-6)
        self._last = (gq, gc)
        return out, pair

    def outfit_scores(
        self,
        pair: torch.Tensor,  # (B, G, K) from forward
        given_cat: torch.Tensor,
        given_ok: torch.Tensor,
        cand_cat: torch.Tensor,
        cooc: torch.Tensor,  # (B, G, K)
        group_cooc: torch.Tensor,
        gg_cooc: torch.Tensor,  # (B, G, G)
        gg_group: torch.Tensor,
        absent: torch.Tensor,  # (B, G, K)
        gg_absent: torch.Tensor,  # (B, G, G)
    ) -> torch.Tensor:
        """``(B, K)``: the mean over ordered pairs of the visible items completed by each
        candidate (the first round's outfit score; trained against the weakest item's score,
        the evaluation's, the model lost on validation: docs/compat.md)."""
        gq, gc = self._last
        ok = given_ok.float()
        back = self.masks[cand_cat[:, :, None], given_cat[:, None, :]]  # (B, K, G, D)
        rev = (gc[:, :, None, :] * back * gq[:, None, :, :]).sum(-1)
        rev = rev + self.bias[cand_cat[:, :, None], given_cat[:, None, :]]
        rev = rev + self.cooc_weight * torch.log1p(cooc.transpose(1, 2))
        rev = rev + self.group_weight * torch.log1p(group_cooc.transpose(1, 2))
        rev = rev + self.absent_weight * absent.transpose(1, 2)
        within = self.masks[given_cat[:, :, None], given_cat[:, None, :]]  # (B, G, G, D)
        qq = (gq[:, :, None, :] * within * gq[:, None, :, :]).sum(-1)
        qq = qq + self.bias[given_cat[:, :, None], given_cat[:, None, :]]
        qq = qq + self.cooc_weight * torch.log1p(gg_cooc)
        qq = qq + self.group_weight * torch.log1p(gg_group)
        qq = qq + self.absent_weight * gg_absent
        eye = torch.eye(qq.shape[1], dtype=torch.bool)[None]
        mask_qq = ok[:, :, None] * ok[:, None, :] * (~eye).float()
        base = (qq * mask_qq).sum((1, 2))  # (B,)
        to_c = (pair * ok[:, :, None]).sum(1) + (rev * ok[:, None, :]).sum(2)  # (B, K)
        n = ok.sum(1) + 1.0
        out: torch.Tensor = (base[:, None] + to_c) / (n * (n - 1.0))[:, None]
        return out


def _export(
    net: _Net,
    template: CompatModel,
    cfg: TrainConfig,
    id_order: np.ndarray | None = None,
) -> CompatModel:
    def arr(t: torch.Tensor) -> np.ndarray:
        # A copy: ``.numpy()`` shares the tensor's memory, which training keeps updating in
        # place (before this copy, the "best epoch" kept was the last epoch's weights).
        return np.array(t.detach().cpu().numpy(), np.float32, copy=True)

    extra: dict[str, Any] = {}
    if cfg.item_vectors and id_order is not None:
        # id_order: the fit items' ids in embedding-row order, already sorted.
        extra = {"id_ids": id_order, "id_vectors": arr(net.ids.weight[: net.n_ids])}
    return replace(
        template,
        **extra,
        w1=arr(net.lin1.weight.T),
        b1=arr(net.lin1.bias),
        w2=arr(net.lin2.weight.T),
        b2=arr(net.lin2.bias),
        masks=arr(net.masks),
        bias=arr(net.bias),
        cooc_weight=float(net.cooc_weight.item()),
        group_weight=float(net.group_weight.item()) if cfg.group_cooc else 0.0,
        absent_weight=float(net.absent_weight.item()) if cfg.absence else 0.0,
        attention=arr(net.attention) if cfg.attention else np.zeros((0, 0), np.float32),
    )


_NO_WHITENING = (np.zeros(0, np.float32), np.zeros((0, 0), np.float32), np.zeros(0, np.float32))


def _whitening(embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The evaluation's default whitening, fitted on every catalogue embedding (no outfit)."""
    from stygig.whitening import Whitening

    w = Whitening.fit(np.asarray(embeddings, np.float32))
    return w.mean, w.projection, w.scale


def attribute_table(
    artifact: Artifact, fields: Sequence[str]
) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """``(vocabulary, sorted ids, codes)`` of the catalogue's ``fields`` (``field=value``)."""
    if not fields:
        return (), np.zeros(0, dtype=str), np.zeros((0, 0), np.int32)
    values = [
        [f"{f}={item.attributes[f]}" if item.attributes.get(f) else "" for f in fields]
        for item in artifact.items
    ]
    vocab = tuple(sorted({v for row in values for v in row if v}))
    lookup = {v: n for n, v in enumerate(vocab)}
    ids = np.array([item.id for item in artifact.items], dtype=str)
    order = np.argsort(ids, kind="stable")
    codes = np.array([[lookup.get(v, -1) for v in row] for row in values], np.int32)
    return vocab, ids[order], codes[order].reshape(len(ids), len(fields))


def model_scorer(
    model: CompatModel,
    features: ItemFeatures,
    positions: Mapping[str, int],
    *,
    outfit: bool = False,
) -> Scorer:
    """A FITB scorer ``(given ids, candidate ids) -> scores`` from the NumPy model
    (``outfit``: the candidates scored as members of one outfit, for outfit scores)."""
    ids = [""] * len(positions)
    for item, row in positions.items():
        ids[row] = item
    vectors = model.project(features, ids)
    cats = features.category
    co, gco = model.cooccurrence, model.group_cooccurrence

    def score(given: Sequence[str], cands: Sequence[str]) -> np.ndarray:
        q = np.array([positions[i] for i in given], np.int64)
        c = np.array([positions[i] for i in cands], np.int64)
        q_codes, c_codes = co.codes(tuple(given)), co.codes(tuple(cands))
        counts = co.lookup(q_codes, c_codes)
        absent = co.absent(q_codes, c_codes, counts) if model.absence(outfit) else None
        groups = None
        if model.group_weight:
            groups = gco.lookup(
                gco.codes(tuple(group_key(i) for i in given)),
                gco.codes(tuple(group_key(i) for i in cands)),
            )
        return model.score(
            vectors[q], cats[q], vectors[c], cats[c], counts, groups, absent=absent, outfit=outfit
        )

    return score


class _Sampler:
    """Epochs of training questions: every item of every fit outfit hidden once."""

    def __init__(
        self, outfits: list[list[int]], types: np.ndarray, refs: np.ndarray, cfg: TrainConfig
    ) -> None:
        self.outfits, self.types, self.refs, self.cfg = outfits, types, refs, cfg
        counts = np.bincount(np.concatenate(outfits), minlength=len(types)).astype(np.float64)
        self.pools: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for t in np.unique(types[counts > 0]):
            rows = np.flatnonzero((types == t) & (counts > 0))
            rows = rows[np.argsort(refs[rows], kind="stable")]  # by reference number
            self.pools[int(t)] = (rows, counts[rows] / counts[rows].sum(), refs[rows])

    def _collection(self, hidden: int, rng: np.random.Generator) -> np.ndarray:
        """Negatives among the same-type items with the nearest reference numbers."""
        rows, _, refs = self.pools[int(self.types[hidden])]
        n, window = (
            self.cfg.neg_collection,
            max(self.cfg.collection_window, self.cfg.neg_collection),
        )
        own = self.refs[hidden]
        at = int(np.searchsorted(refs, own))
        span = np.arange(max(at - 2 * window, 0), min(at + 2 * window + 1, len(rows)))
        span = span[(refs[span] != own) & (refs[span] >= 0)]
        if len(span) < n:
            return rows[rng.integers(len(rows), size=n)]
        near = span[np.lexsort((rng.random(len(span)), np.abs(refs[span] - own)))[:window]]
        return rows[rng.choice(near, size=n, replace=False)]

    def epoch(self, rng: np.random.Generator) -> list[tuple[list[int], list[int], int]]:
        """``(given rows, candidate rows (hidden first), outfit index)`` in random order."""
        out = []
        cfg = self.cfg
        for k, outfit in enumerate(self.outfits):
            for hidden in outfit:
                rows, probs, _ = self.pools[int(self.types[hidden])]
                parts = [
                    rows[rng.integers(len(rows), size=cfg.neg_uniform)],
                    rows[rng.choice(len(rows), size=cfg.neg_matched, p=probs)],
                ]
                if cfg.neg_collection:
                    parts.append(self._collection(hidden, rng))
                given = [i for i in outfit if i != hidden]
                out.append((given, [hidden, *np.concatenate(parts).tolist()], k))
        order = rng.permutation(len(out))
        return [out[i] for i in order]


def _batch(
    questions: Sequence[tuple[list[int], list[int], int]],
    outfits: list[list[int]],
    cat: np.ndarray,
    cooc: Cooccurrence,
    codes: np.ndarray,
    group_cooc: Cooccurrence | None,
    group_codes: np.ndarray,
    styled: np.ndarray,
) -> tuple[np.ndarray, ...]:
    """The arrays of one batch of questions. ``styled``: in how many of the table's outfits each
    row is; an item counts as having history only outside the question's own outfit, as the
    counts do (a hidden item styled once, here, is a new item to the absence term)."""
    b, g = len(questions), max(len(q[0]) for q in questions)
    k = len(questions[0][1])
    given = np.zeros((b, g), np.int64)
    ok = np.zeros((b, g), bool)
    cands = np.array([q[1] for q in questions], np.int64)
    counts = np.zeros((b, g, k), np.float32)
    groups = np.zeros((b, g, k), np.float32)
    gg = np.zeros((b, g, g), np.float32)
    gg_groups = np.zeros((b, g, g), np.float32)
    valid = np.ones((b, k), bool)
    absent = np.zeros((b, g, k), np.float32)
    gg_absent = np.zeros((b, g, g), np.float32)
    for n, (rows, cand, o) in enumerate(questions):
        m = len(rows)
        given[n, :m] = rows
        ok[n, :m] = True
        mine = np.isin(cand, outfits[o])
        valid[n, 1:] = ~mine[1:]
        counts[n, :m] = cooc.lookup(codes[rows], codes[cand])
        counts[n, :m, 0] -= 1.0  # the outfit itself is not outside evidence
        gg[n, :m, :m] = cooc.lookup(codes[rows], codes[rows]) - 1.0  # minus the outfit itself
        np.maximum(counts[n], 0.0, out=counts[n])
        np.maximum(gg[n], 0.0, out=gg[n])
        # Codes with the question's own outfit taken out: -1 where it was the only one.
        q = np.where(styled[rows] > 1, 0, -1)
        c = np.where(styled[cand] > mine, 0, -1)
        absent[n, :m] = Cooccurrence.absent(q, c, counts[n, :m])
        gg_absent[n, :m, :m] = Cooccurrence.absent(q, q, gg[n, :m, :m])
        np.fill_diagonal(gg_absent[n], 0.0)  # an item and itself: no pair
        if group_cooc is not None:
            gr = group_codes[rows]
            same = (gr[:, None] == gr[None, :]).astype(np.float32)
            gg_groups[n, :m, :m] = group_cooc.lookup(gr, gr) - (1.0 - same) * (gr[:, None] >= 0)
            gc = group_codes[cand]
            found = group_cooc.lookup(gr, gc)
            # Neither is the outfit's own garment pairs: count them out.
            own = np.isin(gc, group_codes[outfits[o]]) & (gc >= 0)
            found -= (own[None, :] & (gr[:, None] != gc[None, :])).astype(np.float32)
            groups[n, :m] = found
    groups, gg_groups = np.maximum(groups, 0.0), np.maximum(gg_groups, 0.0)
    return (
        given,
        ok,
        cat[given],
        cands,
        cat[cands],
        counts,
        valid,
        groups,
        gg,
        gg_groups,
        absent,
        gg_absent,
    )


def train_compat(
    artifact: Artifact,
    outfits: Mapping[str, Sequence[str]],
    config: TrainConfig | None = None,
    *,
    v4_scorer: Callable[[Sequence[str], Sequence[str]], np.ndarray] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Train on the train part of ``outfits`` (never its test part); see the module docstring.

    ``v4_scorer`` (the rules' FITB scorer) lets the trainer pick the weight of the rules in
    ``learned+rules`` on the validation outfits; without it the weight stays 0.
    """
    with _deterministic_torch():
        return _train(artifact, outfits, config, v4_scorer, progress, log)


@contextmanager
def _deterministic_torch() -> Iterator[None]:
    """Bit-identical reruns: CPU scatter-adds (index backward) are otherwise summed in a
    thread-dependent order."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


def _held_apart(
    clean: Mapping[str, Sequence[str]],
    types: Mapping[str, str],
    fit_ids: Sequence[str],
    val_ids: Sequence[str],
    log: Callable[[str], None],
) -> tuple[list[str], list[str], list[str]]:
    """``(fit outfits counted, fit outfits asked about, validation outfits)``, with no question
    whose answer the counts already hold, as the evaluation asks none
    (:func:`~stygig.evaluation.fitb.inside_train_outfits`).

    Outfit files repeat outfits under other ids (MANGO: 329 of the 3,929 fit outfits of seed
    0). A repeat is counted once: "the counts minus the question's own outfit" would otherwise
    still hold the copy, and the model would learn to trust co-occurrence on questions that
    co-occurrence answers outright. A fit outfit inside another (a part of it) is counted but
    not asked about, and a validation outfit inside a fit outfit is not validated on."""
    seen: set[frozenset[str]] = set()
    counted = []
    for o in fit_ids:
        items = frozenset(clean[o])
        if len(items) >= 2 and items not in seen:
            seen.add(items)
            counted.append(o)
    rows = [clean[o] for o in counted]
    places = {o: n for n, o in enumerate(counted)}
    within = inside_train_outfits(clean, types, counted, rows, own=places)
    asked = [o for o in counted if o not in within]
    inside = inside_train_outfits(clean, types, val_ids, rows)
    kept_val = [o for o in val_ids if o not in inside]
    log(
        f"fit outfits: {len(counted)} counted ({len(fit_ids) - len(counted)} repeats or "
        f"single items left out), {len(asked)} asked about ({len(within)} inside another); "
        f"validation outfits: {len(kept_val)} ({len(inside)} inside a fit outfit left out)"
    )
    return counted, asked, kept_val


def _train(
    artifact: Artifact,
    outfits: Mapping[str, Sequence[str]],
    config: TrainConfig | None,
    v4_scorer: Callable[[Sequence[str], Sequence[str]], np.ndarray] | None,
    progress: bool,
    log: Callable[[str], None],
) -> TrainResult:
    from tqdm import tqdm

    cfg = config or TrainConfig()
    started = time.perf_counter()
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(cfg.seed)

    types = item_types(artifact)
    positions = artifact.positions
    train_ids, test_ids = split_ids(list(outfits), test_fraction=TEST_FRACTION, seed=cfg.seed)
    fit_ids, val_ids = split_ids(train_ids, test_fraction=cfg.val_fraction, seed=cfg.seed + 1)
    clean = {o: [i for i in outfits[o] if i in positions] for o in train_ids}
    fit_ids, asked_ids, val_ids = _held_apart(clean, types, fit_ids, val_ids, log)
    fit_outfits = [[positions[i] for i in clean[o]] for o in asked_ids]
    if not fit_outfits:  # a header-only file, single items, ids the artifact lacks: a
        # ValueError traceback from deep in the sampler before (review, session 49)
        known = sum(1 for o in train_ids if clean[o])
        raise CatalogError(
            "no outfit of two or more of the artifact's items is left to learn from "
            f"({len(outfits)} outfits read, {known} of the training ones name any item of "
            "the artifact); check the outfits file and the artifact it belongs to"
        )
    categories = sorted({i.category for i in artifact.items})
    vocab, attr_ids, attr_codes = attribute_table(artifact, cfg.attributes)
    white = _whitening(artifact.embeddings) if cfg.whiten else _NO_WHITENING
    emb = whiten_rows(np.asarray(artifact.embeddings, np.float32), *white).astype(np.float64)
    mean = emb.mean(axis=0).astype(np.float32)
    scale = (1.0 / np.maximum(emb.std(axis=0), 1e-6)).astype(np.float32)

    id_list = [i.id for i in artifact.items]
    fit_cooc = Cooccurrence.from_outfits([clean[o] for o in fit_ids])
    fit_groups = _group_outfits([clean[o] for o in fit_ids]) if cfg.group_cooc else None
    codes = fit_cooc.codes(tuple(id_list))
    # In how many fit outfits each row is (the absence term's "has history", leave-one-out).
    styled = np.bincount(
        np.array([positions[i] for o in fit_ids for i in set(clean[o])], np.int64),
        minlength=len(id_list),
    )
    group_codes = (
        fit_groups.codes(tuple(group_key(i) for i in id_list))
        if fit_groups is not None
        else np.full(len(id_list), -1, np.int64)
    )
    type_names = sorted(set(types.values()))
    type_codes = np.array([type_names.index(types[i]) for i in id_list], np.int64)
    refs = np.array([reference_number(i) or -1 for i in id_list], np.int64)
    sampler = _Sampler(fit_outfits, type_codes, refs, cfg)
    val_outfits = {o: clean[o] for o in train_ids}
    val_seeds = [cfg.seed + 1000 * r for r in range(max(cfg.val_repeats, 1))]
    val = _Validation(
        [
            q
            for seed in val_seeds
            for q in make_questions(
                val_outfits, types, val_ids, fit_ids, seed=seed, samplings=_VAL_SAMPLINGS
            )
        ],
        val_outfits,
        types,
        val_ids,
        val_seeds,
    )

    n_cat = len(categories)
    base = artifact_features(artifact, categories)
    style_ids, style_rows, style_checks, style_info = _style_table(
        artifact, base.embeddings, cfg, progress, log
    )
    template = CompatModel(
        categories=tuple(categories),
        emb_mean=mean,
        emb_scale=scale,
        w1=np.zeros((mean.shape[0] + COLOUR_DIM + n_cat + len(vocab), 1), np.float32),
        b1=np.zeros(1, np.float32),
        w2=np.zeros((1, cfg.dim), np.float32),
        b2=np.zeros(cfg.dim, np.float32),
        masks=np.zeros((n_cat + 1, n_cat + 1, cfg.dim), np.float32),
        bias=np.zeros((n_cat + 1, n_cat + 1), np.float32),
        cooccurrence=fit_cooc,
        group_cooccurrence=fit_groups or Cooccurrence.empty(),
        attr_vocab=vocab,
        attr_ids=attr_ids,
        attr_codes=attr_codes,
        white_mean=white[0],
        white_projection=white[1],
        white_scale=white[2],
        style_ids=style_ids,
        style_rows=style_rows,
        style_checks=style_checks,
    )
    features = replace(base, attributes=template.attribute_rows(id_list)) if vocab else base
    if template.style_width:
        features = replace(features, style=template.style_of(id_list, features.embeddings))
    x_all = torch.from_numpy(template.inputs(features))
    cat_all = np.where(features.category >= 0, features.category, n_cat)
    fit_items = np.array(sorted({i for o in fit_ids for i in clean[o]}), dtype=str)
    id_index = {i: n for n, i in enumerate(fit_items.tolist())}
    row_id = np.array([id_index.get(i, len(fit_items)) for i in id_list], np.int64)
    net = _Net(x_all.shape[1], n_cat, cfg, len(fit_items), template.style_width)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    config_info = {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}
    template = replace(template, info={"config": config_info, "style": style_info})
    history: list[dict[str, float]] = []
    best: tuple[float, CompatModel] | None = None
    swa = torch.optim.swa_utils.AveragedModel(net)
    for epoch in range(1, cfg.epochs + 1):
        net.train()
        questions = sampler.epoch(rng)
        batches = range(0, len(questions), cfg.batch)
        total = 0.0
        bar = tqdm(batches, desc=f"epoch {epoch}/{cfg.epochs}", disable=not progress, leave=False)
        for start in bar:
            given, ok, gcat, cands, ccat, counts, valid, groups, gg, gg_groups, absent, gg_abs = (
                _batch(
                    questions[start : start + cfg.batch],
                    fit_outfits,
                    cat_all,
                    fit_cooc,
                    codes,
                    fit_groups,
                    group_codes,
                    styled,
                )
            )
            uniq, inverse = np.unique(np.concatenate([given, cands], 1), return_inverse=True)
            inverse = inverse.reshape(len(given), -1)
            logits, pair = net(
                x_all[torch.from_numpy(uniq)],
                torch.from_numpy(inverse[:, : given.shape[1]]),
                torch.from_numpy(gcat),
                torch.from_numpy(ok),
                torch.from_numpy(inverse[:, given.shape[1] :]),
                torch.from_numpy(ccat),
                torch.from_numpy(counts),
                torch.from_numpy(groups),
                torch.from_numpy(absent),
                torch.from_numpy(row_id[uniq]) if cfg.item_vectors else None,
            )
            valid_t = torch.from_numpy(valid)
            logits = logits.masked_fill(~valid_t, -1e4)
            loss = nn.functional.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long))
            if cfg.pair_loss:
                loss = loss + cfg.pair_loss * _pair_loss(pair, torch.from_numpy(ok), valid_t)
            if cfg.outfit_loss:
                scores = net.outfit_scores(
                    pair,
                    torch.from_numpy(gcat),
                    torch.from_numpy(ok),
                    torch.from_numpy(ccat),
                    torch.from_numpy(counts),
                    torch.from_numpy(groups),
                    torch.from_numpy(gg),
                    torch.from_numpy(gg_groups),
                    torch.from_numpy(absent),
                    torch.from_numpy(gg_abs),
                )
                loss = loss + cfg.outfit_loss * _outfit_loss(scores, valid_t)
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            total += float(loss.item()) * len(logits)
        net.eval()
        model = _export(net, template, cfg, fit_items)
        row = {"epoch": float(epoch), "loss": total / max(len(questions), 1)}
        row |= _validate(model, features, positions, val)
        history.append(row)
        log(
            f"epoch {epoch:2d}  loss {row['loss']:.3f}  val FITB matched {row['val_matched']:.1%}"
            f"  collection {row['val_collection']:.1%}  uniform {row['val_uniform']:.1%}"
            f"  cold start {row['val_cold_matched']:.1%}  AUC one swapped {row['val_auc_one']:.3f}"
        )
        if best is None or row["val_key"] > best[0]:
            best = (row["val_key"], model)
        if cfg.swa_start and epoch >= cfg.swa_start:
            # The running mean of the weights since swa_start: an ensemble at no serving cost.
            swa.update_parameters(net)
            averaged = swa.module
            assert isinstance(averaged, _Net)
            model = _export(averaged, template, cfg, fit_items)
            row = {"epoch": float(epoch), "loss": row["loss"], "swa": 1.0}
            row |= _validate(model, features, positions, val)
            history.append(row)
            log(
                f"   weights averaged since epoch {cfg.swa_start}: matched {row['val_matched']:.1%}"
                f"  collection {row['val_collection']:.1%}  cold start "
                f"{row['val_cold_matched']:.1%}  AUC one swapped {row['val_auc_one']:.3f}"
            )
            if row["val_key"] > best[0]:
                best = (row["val_key"], model)
    assert best is not None
    chosen = best[1]
    pick = _Selection(features, positions, val, v4_scorer, cfg, log)
    rules_weight = pick.rules_weight(chosen) if v4_scorer is not None else 0.0
    mixed = replace(chosen, rules_weight=rules_weight)
    outfit_absence = pick.outfit_absence(mixed) if cfg.absence else float("nan")
    best_epoch = max(history, key=lambda r: r["val_key"])
    all_train = [clean[o] for o in train_ids]
    final = replace(
        chosen,
        rules_weight=rules_weight,
        outfit_absent_weight=outfit_absence,
        cooccurrence=Cooccurrence.from_outfits(all_train),
        group_cooccurrence=_group_outfits(all_train) if cfg.group_cooc else Cooccurrence.empty(),
        info={
            "config": config_info,
            "style": style_info,
            "best_epoch": int(best_epoch["epoch"]),
            "validation": best_epoch,
            # What the evaluation checks before scoring this model (docs/evaluation.md):
            # the split (seed, fraction) and exactly which outfits it was trained on.
            "split": {
                "seed": cfg.seed,
                "test_fraction": TEST_FRACTION,
                "train_fingerprint": outfits_fingerprint(outfits, train_ids),
                "outfits_fingerprint": outfits_fingerprint(outfits),
                "train_outfits": len(train_ids),
                "fit_outfits": len(fit_ids),
                "validation_outfits": len(val_ids),
                "test_outfits_never_seen": len(test_ids),
            },
        },
    )
    seconds = time.perf_counter() - started
    note = " (weights averaged)" if best_epoch.get("swa") else ""
    log(f"best epoch {int(best_epoch['epoch'])}{note}; trained in {seconds:.0f}s")
    return TrainResult(final, history, seconds, dict(final.info["split"]))


def _style_table(
    artifact: Artifact,
    embeddings: np.ndarray,
    cfg: TrainConfig,
    progress: bool,
    log: Callable[[str], None],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """``(sorted ids, (k, S) rows, their embedding checks, what was measured)``: the style of
    every catalogue photo that could be read (:mod:`stygig.training.style`), checked against
    ``embeddings`` (the artifact's rows, read once by the caller); empty with ``style_dims``
    0."""
    from stygig.training.style import STYLE_BLOCKS, STYLE_ENCODER, measure_style, reduce_style

    none: tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]] = (
        np.zeros(0, dtype=str),
        np.zeros((0, 0), np.float16),
        np.zeros(0, np.uint32),
        {},
    )
    if cfg.style_dims <= 0:
        return none
    items = list(artifact.items)
    kept = _kept_style(artifact, embeddings, cfg)
    if kept is not None:
        log(
            f"style of the catalogue photos: the artifact's current model's {len(kept[0]):,} "
            "rows, every item's embedding unchanged since they were measured (no photo read)"
        )
        return kept
    raw, readable = measure_style([i.image for i in items], progress=progress, log=log)
    rows = reduce_style(raw[readable], cfg.style_dims)
    if rows.shape[1] == 0:
        return none
    at = np.flatnonzero(readable)
    ids = np.array([items[n].id for n in at], dtype=str)
    checks = np.array([embedding_check(embeddings[n]) for n in at], np.uint32)
    order = np.argsort(ids, kind="stable")
    info = {
        "encoder": STYLE_ENCODER,
        "blocks": list(STYLE_BLOCKS),
        "features": int(raw.shape[1]),
        "dims": int(rows.shape[1]),
        "items": len(ids),
        "unreadable": int((~readable).sum()),
    }
    # float16, as the model stores them: training sees what serving will.
    return ids[order], rows[order].astype(np.float16), checks[order], info


def _kept_style(
    artifact: Artifact, embeddings: np.ndarray, cfg: TrainConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]] | None:
    """The artifact's current model's style table, when measuring again would give the same:
    the same encoder, blocks and width asked for, and the same photos (every catalogue item,
    and no other, has a row whose embedding check matches; a model that found a photo
    unreadable is never reused). Style rows are reduced over the whole catalogue, so one photo
    added, changed or removed means measuring all again (``None``). Retraining on new outfits
    then reads no photo (MANGO: 9,049 photos, 5 to 30 minutes on the shared cores)."""
    from stygig.training.style import STYLE_BLOCKS, STYLE_ENCODER

    model = artifact.compat
    info = model.info.get("style") if model is not None else None
    if model is None or not isinstance(info, dict) or not model.style_width:
        return None
    if (
        info.get("encoder") != STYLE_ENCODER
        or info.get("blocks") != list(STYLE_BLOCKS)
        or not info.get("dims") == model.style_rows.shape[1] == cfg.style_dims
    ):
        return None
    row_of = {str(i): n for n, i in enumerate(model.style_ids)}
    found = [(n, row_of[i.id]) for n, i in enumerate(artifact.items) if i.id in row_of]
    # Every item has a row: a photo that could not be read then (a fetch that failed, a file
    # since mended) may be read now, and which items lacked one is not recorded (review, s43).
    if info.get("unreadable") != 0 or not len(found) == len(row_of) == len(artifact.items):
        return None
    checks = [embedding_check(embeddings[n]) for n, _ in found]
    if checks != [int(model.style_checks[r]) for _, r in found]:
        return None
    return model.style_ids, model.style_rows, model.style_checks, dict(info)


def _group_outfits(outfits: Sequence[Sequence[str]]) -> Cooccurrence:
    """Garment-level co-occurrence: each outfit as the set of its items' garments."""
    return Cooccurrence.from_outfits([sorted({group_key(i) for i in o}) for o in outfits])


def _pair_loss(pair: torch.Tensor, given_ok: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Logistic loss on every (visible item, candidate) pair, the hidden item positive and the
    negatives weighted to balance it: pins the scores' level across items and category pairs,
    which the softmax over one question's candidates leaves free."""
    target = torch.zeros_like(pair)
    target[:, :, 0] = 1.0
    k = pair.shape[2]
    weight = torch.where(target > 0, torch.tensor(float(k - 1)), torch.tensor(1.0))
    weight = weight * given_ok.float()[:, :, None] * valid.float()[:, None, :]
    loss = nn.functional.binary_cross_entropy_with_logits(pair, target, weight, reduction="sum")
    return loss / weight.sum().clamp(min=1.0)


def _outfit_loss(scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Every real outfit (visible items + hidden one) above every one-swapped outfit of the
    batch (visible items + a negative), as the single-swap AUC counts them: a logistic
    ranking loss across outfits, which the per-question softmax leaves uncalibrated."""
    real = scores[:, 0]  # (B,)
    fake = scores[:, 1:][valid[:, 1:]]  # (F,)
    return nn.functional.softplus(fake[None, :] - real[:, None]).mean()


def _auc_one(val: _Validation, scorer: Scorer) -> float:
    """Single-swap AUC on the validation outfits, averaged over the draws (other swaps), with
    outfits scored as the evaluation and ``POST /v1/outfits/score`` score them (their weakest
    item)."""
    scorers = {"m": scorer}
    values = [
        compatibility_auc(val.outfits, val.types, val.ids, scorers, seed=s, swap="one")["m"]
        for s in val.seeds
    ]
    return float(np.mean(values))


def _criterion(matched: float, collection: float, auc_one: float) -> float:
    """What model selection maximises on the validation outfits: the headline FITB, the hard
    (same-collection) FITB and the single-swap AUC, equally."""
    return (matched + collection + auc_one) / 3.0


def _validate(
    model: CompatModel,
    features: ItemFeatures,
    positions: Mapping[str, int],
    val: _Validation,
) -> dict[str, float]:
    """Validation FITB (every sampling, cold start) and single-swap AUC of ``model``."""
    scorer = model_scorer(model, features, positions)
    acc = fitb_accuracy(val.questions, scorer, seed=0)
    one = _auc_one(val, scorer)
    row = {
        "val_uniform": float(acc["uniform"]["accuracy"]),
        "val_matched": float(acc["matched"]["accuracy"]),
        "val_collection": float(acc.get("collection", {}).get("accuracy", float("nan"))),
        "val_cold_uniform": float(acc["uniform"]["cold_start_accuracy"]),
        "val_cold_matched": float(acc["matched"]["cold_start_accuracy"]),
        "val_auc_one": one,
    }
    collection = row["val_collection"] if row["val_collection"] == row["val_collection"] else 0.0
    row["val_key"] = _criterion(row["val_matched"], collection, row["val_auc_one"])
    return row


def _memo(scorer: Scorer) -> Scorer:
    """``scorer`` with its scores kept per ``(given, cands)``: the grids below score the same
    validation questions and swaps once per weight."""
    cache: dict[tuple[tuple[str, ...], tuple[str, ...]], np.ndarray] = {}

    def score(given: Sequence[str], cands: Sequence[str]) -> np.ndarray:
        key = (tuple(given), tuple(cands))
        if key not in cache:
            cache[key] = np.asarray(scorer(given, cands))
        return cache[key]

    return score


def _with_rules(learned: Scorer, v4: Scorer | None, weight: float) -> Scorer:
    """The learned score plus ``weight`` x the V4 rules' score (learned + rules)."""
    if v4 is None or not weight:
        return learned

    def score(given: Sequence[str], cands: Sequence[str]) -> np.ndarray:
        out: np.ndarray = learned(given, cands) + weight * v4(given, cands)
        return out

    return score


@dataclass(frozen=True)
class _Selection:
    """The choices made after training, on the validation outfits: the rules' weight and the
    outfit absence weight."""

    features: ItemFeatures
    positions: Mapping[str, int]
    val: _Validation
    v4: Scorer | None
    cfg: TrainConfig
    log: Callable[[str], None]

    def outfit_absence(self, model: CompatModel) -> float:
        """The absence weight for outfit scores (:attr:`CompatModel.outfit_absent_weight`): the
        learned one (NaN) unless a weight of ``cfg.outfit_absence_grid`` gives a higher
        single-swap AUC on the validation outfits, outfits scored by their weakest item. Only
        outfit scores read it, so FITB and recommendations are unchanged.

        Why a weight of its own: ranking one garment's candidates and telling a real outfit from
        one with a misfit are different questions. Among candidates, most styled items were never
        styled with the query's, so the absence is weak evidence and training keeps its weight
        small; within an outfit, one styled item never styled with any of the others is what a
        swapped-in item looks like (the validation outfits choose how strongly it counts).

        Scored as the trainer validates the model: learned plus the rules' weight it picked; the
        weight chosen serves ``compat_mode`` learned too (the rules' weight is 0 on MANGO, so the
        two modes are the same there)."""
        rules = _memo(self.v4) if self.v4 is not None else None
        best_w, best_auc = float("nan"), -1.0
        for w in (float("nan"), *self.cfg.outfit_absence_grid):
            learned = model_scorer(
                replace(model, outfit_absent_weight=w), self.features, self.positions, outfit=True
            )
            scorer = _with_rules(learned, rules, model.rules_weight)
            auc_one = _auc_one(self.val, scorer)
            shown = "learned" if math.isnan(w) else f"{w:g}"
            self.log(f"outfit absence weight {shown}: validation AUC one swapped {auc_one:.4f}")
            if auc_one > best_auc + 1e-9:
                best_w, best_auc = w, auc_one
        return best_w

    def rules_weight(self, model: CompatModel) -> float:
        """The weight of the V4 score added to the learned one, best on the validation criterion
        (FITB matched and same-collection, and the single-swap AUC)."""
        assert self.v4 is not None
        learned = _memo(model_scorer(model, self.features, self.positions))
        rules = _memo(self.v4)
        best_w, best_key = 0.0, -1.0
        for w in self.cfg.rules_grid:
            mixed = _with_rules(learned, rules, w)
            acc = fitb_accuracy(self.val.questions, mixed, seed=self.cfg.seed)
            auc_one = _auc_one(self.val, mixed)
            matched = float(acc["matched"]["accuracy"])
            collection = float(acc.get("collection", {}).get("accuracy", 0.0))
            key = _criterion(matched, collection, auc_one)
            self.log(
                f"rules weight {w:g}: validation matched {matched:.1%}, collection "
                f"{collection:.1%}, AUC one swapped {auc_one:.3f}"
            )
            if key > best_key + 1e-9:
                best_w, best_key = w, key
        return best_w

"""Train the compatibility model on stylists' outfits (torch, CPU, seeded, minutes).

Protocol (``docs/compat.md``): the outfits are split with the evaluation's own
:func:`~stygig.evaluation.split.split_ids` (same seed, same 20 % test outfits, never seen here);
the train outfits are split again (10 %, seed + 1) into *fit* and *validation* outfits. Each
epoch asks, for every fit outfit and every item in it, "which of these completes the rest?":
the hidden item against negatives of the same product type drawn from fit outfits, half
uniformly and half by popularity, with a softmax cross-entropy loss. Validation FITB uses the
evaluation's own :func:`~stygig.evaluation.fitb.make_questions` on the validation outfits.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from stygig.compat.features import ItemFeatures, item_features
from stygig.compat.model import CompatModel, Cooccurrence, whiten_rows
from stygig.evaluation.fitb import Question, fitb_accuracy, item_types, make_questions
from stygig.evaluation.split import outfits_fingerprint, split_ids
from stygig.harmony import rgb_array

if TYPE_CHECKING:
    from stygig.artifact import Artifact

__all__ = ["TrainConfig", "TrainResult", "artifact_features", "item_types", "train_compat"]


#: The evaluation's share of test outfits (``split_ids``' default), never read by training.
TEST_FRACTION = 0.2


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters; the defaults are the ones ``docs/compat.md`` reports."""

    seed: int = 0
    epochs: int = 12
    batch: int = 256
    hidden: int = 256
    dim: int = 64
    negatives: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    dropout: float = 0.3
    val_fraction: float = 0.1
    whiten: bool = False  # PCA-whiten the embeddings first (fitted on the whole catalogue)
    threads: int = 2
    rules_grid: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)


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

    def __init__(self, n_in: int, n_cat: int, cfg: TrainConfig) -> None:
        super().__init__()
        self.lin1 = nn.Linear(n_in, cfg.hidden)
        self.lin2 = nn.Linear(cfg.hidden, cfg.dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.masks = nn.Parameter(torch.full((n_cat + 1, n_cat + 1, cfg.dim), 4.0))
        self.bias = nn.Parameter(torch.zeros(n_cat + 1, n_cat + 1))
        self.cooc_weight = nn.Parameter(torch.tensor(0.5))

    def project(self, x: torch.Tensor) -> torch.Tensor:
        g = self.lin2(self.drop(torch.relu(self.lin1(x))))
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
    ) -> torch.Tensor:
        g = self.project(rows)  # each distinct item once: most rows repeat within a batch
        gq, gc = g[given], g[cand]
        masks = self.masks[given_cat[:, :, None], cand_cat[:, None, :]]  # (B, G, K, D)
        pair = (gq[:, :, None, :] * masks * gc[:, None, :, :]).sum(-1)
        pair = pair + self.bias[given_cat[:, :, None], cand_cat[:, None, :]]
        pair = pair + self.cooc_weight * torch.log1p(cooc)
        w = given_ok.float()[:, :, None]
        out: torch.Tensor = (pair * w).sum(1) / w.sum(1).clamp(min=1.0)
        return out


def _export(
    net: _Net,
    categories: Sequence[str],
    mean: np.ndarray,
    scale: np.ndarray,
    cooc: Cooccurrence,
    info: dict[str, Any],
    white: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> CompatModel:
    def arr(t: torch.Tensor) -> np.ndarray:
        return np.asarray(t.detach().cpu().numpy(), np.float32)

    return CompatModel(
        categories=tuple(categories),
        emb_mean=mean,
        emb_scale=scale,
        w1=arr(net.lin1.weight.T),
        b1=arr(net.lin1.bias),
        w2=arr(net.lin2.weight.T),
        b2=arr(net.lin2.bias),
        masks=arr(net.masks),
        bias=arr(net.bias),
        cooc_weight=float(net.cooc_weight.item()),
        cooccurrence=cooc,
        info=info,
        white_mean=white[0],
        white_projection=white[1],
        white_scale=white[2],
    )


_NO_WHITENING = (np.zeros(0, np.float32), np.zeros((0, 0), np.float32), np.zeros(0, np.float32))


def _whitening(embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The evaluation's default whitening, fitted on every catalogue embedding (no outfit)."""
    from stygig.whitening import Whitening

    w = Whitening.fit(np.asarray(embeddings, np.float32))
    return w.mean, w.projection, w.scale


def model_scorer(
    model: CompatModel, features: ItemFeatures, positions: Mapping[str, int]
) -> Callable[[Sequence[str], Sequence[str]], np.ndarray]:
    """A FITB scorer ``(given ids, candidate ids) -> scores`` from the NumPy model."""
    vectors = model.project(features)
    cats = features.category

    def score(given: Sequence[str], cands: Sequence[str]) -> np.ndarray:
        q = np.array([positions[i] for i in given], np.int64)
        c = np.array([positions[i] for i in cands], np.int64)
        co = model.cooccurrence
        counts = co.lookup(co.codes(tuple(given)), co.codes(tuple(cands)))
        return model.score(vectors[q], cats[q], vectors[c], cats[c], counts)

    return score


class _Sampler:
    """Epochs of training questions: every item of every fit outfit hidden once."""

    def __init__(self, outfits: list[list[int]], types: np.ndarray, negatives: int) -> None:
        self.outfits, self.types, self.negatives = outfits, types, negatives
        counts = np.bincount(np.concatenate(outfits), minlength=len(types)).astype(np.float64)
        self.pools: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for t in np.unique(types[counts > 0]):
            rows = np.flatnonzero((types == t) & (counts > 0))
            self.pools[int(t)] = (rows, counts[rows] / counts[rows].sum())

    def epoch(self, rng: np.random.Generator) -> list[tuple[list[int], list[int], int]]:
        """``(given rows, candidate rows (hidden first), outfit index)`` in random order."""
        out = []
        half = self.negatives // 2
        for k, outfit in enumerate(self.outfits):
            for hidden in outfit:
                rows, probs = self.pools[int(self.types[hidden])]
                uni = rows[rng.integers(len(rows), size=half)]
                pop = rows[rng.choice(len(rows), size=self.negatives - half, p=probs)]
                given = [i for i in outfit if i != hidden]
                out.append((given, [hidden, *uni.tolist(), *pop.tolist()], k))
        order = rng.permutation(len(out))
        return [out[i] for i in order]


def _batch(
    questions: Sequence[tuple[list[int], list[int], int]],
    outfits: list[list[int]],
    cat: np.ndarray,
    cooc: Cooccurrence,
    codes: np.ndarray,
) -> tuple[np.ndarray, ...]:
    b, g = len(questions), max(len(q[0]) for q in questions)
    k = len(questions[0][1])
    given = np.zeros((b, g), np.int64)
    ok = np.zeros((b, g), bool)
    cands = np.array([q[1] for q in questions], np.int64)
    counts = np.zeros((b, g, k), np.float32)
    valid = np.ones((b, k), bool)
    for n, (rows, cand, o) in enumerate(questions):
        given[n, : len(rows)] = rows
        ok[n, : len(rows)] = True
        counts[n, : len(rows)] = cooc.lookup(codes[rows], codes[cand])
        counts[n, : len(rows), 0] -= 1.0  # the outfit itself is not outside evidence
        in_outfit = set(outfits[o])
        valid[n, 1:] = [c not in in_outfit for c in cand[1:]]
    counts = np.maximum(counts, 0.0)
    return given, ok, cat[given], cands, cat[cands], counts, valid


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
    fit_outfits = [[positions[i] for i in clean[o]] for o in fit_ids if len(clean[o]) >= 2]
    categories = sorted({i.category for i in artifact.items})
    features = artifact_features(artifact, categories)
    white = _whitening(features.embeddings) if cfg.whiten else _NO_WHITENING
    emb = whiten_rows(features.embeddings, *white).astype(np.float64)
    mean = emb.mean(axis=0).astype(np.float32)
    scale = (1.0 / np.maximum(emb.std(axis=0), 1e-6)).astype(np.float32)

    id_list = [i.id for i in artifact.items]
    fit_cooc = Cooccurrence.from_outfits([clean[o] for o in fit_ids])
    codes = fit_cooc.codes(tuple(id_list))
    type_names = sorted(set(types.values()))
    type_codes = np.array([type_names.index(types[i]) for i in id_list], np.int64)
    sampler = _Sampler(fit_outfits, type_codes, cfg.negatives)
    val_questions = make_questions(
        {o: clean[o] for o in train_ids},
        types,
        val_ids,
        fit_ids,
        seed=cfg.seed,
        samplings=("uniform", "matched"),
    )

    placeholder = _export(_Net(1, 0, cfg), categories, mean, scale, fit_cooc, {}, white)
    x_all = torch.from_numpy(placeholder.inputs(features))
    cat_all = np.where(features.category >= 0, features.category, len(categories))
    net = _Net(x_all.shape[1], len(categories), cfg)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    info = {"config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}}
    history: list[dict[str, float]] = []
    best: tuple[float, CompatModel] | None = None
    for epoch in range(1, cfg.epochs + 1):
        net.train()
        questions = sampler.epoch(rng)
        batches = range(0, len(questions), cfg.batch)
        total = 0.0
        bar = tqdm(batches, desc=f"epoch {epoch}/{cfg.epochs}", disable=not progress, leave=False)
        for start in bar:
            given, ok, gcat, cands, ccat, counts, valid = _batch(
                questions[start : start + cfg.batch], fit_outfits, cat_all, fit_cooc, codes
            )
            uniq, inverse = np.unique(np.concatenate([given, cands], 1), return_inverse=True)
            inverse = inverse.reshape(len(given), -1)
            logits = net(
                x_all[torch.from_numpy(uniq)],
                torch.from_numpy(inverse[:, : given.shape[1]]),
                torch.from_numpy(gcat),
                torch.from_numpy(ok),
                torch.from_numpy(inverse[:, given.shape[1] :]),
                torch.from_numpy(ccat),
                torch.from_numpy(counts),
            )
            logits = logits.masked_fill(~torch.from_numpy(valid), -1e4)
            loss = nn.functional.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long))
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            total += float(loss.item()) * len(logits)
        net.eval()
        model = _export(net, categories, mean, scale, fit_cooc, info, white)
        acc = fitb_accuracy(val_questions, model_scorer(model, features, positions), seed=cfg.seed)
        row = {
            "epoch": float(epoch),
            "loss": total / max(len(questions), 1),
            "val_uniform": float(acc["uniform"]["accuracy"]),
            "val_matched": float(acc["matched"]["accuracy"]),
            "val_cold_uniform": float(acc["uniform"]["cold_start_accuracy"]),
            "val_cold_matched": float(acc["matched"]["cold_start_accuracy"]),
        }
        history.append(row)
        log(
            f"epoch {epoch:2d}  loss {row['loss']:.3f}  val FITB uniform {row['val_uniform']:.1%}"
            f"  matched {row['val_matched']:.1%}  cold start {row['val_cold_uniform']:.1%}"
            f" / {row['val_cold_matched']:.1%}"
        )
        key = row["val_uniform"] + row["val_matched"]
        if best is None or key > best[0]:
            best = (key, model)
    assert best is not None
    chosen = best[1]
    rules_weight = 0.0
    if v4_scorer is not None:
        rules_weight = _pick_rules_weight(
            chosen, features, positions, val_questions, v4_scorer, cfg, log
        )
    all_cooc = Cooccurrence.from_outfits([clean[o] for o in train_ids])
    best_epoch = max(history, key=lambda r: r["val_uniform"] + r["val_matched"])
    final = CompatModel(
        **{
            **{k: getattr(chosen, k) for k in chosen.__dataclass_fields__},
            "rules_weight": rules_weight,
            "cooccurrence": all_cooc,
            "info": {
                **info,
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
        }
    )
    seconds = time.perf_counter() - started
    log(f"best epoch {int(best_epoch['epoch'])}; trained in {seconds:.0f}s")
    return TrainResult(final, history, seconds, dict(final.info["split"]))


def _pick_rules_weight(
    model: CompatModel,
    features: ItemFeatures,
    positions: Mapping[str, int],
    questions: Sequence[Question],
    v4: Callable[[Sequence[str], Sequence[str]], np.ndarray],
    cfg: TrainConfig,
    log: Callable[[str], None],
) -> float:
    """The weight of the V4 score added to the learned one, best on validation FITB."""
    learned = model_scorer(model, features, positions)
    cache = {
        (q.given, q.candidates): (learned(q.given, q.candidates), v4(q.given, q.candidates))
        for q in questions
    }
    best_w, best_acc = 0.0, -1.0
    for w in cfg.rules_grid:

        def mixed(given: Sequence[str], cands: Sequence[str], w: float = w) -> np.ndarray:
            a, b = cache[(tuple(given), tuple(cands))]
            out: np.ndarray = a + w * b
            return out

        acc = fitb_accuracy(questions, mixed, seed=cfg.seed)
        mean = (float(acc["uniform"]["accuracy"]) + float(acc["matched"]["accuracy"])) / 2
        log(f"rules weight {w:g}: validation FITB (mean of samplings) {mean:.1%}")
        if mean > best_acc + 1e-9:
            best_w, best_acc = w, mean
    return best_w

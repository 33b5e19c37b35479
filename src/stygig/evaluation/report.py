"""Write the evaluation's numbers: ``metrics.json`` (everything) and ``metrics.png`` (a chart).

The chart draws one horizontal bar per headline number, grouped by question, with the target
as a red tick and baselines in grey, so one glance says what passes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Bar", "bars_from_metrics", "write_chart", "write_metrics"]


@dataclass(frozen=True)
class Bar:
    """One bar: a share in ``[0, 1]``, an optional target, and whether it is a baseline."""

    group: str
    label: str
    value: float
    target: float | None = None
    baseline: bool = False


def _get(metrics: dict[str, Any], *path: str) -> float | None:
    node: Any = metrics
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return float(node) if isinstance(node, int | float) and not math.isnan(node) else None


def bars_from_metrics(metrics: dict[str, Any]) -> list[Bar]:
    """The headline numbers of a metrics dict, in chart order (absent parts are skipped)."""
    targets = metrics.get("targets", {})
    spec: list[tuple[str, str, tuple[str, ...], float | None, bool]] = [
        (
            "category vote",
            label + ("" if view == "plain" else " whitened"),
            ("category", view, label, "accuracy"),
            targets.get(label),
            False,
        )
        for label in ("subCategory", "articleType")
        for view in ("plain", "whitened")
    ]
    spec += [
        ("colour", "colour family agrees", ("color", "agreement"), None, False),
        (
            "outfit validity",
            "items: category+gender",
            ("validity", "items_both_valid"),
            targets.get("validity"),
            False,
        ),
        (
            "outfit validity",
            "outfit: category+gender",
            ("validity", "outfit_both_valid"),
            targets.get("validity"),
            False,
        ),
    ]
    for scope in ("items", "outfit"):
        for key, label in (
            ("validity_whitened", "whitened"),
            ("validity_whitened_stated_gender", "whitened, gender stated"),
        ):
            where = (key, f"{scope}_both_valid")
            spec.append(
                ("outfit validity", f"{scope}: {label}", where, targets.get("validity"), False)
            )
    spec.append(
        (
            "outfit validity",
            "items: whitened, gender always guessed",
            ("validity_whitened_always_guess", "items_both_valid"),
            None,
            True,
        )
    )
    spec += _fitb_spec(metrics, targets)
    bars = []
    for group, label, path, target, baseline in spec:
        value = _get(metrics, *path)
        if value is not None:
            bars.append(Bar(group, label, value, target, baseline))
    return bars


#: Outfit statistics on the same questions (grey bars): what a scorer must beat.
BASELINES = (
    "cooccurrence+popularity",
    "cooccurrence+absence",
    "cooccurrence",
    "popularity",
    "no-history",
    "random",
)


def _fitb_spec(
    metrics: dict[str, Any], targets: dict[str, float]
) -> list[tuple[str, str, tuple[str, ...], float | None, bool]]:
    """FITB and AUC bars: popularity-matched first (the headline), then same-collection
    negatives, uniform, and both AUCs; each scorer beside the statistics baselines."""
    acc = metrics.get("fitb", {}).get("accuracy", {})
    scorers = [n for n in (*LEARNED, "v4", "v4_whitened") if n in acc]
    spec: list[tuple[str, str, tuple[str, ...], float | None, bool]] = []
    for sampling, group, target in (
        ("matched", "FITB matched (headline)", "fitb_matched"),
        ("collection", "FITB same-collection negatives", "fitb_collection"),
        ("uniform", "FITB uniform", None),
        ("cold", "FITB cold start, no candidate with history", "fitb_cold_start"),
    ):
        for name in (*scorers, *BASELINES):
            learned = name in LEARNED
            spec.append(
                (
                    group,
                    f"{name}",
                    ("fitb", "accuracy", name, sampling, "accuracy"),
                    targets.get(target) if learned and target else None,
                    name in BASELINES,
                )
            )
            if sampling == "matched" and (learned or name in ("v4", "no-history")):
                # Not the cold-start target's: an unseen answer among matched negatives is
                # nearly always the one without history (the no-history rule's bar beside it).
                for key, label in (
                    ("cold_start_accuracy", "unseen answers"),
                    ("seen_accuracy", "seen answers"),
                ):
                    spec.append(
                        (
                            group,
                            f"{name}: {label}",
                            ("fitb", "accuracy", name, sampling, key),
                            None,
                            name in BASELINES,
                        )
                    )
    for key, group, target in (
        ("auc_single_swap", "AUC, one item swapped", "auc_single_swap"),
        ("auc_single_swap_pair_mean", "AUC, one item swapped (pairs' mean)", None),
        ("auc", "AUC, every item swapped", None),
    ):
        for name in (*scorers, "cosine", "harmony", *BASELINES[:-1]):  # random has no AUC
            spec.append(
                (
                    group,
                    name,
                    ("fitb", key, name),
                    targets.get(target) if name in LEARNED and target else None,
                    name in BASELINES or name in ("cosine", "harmony"),
                )
            )
    return spec


def write_metrics(metrics: dict[str, Any], out_dir: Path) -> Path:
    """``metrics.json`` (sorted keys, NaN written as null)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "metrics.json"
    path.write_text(json.dumps(_clean(metrics), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_chart(bars: list[Bar], out_dir: Path, *, title: str = "StyGig evaluation") -> Path:
    """``metrics.png``: horizontal bars with value labels and red target ticks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "metrics.png"
    n = max(len(bars), 1)
    fig, ax = plt.subplots(figsize=(9, 0.42 * n + 1.6), dpi=110)
    palette = ["#2b6cb0", "#2f855a", "#b7791f", "#6b46c1", "#c05621", "#2c7a7b", "#97266d"]
    groups = list(dict.fromkeys(b.group for b in bars))
    for y, bar in enumerate(bars):
        colour = "#a0aec0" if bar.baseline else palette[groups.index(bar.group) % len(palette)]
        ax.barh(y, bar.value * 100, color=colour, height=0.7)
        right = max(bar.value, bar.target or 0.0) * 100  # keep the label clear of the tick
        ax.text(right + 0.8, y, f"{bar.value * 100:.1f}", va="center", fontsize=8)
        if bar.target is not None:
            ax.plot([bar.target * 100] * 2, [y - 0.42, y + 0.42], color="#e53e3e", lw=2.2)
    ax.set_yticks(range(len(bars)))
    ax.set_yticklabels([f"{b.group}: {b.label}" for b in bars], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 108)
    ax.set_xlabel("% (AUC x 100); red tick = target; grey = baseline")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_gender_chart(metrics: dict[str, Any], out_dir: Path) -> Path | None:
    """``gender-confidence.png``: validity and hedged share against ``gender_min_confidence``."""
    block = metrics.get("gender_confidence")
    if not block:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = block["queries"]
    cal = block["calibration"]
    t = [r["threshold"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot(t, [r["items_both_valid"] * 100 for r in rows], "o-", label="validity (query photos)")
    ax.plot(
        t,
        [(c["confident_correct"] or 0) * 100 for c in cal],
        "s--",
        label="confident votes right (catalogue, leave-one-out)",
    )
    target = metrics.get("targets", {}).get("validity")
    if target:
        ax.axhline(target * 100, color="#e53e3e", lw=1, label="validity target")
    ax.axvline(block["default"], color="#718096", ls=":", label="default")
    ax.set_ylim(90, 100)
    ax.set_xlabel("gender_min_confidence (0 = always guess)")
    ax.set_ylabel("% right")
    right = ax.twinx()
    right.plot(t, [r["hedged_share"] * 100 for r in rows], "^-", color="#2f855a")
    right.set_ylim(0, 50)
    right.set_ylabel("% of queries hedged (unisex items only)", color="#2f855a")
    ax.set_title("Gender: guess or hedge? (triangles: right axis)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "gender-confidence.png"
    fig.savefig(path)
    plt.close(fig)
    return path


#: The learned compatibility scorers (present when the MANGO artifact has a model).
LEARNED = ("learned", "learned+rules")


def fitb_table(metrics: dict[str, Any]) -> str:
    """Markdown table: every scorer and baseline on the same questions, matched first."""
    rows = [
        "| scorer | matched | unseen / seen (matched) | same collection | uniform "
        "| AUC one swapped | AUC one swapped, pairs' mean | AUC all swapped |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    fitb = metrics.get("fitb", {})
    acc, all_swapped = fitb.get("accuracy", {}), fitb.get("auc", {})
    one_swapped = fitb.get("auc_single_swap", {})
    one_pairs = fitb.get("auc_single_swap_pair_mean", {})

    def pct(value: Any) -> str:
        ok = isinstance(value, int | float) and not math.isnan(value)
        return f"{value:.1%}" if ok else "-"

    def num(value: Any) -> str:
        ok = isinstance(value, int | float) and not math.isnan(value)
        return f"{value:.3f}" if ok else "-"

    for name in (*LEARNED, "v4", *BASELINES):
        if name not in acc:
            continue
        m = acc[name].get("matched", {})
        rows.append(
            f"| {name} | {pct(m.get('accuracy'))} | {pct(m.get('cold_start_accuracy'))} / "
            f"{pct(m.get('seen_accuracy'))} | {pct(acc[name].get('collection', {}).get('accuracy'))}"
            f" | {pct(acc[name].get('uniform', {}).get('accuracy'))} | "
            f"{num(one_swapped.get(name))} | {num(one_pairs.get(name))} | "
            f"{num(all_swapped.get(name))} |"
        )
    head = fitb.get("headline")
    if head:
        rows.append(
            f"\nheadline ({head['scorer']}, popularity-matched): {pct(head['matched'])}, "
            f"{head['margin_over_baseline_matched'] * 100:+.1f} points over "
            f"{head['baseline']} ({pct(head['baseline_matched'])})"
            + (
                f", {head['margin_over_best_baseline_matched'] * 100:+.1f} over the best "
                f"statistic, {head['best_baseline']} ({pct(head['best_baseline_matched'])})"
                if "best_baseline" in head
                else ""
            )
            + (
                f"; with the test outfits near a train outfit asked too: "
                f"{pct(head['matched_with_near_copies'])}"
                if "matched_with_near_copies" in head
                else ""
            )
        )
    return "\n".join(rows)

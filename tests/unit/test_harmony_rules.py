"""Harmony's rule decision: the first rule that holds wins, whatever the configured bands, and a
kept neutral mask gives the same answer as one computed per call."""

from __future__ import annotations

import numpy as np
import pytest

from stygig.harmony import HarmonyRules, harmony, neutral_colors


def first_rule(query: np.ndarray, cand: np.ndarray, r: HarmonyRules) -> np.ndarray:
    """The rules written out one pair at a time, in their documented order."""
    out = []
    q_neutral = bool(neutral_colors(query[None, :], r)[0])
    for c, c_neutral in zip(cand, neutral_colors(cand, r), strict=True):
        gap = abs(float(query[0]) - float(c[0])) % 360.0
        gap = min(gap, 360.0 - gap)
        if q_neutral or c_neutral:
            out.append(0)
        elif gap <= r.monochrome_deg:
            out.append(1)
        elif gap <= r.analogous_deg:
            out.append(2)
        elif abs(gap - 180.0) <= r.complementary_tolerance_deg:
            out.append(3)
        elif abs(gap - 120.0) <= r.triadic_tolerance_deg:
            out.append(4)
        else:
            out.append(5)
    return np.array(out)


@pytest.mark.parametrize(
    "rules",
    [
        HarmonyRules(),
        # Overlapping bands: analogous reaches into triadic, complementary into triadic.
        HarmonyRules(analogous_deg=110.0, triadic_tolerance_deg=40.0),
        HarmonyRules(complementary_tolerance_deg=70.0, triadic_tolerance_deg=30.0),
        HarmonyRules(monochrome_deg=0.0, analogous_deg=0.0, neutral_max_saturation=0.0),
    ],
)
def test_first_rule_wins_for_any_bands(rules: HarmonyRules) -> None:
    rng = np.random.default_rng(3)
    # Hues on whole degrees too, so gaps land exactly on the band edges.
    hues = np.concatenate([rng.uniform(0, 360, 300), np.arange(0, 360, 1.0)])
    cand = np.column_stack([hues, rng.uniform(0, 1, len(hues)), rng.uniform(0, 1, len(hues))])
    for query in (np.array([200.0, 0.7, 0.5]), np.array([0.0, 0.9, 0.5])):
        _, got = harmony(query, cand, rules)
        assert (got == first_rule(query, cand, rules)).all()


def test_kept_neutral_mask_gives_the_same_answer() -> None:
    rng = np.random.default_rng(4)
    cand = np.column_stack(
        [rng.uniform(0, 360, 500), rng.uniform(0, 1, 500), rng.uniform(0, 1, 500)]
    )
    kept = neutral_colors(cand)
    assert 0 < kept.sum() < len(cand)  # both kinds present, so the mask matters
    for query in (np.array([30.0, 0.8, 0.5]), np.array([220.0, 0.05, 0.5])):  # colour, grey
        plain_s, plain_r = harmony(query, cand)
        kept_s, kept_r = harmony(query, cand, cand_neutral=kept)
        assert (plain_r == kept_r).all() and (plain_s == kept_s).all()

"""Whose items to recommend: the stated gender, a catalogue item's, or the photos' vote.

A pure function of what the query parts say; the answer's ``gender`` explains the decision.
With the artifact's gender stack (:class:`stygig.category_head.GenderHead`) the photos'
decision is the stacker's: its probability and its gate replace the vote's share and
``gender_min_confidence``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from stygig.answer import GenderDecision
from stygig.scoring import weighted_winner

__all__ = ["StackedGender", "decide_gender"]


@dataclass(frozen=True)
class StackedGender:
    """The stacked decision's view of a request's photos.

    ``probabilities``: per photo, the stacker's probability of ``labels[1]`` (``None``: a
    photo the stacker does not model, a neighbour of another gender than ``labels`` voted);
    trusted from ``gate`` up.
    """

    labels: tuple[str, str]
    gate: float
    probabilities: Sequence[float | None]


def decide_gender(
    *,
    stated: str | None,
    item_genders: Sequence[str | None],
    photo_votes: Sequence[Mapping[int, float]],
    names: Sequence[str],
    min_confidence: float,
    mode: str,
    can_hedge: bool,
    stacked: StackedGender | None = None,
) -> GenderDecision:
    """The gender filter of one request.

    Args:
        stated: the caller's gender (already checked against the catalogue), which wins.
        item_genders: the genders of the query's catalogue items; the first that is neither
            unisex nor missing decides.
        photo_votes: per photo, gender code -> summed similarity of the neighbours of that
            gender (unisex neighbours abstain); pooled over the photos.
        names: gender names by code.
        min_confidence: the share of the pooled weight the winner needs to be trusted.
        mode: ``outfit`` or ``similar``.
        can_hedge: whether the catalogue has items that fit anyone (unisex or no gender).
        stacked: the stacked decision (:class:`StackedGender`); when every photo has its
            probability, their mean decides against its gate instead of the pooled vote
            against ``min_confidence`` (a photo it does not model leaves the request to the
            vote).

    Below ``min_confidence`` the engine does not guess (``source`` is ``uncertain``): outfits
    are ``hedged``, drawn from items that fit whoever the shopper is. Visual search is not
    hedged, and a catalogue without such items cannot be: there the best guess is used.
    """
    if stated:
        return GenderDecision(stated.lower(), "stated")
    for gender in item_genders:
        if gender not in (None, "unisex"):
            return GenderDecision(gender, "item")
    probabilities = [] if stacked is None else list(stacked.probabilities)
    if stacked is not None and probabilities and None not in probabilities:
        p = sum(v for v in probabilities if v is not None) / len(probabilities)
        name = stacked.labels[1] if p > 0.5 else stacked.labels[0]
        return _gate(name, max(p, 1.0 - p), stacked.gate, mode, can_hedge)
    pooled: dict[int, float] = {}
    for votes in photo_votes:
        for g, w in votes.items():
            pooled[g] = pooled.get(g, 0.0) + w
    winner = weighted_winner(pooled)
    if winner is None:
        return GenderDecision(None, "none")
    return _gate(names[winner[0]], winner[1], min_confidence, mode, can_hedge)


def _gate(name: str, share: float, threshold: float, mode: str, can_hedge: bool) -> GenderDecision:
    """The photos' likeliest gender ``name``, trusted when its ``share`` reaches ``threshold``."""
    confidence = round(share, 3)
    if share >= threshold:
        return GenderDecision(name, "photo", confidence=confidence)
    hedged = mode == "outfit" and can_hedge
    return GenderDecision(
        None if hedged or mode == "similar" else name,
        "uncertain",
        hedged=hedged,
        confidence=confidence,
        guess=name,
    )

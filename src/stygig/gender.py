"""Whose items to recommend: the stated gender, a catalogue item's, or the photos' vote.

A pure function of what the query parts say; the answer's ``gender`` explains the decision.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from stygig.answer import GenderDecision
from stygig.scoring import weighted_winner

__all__ = ["decide_gender"]


def decide_gender(
    *,
    stated: str | None,
    item_genders: Sequence[str | None],
    photo_votes: Sequence[Mapping[int, float]],
    names: Sequence[str],
    min_confidence: float,
    mode: str,
    can_hedge: bool,
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

    Below ``min_confidence`` the engine does not guess (``source`` is ``uncertain``): outfits
    are ``hedged``, drawn from items that fit whoever the shopper is. Visual search is not
    hedged, and a catalogue without such items cannot be: there the best guess is used.
    """
    if stated:
        return GenderDecision(stated.lower(), "stated")
    for gender in item_genders:
        if gender not in (None, "unisex"):
            return GenderDecision(gender, "item")
    pooled: dict[int, float] = {}
    for votes in photo_votes:
        for g, w in votes.items():
            pooled[g] = pooled.get(g, 0.0) + w
    winner = weighted_winner(pooled)
    if winner is None:
        return GenderDecision(None, "none")
    name, confidence = names[winner[0]], round(winner[1], 3)
    if winner[1] >= min_confidence:
        return GenderDecision(name, "photo", confidence=confidence)
    hedged = mode == "outfit" and can_hedge
    return GenderDecision(
        None if hedged or mode == "similar" else name,
        "uncertain",
        hedged=hedged,
        confidence=confidence,
        guess=name,
    )

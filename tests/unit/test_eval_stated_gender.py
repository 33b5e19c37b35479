"""Outfit validity with the gender stated: a gender that only held-out rows have is not stated
(the catalogue no longer holds it, and the engine refuses a request that states it)."""

from __future__ import annotations

from pathlib import Path

from stygig.artifact import Artifact
from stygig.engine import Recommender
from stygig.evaluation.category import outfit_validity


def test_a_gender_only_held_out_rows_have_is_not_stated(sample: tuple[Path, Path]) -> None:
    rec = Recommender(Artifact.load(sample[1]))
    items = rec.artifact.items
    genders = sorted({i.gender for i in items if i.gender and i.gender != "unisex"})
    assert len(genders) >= 2, genders
    gone = [n for n, i in enumerate(items) if i.gender == genders[0]]  # all of one gender
    others = [n for n, i in enumerate(items) if i.gender == genders[1]][:3]
    queries = gone[:3] + others
    out = outfit_validity(rec, queries, gone, state_gender=True)
    assert out["queries"] == len(queries)
    assert out["gender_not_stated"] == 3  # the others' gender is held, so stated
    assert genders[0] not in rec.columns.genders_held

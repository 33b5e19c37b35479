"""Quality evaluation on real data: category votes, colour, outfit validity, fill-in-the-blank.

The measuring functions work on arrays and id lists (tested on synthetic data); ``stygig eval``
(:mod:`stygig.evaluation.command`) wires them to the shared datasets. See ``docs/evaluation.md``.
"""

from __future__ import annotations

from stygig.evaluation.category import (
    color_agreement,
    confusions,
    encode_labels,
    evaluate_photos,
    knn_vote,
    outfit_validity,
    tune_whitening,
    vote_accuracy,
    whitened_artifact,
)
from stygig.evaluation.fitb import (
    HEADLINE,
    SAMPLINGS,
    Question,
    auc,
    check_model_split,
    compatibility_auc,
    evaluate_outfits,
    fitb_accuracy,
    make_questions,
    read_outfits,
    read_questions,
    statistics_scorers,
    write_questions,
)
from stygig.evaluation.split import Split, outfits_fingerprint, split_ids, stratified_split

__all__ = [
    "HEADLINE",
    "SAMPLINGS",
    "Question",
    "Split",
    "auc",
    "check_model_split",
    "color_agreement",
    "compatibility_auc",
    "confusions",
    "encode_labels",
    "evaluate_outfits",
    "evaluate_photos",
    "fitb_accuracy",
    "knn_vote",
    "make_questions",
    "outfit_validity",
    "outfits_fingerprint",
    "read_outfits",
    "read_questions",
    "split_ids",
    "statistics_scorers",
    "stratified_split",
    "tune_whitening",
    "vote_accuracy",
    "whitened_artifact",
    "write_questions",
]

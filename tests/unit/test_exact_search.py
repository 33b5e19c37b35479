"""top_k's contract at the k-th place: among tied scores the lowest ids win, as documented."""

from __future__ import annotations

import numpy as np

from stygig.index import ExactIndex, top_k


def test_ties_across_the_kth_place_go_to_the_lowest_ids() -> None:
    rng = np.random.default_rng(0)
    sims = rng.uniform(0, 0.5, (3, 2000)).astype(np.float32)
    sims[:, [1208, 7, 1000, 1500]] = 0.9  # four tied rows compete for the last two places
    sims[:, [3, 40]] = 0.95
    scores, ids = top_k(sims, 4, None)
    assert ids.tolist() == [[3, 40, 7, 1000]] * 3
    assert np.all(scores[:, 2:] == np.float32(0.9))
    removed = np.zeros(2000, bool)
    removed[7] = True  # a removed row never counts, tied or not
    assert top_k(sims, 4, removed)[1].tolist() == [[3, 40, 1000, 1208]] * 3


def test_the_exact_index_keeps_the_same_rule() -> None:
    x = np.zeros((5000, 4), np.float32)
    x[:, 0] = 1.0  # every row ties with every other
    _, ids = ExactIndex(x).search(np.array([[1, 0, 0, 0]], np.float32), 5)
    assert ids.tolist() == [[0, 1, 2, 3, 4]]

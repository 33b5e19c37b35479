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


def test_one_query_takes_the_same_rule() -> None:
    """The one-query path (a heap for the k-th best) keeps the tie rule, removed rows and short
    catalogues exactly as the general path does."""
    rng = np.random.default_rng(1)
    sims = rng.uniform(0, 0.5, (1, 2000)).astype(np.float32)
    sims[0, [1208, 7, 1000, 1500]] = 0.9
    sims[0, [3, 40]] = 0.95
    scores, ids = top_k(sims, 4, None)
    assert ids.tolist() == [[3, 40, 7, 1000]] and np.all(scores[0, 2:] == np.float32(0.9))
    stacked = np.repeat(sims, 2, axis=0)  # the general path, for reference
    for k in (1, 5, 37, 1999, 2000, 2500):
        removed = rng.random(2000) < 0.3
        for dead in (None, removed):
            one, many = top_k(sims, k, dead), top_k(stacked, k, dead)
            np.testing.assert_array_equal(one[1][0], many[1][0])
            np.testing.assert_array_equal(one[0][0], many[0][0])
    all_but_three = np.ones(2000, bool)
    all_but_three[[5, 9, 11]] = False  # fewer live rows than k: the rest is padding
    scores, ids = top_k(sims, 6, all_but_three)
    assert ids.tolist() == [[*sorted([5, 9, 11], key=lambda i: -sims[0, i]), -1, -1, -1]]
    assert np.isneginf(scores[0, 3:]).all()

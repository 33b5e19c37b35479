"""Copy-on-write rows and maps (stygig.rows) against plain lists and dicts, as an oracle."""

from __future__ import annotations

import random

import pytest

from stygig.rows import Overlay, Rows


@pytest.mark.slow
def test_rows_follow_a_list_through_random_changes_and_old_versions_never_move() -> None:
    rnd = random.Random(0)
    rows, oracle = Rows(range(50)), list(range(50))
    history: list[tuple[Rows[int], list[int]]] = []
    for step in range(3000):
        history.append((rows, list(oracle)))
        replaced = {rnd.randrange(len(oracle)): -step for _ in range(rnd.randrange(3))}
        appended = [step * 10 + j for j in range(rnd.choice([0, 0, 1, 5]))]
        rows = rows.changed(replaced, appended)
        for i, v in replaced.items():
            oracle[i] = v
        oracle += appended
        if step % 97 == 0:  # now and then, a branch from an old version must stay separate
            old, frozen = history[rnd.randrange(len(history))]
            branch = old.changed({0: -1}, [7, 8])
            assert list(branch) == [-1, *frozen[1:], 7, 8]
    assert list(rows) == oracle and len(rows) == len(oracle)
    assert rows[-1] == oracle[-1] and rows[3:9] == oracle[3:9]
    for old, frozen in history:
        assert list(old) == frozen and len(old) == len(frozen)
        assert [old[i] for i in range(len(frozen))] == frozen
    with pytest.raises(IndexError):
        rows[len(oracle)]


def test_overlay_follows_a_dict_through_random_changes_and_old_versions_never_move() -> None:
    rnd = random.Random(1)
    keys = [f"k{i}" for i in range(400)]
    mapping, oracle = Overlay({k: 0 for k in keys[:100]}), {k: 0 for k in keys[:100]}
    history: list[tuple[Overlay[str, int], dict[str, int]]] = []
    for step in range(3000):
        history.append((mapping, dict(oracle)))
        gone = rnd.sample(sorted(oracle), min(len(oracle), rnd.choice([0, 0, 1, 2])))
        for key in gone:
            del oracle[key]
        updates = {rnd.choice(keys): step for _ in range(rnd.randrange(3))}
        oracle.update(updates)
        mapping = mapping.changed(updates, removed=gone)
    assert dict(mapping.items()) == oracle and len(mapping) == len(oracle)
    for key in keys:
        assert (key in mapping) == (key in oracle)
        assert mapping.get(key) == oracle.get(key)
    for old, frozen in history[::50]:
        assert dict(old.items()) == frozen and len(old) == len(frozen)
    with pytest.raises(KeyError):
        mapping.changed({}, removed=["not-there"])

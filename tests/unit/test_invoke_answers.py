"""``stygig invoke``'s reading of an answer: StyGig's contract checked, and any other JSON (a
different model behind the URL, a broken deployment) said in one line, never a traceback."""

from __future__ import annotations

from typing import Any

import pytest

from stygig.deploy.invoke import check_response, describe_response

GOOD: dict[str, Any] = {
    "mode": "outfit",
    "query": [{"category": "shirt", "votes": {"shirt": 4, "top": 1}, "rgb": [10, 20, 30]}],
    "items": [{"id": "a", "category": "jeans", "rgb": [1, 2, 3], "boost": 1.15}],
    "outfit": {"slots": {"bottom": {"id": "a", "rgb": [1, 2, 3], "boost": 1.15}}},
    "timings_ms": {"total": 12.5},
}


def test_stygigs_answer_passes_and_is_described() -> None:
    assert check_response(GOOD) == []
    text = describe_response(GOOD, 20.0)
    assert "query: shirt (votes: shirt 4, top 1) rgb (10, 20, 30)" in text
    assert "12.5 ms inside the server" in text


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ({"predictions": [[0.1, 0.9]]}, "'items' is not a list of objects"),
        ({"items": [1, 2, 3]}, "'items' is not a list of objects"),
        ({**GOOD, "query": {"label": "cat"}}, "'query' is not a list of objects"),
        ({**GOOD, "query": [{"votes": {"shirt": "5"}, "rgb": [1, 2, 3]}]}, "map of counts"),
        ({**GOOD, "outfit": {"slots": ["a"]}}, "'outfit' is not an object of slots"),
        ({**GOOD, "timings_ms": 12}, "'timings_ms' is not an object"),
    ],
)
def test_another_answer_is_said_not_a_traceback(answer: dict[str, Any], problem: str) -> None:
    """Review (session 35): each of these was an AttributeError or TypeError traceback."""
    problems = check_response(answer)
    assert any(problem in p and p.startswith("not StyGig's answer") for p in problems), problems
    assert describe_response(answer, 3.0).startswith("{")  # shown as its JSON


def test_a_wrong_colour_is_a_check_failure_and_still_described() -> None:
    answer = {**GOOD, "query": [{"category": "x", "votes": {"x": 5}, "rgb": 7}]}
    assert check_response(answer) == ["query: rgb 7 is not [r, g, b]"]
    assert "rgb 7" in describe_response(answer, 3.0)

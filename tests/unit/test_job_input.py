"""Async job inputs are read by the same JSON rules as real-time requests."""

from __future__ import annotations

import base64
import json

import pytest

from stygig.errors import InputError, InvalidImageError, InvalidOptionsError
from stygig.jobs.worker import parse_job_input
from stygig.serving.requests import parse_json_body


def _json(data: object) -> bytes:
    return json.dumps(data).encode()


def test_a_json_input_gives_the_same_query_as_the_real_time_api() -> None:
    photo = base64.b64encode(b"\xff\xd8 pretend jpeg").decode()
    body = _json({"image_b64": photo, "item_ids": ["a"], "k": 2})
    query, options = parse_job_input(body, "application/json", {"mode": "similar"})
    direct = parse_json_body(body)
    assert query == direct.query and options.k == 2 and options.mode == "similar"


@pytest.mark.parametrize(
    ("data", "error", "code"),
    [
        ({"image_b64": "not base64 !"}, InvalidImageError, "invalid_base64"),
        ({"images_b64": "abcd"}, InvalidOptionsError, "invalid_options"),
        ({"item_ids": [1, 2]}, InvalidOptionsError, "invalid_options"),
        ({"image_uris": [3]}, InvalidOptionsError, "invalid_options"),
        ([1, 2], InvalidOptionsError, "invalid_options"),
    ],
)
def test_bad_json_inputs_fail_with_a_reason(
    data: object, error: type[Exception], code: str
) -> None:
    with pytest.raises(error) as caught:
        parse_job_input(_json(data), "application/json", {})
    assert getattr(caught.value, "code", None) == code
    with pytest.raises(InputError, match="not valid JSON"):
        parse_job_input(b"{nope", "application/json", {})

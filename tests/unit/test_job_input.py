"""Async job inputs are read by the same JSON rules as real-time requests, and the locations
they name only through the operator's policy."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from stygig import storage
from stygig.errors import (
    InputError,
    InvalidImageError,
    InvalidOptionsError,
    PayloadTooLargeError,
    StygigError,
)
from stygig.jobs.worker import check_job_input, parse_job_input
from stygig.locations import InputLocations
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


def test_stored_photos_are_counted_before_any_is_read(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # a read of it would fail (not a regular file): the count comes first
    policy = InputLocations([str(tmp_path)])
    for body, bound in (
        # 9 photos (7 + 1 stored, 1 inline), then 8 photos and 9 catalogue items: 17 parts.
        (_json({"image_uris": [str(fifo)] * 7, "image_uri": str(fifo), "image_b64": ""}), "8"),
        (_json({"image_uris": [str(fifo)] * 8, "item_ids": [f"i{n}" for n in range(9)]}), "16"),
    ):
        with pytest.raises(InvalidOptionsError, match=f"at most {bound} photos"):
            parse_job_input(body, "application/json", {}, policy)
        with pytest.raises(InvalidOptionsError, match=f"at most {bound} photos"):
            check_job_input(body, None, policy)


def test_stored_photos_are_read_only_through_the_policy(tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"\xff\xd8 pretend jpeg")
    body = _json({"image_uri": str(photo)})
    with pytest.raises(InvalidOptionsError) as refused:
        parse_job_input(body, "application/json", {})  # no policy: nothing may be named
    assert refused.value.code == "location_not_allowed"
    with pytest.raises(InvalidOptionsError):
        check_job_input(body, "application/json", InputLocations())
    query, _ = parse_job_input(body, "application/json", {}, InputLocations([str(tmp_path)]))
    assert query.images == (photo.read_bytes(),)


def test_a_json_inputs_options_are_checked_at_submission() -> None:
    """The body's options, over the submission's, are refused before the 202 (422), not when
    the job runs; a photo body's options come from the submission alone (checked there)."""
    check_job_input(_json({"item_ids": ["a"], "k": 3}), "application/json", InputLocations())
    for body, params in (({"item_ids": ["a"], "k": 0}, {}), ({"item_ids": ["a"]}, {"k": 0})):
        with pytest.raises(InvalidOptionsError, match="k"):
            check_job_input(_json(body), "application/json", InputLocations(), params)
    # Review, session 42: the body's own value silently won over the submission's. An option
    # in both is refused naming it and both places, at submission and when the job runs.
    body = _json({"item_ids": ["a"], "k": 3})
    with pytest.raises(InvalidOptionsError, match="'k' is given in the submission") as twice:
        check_job_input(body, "application/json", InputLocations(), {"k": 2})
    assert twice.value.code == "option_given_twice" and "the JSON input" in twice.value.message
    with pytest.raises(InvalidOptionsError, match="'k'"):
        parse_job_input(body, "application/json", {"k": 2})
    _, options = check_job_input(body, "application/json", InputLocations(), {"mode": "similar"})
    assert options.k == 3 and options.mode == "similar"  # each given once: both kept


@pytest.mark.parametrize("value", [False, 0, "", None, {}, "/abs/x.jpg"])
def test_image_uris_that_are_not_a_list_are_refused(value: object) -> None:
    """Review, session 42: a falsy ``image_uris`` (false, 0, "", null) was read as none."""
    body = _json({"item_ids": ["a"], "image_uris": value})
    with pytest.raises(InvalidOptionsError, match="image_uris must be a list"):
        check_job_input(body, "application/json", InputLocations())
    with pytest.raises(InvalidOptionsError, match="image_uris must be a list"):
        parse_job_input(body, "application/json", {})


def test_a_key_given_twice_in_a_json_input_is_refused() -> None:
    """Review, session 42: ``{"k": 2, "k": 5}`` ran with k=5 (JSON's last one wins)."""
    for body in (b'{"item_ids": ["a"], "k": 2, "k": 5}', b'{"item_ids": ["a"], "item_ids": ["b"]}'):
        with pytest.raises(InvalidOptionsError) as refused:
            check_job_input(body, "application/json", InputLocations())
        assert refused.value.code == "duplicate_key" and "given twice" in refused.value.message


def test_local_locations_are_plain_paths_resolved_inside(tmp_path: Path) -> None:
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    (allowed / "ok.bin").write_bytes(b"12345")
    (allowed / "big.bin").write_bytes(b"x" * 11)
    (allowed / "link").symlink_to(outside / "secret")
    (allowed / "sub").symlink_to(outside)
    (allowed / "inner").mkdir()
    (allowed / "inner" / "deep.bin").write_bytes(b"deep")
    (allowed / "alias").symlink_to(allowed / "inner")  # a symlink that stays inside
    os.link(outside / "secret", allowed / "hard.bin")  # by design: a hard link is a file
    policy = InputLocations([allowed.as_uri()], max_bytes=10)
    assert policy.read(str(allowed / "ok.bin")) == b"12345"
    assert policy.read((allowed / "inner" / "deep.bin").as_uri()) == b"deep"
    assert policy.read(str(allowed / "alias" / "deep.bin")) == b"deep"
    assert policy.read(str(allowed / "hard.bin")) == b"secret"
    for refused in (
        str(allowed / "link"),
        str(allowed / "sub" / "secret"),
        f"{allowed}/../outside/secret",
        f"{allowed}/../allowed/ok.bin",  # ".." anywhere: refused on the text alone
        f"{allowed}/./ok.bin",
        f"{allowed}//ok.bin",
        f"{allowed}/inner/../ok.bin",
        f"file://{allowed}/inner/%2e%2e/ok.bin",
        "allowed/ok.bin",  # relative: the server's working folder is not the client's business
        str(allowed),
        f"{allowed}/",
        f"file://otherhost{allowed}/ok.bin",
        "ftp://example.com/x",
        f"{allowed}/ok.bin\x00",
    ):
        with pytest.raises(InvalidOptionsError) as caught:
            policy.check(refused)
        assert caught.value.code == "location_not_allowed", refused
    with pytest.raises(PayloadTooLargeError) as big:
        policy.read(str(allowed / "big.bin"))
    assert str(allowed) not in big.value.message and "10 bytes" in big.value.message


def test_read_beneath_follows_no_symlink_below_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    (folder / "d").mkdir(parents=True)
    (folder / "d" / "a").write_bytes(b"a")
    (folder / "ld").symlink_to(folder / "d")
    (folder / "d" / "la").symlink_to("a")
    assert storage.read_beneath(folder, folder / "d" / "a", max_bytes=10) == b"a"
    for path, code in (
        (folder / "ld" / "a", "location_changed"),  # a folder on the way is a symlink
        (folder / "d" / "la", "location_changed"),  # the file itself is one
        (folder / "d" / "a" / "x", "location_not_found"),  # a file on the way
        (folder / "nothing" / "a", "location_not_found"),
        (tmp_path / "elsewhere", "invalid_location"),
        (folder, "invalid_location"),
    ):
        with pytest.raises(StygigError) as caught:
            storage.read_beneath(folder, path, max_bytes=10)
        assert caught.value.code == code, path

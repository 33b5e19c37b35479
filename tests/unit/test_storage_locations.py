"""Locations S3 or the file system would refuse are refused when parsed or written, before any
work is done for them (review, session 49)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stygig import storage
from stygig.errors import StygigError


@pytest.mark.parametrize(
    "uri",
    [
        "s3://ab/key",  # under 3 characters
        "s3://" + "b" * 256 + "/key",  # over 255
        "s3://my bucket/key",
        "s3://bucket:9000/key",  # a port
        "s3://user@bucket/key",  # user info
        "s3://bucket%2F/key",
    ],
)
def test_a_name_no_s3_bucket_ever_had_is_refused(uri: str) -> None:
    with pytest.raises(StygigError) as caught:
        storage.parse(uri)
    assert caught.value.code == "invalid_location"
    assert "is not an S3 bucket name" in str(caught.value)


def test_bucket_names_s3_has_accepted_are_taken() -> None:
    for bucket in ("abc", "my-bucket.v2", "Legacy_Bucket", "b" * 255):
        loc = storage.parse(f"s3://{bucket}/a/b.json")
        assert (loc.bucket, loc.key) == (bucket, "a/b.json")


def test_an_s3_key_over_1024_bytes_of_utf8_is_refused() -> None:
    assert storage.parse("s3://bucket/" + "k" * 1024).key == "k" * 1024
    with pytest.raises(StygigError) as caught:
        storage.parse("s3://bucket/" + "k" * 1025)
    assert "at most 1024 bytes" in str(caught.value) and "is 1025" in str(caught.value)
    with pytest.raises(StygigError):  # 513 letters of two bytes each
        storage.parse("s3://bucket/" + "\u00e9" * 513)


def test_a_local_write_to_the_longest_name_the_file_system_takes_succeeds(
    tmp_path: Path,
) -> None:
    """The temporary file beside it adds 14 bytes to the name: a 250-byte name failed with
    'File name too long' (review, session 49); its stem is now cut to leave room."""
    for name in ("r" * 255, "\u00e9" * 127 + "x"):  # 255 bytes, ASCII and two-byte letters
        assert len(os.fsencode(name)) == 255
        target = tmp_path / name
        storage.write_bytes(target, b"result")
        assert target.read_bytes() == b"result"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["r" * 255, "\u00e9" * 127 + "x"])

"""``stygig serve``'s numbers, port and async settings are checked at start, naming the flag or
variable (review, session 49: ``--max-body-mb 0`` made a server that refused every body while
``/ping`` said it was fine, ``--async-timeout -1`` one that refused every job with a 422 that
blamed its client, ``nan`` and ``SAGEMAKER_BIND_TO_PORT=99999`` tracebacks)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pytest

from stygig.arguments import real
from stygig.cli import main
from stygig.errors import InvalidOptionsError, StorageError
from stygig.serving.async_api import AsyncConfig
from stygig.serving.command import default_max_body_mb, default_port


def test_real_takes_finite_numbers_within_its_bounds() -> None:
    mb = real(1.0, 1024.0)
    assert mb("1") == 1.0 and mb("2.5") == 2.5 and mb("1024") == 1024.0
    seconds = real(0.0, 86400.0, above=True)
    assert seconds("0.001") == 0.001
    for text in ("0.5", "0", "-1", "nan", "inf", "-inf", "1025", "", "six", "1e400"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected a number 1 or more"):
            mb(text)
    for text in ("0", "-0", "86400.5", "nan"):
        with pytest.raises(argparse.ArgumentTypeError, match="more than 0, at most 86400"):
            seconds(text)
    assert real(0.0)("0") == 0.0 and math.isfinite(real(0.0)("1e300"))


NUMBER, COUNT = "expected a number", "expected a whole number of 1 or more"


@pytest.mark.parametrize(
    ("flag", "value", "said"),
    [
        ("--max-body-mb", "0", NUMBER),
        ("--max-body-mb", "0.5", NUMBER),
        ("--max-body-mb", "nan", NUMBER),
        ("--timeout", "-1", NUMBER),
        ("--body-timeout", "0", NUMBER),
        ("--max-bodies-mb", "nan", NUMBER),
        ("--max-wait-ms", "-2", NUMBER),
        ("--async-timeout", "-1", NUMBER),
        ("--async-timeout", "86401", NUMBER),
        ("--async-retention-hours", "nan", NUMBER),
        ("--async-max-queued-mb", "0", NUMBER),
        ("--head-timeout", "nan", NUMBER),
        ("--head-timeout", "0", NUMBER),
        # --threads -1 was a ValueError traceback, 0 silently the default
        ("--threads", "-1", COUNT),
        ("--threads", "0", COUNT),
        ("--max-queue", "0", COUNT),
        ("--max-batch", "0", COUNT),
    ],
)
def test_serve_refuses_a_number_out_of_range_before_it_starts(
    flag: str, value: str, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        main(["serve", "--artifact", "/nonexistent", f"{flag}={value}"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: {said}" in err and "Traceback" not in err


@pytest.mark.parametrize("value", ["99999", "0", "²", "abc", "-1", "8080x"])
def test_a_bad_sagemaker_bind_to_port_is_refused_naming_it(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAGEMAKER_BIND_TO_PORT", value)
    with pytest.raises(InvalidOptionsError, match="SAGEMAKER_BIND_TO_PORT must be a port"):
        default_port()


def test_sagemaker_bind_to_port_when_set_else_8080(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGEMAKER_BIND_TO_PORT", " 9000 ")
    assert default_port() == 9000
    monkeypatch.delenv("SAGEMAKER_BIND_TO_PORT")
    assert default_port() == 8080


@pytest.mark.parametrize("value", ["101", "-1", "2.5", "²", "abc", "6MB"])
def test_a_bad_sagemaker_max_payload_is_refused_naming_it(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Review (s51): a value outside 1-100 was silently the 6 MB default.
    monkeypatch.setenv("SAGEMAKER_MAX_PAYLOAD_IN_MB", value)
    with pytest.raises(InvalidOptionsError, match="SAGEMAKER_MAX_PAYLOAD_IN_MB must be a whole"):
        default_max_body_mb()


def test_sagemaker_max_payload_when_set_else_6_mb(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGEMAKER_MAX_PAYLOAD_IN_MB", " 20 ")
    assert default_max_body_mb() == 20.0
    monkeypatch.setenv("SAGEMAKER_MAX_PAYLOAD_IN_MB", "100")
    assert default_max_body_mb() == 100.0
    monkeypatch.setenv("SAGEMAKER_MAX_PAYLOAD_IN_MB", "0")  # SageMaker's "any size, chunked"
    assert default_max_body_mb() == 6.0
    monkeypatch.delenv("SAGEMAKER_MAX_PAYLOAD_IN_MB")
    assert default_max_body_mb() == 6.0


def test_async_settings_are_checked_with_the_config(tmp_path: Path) -> None:
    db, out = tmp_path / "jobs.db", str(tmp_path / "out")
    assert AsyncConfig(jobs_db=db, output=out).time_limit_s == 900.0
    with pytest.raises(InvalidOptionsError, match="must be a file, not a folder"):
        AsyncConfig(jobs_db=tmp_path, output=out)
    with pytest.raises(StorageError, match="only plain paths, file:// and s3://"):
        AsyncConfig(jobs_db=db, output="ftp://host/jobs")
    with pytest.raises(StorageError, match="only plain paths"):
        AsyncConfig(jobs_db=db, output=out, failure="http://host/failures")
    for limit in (0.0, -1.0, math.nan, 86401.0):
        with pytest.raises(InvalidOptionsError, match=r"time limit must be within \(0, 86400\]"):
            AsyncConfig(jobs_db=db, output=out, time_limit_s=limit)
    with pytest.raises(InvalidOptionsError, match="retention time must be positive"):
        AsyncConfig(jobs_db=db, output=out, retention_s=math.nan)


def test_serve_says_a_bad_async_output_in_one_line(
    sample: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["serve", "--artifact", str(sample[1]), "--port", "1"]
    argv += ["--jobs-db", str(tmp_path / "j.db"), "--async-output", "ftp://x/y"]
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert err.strip().endswith("only plain paths, file:// and s3:// are supported")
    assert "Traceback" not in err


@pytest.mark.parametrize("command", ["serve", "doctor"])
def test_a_bad_stygig_device_is_a_usage_error_naming_it(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """argparse never checks a default against its choices: ``STYGIG_DEVICE=gpu`` bound the
    port, then the model load failed with a traceback (review, session 49)."""
    monkeypatch.setenv("STYGIG_DEVICE", "gpu")
    with pytest.raises(SystemExit) as e:
        main([command])
    assert e.value.code == 2
    assert "expected cpu or cuda (the default is $STYGIG_DEVICE's), got 'gpu'" in (
        capsys.readouterr().err
    )
    monkeypatch.setenv("STYGIG_DEVICE", "cuda")
    from stygig.cli import _parser

    assert _parser().parse_args([command]).device == "cuda"


@pytest.mark.parametrize(
    "command",
    [
        ["train-compat", "--outfits", "o.csv", "--artifact", "a"],
        ["eval"],
        ["recommend", "--artifact", "a", "--item", "x"],
        ["sample-catalog", "--out", "s"],
    ],
)
@pytest.mark.parametrize("value", ["-1", "4294967296", "18446744073709551616", "1" * 250, "x"])
def test_every_seed_flag_takes_0_to_2_to_the_32_minus_1(
    command: list[str], value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Review (s51): --seed=-1 was a NumPy traceback after eval's build, 2**64 torch's, and a
    # 250-digit seed a run folder whose name was too long for the disk.
    with pytest.raises(SystemExit) as e:
        main([*command, f"--seed={value}"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "argument --seed: expected a whole number of 0" in err and "Traceback" not in err

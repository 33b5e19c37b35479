"""Where a server's (and its clients') bearer token comes from: a setting given but empty is an
error, never "no token"."""

from __future__ import annotations

from pathlib import Path

import pytest

from stygig.auth import load_token
from stygig.errors import InvalidOptionsError


@pytest.fixture(autouse=True)
def no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STYGIG_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("STYGIG_AUTH_TOKEN_FILE", raising=False)


def test_no_setting_is_no_token() -> None:
    assert load_token() is None


def test_each_place_gives_the_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "t").write_text(" from-the-file \n")
    assert load_token(str(tmp_path / "t")) == "from-the-file"
    monkeypatch.setenv("STYGIG_AUTH_TOKEN", " from-the-variable ")
    assert load_token() == "from-the-variable"
    monkeypatch.setenv("STYGIG_AUTH_TOKEN_FILE", str(tmp_path / "t"))
    assert load_token() == "from-the-file"  # the file's variable comes first


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("STYGIG_AUTH_TOKEN", "", "$STYGIG_AUTH_TOKEN is set but empty"),
        ("STYGIG_AUTH_TOKEN", "  \n", "$STYGIG_AUTH_TOKEN is set but empty"),
        ("STYGIG_AUTH_TOKEN_FILE", "", "$STYGIG_AUTH_TOKEN_FILE is set but empty"),
    ],
)
def test_a_variable_set_but_empty_is_refused(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, said: str
) -> None:
    """Review, session 53: ``STYGIG_AUTH_TOKEN="$(cat missing-secret)"`` served every route
    without a token, without a word (an empty token file was already refused)."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(InvalidOptionsError, match=said.replace("$", r"\$")):
        load_token()


def test_an_empty_token_file_flag_is_refused() -> None:
    with pytest.raises(InvalidOptionsError, match="--auth-token-file is set but empty"):
        load_token("")
    with pytest.raises(InvalidOptionsError, match="--auth-token-file is set but empty"):
        load_token("  ")

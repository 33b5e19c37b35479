"""Options written as text (URL query, form fields, SageMaker custom attributes): typed per
option, numbers only as people write them."""

from __future__ import annotations

import pytest

from stygig.errors import InvalidOptionsError
from stygig.recommendation import options_from_params, params_to_dict


def test_text_numbers_are_read_per_option() -> None:
    got = params_to_dict(
        [("k", "3"), ("k_total", "12"), ("diversity", ".5"), ("use_color", "no"), ("seed", "-1")]
    )
    assert got == {"k": 3, "k_total": 12, "diversity": 0.5, "use_color": False, "seed": -1}
    assert options_from_params([("k", "2"), ("diversity", "0.25")]).k == 2


@pytest.mark.parametrize("text", ["1_0", "\u0663", " 3", "3 ", "+3", "3.0", "1e3", "", "9" * 19])
def test_an_integer_option_takes_ascii_digits_only(text: str) -> None:
    """Python's int() reads "1_0" as 10, Arabic-Indic digits and padded text: all refused."""
    with pytest.raises(InvalidOptionsError, match="k must be an integer"):
        params_to_dict([("k", text)])


@pytest.mark.parametrize(
    "text", ["nan", "inf", "-inf", "1_0.5", "0,5", "\u0660.5", "1e", "e-3", ".", "1e-3 ", "1e+1234"]
)
def test_a_number_option_takes_plain_decimals_only(text: str) -> None:
    with pytest.raises(InvalidOptionsError, match="diversity must be a number"):
        params_to_dict([("diversity", text)])


@pytest.mark.parametrize(("text", "value"), [("1e-1", 0.1), ("2.5E-1", 0.25), ("5.", 5.0)])
def test_a_number_option_takes_what_json_takes(text: str, value: float) -> None:
    """Review (s40): ``diversity=1e-1`` was refused in the query string and taken in JSON."""
    assert params_to_dict([("diversity", text)]) == {"diversity": value}


def test_custom_attributes_are_read_as_the_query_string_is() -> None:
    """Review (s40): blank values were dropped (``k=`` passed, a 422 in the query string) and
    the documented 1,024-character bound was not enforced (8 KB was read)."""
    from stygig.recommendation import MAX_CUSTOM_ATTRIBUTES
    from stygig.serving.requests import custom_attributes

    assert custom_attributes("k=3&mode=similar") == [("k", "3"), ("mode", "similar")]
    with pytest.raises(InvalidOptionsError, match="k must be an integer"):
        options_from_params(custom_attributes("k=&mode=similar"))
    with pytest.raises(InvalidOptionsError, match="1,024 characters"):
        custom_attributes("k=3&" + "x" * MAX_CUSTOM_ATTRIBUTES)

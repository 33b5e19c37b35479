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


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "1_0.5", "0,5", "\u0660.5", "1e-3", "."])
def test_a_number_option_takes_plain_decimals_only(text: str) -> None:
    with pytest.raises(InvalidOptionsError, match="diversity must be a number"):
        params_to_dict([("diversity", text)])

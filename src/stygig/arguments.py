"""Argument types the commands share: whole numbers with a floor, refused by argparse (a usage
error, exit 2) instead of failing later with a traceback or a silent empty result (``--batch-size
0`` was a ``range()`` traceback, ``-5`` dropped every row, ``--workers -1`` a thread-pool one)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = ["count", "encoder_device", "port", "positive", "real", "seed"]


def _at_least(text: str, floor: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = floor - 1
    if value < floor:
        raise argparse.ArgumentTypeError(
            f"expected a whole number of {floor} or more, got {text[:20]!r}"
        )
    return value


def positive(text: str) -> int:
    """A whole number of 1 or more."""
    return _at_least(text, 1)


def count(text: str) -> int:
    """A whole number of 0 or more."""
    return _at_least(text, 0)


def seed(text: str) -> int:
    """A seed, 0 to :data:`~stygig.recommendation.MAX_SEED`: what a request's ``seed`` takes,
    within every generator a seed reaches (NumPy's, torch's). Review, session 51:
    ``--seed=-1`` was a NumPy traceback after the evaluation's build, 2**64 torch's, and a
    250-digit seed a run folder's name too long for the disk."""
    from stygig.recommendation import MAX_SEED  # here: `stygig --help` does not load pydantic

    value = _at_least(text, 0)
    if value > MAX_SEED:
        raise argparse.ArgumentTypeError(
            f"expected a whole number of 0 to {MAX_SEED}, got {text[:20]!r}"
        )
    return value


def port(text: str) -> int:
    """A TCP port, 1 to 65535 (99999 was taken, and the server listened on 99999 - 65536)."""
    value = _at_least(text, 1)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"expected a port of 1 to 65535, got {text[:20]!r}")
    return value


def real(floor: float, ceiling: float = math.inf, *, above: bool = False) -> Callable[[str], float]:
    """An argument type: a finite number of ``floor`` or more (``above``: more than ``floor``),
    at most ``ceiling``. NaN, the infinities and text are refused (review, session 49:
    ``--max-body-mb nan`` was a traceback, ``--max-body-mb 0`` a server that refused every
    body, ``--async-timeout -1`` one that refused every job with a 422 blaming its client)."""
    low = f"more than {floor:g}" if above else f"{floor:g} or more"
    high = "" if ceiling == math.inf else f", at most {ceiling:g}"

    def number(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan  # refused below, as NaN is
        in_range = (value > floor if above else value >= floor) and value <= ceiling
        if math.isfinite(value) and in_range:
            return value
        raise argparse.ArgumentTypeError(f"expected a number {low}{high}, got {text[:20]!r}")

    return number


def encoder_device(text: str) -> str:
    """Where an encoder runs: ``cpu`` or ``cuda``. A type, not ``choices``: argparse converts a
    default through its type but never checks a default against its choices, so a bad
    ``$STYGIG_DEVICE`` (the flag's default) bound the port before the model load failed
    with a traceback (review, session 49)."""
    if text not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(
            f"expected cpu or cuda (the default is $STYGIG_DEVICE's), got {text[:20]!r}"
        )
    return text

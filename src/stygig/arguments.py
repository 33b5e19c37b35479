"""Argument types the commands share: whole numbers with a floor, refused by argparse (a usage
error, exit 2) instead of failing later with a traceback or a silent empty result (``--batch-size
0`` was a ``range()`` traceback, ``-5`` dropped every row, ``--workers -1`` a thread-pool one)."""

from __future__ import annotations

import argparse

__all__ = ["count", "port", "positive"]


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


def port(text: str) -> int:
    """A TCP port, 1 to 65535 (99999 was taken, and the server listened on 99999 - 65536)."""
    value = _at_least(text, 1)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"expected a port of 1 to 65535, got {text[:20]!r}")
    return value

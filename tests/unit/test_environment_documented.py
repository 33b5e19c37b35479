"""docs/environment.md lists every ``STYGIG_*`` variable the code and the container read, and
no other (review, session 54: three were documented nowhere)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_NAME = re.compile(r"\bSTYGIG_[A-Z0-9_]*[A-Z0-9]\b")


def _read(variables_in: list[Path]) -> set[str]:
    return {name for path in variables_in for name in _NAME.findall(path.read_text("utf-8"))}


def test_every_variable_is_documented_and_every_documented_one_is_read() -> None:
    sources = [*sorted((ROOT / "src" / "stygig").rglob("*.py")), ROOT / "docker" / "serve"]
    read = _read(sources)
    table = [
        line
        for line in (ROOT / "docs" / "environment.md").read_text("utf-8").splitlines()
        if line.startswith("| `STYGIG_")
    ]
    documented = {_NAME.findall(line)[0] for line in table}
    assert len(documented) == len(table), "a variable listed twice"
    assert read - documented == set(), "read by the code, missing from docs/environment.md"
    assert documented - read == set(), "in docs/environment.md, read by no code"
    assert len(read) >= 19  # the collector still finds them (a broken pattern finds none)

"""What a results file keeps when its benchmark runs again: the notes written into it since.

A results file's notes start with the benchmark's own (what it measures, how) and gather notes
written by hand after runs (earlier figures, A/B comparisons, why a number moved). A rerun
rewrites the file with its own notes first, then every earlier note it does not repeat.
"""

from __future__ import annotations

import json
from pathlib import Path


def notes_with_history(path: Path, fresh: list[str]) -> list[str]:
    """``fresh`` followed by the notes of the results file at ``path`` that ``fresh`` lacks."""
    try:
        earlier = json.loads(path.read_text(encoding="utf-8")).get("notes", [])
    except (OSError, ValueError, AttributeError):
        earlier = []
    kept = [n for n in earlier if isinstance(n, str) and n not in fresh]
    return [*fresh, *kept]

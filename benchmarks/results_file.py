"""What a results file records besides its figures: the machine it ran on, and the notes
written into it since earlier runs.

A results file's notes start with the benchmark's own (what it measures, how) and gather notes
written by hand after runs (earlier figures, A/B comparisons, why a number moved). A rerun
rewrites the file with its own notes first, then every earlier note it does not repeat.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any


def machine(load_start: tuple[float, float, float]) -> dict[str, Any]:
    """The run's date, cores, platform and load average at its start (given) and now."""
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in load_start],
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }


def notes_with_history(path: Path, fresh: list[str]) -> list[str]:
    """``fresh`` followed by the notes of the results file at ``path`` that ``fresh`` lacks."""
    try:
        earlier = json.loads(path.read_text(encoding="utf-8")).get("notes", [])
    except (OSError, ValueError, AttributeError):
        earlier = []
    kept = [n for n in earlier if isinstance(n, str) and n not in fresh]
    return [*fresh, *kept]

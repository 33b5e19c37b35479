"""StyGig: fashion outfit recommendation — photo in, outfit out."""

from __future__ import annotations

__version__ = "0.1.0"

"""Structured logs: one JSON object per line, one line per request.

Request lines carry ``request_id``, ``method``, ``path``, ``route``, ``status`` and
``latency_ms``; any record's ``extra={"fields": {...}}`` is merged into its line.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from typing import Any

__all__ = ["ACCESS_LOGGER", "JsonFormatter", "configure_logging", "request_id"]

ACCESS_LOGGER = "stygig.access"
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line (time, level, logger, message, extra fields)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line."""
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(level: str = "info") -> None:
    """Send every log record (ours and uvicorn's) to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # FAISS's loader reports at info that "AVX2 support could not be loaded" while its one
    # library dispatches to AVX2/AVX-512 at run time: an alarming line about nothing wrong.
    if root.level > logging.DEBUG:
        logging.getLogger("faiss.loader").setLevel(logging.WARNING)


def request_id(incoming: str | None) -> str:
    """The caller's request id when it is safe to echo, else a new one."""
    if incoming and _SAFE_ID.match(incoming):
        return incoming
    return uuid.uuid4().hex

"""How every route answers in JSON: one body format, one error body (see docs/serving.md)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fastapi.responses import Response

from stygig.errors import StygigError

__all__ = ["JSON", "error_response", "json_bytes", "json_response"]

JSON = "application/json"


def json_bytes(data: Any) -> bytes:
    """Compact JSON text."""
    return json.dumps(data, separators=(",", ":")).encode()


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """``data`` as a JSON response."""
    return Response(json_bytes(data), status_code=status, media_type=JSON, headers=headers)


def error_response(err: StygigError) -> Response:
    """The JSON error body with the error's status (and ``Retry-After`` for 503)."""
    headers = {"Retry-After": "1"} if err.http_status == 503 else None
    return json_response(err.to_dict(), err.http_status, headers)

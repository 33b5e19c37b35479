"""How every route answers in JSON: one body format, one error body (see docs/serving.md)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from fastapi import APIRouter, FastAPI
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.datastructures import Headers

from stygig.errors import StygigError

__all__ = [
    "ERROR_RESPONSES",
    "JSON",
    "ErrorBody",
    "error_response",
    "get_and_head",
    "json_bytes",
    "json_response",
    "not_modified",
]

F = TypeVar("F", bound=Callable[..., Any])


#: One entity tag of an ``If-None-Match`` list, weak or strong (RFC 9110 8.8.3: a quoted string
#: of any visible character but the quote, commas included), then the comma after it, if any.
_ENTITY_TAG = re.compile(r'(?:W/)?("[\x21\x23-\x7e\x80-\xff]*")[ \t]*(?:,|$)')


def not_modified(headers: Headers, etag: str) -> bool:
    """Whether a request's ``If-None-Match`` makes its answer a 304 for the current ``etag``
    (RFC 9110 13.1.2): ``*``, or any tag of its list (several header lines are one list)
    equal to ``etag`` by the weak comparison (``W/"x"`` matches ``"x"``). A malformed list
    matches nothing: the full answer (review, session 49: only the exact header
    ``"<etag>"`` gave a 304)."""
    lines = headers.getlist("if-none-match")
    if not lines:
        return False
    value = ", ".join(lines).strip()
    if value == "*":
        return True
    tags, pos = set(), 0
    while pos < len(value):
        if value[pos] in ", \t":  # empty list elements are ignored (RFC 9110 5.6.1)
            pos += 1
            continue
        found = _ENTITY_TAG.match(value, pos)
        if found is None:
            return False
        tags.add(found.group(1))
        pos = found.end()
    return etag.removeprefix("W/") in tags


def get_and_head(router: APIRouter | FastAPI, path: str, **kwargs: Any) -> Callable[[F], F]:
    """Route GET ``path`` (documented) and HEAD (answered by the same handler, left out of the
    OpenAPI document). One route of both methods gave both operations one ``operationId``,
    which OpenAPI forbids (FastAPI warned, and /openapi.json was a 500 where warnings are
    errors: review, session 40)."""

    def register(handler: F) -> F:
        router.api_route(path, methods=["GET"], **kwargs)(handler)
        router.api_route(path, methods=["HEAD"], **{**kwargs, "include_in_schema": False})(handler)
        return handler

    return register


JSON = "application/json"


class ErrorDetail(BaseModel):
    """What went wrong: a stable machine-readable ``code`` and a sentence for people."""

    code: str
    message: str


class ErrorBody(BaseModel):
    """Every error answer's body: ``{"error": {"code": ..., "message": ...}}``."""

    error: ErrorDetail


_ERRORS = {
    400: "the request is malformed (body, JSON, image)",
    401: "the server requires 'Authorization: Bearer <token>'",
    403: "a change sent from another site to a server bound to loopback",
    404: "unknown item, job or route",
    405: "the route does not take this method",
    406: "the Accept header rules out JSON",
    408: "the request body arrived too slowly",
    409: "the job has not finished; a catalogue bound reached; an Inference-Id already "
    "naming another request",
    413: "the body or image is over a limit",
    415: "a content type or image format StyGig does not read",
    422: "options that fail validation",
    431: "the request line and headers are over 64 KiB (a query string too)",
    500: "a fault on the server (details in its log, by request id)",
    501: "a request method the server does not know (one it knows that the route does not "
    "take: 405)",
    503: "loading or at capacity; retry after Retry-After seconds",
}
#: The error answers every route may give, for the OpenAPI schema.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text} for status, text in _ERRORS.items()
}


def json_bytes(data: Any) -> bytes:
    """Compact JSON text."""
    return json.dumps(data, separators=(",", ":")).encode()


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """``data`` as a JSON response."""
    return Response(json_bytes(data), status_code=status, media_type=JSON, headers=headers)


# What an error status tells the client beyond its body: when to retry (503), how to
# authenticate (401), and that a stalled connection is not kept (408).
_STATUS_HEADERS: dict[int, dict[str, str]] = {
    401: {"WWW-Authenticate": 'Bearer realm="stygig"'},
    408: {"Connection": "close"},
    503: {"Retry-After": "1"},
}


def error_response(err: StygigError) -> Response:
    """The JSON error body with the error's status and the headers that status needs."""
    return json_response(err.to_dict(), err.http_status, _STATUS_HEADERS.get(err.http_status))

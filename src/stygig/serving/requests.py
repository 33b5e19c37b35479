"""Request bodies in, :class:`~stygig.engine.Query` and :class:`~stygig.engine.Options` out.

Accepted bodies (``POST /invocations`` and ``POST /v1/recommend``):

* ``image/jpeg``, ``image/png``, ``image/webp``, ``application/x-image``: the raw photo; options
  from the URL query string (``?k=3&mode=similar``) or SageMaker's
  ``X-Amzn-SageMaker-Custom-Attributes`` header in the same ``key=value&...`` form.
* ``application/json``: ``{"image_b64": ...}``, ``{"images_b64": [...]}`` and/or
  ``{"item_ids": [...]}``, with the recommender's options beside them. The JSON Lines types
  (:data:`JSON_LINES_TYPES`) are read the same way: one record per request, as a SageMaker batch
  transform with ``SplitType=Line`` and ``BatchStrategy=SingleRecord`` sends them.
* ``multipart/form-data``: files in ``image`` / ``images`` / ``file``, ``item_ids`` fields, and
  an ``options`` field holding a JSON object (parsed by the app, which owns the form parser).
* ``application/octet-stream`` (the SageMaker Python SDK's default serializer), ``image/*``, or no
  content type (boto3's ``invoke_endpoint`` without ``ContentType``): a photo or a JSON request,
  told from the bytes (:func:`told_from_bytes`).

Every mistake raises a :mod:`stygig.errors` type (4xx), never anything else.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Query as QueryParameter
from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError
from starlette.requests import Request

from stygig.engine import Options, Query
from stygig.errors import (
    InputError,
    InvalidImageError,
    InvalidOptionsError,
    NotAcceptableError,
    PayloadTooLargeError,
    UnsupportedMediaError,
)
from stygig.images import looks_like_image
from stygig.recommendation import (
    JSON_LINES_TYPES,
    MAX_QUERY_PARTS,
    MAX_QUERY_PHOTOS,
    MAX_TEXT,
    OPAQUE_CONTENT_TYPES,
    merge_option_sources,
    opens_a_json_object,
    option_parameters,
    options_from_params,
    options_schema,
    params_to_dict,
    parse_json_object,
    split_json_request,
)
from stygig.serving.responses import JSON

__all__ = [
    "IMAGE_TYPES",
    "JSON_LINES_TYPES",
    "MAX_BODY_BYTES",
    "MAX_PAYLOAD_MB",
    "OPAQUE_CONTENT_TYPES",
    "NotAcceptableError",
    "OptionSources",
    "ParsedRequest",
    "PayloadTooLargeError",
    "build_request",
    "check_accept",
    "custom_attributes",
    "form_body_schema",
    "from_another_site",
    "json_body_schema",
    "media_type",
    "merge_option_sources",
    "opaque_bodies",
    "options_from_params",
    "outside_options",
    "params_to_dict",
    "parse_image_body",
    "parse_json_body",
    "parse_json_object",
    "query_int",
    "read_as",
    "split_json_request",
    "told_from_bytes",
    "unsupported",
]

#: SageMaker's real-time payload limit.
MAX_BODY_BYTES = 6 * 1024 * 1024
#: The largest body a SageMaker batch transform may send (``MaxPayloadInMB``, 1-100), in MB.
MAX_PAYLOAD_MB = 100
#: ``image/jpg`` is no registered type, but clients send it for JPEG (audit, session 47): the
#: bytes say the format either way.
IMAGE_TYPES = frozenset(
    {"image/jpeg", "image/jpg", "image/png", "image/webp", "application/x-image"}
)
_ACCEPTABLE = (JSON, "application/*", "*/*")


#: Options by the place a request gives them: ``(place, options)``, as
#: :func:`~stygig.recommendation.merge_option_sources` takes them.
OptionSources = Sequence[tuple[str, Mapping[str, Any]]]


@dataclass(frozen=True)
class ParsedRequest:
    """What a request asks for."""

    query: Query
    options: Options


def media_type(content_type: str | None) -> str:
    """``"image/jpeg; charset=x"`` -> ``"image/jpeg"`` (lower case, ``""`` when absent)."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def read_as(kind: str) -> str:
    """The type a body of media type ``kind`` is read as: a JSON Lines type as JSON (one
    record), any other as itself."""
    return JSON if kind in JSON_LINES_TYPES else kind


def check_accept(accept: str | None) -> str:
    """The media type to label a JSON answer with: ``application/json``, or the JSON Lines type
    the client prefers to it (the bytes are the same: one JSON object on one line). Raises
    :class:`NotAcceptableError` when it takes neither.

    As RFC 9110 12.5.1 reads it: JSON's quality is that of the most specific range that
    matches it (``application/json``, else ``application/*``, else ``*/*``), so
    ``application/json;q=0, */*`` refuses it; ``q`` is named in any case and is a number from
    0 to 1 (another value counts as 0)."""
    if not accept:
        return JSON
    quality: dict[str, float] = {}
    for part in accept.split(","):
        kind = media_type(part)
        if kind not in _ACCEPTABLE and kind not in JSON_LINES_TYPES:
            continue
        q = 1.0
        for param in part.split(";")[1:]:
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                q = _quality(value)
        quality.setdefault(kind, q)  # a range given twice: its first
    json_q = next((quality[kind] for kind in _ACCEPTABLE if kind in quality), 0.0)
    # The JSON Lines type named with the highest quality (the first of equals), when it is
    # preferred to JSON.
    lines = max(
        (k for k in quality if k in JSON_LINES_TYPES), key=lambda k: quality[k], default=None
    )
    if lines is not None and quality[lines] > json_q:
        return lines
    if json_q > 0:
        return JSON
    raise NotAcceptableError(
        "responses are application/json (or JSON Lines); the Accept header rules both out"
    )


def _quality(value: str) -> float:
    """A ``q`` parameter's value: a decimal number from 0 to 1 (RFC 9110's three decimals at
    most, and its leading digit, are not insisted on: Java's default header sends
    ``q=.2``); anything else counts as 0."""
    text = value.strip()
    if not _DECIMAL.fullmatch(text):
        return 0.0
    q = float(text)
    return q if q <= 1.0 else 0.0


_DECIMAL = re.compile(r"\d*\.?\d+|\d+\.")


def build_request(
    images: Iterable[bytes], item_ids: Iterable[str], options: Mapping[str, Any]
) -> ParsedRequest:
    """Validate the pieces into a query and options (4xx errors on any mistake)."""
    return ParsedRequest(Query(tuple(images), tuple(item_ids)), Options.from_dict(dict(options)))


def outside_options(header: str | None, query: Iterable[tuple[str, str]]) -> OptionSources:
    """The options a request gives outside its body, by place: SageMaker's custom attributes
    (``header``) and the query string, each typed (:func:`params_to_dict`)."""
    return (
        ("the custom attributes", params_to_dict(custom_attributes(header))),
        ("the query string", params_to_dict(query)),
    )


def parse_json_body(body: bytes, outside: OptionSources = ()) -> ParsedRequest:
    """A JSON body: ``image_b64`` / ``images_b64`` / ``item_ids`` plus options; the options
    ``outside`` it (:func:`outside_options`) count too, and one option given both there and in
    the body is a 422 (``option_given_twice``), as for an asynchronous job's JSON input."""
    images, item_ids, options = split_json_request(parse_json_object(body))
    return build_request(images, item_ids, merge_option_sources(*outside, ("the body", options)))


def parse_image_body(body: bytes, outside: OptionSources = ()) -> ParsedRequest:
    """A raw photo body with the options given outside it (:func:`outside_options`)."""
    if not body:
        raise InvalidImageError("the request body is empty", code="empty_image")
    return ParsedRequest(Query(images=(body,)), Options.from_dict(merge_option_sources(*outside)))


def check_form_complete(body: bytes, content_type: str) -> None:
    """Refuse (400 ``malformed_multipart``) a form body without its closing delimiter
    (``--boundary--``): a cut-off upload would otherwise be read as whatever parts arrived
    whole, a photo cut short among them. No boundary at all is refused the same way."""
    from python_multipart.multipart import parse_options_header  # the form parser's own reading

    boundary = parse_options_header(content_type)[1].get(b"boundary")
    closing = b"--" + (boundary or b"") + b"--"
    if not boundary or not (body.startswith(closing) or b"\r\n" + closing in body):
        raise InputError(
            "the form is incomplete or malformed: no closing boundary", code="malformed_multipart"
        )


def custom_attributes(header: str | None) -> list[tuple[str, str]]:
    """The options in SageMaker's ``X-Amzn-SageMaker-Custom-Attributes`` (``k=3&mode=similar``;
    ``;`` separates pairs too) as pairs.

    The header is opaque to SageMaker and callers carry their own data in it (AWS's example is
    a bare trace id; ``trace_id=...`` and JumpStart's ``accept_eula=true`` are as common), so
    only the pairs that name an option are read: other text is passed over, not refused
    (review, sessions 40 and 41: refusing it broke those callers). An option's value is
    checked as anywhere else, an empty one too (``k=`` is a 422, as in the query string). Its length is the request head's bound (64 KiB); through
    SageMaker it is at most 1,024 characters, and ``stygig jobs submit`` sends longer ones (a
    list option of 100 ids)."""
    known = Options.__dataclass_fields__
    return [
        (key, value)
        for part in (header or "").split(";")
        for key, value in parse_qsl(part.strip(), keep_blank_values=True)
        if key in known
    ]


def from_another_site(headers: Mapping[str, str]) -> bool:
    """Whether a browser sent the request from a page of another origin: its
    ``Sec-Fetch-Site``, else an ``Origin`` other than the ``Host`` it was sent to. SDKs, CLIs
    and SageMaker send neither."""
    site = headers.get("sec-fetch-site")
    if site is not None:
        return site.strip().lower() not in ("same-origin", "none")
    origin = headers.get("origin")
    if origin is None:
        return False
    return origin.strip().lower().partition("://")[2] != headers.get("host", "").strip().lower()


def told_from_bytes(body: bytes, declared: str, *, multipart: bool = False) -> str:
    """The content type a body sent as one of :data:`OPAQUE_CONTENT_TYPES` is read as: an image (any
    format this server recognises; the decode refuses the ones it does not accept, saying
    which) or an empty body as ``application/x-image``, a JSON object (``{`` after white space
    or a UTF-8 byte order mark) as ``application/json``; anything else is refused (415) as a
    body of the declared type is."""
    if not body or looks_like_image(body):
        return "application/x-image"
    if opens_a_json_object(body):
        return "application/json"
    raise unsupported(declared, multipart=multipart, sniffed=True)


def unsupported(
    content_type: str, *, multipart: bool = False, sniffed: bool = False
) -> UnsupportedMediaError:
    """The error for a body whose content type we do not read (``multipart``: the route takes
    forms too)."""
    what = "this content type" if content_type else "a body without a content type"
    if sniffed:
        what = f"{what}, whose bytes are neither an image nor a JSON object,"
    forms = (
        "application/json or multipart/form-data"
        if multipart
        else "or application/json (forms: POST /v1/recommend)"
    )
    return UnsupportedMediaError(
        f"{what} is not accepted; send image/jpeg, image/png, image/webp, "
        f"application/x-image, {forms}",
        code="unsupported_content_type",
    )


def json_body_schema(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A JSON request body's schema (OpenAPI): the photos and item ids (and ``extra``
    properties) with every option beside them, nothing else. One closed object, as the server
    refuses unknown keys (an ``allOf`` with the closed Options schema would refuse the
    photos)."""
    schema = options_schema()
    schema.pop("$defs", None)  # the app puts them in its components
    schema.pop("title", None)
    schema["properties"] = {
        "image_b64": {"type": "string", "description": "one photo, base64"},
        "images_b64": {"type": "array", "items": {"type": "string"}, "maxItems": MAX_QUERY_PHOTOS},
        "item_ids": {
            "type": "array",
            "items": {"type": "string", "minLength": 1, "maxLength": MAX_TEXT},
            "maxItems": MAX_QUERY_PARTS,
            "uniqueItems": True,
        },
        **(extra or {}),
        **schema["properties"],
    }
    return schema


_BINARY = {"type": "string", "format": "binary"}


def opaque_bodies(json_schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """OpenAPI content for the bodies sent as ``application/octet-stream``,
    ``binary/octet-stream`` or ``image/*`` (or with no type, which OpenAPI cannot name): a photo
    or a JSON request (``json_schema``), told from the bytes."""
    schema = {
        "oneOf": [_BINARY, json_schema],
        "description": "a photo or a JSON request, told from its bytes (an image's signature, "
        "or '{'); the same with no Content-Type at all",
    }
    return {t: {"schema": schema} for t in sorted(OPAQUE_CONTENT_TYPES) if t}


def form_body_schema() -> dict[str, Any]:
    """A form's schema (OpenAPI): photos in ``image``, ``images`` or ``file`` (each may be
    repeated), ``item_ids`` fields (comma-separated text, repeatable), ``options`` fields
    holding a JSON object, and one field per option, read as the query string reads it."""
    photos = {"type": "array", "items": _BINARY, "description": "photos (repeat the field)"}
    properties: dict[str, Any] = {
        "image": photos,
        "images": photos,
        "file": photos,
        "item_ids": {
            "type": "array",
            "items": {"type": "string"},
            "description": "catalogue item ids: repeat the field, or separate them with commas",
        },
        "options": {
            "type": "array",
            "items": {"type": "string"},
            "description": "a JSON object of options (read as a JSON body: item_ids and "
            "image_b64 there count too)",
        },
    }
    for param in option_parameters(header=False):
        if "schema" in param:
            properties[param["name"]] = {**param["schema"], "description": "as in the query string"}
        else:  # filters: JSON text
            properties[param["name"]] = {"type": "string", "description": param["description"]}
    return {"type": "object", "properties": properties, "additionalProperties": False}


#: The most digits an integer query parameter may have: every bound fits (the largest, a job's
#: sequence number, is 2**63 - 1: 19 digits), and a longer text is refused before it is read.
QUERY_INT_DIGITS = 19
_DIGITS = re.compile(rf"[0-9]{{1,{QUERY_INT_DIGITS}}}")  # ASCII only: \d takes any script's


def _decimal_digits(value: Any) -> Any:
    """An integer query parameter's text, if it is plain decimal digits; else a 422 naming the
    parameter. pydantic reads an int from text leniently: ``+5``, `` 5 ``, ``5.0`` and
    ``1_000`` were taken (audit), and a text of any length was converted before its bounds
    were checked."""
    if isinstance(value, str) and not _DIGITS.fullmatch(value):
        raise PydanticCustomError(
            "int_digits",
            "must be a whole number in decimal digits 0-9, at most {digits} of them",
            {"digits": QUERY_INT_DIGITS},
        )
    return value


def query_int(*, ge: int, le: int, **kwargs: Any) -> Any:
    """Every route's integer query parameter: ``Query(ge=ge, le=le, **kwargs)`` that takes
    plain decimal digits only (``limit: Annotated[int, query_int(ge=1, le=100)] = 24``). The
    check follows the bounds among the parameter's metadata: a validator before them (an
    annotated ``int`` type of its own) made pydantic document them as ``ge``/``le``, not as
    the OpenAPI schema's ``minimum``/``maximum``."""
    param = QueryParameter(ge=ge, le=le, **kwargs)
    param.metadata.append(BeforeValidator(_decimal_digits))
    return param


def strict_query(*names: str) -> Any:
    """A route dependency: the query string names only ``names``, each at most once (a GET
    route's parameters; review, session 45: ``?q=shirt`` to ``/v1/catalog``, whose parameter
    is ``query``, returned every item, and ``?status=a&status=b`` used the last; audit,
    session 47: the JSON routes without parameters ignored any). A 422 names the repeated
    parameter, never an unknown one. Health checks, thumbnails and example photos take none
    and ignore any (a load balancer's or a page's cache-busting parameter)."""
    allowed = frozenset(names)

    def check(request: Request) -> None:
        seen: set[str] = set()
        for key, _ in request.query_params.multi_items():
            if key not in allowed:
                raise InvalidOptionsError(
                    f"a query parameter is not one of this route's: {', '.join(sorted(allowed))}"
                    if allowed
                    else "this route takes no query parameters"
                )
            if key in seen:
                raise InvalidOptionsError(f"query parameter '{key}' is given twice")
            seen.add(key)

    return check

"""What a caller asks: ``Options`` and ``Query``, and how they are read from text and JSON.

The answer's types are in :mod:`stygig.answer`.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, Literal, get_type_hints

from pydantic import AfterValidator, ConfigDict, Field, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from stygig.errors import InputError, InvalidImageError, InvalidOptionsError, PayloadTooLargeError
from stygig.unique_keys import DuplicateKeyError, key_name, unique_object

__all__ = [
    "JSON_LINES_TYPES",
    "MAX_CANDIDATE_IDS",
    "MAX_EXCLUDE_IDS",
    "MAX_FILTERS",
    "MAX_K",
    "MAX_LIST",
    "MAX_NUMBER",
    "MAX_OUTFIT_ITEMS",
    "MAX_QUERY_PARTS",
    "MAX_QUERY_PHOTOS",
    "MAX_SEED",
    "MAX_TEXT",
    "OPAQUE_CONTENT_TYPES",
    "Mode",
    "Options",
    "OutfitRequest",
    "Query",
    "check_json_values",
    "check_part_count",
    "merge_option_sources",
    "opens_a_json_object",
    "option_parameters",
    "options_from_params",
    "options_schema",
    "outfit_request_schema",
    "params_to_dict",
    "parse_json_object",
    "split_json_request",
    "split_text_list",
    "string_list",
]

Mode = Literal["outfit", "similar"]
MAX_K = 100
#: Photos of one query: each is decoded and encoded (and the request's photos share one
#: decode budget, :func:`stygig.images.check_photos`).
MAX_QUERY_PHOTOS = 8
#: Photos and catalogue items of one query together: a catalogue item costs a look-up, so a
#: partial outfit as long as the longest set scored together (:data:`MAX_OUTFIT_ITEMS`) can be
#: completed; MANGO's outfits hold up to 13 items (FITB asks with up to 12 visible).
MAX_QUERY_PARTS = 16
#: Content types that say nothing of a request's body: SageMaker's Python SDK sends a photo as
#: ``application/octet-stream`` by default (``IdentitySerializer``), boto3's ``invoke_endpoint``
#: without ``ContentType`` sends none, and some clients send ``image/*`` for "an image" (a 415
#: before: audit, session 47), a range that names no format. Such a body is told from its
#: bytes (a photo by its signature, a JSON request by its ``{``), in real time and in
#: asynchronous jobs alike. Other ranges stay refused (415): ``*/*`` and ``application/*`` say
#: nothing a client means by them, and ``text/*`` claims text, which a photo is not.
OPAQUE_CONTENT_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream", "image/*"})
#: JSON Lines under the names clients send it by (AWS's batch transform examples use
#: ``application/jsonlines``): a request holds one record, a JSON object, read as JSON is; an
#: answer is one JSON object on one line, so it is also one JSON Lines record (refused with 415
#: and 406 before: a transform job over a ``.jsonl`` file failed on its first record).
JSON_LINES_TYPES = frozenset(
    {
        "application/jsonlines",
        "application/x-jsonlines",
        "application/jsonl",
        "application/x-ndjson",
    }
)


def opens_a_json_object(data: bytes) -> bool:
    """Whether ``data`` starts like a JSON object: ``{`` after white space or a UTF-8 byte
    order mark (how a body without a useful type, or a stored input, is told to be JSON)."""
    return data.lstrip().removeprefix(b"\xef\xbb\xbf").lstrip()[:1] == b"{"


# Bounds on what a client may ask for: work and memory per request follow from these, and
# error messages name the field and the bound, never the value the client sent.
MAX_TEXT = 200  # one category, gender, id or filter value
MAX_LIST = 256  # include/exclude categories, values of one filter
MAX_EXCLUDE_IDS = 1000
MAX_CANDIDATE_IDS = 1000  # candidates a caller may ask to have ranked
MAX_OUTFIT_ITEMS = 16  # items of one set scored together (120 pairs)
MAX_FILTERS = 16
MAX_SEED = 2**32 - 1
# JSON values in one request body: the query and the options' lists at their limits hold
# about 6,700 (16 photos and ids, 2 x 256 categories, 2 x 1,000 ids, 16 x 256 filter values).
MAX_JSON_VALUES = 20_000
MAX_NUMBER = 1e15  # the largest magnitude of a number in a filter


def check_part_count(parts: int, photos: int) -> None:
    """:class:`InvalidOptionsError` when a query would hold more than :data:`MAX_QUERY_PHOTOS`
    photos, or more than :data:`MAX_QUERY_PARTS` photos and items together (callers count
    before decoding or reading anything)."""
    if photos > MAX_QUERY_PHOTOS:
        raise InvalidOptionsError(f"a query may hold at most {MAX_QUERY_PHOTOS} photos")
    if parts > MAX_QUERY_PARTS:
        raise InvalidOptionsError(
            f"a query may hold at most {MAX_QUERY_PARTS} photos and items together"
        )


Text = Annotated[str, Field(strict=True, min_length=1, max_length=MAX_TEXT)]
# Strict floats take ints too (never bools); within the bound, comparisons stay exact.
Number = Annotated[float, Field(strict=True, ge=-MAX_NUMBER, le=MAX_NUMBER, allow_inf_nan=False)]


class RangeFilter(TypedDict, total=False):
    """``{"min": number, "max": number}``: either bound may be left out, not both."""

    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    min: Number
    max: Number


_MIN_ABOVE_MAX = "a range filter's min is above its max"


def _not_empty(value: RangeFilter) -> RangeFilter:
    if not value:
        raise ValueError("a range filter needs min, max or both")
    if "min" in value and "max" in value and value["min"] > value["max"]:
        raise ValueError(_MIN_ABOVE_MAX)  # it would match nothing (review, session 42)
    return value


#: One filter: a value, a list of values (any may match), or a numeric range.
Filter = (
    Text
    | Number
    | Annotated[list[Text | Number], Field(min_length=1, max_length=MAX_LIST)]
    | Annotated[RangeFilter, AfterValidator(_not_empty)]
)


def _distinct(value: tuple[str, ...]) -> tuple[str, ...]:
    if len(set(value)) != len(value):
        raise ValueError("each value at most once")
    return value


@dataclass(frozen=True)
class Options:
    """What the caller wants back. Validated on construction, from these annotations (pydantic,
    strict: ``"false"`` is not a boolean, ``2.5`` not a count), so the API schema is the same
    rules. Error messages name the field and the rule, never the value sent."""

    mode: Mode = "outfit"
    # per category (scoring.MAX_RANKED_ITEMS in all)
    k: Annotated[int, Field(strict=True, ge=1, le=MAX_K)] = 3
    k_total: Annotated[int, Field(strict=True, ge=1, le=MAX_K)] = 12
    category: Text | None = None  # the caller states the (single) photo's category
    gender: Text | None = None  # filter; default: the inferred gender (plus unisex)
    # Each category once (audit, session 47: 256 copies of "top" were taken)
    include_categories: Annotated[
        tuple[Text, ...],
        Field(max_length=MAX_LIST, json_schema_extra={"uniqueItems": True}),
        AfterValidator(_distinct),
    ] = ()
    exclude_categories: Annotated[
        tuple[Text, ...],
        Field(max_length=MAX_LIST, json_schema_extra={"uniqueItems": True}),
        AfterValidator(_distinct),
    ] = ()
    exclude_ids: Annotated[tuple[Text, ...], Field(max_length=MAX_EXCLUDE_IDS)] = ()
    # attribute -> value | [values] | {min, max}
    filters: Annotated[dict[Text, Filter], Field(max_length=MAX_FILTERS)] = field(
        default_factory=dict
    )
    use_color: Annotated[bool, Field(strict=True)] = True
    # MMR's trade-off between score and variety; None: the scoring config's default
    diversity: Annotated[float, Field(strict=True, ge=0.0, le=1.0)] | None = None
    seed: Annotated[int, Field(strict=True, ge=0, le=MAX_SEED)] = 0
    # items the shop cannot sell now (sold out, withdrawn from sale) are left out unless asked
    include_unavailable: Annotated[bool, Field(strict=True)] = False
    # a photo's category and usage: the neighbour vote merged with the artifact's category
    # head (when it has one); False: the vote alone
    use_category_head: Annotated[bool, Field(strict=True)] = True
    # Rank only these catalogue items (a stylist's shortlist, fill-in-the-blank candidates):
    # each scored as any answer's items are; empty: search the whole catalogue.
    candidate_ids: Annotated[
        tuple[Text, ...],
        Field(max_length=MAX_CANDIDATE_IDS, json_schema_extra={"uniqueItems": True}),
        AfterValidator(_distinct),
    ] = ()

    def __post_init__(self) -> None:
        _validate(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Options:
        """Options from a JSON object (unknown keys are an error; a list option is a JSON
        array, never a bare string, and becomes a tuple)."""
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise InvalidOptionsError(f"{len(unknown)} unknown option(s); known: {sorted(known)}")
        kwargs = dict(data)
        for name in _LIST_OPTIONS:
            if name in kwargs:
                value = kwargs[name]
                if not isinstance(value, list | tuple):
                    raise InvalidOptionsError(f"{name} must be a list of strings")
                kwargs[name] = tuple(value)
        return cls(**kwargs)


def _explain(name: str, error: ValidationError) -> str:
    """``field: rule`` for a refused option. Never the value, nor a client's dict key."""
    first = error.errors()[0]
    if name == "filters" and any(_MIN_ABOVE_MAX in e["msg"] for e in error.errors()):
        return f"filters: {_MIN_ABOVE_MAX}"
    if name == "filters" and first["type"] != "too_long":
        return (
            f"filters: each filter is a value, a list of 1 to {MAX_LIST} values, or "
            f"{{'min': number, 'max': number}}; names and texts 1 to {MAX_TEXT} characters, "
            f"numbers within ±{MAX_NUMBER:g}"
        )
    return f"{name}: {first['msg']}"


def _validate(obj: Options | OutfitRequest) -> None:
    """Check a request dataclass's fields against their annotations (InvalidOptionsError)."""
    cls: type[Options] | type[OutfitRequest] = type(obj)
    for name, adapter in _field_adapters(cls).items():
        try:
            adapter.validate_python(getattr(obj, name))
        except ValidationError as e:
            raise InvalidOptionsError(_explain(name, e)) from None


_ADAPTERS: dict[str, dict[str, TypeAdapter[Any]]] = {}


def _field_adapters(cls: type[Options] | type[OutfitRequest]) -> dict[str, TypeAdapter[Any]]:
    """One validator per field, made once per class (a race only makes them twice)."""
    found = _ADAPTERS.get(cls.__name__)
    if found is None:
        hints = get_type_hints(cls, include_extras=True)
        found = {f.name: TypeAdapter(hints[f.name]) for f in fields(cls)}
        _ADAPTERS[cls.__name__] = found
    return found


@dataclass(frozen=True)
class OutfitRequest:
    """``POST /v1/outfits/score``: a set of catalogue items to score together.

    Validated on construction from these annotations, like :class:`Options`."""

    item_ids: Annotated[
        tuple[Text, ...],
        Field(min_length=2, max_length=MAX_OUTFIT_ITEMS),
        AfterValidator(_distinct),
    ]
    use_color: Annotated[bool, Field(strict=True)] = True

    def __post_init__(self) -> None:
        _validate(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OutfitRequest:
        """From a JSON object (unknown keys are an error; ``item_ids`` a list of strings)."""
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise InvalidOptionsError(f"{len(unknown)} unknown key(s); known: {sorted(known)}")
        if "item_ids" not in data:
            raise InvalidOptionsError("item_ids: required, a list of catalogue item ids")
        kwargs = dict(data)
        if not isinstance(kwargs["item_ids"], list):
            raise InvalidOptionsError("item_ids must be a list of strings")
        kwargs["item_ids"] = tuple(kwargs["item_ids"])
        return cls(**kwargs)


def outfit_request_schema() -> dict[str, Any]:
    """JSON Schema of :class:`OutfitRequest` (for OpenAPI)."""
    schema = TypeAdapter(OutfitRequest).json_schema(ref_template="#/components/schemas/{model}")
    schema["additionalProperties"] = False
    return schema


def options_schema() -> dict[str, Any]:
    """JSON Schema of :class:`Options` (for OpenAPI): the rules the constructor applies,
    unknown options refused."""
    schema = TypeAdapter(Options).json_schema(ref_template="#/components/schemas/{model}")
    schema["additionalProperties"] = False
    return schema


def option_parameters(*, header: bool = True) -> list[dict[str, Any]]:
    """Every option as an OpenAPI query parameter, as :func:`params_to_dict` reads them
    (lists comma-separated or repeated, ``filters`` a JSON object), and (``header``)
    SageMaker's custom attributes header, which carries the same text."""
    properties = options_schema()["properties"]
    out: list[dict[str, Any]] = []
    for name, schema in properties.items():
        param: dict[str, Any] = {"name": name, "in": "query", "required": False}
        if name in _LIST_OPTIONS:
            param |= {"style": "form", "explode": True}
            param["schema"] = {"type": "array", "items": {"type": "string"}}
            if schema.get("uniqueItems"):  # candidate_ids, categories: each at most once
                param["schema"]["uniqueItems"] = True
            param["description"] = "repeat it, or separate the values with commas"
        elif name == "filters":
            param["content"] = {"application/json": {"schema": schema}}
            param["description"] = "a JSON object: attribute -> value, [values] or {min, max}"
        else:
            param["schema"] = {k: v for k, v in schema.items() if k != "title"}
        out.append(param)
    if header:
        out.append(
            {
                "name": "X-Amzn-SageMaker-Custom-Attributes",
                "in": "header",
                "required": False,
                "schema": {"type": "string"},
                "description": "the options as a query string (k=3&mode=similar); an option "
                "also given in the query string or the body is a 422 (option_given_twice); "
                "text that is not key=value (a trace id) is passed over. Through SageMaker at "
                "most 1,024 characters",
            }
        )
    return out


_INT_OPTIONS = ("k", "k_total", "seed")
_LIST_OPTIONS = ("include_categories", "exclude_categories", "exclude_ids", "candidate_ids")
_BOOL_OPTIONS = ("use_color", "include_unavailable", "use_category_head")


# Numbers in text options as people write them, in ASCII digits: Python's int() and float()
# also take "1_0", other scripts' digits, surrounding spaces, "nan" and "inf".
_INTEGER = re.compile(r"-?[0-9]{1,18}")
_DECIMAL = re.compile(r"-?(?:[0-9]{1,18}(?:\.[0-9]{0,18})?|\.[0-9]{1,18})(?:[eE][-+]?[0-9]{1,3})?")


#: The most values each list option takes (Options' own bounds), checked on text before it is
#: split: a 6 MB form field of commas is a 422 at once, not two million strings (review,
#: session 40).
_LIST_LIMITS = {
    "include_categories": MAX_LIST,
    "exclude_categories": MAX_LIST,
    "exclude_ids": MAX_EXCLUDE_IDS,
    "candidate_ids": MAX_CANDIDATE_IDS,
}


def split_text_list(values: Iterable[str], name: str, limit: int) -> list[str]:
    """Comma-separated ``values`` as one list without empty entries; more than ``limit``
    entries, counted from the commas before anything is split (an empty entry counts), is an
    :class:`InvalidOptionsError` naming ``name``."""
    values = [v.strip(",") for v in values]  # a trailing comma adds no value
    if sum(v.count(",") + 1 for v in values if v) > limit:
        raise InvalidOptionsError(f"{name}: at most {limit:,} values")
    return [v for value in values for v in value.split(",") if v]


def _coerce(name: str, values: list[str]) -> Any:
    if name in _LIST_OPTIONS:
        return split_text_list(values, name, _LIST_LIMITS[name])
    value = values[0]  # the only one (params_to_dict refuses a repeated option)
    if name in _INT_OPTIONS:
        if not _INTEGER.fullmatch(value):
            raise InvalidOptionsError(f"{name} must be an integer")
        return int(value)
    if name == "diversity":
        if not _DECIMAL.fullmatch(value):
            raise InvalidOptionsError("diversity must be a number")
        return float(value)
    if name in _BOOL_OPTIONS:
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise InvalidOptionsError(f"{name} must be true or false")
    if name == "filters":
        return parse_json_object(value.encode(), what="filters")
    return value


def params_to_dict(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Option values from text pairs (query string, form fields), typed per option. A list
    option may be repeated (its values are joined); any other option given twice is an
    :class:`InvalidOptionsError` (``duplicate_key``), never "the last one wins"."""
    grouped: dict[str, list[str]] = {}
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    for key, values in grouped.items():
        if len(values) > 1 and key not in _LIST_OPTIONS and key in OPTION_NAMES:
            raise InvalidOptionsError(
                f"{key} is given {len(values)} times; give it once (only the list options "
                f"{', '.join(_LIST_OPTIONS)} may be repeated)",
                code="duplicate_key",
            )
    return {k: _coerce(k, v) for k, v in grouped.items()}


def merge_option_sources(*sources: tuple[str, Mapping[str, Any]]) -> dict[str, Any]:
    """One request's options from the places it gives them, each ``(place, options)``: the
    custom attributes, the query string, a JSON body, a form's fields. An option given in two
    places is an :class:`InvalidOptionsError` (``option_given_twice``) naming it and both
    places, never one place silently over another (review, session 42: a scalar from the
    query string beat the custom attributes, lists of both were united, and a body replaced
    them)."""
    merged: dict[str, Any] = {}
    where: dict[str, str] = {}
    for place, options in sources:
        for name, value in options.items():
            # An unknown name is refused as one by Options (never repeated back): only an
            # option's own name is said to be given twice.
            if name in where and name in OPTION_NAMES:
                raise InvalidOptionsError(
                    f"{key_name(name)} is given in {where[name]} and in {place}; "
                    "give each option in one place",
                    code="option_given_twice",
                )
            where[name] = place
            merged[name] = value
    return merged


def options_from_params(pairs: Iterable[tuple[str, str]]) -> Options:
    """Options from text ``key=value`` pairs: a URL query (repeated or comma-separated lists),
    form fields, ``--option`` flags."""
    return Options.from_dict(params_to_dict(pairs))


def check_json_values(
    body: bytes | str, *, what: str = "the body", limit: int = MAX_JSON_VALUES
) -> None:
    """Refuse (413) a JSON text of more than about ``limit`` values before it is parsed: each
    value is a Python object, so a few MB of ``[[],[],...]`` cost 1 s of CPU and 150 MB of
    memory within the byte limits. Counted from the separators and openers (a comma or a
    bracket inside a string counts too: the count is an upper bound); photos in base64 hold
    none."""
    if isinstance(body, bytes):
        values = body.count(b",") + body.count(b"[") + body.count(b"{")
    else:
        values = body.count(",") + body.count("[") + body.count("{")
    if values > limit:
        raise PayloadTooLargeError(f"{what} holds more than {limit:,} JSON values")


def parse_json_object(
    body: bytes, *, what: str = "the body", max_values: int = MAX_JSON_VALUES
) -> dict[str, Any]:
    """A JSON object, or :class:`~stygig.errors.InputError` (400) saying why not; 413 past
    ``max_values`` values (:func:`check_json_values`). Only a body opening an object or an
    array is counted: one that cannot be an object (a photo sent as application/json) is a
    400 whatever its size (a 3.6 MB JPEG was a 413 "too many JSON values", a small one a
    400).

    JSON between systems is UTF-8 (RFC 8259 8.1), a leading byte order mark ignored: the text
    is decoded strictly first, and counted after the mark. ``json.loads`` of bytes would also
    read UTF-16 and UTF-32, and a body opening with a mark or in those skipped the count: a
    5.7 MB one cost a second of CPU and 130 MB where it is a 413 now (review, session 50)."""
    try:
        text = body.removeprefix(b"\xef\xbb\xbf").decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{what} is not UTF-8 text", code="malformed_json") from None
    if text.lstrip(" \t\r\n")[:1] in ("{", "["):  # a scalar or garbage holds one value
        check_json_values(text, what=what, limit=max_values)
    try:
        data = json.loads(text, object_pairs_hook=unique_object)
    except DuplicateKeyError as e:  # never "the last one wins" (review, session 42)
        raise DuplicateKeyError(e.key, what, named=REQUEST_KEYS) from None
    except json.JSONDecodeError as e:  # its text says where, never what: no client bytes
        hint = ""
        if e.msg == "Extra data" and "\n" in text[: e.pos]:
            # SageMaker batch transform's MultiRecord: records joined by line ends
            hint = (
                "; one JSON object per request: send each line on its own (a batch "
                "transform's BatchStrategy SingleRecord; GET /execution-parameters says so)"
            )
        raise InputError(f"{what} is not valid JSON: {e}{hint}", code="malformed_json") from None
    except RecursionError:
        raise InputError(f"{what} is nested too deeply", code="malformed_json") from None
    except ValueError:  # e.g. an integer longer than Python's 4,300-digit conversion limit
        raise InputError(f"{what} holds a number too long to read", code="malformed_json") from None
    if not isinstance(data, dict):
        kind = _JSON_KINDS.get(type(data), "number")
        raise InvalidOptionsError(f"{what} must be a JSON object, not {kind}")
    return data


#: What a parsed JSON value was, in JSON's words (not Python's type names).
_JSON_KINDS: dict[type, str] = {
    list: "an array",
    str: "a string",
    bool: "true or false",
    type(None): "null",
}


_JSON_QUERY_KEYS = ("image_b64", "images_b64", "item_ids")
#: Every option's name, and every key a request's JSON may hold: the names an error may repeat.
OPTION_NAMES = frozenset(f.name for f in dataclasses.fields(Options))
REQUEST_KEYS = OPTION_NAMES | {*_JSON_QUERY_KEYS, "image_uri", "image_uris", "options"}


def split_json_request(
    data: Mapping[str, Any], *, photos_before: int = 0, locations: bool = False
) -> tuple[list[bytes], tuple[str, ...], dict[str, Any]]:
    """A JSON request object as ``(photos, item ids, options)``: ``image_b64`` and
    ``images_b64`` decoded (strict base64, data URLs allowed), ``item_ids`` checked, and every
    other key left as an option. ``photos_before``: the photos of the same request read
    already (a form's uploads and earlier ``options`` fields), counted with these before any
    is decoded. ``locations``: ``image_uri`` / ``image_uris`` may name stored photos (an
    asynchronous job's input, which reads them from the locations the operator allows);
    elsewhere they are refused, saying so (they were "no photo" or an unknown option)."""
    if not locations and ("image_uri" in data or "image_uris" in data):
        raise InvalidOptionsError(
            "image_uri and image_uris name stored photos, which only asynchronous jobs read "
            "(POST /async/invocations); send the photo itself: image_b64, or the photo as the "
            "body"
        )
    images: list[bytes] = []
    values = data.get("images_b64", [])
    if not isinstance(values, list):
        raise InvalidOptionsError("images_b64 must be a list of base64 strings")
    photos = photos_before + len(values) + ("image_b64" in data)
    check_part_count(photos, photos)  # counted before anything is decoded
    if "image_b64" in data:
        images.append(_b64(data["image_b64"], "image_b64"))
    images.extend(_b64(v, f"images_b64[{i}]") for i, v in enumerate(values))
    item_ids = string_list(data.get("item_ids", []), "item_ids")
    options = {k: v for k, v in data.items() if k not in _JSON_QUERY_KEYS}
    return images, item_ids, options


def _b64(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidOptionsError(f"{where} must be a base64 string")
    if value.startswith("data:") and "," in value:  # data URLs from browsers
        value = value.split(",", 1)[1]
    # MIME's line breaks (every 76 characters: the base64 command, Python's encodebytes, Ruby
    # and Java's MIME encoders) are the only characters outside the alphabet let through.
    value = value.replace("\r", "").replace("\n", "")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidImageError(f"{where} is not valid base64", code="invalid_base64") from None


def string_list(value: Any, name: str) -> tuple[str, ...]:
    """A JSON array of ids (a bare string is no array: review, session 42)."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidOptionsError(f"{name} must be a list of strings")
    if len(value) > MAX_QUERY_PARTS or not all(0 < len(v) <= MAX_TEXT for v in value):
        raise InvalidOptionsError(
            f"{name}: at most {MAX_QUERY_PARTS} ids of 1 to {MAX_TEXT} characters"
        )
    return tuple(value)


@dataclass(frozen=True)
class Query:
    """Photos (bytes or paths) and/or catalogue item ids that belong together."""

    images: tuple[bytes | str | Path, ...] = ()
    item_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # A bare photo or id is no sequence of them: iterated, a path was taken for one photo
        # per character ("at most 8 photos") and an id for repeated letters (review, s50).
        if isinstance(self.images, str | bytes | bytearray | Path):
            raise InvalidOptionsError(
                "images must be a list of photos (bytes or paths), not one photo: "
                "Query(images=[photo])"
            )
        if isinstance(self.item_ids, str):
            raise InvalidOptionsError("item_ids must be a list of ids, not one id: [item_id]")
        for n, image in enumerate(self.images):
            if not isinstance(image, bytes | str | Path):
                raise InvalidOptionsError(
                    f"images[{n}] must be a photo's bytes or path, not {type(image).__name__}"
                )
        for n, item_id in enumerate(self.item_ids):
            if not isinstance(item_id, str):
                raise InvalidOptionsError(
                    f"item_ids[{n}] must be a string, not {type(item_id).__name__}"
                )
        parts = len(self.images) + len(self.item_ids)
        if parts == 0:
            raise InvalidOptionsError("a query needs at least one photo or item id")
        check_part_count(parts, len(self.images))
        if len(set(self.item_ids)) != len(self.item_ids):
            # One item twice in one outfit: candidate_ids and the outfit score refuse it; the
            # query took it, weighing that item's votes twice (review, session 45).
            first: dict[str, int] = {}
            for n, item_id in enumerate(self.item_ids):
                if item_id in first:
                    raise InvalidOptionsError(
                        f"item_ids[{n}] repeats item_ids[{first[item_id]}]: each item at most once"
                    )
                first[item_id] = n

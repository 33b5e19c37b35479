"""What a caller asks: ``Options`` and ``Query``, and how they are read from text and JSON.

The answer's types are in :mod:`stygig.answer`.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from stygig.errors import InputError, InvalidImageError, InvalidOptionsError

__all__ = [
    "MAX_EXCLUDE_IDS",
    "MAX_FILTERS",
    "MAX_K",
    "MAX_LIST",
    "MAX_NUMBER",
    "MAX_QUERY_PARTS",
    "MAX_SEED",
    "MAX_TEXT",
    "Mode",
    "Options",
    "Query",
    "check_part_count",
    "options_from_params",
    "params_to_dict",
    "parse_json_object",
    "split_json_request",
]

Mode = Literal["outfit", "similar"]
MAX_K = 100
MAX_QUERY_PARTS = 8
# Bounds on what a client may ask for: work and memory per request follow from these, and
# error messages name the field and the bound, never the value the client sent.
MAX_TEXT = 200  # one category, gender, id or filter value
MAX_LIST = 256  # include/exclude categories, values of one filter
MAX_EXCLUDE_IDS = 1000
MAX_FILTERS = 16
MAX_SEED = 2**32 - 1
MAX_NUMBER = 1e15  # the largest magnitude of a number in a filter


def check_part_count(parts: int) -> None:
    """:class:`InvalidOptionsError` when a query would hold more than ``MAX_QUERY_PARTS``
    photos and items together (callers count before decoding or reading anything)."""
    if parts > MAX_QUERY_PARTS:
        raise InvalidOptionsError(f"a query may hold at most {MAX_QUERY_PARTS} photos/items")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_text(value: Any, name: str) -> None:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_TEXT:
        raise InvalidOptionsError(f"{name} must be a string of 1 to {MAX_TEXT} characters")


def _is_number(value: Any) -> bool:
    """A JSON number a filter can compare with: finite and within ``MAX_NUMBER`` (comparisons of
    Python ints and floats are exact, so a 400-digit integer is refused, never overflows)."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and -MAX_NUMBER <= value <= MAX_NUMBER
    )


def _check_filter(name: Any, cond: Any) -> None:
    """One ``filters`` entry's shape (which attributes exist is the recommender's business)."""
    _check_text(name, "a filter name")
    if isinstance(cond, dict):
        if not cond or set(cond) - {"min", "max"}:
            raise InvalidOptionsError("a range filter is {'min': number, 'max': number}")
        if not all(_is_number(bound) for bound in cond.values()):
            raise InvalidOptionsError(
                f"a range filter's min/max must be numbers within ±{MAX_NUMBER:g}"
            )
        return
    values = cond if isinstance(cond, list) else [cond]
    if not 0 < len(values) <= MAX_LIST:
        raise InvalidOptionsError(f"a filter takes 1 to {MAX_LIST} values")
    for v in values:
        if isinstance(v, str):
            _check_text(v, "a filter value")
        elif not _is_number(v):
            raise InvalidOptionsError(
                f"filter values must be strings or numbers within ±{MAX_NUMBER:g}"
            )


@dataclass(frozen=True)
class Options:
    """What the caller wants back. Validated on construction: types, ranges and sizes."""

    mode: Mode = "outfit"
    k: int = 3  # per category
    k_total: int = 12
    category: str | None = None  # the caller states the (single) photo's category
    gender: str | None = None  # filter; default: the inferred gender (plus unisex)
    include_categories: tuple[str, ...] = ()
    exclude_categories: tuple[str, ...] = ()
    exclude_ids: tuple[str, ...] = ()
    filters: dict[str, Any] = field(
        default_factory=dict
    )  # attribute -> value | [values] | {min,max}
    use_color: bool = True
    diversity: float | None = None  # None: the scoring config's default
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("outfit", "similar"):
            raise InvalidOptionsError("mode must be 'outfit' or 'similar'")
        for name in ("k", "k_total"):
            value = getattr(self, name)
            if not _is_int(value) or not 1 <= value <= MAX_K:
                raise InvalidOptionsError(f"{name} must be an integer from 1 to {MAX_K}")
        for name in ("category", "gender"):
            if getattr(self, name) is not None:
                _check_text(getattr(self, name), name)
        for name, most in (
            ("include_categories", MAX_LIST),
            ("exclude_categories", MAX_LIST),
            ("exclude_ids", MAX_EXCLUDE_IDS),
        ):
            values = getattr(self, name)
            if not isinstance(values, tuple) or len(values) > most:
                raise InvalidOptionsError(f"{name} must be a list of at most {most} strings")
            for v in values:
                _check_text(v, f"each of {name}")
        if not isinstance(self.filters, dict):
            raise InvalidOptionsError("filters must be an object {attribute: value}")
        if len(self.filters) > MAX_FILTERS:
            raise InvalidOptionsError(f"at most {MAX_FILTERS} filters")
        for name, cond in self.filters.items():
            _check_filter(name, cond)
        if not isinstance(self.use_color, bool):
            raise InvalidOptionsError("use_color must be true or false")
        if self.diversity is not None and (
            not isinstance(self.diversity, int | float)
            or isinstance(self.diversity, bool)
            or not 0.0 <= self.diversity <= 1.0
        ):
            raise InvalidOptionsError("diversity must be a number within [0, 1]")
        if not _is_int(self.seed) or not 0 <= self.seed <= MAX_SEED:
            raise InvalidOptionsError(f"seed must be an integer from 0 to {MAX_SEED}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Options:
        """Options from a JSON object (unknown keys are an error, lists become tuples)."""
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise InvalidOptionsError(f"{len(unknown)} unknown option(s); known: {sorted(known)}")
        kwargs = dict(data)
        for name in ("include_categories", "exclude_categories", "exclude_ids"):
            if name in kwargs:
                value = kwargs[name]
                if isinstance(value, str):
                    value = [value]
                if not isinstance(value, list | tuple):
                    raise InvalidOptionsError(f"{name} must be a list of strings")
                kwargs[name] = tuple(value)
        return cls(**kwargs)


_INT_OPTIONS = ("k", "k_total", "seed")
_LIST_OPTIONS = ("include_categories", "exclude_categories", "exclude_ids")


def _coerce(name: str, values: list[str]) -> Any:
    if name in _LIST_OPTIONS:
        return [v for value in values for v in value.split(",") if v]
    value = values[-1]
    if name in _INT_OPTIONS:
        try:
            return int(value)
        except ValueError:
            raise InvalidOptionsError(f"{name} must be an integer") from None
    if name == "diversity":
        try:
            return float(value)
        except ValueError:
            raise InvalidOptionsError("diversity must be a number") from None
    if name == "use_color":
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise InvalidOptionsError("use_color must be true or false")
    if name == "filters":
        return parse_json_object(value.encode(), what="filters")
    return value


def params_to_dict(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Option values from text pairs (query string, form fields), typed per option."""
    grouped: dict[str, list[str]] = {}
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    return {k: _coerce(k, v) for k, v in grouped.items()}


def options_from_params(pairs: Iterable[tuple[str, str]]) -> Options:
    """Options from text ``key=value`` pairs: a URL query (repeated or comma-separated lists),
    form fields, ``--option`` flags."""
    return Options.from_dict(params_to_dict(pairs))


def parse_json_object(body: bytes, *, what: str = "the body") -> dict[str, Any]:
    """A JSON object, or :class:`~stygig.errors.InputError` (400) saying why not."""
    try:
        data = json.loads(body)
    except UnicodeDecodeError:
        raise InputError(f"{what} is not UTF-8 text", code="malformed_json") from None
    except json.JSONDecodeError as e:  # its text says where, never what: no client bytes
        raise InputError(f"{what} is not valid JSON: {e}", code="malformed_json") from None
    except RecursionError:
        raise InputError(f"{what} is nested too deeply", code="malformed_json") from None
    except ValueError:  # e.g. an integer longer than Python's 4,300-digit conversion limit
        raise InputError(f"{what} holds a number too long to read", code="malformed_json") from None
    if not isinstance(data, dict):
        raise InvalidOptionsError(f"{what} must be a JSON object, not {type(data).__name__}")
    return data


_JSON_QUERY_KEYS = ("image_b64", "images_b64", "item_ids")


def split_json_request(
    data: Mapping[str, Any],
) -> tuple[list[bytes], tuple[str, ...], dict[str, Any]]:
    """A JSON request object as ``(photos, item ids, options)``: ``image_b64`` and
    ``images_b64`` decoded (strict base64, data URLs allowed), ``item_ids`` checked, and every
    other key left as an option."""
    images: list[bytes] = []
    if "image_b64" in data:
        images.append(_b64(data["image_b64"], "image_b64"))
    if "images_b64" in data:
        values = data["images_b64"]
        if not isinstance(values, list):
            raise InvalidOptionsError("images_b64 must be a list of base64 strings")
        check_part_count(len(values))  # counted before anything is decoded
        images.extend(_b64(v, f"images_b64[{i}]") for i, v in enumerate(values))
    item_ids = _string_list(data.get("item_ids", []), "item_ids")
    options = {k: v for k, v in data.items() if k not in _JSON_QUERY_KEYS}
    return images, item_ids, options


def _b64(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidOptionsError(f"{where} must be a base64 string")
    if value.startswith("data:") and "," in value:  # data URLs from browsers
        value = value.split(",", 1)[1]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidImageError(f"{where} is not valid base64", code="invalid_base64") from None


def _string_list(value: Any, name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
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
        parts = len(self.images) + len(self.item_ids)
        if parts == 0:
            raise InvalidOptionsError("a query needs at least one photo or item id")
        check_part_count(parts)

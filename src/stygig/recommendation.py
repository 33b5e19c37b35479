"""What a caller asks and what the recommender answers: ``Options``, ``Query``, ``Recommendation``.

These are the request and response types of :class:`stygig.engine.Recommender`; the CLI's
``--json``, the HTTP API and batch output all serialise :meth:`Recommendation.to_dict`.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from stygig.errors import InputError, InvalidImageError, InvalidOptionsError

__all__ = [
    "Mode",
    "Options",
    "Query",
    "Recommendation",
    "options_from_params",
    "params_to_dict",
    "parse_json_object",
    "split_json_request",
]

Mode = Literal["outfit", "similar"]
_MAX_K = 100
_MAX_QUERY_PARTS = 8


@dataclass(frozen=True)
class Options:
    """What the caller wants back. Validated on construction."""

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
            raise InvalidOptionsError(f"mode must be 'outfit' or 'similar', not {self.mode!r}")
        for name in ("k", "k_total"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= _MAX_K:
                raise InvalidOptionsError(f"{name} must be an integer from 1 to {_MAX_K}")
        if self.diversity is not None and not 0.0 <= self.diversity <= 1.0:
            raise InvalidOptionsError("diversity must be within [0, 1]")
        if not isinstance(self.filters, dict):
            raise InvalidOptionsError("filters must be an object {attribute: value}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Options:
        """Options from a JSON object (unknown keys are an error, lists become tuples)."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidOptionsError(f"unknown option(s) {unknown}; known: {sorted(known)}")
        kwargs = dict(data)
        for name in ("include_categories", "exclude_categories", "exclude_ids"):
            if name in kwargs:
                value = kwargs[name]
                if isinstance(value, str):
                    value = [value]
                if not isinstance(value, list | tuple) or not all(
                    isinstance(v, str) for v in value
                ):
                    raise InvalidOptionsError(f"{name} must be a list of strings")
                kwargs[name] = tuple(value)
        try:
            return cls(**kwargs)
        except TypeError as e:
            raise InvalidOptionsError(f"invalid options: {e}") from e


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
            raise InvalidOptionsError(f"{name} must be an integer, not {value!r}") from None
    if name == "diversity":
        try:
            return float(value)
        except ValueError:
            raise InvalidOptionsError(f"diversity must be a number, not {value!r}") from None
    if name == "use_color":
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise InvalidOptionsError(f"use_color must be true or false, not {value!r}")
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
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{what} is not valid JSON: {e}", code="malformed_json") from None
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
        if parts > _MAX_QUERY_PARTS:
            raise InvalidOptionsError(f"a query may hold at most {_MAX_QUERY_PARTS} photos/items")


@dataclass
class Recommendation:
    """The answer: the query as understood, ranked items, per-category lists, an outfit."""

    mode: str
    query: list[dict[str, Any]]
    items: list[dict[str, Any]]
    by_category: dict[str, list[dict[str, Any]]]
    outfit: dict[str, Any] | None
    timings_ms: dict[str, float]
    artifact: dict[str, Any]
    # Whose items were recommended: {"value", "source": stated | item | photo | uncertain | none,
    # "hedged": only unisex items, "confidence" and "guess" when voted from photos}.
    gender: dict[str, Any] = field(
        default_factory=lambda: {"value": None, "source": "none", "hedged": False}
    )

    def to_dict(self) -> dict[str, Any]:
        """The response schema shared by the CLI's ``--json``, the API and batch output."""
        t0 = time.perf_counter()
        timings = dict(self.timings_ms)
        out: dict[str, Any] = {
            "mode": self.mode,
            "query": self.query,
            "items": self.items,
            "by_category": self.by_category,
            "outfit": self.outfit,
            "gender": self.gender,
            "artifact": self.artifact,
            "timings_ms": timings,
        }
        timings["serialise"] = round((time.perf_counter() - t0) * 1e3, 3)
        return out

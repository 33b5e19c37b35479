"""Catalogue changes: what a client may ask (add, remove, update), checked, and as logged.

Three operations, one JSON object each (a bulk request is JSON Lines, one per line)::

    {"op": "add", "item": {"id": "A1", "category": "jeans", "price": 49, ...},
     "image_b64": "<base64 JPEG/PNG/WebP>"}           (or "image": a location the operator
                                                        allows, in "item" or beside it)
    {"op": "remove", "id": "A1"}
    {"op": "update", "id": "A1", "set": {"available": false, "price": 39,
                                         "attributes": {"size_run": "S,M"}}}

``add`` of an id the catalogue has replaces that item (row and photo). ``update`` changes
fields without a photo: ``name``, ``price``, ``brand``, ``gender``, ``usage``, ``season``,
``category``, ``available``, ``stock`` and any attribute (top level or under ``attributes``;
``null`` deletes one). A row is validated as a catalogue file's rows are
(:func:`stygig.catalog.loaders.item_from_row`); messages name the change and the rule, never
the values sent.

A :class:`CatalogChange` is a change ready to apply: an ``add`` carries its item, vector,
colour and thumbnail (computed once, when it was accepted), so every replica that replays the
log applies exactly the same bytes.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from stygig.catalog.loaders import MAX_VALUE, RowError, item_from_row
from stygig.catalog.schema import (
    MAX_ID,
    MAX_ITEM_ATTRIBUTES,
    SURROGATE,
    Item,
    id_problem,
    name_problem,
    text_problem,
)
from stygig.catalog.taxonomy import Taxonomy
from stygig.errors import InputError, InvalidImageError, InvalidOptionsError
from stygig.recommendation import check_json_values
from stygig.unique_keys import DuplicateKeyError, unique_object

__all__ = [
    "JSON_VALUES_PER_CHANGE",
    "MAX_CHANGES",
    "CatalogChange",
    "ChangeRequest",
    "change_from_record",
    "json_line",
    "merge_update",
    "parse_change",
    "parse_changes_jsonl",
    "validate_row",
]

Op = Literal["add", "remove", "update"]
OPS = ("add", "remove", "update")
#: Changes in one request (one log record).
MAX_CHANGES = 1_000
# JSON values one change may hold (its row's fields, attributes, lists): what bounds the
# parse of a request's changes (stygig.recommendation.check_json_values).
JSON_VALUES_PER_CHANGE = 100
MAX_FIELDS = 64
#: Numbers in changes: finite, within filters' own range.
MAX_NUMBER = 1e15
#: Fields an update may set (everything else is an attribute); ``id`` and ``image`` are not:
#: an item's photo changes by adding it again.
ITEM_SETTABLE = (
    "name",
    "price",
    "brand",
    "gender",
    "usage",
    "season",
    "category",
    "available",
    "stock",
)
_ROW_FIELDS = ("id", "image", "category", "gender", "usage", "season", "name", "price", "brand")
#: An item's own fields: never an attribute's name.
ITEM_FIELDS = (*_ROW_FIELDS, "available", "stock", "attributes")
_PLACEHOLDER_IMAGE = "/photo"

#: What a client is told for each reason a row is refused (the detail quotes the row).
_REASONS = {
    "missing_field": "a required field (id, category) is empty",
    "malformed_row": "the row cannot be read",
    "bad_value": "a value has the wrong type (price: a number >= 0; available: true/false; "
    "stock: a whole number >= 0)",
    "unknown_category": "the category is not in the taxonomy",
    "missing_image": "the photo's location is not supported",
}


@dataclass(frozen=True)
class ChangeRequest:
    """One change as a client asked it, checked for shape (photos not yet decoded)."""

    op: Op
    id: str
    row: dict[str, Any] = field(default_factory=dict)  # add: the item's fields
    photo: bytes | None = None  # add: the photo's bytes
    location: str | None = None  # add: where the photo is (an allowed location)
    fields: dict[str, Any] = field(default_factory=dict)  # update: what to set


@dataclass(frozen=True)
class CatalogChange:
    """One change ready to apply (and to log)."""

    op: Op
    id: str
    item: Item | None = None  # add
    vector: np.ndarray | None = None  # add: the embedding, in the artifact's space
    color: dict[str, Any] | None = None  # add: the photo's colour summary
    thumbnail: bytes | None = None  # add: the shop's JPEG
    fields: dict[str, Any] = field(default_factory=dict)  # update
    # update: its text is taken as written; False for a record logged before 2026-12-03,
    # when "NA", "None", "null" ... meant no value, as in a catalogue file's cells
    literal: bool = True

    def to_record(self) -> dict[str, Any]:
        """The change as the log stores it (JSON; the vector's exact float32 bytes)."""
        if self.op == "remove":
            return {"op": "remove", "id": self.id}
        if self.op == "update":
            return {"op": "update", "id": self.id, "set": self.fields, "literal": self.literal}
        assert self.item is not None and self.vector is not None
        out: dict[str, Any] = {
            "op": "add",
            "id": self.id,
            "item": self.item.to_dict(),
            "color": self.color or {},
            "vector": base64.b64encode(np.asarray(self.vector, "<f4").tobytes()).decode(),
        }
        if self.thumbnail:
            out["thumbnail"] = base64.b64encode(self.thumbnail).decode()
        return out


#: The keys of a change an error may name (a client's other keys are never repeated back).
_CHANGE_KEYS = frozenset({"op", "id", "item", "set", "image", "image_b64", "changes"})


def change_from_record(record: Mapping[str, Any]) -> CatalogChange:
    """Inverse of :meth:`CatalogChange.to_record` (a log written by this module). A change
    holding text no answer can encode (a lone surrogate, which logs written before
    2026-12-02 could hold) is ``ValueError``: its record is skipped on replay; so is a change
    of another shape than this module writes (a log edited by hand: review, session 42, a
    change ``1`` was an ``AttributeError`` that stopped every server sharing the log)."""
    if not isinstance(record, Mapping):
        raise ValueError("a change in the log is not an object")
    for key, kind in (("item", Mapping), ("set", Mapping), ("color", Mapping), ("id", str)):
        if record.get(key) is not None and not isinstance(record[key], kind):
            raise ValueError(f"a change's {key} in the log is not of its type")
    text = json.dumps([record.get(k) for k in ("id", "item", "set")], ensure_ascii=False)
    if SURROGATE.search(text):
        raise ValueError("a change in the log holds a lone surrogate")
    op = record["op"]
    if op == "add":
        vector = np.frombuffer(base64.b64decode(record["vector"]), "<f4").astype(np.float32)
        thumb = record.get("thumbnail")
        return CatalogChange(
            "add",
            str(record["id"]),
            item=Item.from_dict(record["item"]),
            vector=vector,
            color=dict(record.get("color") or {}),
            thumbnail=base64.b64decode(thumb) if thumb else None,
        )
    if op == "update":
        return CatalogChange(
            "update",
            str(record["id"]),
            fields=dict(record.get("set") or {}),
            literal=record.get("literal") is True,
        )
    if op == "remove":
        return CatalogChange("remove", str(record["id"]))
    raise ValueError("unknown change operation in the log")


def _text_id(value: Any, where: str, *, new: bool = False) -> str:
    """The id a change names: a new item's follows the id rule (:func:`id_problem`); an
    existing item's is only looked up, so an item built before a rule changed can still be
    updated and removed."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID or text_problem(value):
        raise InvalidOptionsError(f"{where}: 'id' must be a string of 1 to {MAX_ID} characters")
    problem = id_problem(value) if new else None
    if problem is not None:
        raise InvalidOptionsError(f"{where}: 'id': {problem}")
    return value.strip()


def _check_values(data: Mapping[str, Any], where: str, *, attributes: bool = False) -> None:
    """Field names and values of a row or an update (``attributes``: of its ``attributes``
    object, whose names may not be an item's own fields: an attribute never stands in for
    ``id``, ``category`` or ``price``)."""
    if len(data) > MAX_FIELDS:
        raise InvalidOptionsError(f"{where}: at most {MAX_FIELDS} fields")
    for key, value in data.items():
        if not isinstance(key, str) or not 0 < len(key) <= MAX_ID or text_problem(key):
            raise InvalidOptionsError(
                f"{where}: field names are 1 to {MAX_ID} characters of text "
                "(no control characters or lone UTF-16 surrogates)"
            )
        problem = name_problem(key)
        if problem is not None:
            raise InvalidOptionsError(f"{where}: {problem}")
        if unicodedata.normalize("NFC", key) != key:
            # "é" as one character and as "e" + an accent were two attributes of one item, as
            # ids are not (review, session 53).
            raise InvalidOptionsError(
                f"{where}: field names are written composed (Unicode NFC: an accented letter "
                "as one character), so two names that print alike are never two fields"
            )
        # "ID", "Category" too, inside attributes and at the top level, where a name that is
        # no item field becomes an attribute (review, s53, and its review: only the first
        # was checked).
        if key.casefold() in ITEM_FIELDS and (attributes or key not in ITEM_FIELDS):
            raise InvalidOptionsError(
                f"{where}: an attribute may not be named as an item field "
                f"({', '.join(ITEM_FIELDS)})"
            )
        if key == "attributes" and not attributes:
            if value is not None and not isinstance(value, dict):
                raise InvalidOptionsError(f"{where}: 'attributes' must be an object")
            _check_values(value or {}, where, attributes=True)
            # A name at both levels: which value won was the keys' order (review, session 49).
            twice = sorted(set(value or {}) & set(data))
            if twice:
                raise InvalidOptionsError(
                    f"{where}: the attribute '{twice[0]}' is given twice, as a field and in "
                    "'attributes'; give it once",
                    code="field_given_twice",
                )
            continue
        if isinstance(value, dict | list):
            raise InvalidOptionsError(f"{where}: field values are strings, numbers or booleans")
        if isinstance(value, str) and (len(value) > MAX_VALUE or text_problem(value)):
            raise InvalidOptionsError(
                f"{where}: a field value is text of at most {MAX_VALUE} characters "
                "(no control characters or lone UTF-16 surrogates)"
            )
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if number and not -MAX_NUMBER < value < MAX_NUMBER:  # NaN compares false: refused
            raise InvalidOptionsError(
                f"{where}: a number must be finite and within +-{MAX_NUMBER:.0e}",
                code="bad_value",
            )


def parse_change(data: Any, where: str = "change 1") -> ChangeRequest:
    """One change object, checked for shape (:class:`InvalidOptionsError`, 422, if not)."""
    if not isinstance(data, dict):
        raise InvalidOptionsError(f"{where}: a change must be a JSON object")
    op = data.get("op")
    if op not in OPS:
        raise InvalidOptionsError(f"{where}: 'op' must be one of {', '.join(OPS)}")
    extra = set(data) - {"op", "id", "item", "image_b64", "image", "set"}
    if extra:
        raise InvalidOptionsError(
            f"{where}: {len(extra)} unknown key(s); known: op, id, item, image_b64, image, set"
        )
    if op == "remove":
        return ChangeRequest("remove", _text_id(data.get("id"), where))
    if op == "update":
        fields = data.get("set")
        if not isinstance(fields, dict) or not fields:
            raise InvalidOptionsError(f"{where}: an update needs a non-empty 'set' object")
        _check_values(fields, where)
        bad = {"id", "image"} & set(fields)
        if bad:
            raise InvalidOptionsError(
                f"{where}: an update cannot change 'id' or 'image' (add the item again)"
            )
        return ChangeRequest("update", _text_id(data.get("id"), where), fields=dict(fields))
    row = data.get("item")
    if not isinstance(row, dict):
        raise InvalidOptionsError(f"{where}: an add needs an 'item' object (its catalogue row)")
    _check_values(row, where)
    item_id = _text_id(row.get("id", data.get("id")), where, new=True)
    if "id" in data and data["id"] != row.get("id", data["id"]):
        raise InvalidOptionsError(f"{where}: 'id' and 'item.id' differ")
    if "image" in data and "image" in row and data["image"] != row["image"]:
        raise InvalidOptionsError(f"{where}: 'image' and 'item.image' differ")
    location = data.get("image", row.get("image"))
    if "image_b64" in data and location is not None:
        # One photo, said once: the location was dropped without a word (review, session 45),
        # as the async API refuses a body that names a location too.
        raise InputError(
            f"{where}: send the photo once: 'image_b64' or an 'image' location, not both",
            code="ambiguous_input",
        )
    photo = None
    if "image_b64" in data:
        value = data["image_b64"]
        if not isinstance(value, str):
            raise InvalidOptionsError(f"{where}: 'image_b64' must be a base64 string")
        if value.startswith("data:") and "," in value:
            value = value.split(",", 1)[1]
        try:
            photo = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidImageError(
                f"{where}: 'image_b64' is not valid base64", code="invalid_base64"
            ) from None
        location = None
    elif not isinstance(location, str) or not location:
        raise InvalidOptionsError(f"{where}: an add needs 'image_b64' or an 'image' location")
    return ChangeRequest("add", item_id, row={**row, "id": item_id}, photo=photo, location=location)


def parse_changes_jsonl(body: bytes, *, max_changes: int = MAX_CHANGES) -> list[ChangeRequest]:
    """A JSON Lines body of changes (blank lines skipped), each checked; at most
    ``max_changes``."""
    check_json_values(body, what="the changes", limit=max_changes * JSON_VALUES_PER_CHANGE)
    if body.count(b"\n") > 2 * max_changes + 1:  # before millions of blank lines are split
        raise InvalidOptionsError(
            f"at most {max_changes} changes per request, and as many blank lines"
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError("the changes are not UTF-8 text", code="malformed_json") from None
    out: list[ChangeRequest] = []
    # Lines end at "\n" alone (JSON Lines): U+2028 or U+0085 inside a string is text.
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        if len(out) >= max_changes:
            raise InvalidOptionsError(f"at most {max_changes} changes per request")
        try:
            data = json_line(line, number)
        except DuplicateKeyError as e:  # never "the last one wins" (review, session 42)
            raise DuplicateKeyError(e.key, f"line {number}", named=_CHANGE_KEYS) from None
        out.append(parse_change(data, f"line {number}"))
    if not out:
        raise InvalidOptionsError("no changes: send one JSON object per line")
    return out


def json_line(line: str, number: int) -> Any:
    """Line ``number`` of a changes file read as JSON (a key given twice is a
    :class:`DuplicateKeyError`); an :class:`InputError` that says what is wrong with it, never
    quoting it (audit, session 47: a file of CR line ends, or a 5,000-digit number, was "not
    a JSON object")."""
    try:
        return json.loads(line, object_pairs_hook=unique_object)
    except json.JSONDecodeError as e:
        why = "not a JSON object"
        if e.msg == "Extra data":
            why = "more than one JSON value" + (
                " (JSON Lines ends each line with \\n, not \\r)" if "\r" in line else ""
            )
        raise InputError(f"line {number}: {why}", code="malformed_json") from None
    except RecursionError:
        raise InputError(f"line {number}: nested too deeply", code="malformed_json") from None
    except ValueError:  # an integer over Python's 4,300-digit conversion limit
        raise InputError(
            f"line {number}: a number too long to read", code="malformed_json"
        ) from None


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def validate_row(
    row: Mapping[str, Any],
    taxonomy: Taxonomy,
    where: str,
    *,
    bounded: bool = True,
    missing: frozenset[str] = frozenset(),
) -> Item:
    """An added item's row as a canonical :class:`Item` (its photo's location kept as given),
    or :class:`InvalidOptionsError` (422) with the reason (``unknown_category``, ...).

    ``missing``: text that means "no value" beside ``null`` and blanks (none: JSON says so
    with ``null``, and "None" or "NA" is a brand or a name as written; review, session 45:
    they were cleared, as a catalogue file's cells are)."""
    image = row.get("image")
    fields = {str(k): _as_text(v) for k, v in row.items() if k != "attributes"}
    for key, value in (row.get("attributes") or {}).items():
        fields[str(key)] = _as_text(value)
    fields["image"] = _PLACEHOLDER_IMAGE
    try:
        item = item_from_row(fields, taxonomy, missing=missing)
    except RowError as e:
        raise InvalidOptionsError(
            f"{where}: {_REASONS.get(e.reason, 'the row is invalid')}", code=e.reason
        ) from None
    if bounded and len(item.attributes) > MAX_ITEM_ATTRIBUTES:  # top level and nested together
        raise InvalidOptionsError(
            f"{where}: an item holds at most {MAX_ITEM_ATTRIBUTES} attributes",
            code="too_many_attributes",
        )
    return dataclasses.replace(item, image=image if isinstance(image, str) else "")


def merge_update(
    old: Item,
    fields: Mapping[str, Any],
    taxonomy: Taxonomy,
    where: str,
    *,
    bounded: bool = True,
    missing: frozenset[str] = frozenset(),
) -> Item:
    """``old`` with ``fields`` set (``None`` clears a field or an attribute), validated as a
    row (``missing``: as :func:`validate_row`'s); 422 with the reason when the result is not
    a valid item."""
    row: dict[str, Any] = {k: v for k, v in old.to_dict().items() if k in _ROW_FIELDS}
    row["available"] = old.available
    row["stock"] = old.stock
    attributes: dict[str, Any] = dict(old.attributes)
    for key, value in fields.items():
        if key == "attributes":
            for name, v in (value or {}).items():
                attributes[name] = v
        elif key in ITEM_SETTABLE:
            row[key] = value
        else:
            attributes[key] = value
    row["attributes"] = {k: v for k, v in attributes.items() if v is not None}
    if bounded and len(row["attributes"]) > max(MAX_ITEM_ATTRIBUTES, len(old.attributes)):
        raise InvalidOptionsError(
            f"{where}: an item holds at most {MAX_ITEM_ATTRIBUTES} attributes",
            code="too_many_attributes",
        )
    # The id is not the update's to change, nor to judge: an item built before a rule of ids
    # changed (NFC, session 40) is still updated (review, session 40: a 422 "wrong type",
    # and its logged updates skipped at replay). The row is validated under a stand-in id.
    row["id"] = _STAND_IN_ID
    new = validate_row(row, taxonomy, where, bounded=False, missing=missing)  # bound: above
    return dataclasses.replace(new, id=old.id, image=old.image)


_STAND_IN_ID = "item"

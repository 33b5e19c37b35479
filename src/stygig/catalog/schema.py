"""The canonical catalogue item and the record of a rejected row."""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CONTROL",
    "MAX_ID",
    "REJECT_REASONS",
    "SURROGATE",
    "Item",
    "Reject",
    "count_by_reason",
    "id_problem",
    "name_problem",
    "shown",
    "text_problem",
]

#: Why a catalogue row was kept out of an artifact; every rejected row has exactly one.
REJECT_REASONS = (
    "missing_field",  # an empty required field (id, image, category)
    "malformed_row",  # a row that cannot be parsed (wrong number of columns, bad JSON)
    "bad_value",  # a value of the wrong type (e.g. a price that is not a number)
    "duplicate_id",  # an id seen on an earlier row (the first one wins)
    "unknown_category",  # a native category the taxonomy does not map
    "missing_image",  # the image file does not exist
    "corrupt_image",  # the image exists but cannot be decoded (corrupt, truncated, too large)
)


#: The longest item id: a path segment of ``/v1/items/{id}``, a log field, a metric-free key.
MAX_ID = 200
#: The most attributes an item holds: a catalogue row with more is rejected, and an update
#: may leave an item with no more (more only if it had more).
MAX_ITEM_ATTRIBUTES = 64
# Characters that draw nothing, so that two ids look alike: Unicode's default-ignorable
# code points (soft hyphen, direction marks, bidirectional overrides and isolates, zero-width
# space, word joiner and invisible operators, variation selectors, Hangul fillers, BOM, tag
# characters, ...) and the braille blank; but the zero-width non-joiner and joiner (U+200C,
# U+200D), which Persian and Indic spelling need. (Review, session 45: "sku-0014" + U+2061
# was taken as a second item printed as "sku-0014".)
_INVISIBLE_CHARS = (
    "\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b\u200e\u200f"
    "\u202a-\u202e\u2060-\u206f\u2800\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8"
    "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e0fff"
)
_HIDDEN = re.compile(f"[{_INVISIBLE_CHARS}]")
# ... and, in an id, the path separators.
_BAD_ID_CHARS = re.compile(f"[/\\\\{_INVISIBLE_CHARS}]")
# Control characters (NUL, line breaks, ESC, BEL: terminal escapes when an id is printed),
# lone surrogates (no UTF-8 can carry them), line and paragraph separators.
_INVISIBLE = frozenset({"Cc", "Cs", "Zl", "Zp"})
#: A lone UTF-16 surrogate: what a JSON ``\udXXX`` escape can smuggle into a string, and
#: what no answer can then encode.
SURROGATE = re.compile("[\ud800-\udfff]")


def name_problem(value: str) -> str | None:
    """Why ``value`` cannot be a field's (an attribute's) name, which every client is shown
    (``None``: it can): no invisible characters (:data:`_HIDDEN`: a right-to-left override in
    a name reversed the text of the messages and of ``/v1/config`` that list it), no control
    characters, line separators or lone surrogates."""
    if _HIDDEN.search(value) or any(unicodedata.category(c) in _INVISIBLE for c in value):
        return (
            "a field name may not hold control or invisible characters (bidirectional "
            "overrides, zero-width spaces), line separators or lone surrogates"
        )
    return None


def id_problem(value: str) -> str | None:
    """Why ``value`` cannot be an item id (``None``: it can): one rule for catalogues built
    and items added to a living catalogue."""
    if not value.strip() or len(value) > MAX_ID:
        return f"an id is 1 to {MAX_ID} characters"
    if value.strip() in (".", ".."):  # a path segment that names another path
        return "an id may not be '.' or '..'"
    if value != value.strip():
        # "sku-1\u00a0" was stripped and replaced item "sku-1" (review, session 45)
        return "an id has no leading or trailing whitespace"
    if _BAD_ID_CHARS.search(value) or any(
        unicodedata.category(c) in _INVISIBLE or (c != " " and unicodedata.category(c) == "Zs")
        for c in value
    ):
        return (
            "an id may not hold '/', '\\', control characters, invisible characters "
            "(bidirectional overrides, direction marks, zero-width spaces, soft hyphens), "
            "spaces other than ' ', line separators or lone surrogates"
        )
    if not unicodedata.is_normalized("NFC", value):
        # "café" composed and decomposed print alike: two such ids were two items (review,
        # session 40). One form, so an id that looks the same is the same.
        return "an id is in Unicode normal form C (composed: 'é', not 'e' + U+0301)"
    return None


#: Control characters catalogue text may not hold: C0 but tab, line ends, vertical tab and form
#: feed (whitespace: text pasted from a word processor holds them), DEL, C1 but NEL (U+0085,
#: a line end of its own). An escape sequence in an item's name retitled, cleared or
#: wrote the clipboard of the terminal of an operator who printed an answer (review, session
#: 40); NUL ends a C string.
CONTROL = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f]")


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be catalogue text (``None``: it can): a lone surrogate, which
    no answer could encode, or a control character (:data:`CONTROL`)."""
    if SURROGATE.search(value):
        return "text holds a lone UTF-16 surrogate (not a character)"
    if CONTROL.search(value):
        return "text holds a control character (an escape sequence, NUL)"
    return None


def shown(text: str) -> str:
    """``text`` as a terminal shows it, never as a command: control characters and the marks
    that reorder text on screen (bidi overrides and isolates, direction marks, line and
    paragraph separators) written as ``\\uXXXX`` (for text read before :data:`CONTROL`
    was refused, and a rejected row's own text)."""
    return _UNSEEN.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


_UNSEEN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u2028-\u202e\u2066-\u2069]")


@dataclass(frozen=True)
class Item:
    """One catalogue product in canonical form."""

    id: str
    image: str
    category: str
    gender: str | None = None
    usage: str | None = None
    season: str | None = None
    name: str | None = None
    price: float | None = None
    brand: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    available: bool = True  # False: sold out or withdrawn from sale; never recommended
    stock: int | None = None  # units in stock, when the shop says (0: not available)

    @property
    def in_stock(self) -> bool:
        """Whether the shop can sell it now: available, and stock (when known) above 0."""
        return self.available and (self.stock is None or self.stock > 0)

    def raw(self) -> dict[str, str]:
        """A flat string view of the item, as the rejects file records a row."""
        return {
            k: "" if v is None else str(v) for k, v in self.to_dict().items() if k != "attributes"
        }

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (attributes nested; stock fields only when not the defaults,
        so artifacts built before they existed read and write unchanged)."""
        out = self._fields()
        if not self.available:
            out["available"] = False
        if self.stock is not None:
            out["stock"] = self.stock
        return out

    def _fields(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "image": self.image,
            "category": self.category,
            "gender": self.gender,
            "usage": self.usage,
            "season": self.season,
            "name": self.name,
            "price": self.price,
            "brand": self.brand,
            "attributes": dict(self.attributes),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Item:
        """Inverse of :meth:`to_dict`; a field of another type is a :class:`ValueError` naming
        it, never taken as it is (review, session 51: a list as a gender or ``"available":
        "false"`` loaded, then failed or misled every request naming the item). ValueError
        alone: a change-log record holding such an item is skipped on replay like any record
        that no longer reads (:func:`stygig.catalog.changes.change_from_record`)."""
        if not isinstance(data, dict):
            raise ValueError("an item is not a JSON object")

        def text(name: str, required: bool = False) -> str | None:
            value = data.get(name)
            if value is None and not required:
                return None
            if not isinstance(value, str):
                raise ValueError(f"item field {name!r} is not text")
            return value

        price, stock = data.get("price"), data.get("stock")
        if price is not None and (
            isinstance(price, bool)
            or not isinstance(price, int | float)
            or not math.isfinite(price)
            or price < 0
        ):
            raise ValueError("item field 'price' is not a non-negative number")
        if stock is not None and (
            isinstance(stock, bool) or not isinstance(stock, int) or stock < 0
        ):
            raise ValueError("item field 'stock' is not a whole number of 0 or more")
        attributes = data.get("attributes") or {}
        if not isinstance(attributes, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in attributes.items()
        ):
            raise ValueError("item field 'attributes' is not a mapping of text to text")
        available = data.get("available", True)
        if not isinstance(available, bool):
            raise ValueError("item field 'available' is not true or false")
        return cls(
            id=str(text("id", True)),
            image=str(text("image", True)),
            category=str(text("category", True)),
            gender=text("gender"),
            usage=text("usage"),
            season=text("season"),
            name=text("name"),
            price=price,
            brand=text("brand"),
            attributes=dict(attributes),
            available=available,
            stock=stock,
        )


@dataclass(frozen=True)
class Reject:
    """A catalogue row kept out of the artifact, with the reason."""

    row: int  # 1-based data row number in the source file (header not counted)
    id: str | None
    reason: str
    detail: str
    raw: dict[str, str] = field(default_factory=dict)


def count_by_reason(rejects: Iterable[Reject]) -> dict[str, int]:
    """Number of ``rejects`` per reason."""
    counts: dict[str, int] = {}
    for r in rejects:
        counts[r.reason] = counts.get(r.reason, 0) + 1
    return counts

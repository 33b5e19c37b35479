"""Read a retailer's catalogue into canonical :class:`Item` rows, with every bad row reported.

Three layouts are understood:

``generic`` (CSV or JSONL; the format documented in ``docs/catalog-format.md``)
    columns ``id, image, category`` required; ``gender, usage, season, name, price, brand``
    optional; any other column is kept in ``Item.attributes``. ``category`` is a canonical
    StyGig category or an alias listed under ``sources.generic`` in the taxonomy. ``image`` is a
    path relative to the images folder (default: the catalogue file's folder), an absolute path
    or a ``file://`` URI.
``kaggle``
    the *Fashion Product Images* ``styles.csv``; images are ``<images>/<id>.jpg`` (default
    ``<csv folder>/images``); the category comes from ``articleType``, else ``subCategory``.
``mango``
    MANGO's ``product_data.csv``; images are named by ``des_filename`` (looked up by file name
    under ``<images>`` and ``<images>/images``); the category comes from ``des_product_type``.

A bad row never stops the read: it becomes a :class:`Reject` with one reason from
:data:`REJECT_REASONS`. Image *decoding* is checked later by the build, which adds
``corrupt_image`` rejects.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import math
import posixpath
import re
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import unquote, urlparse

from tqdm import tqdm

from stygig import storage
from stygig.catalog.schema import (
    CONTROL,
    MAX_ID,
    MAX_ITEM_ATTRIBUTES,
    SURROGATE,
    Item,
    Reject,
    count_by_reason,
    id_problem,
)
from stygig.catalog.taxonomy import Taxonomy
from stygig.errors import CatalogError
from stygig.storage import is_remote
from stygig.unique_keys import DuplicateKeyError, key_name, unique_object

__all__ = [
    "LAYOUTS",
    "MISSING_WORDS",
    "STOCK_FIELDS",
    "CatalogReadResult",
    "RowError",
    "detect_layout",
    "item_from_row",
    "read_catalog",
]

LAYOUTS = ("generic", "kaggle", "mango")

_GENERIC_FIELDS = ("id", "image", "category", "gender", "usage", "season", "name", "price", "brand")
#: First-class stock columns of the generic layout (not kept as free attributes).
STOCK_FIELDS = ("available", "stock")
_TRUE = ("1", "true", "yes", "y", "on", "in_stock", "available")
_FALSE = ("0", "false", "no", "n", "off", "sold_out", "unavailable")

_GENDER_WORDS = {
    "men": "men",
    "man": "men",
    "male": "men",
    "boys": "men",
    "boy": "men",
    "women": "women",
    "woman": "women",
    "female": "women",
    "girls": "women",
    "girl": "women",
    "unisex": "unisex",
}


@dataclass
class CatalogReadResult:
    """Items that passed validation and rows that did not."""

    items: list[Item] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    layout: str = "generic"
    rows: dict[str, int] = field(default_factory=dict)  # item id -> 1-based source row

    def reject_counts(self) -> dict[str, int]:
        """Number of rejected rows per reason."""
        return count_by_reason(self.rejects)


class RowError(Exception):
    """A catalogue row refused: ``reason`` (one of :data:`REJECT_REASONS`) and ``detail``
    (which may quote the row: for the operator's rejects file, not for a client)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


#: What a catalogue file's cell means by "no value" besides an empty cell (pandas' and
#: spreadsheets' words). A JSON change says so with ``null``: its text is taken as written.
MISSING_WORDS = frozenset({"NA", "N/A", "NAN", "NULL", "NONE"})


def _clean(value: object, missing: frozenset[str] = MISSING_WORDS) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text if text and text.upper() not in missing else None


#: The longest gender or usage a row may have: what a request's ``gender`` option can name
#: (a longer one could never be asked for, only carried in every answer).
MAX_LABEL = 200
#: The largest price a row may have (JSON changes bound their numbers alike; a price sent as
#: text is bounded here, after it is read).
MAX_PRICE = 1e15


def _label(value: str | None, name: str) -> str | None:
    if value is not None and len(value) > MAX_LABEL:
        raise RowError("bad_value", f"{name} is longer than {MAX_LABEL} characters")
    return value


def _gender(value: str | None) -> str | None:
    if value is None:
        return None
    return _label(_GENDER_WORDS.get(value.lower(), value.lower()), "gender")


#: A price as catalogues write it: a plain decimal (an exponent allowed), or with commas
#: grouping thousands before a decimal point ("1,234.56"). Anything else is refused, not
#: guessed: "1.234,56" (a European total) was read as 1.23456, a thousand times too low, and
#: "1_000" as 1000 (Python's float reads both; review, session 53).
_PLAIN_PRICE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_GROUPED_PRICE = re.compile(r"\d{1,3}(?:,\d{3})+\.\d+")  # "1,234" alone: 1.234 in Europe


def _price(value: str | None) -> float | None:
    if value is None:
        return None
    text = value.strip()
    if _GROUPED_PRICE.fullmatch(text):
        text = text.replace(",", "")
    elif not _PLAIN_PRICE.fullmatch(text):
        raise RowError(
            "bad_value",
            f"price {value[:40]!r} is not a number (write 1234.56, or 1,234.56 with commas "
            "grouping thousands)",
        )
    price = float(text) + 0.0  # "-0" is 0
    if not math.isfinite(price) or price < 0:  # inf is no price, and no JSON number either
        raise RowError("bad_value", f"price {value!r} must be a non-negative number")
    if price >= MAX_PRICE:
        raise RowError("bad_value", f"price {value[:40]!r} must be below {MAX_PRICE:.0e}")
    return price


def _available(value: str | None) -> bool:
    if value is None:
        return True
    word = value.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise RowError("bad_value", f"available {value!r} is not true or false")


def _stock(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError as e:
        raise RowError("bad_value", f"stock {value!r} is not a number") from e
    if not math.isfinite(number) or number < 0 or number != int(number) or number > 1e12:
        raise RowError("bad_value", f"stock {value!r} must be a whole number >= 0")
    return int(number)


def _required(
    row: dict[str, str | None], name: str, missing: frozenset[str] = MISSING_WORDS
) -> str:
    value = _clean(row.get(name), missing)
    if value is None:
        raise RowError("missing_field", f"required field '{name}' is empty")
    return value


#: The longest text a catalogue field holds (a name, a brand, an attribute, a location): the
#: same bound as a living catalogue's changes.
MAX_VALUE = 2_000


def _item_id(row: dict[str, str | None], name: str, missing: frozenset[str] = MISSING_WORDS) -> str:
    """The row's id, by the rule every catalogue and living-catalogue id follows."""
    value = _required(row, name, missing)
    problem = id_problem(value)
    if problem is not None:
        raise RowError("bad_value", problem)
    return value


def _raw(row: Mapping[str, str | None], keep: bool = True) -> dict[str, str]:
    """A rejected row as written, for rejects.csv (only rejects need it): at most
    :data:`RAW_CHARS` characters in all (each value cut at :data:`MAX_VALUE`), and none past
    the first :data:`RAW_REJECTS` rejects of a read (``keep`` False), so a feed of a million
    broken rows does not hold a million rows' text (review, session 36: 988 MB for a 46 MB
    file)."""
    out: dict[str, str] = {}
    room = RAW_CHARS if keep else 0
    for k, v in row.items():
        if room <= 0:
            break
        text = ("" if v is None else v)[: min(MAX_VALUE, room)]
        out[k[:MAX_VALUE]] = text
        room -= len(text) + len(k)
    return out


#: What a reject keeps of its row for rejects.csv: this many characters, for this many rejects.
RAW_CHARS = 8_000
RAW_REJECTS = 10_000
#: The longest line of a catalogue file read (CSV or JSON Lines); a longer one is a rejected
#: row, never held whole (one 1.5 GB line was a MemoryError traceback).
MAX_LINE_CHARS = 1 << 20
#: What :func:`_lines` yields in place of a longer line (a private-use character: no catalogue
#: text is made of it alone).
_OVERLONG = "\ue000\n"
_OVERLONG_REASON = f"the line is over {MAX_LINE_CHARS:,} characters"


def _lines(handle: TextIO) -> Iterator[str]:
    """``handle``'s lines, each at most :data:`MAX_LINE_CHARS`; a longer line is skipped,
    read in pieces, and :data:`_OVERLONG` yielded in its place. A line ends as ``handle``'s
    ``newline`` says: a CSV is opened with ``newline=""``, where a bare CR (classic Mac, some
    spreadsheet exports) ends one too, so the skip stops there (it ran to the end of the
    file, dropping every later row unreported: audit, session 46)."""
    while line := handle.readline(MAX_LINE_CHARS + 1):
        if len(line) <= MAX_LINE_CHARS or line.endswith(_LINE_ENDS):
            yield line
            continue
        while (more := handle.readline(MAX_LINE_CHARS)) and not more.endswith(_LINE_ENDS):
            pass
        yield _OVERLONG


_LINE_ENDS = ("\n", "\r")


def _resolve_image(ref: str, images_dir: Path) -> str:
    if ref.startswith("file://"):
        parsed = urlparse(ref)
        if parsed.netloc.lower() not in ("", "localhost"):  # file://otherhost/x read /x
            raise RowError("missing_image", "a file:// URI of another host is not read")
        return unquote(parsed.path)
    if is_remote(ref):
        return ref  # fetched by the build through stygig.storage
    if "://" in ref:
        raise RowError("missing_image", f"image URI scheme of {ref!r} is not supported")
    path = Path(ref)
    return str(path if path.is_absolute() else images_dir / path)


def _generic(
    row: dict[str, str | None],
    taxonomy: Taxonomy,
    images_dir: Path,
    missing: frozenset[str] = MISSING_WORDS,
) -> Item:
    item_id = _item_id(row, "id", missing)
    image = _resolve_image(_required(row, "image", missing), images_dir)
    native = _required(row, "category", missing)
    category = taxonomy.canonical(native)
    if category is None:
        raise RowError("unknown_category", f"category {native!r} is not in the taxonomy")
    known = (*_GENERIC_FIELDS, *STOCK_FIELDS)
    # An unnamed column (a header's trailing comma) is no attribute anyone can filter on.
    extras = {
        k: c for k, v in row.items() if k.strip() and k not in known and (c := _clean(v, missing))
    }
    return Item(
        id=item_id,
        image=image,
        category=category,
        gender=_gender(_clean(row.get("gender"), missing)),
        usage=_label(_clean(row.get("usage"), missing), "usage"),
        season=_clean(row.get("season"), missing),
        name=_clean(row.get("name"), missing),
        price=_price(_clean(row.get("price"), missing)),
        brand=_clean(row.get("brand"), missing),
        attributes={k: str(v) for k, v in extras.items()},
        available=_available(_clean(row.get("available"), missing)),
        stock=_stock(_clean(row.get("stock"), missing)),
    )


def _kaggle(row: dict[str, str | None], taxonomy: Taxonomy, images_dir: Path) -> Item:
    item_id = _item_id(row, "id")
    article = _clean(row.get("articleType"))
    sub = _clean(row.get("subCategory"))
    if article is None and sub is None:
        raise RowError("missing_field", "both 'articleType' and 'subCategory' are empty")
    category = taxonomy.map_native("kaggle", "articleType", article) or taxonomy.map_native(
        "kaggle", "subCategory", sub
    )
    if category is None:
        raise RowError(
            "unknown_category", f"articleType {article!r} / subCategory {sub!r} is not mapped"
        )
    attributes = {
        k: v
        for k in ("masterCategory", "subCategory", "articleType", "baseColour", "year")
        if (v := _clean(row.get(k)))
    }
    return Item(
        id=item_id,
        image=str(images_dir / f"{item_id}.jpg"),
        category=category,
        gender=_gender(_clean(row.get("gender"))),
        usage=_label(_clean(row.get("usage")), "usage"),
        season=_clean(row.get("season")),
        name=_clean(row.get("productDisplayName")),
        attributes=attributes,
    )


def _mango(row: dict[str, str | None], taxonomy: Taxonomy, images_dir: Path) -> Item:
    item_id = _item_id(row, "cod_modelo_color")
    file_name = Path(_required(row, "des_filename")).name
    native = _required(row, "des_product_type")
    category = taxonomy.map_native("mango", "des_product_type", native)
    if category is None:
        raise RowError("unknown_category", f"des_product_type {native!r} is not mapped")
    image = images_dir / file_name
    if not image.exists() and (images_dir / "images" / file_name).exists():
        image = images_dir / "images" / file_name
    attributes = {
        k: v
        for k, raw in row.items()
        if k not in ("cod_modelo_color", "des_filename", "des_sex") and (v := _clean(raw))
    }
    return Item(
        id=item_id,
        image=str(image),
        category=category,
        gender=_gender(_clean(row.get("des_sex"))),
        name=f"{_clean(row.get('des_color_specification_esp')) or ''} {native}".strip().title(),
        attributes=attributes,
    )


_CONVERTERS: dict[str, Callable[[dict[str, str | None], Taxonomy, Path], Item]] = {
    "generic": _generic,
    "kaggle": _kaggle,
    "mango": _mango,
}


def item_from_row(
    row: Mapping[str, object],
    taxonomy: Taxonomy,
    images_dir: Path | None = None,
    *,
    missing: frozenset[str] = MISSING_WORDS,
) -> Item:
    """One generic-layout row (``id``, ``image``, ``category``, optional fields, stock and
    free attributes) as an :class:`Item`, validated as a catalogue file's rows are.

    Raises:
        RowError: ``missing_field``, ``bad_value``, ``unknown_category`` or ``missing_image``.
    """
    clean = {str(k): None if v is None else str(v) for k, v in row.items()}
    return _generic(clean, taxonomy, images_dir or Path("/"), missing)


def detect_layout(columns: list[str]) -> str:
    """Guess the layout from a header row."""
    cols = set(columns)
    if {"articleType", "subCategory", "masterCategory"} <= cols:
        return "kaggle"
    if {"cod_modelo_color", "des_product_type"} <= cols:
        return "mango"
    return "generic"


#: Bytes that are not UTF-8 are read as these (``surrogateescape``), so that the row holding
#: them is rejected alone; a strict decoder fails a whole 8 KB chunk, rows before it included.
_NOT_UTF8 = re.compile("[\udc80-\udcff]")
_NOT_UTF8_REASON = "the row is not UTF-8 text"


def _csv_header(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as handle:
        try:
            header = [h.strip() for h in next(csv.reader(_lines(handle)))]
        except StopIteration as e:
            raise CatalogError(f"catalogue {path} is empty (no header row)") from e
        except csv.Error as e:
            raise CatalogError(f"catalogue {path} cannot be read as CSV: {e}") from e
    if any(_OVERLONG[0] in h for h in header):  # (it was "lacks required columns")
        raise CatalogError(
            f"catalogue {path}: the header line is over {MAX_LINE_CHARS:,} characters"
        )
    if any(_NOT_UTF8.search(h) for h in header):
        raise CatalogError(f"catalogue {path}: the header row is not UTF-8 text")
    if len(set(header)) != len(header):
        # The names repeated, not the whole header (review, session 41: 288,991 characters).
        twice = [h for h, count in Counter(header).items() if count > 1]
        names = ", ".join(repr(h[:100]) for h in twice[:5])
        more = f" and {len(twice) - 5:,} more" if len(twice) > 5 else ""
        raise CatalogError(f"catalogue {path} has duplicate column names: {names}{more}")
    return header


_WIDE_FIELDS = threading.Lock()


def _wide_row(reader: Any) -> list[str]:
    """``next(reader)`` with csv's field limit (one for the whole process) at the line bound
    for that row, then as it was. A quoted field of many lines may pass csv's 128 KiB (a row
    rejected for it above MAX_VALUE, as on one line); cut inside it, the reader read the rest
    of the field as rows (review, session 41: 69 phantom rejects, 2 rows lost). The lock keeps
    two readers at once from leaving it raised (review of session 41's fixes, 7): other code
    keeps csv's own limit (the outfits reader refuses a field over it)."""
    with _WIDE_FIELDS:
        limit = csv.field_size_limit(MAX_LINE_CHARS)
        try:
            return list(next(reader))
        finally:
            csv.field_size_limit(limit)


def _csv_rows(path: Path) -> tuple[list[str], Iterator[tuple[int, dict[str, str | None], str]]]:
    header = _csv_header(path)

    def rows() -> Iterator[tuple[int, dict[str, str | None], str]]:
        with path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as handle:
            reader = csv.reader(_lines(handle))
            next(reader)
            number = 0
            while True:
                start = reader.line_num
                try:
                    values, error = _wide_row(reader), None
                except StopIteration:
                    return
                except csv.Error as e:
                    values, error = [], e
                if error is not None:
                    number += 1
                    yield number, {}, f"unparseable CSV row: {error}"
                    continue
                if not values or all(not v.strip() for v in values):
                    continue
                number += 1
                if any(_OVERLONG[0] in v for v in values):  # alone, or within a quoted field
                    yield number, {}, _OVERLONG_REASON
                    continue
                if any(_NOT_UTF8.search(v) for v in values):
                    yield number, {}, _NOT_UTF8_REASON
                    continue
                swallowed = _swallowed_rows(values, header, reader.line_num - start)
                if swallowed:
                    yield (
                        number,
                        dict(zip(header, values, strict=False)),
                        f"an unclosed quote joined the next {swallowed} lines into this row "
                        "(they were not read as rows: close the quote and build again)",
                    )
                    continue
                if len(values) != len(header):
                    # A quote left open joins every row up to the next quote into this one.
                    joined = any("\n" in v for v in values)
                    hint = (
                        " (an unclosed quote may have joined the rows after it)" if joined else ""
                    )
                    yield (
                        number,
                        dict(zip(header, values, strict=False)),
                        f"row has {len(values)} columns, the header has {len(header)}{hint}",
                    )
                    continue
                yield number, dict(zip(header, values, strict=True)), ""

    return header, rows()


#: Formats a catalogue file is sometimes saved in that are neither CSV nor JSON Lines.
_NOT_CATALOGUE_SUFFIXES = frozenset(
    {".parquet", ".xlsx", ".xls", ".json", ".gz", ".zip", ".ods", ".numbers", ".feather"}
)


def _is_file(path: Path) -> bool:
    """Whether ``path`` is a regular file; a name too long, a folder not searchable or a NUL
    (a ``file://`` URI's ``%00``) is none, not an error that stops the read (review, session
    41: one such row aborted the build, with a traceback for the NUL)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _not_a_file(path: Path) -> str:
    """Why a row's photo path is no photo file: absent, or there but not a regular file (a
    folder, a pipe, a device, a link loop were all "not found": review, session 36)."""
    if "\0" in str(path):
        return "image path holds a NUL character"
    try:
        path.stat()
    except FileNotFoundError:
        return f"image file not found: {path}"
    except OSError as e:  # the path may be long: its last part only
        return f"image file cannot be read ({e.strerror or 'error'}): {path.name[:100]}"
    return f"image is not a regular file (a folder, pipe or device): {path}"


#: Lines of a text field that parse as whole rows before the field counts as swallowed rows.
SWALLOWED_ROWS_MIN = 3


def _swallowed_rows(values: list[str], header: list[str], lines: int) -> int:
    """How many lines of CSV rows a value holds (0: none): a quote left open in a field joins
    the lines after it, up to the next quote, into that field, and where it is the last field
    the row still has its columns (review, session 36: 89 rows vanished under one reject "over
    2,000 characters"). A field's line that parses as a whole row of the header's columns
    counts as one; a multi-line description is not rows, so most of its lines must be, and
    three of them (:data:`SWALLOWED_ROWS_MIN`) unless one names a photo in the ``image``
    column, which no line of a description does (review, session 53: one or two rows
    vanished into a name, with no reject)."""
    columns = len(header)
    if lines < 2 or columns < 2:
        return 0
    image = header.index("image") if "image" in header else None
    for value in values:
        if "\n" not in value:
            continue
        rest = value.splitlines()[1:]
        rows = [fields for line in rest if (fields := _row_like(line, columns)) is not None]
        photos = image is not None and any(_names_a_photo(f[image]) for f in rows)
        # Three or more: a text field's line may well hold as many commas as a row has (review,
        # session 36: "Fabric: cotton, linen, elastane" in a 4-column file was refused).
        enough = photos or len(rows) >= SWALLOWED_ROWS_MIN
        if enough and len(rows) * 2 > len(rest):
            return len(rest)
    return 0


def _row_like(line: str, columns: int) -> list[str] | None:
    """The fields of ``line`` when it parses as a row of ``columns`` fields, else None."""
    if line.count(",") < columns - 1:
        return None
    try:
        fields = next(csv.reader([line]))
    except (csv.Error, StopIteration):
        return None
    return fields if len(fields) == columns else None


def _names_a_photo(value: str) -> bool:
    """Whether a field reads as a photo's path or URI (an image file's suffix, no spaces)."""
    text = value.strip().lower()
    return " " not in text and text.endswith((".jpg", ".jpeg", ".png", ".webp"))


#: A JSON Lines row's fields StyGig reads itself: a list or an object there is no value (any
#: other field keeps one as JSON text, a free attribute).
_OWN = frozenset(_GENERIC_FIELDS)


def _json_text(value: Any) -> str | None:
    """A JSON Lines value as catalogue text: ``true``/``false`` as JSON writes them (Python's
    ``True`` before), lists and objects as JSON."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        # Whole, so a long one is refused like a long string (cut, it was broken JSON).
        return json.dumps(value)
    return str(value)


def _json_id_problem(value: Any) -> str:
    """Why a JSON Lines id is not one: ``true`` or ``12.0`` became the text "true" or "12.0"
    (audit, session 46), never what the photo file or the feed meant."""
    if isinstance(value, bool):
        return "the id is true or false: write ids as text or whole numbers"
    if isinstance(value, float):
        return f"the id {value!r} is a decimal number: write ids as text or whole numbers"
    return ""


def _jsonl_rows(path: Path) -> tuple[list[str], Iterator[tuple[int, dict[str, str | None], str]]]:
    def rows() -> Iterator[tuple[int, dict[str, str | None], str]]:
        with path.open(encoding="utf-8-sig", errors="surrogateescape") as handle:
            number = 0
            for line in _lines(handle):
                if not line.strip():
                    continue
                number += 1
                if line == _OVERLONG:
                    yield number, {}, _OVERLONG_REASON
                    continue
                if _NOT_UTF8.search(line):
                    yield number, {}, _NOT_UTF8_REASON
                    continue
                try:
                    obj = json.loads(line, object_pairs_hook=unique_object)
                except DuplicateKeyError as e:
                    yield number, {}, f"the field {key_name(e.key)} is given twice"
                    continue
                except json.JSONDecodeError as e:
                    yield number, {}, f"invalid JSON: {e.msg}"
                    continue
                except RecursionError:
                    yield number, {}, "invalid JSON: nested too deeply"
                    continue
                except ValueError:  # an integer over Python's 4,300-digit conversion limit
                    yield number, {}, "invalid JSON: a number too long to read"
                    continue
                if not isinstance(obj, dict):
                    yield number, {}, "a JSONL row must be an object"
                    continue
                if any(SURROGATE.search(f"{k}\n{v}") for k, v in obj.items()):
                    yield number, {}, "the row holds a lone UTF-16 surrogate (not text)"
                    continue
                nested = next(
                    (k for k, v in obj.items() if isinstance(v, (list, dict)) and k in _OWN),
                    None,
                )
                # (kept as Python's repr before: an id ["a"] was "['a']")
                problem = f"the field {nested[:100]!r} holds a list or an object" if nested else ""
                problem = problem or _json_id_problem(obj.get("id"))
                yield number, {str(k): _json_text(v) for k, v in obj.items()}, problem

    return list(_GENERIC_FIELDS), rows()


def read_catalog(
    path: str | Path,
    *,
    layout: str = "auto",
    images_dir: str | Path | None = None,
    taxonomy: Taxonomy | None = None,
    check_images: bool = True,
    progress: bool = False,
) -> CatalogReadResult:
    """Read and validate a catalogue file, local or in S3 (see :func:`_read_catalog_file`;
    ``progress``: a bar over the rows, which checks every photo exists: 14.5 s in silence for
    200,000 rows before, review session 53).

    An ``s3://`` catalogue is streamed to a temporary file and read there; photo names that
    are relative (or a layout's own ``<images>/<id>.jpg``) resolve beneath the catalogue's S3
    folder, or beneath ``images_dir`` when that is an ``s3://`` prefix, exactly as a local
    catalogue's resolve beneath its folder. ``s3://`` names in the image column are kept; a
    local path that does not exist is a ``missing_image`` reject, as locally. Photos in S3 are
    not checked here (that would be a request per row): one that is missing becomes a reject
    when the build reads it.
    """
    remote_images = images_dir is not None and is_remote(images_dir)
    if not is_remote(path) and not remote_images:
        if images_dir is None:  # the operator's own catalogue: its photos anywhere it names
            return _read_catalog_file(
                path, layout=layout, taxonomy=taxonomy, check_images=check_images, progress=progress
            )
        return _confined(
            _read_catalog_file(
                path,
                layout=layout,
                images_dir=images_dir,
                taxonomy=taxonomy,
                check_images=False,
                progress=progress,
            ),
            Path(images_dir),
            check_images=check_images,
        )
    with (
        storage.local_copy(path) as local,
        tempfile.TemporaryDirectory(prefix="stygig-images-") as stand_in,
    ):
        base: str | None
        if remote_images:  # read against a stand-in folder, then map it to the prefix
            base, root, local_dir = str(images_dir), Path(stand_in), Path(stand_in)
        elif images_dir is None:  # relative to the catalogue's S3 folder
            base, root, local_dir = str(path).rsplit("/", 1)[0], local.parent, None
        else:  # photos in a local (shared) folder: confined to it, as to an S3 folder (review,
            # session 41: absolute paths, file:// URIs and '..' were read anywhere on the disk)
            base, root, local_dir = None, Path(images_dir), Path(images_dir)
        read = _read_catalog_file(
            local,
            layout=layout,
            images_dir=local_dir,
            taxonomy=taxonomy,
            check_images=False,
            progress=progress,
        )
    items: list[Item] = []
    for item in read.items:
        image = Path(item.image)
        if not is_remote(item.image) and image.is_relative_to(root):
            written = image.relative_to(root).as_posix()  # as the row gave it
            relative = posixpath.normpath(written)
            if relative.startswith(".."):  # S3 keys have no '..': it would name another key
                detail = (
                    "image path leaves the catalogue's folder"
                    if base is not None
                    else "image path leaves the --images folder"
                )
                # The row's value, never the folder it was read against (a temporary one
                # for a catalogue in S3: review, session 49).
                _drop(read, item, detail, {**item.raw(), "image": written})
                continue
            if base is not None:
                item = dataclasses.replace(item, image=storage.join(base, relative))
            elif check_images and not _is_file(image):
                _drop(read, item, _not_a_file(image))
                continue
        elif is_remote(path) and not is_remote(item.image):
            # An absolute path or a file:// URI: a catalogue in S3 never names the local disk
            # of the machine that reads it, as a manifest in S3 never does (review, session
            # 40: `stygig batch` read such a file, and uploaded it through an endpoint).
            _drop(
                read,
                item,
                "a catalogue in S3 names photos beside it or by s3:// URI, never local files",
            )
            continue
        elif check_images and not is_remote(item.image) and not _is_file(image):
            _drop(read, item, f"image file not found: {item.image}")
            continue
        items.append(item)
    read.items = items
    read.rejects.sort(key=lambda r: r.row)
    return read


def _drop(
    read: CatalogReadResult, item: Item, detail: str, raw: dict[str, Any] | None = None
) -> None:
    """Move ``item``'s row from ``read``'s rows to its rejects, as a ``missing_image``
    (``raw``: the values to keep, default the item's)."""
    row = read.rows.pop(item.id)
    read.rejects.append(
        Reject(row, item.id, "missing_image", detail, item.raw() if raw is None else raw)
    )


def _confined(read: CatalogReadResult, folder: Path, *, check_images: bool) -> CatalogReadResult:
    """``read`` with every local photo inside ``folder`` (``--images``), links resolved: one
    outside it (an absolute path, ``..``, a ``file://`` URI, a link leading out) is a
    ``missing_image`` reject, decided before anything outside is looked at, so a reject never
    says whether a file there exists. A catalogue file from a supplier named ``/etc/shadow``
    and the build read it, its reason telling "not an image" from "not found" (review,
    session 53)."""
    root = folder.resolve()
    items: list[Item] = []
    for item in read.items:
        if not is_remote(item.image):
            if not Path(item.image).resolve().is_relative_to(root):
                _drop(read, item, "image path leaves the --images folder")
                continue
            if check_images and not _is_file(Path(item.image)):
                _drop(read, item, _not_a_file(Path(item.image)))
                continue
        items.append(item)
    read.items = items
    read.rejects.sort(key=lambda r: r.row)
    return read


def _read_catalog_file(
    path: str | Path,
    *,
    layout: str = "auto",
    images_dir: str | Path | None = None,
    taxonomy: Taxonomy | None = None,
    check_images: bool = True,
    progress: bool = False,
) -> CatalogReadResult:
    """Read and validate a local catalogue file.

    Args:
        path: a ``.csv`` or ``.jsonl`` file.
        layout: ``generic``, ``kaggle``, ``mango`` or ``auto`` (from the header).
        images_dir: where relative image paths are resolved (defaults per layout, see module doc).
        taxonomy: maps native categories; the packaged default when None.
        check_images: reject rows whose image file does not exist.

    Raises:
        CatalogError: the file cannot be read at all (missing, no header, unknown layout).
    """
    path = Path(path)
    if path.is_dir():
        # Two at most looked for: a folder of many files is not listed whole for a hint.
        files = (p.name for p in path.iterdir() if p.suffix.lower() in (".csv", ".jsonl"))
        inside = list(itertools.islice(files, 2))
        hint = f": pass its {inside[0]}" if len(inside) == 1 else ": pass the catalogue file in it"
        raise CatalogError(f"catalogue {path} is a folder{hint}")
    if not path.is_file():
        raise CatalogError(f"catalogue file not found: {path}")
    taxonomy = taxonomy or Taxonomy.load()
    suffix = path.suffix.lower()
    if suffix in _NOT_CATALOGUE_SUFFIXES:
        # Read as CSV, these gave "the header row is not UTF-8 text" (review, session 36).
        raise CatalogError(
            f"catalogue {path.name}: {suffix} files are not read; a catalogue is CSV "
            "(.csv, .txt, or any other name) or JSON Lines (.jsonl, .ndjson)"
        )
    is_jsonl = suffix in (".jsonl", ".ndjson")
    header, rows = _jsonl_rows(path) if is_jsonl else _csv_rows(path)
    if layout == "auto":
        layout = "generic" if is_jsonl else detect_layout(header)
    if layout not in _CONVERTERS:
        raise CatalogError(f"unknown catalogue layout {layout!r}; choose one of {LAYOUTS}")
    if layout == "generic" and not is_jsonl:
        missing = [c for c in ("id", "image", "category") if c not in header]
        if missing:
            found = ", ".join(repr(h[:40]) for h in header[:8] if h)
            found += ", ..." if len(header) > 8 else ""
            # One column named "id;image;category": another separator than the comma.
            other = next(
                (sep for sep in (";", "\t", "|") if len(header) == 1 and sep in header[0]), None
            )
            hint = (
                f" (its header is one column holding {other!r}: a catalogue is comma-separated)"
                if other
                else f" (its columns: {found or 'none named'})"
            )
            raise CatalogError(f"generic catalogue {path} lacks required columns {missing}{hint}")
    if images_dir is None:
        images_dir = path.parent / "images" if layout == "kaggle" else path.parent
    images = Path(images_dir)
    convert = _CONVERTERS[layout]

    result = CatalogReadResult(layout=layout)
    shown = tqdm(rows, desc="reading the catalogue", unit=" rows", disable=not progress)
    for number, row, problem in shown:
        keep = len(result.rejects) < RAW_REJECTS
        if problem:
            result.rejects.append(
                Reject(number, _clean(row.get("id")), "malformed_row", problem, _raw(row, keep))
            )
            continue
        try:
            if any(v is not None and len(v) > MAX_VALUE for v in row.values()):
                # Every answer and catalogue page that shows the item would carry it.
                raise RowError("bad_value", f"a field is over {MAX_VALUE:,} characters")
            if any(len(k) > MAX_ID for k in row):  # a column name: an attribute of every item
                raise RowError("bad_value", f"a column name is over {MAX_ID} characters")
            item = convert(row, taxonomy, images)  # the id's own rule first, then the text's
            if len(item.attributes) > MAX_ITEM_ATTRIBUTES:  # a living catalogue's bound too
                # (review, session 41: 100,000 per item held 14 MB of each in memory to serve)
                raise RowError(
                    "bad_value",
                    f"the row holds {len(item.attributes):,} attributes (columns besides "
                    f"StyGig's own, with a value); an item holds at most {MAX_ITEM_ATTRIBUTES}",
                )
            if any(CONTROL.search(f"{k}\n{v or ''}") for k, v in row.items()):
                raise RowError(
                    "bad_value", "a field holds a control character (an escape sequence, NUL)"
                )
            if item.id in result.rows:
                # The first row of an id is the one built, even if its photo then fails to
                # decode: say which row that is (review, session 36).
                raise RowError(
                    "duplicate_id", f"id {item.id!r} already used by row {result.rows[item.id]}"
                )
            is_local = not is_remote(item.image)
            if check_images and is_local and not _is_file(Path(item.image)):
                raise RowError("missing_image", _not_a_file(Path(item.image)))
        except RowError as e:
            row_id = _clean(row.get("id")) or _clean(row.get("cod_modelo_color"))
            result.rejects.append(Reject(number, row_id, e.reason, e.detail, _raw(row, keep)))
            continue
        result.items.append(item)
        result.rows[item.id] = number
    return result

"""A small, deterministic sample catalogue, so the demo works anywhere without downloads; and
a demo catalogue drawn from the Kaggle *Fashion Product Images* photos a user downloads.

:func:`plan_sample_catalog` decides the products (pure: a seed in, rows and drawings out) and
:func:`generate_sample_catalog` writes them in StyGig's generic catalogue layout::

    out_dir/catalog.csv       id,image,category,gender,usage,season,name,price,brand,color
    out_dir/images/*.jpg      one 224 x 224 packshot per product
    out_dir/queries/*.jpg     a few shopper photos that are *not* in the catalogue
    out_dir/README.txt

The same seed gives byte-identical files. :func:`is_drawn_sample` tells such a catalogue
from a real one (the page says so: a real photo finds only the nearest drawing).

:func:`kaggle_demo_catalog` writes the same layout from the Kaggle dataset's ``styles.csv`` and
``images/`` (its "small" download unpacks to ``myntradataset/``, the full one to
``fashion-dataset/``): a balanced draw of products (every category, the large ones capped) and
up to three real photos per familiar category held out of the catalogue as ``candidates/``,
the first of each offered in ``queries/`` until :mod:`stygig.demo_examples` picks, per category,
the first the built catalogue votes right.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from stygig import __version__
from stygig.catalog import CatalogReadResult, Item
from stygig.errors import CatalogError, InvalidOptionsError, StygigError
from stygig.sample_drawing import Garment, draw_garment

log = logging.getLogger(__name__)

__all__ = [
    "CANDIDATES_FILE",
    "CATALOG_COLUMNS",
    "COLOURS",
    "SampleItem",
    "SampleQuery",
    "find_kaggle_styles",
    "generate_sample_catalog",
    "is_drawn_sample",
    "kaggle_demo_catalog",
    "plan_sample_catalog",
    "plan_sample_queries",
]

RGB = tuple[int, int, int]

#: A Kaggle demo's held-out example photos, in order of preference per category:
#: ``category,file,example`` (``file`` in ``candidates/``; ``example``: its name in ``queries/``
#: when offered), read by :mod:`stygig.demo_examples`.
CANDIDATES_FILE = "candidates.csv"

CATALOG_COLUMNS = (
    "id",
    "image",
    "category",
    "gender",
    "usage",
    "season",
    "name",
    "price",
    "brand",
    "color",
)
"""Columns of the generic catalogue layout, in file order."""

COLOURS: dict[str, RGB] = {
    "black": (36, 36, 40),
    "white": (236, 236, 232),
    "grey": (140, 142, 146),
    "charcoal": (72, 74, 80),
    "navy": (34, 46, 86),
    "blue": (46, 92, 176),
    "light blue": (150, 188, 224),
    "red": (190, 36, 42),
    "burgundy": (112, 30, 46),
    "pink": (234, 162, 182),
    "green": (44, 128, 72),
    "olive": (112, 114, 58),
    "beige": (214, 196, 164),
    "khaki": (184, 170, 124),
    "tan": (186, 140, 92),
    "brown": (112, 72, 44),
    "yellow": (236, 198, 64),
    "orange": (230, 122, 42),
    "purple": (112, 64, 142),
}
"""The named colours products are drawn in (before a small per-item jitter)."""

# Denim is greyer than the plain colours of the same name.
_DENIM: dict[str, RGB] = {
    "navy": (40, 54, 96),
    "blue": (62, 94, 146),
    "light blue": (128, 160, 198),
    "black": (44, 44, 50),
    "grey": (122, 124, 130),
}
_CREAM: RGB = (244, 242, 236)
_STUDIO: RGB = (243, 242, 239)  # query photos: a slightly warmer, darker backdrop


@dataclass(frozen=True)
class _Kind:
    """How one category is stocked: counts, colours, patterns and the rows' vocabulary."""

    category: str
    count: int
    colours: str  # comma-separated names from COLOURS, taken in a shuffled cycle
    styles: tuple[tuple[str, tuple[str, ...]], ...]  # (noun, usages) per drawing variant
    genders: tuple[str, ...]  # cycled, so each listed gender gets items
    seasons: tuple[str, ...]  # drawn uniformly; repeats weigh
    price: tuple[float, float]
    patterns: tuple[tuple[str, float], ...] = (("solid", 1.0),)


_ALL = ("Men", "Women", "Unisex")
_MW = ("Men", "Women")
_WARM = ("Summer", "Summer", "Spring", "Fall")
_COLD = ("Fall", "Winter", "Winter", "Spring")
_ANY = ("Spring", "Summer", "Fall", "Winter")
_KINDS: tuple[_Kind, ...] = (
    _Kind(
        "top",
        12,
        "white, black, grey, navy, red, pink, green, yellow, light blue, olive, orange, purple",
        (
            ("t-shirt", ("Casual", "Casual", "Sports")),
            ("v-neck t-shirt", ("Casual",)),
            ("long-sleeve top", ("Casual",)),
        ),
        _ALL,
        _WARM,
        (12, 35),
        (("solid", 0.6), ("stripes", 0.3), ("dots", 0.1)),
    ),
    _Kind(
        "shirt",
        12,
        "white, light blue, blue, navy, pink, grey, black, olive, burgundy, beige",
        (("oxford shirt", ("Formal", "Casual")), ("short-sleeve shirt", ("Casual",))),
        _MW,
        _ANY,
        (29, 69),
        (("solid", 0.5), ("stripes", 0.25), ("checks", 0.25)),
    ),
    _Kind(
        "trousers",
        11,
        "black, navy, grey, beige, khaki, olive, brown, charcoal, white",
        (("tailored trousers", ("Formal", "Formal", "Casual")), ("chinos", ("Casual",))),
        _MW,
        _ANY,
        (39, 89),
        (("solid", 0.8), ("checks", 0.2)),
    ),
    _Kind(
        "jeans",
        11,
        "blue, blue, light blue, navy, black, grey",
        (("slim jeans", ("Casual",)), ("straight jeans", ("Casual",))),
        _ALL,
        _ANY,
        (45, 99),
    ),
    _Kind(
        "skirt",
        10,
        "black, navy, red, pink, beige, green, yellow, burgundy, white, grey",
        (
            ("a-line skirt", ("Casual",)),
            ("pleated skirt", ("Casual", "Formal")),
            ("pencil skirt", ("Formal",)),
        ),
        ("Women",),
        _WARM,
        (25, 69),
        (("solid", 0.6), ("checks", 0.15), ("dots", 0.15), ("stripes", 0.1)),
    ),
    _Kind(
        "dress",
        12,
        "red, black, navy, pink, green, yellow, light blue, white, purple, burgundy, orange, beige",
        (("slip dress", ("Formal", "Casual")), ("tea dress", ("Casual",))),
        ("Women",),
        _WARM,
        (39, 129),
        (("solid", 0.55), ("dots", 0.25), ("stripes", 0.1), ("checks", 0.1)),
    ),
    _Kind(
        "jacket",
        11,
        "navy, black, grey, olive, brown, beige, burgundy, charcoal, blue",
        (("blazer", ("Formal",)), ("bomber jacket", ("Casual",))),
        _ALL,
        _COLD,
        (79, 199),
        (("solid", 0.75), ("checks", 0.25)),
    ),
    _Kind(
        "casual-shoes",
        11,
        "brown, black, tan, burgundy, navy, beige, grey",
        (("derby shoes", ("Formal", "Casual")), ("loafers", ("Casual",))),
        _ALL,
        _ANY,
        (59, 149),
    ),
    _Kind(
        "sports-shoes",
        11,
        "white, white, black, grey, navy, red, blue, green, pink",
        (("sneakers", ("Sports", "Casual")),),
        _ALL,
        _ANY,
        (49, 139),
    ),
    _Kind(
        "handbag",
        10,
        "black, brown, tan, beige, red, burgundy, navy, pink, green, white",
        (("tote bag", ("Casual",)), ("top-handle bag", ("Formal", "Casual"))),
        ("Women", "Women", "Women", "Women", "Unisex"),
        _ANY,
        (39, 179),
    ),
    _Kind(
        "belt",
        10,
        "black, brown, tan, black, brown, burgundy",
        (("leather belt", ("Casual", "Formal")),),
        _ALL,
        _ANY,
        (19, 59),
    ),
    _Kind(
        "hat",
        10,
        "black, navy, beige, grey, red, olive, brown, white, blue, green",
        (("cap", ("Casual", "Sports")), ("fedora", ("Casual",))),
        _ALL,
        _ANY,
        (15, 49),
    ),
)
_PATTERN_WORDS = {"solid": "", "stripes": "striped ", "checks": "checked ", "dots": "polka-dot "}
_BRANDS = {
    "Casual": ("Northloom", "Hollow Pine", "Saltmarsh", "Juniper Lane"),
    "Formal": ("Maren & Co", "Atlas Row"),
    "Sports": ("Kestrel", "Stridewell"),
}


@dataclass(frozen=True)
class SampleItem:
    """One product of the sample catalogue: its CSV row and the drawing of its picture."""

    row: dict[str, str]
    garment: Garment


@dataclass(frozen=True)
class SampleQuery:
    """A shopper-style photo of a product that is *not* in the catalogue."""

    name: str
    garment: Garment


def plan_sample_catalog(seed: int = 0) -> list[SampleItem]:
    """Decide the sample products for a seed: same seed, same rows and drawings.

    Counts per category never change with the seed; colours, patterns, styles, rows' details and
    each picture's framing do.
    """
    items: list[SampleItem] = []
    for k, kind in enumerate(_KINDS):
        rng = np.random.default_rng([seed, k])
        colours = kind.colours.split(", ")
        colour_order = rng.permutation(len(colours))
        variants = rng.permutation(np.resize(np.arange(len(kind.styles)), kind.count))
        pattern_names = [p for p, _ in kind.patterns]
        weights = np.array([w for _, w in kind.patterns])
        for i in range(kind.count):
            colour = colours[int(colour_order[i % len(colours)])]
            variant = int(variants[i])
            pattern = str(rng.choice(pattern_names, p=weights / weights.sum()))
            noun, usages = kind.styles[variant]
            usage = str(rng.choice(usages))
            garment = _garment(kind.category, colour, pattern, variant, rng)
            sku = f"sku-{len(items) + 1:04d}"
            row = {
                "id": sku,
                "image": f"images/{sku}.jpg",
                "category": kind.category,
                "gender": kind.genders[i % len(kind.genders)],
                "usage": usage,
                "season": str(rng.choice(kind.seasons)),
                "name": f"{colour.capitalize()} {_PATTERN_WORDS[pattern]}{noun}",
                "price": _price(kind.price, rng),
                "brand": str(rng.choice(_BRANDS[usage])),
                "color": colour,
            }
            items.append(SampleItem(row, garment))
    return items


def plan_sample_queries(seed: int = 0) -> list[SampleQuery]:
    """Decide the query photos: familiar products, framed and lit a little differently."""
    rng = np.random.default_rng([seed, 99])
    specs = (
        ("grey-shirt", "shirt", "grey", 1, 0.80),
        ("blue-jeans", "jeans", "blue", 0, 1.04),
        ("red-dress", "dress", "red", 1, 0.84),
        ("white-sneakers", "sports-shoes", "white", 0, 1.08),
        ("navy-blazer", "jacket", "navy", 0, 0.86),
        ("black-shoes", "casual-shoes", "black", 0, 0.92),
        ("beige-handbag", "handbag", "beige", 1, 0.82),
        ("green-striped-top", "top", "green", 0, 0.90),
    )
    queries = []
    for name, kind, colour, variant, scale in specs:
        pattern = "stripes" if "striped" in name else "solid"
        base = _garment(kind, colour, pattern, variant, rng)
        shade = float(rng.choice([0.9, 1.08]))
        garment = replace(
            base,
            rgb=_clip_rgb(tuple(c * shade for c in base.rgb)),
            scale=scale,
            dx=float(rng.uniform(-12, 12)),
            dy=float(rng.uniform(-8, 8)),
            tilt=float(rng.uniform(-6, 6)),
            background=_STUDIO,
        )
        queries.append(SampleQuery(name, garment))
    return queries


def generate_sample_catalog(out_dir: Path, *, seed: int = 0) -> Path:
    """Write the sample catalogue under ``out_dir`` and return the path of its ``catalog.csv``.

    Writes ``catalog.csv``, ``images/sku-NNNN.jpg``, ``queries/*.jpg`` and ``README.txt``;
    existing files of the same names are replaced. Same seed -> byte-identical files.
    """
    out_dir = Path(out_dir)
    _check_out(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "queries").mkdir(parents=True, exist_ok=True)
    items = plan_sample_catalog(seed)
    for item in items:
        _save_jpeg(item.garment, out_dir / item.row["image"])
    queries = plan_sample_queries(seed)
    for query in queries:
        _save_jpeg(query.garment, out_dir / "queries" / f"{query.name}.jpg")

    csv_path = out_dir / "catalog.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CATALOG_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(item.row for item in items)
    (out_dir / "README.txt").write_text(
        f"Sample catalogue generated by stygig {__version__} with seed {seed}: "
        f"{len(items)} drawn products in images/, {len(queries)} query photos in queries/.\n"
        f"Regenerate with `stygig sample-catalog` (the same seed gives identical files).\n",
        encoding="utf-8",
    )
    return csv_path


def _garment(
    kind: str, colour: str, pattern: str, variant: int, rng: np.random.Generator
) -> Garment:
    """The drawing of one product: its colour with a small jitter, framing varied a little."""
    rgb = _DENIM.get(colour, COLOURS[colour]) if kind == "jeans" else COLOURS[colour]
    jitter = rng.integers(-7, 8) + rng.integers(-3, 4, size=3)
    rgb = _clip_rgb(tuple(float(c + j) for c, j in zip(rgb, jitter, strict=True)))
    return Garment(
        kind=kind,
        rgb=rgb,
        pattern=pattern,
        accent=_accent(kind, rgb, pattern, rng),
        variant=variant,
        scale=float(rng.uniform(0.88, 1.0)),
        dx=float(rng.uniform(-5, 5)),
        dy=float(rng.uniform(-5, 5)),
        tilt=float(rng.uniform(-8, 8) if kind == "belt" else rng.uniform(-2.5, 2.5)),
    )


def _accent(kind: str, rgb: RGB, pattern: str, rng: np.random.Generator) -> RGB:
    """Second colour: pattern ink, a sneaker's trim or a hat's band."""
    light = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] > 150
    if kind == "sports-shoes":
        options = ("navy", "red", "grey", "black", "blue") if light else ("white", "grey")
        return COLOURS[str(rng.choice(options))]
    if kind == "hat":
        return _clip_rgb(tuple(c * 0.45 for c in rgb))
    if pattern == "checks" and kind in ("trousers", "jacket"):  # a tailor's subtle check
        return _mix(rgb, _CREAM if not light else (40, 40, 44), 0.35)
    if pattern == "solid" or not light:
        return _CREAM
    if min(rgb) > 200 or max(rgb) - min(rgb) < 20:  # white or grey: navy ink
        return COLOURS["navy"]
    return _clip_rgb(tuple(c * 0.5 for c in rgb))


def _mix(a: RGB, b: RGB, t: float) -> RGB:
    return _clip_rgb(tuple(x + (y - x) * t for x, y in zip(a, b, strict=True)))


def _price(bounds: tuple[float, float], rng: np.random.Generator) -> str:
    """A shop price: a multiple of five minus ten cents, e.g. ``39.90``."""
    price = math.ceil(float(rng.uniform(*bounds)) / 5) * 5 - 0.10
    return f"{price:.2f}"


def _clip_rgb(values: tuple[float, ...]) -> RGB:
    r, g, b = (min(255, max(0, round(v))) for v in values)
    return (r, g, b)


def _save_jpeg(garment: Garment, path: Path) -> None:
    # No EXIF, no timestamps, fixed settings: the bytes depend on the drawing only.
    draw_garment(garment).save(path, format="JPEG", quality=90, optimize=True)


# -- telling the drawn sample from a real catalogue ------------------------------------------

_SAMPLE_BRANDS = frozenset(b for names in _BRANDS.values() for b in names)
_SAMPLE_ID = re.compile(r"sku-\d{4}")


def is_drawn_sample(items: Iterable[Item]) -> bool:
    """Whether most of ``items`` (catalogue items) are the sample catalogue's drawings: their
    ids (``sku-NNNN``) and made-up brands say so. Nothing else is needed: a catalogue of real
    products has neither."""
    total = drawn = 0
    for item in items:
        total += 1
        drawn += item.brand in _SAMPLE_BRANDS and _SAMPLE_ID.fullmatch(item.id) is not None
    return total > 0 and drawn * 2 > total


# -- the demo from the Kaggle "Fashion Product Images" download ------------------------------

KAGGLE_DEMO_LIMIT = 3000
MAX_KAGGLE_DEMO_LIMIT = 100_000
# The held-out shopper photos: one per category, in this order (skipped when a category is
# missing or too thin to spare one).
_KAGGLE_QUERIES = (
    "shirt",
    "jeans",
    "dress",
    "t-shirt",
    "sports-shoes",
    "handbag",
    "heels",
    "jacket",
    "skirt",
    "casual-shoes",
)


def find_kaggle_styles(source: Path) -> Path:
    """The ``styles.csv`` of a Kaggle download: ``source`` itself, in it, or one folder down
    (``myntradataset/``, ``fashion-dataset/``)."""
    source = Path(source)
    if source.is_file():
        return source
    found = [source / "styles.csv"] if (source / "styles.csv").is_file() else []
    if not found and source.is_dir():
        found = sorted(p for p in source.glob("*/styles.csv") if p.is_file())
    if not found:
        raise CatalogError(
            "no styles.csv in the folder given, nor one folder below: unpack the Kaggle "
            "'Fashion Product Images' download there (styles.csv beside images/)"
        )
    return found[0]


def _rejected(read: CatalogReadResult) -> str:
    """Rejects counted by reason, largest first: ``"200 missing_image, 3 bad_value"``."""
    counts = read.reject_counts()
    if not counts:
        return "no rows"
    return ", ".join(
        f"{n:,} {reason}" for reason, n in sorted(counts.items(), key=lambda kv: -kv[1])
    )


def _opens(path: Path) -> bool:
    """Whether the photo at ``path`` decodes (as a query photo must)."""
    from stygig.images import decode_image

    try:
        decode_image(path)
    except (StygigError, OSError):
        return False
    return True


def kaggle_demo_catalog(
    source: Path,
    out_dir: Path,
    *,
    limit: int = KAGGLE_DEMO_LIMIT,
    seed: int = 0,
) -> Path:
    """Write a demo catalogue of up to ``limit`` real products from a Kaggle *Fashion Product
    Images* download (``styles.csv`` and ``images/``) under ``out_dir``, in the generic layout
    (``catalog.csv``, ``images/``, ``queries/``, ``README.txt``), and return its ``catalog.csv``.

    Rows are read and checked by the catalogue's own Kaggle reader (unmapped categories and
    missing photos are left out). Categories take turns, in a shuffled order per category, so
    every category is in and the largest are capped; up to three photos each of a few familiar
    categories are held out of the catalogue as ``candidates/<colour>-<category>.jpg`` (listed
    in order in :data:`CANDIDATES_FILE`), the first of each copied to ``queries/``, the example
    photos ``stygig serve --examples`` offers (:func:`stygig.demo_examples.pick_examples`
    replaces one the built catalogue votes wrong). Photos are copied, never hard-linked to the
    download. The same download and seed give the same files.
    """
    from stygig.catalog.loaders import read_catalog

    if not 20 <= limit <= MAX_KAGGLE_DEMO_LIMIT:
        raise InvalidOptionsError(f"limit: between 20 and {MAX_KAGGLE_DEMO_LIMIT:,} products")
    _check_out(Path(out_dir), Path(source))
    styles = find_kaggle_styles(source)
    read = read_catalog(styles, layout="kaggle")
    if not read.items:
        # What was wrong, in numbers: one line with none sent people guessing (photos named
        # .JPG, images/images/ after an unzip, a ';' file: review, session 53).
        raise CatalogError(
            f"the Kaggle styles.csv holds no usable product (photo and category): "
            f"{_rejected(read)}; photos are looked for as "
            f"{styles.parent / 'images'}/<id>.jpg"
        )
    if read.rejects:
        log.warning(
            "%d of the %d rows of %s left out: %s",
            len(read.rejects),
            len(read.rejects) + len(read.items),
            styles.name,
            _rejected(read),
        )
    rng = np.random.default_rng([seed, 7])
    groups: dict[str, list[Item]] = {}
    for n in rng.permutation(len(read.items)):
        item = read.items[int(n)]
        groups.setdefault(item.category, []).append(item)
    queries: dict[str, list[Item]] = {}
    for category in _KAGGLE_QUERIES:
        members = groups.get(category, [])
        # Photos that open: a copy cut short by an interrupted unzip made empty example photos
        # (and every empty file a "twin" of an empty held-out one: review, session 53). Decoded
        # until the picks are found, not the whole category (thousands in the full download).
        room = min(3, len(members) - 3)  # at least 3 left for the catalogue
        picked: list[Item] = []
        for member in members:
            if len(picked) >= room:
                break
            if _opens(Path(member.image)):
                picked.append(member)
        if picked:
            queries[category] = picked
            groups[category] = [m for m in members if m not in picked]
    # The same photo can be listed twice (colour variants): keep a held-out photo's twins out.
    held_out = [q for candidates in queries.values() for q in candidates]
    held = {_digest(Path(q.image)) for q in held_out}
    sizes = {Path(q.image).stat().st_size for q in held_out}
    for category, members in groups.items():
        groups[category] = [
            m
            for m in members
            if Path(m.image).stat().st_size not in sizes or _digest(Path(m.image)) not in held
        ]
    chosen: list[Item] = []
    depth = 0
    while len(chosen) < limit and any(len(m) > depth for m in groups.values()):
        for category in sorted(groups):
            if depth < len(groups[category]) and len(chosen) < limit:
                chosen.append(groups[category][depth])
        depth += 1
    if not chosen:  # a catalogue of nothing was written and said to be done
        raise CatalogError(
            f"no product of {styles.name} is left for the catalogue once the example photos "
            "are held out: the download seems cut short (copy it again)"
        )

    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "queries").mkdir(parents=True, exist_ok=True)
    # First, so that a run stopped half-way (catalog.csv written, say) is known as this
    # module's and written again; the whole README replaces it last.
    (out_dir / "README.txt").write_text(
        f"{_OWN_README[1]} {__version__}: being written (a stopped run is written again).\n",
        encoding="utf-8",
    )
    rows = []
    for item in sorted(chosen, key=lambda i: (i.category, i.id)):
        name = f"images/{item.id}.jpg"
        _copy_photo(Path(item.image), out_dir / name)
        rows.append(_generic_row(item, name))
    # Each category's candidates, in order, in candidates/; the first is offered in queries/
    # until `stygig pick-examples` checks them against the built catalogue.
    (out_dir / "candidates").mkdir(exist_ok=True)
    for old in [*(out_dir / "candidates").glob("*.jpg"), *(out_dir / "queries").glob("*.jpg")]:
        old.unlink()  # a previous draw's (the folder is this module's: _check_out)
    listed: list[dict[str, str]] = []
    for category, candidates in queries.items():
        for item in candidates:
            colour = item.attributes.get("baseColour") or ""
            stem = re.sub(r"[^a-z0-9]+", "-", f"{colour} {category}".lower()).strip("-")
            name = f"{stem}.jpg"  # two of one colour: the second is "<stem>-2.jpg"
            while any(row["file"] == name for row in listed):
                name = f"{stem}-{sum(row['category'] == category for row in listed) + 1}.jpg"
            _copy_photo(Path(item.image), out_dir / "candidates" / name)
            # Offered as "<colour>-<category>.jpg" whichever of them it is (the page's label).
            listed.append({"category": category, "file": name, "example": f"{stem}.jpg"})
    written = []
    for category in queries:
        first = next(row for row in listed if row["category"] == category)
        _copy_photo(out_dir / "candidates" / first["file"], out_dir / "queries" / first["example"])
        written.append(first["example"])
    csv_path = out_dir / "catalog.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CATALOG_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    with (out_dir / CANDIDATES_FILE).open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=("category", "file", "example"), lineterminator="\n")
        writer.writeheader()
        writer.writerows(listed)
    (out_dir / "README.txt").write_text(
        f"Demo catalogue drawn by stygig {__version__} (seed {seed}) from the Kaggle 'Fashion "
        f"Product Images' dataset (Myntra's catalogue): {len(rows)} products in images/, "
        f"{len(listed)} photos held out of it in candidates/ (listed in {CANDIDATES_FILE}), "
        f"the first of each of {len(written)} categories offered in queries/ until "
        "`stygig pick-examples` checks them against the built catalogue.\n"
        "These are other parties' product photos: use them to try StyGig, do not publish "
        "or commit them.\n",
        encoding="utf-8",
    )
    return csv_path


def _generic_row(item: Item, image: str) -> dict[str, str]:
    return {
        "id": item.id,
        "image": image,
        "category": item.category,
        "gender": item.gender or "",
        "usage": item.usage or "",
        "season": item.season or "",
        "name": item.name or "",
        "price": "",
        "brand": "",
        "color": (item.attributes.get("baseColour") or "").lower(),
    }


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


#: How the README of a catalogue this module wrote begins: such a folder may be written again.
_OWN_README = ("Sample catalogue generated by stygig", "Demo catalogue drawn by stygig")


def _check_out(out_dir: Path, source: Path | None = None) -> None:
    """Refuse an ``out_dir`` whose files are not a catalogue this module wrote (they would be
    replaced: catalog.csv, README.txt, photos), or one that is, holds or lies in the Kaggle
    ``source`` (review, session 36: ``--out`` the download folder deleted its photos)."""
    out = out_dir.resolve()
    if source is not None:
        src = source.resolve()
        if out == src or out.is_relative_to(src) or src.is_relative_to(out):
            raise InvalidOptionsError(
                "--out must be a folder apart from the Kaggle download (--from-kaggle)"
            )
    if out_dir.exists() and not out_dir.is_dir():
        raise InvalidOptionsError(f"--out {out_dir} is a file, not a folder")
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    readme = out_dir / "README.txt"
    try:
        with readme.open(encoding="utf-8") as f:
            ours = readme.is_file() and f.read(100).startswith(_OWN_README)
    except (OSError, UnicodeDecodeError):
        ours = False
    # A run stopped before its README (written last) left photo folders only: ours too
    # (review, session 36: an interrupted `make demo` was refused ever after).
    names = {p.name for p in out_dir.iterdir()}
    if not ours and names <= {"images", "queries", "candidates"}:
        ours = all((out_dir / n).is_dir() and not (out_dir / n).is_symlink() for n in names)
    if ours and any((out_dir / n).is_symlink() for n in ("images", "queries", "candidates")):
        # A redraw replaces the photos in them: through a link, someone else's (review, s43).
        raise InvalidOptionsError(
            f"--out {out_dir}: its images/, queries/ or candidates/ is a link; a sample "
            "catalogue writes only into folders of its own"
        )
    if not ours:
        raise InvalidOptionsError(
            f"--out {out_dir} holds other files; a sample catalogue writes catalog.csv, "
            "README.txt, images/ and queries/ there (a Kaggle demo also candidates/ and "
            f"{CANDIDATES_FILE}): choose a new or empty folder"
        )


def _copy_photo(source: Path, target: Path) -> None:
    """``target`` holds a copy of ``source``'s bytes. Never a hard link: the demo's folder
    would then be the user's download under another name, and anything written through
    either changes both (review, session 54; a few MB for a 3,000-photo demo)."""
    if target.exists() and os.path.samefile(source, target):
        return  # already the same file (never unlinked: it would be the source itself)
    if target.exists() or target.is_symlink():
        target.unlink()
    shutil.copyfile(source, target)

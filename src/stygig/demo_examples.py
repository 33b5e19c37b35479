"""Which held-out photos a demo offers as one-click examples: each checked against the
catalogue it is shown with.

A Kaggle demo catalogue (:func:`stygig.sample_catalog.kaggle_demo_catalog`) holds up to three
photos per familiar category out of the catalogue, in order, in ``candidates/`` (listed in
``candidates.csv``). Whether the catalogue votes a photo's category right depends on the
catalogue drawn (on the documented 3,000-item build, 2 of the 10 first photos were voted
another category): a newcomer's first click must not be one of those. :func:`pick_examples`
runs each candidate through the built artifact, in order, and offers in ``queries/`` the first
of each category that it votes right; a category none of whose photos is voted right is not
offered, and the report says so.

    stygig pick-examples --artifact build/demo-kaggle/artifact --catalog-dir build/demo-kaggle/catalog
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from stygig import storage
from stygig.errors import CatalogError, StygigError
from stygig.sample_catalog import CANDIDATES_FILE
from stygig.serving.requests import MAX_BODY_BYTES

__all__ = ["ExampleCheck", "pick_examples"]

#: A candidate's and an example's file name: what ``sample-catalog`` writes (lower-case
#: letters, digits and ``-``, then ``.jpg``), a subset of what ``stygig serve --examples``
#: serves (``catalog_api._EXAMPLE_NAME`` with a photo suffix).
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,90}\.jpg")


@dataclass(frozen=True, slots=True)
class ExampleCheck:
    """One category's candidates as the artifact voted them."""

    category: str
    offered: str | None  # the example's name in queries/; None: no candidate voted right
    # (candidate file, the category voted, or why it was not voted: "unreadable"), in order
    tried: tuple[tuple[str, str | None], ...]

    def line(self) -> str:
        votes = ", ".join(f"{f} -> {v or 'no category'}" for f, v in self.tried)
        if self.offered is None:
            return f"{self.category}: not offered (no photo voted {self.category}: {votes})"
        return f"{self.category}: {self.offered} ({votes})"


@dataclass(frozen=True, slots=True)
class _Candidate:
    category: str
    file: str  # in candidates/
    example: str  # its name in queries/ when offered


def pick_examples(artifact: str | Path, catalog_dir: str | Path) -> list[ExampleCheck]:
    """Offer in ``catalog_dir/queries/`` the first candidate of each category that
    ``artifact`` votes right (the query's category after the top-k vote and any category
    head, as an answer reports it); remove the other candidates' examples from ``queries/``
    (never a file the list does not name). A candidate that cannot be read (missing, a link,
    corrupt, too large) is tried as ``unreadable`` and the next one is. The artifact must be
    built from this folder's ``catalog.csv`` (its items are rows of it), else
    :class:`CatalogError`: a stale artifact may hold a new candidate's photo. Returns each
    category's check, in the list's order."""
    from stygig.engine import Recommender
    from stygig.recommendation import Options, Query

    folder = Path(catalog_dir)
    queries = folder / "queries"
    for sub in (folder / "candidates", queries):
        if sub.is_symlink():  # what it names would be read or replaced outside the folder
            raise CatalogError(f"{sub.name}/ is a link: the demo's folders must be its own")
    listed = _read_candidates(folder)
    rec = Recommender.from_path(artifact)
    _check_built_from((i.id for i in rec.artifact.items), folder)
    root = (folder / "candidates").resolve()
    options = Options(k=1)
    checks, offers = [], {}
    for category, candidates in listed.items():
        tried: list[tuple[str, str | None]] = []
        offered = None
        for c in candidates:
            try:
                # Within the server's default upload limit, as it serves examples (the page
                # sends an example back as an upload).
                photo = storage.read_beneath(root, root / c.file, max_bytes=MAX_BODY_BYTES)
                voted = rec.recommend(Query(images=(photo,)), options).query[0].category
            except StygigError:  # missing, a link, too large, not a photo it can read
                tried.append((c.file, "unreadable"))
                continue
            tried.append((c.file, voted))
            if voted == category:
                offers[c.example] = photo  # the bytes voted, never the path read again
                offered = c.example
                break
        checks.append(ExampleCheck(category, offered, tuple(tried)))
    queries.mkdir(exist_ok=True)
    # Each example name once (a category's candidates of one colour share theirs).
    for example in dict.fromkeys(c.example for cs in listed.values() for c in cs):
        target = queries / example
        if example in offers:  # a rename: a link there is replaced, never written through
            storage.write_bytes(target, offers[example])
        elif target.is_symlink() or target.exists():
            target.unlink()
    return checks


def _read_candidates(folder: Path) -> dict[str, list[_Candidate]]:
    """``category -> candidates`` in order, from ``candidates.csv``; a row without a category
    or with a name ``sample-catalog`` would not write is refused."""
    path = folder / CANDIDATES_FILE
    if not path.is_file():
        raise CatalogError(
            f"no {CANDIDATES_FILE} in the catalogue folder: pick-examples reads the candidates "
            "that `stygig sample-catalog --from-kaggle` holds out"
        )
    listed: dict[str, list[_Candidate]] = {}
    owner: dict[str, str] = {}  # example name -> its category
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(enumerate(csv.DictReader(f), start=2))
    except (OSError, UnicodeDecodeError, csv.Error):
        raise CatalogError(f"{CANDIDATES_FILE} cannot be read (UTF-8 CSV)") from None
    for line, row in rows:
        category = (row.get("category") or "").strip()
        file, example = (row.get("file") or "").strip(), (row.get("example") or "").strip()
        if not category or not _NAME.fullmatch(file) or not _NAME.fullmatch(example):
            raise CatalogError(
                f"{CANDIDATES_FILE} line {line}: a category, and a file and an example "
                "name of lower-case letters, digits and '-' ending in .jpg, are needed"
            )
        if owner.setdefault(example, category) != category:
            raise CatalogError(
                f"{CANDIDATES_FILE} line {line}: its example name is another category's"
            )
        listed.setdefault(category, []).append(_Candidate(category, file, example))
    return listed


def _check_built_from(item_ids: Iterable[str], folder: Path) -> None:
    """:class:`CatalogError` unless every item of the artifact is a row of ``catalog.csv``."""
    try:
        with (folder / "catalog.csv").open(newline="", encoding="utf-8") as f:
            rows = {(row.get("id") or "") for row in csv.DictReader(f)}
    except (OSError, UnicodeDecodeError, csv.Error):
        raise CatalogError("the catalogue folder's catalog.csv cannot be read") from None
    if not set(item_ids) <= rows:
        raise CatalogError(
            "the artifact was not built from this folder's catalog.csv (a catalogue drawn "
            "again needs its artifact built again): its votes would not check these photos"
        )

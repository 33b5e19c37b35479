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
from dataclasses import dataclass
from pathlib import Path

from stygig.errors import CatalogError
from stygig.sample_catalog import CANDIDATES_FILE, _link_or_copy

__all__ = ["ExampleCheck", "pick_examples"]


@dataclass(frozen=True, slots=True)
class ExampleCheck:
    """One category's candidates as the artifact voted them."""

    category: str
    offered: str | None  # the file offered in queries/; None: every candidate voted wrong
    tried: tuple[tuple[str, str | None], ...]  # (candidate file, category voted), in order

    def line(self) -> str:
        votes = ", ".join(f"{f} -> {v or 'no category'}" for f, v in self.tried)
        if self.offered is None:
            return f"{self.category}: not offered (every photo voted another category: {votes})"
        return f"{self.category}: {self.offered} ({votes})"


def pick_examples(artifact: str | Path, catalog_dir: str | Path) -> list[ExampleCheck]:
    """Offer in ``catalog_dir/queries/`` the first candidate of each category that
    ``artifact`` votes right (the query's category after the top-k vote and any category
    head, as an answer reports it); remove the other candidates' copies from ``queries/``
    (never a file the candidates do not name). Returns each category's check, in the list's
    order."""
    from stygig.engine import Recommender
    from stygig.recommendation import Options, Query

    folder = Path(catalog_dir)
    listed = _read_candidates(folder)
    rec = Recommender.from_path(artifact)
    options = Options(k=1)
    checks = []
    for category, files in listed.items():
        tried: list[tuple[str, str | None]] = []
        offered = None
        for name in files:
            photo = (folder / "candidates" / name).read_bytes()
            voted = rec.recommend(Query(images=(photo,)), options).query[0].category
            tried.append((name, voted))
            if voted == category:
                offered = name
                break
        checks.append(ExampleCheck(category, offered, tuple(tried)))
    queries = folder / "queries"
    queries.mkdir(exist_ok=True)
    offered_names = {c.offered for c in checks if c.offered}
    for files in listed.values():
        for name in files:
            target = queries / name
            if name in offered_names:
                _link_or_copy(folder / "candidates" / name, target)
            elif target.exists() or target.is_symlink():
                target.unlink()
    return checks


def _read_candidates(folder: Path) -> dict[str, list[str]]:
    """``category -> candidate files`` in order, from ``candidates.csv``; a file name that is
    not a plain name in ``candidates/`` is refused."""
    path = folder / CANDIDATES_FILE
    if not path.is_file():
        raise CatalogError(
            f"no {CANDIDATES_FILE} in the catalogue folder: pick-examples reads the candidates "
            "that `stygig sample-catalog --from-kaggle` holds out"
        )
    listed: dict[str, list[str]] = {}
    with path.open(newline="", encoding="utf-8") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            category, name = (row.get("category") or "").strip(), (row.get("file") or "").strip()
            plain = name and Path(name).name == name and not name.startswith(".")
            if not category or not plain or not (folder / "candidates" / name).is_file():
                raise CatalogError(
                    f"{CANDIDATES_FILE} line {line}: a category and the name of a photo in "
                    "candidates/ are needed"
                )
            listed.setdefault(category, []).append(name)
    return listed

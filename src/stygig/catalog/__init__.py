"""Catalogue: the canonical item schema, loaders for retailer layouts, and the taxonomy."""

from __future__ import annotations

from stygig.catalog.loaders import LAYOUTS, CatalogReadResult, detect_layout, read_catalog
from stygig.catalog.schema import REJECT_REASONS, Item, Reject, count_by_reason
from stygig.catalog.taxonomy import Slot, Taxonomy, default_taxonomy_path

__all__ = [
    "LAYOUTS",
    "REJECT_REASONS",
    "CatalogReadResult",
    "Item",
    "Reject",
    "Slot",
    "Taxonomy",
    "count_by_reason",
    "default_taxonomy_path",
    "detect_layout",
    "read_catalog",
]

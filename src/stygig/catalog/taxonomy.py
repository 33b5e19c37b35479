"""The canonical taxonomy: categories, outfit slots, compatibility and native-category mappings.

Loaded from a YAML/JSON data file that users can edit (the default ships as
``stygig/data/taxonomy.yaml``). It answers three questions:

* which canonical category a retailer's native category maps to (``map_native``);
* which outfit slot a category fills (``slot_of``);
* whether two categories complete each other, and the score boost when they do
  (``compatible``, ``compatibility_matrix``, ``boost``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter

from stygig.errors import ConfigError, config_read_problem, validate_config
from stygig.unique_keys import DuplicateKeyError, load_yaml, unique_object

__all__ = ["Slot", "Taxonomy", "default_taxonomy_path"]


@dataclass(frozen=True)
class Slot:
    """A place in an outfit (top, bottom, shoes, ...)."""

    name: str
    label: str
    outfit_order: int


def default_taxonomy_path() -> Path:
    """Path of the taxonomy shipped with the package."""
    return Path(str(resources.files("stygig") / "data" / "taxonomy.yaml"))


def _pairs(raw: Any, what: str, known: Iterable[str]) -> frozenset[frozenset[str]]:
    known_set = set(known)
    if raw is None:
        return frozenset()
    if not isinstance(raw, list):
        raise ConfigError(f"taxonomy: '{what}' must be a list of [a, b] pairs")
    out: set[frozenset[str]] = set()
    for pair in raw:
        if not (isinstance(pair, list) and len(pair) == 2):
            raise ConfigError(f"taxonomy: '{what}' entry {pair!r} is not a pair [a, b]")
        for name in pair:
            if name not in known_set:
                raise ConfigError(f"taxonomy: '{what}' names unknown {name!r}")
        out.add(frozenset(pair))
    return frozenset(out)


_Name = Annotated[str, Field(strict=True, min_length=1, max_length=200)]


def _native_text(value: Any) -> Any:
    """A native category as text: YAML reads ``42`` or ``yes`` as a number or a boolean."""
    return str(value) if isinstance(value, int | float) else value


_Native = Annotated[str, BeforeValidator(_native_text), Field(strict=True, min_length=1)]


class _SlotSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    label: str | None = None
    outfit_order: Annotated[int, Field(strict=True, ge=0, le=1000)] = 9


class _TaxonomyFile(BaseModel):
    """The taxonomy file's types, checked strictly by pydantic as ``scoring.yaml``'s are: a
    boost that is not a finite positive number (``.inf``, ``true``), an order that is not a
    whole number (``2.7``, ``'1'``), an unknown key (``boots:`` for ``boost:``) or another
    ``version`` is a :class:`ConfigError` naming the field (review, session 42: ``.inf`` was
    taken and every answer then failed). Names are checked against each other after."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    boost: Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)] = 1.15
    slots: Annotated[dict[_Name, _SlotSpec], Field(min_length=1)]
    categories: Annotated[dict[_Name, _Name], Field(min_length=1)]
    compatible_slots: list[Any] | None = None  # [a, b] pairs, checked by _pairs
    incompatible_pairs: list[Any] | None = None
    sources: dict[_Name, dict[_Name, dict[_Native, _Name] | None] | None] | None = None


@functools.cache
def _taxonomy_adapter() -> TypeAdapter[_TaxonomyFile]:
    return TypeAdapter(_TaxonomyFile)


@dataclass(frozen=True)
class Taxonomy:
    """Canonical categories, their slots, compatibility rules and native-category mappings."""

    categories: Mapping[str, str]
    slots: Mapping[str, Slot]
    compatible_slots: frozenset[frozenset[str]]
    incompatible_pairs: frozenset[frozenset[str]]
    boost: float
    sources: Mapping[str, Mapping[str, Mapping[str, str]]]
    raw: Mapping[str, Any]

    @classmethod
    def load(cls, path: str | Path | None = None, *, origin: str | None = None) -> Taxonomy:
        """Load and validate a taxonomy file (YAML or JSON); ``None`` loads the default.
        ``origin``: how messages name the file (default: its path)."""
        path = Path(path) if path is not None else default_taxonomy_path()
        origin = origin or str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot read taxonomy file {origin}: {e.strerror}") from e
        except UnicodeDecodeError as e:
            raise ConfigError(f"taxonomy file {origin} is not UTF-8 text") from e
        try:
            if path.suffix == ".json":
                data = json.loads(text, object_pairs_hook=unique_object)
            else:
                data = load_yaml(text)
        except DuplicateKeyError as e:
            raise ConfigError(f"taxonomy file {origin}: {e.message}") from None
        except (ValueError, RecursionError, yaml.YAMLError) as e:
            raise ConfigError(
                f"taxonomy file {origin} is not valid YAML/JSON: {config_read_problem(e)}"
            ) from e
        return cls.from_dict(data, origin=origin)

    @classmethod
    def from_dict(cls, data: Any, *, origin: str = "<dict>") -> Taxonomy:
        """Build and validate a taxonomy from its parsed data (:class:`ConfigError` for any
        shape it does not have: a mapping where a name belongs, a number that is text, ...)."""
        try:
            return cls._from_dict(data, origin)
        except (TypeError, ValueError, AttributeError) as e:
            raise ConfigError(f"taxonomy {origin}: malformed ({type(e).__name__}: {e})") from e

    @classmethod
    def _from_dict(cls, data: Any, origin: str) -> Taxonomy:
        if not isinstance(data, dict):
            raise ConfigError(f"taxonomy {origin}: top level must be a mapping")
        spec = validate_config(_taxonomy_adapter(), data, f"taxonomy {origin}")
        slots = {
            name: Slot(name, s.label if s.label is not None else name, s.outfit_order)
            for name, s in spec.slots.items()
        }
        categories: dict[str, str] = {}
        for cat, slot in spec.categories.items():
            if slot not in slots:
                raise ConfigError(f"taxonomy {origin}: category {cat!r} has unknown slot {slot!r}")
            categories[cat] = slot
        sources: dict[str, dict[str, dict[str, str]]] = {}
        for source, fields in (spec.sources or {}).items():
            sources[source] = {}
            for field_name, mapping in (fields or {}).items():
                lowered: dict[str, str] = {}
                for native, cat in (mapping or {}).items():
                    if cat not in categories:
                        raise ConfigError(
                            f"taxonomy {origin}: sources.{source}.{field_name}: {native!r} maps "
                            f"to unknown category {cat!r}"
                        )
                    lowered[str(native).strip().lower()] = str(cat)
                sources[source][field_name] = lowered
        return cls(
            categories=categories,
            slots=slots,
            compatible_slots=_pairs(spec.compatible_slots, "compatible_slots", slots),
            incompatible_pairs=_pairs(spec.incompatible_pairs, "incompatible_pairs", categories),
            boost=float(spec.boost),
            sources=sources,
            raw=data,
        )

    def to_yaml(self) -> str:
        """The taxonomy as YAML, as stored in an artifact."""
        return yaml.safe_dump(dict(self.raw), sort_keys=False, allow_unicode=True)

    def map_native(self, source: str, field: str, value: str | None) -> str | None:
        """Canonical category for a native value of ``source``'s ``field``, or None if unmapped."""
        if value is None:
            return None
        return self.sources.get(source, {}).get(field, {}).get(value.strip().lower())

    def canonical(self, value: str | None) -> str | None:
        """A category given in canonical form or as a generic alias; None if unknown."""
        if value is None:
            return None
        name = value.strip().lower()
        if name in self.categories:
            return name
        return self.map_native("generic", "category", name)

    def slot_of(self, category: str) -> str:
        """The outfit slot of a canonical category."""
        return self.categories[category]

    def compatible(self, a: str, b: str) -> bool:
        """Whether categories ``a`` and ``b`` complete each other in an outfit."""
        slot_pair = frozenset((self.categories[a], self.categories[b]))
        if len(slot_pair) == 1 or slot_pair not in self.compatible_slots:
            return False
        return frozenset((a, b)) not in self.incompatible_pairs

    def compatibility_matrix(self, categories: list[str]) -> np.ndarray:
        """Boolean ``(n, n)`` matrix of :meth:`compatible` over the given categories."""
        n = len(categories)
        out = np.zeros((n, n), dtype=bool)
        for i, a in enumerate(categories):
            for j in range(i + 1, n):
                out[i, j] = out[j, i] = self.compatible(a, categories[j])
        return out

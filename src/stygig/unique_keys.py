"""A key given twice is an error, never "the last one wins": one JSON hook and one YAML loader
for every reader of client requests, manifest and change lines, and configuration files.

Python's ``json`` and PyYAML's ``safe_load`` keep the last of two equal keys silently, so
``{"item_ids": ["a"], "item_ids": ["b"]}`` asked for ``b`` alone, and a ``vote_k`` repeated
further down a ``scoring.yaml`` replaced the first (review, session 42, findings 2 and 8).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, ScalarNode

from stygig.errors import InvalidOptionsError

__all__ = ["DuplicateKeyError", "key_name", "load_yaml", "unique_object"]

#: The longest piece of a key an error message repeats.
_MAX_SHOWN = 60


def key_name(key: object) -> str:
    """A key as an error message names it: quoted, at most ``_MAX_SHOWN`` characters."""
    text = str(key)
    return repr(text[:_MAX_SHOWN] + ("..." if len(text) > _MAX_SHOWN else ""))


class DuplicateKeyError(InvalidOptionsError):
    """A JSON object naming one key twice (422 ``duplicate_key`` over HTTP).

    ``named``: the key names itself in the message (an operator's own file, or one of the
    fields a request may hold: ``named`` is then that set). A client's other keys are never
    repeated back (docs/security.md: no client text in errors; review of session 42's fixes)."""

    code = "duplicate_key"

    def __init__(self, key: str, what: str = "", *, named: bool | Collection[str] = True) -> None:
        where = f" in {what}" if what else ""
        shown = named if isinstance(named, bool) else key in named
        said = f"the key {key_name(key)}" if shown else "a key"
        super().__init__(f"{said} is given twice{where}; give it once")
        self.key = key


def unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads(..., object_pairs_hook=unique_object)``: the object, or
    :class:`DuplicateKeyError` naming the first key given twice."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKeyError(key)
            seen.add(key)
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a mapping that names one key twice (a merge key's
    ``<<`` entries may still be overridden, as YAML intends), and an alias of a list or a
    mapping: nested, a few KB of them stand for billions of entries (review, session 51: a
    6.8 KB taxonomy took 5.5 GB and 40 s, then failed). An alias of a scalar (one string
    repeated) costs nothing and stays allowed."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            anchored = self.anchors.get(event.anchor)
            if anchored is not None and not isinstance(anchored, ScalarNode):
                raise ComposerError(
                    None,
                    None,
                    f"found an alias (*{event.anchor}) of a list or mapping: not accepted "
                    "(write the values out)",
                    event.start_mark,
                )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if not isinstance(key_node, ScalarNode) or key_node.tag.endswith(":merge"):
                    continue
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"found the key {key_name(key)} twice",
                        key_node.start_mark,
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


# Mappings are built through the constructor registered for the tag, which calls
# construct_mapping on the loader: the override above is used for every mapping.


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` that refuses a key given twice in one mapping
    (:class:`yaml.YAMLError`, whose problem names the key and its line)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass

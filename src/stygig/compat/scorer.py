"""The learned compatibility model applied to a request's candidates.

Every catalogue item is projected once at load time; a request then costs one feature projection
per photo in the query and one vectorised score over the candidates.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from stygig.compat.features import ItemFeatures, colour_features, item_features
from stygig.compat.model import CategoryBlocks, CompatModel, group_key

__all__ = ["LearnedScorer", "QueryView"]

#: From this share of the catalogue on, candidates are scored as the whole catalogue by
#: category block (:meth:`CompatModel.block_scores`) rather than gathered per category.
_WHOLE_CATALOGUE = 0.05

#: The model's view of a query's parts: projections, model categories, co-occurrence codes and
#: garment co-occurrence codes (:meth:`LearnedScorer.query_vectors`, :meth:`rows_view`).
QueryView = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


class LearnedScorer:
    """Scores candidates as completions of a query with a :class:`CompatModel`.

    Args:
        model: the artifact's compatibility model.
        embeddings: every catalogue item's embedding row.
        rgb: every item's dominant colour ``(n, 3)``.
        category_names / category_codes: the catalogue's categories and each item's code.
        item_ids: every item's id (for the model's co-occurrence table).
        mode: ``learned`` (the model's score only) or ``learned+rules`` (model + its fitted
            weight x the V4 rules' score).
        attributes: every item's catalogue attributes, for a model that reads them; None: the
            model's own table of the catalogue it was trained on (unknown ids: none).
    """

    def __init__(
        self,
        model: CompatModel,
        embeddings: np.ndarray,
        rgb: np.ndarray,
        category_names: Sequence[str],
        category_codes: np.ndarray,
        item_ids: Sequence[str],
        mode: str,
        attributes: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> None:
        self.model = model
        self.mode = mode
        self.category_names = list(category_names)
        names = model.categories
        item_categories = [self.category_names[c] for c in category_codes]
        attrs = None
        if model.attr_vocab:
            attrs = (
                model.attribute_rows(item_ids)
                if attributes is None
                else model.encode_attributes(attributes)
            )
        feats = item_features(embeddings, rgb, item_categories, names, attrs)
        if model.style_width:  # the trainer's table: an item added since has none
            feats = replace(feats, style=model.style_of(item_ids, feats.embeddings))
        self._ids = item_ids
        self._vectors = model.project(feats, item_ids)
        self._cats = feats.category
        self._blocks = model.blocks(self._vectors, self._cats)
        lookup = {c: names.index(c) if c in names else -1 for c in self.category_names}
        self._cat_of_code = np.array([lookup[c] for c in self.category_names], np.int64)
        self._cooc = model.cooccurrence.codes(tuple(item_ids))
        self._groups = model.group_cooccurrence.codes(tuple(group_key(i) for i in item_ids))

    def with_attributes(
        self,
        rows: np.ndarray,
        embeddings: np.ndarray,
        rgb: np.ndarray,
        attributes: Sequence[Mapping[str, Any] | None],
    ) -> LearnedScorer:
        """A copy whose ``rows`` are projected again with new ``attributes`` (their embeddings
        and colours given, categories and ids unchanged): a living catalogue's attribute
        update costs its rows' projection, not the catalogue's. This scorer is unchanged."""
        if not self.model.attr_vocab or not len(rows):
            return self
        model = self.model
        cats = self._cats[rows]
        ids = [self._ids[int(r)] for r in rows]
        vectors_in = np.asarray(embeddings, np.float32).reshape(len(rows), -1)
        feats = ItemFeatures(
            embeddings=vectors_in,
            colour=colour_features(rgb),
            category=cats,
            attributes=model.encode_attributes(attributes),
            style=model.style_of(ids, vectors_in) if model.style_width else None,
        )
        projected = model.project(feats, ids)
        vectors = self._vectors.copy()
        vectors[rows] = projected
        # The categories are unchanged, so the blocks keep their order: the rows change place.
        blocked = self._blocks.vectors.copy()
        blocked[self._blocks.inverse[rows]] = projected
        out = copy.copy(self)
        out._vectors = vectors
        out._blocks = CategoryBlocks(blocked, self._blocks.spans, self._blocks.inverse)
        return out

    def query_vectors(
        self,
        rows: Sequence[int | None],
        vectors: np.ndarray,
        rgb: np.ndarray,
        categories: Sequence[int],
    ) -> QueryView:
        """The model's view of the query parts: projections, model categories, co-occurrence
        codes. ``rows`` are catalogue rows (``None`` for a photo, projected from its
        embedding, colour and category code; -1: unknown; no attributes, no style)."""
        out = np.empty((len(rows), self.model.dim), np.float32)
        cats = np.empty(len(rows), np.int64)
        for n, row in enumerate(rows):
            cats[n] = int(self._cat_of_code[categories[n]]) if categories[n] >= 0 else -1
            if row is not None:
                out[n] = self._vectors[row]
            else:
                name = self.category_names[categories[n]] if categories[n] >= 0 else None
                feats = item_features(vectors[n][None, :], rgb[n], [name], self.model.categories)
                out[n] = self.model.project(feats)[0]
        codes = np.array([-1 if r is None else self._cooc[r] for r in rows], np.int64)
        groups = np.array([-1 if r is None else self._groups[r] for r in rows], np.int64)
        return out, cats, codes, groups

    def score(
        self,
        query: QueryView,
        cand: np.ndarray,
        rules: np.ndarray,
        *,
        outfit: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(final score, learned part)`` of each candidate row given the query's view
        (``outfit``: the candidates scored as members of one outfit with the query rows, with
        the model's outfit absence weight,
        :meth:`~stygig.compat.model.CompatModel.absence`)."""
        vectors, cats, codes, groups = query
        model = self.model
        cooc = absent = None
        absence = model.absence(outfit)
        if model.cooc_weight or absence:
            cooc = model.cooccurrence.lookup(codes, self._cooc[cand])
            if absence:
                absent = model.cooccurrence.absent(codes, self._cooc[cand], cooc)
        garments = None
        if model.group_weight:
            garments = model.group_cooccurrence.lookup(groups, self._groups[cand])
        if len(cand) >= _WHOLE_CATALOGUE * len(self._cats):
            # Many candidates: score every catalogue row by category block, then pick.
            pair = model.block_scores(vectors, cats, self._blocks, cand)
        else:
            pair = model.pair_scores(vectors, cats, self._vectors[cand], self._cats[cand])
        learned = model.aggregate(
            pair, cats, self._cats[cand], cooc, garments, absent, outfit=outfit
        )
        return self.mix(learned, rules), learned

    def mix(self, learned: np.ndarray, rules: np.ndarray) -> np.ndarray:
        """The final score from the learned part and the V4 rules' score (elementwise)."""
        if self.mode == "learned":
            return learned.astype(np.float32)
        mixed = learned + np.float32(self.model.rules_weight) * rules
        return mixed.astype(np.float32)

    @property
    def rules_weight(self) -> float:
        """The weight of the rules' score in the final score (0 in ``learned`` mode)."""
        return 0.0 if self.mode == "learned" else float(self.model.rules_weight)

    @property
    def rules_share(self) -> float:
        """How much the final score moves per unit of the rules' score."""
        return abs(self.rules_weight)

    def rows_view(self, rows: np.ndarray) -> QueryView:
        """The model's view of catalogue rows used as a query."""
        return self._vectors[rows], self._cats[rows], self._cooc[rows], self._groups[rows]

"""The recommender: load an artifact once, then ``recommend(query, options) -> Recommendation``.

One request runs the V4 pipeline (see ``docs/ARCHITECTURE.md``)::

    decode + colour -> embed -> search -> top-5 vote -> score (vectorised) -> rank + outfit

Everything after the embedding works on arrays prepared at load time (category codes, slots,
compatibility matrix, HSL colours, genders, prices), so scoring 10,000 candidates is a handful
of NumPy operations. The embedding step is separable (:meth:`Recommender.prepare` and
:meth:`Recommender.embed`) so a server can batch it across requests.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stygig.artifact import ONNX_FILE, Artifact
from stygig.encoders import Encoder, load_encoder, load_onnx_encoder
from stygig.errors import ConfigError, InvalidOptionsError, NotFoundError
from stygig.features import PreparedImage, color_summary, decode_photo, prepare_image
from stygig.harmony import (
    HARMONY_PHRASES,
    HARMONY_RULE_NAMES,
    HarmonyRules,
    describe_color,
    describe_colors,
    harmony,
    rgb_array,
    rgb_to_hsl,
)
from stygig.index import PartitionedIndex, is_exhaustive, top_k
from stygig.recommendation import Options, Query, Recommendation
from stygig.scoring import ScoringConfig, combine, label_codes, mmr, vote, weighted_winner

__all__ = ["Options", "Query", "Recommendation", "Recommender", "load_artifact_encoder"]

# Options, Query and Recommendation live in stygig.recommendation; they are part of this API.

_ITEM_FIELDS = ("id", "category", "gender", "usage", "season", "name", "price", "brand")


def load_artifact_encoder(artifact: Artifact, *, device: str = "cpu") -> Encoder:
    """The encoder that built ``artifact`` (queries must be embedded by the same one).

    ``device="cuda"`` runs it on a GPU (ONNX Runtime's CUDA provider, or torch CUDA).
    """
    info = artifact.manifest["encoder"]
    if info.get("runtime") == "onnx":
        # Artifact.load has confined the name to the artifact folder.
        onnx_file = artifact.path / str(info.get("onnx_file") or ONNX_FILE)
        return load_onnx_encoder(onnx_file, info, device=device)
    source = info.get("weights") if isinstance(info.get("weights"), dict) else {}
    return load_encoder(
        str(info["name"]),
        runtime=str(info.get("runtime", "auto")),
        weights=source.get("path"),
        random_weights=source.get("source") == "random-init",
        model_id=source.get("model_id"),
        device=device,
    )


@dataclass
class _Part:
    """One element of a query, embedded and described."""

    source: str
    vector: np.ndarray
    color: dict[str, Any]
    position: int | None = None  # catalogue row when the part is a catalogue item
    category: int = -1
    category_source: str = "vote"
    info: dict[str, Any] = field(default_factory=dict)
    color_name: str = ""
    rgb: np.ndarray = field(init=False)  # the colour's RGB (mid grey when it has none)
    gender_weights: dict[int, float] = field(default_factory=dict)  # neighbours' gender vote

    def __post_init__(self) -> None:
        self.rgb = rgb_array([self.color])[0]
        # Colour summaries name their colour (off the critical path, beside the encoder).
        name = self.color.get("name")
        self.color_name = str(name) if name else describe_color(self.rgb)


class Recommender:
    """Loads an artifact once; answers :meth:`recommend` calls (thread-safe for reads)."""

    def __init__(
        self,
        artifact: Artifact,
        *,
        encoder: Encoder | None = None,
        config: ScoringConfig | None = None,
    ) -> None:
        self.artifact = artifact
        self.encoder = encoder if encoder is not None else load_artifact_encoder(artifact)
        info = artifact.manifest["encoder"]
        if self.encoder.dim != int(info["dim"]) or self.encoder.name != info["name"]:
            raise ConfigError(
                f"encoder {self.encoder.name} ({self.encoder.dim}-d) does not match the "
                f"artifact's {info['name']} ({info['dim']}-d): mixing encoders is not allowed"
            )
        self.whitening = artifact.whitening
        self.config = config or ScoringConfig.load()
        self.harmony_rules = HarmonyRules.from_dict(self.config.harmony or {})
        self.taxonomy = artifact.taxonomy
        items = artifact.items
        self.embeddings = artifact.embeddings
        self.category_names, self.category_codes = label_codes([i.category for i in items])
        self.slot_names = sorted({self.taxonomy.slot_of(c) for c in self.category_names})
        self.category_slot = np.array(
            [self.slot_names.index(self.taxonomy.slot_of(c)) for c in self.category_names], np.int64
        )
        self.compat = self.taxonomy.compatibility_matrix(self.category_names)
        self.gender_names, self.gender_codes = label_codes([i.gender for i in items])
        self._unisex = self.gender_names.index("unisex") if "unisex" in self.gender_names else -2
        # Hedging an unsure gender needs items that fit anyone: unisex or without a gender.
        self._can_hedge = bool(
            ((self.gender_codes == self._unisex) | (self.gender_codes < 0)).any()
        )
        self.usage_names, self.usage_codes = label_codes([i.usage for i in items])
        self.rgb = rgb_array(artifact.colors)
        self.hsl = rgb_to_hsl(self.rgb).astype(np.float32)
        # What a request may filter on: the item fields and every attribute the catalogue has.
        self.filterable = frozenset(_ITEM_FIELDS).union(*(item.attributes.keys() for item in items))
        self._attribute_cache: dict[str, np.ndarray] = {}
        self._numeric_cache: dict[str, np.ndarray] = {}
        self.color_names = describe_colors(self.rgb)
        self._color_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stygig-color")
        self.exact = is_exhaustive(artifact.index)
        self._init_learned()

    def _init_learned(self) -> None:
        """Project every catalogue item once when the artifact has a compatibility model."""
        model = self.artifact.compat
        self.learned = model if model is not None and self.config.compat_mode != "rules" else None
        if self.learned is None:
            return
        from stygig.compat.features import item_features

        names = self.learned.categories
        item_categories = [self.category_names[c] for c in self.category_codes]
        feats = item_features(self.embeddings, self.rgb, item_categories, names)
        self._learned_vectors = self.learned.project(feats)
        self._learned_cats = feats.category
        lookup = {c: names.index(c) if c in names else -1 for c in self.category_names}
        self._learned_cat_of_code = np.array([lookup[c] for c in self.category_names], np.int64)
        ids = tuple(i.id for i in self.artifact.items)
        self._learned_cooc = self.learned.cooccurrence.codes(ids)

    def _learned_scores(self, parts: Sequence[_Part], cand: np.ndarray) -> np.ndarray:
        """The compatibility model's score of each candidate row given the query parts."""
        from stygig.compat.features import item_features

        assert self.learned is not None
        rows = [p.position for p in parts]
        vectors = np.empty((len(parts), self.learned.dim), np.float32)
        cats = np.empty(len(parts), np.int64)
        for n, p in enumerate(parts):
            cats[n] = int(self._learned_cat_of_code[p.category]) if p.category >= 0 else -1
            if p.position is not None:
                vectors[n] = self._learned_vectors[p.position]
            else:
                name = self.category_names[p.category] if p.category >= 0 else None
                feats = item_features(p.vector[None, :], p.rgb, [name], self.learned.categories)
                vectors[n] = self.learned.project(feats)[0]
        q_codes = np.array([-1 if r is None else self._learned_cooc[r] for r in rows], np.int64)
        return self._learned_against(vectors, cats, q_codes, cand)

    def _learned_against(
        self, vectors: np.ndarray, cats: np.ndarray, q_codes: np.ndarray, cand: np.ndarray
    ) -> np.ndarray:
        assert self.learned is not None
        cooc = self.learned.cooccurrence.lookup(q_codes, self._learned_cooc[cand])
        return self.learned.score(
            vectors, cats, self._learned_vectors[cand], self._learned_cats[cand], cooc
        )

    def _with_learned(
        self,
        parts: Sequence[_Part] | np.ndarray,
        cand: np.ndarray,
        rules: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The final score under ``compat_mode``, and the learned part (``None``: no model).

        ``parts`` are the query parts, or catalogue rows when every part is a catalogue item.
        """
        if self.learned is None:
            return rules, None
        if isinstance(parts, np.ndarray):
            learned = self._learned_against(
                self._learned_vectors[parts],
                self._learned_cats[parts],
                self._learned_cooc[parts],
                cand,
            )
        else:
            learned = self._learned_scores(parts, cand)
        if self.config.compat_mode == "learned":
            return learned.astype(np.float32), learned
        mixed = learned + np.float32(self.learned.rules_weight) * rules
        return mixed.astype(np.float32), learned

    @classmethod
    def from_path(cls, path: str | Path, **kwargs: Any) -> Recommender:
        """Load the artifact at ``path`` and its encoder."""
        return cls(Artifact.load(path), **kwargs)

    # -- embedding (separable so a server can micro-batch it) --------------------------------

    def prepare(self, images: Sequence[bytes | str | Path]) -> list[PreparedImage]:
        """Decode, preprocess and colour query photos."""
        return [prepare_image(img, self.encoder.preprocess) for img in images]

    def embed(self, prepared: Sequence[PreparedImage]) -> np.ndarray:
        """Encode prepared photos in one batch (whitened like the catalogue when it is)."""
        return self._encode([p.tensor for p in prepared])

    def _encode(self, tensors: Sequence[np.ndarray]) -> np.ndarray:
        if not tensors:
            return np.zeros((0, self.embeddings.shape[1]), np.float32)
        return self.project(self.encoder.encode(np.stack(tensors)))

    def project(self, vectors: np.ndarray) -> np.ndarray:
        """Map raw encoder outputs into the artifact's embedding space."""
        return vectors if self.whitening is None else self.whitening.apply(vectors)

    def recommend(self, query: Query, options: Options | None = None) -> Recommendation:
        """Photo(s) and/or item ids in, ranked items and an outfit out.

        The photos' colours are measured on a second thread while the encoder runs, since
        neither needs the other; ``timings_ms["total"]`` is the wall-clock time.
        """
        start = time.perf_counter()
        decoded = [decode_photo(img, self.encoder.preprocess) for img in query.images]
        colors = [self._color_pool.submit(_timed, color_summary, px) for _, px in decoded]
        t1 = time.perf_counter()
        vectors = self._encode([tensor for tensor, _ in decoded])
        t2 = time.perf_counter()
        measured = [future.result() for future in colors]
        t3 = time.perf_counter()
        prepared = [
            PreparedImage(tensor, color, {"color": ms})
            for (tensor, _), (color, ms) in zip(decoded, measured, strict=True)
        ]
        timings = {
            "decode": (t1 - start) * 1e3,
            "color": sum(ms for _, ms in measured),
            "embed": (t2 - t1) * 1e3,
            "color_wait": (t3 - t2) * 1e3,
        }
        rec = self.recommend_embedded(prepared, vectors, query.item_ids, options, timings)
        rec.timings_ms["total"] = round((time.perf_counter() - start) * 1e3, 3)
        return rec

    # -- everything after the embedding --------------------------------------------------------

    def _parts(
        self,
        prepared: Sequence[PreparedImage],
        vectors: np.ndarray,
        item_ids: Sequence[str],
        options: Options,
    ) -> list[_Part]:
        parts = [_Part(f"image[{i}]", vectors[i], p.color) for i, p in enumerate(prepared)]
        for item_id in item_ids:
            pos = self.position(item_id)
            parts.append(
                _Part(
                    f"item:{item_id}",
                    self.embeddings[pos],
                    {**self.artifact.colors[pos], "name": str(self.color_names[pos])},
                    position=pos,
                    category=int(self.category_codes[pos]),
                    category_source="catalog",
                )
            )
        if options.category is not None:
            stated = self.taxonomy.canonical(options.category)
            if stated is None or stated not in self.category_names:
                raise InvalidOptionsError(
                    "the stated category is not in this catalogue; "
                    f"known: {', '.join(self.category_names)}"
                )
            if len(prepared) != 1:
                raise InvalidOptionsError("'category' can only be stated for a single photo")
            parts[0].category = self.category_names.index(stated)
            parts[0].category_source = "stated"
        return parts

    def _neighbours(
        self, queries: np.ndarray, k: int, full: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ``(scores, ids)`` per query; from ``full`` (n, m) sims when already computed."""
        if full is None:
            return self.artifact.index.search(queries, k)
        return top_k(full.T, k, self._removed())

    def _candidate_pool(self, queries: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        """About ``candidate_pool`` nearest items, best first, the first ``fetch`` exactly the
        nearest. A slot-partitioned index gives each slot its share, so an outfit's other
        slots are in the pool however many near-copies of the query the catalogue holds."""
        index = self.artifact.index
        if isinstance(index, PartitionedIndex):
            share = -(-self.config.candidate_pool // len(index.parts))
            return index.search_each(queries, max(fetch, share))
        return index.search(queries, max(fetch, self.config.candidate_pool))

    def _removed(self) -> np.ndarray | None:
        """Rows removed from the index (tombstones): never neighbours, never candidates."""
        index = self.artifact.index
        return index.removed if index.n_removed else None

    def _vote(self, parts: list[_Part], scores: np.ndarray, ids: np.ndarray) -> None:
        """Infer each part's category (unless known), gender and usage from its neighbours."""
        k, k_attr = self.config.vote_k, self.config.attribute_vote_k
        own = [p.position for p in parts if p.position is not None]
        for part, row_s, row_i in zip(parts, scores, ids, strict=True):
            keep = (row_i >= 0) & ~np.isin(row_i, own)
            attr_ids, attr_s = row_i[keep][:k_attr], row_s[keep][:k_attr]
            nb_ids, nb_s = attr_ids[:k], attr_s[:k]
            cat_vote = vote(self.category_codes[nb_ids], nb_s)
            if part.category < 0:
                part.category = cat_vote.winner
            # Unisex neighbours say nothing about the shopper's gender: they abstain.
            genders = np.where(
                self.gender_codes[attr_ids] == self._unisex, -1, self.gender_codes[attr_ids]
            )
            gender = vote(genders, attr_s)
            part.gender_weights = {g: max(w, 0.0) for g, w in gender.similarity.items()}
            usage = vote(self.usage_codes[attr_ids], attr_s)
            part.info = {
                "votes": {self.category_names[c]: n for c, n in cat_vote.counts.items()},
                "neighbors": [
                    {
                        "id": self.artifact.items[i].id,
                        "category": self.category_names[self.category_codes[i]],
                        "similarity": round(float(s), 4),
                    }
                    for i, s in zip(nb_ids, nb_s, strict=True)
                ],
            }
            if part.position is not None:
                item = self.artifact.items[part.position]
                part.info["gender"], part.info["usage"] = item.gender, item.usage
            else:
                winner = weighted_winner(part.gender_weights)
                part.info["gender"] = self.gender_names[winner[0]] if winner else None
                part.info["gender_votes"] = {
                    self.gender_names[g]: n for g, n in gender.counts.items()
                }
                part.info["usage"] = self.usage_names[usage.winner] if usage.winner >= 0 else None

    def _query_gender(self, parts: list[_Part], options: Options) -> dict[str, Any]:
        """Whose items to recommend: the stated gender, a catalogue item's, or the photos' vote.

        Returns ``{"value", "source", "hedged"}`` (+ ``confidence`` and ``guess`` for a vote):
        ``value``'s items and unisex ones are recommended (``None``: no gender filter).
        The photos' gender votes are pooled (similarity-weighted, unisex neighbours abstain).
        When the winner holds less than ``gender_min_confidence`` of that weight the engine
        does not guess (``source`` is ``uncertain``): outfits are then ``hedged``, drawn from
        unisex items (or items without a gender) only, since they fit whoever the shopper is.
        Visual search (``similar``) is not hedged, and a catalogue without such items cannot
        be: there the best guess is used.
        """
        if options.gender:
            gender = options.gender.lower()
            if gender not in self.gender_names:
                raise InvalidOptionsError(
                    f"the stated gender is not in this catalogue; known: {self.gender_names}"
                )
            return {"value": gender, "source": "stated", "hedged": False}
        for part in parts:
            if part.position is not None and part.info.get("gender") not in (None, "unisex"):
                return {"value": part.info["gender"], "source": "item", "hedged": False}
        pooled: dict[int, float] = {}
        for part in parts:
            if part.position is None:
                for g, w in part.gender_weights.items():
                    pooled[g] = pooled.get(g, 0.0) + w
        winner = weighted_winner(pooled)
        if winner is None:
            return {"value": None, "source": "none", "hedged": False}
        name, confidence = self.gender_names[winner[0]], round(winner[1], 3)
        if winner[1] >= self.config.gender_min_confidence:
            return {"value": name, "source": "photo", "confidence": confidence, "hedged": False}
        hedged = options.mode == "outfit" and self._can_hedge
        return {
            "value": None if hedged or options.mode == "similar" else name,
            "source": "uncertain",
            "confidence": confidence,
            "guess": name,
            "hedged": hedged,
        }

    def _numeric_values(self, name: str) -> np.ndarray:
        """``name`` of every item as a float (NaN where missing or not a number), cached."""
        cached = self._numeric_cache.get(name)
        if cached is None:
            raw = self._attribute_values(name)
            cached = np.array([_to_float(v) for v in raw], np.float64)
            self._numeric_cache[name] = cached
        return cached

    def _attribute_values(self, name: str) -> np.ndarray:
        cached = self._attribute_cache.get(name)
        if cached is None:
            values = []
            for item in self.artifact.items:
                raw = getattr(item, name) if name in _ITEM_FIELDS else item.attributes.get(name)
                values.append(None if raw is None else str(raw).strip().lower())
            cached = np.array(values, dtype=object)
            self._attribute_cache[name] = cached
        return cached

    def _filter_mask(
        self,
        options: Options,
        parts: list[_Part],
        gender: dict[str, Any],
        rows: np.ndarray | None = None,
    ) -> np.ndarray:
        """Which items pass every filter: over the whole catalogue, or over ``rows`` only."""
        n = len(self.artifact.items) if rows is None else len(rows)
        sel: slice | np.ndarray = slice(None) if rows is None else rows
        removed = self._removed()
        mask = np.ones(n, dtype=bool) if removed is None else ~removed[sel]
        value = gender["value"]
        if (value and value != "unisex") or gender["hedged"]:
            codes = self.gender_codes[sel]
            # The same gender (none when hedging), unisex, or items without a gender (-1).
            fits = (codes == self._unisex) | (codes < 0)
            if value:
                fits |= codes == self.gender_names.index(value)
            mask &= fits
        for name, include in (
            ("include_categories", True),
            ("exclude_categories", False),
        ):
            wanted = getattr(options, name)
            if not wanted:
                continue
            codes_wanted = []
            for cat in wanted:
                canonical = self.taxonomy.canonical(cat)
                if canonical is None:
                    raise InvalidOptionsError(f"{name}: a category is not in the taxonomy")
                if canonical in self.category_names:
                    codes_wanted.append(self.category_names.index(canonical))
            hit = np.isin(self.category_codes[sel], codes_wanted)
            mask &= hit if include else ~hit
        excluded = [
            self.artifact.positions[i] for i in options.exclude_ids if i in self.artifact.positions
        ]
        excluded += [p.position for p in parts if p.position is not None]
        if excluded:
            if rows is None:
                mask[excluded] = False
            else:
                mask &= ~np.isin(rows, excluded)
        for name, cond in options.filters.items():
            mask &= self._attribute_mask(name, cond)[sel]
        return mask

    def _check_filters(self, filters: dict[str, Any]) -> None:
        """Only the catalogue's own attributes can be filtered on: the per-attribute caches
        are keyed by these names, so a client can never grow them beyond the catalogue."""
        unknown = [name for name in filters if name not in self.filterable]
        if unknown:
            raise InvalidOptionsError(
                f"{len(unknown)} filter(s) name no attribute of this catalogue; "
                f"filterable: {sorted(self.filterable)}"
            )

    def _attribute_mask(self, name: str, cond: Any) -> np.ndarray:
        if isinstance(cond, dict):
            # Options validated the shape: {"min"?: number, "max"?: number}.
            values = self._numeric_values(name)
            ok: np.ndarray = ~np.isnan(values)
            if "min" in cond:
                ok &= values >= float(cond["min"])
            if "max" in cond:
                ok &= values <= float(cond["max"])
            return ok
        wanted = cond if isinstance(cond, list) else [cond]
        values = self._attribute_values(name)
        return np.isin(values, [str(w).strip().lower() for w in wanted])

    def recommend_embedded(
        self,
        prepared: Sequence[PreparedImage],
        vectors: np.ndarray,
        item_ids: Sequence[str] = (),
        options: Options | None = None,
        timings: dict[str, float] | None = None,
    ) -> Recommendation:
        """The V4 pipeline after embedding: search, vote, score, rank, assemble."""
        options = options or Options()
        self._check_filters(options.filters)
        timings = dict(timings or {})
        t = time.perf_counter()
        parts = self._parts(prepared, vectors, item_ids, options)
        queries = np.stack([p.vector for p in parts]).astype(np.float32)
        # Exact catalogues: one matrix product serves the vote and every candidate's similarity.
        full = self.embeddings @ queries.T if self.exact else None
        own = sum(p.position is not None for p in parts)
        fetch = max(self.config.vote_k, self.config.attribute_vote_k) + own
        pool: tuple[np.ndarray, np.ndarray] | None = None
        if full is None and len(parts) == 1:
            # Approximate index, one query vector: a single search yields both the voters
            # (its head) and the candidate pool with its inner products (exact for HNSW-Flat and
            # IVF-Flat, within ~1e-4 for IVF lists stored in float16).
            pool = self._candidate_pool(queries, fetch)
            nb_scores, nb_ids = pool[0][:, :fetch], pool[1][:, :fetch]
        else:
            nb_scores, nb_ids = self._neighbours(queries, fetch, full)
        t_search = time.perf_counter()
        self._vote(parts, nb_scores, nb_ids)
        gender = self._query_gender(parts, options)
        t_vote = time.perf_counter()
        timings["search"] = (t_search - t) * 1e3
        timings["vote"] = (t_vote - t_search) * 1e3

        # Candidates: every item for exact indexes. With an approximate index: the query's
        # nearest pool, filtered; a selective filter (categories, attributes) is applied to the
        # whole catalogue first, and scored exactly when few items pass, so filters never cut
        # the results short.
        selective = bool(options.include_categories or options.filters or gender["hedged"])
        pool_sims: np.ndarray | None = None
        mask = self._filter_mask(options, parts, gender) if self.exact or selective else None
        if mask is not None and (self.exact or mask.sum() <= self.config.candidate_pool):
            cand = np.flatnonzero(mask)
        else:
            if pool is None:
                pool = self._candidate_pool(queries.mean(axis=0)[None, :], 0)
            found = pool[1][0] >= 0
            ids, sims_found = pool[1][0][found], pool[0][0][found]
            keep_pool = (
                mask[ids] if mask is not None else self._filter_mask(options, parts, gender, ids)
            )
            cand = ids[keep_pool]
            if len(parts) == 1:
                pool_sims = sims_found[keep_pool]
        q_cats = np.array([p.category for p in parts if p.category >= 0], np.int64)
        q_slots = set(self.category_slot[q_cats].tolist())
        c_cat = self.category_codes[cand]
        in_q_slots = np.isin(self.category_slot[c_cat], list(q_slots))
        if options.mode == "outfit":
            compatible = self._compatible(q_cats, c_cat)
            keep = compatible & ~in_q_slots
        else:
            compatible = np.zeros(len(cand), bool)
            keep = in_q_slots if q_slots else np.ones(len(cand), bool)
        cand, c_cat, compatible = cand[keep], c_cat[keep], compatible[keep]
        if pool_sims is not None:
            pool_sims = pool_sims[keep]
        t_cand = time.perf_counter()
        timings["search"] += (t_cand - t_vote) * 1e3

        if full is not None:
            sims = full[cand].mean(axis=1)
        elif pool_sims is not None:
            sims = pool_sims
        else:
            sims = (self.embeddings[cand] @ queries.T).mean(axis=1)
        q_hsl = rgb_to_hsl(np.stack([p.rgb for p in parts]))
        harm, rules = self._harmony(q_hsl, cand)
        use_color = options.use_color and options.mode == "outfit"
        learned: np.ndarray | None = None
        if options.mode == "outfit":
            score, factor = self._v4(sims, harm, compatible, use_color)
            score, learned = self._with_learned(parts, cand, score)
        else:
            score, factor = sims.astype(np.float32), np.ones(len(cand), np.float32)
        t_score = time.perf_counter()
        timings["score"] = (t_score - t_cand) * 1e3

        ranked = self._rank(cand, c_cat, score, options)
        rows = {
            int(j): self._item_row(
                int(cand[j]),
                score[j],
                sims[j],
                harm[j],
                int(rules[j]),
                factor[j],
                parts[0],
                options.mode,
                use_color,
                None if learned is None else float(learned[j]),
            )
            for group in ranked.values()
            for j in group
        }
        by_category = {
            self.category_names[c]: [rows[int(j)] for j in group] for c, group in ranked.items()
        }
        flat = sorted(rows.values(), key=lambda r: (-r["score"], r["id"]))[: options.k_total]
        outfit = (
            self._outfit(parts, ranked, cand, score, rows) if options.mode == "outfit" else None
        )
        timings["rank"] = (time.perf_counter() - t_score) * 1e3
        timings["total"] = sum(v for k, v in timings.items() if k != "total")
        return Recommendation(
            mode=options.mode,
            query=[self._part_row(p) for p in parts],
            items=flat,
            by_category=by_category,
            outfit=outfit,
            timings_ms={k: round(v, 3) for k, v in timings.items()},
            gender=gender,
            artifact={"encoder": self.encoder.name, "items": len(self.artifact.items)},
        )

    def score_items(
        self, item_ids: Sequence[str], candidate_ids: Sequence[str], *, use_color: bool = True
    ) -> np.ndarray:
        """Scores of ``candidate_ids`` as completions of the outfit ``item_ids``.

        The same formula as :meth:`recommend` (similarity averaged over the query items, harmony
        averaged likewise, boost when compatible with every query item; then the learned
        compatibility model per ``compat_mode`` when the artifact has one), without filters or
        ranking: what fill-in-the-blank evaluation needs.
        """
        q = np.array([self.position(i) for i in item_ids], np.int64)
        c = np.array([self.position(i) for i in candidate_ids], np.int64)
        sims = (self.embeddings[c] @ self.embeddings[q].T).mean(axis=1)
        harm, _ = self._harmony(self.hsl[q], c)
        compatible = self._compatible(self.category_codes[q], self.category_codes[c])
        score, _ = self._v4(sims, harm, compatible, use_color)
        return self._with_learned(q, c, score)[0]

    def _compatible(self, query_cats: np.ndarray, cand_cats: np.ndarray) -> np.ndarray:
        """Whether each candidate category is compatible with every query category."""
        return np.asarray(self.compat[query_cats][:, cand_cats].all(axis=0))

    def _v4(
        self, sims: np.ndarray, harm: np.ndarray, compatible: np.ndarray, use_color: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """The V4 rules' score and boost factor (:func:`stygig.scoring.combine`)."""
        return combine(
            sims,
            harm,
            compatible,
            boost=self.taxonomy.boost,
            config=self.config,
            use_harmony=use_color,
        )

    def _harmony(self, query_hsl: np.ndarray, cand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Harmony of each candidate averaged over the query colours ``(m, 3)``, and the rule
        that decided it against the first query colour (the one reasons name)."""
        cand_hsl = self.hsl[cand]
        per_query = [harmony(h, cand_hsl, self.harmony_rules) for h in query_hsl]
        if not per_query:
            return np.zeros(len(cand), np.float32), np.zeros(len(cand), np.intp)
        return np.mean([h[0] for h in per_query], axis=0), per_query[0][1]

    def position(self, item_id: str) -> int:
        """The catalogue row of ``item_id`` (:class:`NotFoundError`, 404, when unknown)."""
        pos = self.artifact.positions.get(item_id)
        if pos is None:
            raise NotFoundError("an item id is not in the catalogue", code="unknown_item")
        return pos

    def _rank(
        self, cand: np.ndarray, c_cat: np.ndarray, score: np.ndarray, options: Options
    ) -> dict[int, np.ndarray]:
        """Per category: the top-k candidate positions (into ``cand``), diversified by MMR."""
        diversity = self.config.diversity if options.diversity is None else options.diversity
        # Seeded jitter far below float32 score resolution breaks exact ties reproducibly.
        jitter = np.random.default_rng(options.seed).random(len(score)) * 1e-12
        key = score.astype(np.float64) - jitter
        depth = options.k * 4  # MMR picks k from each category's best `depth`
        counts = np.bincount(c_cat, minlength=int(c_cat.max(initial=-1)) + 1)
        cats = np.flatnonzero(counts)
        # Only the head of the ranking can hold any category's best `depth`: sort just that head
        # (argpartition is linear), and fall back to the category's own rows when it is thin.
        head = min(len(key), depth * len(cats) * 2)
        top = np.argpartition(-key, head - 1)[:head] if 0 < head < len(key) else np.arange(len(key))
        top = top[np.argsort(-key[top], kind="stable")]
        top_cats = c_cat[top]
        out: dict[int, np.ndarray] = {}
        for c in cats:
            members = top[top_cats == c][:depth]
            if len(members) < min(depth, counts[c]):
                rows = np.flatnonzero(c_cat == c)
                members = rows[np.argsort(-key[rows], kind="stable")][:depth]
            pick = mmr(score[members], self.embeddings[cand[members]], options.k, diversity)
            out[int(c)] = members[pick]
        return dict(sorted(out.items(), key=lambda kv: -float(score[kv[1][0]])))

    def _outfit(
        self,
        parts: list[_Part],
        ranked: dict[int, np.ndarray],
        cand: np.ndarray,
        score: np.ndarray,
        rows: dict[int, dict[str, Any]],
    ) -> dict[str, Any]:
        """One item per free slot, each compatible with the query and the items already picked."""
        chosen_cats = [p.category for p in parts if p.category >= 0]
        taken = {int(self.category_slot[c]) for c in chosen_cats}
        slots: dict[str, dict[str, Any]] = {}
        by_slot: dict[int, list[int]] = {}
        for c, group in ranked.items():
            by_slot.setdefault(int(self.category_slot[c]), []).extend(int(j) for j in group)
        order = sorted(by_slot, key=lambda s: self.taxonomy.slots[self.slot_names[s]].outfit_order)
        for s in order:
            if s in taken or self.slot_names[s] == "other":
                continue
            for j in sorted(by_slot[s], key=lambda j: -float(score[j])):
                cat = int(self.category_codes[cand[j]])
                if all(self.compat[cat, other] for other in chosen_cats):
                    slots[self.slot_names[s]] = rows[j]
                    chosen_cats.append(cat)
                    taken.add(s)
                    break
        total = sum(r["score"] for r in slots.values())
        return {
            "slots": slots,
            "item_ids": [r["id"] for r in slots.values()],
            "score": round(total, 4),
        }

    def _item_row(
        self,
        pos: int,
        score: float,
        sim: float,
        harm: float,
        rule: int,
        factor: float,
        primary: _Part,
        mode: str,
        use_color: bool,
        learned: float | None = None,
    ) -> dict[str, Any]:
        item = self.artifact.items[pos]
        color = self.artifact.colors[pos]
        rgb = [int(v) for v in self.rgb[pos]]
        q_cat = self.category_names[primary.category] if primary.category >= 0 else "query"
        if mode == "outfit":
            reason = f"{q_cat} -> {item.category} compatible" if factor > 1 else f"{item.category}"
            if use_color:
                pair = f"{primary.color_name} + {self.color_names[pos]}"
                reason = f"{pair}: {HARMONY_PHRASES[rule]}; {reason}"
        else:
            reason = f"looks similar (cosine {sim:.2f})"
        return {
            "id": item.id,
            "name": item.name,
            "category": item.category,
            "slot": self.taxonomy.slot_of(item.category),
            "gender": item.gender,
            "price": item.price,
            "brand": item.brand,
            "rgb": rgb,
            "hex": color.get("hex"),
            "hsl": [round(v, 4) for v in self.hsl[pos].tolist()],
            "score": round(float(score), 4),
            "similarity": round(float(sim), 4),
            "harmony": round(float(harm), 4),
            "harmony_rule": HARMONY_RULE_NAMES[rule] if mode == "outfit" else None,
            "boost": round(float(factor), 4),
            "learned": None if learned is None else round(learned, 4),
            "reason": reason,
        }

    def _part_row(self, part: _Part) -> dict[str, Any]:
        rgb = [int(v) for v in part.rgb]
        category = self.category_names[part.category] if part.category >= 0 else None
        return {
            "source": part.source,
            "category": category,
            "category_source": part.category_source,
            "slot": self.taxonomy.slot_of(category) if category else None,
            **part.info,
            "rgb": rgb,
            "hex": part.color.get("hex"),
            "color_name": part.color_name,
            "hsl": [round(float(v), 4) for v in rgb_to_hsl(part.rgb)],
            "palette": part.color.get("palette", []),
        }


def _to_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _timed(
    fn: Callable[[np.ndarray], dict[str, Any]], arg: np.ndarray
) -> tuple[dict[str, Any], float]:
    t0 = time.perf_counter()
    result = fn(arg)
    return result, (time.perf_counter() - t0) * 1e3

"""The recommender: load an artifact once, then ``prepare -> embed -> answer`` per query.

One request runs the V4 pipeline (see ``docs/ARCHITECTURE.md``)::

    decode + colour -> embed -> search -> top-5 vote -> score (vectorised) -> rank + outfit

This module orchestrates; the steps live beside it: the catalogue's columns and filters
(:mod:`stygig.columns`), the gender decision (:mod:`stygig.gender`), the scoring, ranking and
outfit assembly (:mod:`stygig.scoring`), the learned compatibility (:mod:`stygig.compat.scorer`)
and the answer's parts (:mod:`stygig.response`). The embed step is the caller's
(:mod:`stygig.pipeline`), so a server can micro-batch it and a batch run embed a group at once.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from stygig.answer import (
    GenderDecision,
    Outfit,
    OutfitItemScore,
    OutfitScore,
    PairScore,
    Recommendation,
    ScoringKind,
)
from stygig.artifact import ONNX_FILE, Artifact, encoder_pooling
from stygig.catalog.changes import CatalogChange
from stygig.category_head import (
    GENDER_PAIR,
    CategoryHead,
    GenderHead,
    QueryHead,
    gender_stack_features,
    merge_shares,
    neighbour_votes,
    unmodelled_gender,
)
from stygig.columns import CatalogColumns
from stygig.compat.scorer import LearnedScorer
from stygig.encoders import Encoder, load_encoder, load_onnx_encoder
from stygig.errors import ConfigError, InvalidOptionsError
from stygig.familiarity import NEAREST, likeness
from stygig.features import color_method
from stygig.gender import StackedGender, decide_gender
from stygig.harmony import (
    HARMONY_RULE_NAMES,
    describe_color,
    harmony,
    neutral_colors,
    rgb_array,
    rgb_to_hsl,
)
from stygig.index import LiveIndex, PartitionedIndex, similarities
from stygig.pipeline import PreparedQuery, decode_query
from stygig.recommendation import Options, OutfitRequest, Query
from stygig.response import HeadState, PartState, ScoreParts, query_part, recommended_items
from stygig.scan import Scores
from stygig.scoring import (
    ScoringConfig,
    assemble_outfit,
    combine,
    rank_by_category,
    vote,
    weighted_winner,
)
from stygig.snapshot import CatalogSnapshot, apply_changes, snapshot_of

__all__ = [
    "Options",
    "Query",
    "Recommendation",
    "Recommender",
    "load_artifact_encoder",
    "scoring_kind",
]

log = logging.getLogger(__name__)

# Options, Query (stygig.recommendation) and Recommendation (stygig.answer) are part of this API.


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
        pooling=encoder_pooling(info),
    )


class Recommender:
    """Loads an artifact once; answers queries (thread-safe for reads).

    The pipeline is three calls, so each caller can choose how photos are embedded
    (:mod:`stygig.pipeline`): :meth:`prepare`, :meth:`embed`, :meth:`answer`;
    :meth:`recommend` runs all three in line.

    The catalogue is a :class:`~stygig.snapshot.CatalogSnapshot`: :meth:`answer` reads the
    current one once, at its start, and uses it throughout; :meth:`apply` publishes the next
    one with a single assignment (one writer at a time: :mod:`stygig.living` serialises them),
    so answers never see half a change and never wait for one.
    """

    def __init__(
        self,
        artifact: Artifact,
        *,
        encoder: Encoder | None = None,
        config: ScoringConfig | None = None,
    ) -> None:
        self.encoder = encoder if encoder is not None else load_artifact_encoder(artifact)
        info = artifact.manifest["encoder"]
        if self.encoder.dim != int(info["dim"]) or self.encoder.name != info["name"]:
            raise ConfigError(
                f"encoder {self.encoder.name} ({self.encoder.dim}-d) does not match the "
                f"artifact's {info['name']} ({info['dim']}-d): mixing encoders is not allowed"
            )
        pooling, pools = encoder_pooling(info), getattr(self.encoder, "pooling", None)
        if pooling is not None and (pools or "avg") != pooling:
            raise ConfigError(
                f"encoder {self.encoder.name} pools by {pools}, the artifact's vectors by "
                f"{pooling}: queries would not be embedded like its rows "
                "(load_artifact_encoder gives the artifact's own)"
            )
        self.whitening = artifact.whitening
        measured = (artifact.manifest.get("build") or {}).get("color_method")
        if measured != color_method():
            log.warning(
                "the catalogue's colours were measured by another colour step (%s; this "
                "engine: %s): colour harmony compares unlike measurements until it is rebuilt",
                measured or "not recorded",
                color_method(),
            )
        self.config = config or ScoringConfig.load()
        self.harmony_rules = self.config.harmony
        self.taxonomy = artifact.taxonomy
        self._neutral_for: tuple[np.ndarray, np.ndarray] | None = None
        self._color_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stygig-color")
        # field -> (head, the head folded for queries): depends on the head and whitening only
        self._folded_heads: dict[str, tuple[CategoryHead, QueryHead | None]] = {}
        # field -> (head, label names, each name's column in the head)
        self._head_columns: dict[str, tuple[CategoryHead, list[str], np.ndarray]] = {}
        self._snapshot = snapshot_of(
            artifact,
            encoder=self.encoder.name,
            compat_mode=self.config.compat_mode,
            scan=self.config.exact_scan,
        )

    # -- the catalogue now: one snapshot, swapped whole ----------------------------------------

    @property
    def snapshot(self) -> CatalogSnapshot:
        """The catalogue as a request that starts now sees it."""
        return self._snapshot

    @property
    def artifact(self) -> Artifact:
        """The current snapshot's artifact view (items, colours, embeddings, index)."""
        return self._snapshot.artifact

    @property
    def columns(self) -> CatalogColumns:
        return self._snapshot.columns

    @property
    def embeddings(self) -> np.ndarray:
        return self._snapshot.artifact.embeddings

    @property
    def exact(self) -> bool:
        return self._snapshot.exact

    @property
    def learned(self) -> LearnedScorer | None:
        return self._snapshot.learned

    def apply(self, changes: Sequence[CatalogChange], sequence: int) -> CatalogSnapshot:
        """Apply ``changes`` (change-log record ``sequence``) and publish the result; on any
        error (unknown id, invalid row) nothing changes. Callers serialise writers."""
        new = apply_changes(self._snapshot, changes, sequence, compat_mode=self.config.compat_mode)
        self._snapshot = new  # one assignment: the swap requests see
        return new

    def publish(self, snapshot: CatalogSnapshot) -> None:
        """Make ``snapshot`` current (one made by :func:`~stygig.snapshot.apply_changes`)."""
        self._snapshot = snapshot

    @classmethod
    def from_path(cls, path: str | Path, **kwargs: Any) -> Recommender:
        """Load the artifact at ``path`` and its encoder."""
        return cls(Artifact.load(path), **kwargs)

    def position(self, item_id: str) -> int:
        """The catalogue row of ``item_id`` (:class:`NotFoundError`, 404, when unknown)."""
        return self.columns.position(item_id)

    # -- the pipeline: prepare -> embed -> answer ---------------------------------------------

    def prepare(
        self,
        query: Query,
        options: Options | Mapping[str, Any] | None = None,
        *,
        color_beside: bool = True,
        load: Callable[[str | Path | bytes], str | Path | bytes] | None = None,
    ) -> PreparedQuery:
        """Check ``options`` and the item ids against the catalogue, then decode and validate
        the photos (all before any encoder work, so a mistake costs nothing).

        ``color_beside``: measure colours on the recommender's colour thread, beside the
        encoder (requests); off, they are measured here (batch runs, whose workers are busy
        anyway). ``load`` reads a location first (batch inputs).
        """
        options = _options(options)
        self.check(options, query.item_ids, len(query.images))
        pool = self._color_pool if color_beside else None
        return decode_query(query, options, self.encoder.preprocess, color_pool=pool, load=load)

    def check(
        self, options: Options, item_ids: Sequence[str] = (), photos: int | None = None
    ) -> None:
        """What :meth:`prepare` refuses before it reads a photo: ``options`` and ``item_ids``
        against the catalogue (unknown filters, categories, genders and ids, a candidate that
        is a query item) and a stated category without exactly one of ``photos`` (None: the
        number is not known yet, e.g. a job whose input is stored)."""
        _check_request(self.columns, options, item_ids)
        if options.category is not None and photos is not None and photos != 1:
            raise InvalidOptionsError("'category' can only be stated for a single photo")

    def prepare_embedded(
        self,
        vectors: np.ndarray,
        colors: Sequence[dict[str, Any]],
        options: Options | Mapping[str, Any] | None = None,
        item_ids: Sequence[str] = (),
    ) -> PreparedQuery:
        """:meth:`prepare` for photos already embedded and coloured (e.g. catalogue rows
        standing in for photos in evaluation): checked the same way, no encoder needed."""
        options = _options(options)
        _check_request(self.columns, options, item_ids)
        return PreparedQuery.precomputed(vectors, colors, options, item_ids)

    def embed(self, tensors: Sequence[np.ndarray]) -> np.ndarray:
        """Encode photos in one batch (whitened like the catalogue when it is)."""
        if not tensors:
            return np.zeros((0, self.embeddings.shape[1]), np.float32)
        # One photo (most requests): a view, not a copy of its 0.6 MB into a new batch array.
        batch = tensors[0][None] if len(tensors) == 1 else np.stack(tensors)
        return self.project(self.encoder.encode(batch))

    def project(self, vectors: np.ndarray) -> np.ndarray:
        """Map raw encoder outputs into the artifact's embedding space."""
        return vectors if self.whitening is None else self.whitening.apply(vectors)

    def recommend(
        self, query: Query, options: Options | Mapping[str, Any] | None = None
    ) -> Recommendation:
        """Photo(s) and/or item ids in, ranked items and an outfit out: the pipeline in line.

        The photos' colours are measured on a second thread while the encoder runs.
        """
        prepared = self.prepare(query, options)
        t0 = time.perf_counter()
        vectors = self.embed(prepared.tensors)
        if prepared.tensors:
            prepared.timings.embed = (time.perf_counter() - t0) * 1e3
        return self.answer(prepared, vectors)

    def answer(self, prepared: PreparedQuery, vectors: np.ndarray | None = None) -> Recommendation:
        """The V4 pipeline after embedding: search, vote, score, rank, assemble.

        ``vectors``: the photos' embeddings from the caller's embed step (default: the
        query's precomputed ones).
        """
        if vectors is None:
            vectors = prepared.vectors
        if vectors is None or len(vectors) != prepared.photos:
            raise ValueError("answer() needs one embedding per photo of the prepared query")
        options = prepared.options
        timings = prepared.timings
        st = self._snapshot  # the catalogue this answer reads, start to end
        cols = st.columns
        embeddings = st.rows  # on-disk embeddings: the index's own rows
        if prepared.photos:
            vectors = np.asarray(vectors)
            width = st.artifact.embeddings.shape[1]
            if vectors.ndim != 2 or vectors.shape[1] != width:
                raise ValueError(
                    f"answer() needs embeddings of shape (photos, {width}), "
                    f"not {tuple(vectors.shape)}"
                )
            if not np.isfinite(vectors).all():
                raise ValueError("answer() needs finite embeddings (one holds NaN or infinity)")
        measured = [f.result() for f in prepared.colors]
        if measured:
            timings.color = sum(ms for _, ms in measured)
        t = time.perf_counter()
        parts = self._parts(st, [c for c, _ in measured], vectors, prepared.item_ids, options)
        queries = np.stack([p.vector for p in parts]).astype(np.float32)
        # Exact catalogues: one scan of every row serves the vote and every candidate's
        # similarity (int8 above a few thousand rows, refined in float32 where it matters).
        # An approximate index over no more rows than the candidate pool would return fewer
        # than it promises (HNSW's graph, IVF's probed lists: 356 of 2,048 asked at 2k items):
        # every row is scored exactly instead, as an exact catalogue is.
        exact = st.exact or (
            isinstance(embeddings, np.ndarray) and len(embeddings) <= self.config.candidate_pool
        )
        full = Scores(embeddings, queries, st.scan) if exact else None
        own = [p.position for p in parts if p.position is not None]
        removed = _removed(st)  # rows taken out of the index: never neighbours nor candidates
        stack = st.artifact.heads.get("gender")  # its features read the k it was fitted on
        stack_k = stack.k if isinstance(stack, GenderHead) else 0
        head = st.artifact.heads.get("category") if options.use_category_head else None
        head_k = head.vote_k if head is not None else 0  # its vote may read more neighbours
        wanted = (self.config.vote_k, self.config.attribute_vote_k, stack_k, head_k, NEAREST)
        fetch = max(wanted) + len(own)
        pool: tuple[np.ndarray, np.ndarray] | None = None
        if full is None and len(parts) == 1:
            # Approximate index, one query vector: a single search yields both the voters
            # (its head) and the candidate pool with its inner products (exact for HNSW-Flat and
            # IVF-Flat, within ~1e-4 for IVF lists stored in float16).
            pool = self._candidate_pool(st, queries, fetch)
            nb_scores, nb_ids = pool[0][:, :fetch], pool[1][:, :fetch]
        elif full is None:
            nb_scores, nb_ids = st.artifact.index.search(queries, fetch)
        else:
            nb_scores, nb_ids = full.nearest(fetch, removed)
        t_search = time.perf_counter()
        self._vote(st, parts, nb_scores, nb_ids, own, options)
        gender = decide_gender(
            stated=options.gender,
            item_genders=[p.gender for p in parts if p.position is not None],
            photo_votes=[p.gender_weights for p in parts if p.position is None],
            names=cols.gender_names,
            min_confidence=self.config.gender_min_confidence,
            mode=options.mode,
            can_hedge=cols.can_hedge,
            stacked=self._stacked_gender(st, parts, options),
        )
        t_vote = time.perf_counter()
        timings.vote = (t_vote - t_search) * 1e3

        # Candidates: every item for exact indexes. With an approximate index: the query's
        # nearest pool, filtered; a selective filter (categories, attributes) is applied to the
        # whole catalogue first, and scored exactly when few items pass, so filters never cut
        # the results short.
        selective = bool(options.include_categories or options.filters or gender.hedged)
        pool_sims: np.ndarray | None = None
        given = options.candidate_ids
        mask = (
            cols.filter_mask(options, gender, own, removed)
            if (exact or selective) and not given
            else None
        )
        if given:
            # The caller's candidates, in their order: the options' own filters still apply;
            # neither the gender voted from a photo nor availability does (the caller chose
            # these: a sold-out one is ranked, marked available: false; it was dropped without
            # a word, review, session 42).
            cand = np.array(
                [cols.position(i, f"candidate_ids[{n}]") for n, i in enumerate(given)], np.int64
            )
            stated = gender if gender.source == "stated" else _NO_GENDER
            chosen = dataclasses.replace(options, include_unavailable=True)
            cand = cand[cols.filter_mask(chosen, stated, own, removed, cand)]
        elif mask is not None and (exact or mask.sum() <= self.config.candidate_pool):
            cand = np.flatnonzero(mask)
        else:
            if pool is None:
                pool = self._candidate_pool(st, queries.mean(axis=0)[None, :], 0)
            found = pool[1][0] >= 0
            ids, sims_found = pool[1][0][found], pool[0][0][found]
            keep_pool = (
                mask[ids]
                if mask is not None
                else cols.filter_mask(options, gender, own, removed, ids)
            )
            cand = ids[keep_pool]
            if len(parts) == 1:
                pool_sims = sims_found[keep_pool]
        q_cats = np.array([p.category for p in parts if p.category >= 0], np.int64)
        q_slots = cols.category_slot[q_cats]  # one per query part; repeats do no harm
        c_cat = cols.category_codes[cand]
        # Per category first (tens of them), then one lookup per candidate. A comparison
        # table, not np.unique + np.isin: their sorting costs ~0.1 ms with cold caches.
        in_q_slots = (cols.category_slot[:, None] == q_slots[None, :]).any(axis=1)[c_cat]
        if options.mode == "outfit":
            compatible = _compatible(cols, q_cats, c_cat)
            keep = compatible & ~in_q_slots
        else:
            compatible = np.zeros(len(cand), bool)
            keep = in_q_slots if len(q_slots) else np.ones(len(cand), bool)
        if given:  # every given candidate is scored; an incompatible one gets no boost
            keep = np.ones(len(cand), bool)
        cand, c_cat, compatible = cand[keep], c_cat[keep], compatible[keep]
        if pool_sims is not None:
            pool_sims = pool_sims[keep]
        t_cand = time.perf_counter()
        timings.search = (t_search - t + t_cand - t_vote) * 1e3

        if full is not None:
            if given:  # few: all in float32 now
                full.exact(cand)
            sims = full.values[cand].mean(axis=1)
        elif pool_sims is not None:
            sims = pool_sims
        else:
            sims = similarities(embeddings[cand], queries).mean(axis=1)
        q_hsl = np.stack([p.hsl for p in parts])
        harm, rules = self._harmony(cols, q_hsl, cand)
        use_color = options.use_color and options.mode == "outfit"
        learned: np.ndarray | None = None
        mixer = st.learned if options.mode == "outfit" else None
        if options.mode == "outfit":
            score, factor = self._v4(sims, harm, compatible, use_color)
            if mixer is not None:
                view = mixer.query_vectors(
                    [p.position for p in parts],
                    queries,
                    np.stack([p.rgb for p in parts]),
                    [p.category for p in parts],
                )
                score, learned = mixer.score(view, cand, score)
        else:
            score, factor = sims.astype(np.float32), np.ones(len(cand), np.float32)
        scored = ScoreParts(cand, score, sims, harm, rules, factor, learned)
        t_score = time.perf_counter()
        timings.score = (t_score - t_cand) * 1e3

        refine: Callable[[np.ndarray], np.ndarray] | None = None
        margin = 0.0
        if full is not None and full.approximate and not given:
            # A similarity moves a score by at most `per_sim` per unit: a row whose score could
            # reach a category's ranking within the scan's bound is scored again in float32.
            per_sim = 1.0
            if options.mode == "outfit":
                per_sim = self.config.similarity_weight * max(self.taxonomy.boost, 1.0)
                per_sim *= 1.0 if mixer is None else mixer.rules_share
            margin = 2.0 * full.slack * per_sim * 1.001 + 1e-6

            def refine(at: np.ndarray) -> np.ndarray:
                sims[at] = full.exact(cand[at]).mean(axis=1)
                if options.mode != "outfit":
                    score[at] = sims[at]
                    return score
                v4, factor[at] = self._v4(sims[at], harm[at], compatible[at], use_color)
                score[at] = v4 if mixer is None or learned is None else mixer.mix(learned[at], v4)
                return score

        diversity = options.diversity
        if diversity is None:  # given candidates: ranked by score alone unless asked
            diversity = 0.0 if given else self.config.diversity
        ranked = rank_by_category(
            score,
            c_cat,
            embeddings,
            cand,
            k=options.k,
            diversity=diversity,
            seed=options.seed,
            refine=refine,
            margin=margin,
        )
        primary = parts[0]
        q_name = cols.category_names[primary.category] if primary.category >= 0 else "query"
        shown = np.concatenate(list(ranked.values())) if ranked else np.zeros(0, np.int64)
        if given:  # the answer's items: the best k_total candidates, whatever their category
            best = np.argsort(-score, kind="stable")[: options.k_total]
            shown = np.union1d(shown, best)
        if refine is not None:  # every similarity an answer shows is float32 (a score of the
            refine(shown)  # learned model alone ranks without them, so they may not be yet)
        made = recommended_items(
            cols,
            scored,
            shown,
            query_category=q_name,
            query_color=primary.color_name,
            mode=options.mode,
            use_color=use_color,
        )
        rows = dict(zip(shown.tolist(), made, strict=True))
        by_category = {
            cols.category_names[c]: [rows[int(j)] for j in group] for c, group in ranked.items()
        }
        flat = sorted(rows.values(), key=lambda r: (-r.score, r.id))[: options.k_total]
        outfit = None
        if options.mode == "outfit":
            picked = assemble_outfit(
                ranked,
                score,
                cols.category_slot,
                [self.taxonomy.slots[s].outfit_order for s in cols.slot_names],
                cols.compat,
                q_cats.tolist(),
                [n for n, name in enumerate(cols.slot_names) if name == "other"],
            )
            slots = {cols.slot_names[s]: rows[j] for s, j in picked.items()}
            outfit = Outfit(
                slots,
                [r.id for r in slots.values()],
                round(sum(r.score for r in slots.values()), 4),
            )
        query_parts = [query_part(cols, p) for p in parts]
        end = time.perf_counter()
        timings.rank = (end - t_score) * 1e3
        timings.total = (end - prepared.started) * 1e3
        return Recommendation(
            mode=options.mode,
            query=query_parts,
            items=flat,
            by_category=by_category,
            outfit=outfit,
            gender=gender,
            artifact=st.ref,
            timings=timings,
            started=prepared.started,
        )

    # -- the steps of answer() -----------------------------------------------------------------

    def _parts(
        self,
        st: CatalogSnapshot,
        colors: Sequence[dict[str, Any]],
        vectors: np.ndarray,
        item_ids: Sequence[str],
        options: Options,
    ) -> list[PartState]:
        cols = st.columns
        parts = []
        for i, color in enumerate(colors):
            rgb = rgb_array([color])[0]
            name = color.get("name")
            parts.append(
                PartState(
                    f"image[{i}]",
                    vectors[i],
                    color,
                    rgb,
                    rgb_to_hsl(rgb),
                    str(name) if name else describe_color(rgb),
                )
            )
        for n, item_id in enumerate(item_ids):
            pos = cols.position(item_id, f"item_ids[{n}]")
            parts.append(
                PartState(
                    f"item:{item_id}",
                    st.rows[pos],
                    st.artifact.colors[pos],
                    cols.rgb[pos],
                    cols.hsl[pos],
                    str(cols.color_names[pos]),
                    position=pos,
                    category=int(cols.category_codes[pos]),
                    category_source="catalog",
                )
            )
        if options.category is not None:
            code = cols.category_code(options.category)
            assert code is not None  # prepare() checked it
            parts[0].category, parts[0].category_source = code, "stated"
        return parts

    def _candidate_pool(
        self, st: CatalogSnapshot, queries: np.ndarray, fetch: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """About ``candidate_pool`` nearest items, best first, the first ``fetch`` exactly the
        nearest. A slot-partitioned index gives each slot its share, so an outfit's other
        slots are in the pool however many near-copies of the query the catalogue holds."""
        index = st.artifact.index
        split = index.base if isinstance(index, LiveIndex) else index
        if isinstance(split, PartitionedIndex):
            share = -(-self.config.candidate_pool // len(split.parts))
            searcher: LiveIndex | PartitionedIndex = (
                index if isinstance(index, LiveIndex) else split
            )
            return searcher.search_each(queries, max(fetch, share))
        return index.search(queries, max(fetch, self.config.candidate_pool))

    def _vote(
        self,
        st: CatalogSnapshot,
        parts: list[PartState],
        scores: np.ndarray,
        ids: np.ndarray,
        own: Sequence[int],
        options: Options,
    ) -> None:
        """Infer each part's category (unless known), gender and usage from its neighbours;
        with the artifact's heads (:mod:`stygig.category_head`), a photo's category and usage
        are the vote merged with the head's probabilities (unless ``use_category_head`` is
        off)."""
        cols = st.columns
        heads = st.artifact.heads if options.use_category_head else {}
        k, k_attr = self.config.vote_k, self.config.attribute_vote_k
        scale = None if self.whitening is None else self.whitening.scale
        for part, row_s, row_i in zip(parts, scores, ids, strict=True):
            keep = row_i >= 0
            if own:  # a photo-only query (most) has no item of its own to leave out
                keep &= ~np.isin(row_i, own)
            near_ids, near_s = row_i[keep], row_s[keep]
            attr_ids, attr_s = near_ids[:k_attr], near_s[:k_attr]
            nb_ids, nb_s = attr_ids[:k], attr_s[:k]
            cat_vote = vote(cols.category_codes[nb_ids], nb_s)
            if part.category < 0:
                part.category = cat_vote.winner
                head = heads.get("category")
                if head is not None:
                    hk = head.vote_k or k  # 0: a head stored before k was searched
                    voters = (cols.category_codes[near_ids[:hk]], near_s[:hk])
                    part.category = self._head_decides(
                        part, head, cols.category_names, voters, cat_vote.winner,
                        hk, head.temperature,
                    )  # fmt: skip
                    if part.category != cat_vote.winner:
                        # Said: the answer's votes show the neighbours' winner, not this one
                        # (review, session 54: "sweatshirt (recognised from the photo)" above
                        # a vote that kurta won).
                        part.category_source = "head"
            part.neighbours, part.votes = (nb_ids, nb_s), cat_vote.counts
            if part.position is not None:
                item = st.artifact.items[part.position]
                part.gender, part.usage = item.gender, item.usage
                continue
            # Like the catalogue: among all its items, the query's own included.
            nearest = np.sort(row_i[row_i >= 0][:NEAREST])
            part.likeness = likeness(part.vector, st.rows[nearest], scale)
            # Unisex neighbours say nothing about the shopper's gender: they abstain.
            codes = cols.gender_codes[attr_ids]
            gender = vote(np.where(codes == cols.unisex, -1, codes), attr_s)
            part.gender_weights = {g: max(w, 0.0) for g, w in gender.similarity.items()}
            part.gender_votes = gender.counts
            winner = weighted_winner(part.gender_weights)
            part.gender = cols.gender_names[winner[0]] if winner else None
            stack = heads.get("gender")
            if isinstance(stack, GenderHead) and stack.stacker is not None:
                near = (near_ids[: stack.k], near_s[: stack.k])
                part.gender_stack = self._gender_stack(cols, part, stack, stack.stacker, *near)
                if part.gender_stack is not None:
                    part.gender = GENDER_PAIR[int(part.gender_stack > 0.5)]
            usage = vote(cols.usage_codes[attr_ids], attr_s)
            code = usage.winner
            if "usage" in heads and cols.usage_names:
                # the usage head merges with the plain attribute vote (its k is not searched)
                voters = (cols.usage_codes[attr_ids], attr_s)
                code = self._head_decides(
                    part, heads["usage"], cols.usage_names, voters, usage.winner, k_attr, 0.0
                )
            part.usage = cols.usage_names[code] if code >= 0 else None

    def _gender_stack(
        self,
        cols: CatalogColumns,
        part: PartState,
        head: GenderHead,
        stacker: CategoryHead,
        ids: np.ndarray,
        sims: np.ndarray,
    ) -> float | None:
        """``stacker``'s probability of ``GENDER_PAIR[1]`` for the photo ``part`` from its
        ``head.k`` nearest catalogue items ``ids`` (similarities ``sims``, best first); ``None``
        when one of them is of a gender the stacker does not model (neither unisex nor one of
        the pair): the vote decides there."""
        if not set(GENDER_PAIR) <= set(cols.gender_names):
            return None
        codes = cols.gender_codes[ids]
        known = codes[codes >= 0]
        if any(unmodelled_gender(cols.gender_names[c]) for c in np.unique(known).tolist()):
            return None
        pair = np.full(len(cols.gender_names), -1, np.int64)
        for c, name in enumerate(GENDER_PAIR):
            pair[cols.gender_names.index(name)] = c
        mapped = np.where(codes >= 0, pair[codes], -1)
        weights = np.maximum(sims.astype(np.float64), 0.0)
        pair_weight = np.array([[weights[mapped == c].sum() for c in (0, 1)]])
        form, columns = self._head_for_queries(head, _PAIR_NAMES)
        if form is not None:
            proba = form.predict_proba(part.vector)[0]
        else:
            proba = head.predict_proba(part.vector, self.whitening)[0]
        nearest = sims[:1] if len(sims) else np.zeros(1, np.float32)
        x = gender_stack_features(pair_weight, weights.sum()[None], nearest, proba[columns][None])
        return float(stacker.predict_proba(x)[0, 1])

    def _stacked_gender(
        self, st: CatalogSnapshot, parts: Sequence[PartState], options: Options
    ) -> StackedGender | None:
        """The stacked gender decision of the photos in ``parts`` (:mod:`stygig.gender`), when
        the artifact has one, the request lets heads decide and both its genders are in the
        catalogue."""
        head = st.artifact.heads.get("gender") if options.use_category_head else None
        if not isinstance(head, GenderHead) or head.stacker is None:
            return None
        if not set(GENDER_PAIR) <= set(st.columns.gender_names):
            return None
        photos = [p.gender_stack for p in parts if p.position is None]
        return StackedGender(GENDER_PAIR, head.gate, photos)

    def _head_decides(
        self,
        part: PartState,
        head: CategoryHead,
        names: list[str],
        voters: tuple[np.ndarray, np.ndarray],
        winner: int,
        k: int,
        temperature: float,
    ) -> int:
        """The code of ``names`` that ``head`` merged with the vote of the photo ``part``'s
        ``k`` nearest items at ``temperature`` chooses
        (``voters``: their codes of ``names`` and similarities, best first; ``winner``: the
        plain vote's choice); the decision is kept on the part for the answer."""
        form, columns = self._head_for_queries(head, names)
        if form is not None:
            proba = form.predict_proba(part.vector)[0]
        else:
            proba = head.predict_proba(part.vector, self.whitening)[0]
        mapped = np.where(columns >= 0, proba[np.maximum(columns, 0)], 0.0)
        t = temperature
        votes = neighbour_votes(voters[0][None], voters[1][None], len(names), k=k, temperature=t)
        code = int(merge_shares(mapped[None], votes, head.head_weight)[0])
        voted = np.flatnonzero(votes.counts[0]).tolist()
        shares = votes.shares()[0]
        state = HeadState(
            "usage" if head.field == "usage" else "category",
            mapped,
            {c: int(votes.counts[0, c]) for c in voted},
            head.head_weight,
            k,
            code,
            winner,
            {c: float(shares[c]) for c in voted},
            t,
        )
        part.heads.append(state)
        return code

    def _head_for_queries(
        self, head: CategoryHead, names: list[str]
    ) -> tuple[QueryHead | None, np.ndarray]:
        """``head`` folded for single queries (:meth:`CategoryHead.for_queries`: once per head,
        made at the warm-up request) and each of ``names``' column in it (-1: a label the head
        never saw; once per list of names: a catalogue change that adds a label makes a new
        list, and only this cheap map is made again)."""
        folded = self._folded_heads.get(head.field)
        if folded is None or folded[0] is not head:
            folded = (head, head.for_queries(self.whitening))
            self._folded_heads[head.field] = folded
        mapped = self._head_columns.get(head.field)
        if mapped is None or mapped[0] is not head or mapped[1] is not names:
            index = {label: c for c, label in enumerate(head.labels)}
            mapped = (head, names, np.array([index.get(n, -1) for n in names], np.int64))
            self._head_columns[head.field] = mapped
        return folded[1], mapped[2]

    def score_items(
        self,
        item_ids: Sequence[str],
        candidate_ids: Sequence[str],
        *,
        use_color: bool = True,
        outfit: bool = False,
    ) -> np.ndarray:
        """Scores of ``candidate_ids`` as completions of the outfit ``item_ids``.

        The same formula as :meth:`answer` (similarity averaged over the query items, harmony
        averaged likewise, boost when compatible with every query item; then the learned
        compatibility model per ``compat_mode`` when the artifact has one), without filters or
        ranking: what fill-in-the-blank evaluation needs. ``outfit``: each candidate scored as
        the member of one outfit with ``item_ids``, as :meth:`score_outfit` scores its items
        (the model's outfit absence weight,
        :meth:`~stygig.compat.model.CompatModel.absence`), not as a recommendation.
        """
        st = self._snapshot
        cols = st.columns
        q = np.array([cols.position(i) for i in item_ids], np.int64)
        c = np.array([cols.position(i) for i in candidate_ids], np.int64)
        return self._completion(st, q, c, use_color, outfit=outfit).score

    def score_outfit(self, request: OutfitRequest | Sequence[str]) -> OutfitScore:
        """How well a set of catalogue items goes together: each pair, scored both ways as a
        recommendation scores a candidate against a one-item query and averaged; each item
        as the completion of all the others, as a member of the outfit
        (:meth:`score_items` with ``outfit=True``); overall, the weakest item's
        score (the evaluation's outfit score, :func:`stygig.evaluation.fitb.outfit_score`),
        with the pairs' mean beside it.

        Raises :class:`~stygig.errors.NotFoundError` (404) for an unknown id and
        :class:`~stygig.errors.InvalidOptionsError` for a set that is too small, too large
        or repeats an item.
        """
        t0 = time.perf_counter()
        if not isinstance(request, OutfitRequest):
            request = OutfitRequest(tuple(request))
        use_color = request.use_color
        st = self._snapshot  # one catalogue state for the whole score
        cols = st.columns
        rows = np.array(
            [cols.position(i, f"item_ids[{n}]") for n, i in enumerate(request.item_ids)], np.int64
        )
        n = len(rows)
        # Directed parts: row i the query, column j the candidate.
        emb = st.rows[rows]
        sims = (emb @ emb.T).astype(np.float32)
        harm = np.empty((n, n), np.float32)
        rule = np.empty((n, n), np.intp)
        neutral = self._neutral(cols)[rows]
        for i in range(n):
            harm[i], rule[i] = harmony(
                cols.hsl[rows[i]], cols.hsl[rows], self.harmony_rules, cand_neutral=neutral
            )
        cats = cols.category_codes[rows]
        compatible = cols.compat[cats][:, cats]
        rules, factor = self._v4(sims.ravel(), harm.ravel(), compatible.ravel(), use_color)
        final = rules.reshape(n, n)
        learned: np.ndarray | None = None
        if st.learned is not None:
            final = np.empty((n, n), np.float32)
            learned = np.empty((n, n), np.float32)
            for i in range(n):
                view = st.learned.rows_view(rows[i : i + 1])
                final[i], learned[i] = st.learned.score(view, rows, rules.reshape(n, n)[i])
        factor = factor.reshape(n, n)
        ids = list(request.item_ids)

        def both(m: np.ndarray, i: int, j: int) -> float:
            return round((float(m[i, j]) + float(m[j, i])) / 2, 4)

        pairs = [
            PairScore(
                a=ids[i],
                b=ids[j],
                score=both(final, i, j),
                similarity=round(float(sims[i, j]), 4),
                harmony=both(harm, i, j),
                harmony_rule=HARMONY_RULE_NAMES[int(rule[i, j])],
                compatible=bool(compatible[i, j] and compatible[j, i]),
                boost=both(factor, i, j),
                learned=None if learned is None else both(learned, i, j),
            )
            for i in range(n)
            for j in range(i + 1, n)
        ]
        items = []
        for j in range(n):
            rest = np.delete(rows, j)
            part = self._completion(st, rest, rows[j : j + 1], use_color, outfit=True)
            items.append(
                OutfitItemScore(
                    **cols.item_fields(int(rows[j])),
                    score=round(float(part.score[0]), 4),
                    similarity=round(float(part.similarity[0]), 4),
                    harmony=round(float(part.harmony[0]), 4),
                    boost=round(float(part.factor[0]), 4),
                    learned=None if part.learned is None else round(float(part.learned[0]), 4),
                )
            )
        weakest = min(pairs, key=lambda p: (p.score, p.a, p.b))
        weakest_item = min(items, key=lambda i: (i.score, i.id))
        learned_parts = [p.learned for p in pairs if p.learned is not None]
        ms = round((time.perf_counter() - t0) * 1e3, 3)
        return OutfitScore(
            score=weakest_item.score,
            weakest_item=weakest_item.id,
            pair_mean=round(float(np.mean([p.score for p in pairs])), 4),
            similarity=round(float(np.mean([p.similarity for p in pairs])), 4),
            harmony=round(float(np.mean([p.harmony for p in pairs])), 4),
            compatible=all(p.compatible for p in pairs),
            learned=round(float(np.mean(learned_parts)), 4) if learned_parts else None,
            weakest_pair=[weakest.a, weakest.b],
            use_color=use_color,
            scoring=scoring_kind(st.learned),
            rules_weight=None if st.learned is None else st.learned.rules_weight,
            items=items,
            pairs=pairs,
            artifact=st.ref,
            timings_ms={"score": ms},
        )

    def _completion(
        self,
        st: CatalogSnapshot,
        q: np.ndarray,
        c: np.ndarray,
        use_color: bool,
        *,
        outfit: bool = False,
    ) -> ScoreParts:
        """Catalogue rows ``c`` scored as completions of the rows ``q``: :meth:`answer`'s
        formula without filters or ranking (``outfit``: as members of one outfit)."""
        cols, emb = st.columns, st.rows
        sims = (emb[c] @ emb[q].T).mean(axis=1)
        harm, rules = self._harmony(cols, cols.hsl[q], c)
        compatible = _compatible(cols, cols.category_codes[q], cols.category_codes[c])
        score, factor = self._v4(sims, harm, compatible, use_color)
        learned = None
        if st.learned is not None:
            score, learned = st.learned.score(st.learned.rows_view(q), c, score, outfit=outfit)
        return ScoreParts(c, score, sims, harm, rules, factor, learned)

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

    def _neutral(self, cols: CatalogColumns) -> np.ndarray:
        """Which catalogue colours are neutral: once per colour column, not per request. A
        change that leaves every colour alone (stock, price) keeps the column, so the mask."""
        kept = self._neutral_for
        if kept is None or kept[0] is not cols.hsl:
            kept = (cols.hsl, neutral_colors(cols.hsl, self.harmony_rules))
            self._neutral_for = kept  # one assignment: readers see the old pair or the new
        return kept[1]

    def _harmony(
        self, cols: CatalogColumns, query_hsl: np.ndarray, cand: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Harmony of each candidate averaged over the query colours ``(m, 3)``, and the rule
        that decided it against the first query colour (the one reasons name)."""
        cand_hsl, neutral = cols.hsl[cand], self._neutral(cols)[cand]
        per_query = [
            harmony(h, cand_hsl, self.harmony_rules, cand_neutral=neutral) for h in query_hsl
        ]
        if not per_query:
            return np.zeros(len(cand), np.float32), np.zeros(len(cand), np.intp)
        if len(per_query) == 1:  # one photo or item (most requests): its scores are the mean
            return per_query[0]
        return np.mean([h[0] for h in per_query], axis=0), per_query[0][1]


_NO_GENDER = GenderDecision(None, "none")


_PAIR_NAMES = list(GENDER_PAIR)


def _options(options: Options | Mapping[str, Any] | None) -> Options:
    """``options`` as :class:`Options`: a mapping is read as a JSON request's options are."""
    if options is None:
        return Options()
    if isinstance(options, Mapping):
        return Options.from_dict(dict(options))
    if not isinstance(options, Options):
        raise InvalidOptionsError(
            f"options must be Options or a mapping of option names, not {type(options).__name__}"
        )
    return options


def _check_request(cols: CatalogColumns, options: Options, item_ids: Sequence[str]) -> None:
    """The options, the query's item ids and the candidates against one catalogue state: every
    id a catalogue item (404 otherwise), no candidate part of the query."""
    cols.check(options)
    for n, item_id in enumerate(item_ids):
        cols.position(item_id, f"item_ids[{n}]")
    for n, item_id in enumerate(options.candidate_ids):
        cols.position(item_id, f"candidate_ids[{n}]")
    if not set(options.candidate_ids).isdisjoint(item_ids):
        raise InvalidOptionsError("candidate_ids: a candidate is also an item of the query")


def scoring_kind(learned: LearnedScorer | None) -> ScoringKind:
    """What a score holds: the V4 ``rules`` alone (no compatibility model), or the model's
    part (``learned``) and, in ``learned+rules``, the rules' too."""
    if learned is None:
        return "rules"
    return "learned" if learned.mode == "learned" else "learned+rules"


def _removed(st: CatalogSnapshot) -> np.ndarray | None:
    """Rows removed from the index (tombstones): never neighbours, never candidates."""
    index = st.artifact.index
    return index.removed if index.n_removed else None


def _compatible(cols: CatalogColumns, query_cats: np.ndarray, cand_cats: np.ndarray) -> np.ndarray:
    """Whether each candidate category is compatible with every query category."""
    by_category = np.asarray(cols.compat[query_cats].all(axis=0))
    return np.take(by_category, cand_cats)

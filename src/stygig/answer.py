"""What the recommender answers, typed: one shape for every caller and one JSON encoder.

The library returns a :class:`Recommendation`; the CLI's ``--json``, the HTTP API, async job
results and batch output all write :meth:`Recommendation.to_json` (or its dict form), so an item
has one JSON shape everywhere. The same types give the API's OpenAPI response schema
(:func:`answer_schema`), so the schema cannot drift from what is sent.

JSON is written by pydantic-core (Rust) straight from these dataclasses; ``timings_ms.serialise``
is the time that takes, measured on the real bytes.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from pydantic import ConfigDict, TypeAdapter

__all__ = [
    "TIMING_NAMES",
    "AnswerDocument",
    "ArtifactRef",
    "CatalogCard",
    "CatalogItem",
    "CatalogPage",
    "GenderDecision",
    "HeadScore",
    "HeadVote",
    "ItemView",
    "Neighbour",
    "Outfit",
    "OutfitItemScore",
    "OutfitScore",
    "PairScore",
    "PaletteColor",
    "QueryPart",
    "Recommendation",
    "RecommendedItem",
    "ScoringKind",
    "Timings",
    "answer_schema",
    "catalog_item_schema",
    "catalog_page_schema",
    "outfit_score_schema",
]

#: Where a query part's category came from: the neighbours' vote; the category head, which
#: overruled that vote (the merged choice differs from the vote's winner shown in ``votes``);
#: the caller; or the catalogue item itself.
CategorySource = Literal["vote", "head", "stated", "catalog"]
HeadField = Literal["category", "usage"]
GenderSource = Literal["stated", "item", "photo", "uncertain", "none"]


@dataclass(slots=True)
class PaletteColor:
    """One colour of a photo's palette and its share of the garment's pixels."""

    rgb: list[int]
    hex: str
    share: float


@dataclass(slots=True)
class Neighbour:
    """A catalogue item among a query part's nearest neighbours (the voters)."""

    id: str
    category: str
    similarity: float


@dataclass(slots=True)
class HeadScore:
    """One class as a photo's neighbours and the artifact's category head scored it."""

    label: str
    votes: int  # neighbours that voted for it (of ``HeadVote.k``)
    probability: float  # the head's probability for it
    score: float  # weight * probability + (1 - weight) * share: the highest decides
    # its share of the neighbours' vote: votes / k at temperature 0, else similarity-weighted
    share: float


@dataclass(slots=True)
class HeadVote:
    """How a photo's ``field`` was decided when the artifact has a head for it
    (:mod:`stygig.category_head`): the neighbour vote merged with the head's probabilities.

    ``value`` is what the answer uses (``QueryPart.category`` or ``usage``); ``vote`` what the
    plain vote alone would have chosen (the one ``QueryPart.votes`` shows); ``scores`` the
    classes one of the ``k`` neighbours voted for and the head's three likeliest, best first,
    each with its share of those neighbours' vote weighted at ``temperature``.
    """

    field: HeadField
    value: str | None
    vote: str | None
    weight: float  # the head's weight against the vote, cross-fitted at build time
    k: int  # neighbours voting
    scores: list[HeadScore]
    temperature: float  # their vote's similarity weighting (0: one vote each)


@dataclass(slots=True)
class QueryPart:
    """One photo or catalogue item of the query, as the engine understood it."""

    source: str  # "image[0]", "item:<id>"
    category: str | None
    category_source: CategorySource
    slot: str | None
    votes: dict[str, int]  # category -> how many of the top-k neighbours voted for it
    neighbors: list[Neighbour]
    # photos: the cosine to the nearest catalogue item, unwhitened (stygig.familiarity)
    likeness: float | None
    # photos: far less like the catalogue than its items are like each other, so the vote
    # and the outfit are a guess; None: catalogue items, or an artifact written before this
    unlike_catalogue: bool | None
    gender: str | None
    usage: str | None
    gender_votes: dict[str, int] | None  # photos only: the neighbours' gender vote
    rgb: list[int]
    hex: str | None
    color_name: str
    hsl: list[float]  # hue in degrees [0, 360), saturation and lightness in [0, 1]
    palette: list[PaletteColor]
    # photos of an artifact with category heads: how each headed field was decided
    heads: list[HeadVote]


@dataclass(slots=True)
class ItemView:
    """A catalogue item as clients see it: the same fields wherever an item is shown."""

    id: str
    name: str | None
    category: str
    slot: str
    gender: str | None
    price: float | None
    brand: str | None
    rgb: list[int]
    hex: str | None
    hsl: list[float]  # hue in degrees [0, 360), saturation and lightness in [0, 1]
    color_name: str
    available: bool  # the shop can sell it now (not sold out, not withdrawn)


@dataclass(slots=True)
class CatalogItem(ItemView):
    """``GET /v1/items/{id}``: the item as answers show it, and what only that route shows."""

    usage: str | None
    season: str | None
    stock: int | None  # units in stock, when the shop says
    attributes: dict[str, str]
    image_url: str  # the thumbnail route (the catalogue's own image path is the server's)
    color: dict[str, Any]  # the photo's colour summary, measured at build time
    catalog_version: str


@dataclass(slots=True)
class CatalogCard(ItemView):
    """One item of a ``GET /v1/catalog`` page: the answer's fields and its thumbnail route."""

    image_url: str


@dataclass(slots=True)
class CatalogPage:
    """``GET /v1/catalog``: a page of the items that match, and how many match in all."""

    total: int
    offset: int
    limit: int
    text_search: bool  # words matched as text (False: by substring of name, id, colour)
    items: list[CatalogCard]


def catalog_page_schema() -> dict[str, Any]:
    """JSON Schema of :class:`CatalogPage` (for OpenAPI), from the type that writes it."""
    schema = TypeAdapter(CatalogPage).json_schema(ref_template="#/components/schemas/{model}")
    schema["title"] = "CatalogPage"
    return schema


def catalog_item_schema() -> dict[str, Any]:
    """JSON Schema of :class:`CatalogItem` (for OpenAPI), from the type that writes it."""
    schema = TypeAdapter(CatalogItem).json_schema(ref_template="#/components/schemas/{model}")
    schema["title"] = "CatalogItem"
    return schema


@dataclass(slots=True)
class RecommendedItem(ItemView):
    """An item of the answer with the parts of its score and why it was chosen."""

    score: float
    similarity: float
    harmony: float | None  # outfit mode with colour on (else not a part of the score)
    harmony_rule: str | None  # the colour rule that decided ``harmony``, when it is shown
    boost: float  # the taxonomy's factor (x1.15 for a compatible pair, else 1)
    learned: float | None  # the compatibility model's part (None without a model)
    reason: str


@dataclass(slots=True)
class Outfit:
    """One item per free slot, each compatible with the query and with each other."""

    slots: dict[str, RecommendedItem]
    item_ids: list[str]
    score: float


#: For an answer's types with defaults: their schema (written in serialization mode) lists
#: every field as required, as every answer sends them all.
_SENT_WHOLE = ConfigDict(json_schema_serialization_defaults_required=True)


@dataclass(slots=True)
class GenderDecision:
    """Whose items were recommended (``value``'s and unisex ones; ``None``: no filter).

    ``source``: ``stated`` by the caller, a catalogue ``item``'s, voted from the ``photo``'s
    neighbours, ``uncertain`` (a weak vote: ``guess`` and ``confidence`` say how weak), or
    ``none``. ``hedged``: only unisex items (or items without a gender) were considered.
    """

    # Every answer carries every field: the schema says so (review, session 42)
    __pydantic_config__ = _SENT_WHOLE

    value: str | None
    source: GenderSource
    hedged: bool = False
    confidence: float | None = None
    guess: str | None = None


@dataclass(slots=True)
class ArtifactRef:
    """Which catalogue answered: its encoder, size and version.

    ``version``: the artifact's version (:func:`stygig.artifact.artifact_version`);
    ``sequence``: the last change-log record applied on top of it (0: none); ``catalog``:
    both as one string, ``"<version>+<sequence>"``, the same on every replica that has
    applied the same changes.
    """

    __pydantic_config__ = _SENT_WHOLE

    encoder: str
    items: int
    version: str = ""
    sequence: int = 0
    catalog: str = ""


#: Every stage a request can pass through, in order; one set of names for every caller.
TIMING_NAMES = (
    "decode",  # photo bytes -> encoder input and colour pixels
    "color",  # dominant colours (may run beside the encoder)
    "queue",  # waiting for the micro-batcher (server only)
    "embed",  # the encoder call (a batch's call, shared by the requests in it)
    "search",  # neighbours and the candidate pool
    "vote",  # category, gender and usage from the neighbours
    "score",  # similarity, harmony, boost, learned compatibility
    "rank",  # per-category ranking, MMR, outfit assembly, the answer's items
    "serialise",  # the answer to JSON bytes
    "total",  # wall clock from the first stage to the last
)


@dataclass(slots=True)
class Timings:
    """Milliseconds per stage (``None``: the stage did not run for this request)."""

    decode: float | None = None
    color: float | None = None
    queue: float | None = None
    embed: float | None = None
    search: float | None = None
    vote: float | None = None
    score: float | None = None
    rank: float | None = None
    serialise: float | None = None
    total: float | None = None

    def to_dict(self) -> dict[str, float]:
        """The stages that ran, rounded to microseconds."""
        return {
            f.name: round(v, 3) for f in fields(self) if (v := getattr(self, f.name)) is not None
        }


@dataclass(slots=True)
class _Body:
    """The answer without its timings (those are written last, once serialisation is timed)."""

    mode: Literal["outfit", "similar"]
    query: list[QueryPart]
    items: list[RecommendedItem]
    by_category: dict[str, list[RecommendedItem]]
    outfit: Outfit | None
    gender: GenderDecision
    artifact: ArtifactRef


@dataclass(slots=True)
class Recommendation(_Body):
    """The answer: the query as understood, ranked items, per-category lists, an outfit.

    ``timings`` is filled in as the request moves on (``serialise`` and ``total`` by
    :meth:`to_json`).
    """

    timings: Timings = field(default_factory=Timings)
    started: float | None = None  # perf_counter() when the request's first stage began

    @property
    def timings_ms(self) -> dict[str, float]:
        return self.timings.to_dict()

    def to_json(self) -> bytes:
        """The answer as compact JSON bytes, with ``serialise`` and ``total`` measured."""
        t0 = time.perf_counter()
        body = _body_adapter().dump_json(self)  # a subclass: only _Body's fields are written
        t1 = time.perf_counter()
        self.timings.serialise = (t1 - t0) * 1e3
        if self.started is not None:
            self.timings.total = (t1 - self.started) * 1e3
        timings = _timings_adapter().dump_json(self.timings.to_dict())
        return body[:-1] + b',"timings_ms":' + timings + b"}"

    def to_dict(self) -> dict[str, Any]:
        """The answer as JSON-ready Python objects: exactly what :meth:`to_json` writes."""
        import json

        data: dict[str, Any] = json.loads(self.to_json())
        return data


@functools.cache
def _body_adapter() -> TypeAdapter[_Body]:
    return TypeAdapter(_Body)


@functools.cache
def _timings_adapter() -> TypeAdapter[dict[str, float]]:
    return TypeAdapter(dict[str, float])


@dataclass
class AnswerDocument(_Body):
    """The answer as JSON (:meth:`Recommendation.to_json`): the query as understood, ranked
    items, per-category lists, an outfit, and the milliseconds each stage took."""

    timings_ms: dict[Literal[TIMING_NAMES], float]  # type: ignore[valid-type]


def answer_schema() -> dict[str, Any]:
    """JSON Schema of the answer (for OpenAPI), from the same types that write it."""
    schema = TypeAdapter(AnswerDocument).json_schema(
        ref_template="#/components/schemas/{model}", mode="serialization"
    )
    schema["title"] = "Recommendation"
    return schema


# -- how well a set of items goes together (``POST /v1/outfits/score``) -----------------------

ScoringKind = Literal["rules", "learned", "learned+rules"]


@dataclass(slots=True)
class PairScore:
    """Two items of the set, scored as any answer's items are, in both directions (``a`` as the
    query and ``b`` as the candidate, then the other way round) and averaged."""

    a: str
    b: str
    score: float
    similarity: float  # cosine of the two embeddings
    harmony: float  # colour harmony, [0, 1]
    harmony_rule: str  # the rule that decided it, ``a``'s colour against ``b``'s
    compatible: bool  # the taxonomy pairs the two categories
    boost: float  # the taxonomy's factor (x1.15 when compatible, else 1)
    learned: float | None  # the compatibility model's part (None without a model)


@dataclass(slots=True)
class OutfitItemScore(ItemView):
    """One item of the set, scored as the completion of all the others: the number
    fill-in-the-blank ranks, the same formula as a recommendation's items, except that a
    compatibility model weighs its absence term (two styled items never styled together) by
    its outfit weight (``CompatModel.outfit_absent_weight``)."""

    score: float
    similarity: float  # mean cosine to the other items
    harmony: float  # mean harmony with the other items' colours
    boost: float  # x1.15 when its category goes with every other item's, else 1
    learned: float | None


@dataclass(slots=True)
class OutfitScore:
    """How well a set of catalogue items goes together: overall, per item, per pair.

    ``score`` is the weakest item's score as the completion of all the others (an outfit is
    as good as its least fitting piece; ``weakest_item`` names it): one item that does not
    belong lowers it however well the rest go together, which the pairs' mean
    (``pair_mean``) dilutes. ``similarity``, ``harmony`` and ``learned`` are the pairs'
    means; ``compatible`` says whether every pair's categories go together; ``weakest_pair``
    names the lowest-scoring pair. ``scoring`` says what the scores hold: the V4 ``rules``
    only, or the compatibility model (``learned``, ``learned+rules``); ``rules_weight`` how:
    a score is ``learned + rules_weight x (similarity weight x similarity + harmony weight x
    harmony) x boost`` (``learned``: 0; ``null`` for the rules alone, whose score is that
    last term: the weights are in ``GET /v1/config``).
    """

    score: float
    weakest_item: str
    pair_mean: float
    similarity: float
    harmony: float
    compatible: bool
    learned: float | None
    weakest_pair: list[str]
    use_color: bool
    scoring: ScoringKind
    rules_weight: float | None
    items: list[OutfitItemScore]
    pairs: list[PairScore]
    artifact: ArtifactRef
    timings_ms: dict[Literal["score", "total"], float] = field(default_factory=dict)

    def to_json(self) -> bytes:
        """The score as compact JSON bytes."""
        return _outfit_adapter().dump_json(self)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready Python objects: exactly what :meth:`to_json` writes."""
        import json

        data: dict[str, Any] = json.loads(self.to_json())
        return data


@functools.cache
def _outfit_adapter() -> TypeAdapter[OutfitScore]:
    return TypeAdapter(OutfitScore)


def outfit_score_schema() -> dict[str, Any]:
    """JSON Schema of :class:`OutfitScore` (for OpenAPI), from the types that write it."""
    schema = _outfit_adapter().json_schema(
        ref_template="#/components/schemas/{model}", mode="serialization"
    )
    schema["title"] = "OutfitScore"
    return schema

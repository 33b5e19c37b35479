"""The JSON answers of the server's own routes, typed: one type per body, written from it.

Each handler builds its answer as one of these dataclasses and sends ``asdict`` of it, and the
OpenAPI document's schema for that answer is made from the same type (:func:`component_schemas`),
so the two cannot drift apart. The recommender's answers (``Recommendation``, ``OutfitScore``,
``CatalogItem``, ``CatalogPage``) are :mod:`stygig.answer`'s; an async job's view is
:class:`stygig.jobs.store.JobState`, its result and failure documents are
:mod:`stygig.jobs.documents`'. Field descriptions are the attributes' docstrings.

Answers that are not JSON are documented with their own media type only: ``/metrics`` (the
Prometheus text format) and the photos (:data:`IMAGE_BODY`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ConfigDict, TypeAdapter

from stygig.answer import ScoringKind
from stygig.jobs.documents import JobFailure, JobResult
from stygig.jobs.store import JobState
from stygig.jobs.store import Status as JobStatus
from stygig.recommendation import Mode
from stygig.serving.batching import BatcherConfig
from stygig.serving.responses import JSON

__all__ = [
    "ASYNC_ANSWERS",
    "IMAGE_BODY",
    "NOT_MODIFIED",
    "SERVER_ANSWERS",
    "ArtifactBuild",
    "BatchingSettings",
    "CatalogReload",
    "CatalogVersion",
    "CatalogVersionSince",
    "CategoryCount",
    "ChangesApplied",
    "ExampleCard",
    "ExampleList",
    "ExecutionParameters",
    "Health",
    "JobList",
    "JobSubmitted",
    "JobUnfinished",
    "PageConfig",
    "Ping",
    "Readiness",
    "ScoringWeights",
    "SlotLabel",
    "component_schemas",
    "json_answer",
    "ref",
]

#: Field descriptions from the attributes' docstrings (pydantic reads them for the schema).
_DOCUMENTED = ConfigDict(use_attribute_docstrings=True)


# -- health --------------------------------------------------------------------------------------


@dataclass(slots=True)
class Ping:
    """``GET /ping``: the model is loaded and warm (before that, a 503 ``not_ready`` error)."""

    __pydantic_config__ = _DOCUMENTED

    status: Literal["ok"]
    """always ``ok``"""


@dataclass(slots=True)
class Health:
    """``GET /healthz``: the process answers (liveness), loaded or not."""

    __pydantic_config__ = _DOCUMENTED

    status: Literal["alive"]
    """always ``alive``"""
    ready: bool
    """the model is loaded and warm (``/readyz`` says more)"""


@dataclass(slots=True)
class ExecutionParameters:
    """``GET /execution-parameters``: what a SageMaker batch transform should send when its
    job does not say (SageMaker asks before its first record)."""

    __pydantic_config__ = _DOCUMENTED

    MaxConcurrentTransforms: int
    """requests at once per instance: the encoder's batch, within SageMaker's rule that
    concurrency x payload stays within 100 MB"""
    BatchStrategy: Literal["SINGLE_RECORD"]
    """one record per request: a body is one query"""
    MaxPayloadInMB: int
    """the body limit, in MB"""


@dataclass(slots=True)
class ArtifactBuild:
    """Which artifact answers, by its build time (never the folder it was loaded from)."""

    __pydantic_config__ = _DOCUMENTED

    created_at: str | None
    """when it was built (ISO 8601, UTC), from its manifest"""


@dataclass(slots=True)
class BatchingSettings:
    """How the server groups photos into encoder calls (``serve --max-batch`` and beside)."""

    __pydantic_config__ = _DOCUMENTED

    max_batch: int
    """photos per encoder call (1: no batching)"""
    max_wait_ms: float
    """how long the first photo of a batch may wait for company"""
    max_queue: int
    """requests allowed to wait; one more is refused with 503"""

    @classmethod
    def of(cls, config: BatcherConfig) -> BatchingSettings:
        return cls(config.max_batch, config.max_wait_ms, config.max_queue)


@dataclass(slots=True)
class Readiness:
    """``GET /readyz``: 200 once the model is loaded and warm, else 503 with the same body
    (``ready`` false; what is not loaded yet is ``null``)."""

    __pydantic_config__ = _DOCUMENTED

    ready: bool
    """loaded and warm: the server answers recommendations"""
    artifact: ArtifactBuild | None
    """the artifact served (``null`` while loading)"""
    encoder: str | None
    """the artifact's image encoder"""
    items: int | None
    """items in the catalogue now (the living catalogue's changes applied)"""
    catalog_version: str | None
    """``<artifact version>+<change-log sequence>``"""
    load_seconds: float | None
    """how long loading the artifact took"""
    warmup_seconds: float | None
    """how long warming every request path took"""
    batching: BatchingSettings
    """how photos are grouped into encoder calls"""


# -- the page and its catalogue ------------------------------------------------------------------


@dataclass(slots=True)
class CategoryCount:
    """A category of the catalogue, the outfit slot it fills and how many items it has."""

    __pydantic_config__ = _DOCUMENTED

    name: str
    """the category (the taxonomy's canonical name)"""
    slot: str
    """the outfit slot it fills"""
    count: int
    """items of this category in the artifact"""


@dataclass(slots=True)
class SlotLabel:
    """An outfit slot and how the page names it, in outfit order."""

    __pydantic_config__ = _DOCUMENTED

    name: str
    label: str


@dataclass(slots=True)
class ScoringWeights:
    """How an item's score is made: the weights of similarity and colour harmony, and the
    taxonomy's factor for a compatible pair of categories (the V4 rules); with a compatibility
    model (``scoring``: ``learned`` or ``learned+rules``), in outfit mode, the model's part
    plus ``rules_weight`` times the rules' score (``null``: the rules alone)."""

    __pydantic_config__ = _DOCUMENTED

    similarity_weight: float
    harmony_weight: float
    boost: float
    scoring: ScoringKind
    rules_weight: float | None


@dataclass(slots=True)
class PageConfig:
    """``GET /v1/config``: what the page can offer for this catalogue."""

    __pydantic_config__ = _DOCUMENTED

    version: str
    """StyGig's version"""
    encoder: str
    """the artifact's image encoder"""
    text_search: bool
    """words are matched by a text encoder (none of StyGig's has one: false)"""
    modes: list[Mode]
    """the recommendation modes"""
    items: int
    """items in the catalogue now"""
    catalog_version: str
    """``<artifact version>+<change-log sequence>``"""
    sequence: int
    """the last change-log record applied (0: none)"""
    thumbnails: bool
    """the artifact holds thumbnails (``/v1/items/{id}/image``)"""
    categories: list[CategoryCount]
    """the catalogue's categories, by name"""
    genders: list[str]
    """the genders of the catalogue's items"""
    slots: list[SlotLabel]
    """the outfit slots the catalogue fills, in outfit order"""
    scoring: ScoringWeights
    max_upload_bytes: int
    """the largest request body the server reads"""
    drawn_sample: bool
    """the catalogue is StyGig's drawn sample (drawings, not photos)"""
    examples: int
    """example photos offered (``/v1/examples``)"""
    docs: bool
    """``/docs`` is served (``serve --docs``)"""


@dataclass(slots=True)
class ExampleCard:
    """One example photo the operator offers (``serve --examples``)."""

    __pydantic_config__ = _DOCUMENTED

    name: str
    """its file name: the only key a client may use"""
    label: str
    """its name for people (``Grey shirt`` from ``grey-shirt.jpg``)"""
    media_type: str
    """the photo's media type"""
    url: str
    """where to fetch it (``/v1/examples/{name}``)"""


@dataclass(slots=True)
class ExampleList:
    """``GET /v1/examples``: the example photos, by file name (none without ``--examples``)."""

    __pydantic_config__ = _DOCUMENTED

    examples: list[ExampleCard]


# -- the living catalogue ------------------------------------------------------------------------


@dataclass(slots=True)
class CatalogVersion:
    """``GET /v1/catalog/version``: which catalogue answers now."""

    __pydantic_config__ = _DOCUMENTED

    catalog_version: str
    """``<artifact_version>+<sequence>``: equal on replicas that applied the same changes"""
    artifact_version: str
    """the artifact's version"""
    sequence: int
    """the last change-log record applied on top of it (0: none)"""
    items: int
    """items in the catalogue now"""


@dataclass(slots=True)
class CatalogVersionSince:
    """``GET /v1/catalog/version?since=N``: the version, and the items whose availability
    changed after change-log record ``N`` (for a page that loaded at ``N``)."""

    __pydantic_config__ = _DOCUMENTED

    # CatalogVersion's fields, first (not inherited: pydantic reads a class's own docstrings)
    catalog_version: str
    """``<artifact_version>+<sequence>``: equal on replicas that applied the same changes"""
    artifact_version: str
    """the artifact's version"""
    sequence: int
    """the last change-log record applied on top of it (0: none)"""
    items: int
    """items in the catalogue now"""
    unavailable_since: list[str]
    """ids that stopped being available after record ``N``, sorted"""
    available_again: list[str]
    """ids that became available again after record ``N``, sorted"""
    complete: bool
    """false: some changes after ``N`` were folded into this version or are older than the
    events kept, so the lists may miss some (a page should reload)"""


@dataclass(slots=True)
class CatalogReload:
    """``POST /v1/catalog/reload``: whether a new artifact version was taken, and the version
    that answers now."""

    __pydantic_config__ = _DOCUMENTED

    reloaded: bool
    """a new artifact version was loaded (false: the served one is still the newest)"""
    catalog_version: str
    """``<artifact_version>+<sequence>``"""
    artifact_version: str
    sequence: int
    """the last change-log record applied (0: none)"""
    items: int
    """items in the catalogue now"""


@dataclass(slots=True)
class ChangesApplied:
    """``POST /v1/catalog/changes``: the changes are logged and visible to every answer."""

    __pydantic_config__ = _DOCUMENTED

    sequence: int
    """the change log's last record"""
    catalog_version: str
    """``<artifact version>+<sequence>``"""
    applied: int
    """changes applied by this request"""
    items: int
    """items in the catalogue now"""


# -- async jobs ----------------------------------------------------------------------------------


@dataclass(slots=True)
class JobSubmitted:
    """``POST /async/invocations`` (202): the job is committed to the store."""

    __pydantic_config__ = _DOCUMENTED

    InferenceId: str
    """the job's id (yours, when you sent X-Amzn-SageMaker-Inference-Id)"""
    OutputLocation: str
    """where the result will be (``/async/jobs/{id}/output`` for a server folder)"""
    FailureLocation: str
    """where an error will be"""
    Status: JobStatus
    """the job's status now (a resubmitted id: that job's)"""


@dataclass(slots=True)
class JobUnfinished:
    """``GET /async/jobs/{id}/output`` (409): the job has not finished."""

    __pydantic_config__ = _DOCUMENTED

    InferenceId: str
    Status: JobStatus


@dataclass(slots=True)
class JobList:
    """``GET /async/jobs``: a page of jobs in submission order, with counts per status."""

    __pydantic_config__ = _DOCUMENTED

    jobs: list[JobState]
    """the page's jobs (at most ``limit``; fewer, even none, while ``next_after`` is set)"""
    counts: dict[JobStatus, int]
    """jobs per status, every status present"""
    counts_complete: bool
    """false: some counts are lower bounds ("at least")"""
    next_after: int | None
    """the ``after`` of the next page; ``null`` once the last job was reached"""


#: The server's answer types (their schemas are OpenAPI components of the same name).
SERVER_ANSWERS: tuple[type, ...] = (
    Ping,
    ExecutionParameters,
    Health,
    Readiness,
    PageConfig,
    ExampleList,
    CatalogVersion,
    CatalogVersionSince,
    CatalogReload,
    ChangesApplied,
)
#: Those of the ``/async`` routes, when the server has them.
ASYNC_ANSWERS: tuple[type, ...] = (
    JobSubmitted,
    JobState,
    JobUnfinished,
    JobList,
    JobResult,
    JobFailure,
)

#: A photo's bytes (OpenAPI's "binary" string).
IMAGE_BODY: dict[str, Any] = {"schema": {"type": "string", "format": "binary"}}
#: The answer to a request whose ``If-None-Match`` names the current ETag: no body.
NOT_MODIFIED: dict[str, Any] = {
    "description": "not modified: If-None-Match named the current ETag (no body)"
}

_REF = "#/components/schemas/"


def ref(tp: type) -> dict[str, str]:
    """A reference to ``tp``'s component schema."""
    return {"$ref": _REF + tp.__name__}


def json_answer(description: str, *types: type) -> dict[str, Any]:
    """An OpenAPI response: a JSON body of one of ``types``."""
    schema = ref(types[0]) if len(types) == 1 else {"anyOf": [ref(t) for t in types]}
    return {"description": description, "content": {JSON: {"schema": schema}}}


def component_schemas(types: Iterable[type]) -> dict[str, dict[str, Any]]:
    """The JSON schemas of ``types`` and of the types they hold, by name, for the OpenAPI
    document's components (made from the types the handlers write)."""
    out: dict[str, dict[str, Any]] = {}
    for tp in types:
        schema = TypeAdapter(tp).json_schema(ref_template=_REF + "{model}")
        out.update(schema.pop("$defs", {}))
        out[tp.__name__] = schema
    return out

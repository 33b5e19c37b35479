"""The living catalogue over HTTP: change routes, the catalogue version, hot reload.

Routes (behind the server's bearer token, like every route but the health checks)::

    POST /v1/catalog/changes     one change (a JSON object), {"changes": [...]}, or a JSON
                                 Lines body (application/x-ndjson or application/jsonl);
                                 200 once logged and visible: {"sequence", "catalog_version",
                                 "applied", "items"}; a bad change: 4xx, nothing changed
    GET  /v1/catalog/version     {"catalog_version", "artifact_version", "sequence", "items",
                                 "unavailable_since"} (?since=N: ids that stopped being
                                 available after record N, for pages that loaded at N)
    POST /v1/catalog/reload      hot-reload the artifact (the watched pointer's, else the
                                 configured folder); 409 and the old version kept when the
                                 new one cannot be verified

Change requests run on threads of their own (:data:`stygig.living.CHANGE_REQUESTS` at once,
more get 503), never in the request workers, so a bulk of photos to encode does not hold back
answers; their photos are decoded and encoded on :mod:`stygig.living`'s low-priority threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from stygig.catalog.changes import (
    JSON_VALUES_PER_CHANGE,
    MAX_CHANGES,
    MAX_FIELDS,
    ChangeRequest,
    parse_change,
    parse_changes_jsonl,
)
from stygig.errors import (
    InvalidOptionsError,
    OverloadedError,
    StygigError,
    UnsupportedMediaError,
)
from stygig.living import CHANGE_DECODE_BUDGET, CHANGE_REQUESTS, request_pool
from stygig.recommendation import parse_json_object
from stygig.serving.bodies import (
    CatalogReload,
    CatalogVersion,
    CatalogVersionSince,
    ChangesApplied,
    json_answer,
)
from stygig.serving.requests import query_int, strict_query
from stygig.serving.responses import JSON, get_and_head, json_response

if TYPE_CHECKING:
    from stygig.serving.app import ModelService

__all__ = ["make_changes_router", "parse_changes_body", "watch_and_signal"]

log = logging.getLogger("stygig.serving")

_JSONL = ("application/x-ndjson", "application/jsonl", "application/x-jsonlines")


def parse_changes_body(body: bytes, content_type: str) -> list[ChangeRequest]:
    """The changes a request body holds (4xx errors on any mistake)."""
    if content_type in _JSONL:
        return parse_changes_jsonl(body)
    if content_type != JSON:
        raise UnsupportedMediaError(
            "send changes as application/json or application/x-ndjson (one per line)",
            code="unsupported_content_type",
        )
    data = parse_json_object(
        body, what="the changes", max_values=MAX_CHANGES * JSON_VALUES_PER_CHANGE
    )
    if "changes" in data:
        items = data["changes"]
        if set(data) != {"changes"} or not isinstance(items, list) or not items:
            raise InvalidOptionsError("'changes' must be the only key: a non-empty list")
        if len(items) > MAX_CHANGES:
            raise InvalidOptionsError(f"at most {MAX_CHANGES} changes per request")
        return [parse_change(c, f"change {n + 1}") for n, c in enumerate(items)]
    return [parse_change(data)]


def catalog_version(
    service: ModelService, since: int | None = None
) -> CatalogVersion | CatalogVersionSince:
    """The catalogue version now; with ``since``, the items whose availability changed after
    that change-log record (:class:`CatalogVersionSince`)."""
    rec = service.require()
    snap = rec.snapshot
    now = CatalogVersion(snap.catalog_version, snap.version, snap.sequence, snap.live_items)
    if since is None:
        return now
    state: dict[str, bool] = {}
    for sequence, item_id, in_stock in snap.stock_events:
        if sequence > since:
            state[item_id] = in_stock
    return CatalogVersionSince(
        **asdict(now),
        unavailable_since=sorted(i for i, ok in state.items() if not ok),
        available_again=sorted(i for i, ok in state.items() if ok),
        # False: changes after `since` were folded into this version (compaction) or are
        # older than the events kept; the lists may miss some (a page should reload).
        complete=since >= snap.events_from,
    )


def version_body(service: ModelService, since: int | None = None) -> dict[str, Any]:
    """:func:`catalog_version` as the JSON-ready dict ``GET /v1/catalog/version`` sends."""
    return asdict(catalog_version(service, since))


_FIELDS = {
    "type": "object",
    "maxProperties": MAX_FIELDS,
    "description": "catalogue fields (name, category, gender, price, brand, available, stock, "
    "...) and an 'attributes' object; text of at most 2,000 characters, no control characters",
    "additionalProperties": {"type": ["string", "number", "boolean", "object", "null"]},
}
_CHANGE = {
    "oneOf": [
        {
            "type": "object",
            "description": "add an item, or replace the item of that id (with a new photo)",
            "required": ["op", "item"],
            "properties": {
                "op": {"const": "add"},
                "id": {"type": "string", "description": "the item's id, if the row has none"},
                "item": {**_FIELDS, "required": ["category"]},
                "image_b64": {"type": "string", "description": "the photo, base64"},
                "image": {
                    "type": "string",
                    "description": "or the photo's location, within the folders or S3 prefixes "
                    "the operator allowed (serve --catalog-photos)",
                },
            },
            "additionalProperties": False,
        },
        {
            "type": "object",
            "description": "change fields of an item (not its id or photo)",
            "required": ["op", "id", "set"],
            "properties": {"op": {"const": "update"}, "id": {"type": "string"}, "set": _FIELDS},
            "additionalProperties": False,
        },
        {
            "type": "object",
            "description": "take an item out of the catalogue",
            "required": ["op", "id"],
            "properties": {"op": {"const": "remove"}, "id": {"type": "string"}},
            "additionalProperties": False,
        },
    ]
}
#: The change route's body and answer in the OpenAPI document (review, session 40: it had no
#: request body at all).
CHANGES_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            JSON: {
                "schema": {
                    "oneOf": [
                        _CHANGE,
                        {
                            "type": "object",
                            "required": ["changes"],
                            "properties": {
                                "changes": {
                                    "type": "array",
                                    "items": _CHANGE,
                                    "minItems": 1,
                                    "maxItems": MAX_CHANGES,
                                }
                            },
                            "additionalProperties": False,
                        },
                    ]
                }
            },
            **{
                kind: {
                    "schema": {
                        "type": "string",
                        "description": f"one change object per line, at most {MAX_CHANGES}",
                    }
                }
                for kind in _JSONL
            },
        },
    }
}
CHANGES_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: json_answer("the changes are applied and logged", ChangesApplied)
}


def make_changes_router(service: ModelService) -> APIRouter:
    """The change, version and reload routes."""
    router = APIRouter()
    running = 0  # change requests at work, past their body (the event loop's thread only)

    @router.post(
        "/v1/catalog/changes",
        tags=["catalogue"],
        summary="Add, replace, remove or update items while serving (single or JSON Lines)",
        openapi_extra=CHANGES_DOC,
        responses=CHANGES_RESPONSE,
    )
    async def changes(request: Request) -> Response:
        service.require()
        live = service.live
        if live is None or live.changelog is None:
            raise InvalidOptionsError(
                "this server takes no catalogue changes: start it with --change-log",
                code="changes_disabled",
            )
        from stygig.serving.requests import media_type

        nonlocal running
        kind = media_type(request.headers.get("content-type"))
        # The slots bound the work (parsing, photos, the encoder, the writer), not uploads: a
        # body is read first, within the server's body limits and timeouts (review, session
        # 42: four slow uploads holding every slot refused every change for a minute).
        body = await request.body()
        if running >= CHANGE_REQUESTS:
            raise OverloadedError(
                f"{running} catalogue change requests are in progress; retry after they end",
                code="changes_busy",
            )
        running += 1
        try:
            loop = asyncio.get_running_loop()
            requests = await loop.run_in_executor(request_pool(), parse_changes_body, body, kind)
            submit = functools.partial(live.submit, decode_budget=CHANGE_DECODE_BUDGET)
            snap = await loop.run_in_executor(request_pool(), submit, requests)
        finally:
            running -= 1
        applied = ChangesApplied(
            snap.sequence, snap.catalog_version, len(requests), snap.live_items
        )
        return json_response(asdict(applied))

    @get_and_head(
        router,
        "/v1/catalog/version",
        tags=["catalogue"],
        summary="The catalogue version now",
        dependencies=[Depends(strict_query("since"))],
        responses={
            200: json_answer(
                "the version (CatalogVersion); with since, CatalogVersionSince",
                CatalogVersion,
                CatalogVersionSince,
            )
        },
    )
    async def version(
        since: int | None = query_int(
            default=None, ge=0, le=10**15, description="a sequence number"
        ),
    ) -> Response:
        return json_response(version_body(service, since))

    @router.post(
        "/v1/catalog/reload",
        tags=["catalogue"],
        summary="Switch to a new artifact version without dropping requests",
        responses={
            200: json_answer("whether a new version was taken, and the version now", CatalogReload)
        },
    )
    async def reload() -> Response:
        service.require()
        changed = await service.reload()
        return json_response(asdict(CatalogReload(changed, **version_body(service))))

    return router


async def watch_and_signal(service: ModelService, stop: asyncio.Event) -> None:
    """Reload on SIGHUP, and when the watched pointer names a new folder, until ``stop``."""
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()
    # Not possible off the main thread (tests run the app in-process): the route still works.
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGHUP, wake.set)
    settings = service.config.catalog
    interval = settings.watch_interval_s if settings and settings.watch else None
    try:
        while not stop.is_set():
            waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop.wait())]
            _done, pending = await asyncio.wait(
                waiters, timeout=interval, return_when=asyncio.FIRST_COMPLETED
            )
            for task in pending:
                task.cancel()
            if stop.is_set():
                return
            signalled = wake.is_set()
            wake.clear()
            if not service.ready:
                continue
            try:
                await service.reload(watched=not signalled)
            except StygigError as e:  # why, and the version still served (review, session
                # 49: every cause logged the same "reload_refused"); messages name no path
                log.error("hot reload refused: %s", e.message, extra={"fields": {"code": e.code}})
            except Exception:
                log.exception("hot reload failed")
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(signal.SIGHUP)


def read_pointer(location: str) -> Path:
    """The artifact folder a watch pointer names."""
    from stygig.storage import read_bytes

    text = read_bytes(location, max_bytes=4096).decode("utf-8", "replace").strip()
    if not text:
        raise InvalidOptionsError("the watched pointer is empty", code="bad_pointer")
    return Path(text)

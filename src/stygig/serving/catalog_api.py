"""The try-it page and the catalogue routes it reads (an ``APIRouter`` the app includes).

Routes::

    GET /                          the page (photo in, outfit out)
    GET /static/{name}             its script and style sheet (a fixed list: no path walking)
    GET /favicon.ico               308 to /static/icon.svg
    GET /v1/items/{item_id}/image  the item's thumbnail, from the artifact (ETag, cache headers)
    GET /v1/catalog                browse items: ?query=&category=&gender=&limit=&offset=
    GET /v1/config                 categories, genders, slots, modes, encoder, text_search,
                                   the catalogue version, whether it is the drawn sample
    GET /v1/examples               the example photos the operator offers (``serve --examples``)
    GET /v1/examples/{name}        one of them, by a name from that list

The shelf follows the living catalogue: it is made again for each catalogue snapshot (items
added, removed, sold out), and items the shop cannot sell now carry ``available: false``.

Example photos are the operator's: a folder named at start (``serve --examples DIR``, or
``$STYGIG_EXAMPLES``) is listed once, and only the files of that list are served, by name; a
client never names a path. The page offers them as one-click first tries.

Everything the page shows comes from the server, product images included, so the page works
with no network beyond the server itself. The catalogue search matches words against each
item's name, id, brand, category and colour name; a text-embedding search would need an encoder
with a text tower, which none of StyGig's encoders has (``text_search: false`` in the config).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from stygig import __version__, storage
from stygig.answer import CatalogCard, CatalogPage
from stygig.engine import scoring_kind
from stygig.errors import (
    ConfigError,
    InvalidOptionsError,
    NotFoundError,
    OverloadedError,
    StygigError,
)
from stygig.images import read_header
from stygig.response import item_view
from stygig.serving.bodies import (
    IMAGE_BODY,
    NOT_MODIFIED,
    CategoryCount,
    ExampleCard,
    ExampleList,
    PageConfig,
    ScoringWeights,
    SlotLabel,
    json_answer,
)
from stygig.serving.requests import query_int, strict_query
from stygig.serving.responses import (
    JSON,
    ErrorBody,
    get_and_head,
    json_bytes,
    json_response,
    not_modified,
)
from stygig.thumbnails import ItemImages

if TYPE_CHECKING:
    from stygig.engine import Recommender
    from stygig.serving.app import ModelService
    from stygig.snapshot import CatalogSnapshot

__all__ = [
    "MAX_EXAMPLES",
    "PAGE_HEADERS",
    "Example",
    "image_url",
    "load_examples",
    "make_catalog_router",
]

_STATIC = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
    "docs.js": "text/javascript; charset=utf-8",
}
_IMAGE_MAX_AGE_S = 3600
_MAX_LIMIT = 100
#: Example photos served at most (the first, by file name).
MAX_EXAMPLES = 24
_EXAMPLE_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
}
#: The image format (Pillow's name) each example's bytes must be, by its media type.
_EXAMPLE_FORMATS = {"image/jpeg": {"JPEG", "MPO"}, "image/png": {"PNG"}, "image/webp": {"WEBP"}}
_EXAMPLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


@dataclass(frozen=True)
class Example:
    """One example photo, read at start."""

    name: str  # the file name: the only key a client may use
    label: str  # "Grey shirt" from "grey-shirt.jpg"
    media_type: str
    body: bytes
    etag: str

    def card(self) -> ExampleCard:
        return ExampleCard(self.name, self.label, self.media_type, f"/v1/examples/{self.name}")


def load_examples(folder: Path | None, max_bytes: int) -> dict[str, Example]:
    """The example photos of ``folder`` (none when ``None``), read once: plain files with a
    photo's suffix and a name of letters, digits, ``.``, ``_`` and ``-``, each within the
    upload limit (the page sends it back as an upload) and an image of its suffix's format,
    the first :data:`MAX_EXAMPLES` by name. Anything else in the folder is ignored, links
    included (review, session 36: ``passwd.jpg -> /etc/passwd`` and a link to
    ``/proc/self/environ`` were served as photos); a folder that cannot be read is an error."""
    if folder is None:
        return {}
    root = Path(folder).resolve()
    try:
        entries = sorted(root.iterdir())
    except OSError:
        raise ConfigError("the examples folder cannot be read (--examples)") from None
    out: dict[str, Example] = {}
    for path in entries:
        media = _EXAMPLE_TYPES.get(path.suffix.lower())
        if media is None or not _EXAMPLE_NAME.fullmatch(path.name):
            continue
        try:  # a regular file, reached without following a link, within the limit
            body = storage.read_beneath(root, path, max_bytes=max_bytes)
        except StygigError:
            continue
        header = read_header(body)
        if header is None or header.format not in _EXAMPLE_FORMATS[media]:
            continue
        words = re.sub(r"[-_.]+", " ", path.stem).strip()
        out[path.name] = Example(
            path.name,
            words[:1].upper() + words[1:],
            media,
            body,
            '"' + hashlib.sha256(body).hexdigest()[:20] + '"',
        )
        if len(out) == MAX_EXAMPLES:
            break
    return out


def image_url(item_id: str) -> str:
    """Where a client fetches an item's thumbnail (never the server's path to the photo); the
    id percent-encoded, so that ``? # %`` or spaces in it stay part of the path segment."""
    return f"/v1/items/{quote(item_id, safe='')}/image"


#: The page runs its own script and style sheet only, talks to this server only, shows
#: photos it fetched or the shopper picked (blob: URLs), and is never framed by another site.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


#: ``serve --docs``: Swagger UI from a CDN, pinned to one exact version of the npm package
#: ``swagger-ui-dist`` and checked by the browser against these SHA-384 digests (subresource
#: integrity: a changed or compromised CDN file is refused, never run on the API's origin).
#: The digests are of the files in the npm package (``npm pack swagger-ui-dist@VERSION``),
#: which the CDN serves byte for byte; a new version needs new digests.
SWAGGER_UI_VERSION = "5.35.0"
SWAGGER_UI_BASE = f"https://cdn.jsdelivr.net/npm/swagger-ui-dist@{SWAGGER_UI_VERSION}"
SWAGGER_UI_FILES = {
    "swagger-ui-bundle.js": "sha384-gjRm0bEPMeTmMh5jT2cHccIwCUZSTd8YC+j0d0sXw0MdGEfScduGpSyF3ZSSLkX9",
    "swagger-ui.css": "sha384-WlYgdmXYOOBWL5apwjDEZwN+U3HmXSSu5R6V5aGxEcf7z+KuRNwBhoxKVN1i3D5I",
}
#: /docs runs the pinned bundle and its own starter script (/static/docs.js: no inline
#: script), reads this server's schema and calls it, and is never framed (review, session 41:
#: FastAPI's page had no policy, a floating CDN version, an inline script, and a favicon from
#: another site that was sent the server's origin as Referer).
DOCS_HEADERS = {
    "Content-Security-Policy": (
        f"default-src 'none'; script-src 'self' {SWAGGER_UI_BASE}/swagger-ui-bundle.js; "
        f"style-src {SWAGGER_UI_BASE}/swagger-ui.css; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def docs_page() -> bytes:
    """The /docs page: the pinned, integrity-checked Swagger UI files and /static/docs.js."""
    css, js = SWAGGER_UI_FILES["swagger-ui.css"], SWAGGER_UI_FILES["swagger-ui-bundle.js"]
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        "<title>StyGig API</title>\n"
        '<link rel="icon" href="/static/icon.svg" type="image/svg+xml">\n'
        f'<link rel="stylesheet" href="{SWAGGER_UI_BASE}/swagger-ui.css" integrity="{css}" '
        'crossorigin="anonymous" referrerpolicy="no-referrer">\n</head>\n<body>\n'
        '<div id="swagger-ui"></div>\n'
        f'<script src="{SWAGGER_UI_BASE}/swagger-ui-bundle.js" integrity="{js}" '
        'crossorigin="anonymous" referrerpolicy="no-referrer"></script>\n'
        '<script src="/static/docs.js"></script>\n</body>\n</html>\n'
    ).encode()


def _static_files() -> dict[str, tuple[bytes, str]]:
    """The page's files and their ETags, read once."""
    out = {}
    for name in _STATIC:
        body = (resources.files("stygig.serving") / "static" / name).read_bytes()
        out[name] = (body, '"' + hashlib.sha256(body).hexdigest()[:20] + '"')
    return out


@dataclass
class _Shelf:
    """What the catalogue routes precompute once per catalogue snapshot."""

    recommender: Recommender
    snapshot: CatalogSnapshot
    images: ItemImages
    etag_seed: str
    config: bytes | None = None  # the /v1/config body, made on first use

    @functools.cached_property
    def haystacks(self) -> dict[int, str]:
        """Each live row's search text, in catalogue order: made on the first search of this
        snapshot, not for every thumbnail after a change (34 ms at 8k items; review)."""
        artifact, cols, snap = self.snapshot.artifact, self.snapshot.columns, self.snapshot
        return {
            i: " ".join(
                str(v).lower()
                for v in (item.name, item.id, item.brand, item.category, cols.color_names[i])
                if v
            )
            for i, item in enumerate(artifact.items)
            if snap.is_live(i)
        }

    @classmethod
    def of(cls, rec: Recommender, snap: CatalogSnapshot, previous: _Shelf | None) -> _Shelf:
        """The shelf of ``snap``; ``previous``'s thumbnails are kept while they are this
        artifact version's (a change keeps them; a version reloaded into the same folder does
        not: they are read from the files opened with the version they belong to)."""
        artifact = snap.artifact
        files = artifact.manifest.get("files", {})
        seed = str(
            files.get("thumbnails.bin", {}).get("sha256") or artifact.manifest.get("created_at")
        )
        same = previous is not None and previous.images.root == artifact.path
        if same and previous is not None and previous.etag_seed == seed:
            return cls(rec, snap, previous.images, seed)
        originals = {item.id: item.image for item in artifact.items}
        return cls(rec, snap, ItemImages(artifact.path, originals), seed)

    def image(self, item_id: str) -> bytes | None:
        """The item's thumbnail: a changed item's from the change log, else the artifact's."""
        changed = self.snapshot.thumbnails.get(item_id)
        return changed if changed is not None else self.images.get(item_id)

    def card(self, pos: int) -> CatalogCard:
        """The fields a page needs to show one catalogue item."""
        view = item_view(self.snapshot.columns, pos)
        return CatalogCard(**asdict(view), image_url=image_url(view.id))

    def search(self, query: str, category: str | None, gender: str | None) -> list[int]:
        """Positions of the items whose text holds every word of ``query``, after the filters."""
        rec, cols = self.recommender, self.snapshot.columns
        items = self.snapshot.artifact.items
        words = query.lower().split()
        if category:
            canonical = rec.taxonomy.canonical(category)
            if canonical is None or canonical not in cols.category_names:
                raise InvalidOptionsError(
                    f"the category is not in this catalogue; known: {', '.join(cols.category_names)}"
                )
            category = canonical
        if gender and gender.lower() not in cols.genders_held:
            raise InvalidOptionsError(
                f"the gender is not in this catalogue; known: {', '.join(cols.genders_held)}"
            )
        wanted_gender = gender.lower() if gender else None
        out = []
        for pos in self.haystacks:
            item = items[pos]
            if category and item.category != category:
                continue
            if wanted_gender and item.gender not in (wanted_gender, "unisex", None):
                continue
            text = self.haystacks[pos]
            if all(w in text for w in words):
                out.append(pos)
        return out


def _config(
    service: ModelService, rec: Recommender, snap: CatalogSnapshot, examples: int
) -> PageConfig:
    from stygig.sample_catalog import is_drawn_sample

    artifact = snap.artifact
    counts: dict[str, int] = {}
    for pos in artifact.positions.values():
        category = artifact.items[pos].category
        counts[category] = counts.get(category, 0) + 1
    taxonomy = rec.taxonomy
    slots = sorted(  # by outfit order, then name: slots of one order (top, one_piece) come in
        # one order in every process (a set's order follows the process's hash seed)
        {taxonomy.slot_of(c) for c in counts},
        key=lambda s: (taxonomy.slots[s].outfit_order, s),
    )
    return PageConfig(
        version=__version__,
        encoder=rec.encoder.name,
        text_search=False,  # no StyGig encoder has a text tower; the page searches names
        modes=["outfit", "similar"],
        items=snap.live_items,
        catalog_version=snap.catalog_version,
        sequence=snap.sequence,
        thumbnails="thumbnails.bin" in artifact.manifest.get("files", {}),
        categories=[CategoryCount(c, taxonomy.slot_of(c), counts[c]) for c in sorted(counts)],
        genders=list(snap.columns.genders_held),
        slots=[SlotLabel(s, taxonomy.slots[s].label) for s in slots],
        scoring=ScoringWeights(
            similarity_weight=rec.config.similarity_weight,
            harmony_weight=rec.config.harmony_weight,
            boost=taxonomy.boost,
            scoring=scoring_kind(snap.learned),
            rules_weight=None if snap.learned is None else snap.learned.rules_weight,
        ),
        max_upload_bytes=service.config.max_body_bytes,
        # StyGig's drawn sample catalogue: drawings, not photos (the page says so)
        drawn_sample=is_drawn_sample(artifact.items[p] for p in artifact.positions.values()),
        examples=examples,
        # /docs is served only with `serve --docs`: the page links to it only then
        docs=service.config.docs,
    )


T = TypeVar("T")

#: Catalogue searches run one at a time (each reads every live item's text in Python: ~0.13 s
#: at 20k items), so that searches never hold the worker pool that recommendations need
#: (review, session 36: 16 searches at once took a recommendation from 8 ms to 1.2-1.8 s);
#: at most this many wait, beyond them 503.
SEARCHES_WAITING = 8


class _OneAtATime:
    """An asyncio lock with a bounded queue and a bounded wait."""

    def __init__(self, waiting: int, timeout_s: float) -> None:
        self._lock = asyncio.Lock()
        self._waiting, self._max, self._timeout_s = 0, waiting, timeout_s

    async def run(self, work: Callable[[], Awaitable[T]]) -> T:
        """``work()`` in its turn. The turn ends when the work does, even if the request that
        asked for it is cancelled meanwhile (the pool goes on with it: review, session 36)."""
        if self._waiting >= self._max:
            raise OverloadedError("too many catalogue searches at once; retry shortly")
        self._waiting += 1
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._lock.acquire()
        except TimeoutError:
            raise OverloadedError(
                "the catalogue search waited too long; retry shortly", code="timeout"
            ) from None
        finally:
            self._waiting -= 1
        task = asyncio.ensure_future(work())
        task.add_done_callback(lambda _: self._lock.release())
        try:
            return await asyncio.shield(task)
        finally:
            del task  # no cycle with a failure's traceback (ModelService.run)


_PAGE_REF = "#/components/schemas/CatalogPage"


def make_catalog_router(service: ModelService) -> APIRouter:
    """The page, its static files, item images, catalogue browsing and the page's config."""
    router = APIRouter()
    current: list[_Shelf] = []  # the latest shelf (one: older snapshots are not served)
    # The build under way and its snapshot (one: an older one's waiters keep their future).
    building: list[tuple[CatalogSnapshot, asyncio.Future[_Shelf]]] = []
    searches = _OneAtATime(SEARCHES_WAITING, service.config.request_timeout_s)
    files = _static_files()
    examples = load_examples(service.config.examples, service.config.max_body_bytes)

    async def shelf() -> _Shelf:
        """The current catalogue's shelf, made once per snapshot in the worker pool: requests
        that come while it is made wait for that one build (each used to start its own)."""
        rec = service.require()
        snap = rec.snapshot
        found = current[0] if current else None
        if found is not None and found.snapshot is snap:
            return found
        if building and building[0][0] is snap:
            build = building[0][1]
        else:
            build = asyncio.ensure_future(service.run(_Shelf.of, rec, snap, found))
            building[:] = [(snap, build)]

            def done(task: asyncio.Future[_Shelf]) -> None:
                if building and building[0][1] is task:
                    building.clear()
                if not task.cancelled() and task.exception() is None:
                    made, live = task.result(), service.recommender
                    if live is not None and made.snapshot is live.snapshot:  # still current
                        current[:] = [made]

            build.add_done_callback(done)
        try:
            return await asyncio.shield(build)
        finally:
            del build  # no cycle with a failure's traceback (ModelService.run)

    @router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def page() -> Response:
        return Response(
            files["index.html"][0],
            media_type=_STATIC["index.html"],
            headers={"Cache-Control": "no-cache", **PAGE_HEADERS},
        )

    if service.config.docs:

        @router.api_route("/docs", methods=["GET", "HEAD"], include_in_schema=False)
        async def docs() -> Response:
            return Response(
                docs_page(),
                media_type="text/html; charset=utf-8",
                headers={"Cache-Control": "no-cache", **DOCS_HEADERS},
            )

    @router.api_route("/favicon.ico", methods=["GET", "HEAD"], include_in_schema=False)
    async def favicon() -> Response:
        # What a browser asks for on a page without an icon link (/openapi.json, an error):
        # the page's icon, by a relative Location (never built from the client's Host).
        return Response(
            status_code=308,
            headers={"Location": "/static/icon.svg", "Cache-Control": "max-age=86400"},
        )

    @router.api_route("/static/{name}", methods=["GET", "HEAD"], include_in_schema=False)
    async def static(name: str, request: Request) -> Response:
        # The page itself only at "/", with its security headers (review, session 36: the
        # same page at /static/index.html had none and could be framed).
        if name not in _STATIC or name == "index.html":
            raise NotFoundError("no such static file", code="not_found")
        body, etag = files[name]
        headers = {"Cache-Control": "no-cache", "ETag": etag}
        if not_modified(request.headers, etag):
            return Response(status_code=304, headers=headers)
        return Response(body, media_type=_STATIC[name], headers=headers)

    @get_and_head(
        router,
        "/v1/items/{item_id}/image",
        tags=["catalogue"],
        summary="The item's thumbnail (JPEG), made at build time",
        response_class=Response,  # not JSON: FastAPI would document application/json too
        responses={
            200: {"description": "the thumbnail", "content": {"image/jpeg": IMAGE_BODY}},
            304: NOT_MODIFIED,
            404: {"model": ErrorBody, "description": "unknown item, or an item without a photo"},
        },
    )
    async def item_image(item_id: str, request: Request) -> Response:
        current = await shelf()
        current.snapshot.columns.position(item_id)  # 404 for an unknown item
        changed = current.snapshot.thumbnails.get(item_id)
        seed = hashlib.sha256(changed).hexdigest() if changed else current.etag_seed
        etag = '"' + hashlib.sha256(f"{seed}:{item_id}".encode()).hexdigest()[:24] + '"'
        # Revalidated every time (a living catalogue replaces photos under the same URL: the
        # ETag says when), and never kept by a shared cache (a token may guard it).
        headers = {"Cache-Control": "private, no-cache", "ETag": etag}
        if not_modified(request.headers, etag):
            return Response(status_code=304, headers=headers)
        data = await service.run(current.image, item_id)
        if data is None:
            raise NotFoundError("the item has no image in this artifact", code="no_image")
        return Response(data, media_type="image/jpeg", headers=headers)

    @get_and_head(
        router,
        "/v1/catalog",
        tags=["catalogue"],
        summary="Browse and search catalogue items",
        dependencies=[Depends(strict_query("query", "category", "gender", "limit", "offset"))],
        responses={200: {"content": {JSON: {"schema": {"$ref": _PAGE_REF}}}}},
    )
    async def catalog(
        query: str = Query("", max_length=200, description="words matched in name, id, colour"),
        category: str | None = Query(
            None, max_length=200, description="a category in this catalogue"
        ),
        gender: str | None = Query(
            None, max_length=200, description="a gender in this catalogue (plus unisex)"
        ),
        limit: int = query_int(default=24, ge=1, le=_MAX_LIMIT),
        offset: int = query_int(default=0, ge=0, le=10**9),
    ) -> Response:
        current = await shelf()
        hits = await searches.run(
            lambda: service.run(current.search, query, category or None, gender or None)
        )
        page_hits = hits[offset : offset + limit]
        page = CatalogPage(len(hits), offset, limit, False, [current.card(p) for p in page_hits])
        return json_response(asdict(page))

    @get_and_head(
        router,
        "/v1/config",
        tags=["catalogue"],
        dependencies=[Depends(strict_query())],
        summary="What the page can offer",
        responses={200: json_answer("the catalogue's categories, slots and settings", PageConfig)},
    )
    async def config() -> Response:
        current = await shelf()
        if current.config is None:
            current.config = json_bytes(
                asdict(_config(service, current.recommender, current.snapshot, len(examples)))
            )
        return Response(current.config, media_type=JSON)

    @get_and_head(
        router,
        "/v1/examples",
        tags=["catalogue"],
        dependencies=[Depends(strict_query())],
        summary="Example photos to try (the operator's, from serve --examples)",
        responses={200: json_answer("the example photos", ExampleList)},
    )
    async def example_list() -> Response:
        return json_response(asdict(ExampleList([e.card() for e in examples.values()])))

    @get_and_head(
        router,
        "/v1/examples/{name}",
        tags=["catalogue"],
        summary="One example photo, by a name from /v1/examples",
        response_class=Response,  # not JSON: FastAPI would document application/json too
        responses={
            200: {
                "description": "the photo, of the media type /v1/examples lists for it",
                "content": {t: IMAGE_BODY for t in sorted(set(_EXAMPLE_TYPES.values()))},
            },
            304: NOT_MODIFIED,
        },
    )
    async def example(name: str, request: Request) -> Response:
        found = examples.get(name)
        if found is None:
            raise NotFoundError("no such example photo; see /v1/examples", code="not_found")
        scope = "private" if service.config.auth_token else "public"  # shared caches: no token
        headers = {"Cache-Control": f"{scope}, max-age={_IMAGE_MAX_AGE_S}", "ETag": found.etag}
        if not_modified(request.headers, found.etag):
            return Response(status_code=304, headers=headers)
        return Response(found.body, media_type=found.media_type, headers=headers)

    return router

"""The Yjs document over HTTP: export (viewers) and import (editors, owners).

Both go through the process's `DocumentService` (see `document_service`):
an export includes what live rooms hold but the store does not yet, and an
import reaches connected clients through the same path as any update.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Literal

from aiohttp import web
from pycrdt import Doc
from pydantic import Field

from services.gateway.context import Authorized, Need, authorize, gateway
from services.gateway.errors import ApiError, bad_request, too_large
from services.gateway.projects import PROJECT_ERRORS, ProjectPath
from services.gateway.schema import (
    BINARY,
    JSON,
    Binary,
    Query,
    Reply,
    ReplyBody,
    Routes,
    reply,
)
from services.gateway.schema import add_routes as add_declared_routes
from shared.db.resources import DATABASE
from shared.documents import (
    DOCUMENTS,
    DocumentService,
    DocumentTooLarge,
    StoreDocuments,
    check_document_size,
    export_document,
)
from shared.protocol import EMPTY_UPDATE
from shared.ydoc import RejectedUpdate, apply_update
from shared.ydoc_json import NoSuchPath, select, update_to_json

log = logging.getLogger(__name__)

YJS_CONTENT_TYPE = BINARY
YJS_UPDATE = Reply("A Yjs v1 update", content=YJS_CONTENT_TYPE)
EXPORTED = Reply(
    "A Yjs v1 update, or with format=json the document as JSON (with `path`: the value it "
    "selects, any JSON)",
    content=(YJS_CONTENT_TYPE, JSON),
)


class ExportOptions(Query):
    format: Literal["yjs", "json"] = Field(
        "yjs", description="yjs: one Yjs update; json: every root type decoded to JSON"
    )
    path: str | None = Field(
        None,
        description="with format=json (ignored otherwise): the value at this dot-separated "
        "path of keys and array indices (`metadata.title`, `pages.0`); 404 `path_not_found` "
        "when it names nothing",
    )


class Imported(ReplyBody):
    applied: bool = Field(description="false: the update carried nothing new")
    bytes: int


routes = Routes(tags=["documents"])


FALLBACK_DOCUMENTS: web.AppKey[DocumentService] = web.AppKey("gateway_documents", DocumentService)


def document_service(request: web.Request) -> DocumentService:
    """The `DocumentService` a request uses: the collab's rooms if mounted here, else the fallback.

    Looked up per request, because the collab service (when mounted in the
    same app) registers its rooms as `app[DOCUMENTS]` in a cleanup context
    that runs after the gateway's setup. The fallback for a gateway alone is
    chosen once, in `services/gateway/app.py` (`_gateway_ctx`): the Redis
    log and channel in multi-instance mode, the store otherwise.
    """
    documents = request.app.get(DOCUMENTS)
    if documents is not None:
        return documents
    fallback = request.app.get(FALLBACK_DOCUMENTS)
    if fallback is not None:
        return fallback
    return StoreDocuments(request.app[DATABASE].store, gateway(request).settings.max_document_bytes)


def validate_update(update: bytes) -> None:
    """400 unless `update` is a well-formed Yjs (v1) update (on its own: `DocumentService.apply_update`
    then applies it to the current document)."""
    try:
        apply_update(Doc(), update)
    except RejectedUpdate:
        raise invalid_update() from None


def invalid_update() -> ApiError:
    return bad_request("not a valid Yjs update for this document", code="invalid_update")


async def apply_within_limit(request: web.Request, project_uuid: str, update: bytes) -> None:
    """Apply `update` through the request's `DocumentService`; 413 if it would grow the
    document past MAX_DOCUMENT_BYTES (the live room's size, or the document's built from
    the database and the log)."""
    try:
        check_document_size(0, update, gateway(request).settings.max_document_bytes)
        await document_service(request).apply_update(project_uuid, update)
    except DocumentTooLarge as exc:
        raise ApiError(413, str(exc), code="document_too_large") from None


async def read_body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise too_large(f"the body is larger than the limit of {limit} bytes")
    chunks = bytearray()
    while chunk := await request.content.read(256 * 1024):
        chunks += chunk
        if len(chunks) > limit:
            raise too_large(f"the body is larger than the limit of {limit} bytes")
    return bytes(chunks)


@routes.get(
    "/api/projects/{uuid}/yjs-document",
    "The whole current document (viewer+), including edits not yet stored: one Yjs update, or "
    "with format=json every root type as JSON",
    path_params=ProjectPath,
    query=ExportOptions,
    replies={200: EXPORTED},
    errors=PROJECT_ERRORS,
)
async def export(request: web.Request, query: ExportOptions) -> web.Response:
    auth = await authorize(request, Need.VIEW)
    update = await export_document(document_service(request), auth.project_uuid)
    if query.format == "yjs":
        return update_response(update)
    return web.Response(
        text=await asyncio.to_thread(document_json, update, query.path),
        content_type=JSON,
        headers={"Cache-Control": "no-store"},
    )


def document_json(update: bytes, path: str | None) -> str:
    """The document `update` builds as JSON text, or the value at `path` in it (404
    `path_not_found` when it names nothing). Slow for a large document: run in a thread."""
    document = update_to_json(update)
    try:
        return json.dumps(document if path is None else select(document, path))
    except NoSuchPath as exc:
        raise ApiError(404, str(exc), code="path_not_found") from None


def update_response(update: bytes) -> web.Response:
    """A Yjs update as the body of a 200, never cached."""
    return web.Response(
        body=update, content_type=YJS_CONTENT_TYPE, headers={"Cache-Control": "no-store"}
    )


@routes.post(
    "/api/projects/{uuid}/yjs-document",
    "Import a Yjs update (editor+), applied to the live document; connected clients receive it. "
    "400 `invalid_update` when it cannot be applied to the current document",
    path_params=ProjectPath,
    body=Binary(description="A Yjs v1 update"),
    replies={200: Reply("Applied", Imported)},
    errors=(*PROJECT_ERRORS, 413),
)
async def import_update(request: web.Request) -> web.Response:
    auth = await authorize(request, Need.EDIT)
    update = await read_body(request, gateway(request).settings.max_sync_message_bytes)
    if not update:
        raise bad_request("the body must be a Yjs update", code="invalid_update")
    applied = await merge_update(request, auth, update)
    return reply(Imported(applied=applied, bytes=len(update)))


async def merge_update(request: web.Request, auth: Authorized, update: bytes) -> bool:
    """Merge `update` into the live document like a client's update (connected clients on
    every instance receive it); False when it carries nothing. 400 `invalid_update`, 413
    `document_too_large`."""
    await asyncio.to_thread(validate_update, update)
    if update == EMPTY_UPDATE:
        return False
    try:
        await apply_within_limit(request, auth.project_uuid, update)
    except RejectedUpdate as exc:
        log.warning(
            "import rejected: %s", exc, extra={"project": auth.project_uuid, "user": auth.user_id}
        )
        raise invalid_update() from None
    gateway(request).metrics.imports.inc()
    log.info(
        "document imported",
        extra={"project": auth.project_uuid, "bytes": len(update), "user": auth.user_id},
    )
    return True


def add_routes(app: web.Application) -> None:
    add_declared_routes(app, routes)

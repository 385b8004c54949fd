"""eXeLearning's document routes, as its browser editor calls them.

- `GET /api/projects/uuid/{uuid}/yjs-document` (viewer+): the whole live document as one Yjs
  update, like our export; 404 `not_saved` while the document is empty, which eXeLearning's
  client reads as "never saved" and goes on from.
- `POST` the same path (editor+): a full-state update (`Y.encodeStateAsUpdate`), merged into the
  live document on every instance exactly like our import (reduced first to what the document
  lacks: a save repeats the whole document). `X-Project-Title` (URI-encoded)
  renames the project, `?markSaved=true` sets `projects.saved_at`. Answers
  `{success, message, version, markedAsSaved}`, where `version` is the save's time in
  milliseconds since the epoch, as a string (what eXeLearning's server answers; its client
  does not read it). `navigator.sendBeacon` sends this POST on page unload with only the
  `auth` cookie, which `services/gateway/security.py` accepts from this origin only.
- `PATCH /api/projects/uuid/{uuid}/metadata {title}` (editor+): rename.
"""

from __future__ import annotations

import asyncio
import uuid as uuid_module
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import unquote

from aiohttp import web
from pydantic import Field

from services.gateway.context import Need, authorize, gateway
from services.gateway.documents import (
    YJS_UPDATE,
    document_service,
    invalid_update,
    merge_update,
    read_body,
    update_response,
)
from services.gateway.errors import ApiError, bad_request
from services.gateway.projects import PROJECT_ERRORS, ProjectChange, ProjectPath, update_fields
from services.gateway.schema import (
    Binary,
    Query,
    Reply,
    ReplyBody,
    Routes,
    Security,
    reply,
    validate,
)
from services.gateway.schema import add_routes as add_declared_routes
from shared.compaction import missing_from
from shared.documents import export_document
from shared.protocol import EMPTY_UPDATE
from shared.ydoc import RejectedUpdate

TITLE_HEADER = "X-Project-Title"
# Sent by navigator.sendBeacon on page unload with only the `auth` cookie.
SAVE_SECURITY: Security = ({"bearerAuth": []}, {"tokenQuery": []}, {"authCookie": []})


class SaveOptions(Query):
    markSaved: Literal["true", "false"] = Field("false", description="true: set saved_at")


class Saved(ReplyBody):
    success: bool
    message: str
    version: str = Field(description="the save's time, milliseconds since the epoch")
    markedAsSaved: bool


class MetadataChanged(ReplyBody):
    success: bool
    projectId: uuid_module.UUID
    title: str
    message: str


routes = Routes(tags=["exelearning"])


@routes.get(
    "/api/projects/uuid/{uuid}/yjs-document",
    "eXeLearning's load (viewer+): the whole live document as one Yjs update; 404 `not_saved` "
    "while it is empty",
    path_params=ProjectPath,
    replies={200: YJS_UPDATE},
    errors=PROJECT_ERRORS,
)
async def load(request: web.Request) -> web.Response:
    auth = await authorize(request, Need.VIEW)
    update = await export_document(document_service(request), auth.project_uuid)
    if update == EMPTY_UPDATE:
        raise ApiError(404, "this project's document is empty: never saved", code="not_saved")
    return update_response(update)


def header_title(request: web.Request) -> str | None:
    """The title `X-Project-Title` carries (URI-encoded UTF-8, trimmed), None when absent or blank;
    a title like the metadata route's (`ProjectChange`)."""
    raw = request.headers.get(TITLE_HEADER)
    if raw is None:
        return None
    try:
        title = unquote(raw, errors="strict").strip()
    except UnicodeDecodeError:
        raise bad_request(f"'{TITLE_HEADER}' must be URI-encoded UTF-8") from None
    return validate(ProjectChange, {"title": title}).title or None


async def lacking(request: web.Request, project_uuid: str, update: bytes) -> bytes | None:
    """What the saved full state adds to the live document (None: nothing).

    A save repeats the whole document; merged as it is, every save would be relayed whole to
    every connected client and appended whole to the log. 400 `invalid_update` when it cannot
    be applied to the document.
    """
    current = await document_service(request).load(project_uuid)
    try:
        return await asyncio.to_thread(missing_from, current, update)
    except RejectedUpdate:
        raise invalid_update() from None


@routes.post(
    "/api/projects/uuid/{uuid}/yjs-document",
    "eXeLearning's save (editor+): a full-state Yjs update merged into the live document like an "
    "import; X-Project-Title renames, markSaved=true sets saved_at. With only the auth cookie "
    "(sendBeacon), accepted from this origin only (403 `cross_site`)",
    path_params=ProjectPath,
    query=SaveOptions,
    headers=[
        {
            "name": TITLE_HEADER,
            "in": "header",
            "description": "the new title, URI-encoded UTF-8 (a title as in the metadata route)",
            "schema": {"type": "string"},
        }
    ],
    body=Binary(required=False, description="A Yjs v1 update (empty: a save of nothing)"),
    replies={200: Reply("Saved", Saved)},
    errors=(*PROJECT_ERRORS, 413),
    security=SAVE_SECURITY,
)
async def save(request: web.Request, query: SaveOptions) -> web.Response:
    auth = await authorize(request, Need.EDIT)
    title, marked = header_title(request), query.markSaved == "true"
    update = await read_body(request, gateway(request).settings.max_sync_message_bytes)
    if update:  # eXeLearning's server takes an empty body as a save of nothing
        missing = await lacking(request, auth.project_uuid, update)
        if missing is not None:
            await merge_update(request, auth, missing)
    now = datetime.now(UTC)
    await update_fields(request, auth.project.id, title=title, saved_at=now if marked else None)
    saved = Saved(
        success=True,
        message="Document saved",
        version=str(int(now.timestamp() * 1000)),
        markedAsSaved=marked,
    )
    return reply(saved)


@routes.patch(
    "/api/projects/uuid/{uuid}/metadata",
    "eXeLearning's rename (editor+)",
    path_params=ProjectPath,
    body=ProjectChange,
    replies={200: Reply("Renamed", MetadataChanged)},
    errors=(*PROJECT_ERRORS, 413),
)
async def metadata(request: web.Request, body: ProjectChange) -> web.Response:
    auth = await authorize(request, Need.EDIT)
    await update_fields(request, auth.project.id, title=body.title)
    changed = MetadataChanged(
        success=True, projectId=auth.project.uuid, title=body.title, message="Metadata updated"
    )
    return reply(changed)


def add_routes(app: web.Application) -> None:
    add_declared_routes(app, routes)

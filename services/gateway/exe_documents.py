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
from datetime import UTC, datetime
from urllib.parse import unquote

from aiohttp import web

from services.gateway.context import Need, authorize, gateway, read_json, string_field
from services.gateway.documents import (
    document_service,
    invalid_update,
    merge_update,
    read_body,
    update_response,
)
from services.gateway.errors import ApiError, bad_request
from services.gateway.projects import MAX_TITLE, update_fields
from shared.compaction import missing_from
from shared.documents import export_document
from shared.protocol import EMPTY_UPDATE
from shared.ydoc import RejectedUpdate


async def load(request: web.Request) -> web.Response:
    auth = await authorize(request, Need.VIEW)
    update = await export_document(document_service(request), auth.project_uuid)
    if update == EMPTY_UPDATE:
        raise ApiError(404, "this project's document is empty: never saved", code="not_saved")
    return update_response(update)


def header_title(request: web.Request) -> str | None:
    """The title `X-Project-Title` carries (URI-encoded UTF-8, trimmed), None when absent or blank."""
    raw = request.headers.get("X-Project-Title")
    if raw is None:
        return None
    try:
        title = unquote(raw, errors="strict").strip()
    except UnicodeDecodeError:
        raise bad_request("'X-Project-Title' must be URI-encoded UTF-8") from None
    return string_field({"title": title}, "title", max_length=MAX_TITLE) or None


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


def mark_saved(request: web.Request) -> bool:
    value = request.query.get("markSaved", "false")
    if value not in ("true", "false"):
        raise bad_request("'markSaved' must be 'true' or 'false'")
    return value == "true"


async def save(request: web.Request) -> web.Response:
    auth = await authorize(request, Need.EDIT)
    title, marked = header_title(request), mark_saved(request)
    update = await read_body(request, gateway(request).settings.max_sync_message_bytes)
    if update:  # eXeLearning's server takes an empty body as a save of nothing
        missing = await lacking(request, auth.project_uuid, update)
        if missing is not None:
            await merge_update(request, auth, missing)
    now = datetime.now(UTC)
    await update_fields(request, auth.project.id, title=title, saved_at=now if marked else None)
    return web.json_response(
        {
            "success": True,
            "message": "Document saved",
            "version": str(int(now.timestamp() * 1000)),
            "markedAsSaved": marked,
        }
    )


async def metadata(request: web.Request) -> web.Response:
    auth = await authorize(request, Need.EDIT)
    title = string_field(await read_json(request), "title", max_length=MAX_TITLE)
    await update_fields(request, auth.project.id, title=title)
    return web.json_response(
        {
            "success": True,
            "projectId": auth.project_uuid,
            "title": title,
            "message": "Metadata updated",
        }
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/projects/uuid/{uuid}/yjs-document", load)
    app.router.add_post("/api/projects/uuid/{uuid}/yjs-document", save)
    app.router.add_patch("/api/projects/uuid/{uuid}/metadata", metadata)

"""Version history: named snapshots of the document; fetch; restore as a new update."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from sqlalchemy import func, select

from services.gateway.context import Need, authorize, read_json, sessionmaker, string_field
from services.gateway.documents import YJS_CONTENT_TYPE, apply_within_limit, document_service
from services.gateway.errors import bad_request, not_found
from services.gateway.timefmt import iso
from shared.db.models import YjsVersion
from shared.documents import export_document
from shared.restore import restore_update
from shared.ydoc import RejectedUpdate

log = logging.getLogger(__name__)

MAX_LABEL = 200


def version_json(version: YjsVersion, size: int | None = None) -> dict[str, Any]:
    return {
        "id": version.id,
        "label": version.label,
        "created_by": version.created_by,
        "created_at": iso(version.created_at),
        "size": size if size is not None else len(version.snapshot),
    }


def _version_id(request: web.Request) -> int:
    raw = request.match_info["version_id"]
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise not_found("no such version")
    return int(raw)


async def _load_version(request: web.Request, project_id: int) -> YjsVersion:
    async with sessionmaker(request)() as session:
        version = await session.scalar(
            select(YjsVersion).where(
                YjsVersion.id == _version_id(request), YjsVersion.project_id == project_id
            )
        )
    if version is None:
        raise not_found("no such version")
    return version


async def list_versions(request: web.Request) -> web.Response:
    auth = await authorize(request, Need.VIEW)
    async with sessionmaker(request)() as session:
        rows = (
            await session.execute(
                select(
                    YjsVersion.id,
                    YjsVersion.label,
                    YjsVersion.created_by,
                    YjsVersion.created_at,
                    func.length(YjsVersion.snapshot).label("size"),
                )
                .where(YjsVersion.project_id == auth.project.id)
                .order_by(YjsVersion.id.desc())
            )
        ).all()
    return web.json_response(
        {
            "versions": [
                {
                    "id": row.id,
                    "label": row.label,
                    "created_by": row.created_by,
                    "created_at": iso(row.created_at),
                    "size": int(row.size or 0),
                }
                for row in rows
            ]
        }
    )


async def create_version(request: web.Request) -> web.Response:
    auth = await authorize(request, Need.EDIT)
    body = await read_json(request)
    label = string_field(body, "label", required=False, max_length=MAX_LABEL)
    snapshot = await export_document(document_service(request), auth.project_uuid)
    async with sessionmaker(request)() as session, session.begin():
        version = YjsVersion(
            project_id=auth.project.id, snapshot=snapshot, label=label, created_by=auth.user_id
        )
        session.add(version)
    async with sessionmaker(request)() as session:
        stored = await session.get(YjsVersion, version.id)
    if stored is None:
        raise not_found("the version was deleted as it was created")
    version = stored
    log.info("version created", extra={"project": auth.project_uuid, "version": version.id})
    return web.json_response(version_json(version), status=201)


async def get_version(request: web.Request) -> web.Response:
    auth = await authorize(request, Need.VIEW)
    version = await _load_version(request, auth.project.id)
    return web.Response(body=version.snapshot, content_type=YJS_CONTENT_TYPE)


async def restore_version(request: web.Request) -> web.Response:
    """Apply one new update that makes the document's content equal to the version's."""
    auth = await authorize(request, Need.EDIT)
    version = await _load_version(request, auth.project.id)
    documents = document_service(request)
    current = await export_document(documents, auth.project_uuid)
    try:
        update = await asyncio.to_thread(restore_update, current, version.snapshot)
    except ValueError as exc:
        raise bad_request(f"this version cannot be restored: {exc}") from None
    try:
        await apply_within_limit(request, auth.project_uuid, update)
    except RejectedUpdate as exc:
        raise bad_request(f"this version cannot be restored: {exc}") from None
    log.info("version restored", extra={"project": auth.project_uuid, "version": version.id})
    return web.json_response({"restored": version.id, "update_bytes": len(update)})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/projects/{uuid}/versions", list_versions)
    app.router.add_post("/api/projects/{uuid}/versions", create_version)
    app.router.add_get("/api/projects/{uuid}/versions/{version_id}", get_version)
    app.router.add_post("/api/projects/{uuid}/versions/{version_id}/restore", restore_version)

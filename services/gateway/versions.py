"""Version history: named snapshots of the document; fetch; restore as a new update."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from pydantic import Field
from pydantic_core import ErrorDetails
from sqlalchemy import func, select

from services.gateway.context import Need, authorize, gateway, sessionmaker
from services.gateway.documents import (
    YJS_CONTENT_TYPE,
    YJS_UPDATE,
    apply_within_limit,
    document_service,
)
from services.gateway.errors import ApiError, bad_request, not_found
from services.gateway.projects import PROJECT_ERRORS, ProjectPath
from services.gateway.schema import (
    Body,
    Digits,
    Reply,
    ReplyBody,
    Routes,
    Text,
    Timestamp,
    reply,
)
from services.gateway.schema import add_routes as add_declared_routes
from shared.db.models import YjsVersion
from shared.documents import export_document
from shared.restore import restore_update
from shared.webhooks.events import VERSION_CREATED
from shared.webhooks.outbox import enqueue
from shared.ydoc import RejectedUpdate

log = logging.getLogger(__name__)

MAX_LABEL = 200
MAX_VERSION_ID = 2**63 - 1  # BIGINT


class VersionPath(ProjectPath):
    version_id: Digits = Field(ge=1, le=MAX_VERSION_ID)

    @classmethod
    def no_match(cls, errors: Sequence[ErrorDetails]) -> ApiError:
        return not_found("no such version")


class NewVersion(Body):
    label: Text = Field("", max_length=MAX_LABEL)


class VersionOut(ReplyBody):
    id: int
    label: str
    created_by: int | None
    created_at: Timestamp | None
    size: int = Field(description="the snapshot's size in bytes")

    @classmethod
    def of(cls, version: Any, size: int) -> VersionOut:
        """From a `YjsVersion`, or a row with its id, label, created_by and created_at."""
        return cls(
            id=version.id,
            label=version.label,
            created_by=version.created_by,
            created_at=version.created_at,
            size=size,
        )


class VersionList(ReplyBody):
    versions: list[VersionOut]


class Restored(ReplyBody):
    restored: int = Field(description="the version's id")
    update_bytes: int


routes = Routes(tags=["versions"])


def _version_id(request: web.Request) -> int:
    """The `{version_id}` the path model validated (digits only)."""
    return int(request.match_info["version_id"])


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


@routes.get(
    "/api/projects/{uuid}/versions",
    "Version history (viewer+)",
    path_params=ProjectPath,
    replies={200: Reply("Versions", VersionList)},
    errors=PROJECT_ERRORS,
)
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
    return reply(VersionList(versions=[VersionOut.of(row, int(row.size or 0)) for row in rows]))


@routes.post(
    "/api/projects/{uuid}/versions",
    "Snapshot the current document as a named version (editor+)",
    path_params=ProjectPath,
    body=NewVersion,
    replies={201: Reply("Created", VersionOut)},
    errors=(*PROJECT_ERRORS, 413),
)
async def create_version(request: web.Request, body: NewVersion) -> web.Response:
    auth = await authorize(request, Need.EDIT)
    label = body.label
    snapshot = await export_document(document_service(request), auth.project_uuid)
    async with sessionmaker(request)() as session, session.begin():
        version = YjsVersion(
            project_id=auth.project.id, snapshot=snapshot, label=label, created_by=auth.user_id
        )
        session.add(version)
        await session.flush()
        await enqueue(
            session,
            VERSION_CREATED,
            auth.project.id,
            auth.project_uuid,
            {"version_id": version.id, "label": label, "size": len(snapshot), "by": auth.user_id},
            gateway(request).settings.global_webhooks,
        )
    async with sessionmaker(request)() as session:
        stored = await session.get(YjsVersion, version.id)
    if stored is None:
        raise not_found("the version was deleted as it was created")
    version = stored
    log.info("version created", extra={"project": auth.project_uuid, "version": version.id})
    return reply(VersionOut.of(version, len(version.snapshot)), status=201)


@routes.get(
    "/api/projects/{uuid}/versions/{version_id}",
    "A version's content as one Yjs update (viewer+)",
    path_params=VersionPath,
    replies={200: YJS_UPDATE},
    errors=PROJECT_ERRORS,
)
async def get_version(request: web.Request) -> web.Response:
    auth = await authorize(request, Need.VIEW)
    version = await _load_version(request, auth.project.id)
    return web.Response(body=version.snapshot, content_type=YJS_CONTENT_TYPE)


@routes.post(
    "/api/projects/{uuid}/versions/{version_id}/restore",
    "Restore a version (editor+): one new update makes the document equal to it",
    path_params=VersionPath,
    replies={200: Reply("Restored", Restored)},
    errors=PROJECT_ERRORS,
)
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
    return reply(Restored(restored=version.id, update_bytes=len(update)))


def add_routes(app: web.Application) -> None:
    add_declared_routes(app, routes)

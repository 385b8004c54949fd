"""Projects: create (the caller becomes owner), list mine, get, rename, soft-delete."""

from __future__ import annotations

import logging
import uuid as uuid_module
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.gateway.context import (
    Need,
    authorize,
    caller_user_id,
    invalidate_access,
    read_json,
    sessionmaker,
    string_field,
)
from services.gateway.errors import bad_request, not_found
from services.gateway.security import require_identity
from services.gateway.timefmt import iso
from shared.access import Role
from shared.db.models import Project, ProjectMember, User

log = logging.getLogger(__name__)

MAX_TITLE = 500
MAX_PAGE = 500


def project_json(project: Project, role: Role | str) -> dict[str, Any]:
    return {
        "uuid": str(project.uuid),
        "title": project.title,
        "role": role.value if isinstance(role, Role) else role,
        "owner_id": project.owner_id,
        "created_at": iso(project.created_at),
        "updated_at": iso(project.updated_at),
    }


async def insert_project(
    session: AsyncSession, owner_id: int, title: str, project_uuid: uuid_module.UUID | None = None
) -> Project:
    """Add a project with `owner_id` as its owner (in the caller's transaction)."""
    project = Project(uuid=project_uuid or uuid_module.uuid4(), title=title, owner_id=owner_id)
    session.add(project)
    await session.flush()
    session.add(ProjectMember(project_id=project.id, user_id=owner_id, role=Role.OWNER.value))
    return project


async def create_project(request: web.Request) -> web.Response:
    user_id = caller_user_id(require_identity(request))
    body = await read_json(request)
    title = string_field(body, "title", required=False, max_length=MAX_TITLE)
    async with sessionmaker(request)() as session, session.begin():
        if await session.get(User, user_id) is None:
            raise not_found("this token's account no longer exists")
        project = await insert_project(session, user_id, title)
    async with sessionmaker(request)() as session:
        stored = await session.get(Project, project.id)  # server-side timestamps
    if stored is None:
        raise not_found("the project was deleted as it was created")
    project = stored
    log.info("project created", extra={"project": str(project.uuid), "user": user_id})
    return web.json_response(project_json(project, Role.OWNER), status=201)


def _page(request: web.Request) -> tuple[int, int]:
    try:
        limit = int(request.query.get("limit", MAX_PAGE))
        offset = int(request.query.get("offset", 0))
    except ValueError:
        raise bad_request("'limit' and 'offset' must be integers") from None
    if not 1 <= limit <= MAX_PAGE or not 0 <= offset <= 2**31:
        raise bad_request(f"'limit' must be 1..{MAX_PAGE} and 'offset' >= 0")
    return limit, offset


async def list_projects(request: web.Request) -> web.Response:
    user_id = caller_user_id(require_identity(request))
    limit, offset = _page(request)
    async with sessionmaker(request)() as session:
        rows = (
            await session.execute(
                select(Project, ProjectMember.role)
                .join(ProjectMember, ProjectMember.project_id == Project.id)
                .where(ProjectMember.user_id == user_id, Project.deleted_at.is_(None))
                .order_by(Project.updated_at.desc(), Project.id.desc())
                .limit(limit)
                .offset(offset)
            )
        ).all()
    return web.json_response({"projects": [project_json(p, role) for p, role in rows]})


async def get_project(request: web.Request) -> web.Response:
    auth = await authorize(request, Need.VIEW)
    return web.json_response(project_json(auth.project, auth.role))


async def update_project(request: web.Request) -> web.Response:
    auth = await authorize(request, Need.EDIT)
    body = await read_json(request)
    if "title" not in body:
        raise bad_request("nothing to change: send 'title'")
    title = string_field(body, "title", max_length=MAX_TITLE)
    project = await update_fields(request, auth.project.id, title=title)
    return web.json_response(project_json(project, auth.role))


async def update_fields(
    request: web.Request, project_id: int, *, title: str | None = None, saved_at: datetime | None = None
) -> Project:
    """Rename the project and/or set its `saved_at` (None: unchanged); 404 when it is gone."""
    async with sessionmaker(request)() as session, session.begin():
        project = await session.get(Project, project_id)
        if project is None or project.deleted_at is not None:
            raise not_found("no such project")
        if title is not None:
            project.title = title
        if saved_at is not None:
            project.saved_at = saved_at
        project.updated_at = datetime.now(UTC)
    return project


async def delete_project(request: web.Request) -> web.Response:
    auth = await authorize(request, Need.MANAGE)
    async with sessionmaker(request)() as session, session.begin():
        project = await session.get(Project, auth.project.id)
        if project is not None and project.deleted_at is None:
            project.deleted_at = datetime.now(UTC)
    invalidate_access(request, auth.project_uuid)
    log.info("project deleted", extra={"project": auth.project_uuid, "user": auth.user_id})
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/projects", create_project)
    app.router.add_get("/api/projects", list_projects)
    app.router.add_get("/api/projects/{uuid}", get_project)
    app.router.add_patch("/api/projects/{uuid}", update_project)
    app.router.add_delete("/api/projects/{uuid}", delete_project)

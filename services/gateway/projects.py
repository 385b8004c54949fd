"""Projects: create (the caller becomes owner), list mine, get, rename, soft-delete."""

from __future__ import annotations

import logging
import uuid as uuid_module
from datetime import UTC, datetime

from aiohttp import web
from pydantic import Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.gateway.context import (
    Need,
    authorize,
    caller_user_id,
    invalidate_access,
    sessionmaker,
)
from services.gateway.errors import not_found
from services.gateway.schema import (
    Body,
    Path,
    Query,
    Reply,
    ReplyBody,
    Routes,
    Text,
    Timestamp,
    reply,
)
from services.gateway.schema import add_routes as add_declared_routes
from services.gateway.security import require_identity
from shared.access import Role
from shared.db.models import Project, ProjectMember, User

log = logging.getLogger(__name__)

MAX_TITLE = 500
MAX_PAGE = 500
PROJECT_ERRORS = (400, 401, 403, 404)


class ProjectPath(Path):
    uuid: uuid_module.UUID = Field(description="The project's uuid")


class NewProject(Body):
    title: Text = Field("", max_length=MAX_TITLE)


class ProjectChange(Body):
    title: Text = Field(max_length=MAX_TITLE)


class Page(Query):
    limit: int = Field(MAX_PAGE, ge=1, le=MAX_PAGE)
    offset: int = Field(0, ge=0, le=2**31)


class ProjectOut(ReplyBody):
    uuid: uuid_module.UUID
    title: str
    role: Role
    owner_id: int | None
    created_at: Timestamp | None
    updated_at: Timestamp | None

    @classmethod
    def of(cls, project: Project, role: Role | str) -> ProjectOut:
        return cls(
            uuid=project.uuid,
            title=project.title,
            role=Role(role),
            owner_id=project.owner_id,
            created_at=project.created_at,
            updated_at=project.updated_at,
        )


class ProjectList(ReplyBody):
    projects: list[ProjectOut]


routes = Routes(tags=["projects"])


async def insert_project(
    session: AsyncSession, owner_id: int, title: str, project_uuid: uuid_module.UUID | None = None
) -> Project:
    """Add a project with `owner_id` as its owner (in the caller's transaction)."""
    project = Project(uuid=project_uuid or uuid_module.uuid4(), title=title, owner_id=owner_id)
    session.add(project)
    await session.flush()
    session.add(ProjectMember(project_id=project.id, user_id=owner_id, role=Role.OWNER.value))
    return project


@routes.post(
    "/api/projects",
    "Create a project; the caller becomes its owner",
    body=NewProject,
    replies={201: Reply("Created", ProjectOut)},
    errors=(400, 401, 404, 413),
)
async def create_project(request: web.Request, body: NewProject) -> web.Response:
    user_id = caller_user_id(require_identity(request))
    async with sessionmaker(request)() as session, session.begin():
        if await session.get(User, user_id) is None:
            raise not_found("this token's account no longer exists")
        project = await insert_project(session, user_id, body.title)
    async with sessionmaker(request)() as session:
        stored = await session.get(Project, project.id)  # server-side timestamps
    if stored is None:
        raise not_found("the project was deleted as it was created")
    project = stored
    log.info("project created", extra={"project": str(project.uuid), "user": user_id})
    return reply(ProjectOut.of(project, Role.OWNER), status=201)


@routes.get(
    "/api/projects",
    "The caller's projects (where they are a member)",
    query=Page,
    replies={200: Reply("Projects", ProjectList)},
    errors=(400, 401),
)
async def list_projects(request: web.Request, query: Page) -> web.Response:
    user_id = caller_user_id(require_identity(request))
    async with sessionmaker(request)() as session:
        rows = (
            await session.execute(
                select(Project, ProjectMember.role)
                .join(ProjectMember, ProjectMember.project_id == Project.id)
                .where(ProjectMember.user_id == user_id, Project.deleted_at.is_(None))
                .order_by(Project.updated_at.desc(), Project.id.desc())
                .limit(query.limit)
                .offset(query.offset)
            )
        ).all()
    return reply(ProjectList(projects=[ProjectOut.of(p, role) for p, role in rows]))


@routes.get(
    "/api/projects/{uuid}",
    "One project (viewer+)",
    path_params=ProjectPath,
    replies={200: Reply("The project", ProjectOut)},
    errors=PROJECT_ERRORS,
)
async def get_project(request: web.Request) -> web.Response:
    auth = await authorize(request, Need.VIEW)
    return reply(ProjectOut.of(auth.project, auth.role))


@routes.patch(
    "/api/projects/{uuid}",
    "Rename (editor+)",
    path_params=ProjectPath,
    body=ProjectChange,
    replies={200: Reply("Renamed", ProjectOut)},
    errors=(*PROJECT_ERRORS, 413),
)
async def update_project(request: web.Request, body: ProjectChange) -> web.Response:
    auth = await authorize(request, Need.EDIT)
    project = await update_fields(request, auth.project.id, title=body.title)
    return reply(ProjectOut.of(project, auth.role))


async def update_fields(
    request: web.Request,
    project_id: int,
    *,
    title: str | None = None,
    saved_at: datetime | None = None,
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


@routes.delete(
    "/api/projects/{uuid}",
    "Soft-delete (owner); open rooms are closed",
    path_params=ProjectPath,
    replies={204: Reply("Deleted")},
    errors=PROJECT_ERRORS,
)
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
    add_declared_routes(app, routes)

"""Project membership: every member may list; only owners add, change or remove.

A member may also remove themselves (leave). A project always keeps at least
one owner (409 otherwise). After a change this instance's access cache is
invalidated at once; other instances see it within `ACCESS_CACHE_TTL`, and
the collab service's periodic re-check closes connections that lost access.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from aiohttp import web
from pydantic import Field
from pydantic_core import ErrorDetails
from sqlalchemy import func, select

from services.gateway.accounts import Email
from services.gateway.context import (
    Need,
    authorize,
    gateway,
    invalidate_access,
    sessionmaker,
)
from services.gateway.errors import ApiError, bad_request, conflict, forbidden, not_found
from services.gateway.projects import PROJECT_ERRORS, ProjectPath
from services.gateway.schema import Body, Reply, ReplyBody, Routes, reply
from services.gateway.schema import add_routes as add_declared_routes
from shared.access import Role
from shared.db.models import Project, ProjectMember, User
from shared.webhooks.events import MEMBER_ADDED, MEMBER_REMOVED
from shared.webhooks.outbox import enqueue

log = logging.getLogger(__name__)


class MemberPath(ProjectPath):
    email: Email = Field(description="The account's email (normalised as at registration)")

    @classmethod
    def no_match(cls, errors: Sequence[ErrorDetails]) -> ApiError:
        if all(error["loc"] == ("email",) for error in errors):
            return bad_request("not a valid email address")
        return super().no_match(errors)


class MemberRole(Body):
    role: Role


class Member(ReplyBody):
    user_id: int
    email: str
    name: str
    role: Role

    @classmethod
    def of(cls, user: User, role: Role | str) -> Member:
        return cls(user_id=user.id, email=user.email, name=user.display_name, role=Role(role))


class MemberList(ReplyBody):
    members: list[Member]


routes = Routes(tags=["members"])


@routes.get(
    "/api/projects/{uuid}/members",
    "Members and roles (viewer+)",
    path_params=ProjectPath,
    replies={200: Reply("Members", MemberList)},
    errors=PROJECT_ERRORS,
)
async def list_members(request: web.Request) -> web.Response:
    auth = await authorize(request, Need.VIEW)
    async with sessionmaker(request)() as session:
        rows = (
            await session.execute(
                select(User, ProjectMember.role)
                .join(ProjectMember, ProjectMember.user_id == User.id)
                .where(ProjectMember.project_id == auth.project.id)
                .order_by(User.email)
            )
        ).all()
    return reply(MemberList(members=[Member.of(user, role) for user, role in rows]))


def _email_param(request: web.Request) -> str:
    """The path's email, normalised (`MemberPath` validated it)."""
    return MemberPath.model_validate(dict(request.match_info)).email


async def _owner_count(session, project_id: int) -> int:  # type: ignore[no-untyped-def]
    return int(
        await session.scalar(
            select(func.count())
            .select_from(ProjectMember)
            .where(ProjectMember.project_id == project_id, ProjectMember.role == Role.OWNER.value)
        )
        or 0
    )


@routes.put(
    "/api/projects/{uuid}/members/{email}",
    "Add a member or change their role (owner)",
    path_params=MemberPath,
    body=MemberRole,
    replies={200: Reply("Role changed", Member), 201: Reply("Member added", Member)},
    errors=(*PROJECT_ERRORS, 409, 413),
)
async def put_member(request: web.Request, body: MemberRole) -> web.Response:
    auth = await authorize(request, Need.MANAGE)
    email = _email_param(request)
    role = body.role
    async with sessionmaker(request)() as session, session.begin():
        # Lock the project row: concurrent membership changes of one project serialise.
        await session.execute(
            select(Project.id).where(Project.id == auth.project.id).with_for_update()
        )
        user = await session.scalar(select(User).where(User.email == email))
        if user is None:
            raise not_found("no account with this email")
        member = await session.get(ProjectMember, (auth.project.id, user.id))
        created = member is None
        if member is None:
            session.add(ProjectMember(project_id=auth.project.id, user_id=user.id, role=role.value))
            await enqueue(
                session,
                MEMBER_ADDED,
                auth.project.id,
                auth.project_uuid,
                {"user_id": user.id, "role": role.value, "by": auth.user_id},
                gateway(request).settings.global_webhooks,
            )
        else:
            if (
                member.role == Role.OWNER.value
                and role is not Role.OWNER
                and await _owner_count(session, auth.project.id) <= 1
            ):
                raise conflict("a project must keep at least one owner")
            member.role = role.value
    invalidate_access(request, auth.project_uuid)
    log.info(
        "member set",
        extra={
            "project": auth.project_uuid,
            "member": user.id,
            "role": role.value,
            "by": auth.user_id,
        },
    )
    return reply(Member.of(user, role), status=201 if created else 200)


@routes.delete(
    "/api/projects/{uuid}/members/{email}",
    "Remove a member (owner; any member may remove themselves); their connections close",
    path_params=MemberPath,
    replies={204: Reply("Removed")},
    errors=(*PROJECT_ERRORS, 409),
)
async def delete_member(request: web.Request) -> web.Response:
    auth = await authorize(request, Need.VIEW)
    email = _email_param(request)
    async with sessionmaker(request)() as session, session.begin():
        await session.execute(
            select(Project.id).where(Project.id == auth.project.id).with_for_update()
        )
        user = await session.scalar(select(User).where(User.email == email))
        is_self = user is not None and user.id == auth.user_id
        if auth.role is not Role.OWNER and not is_self:
            raise forbidden("only owners manage members")
        member = (
            None if user is None else await session.get(ProjectMember, (auth.project.id, user.id))
        )
        if member is None:
            raise not_found("no member with this email")
        if member.role == Role.OWNER.value and await _owner_count(session, auth.project.id) <= 1:
            raise conflict("a project must keep at least one owner")
        await session.delete(member)
        await enqueue(
            session,
            MEMBER_REMOVED,
            auth.project.id,
            auth.project_uuid,
            {"user_id": member.user_id, "by": auth.user_id},
            gateway(request).settings.global_webhooks,
        )
    invalidate_access(request, auth.project_uuid)
    log.info("member removed", extra={"project": auth.project_uuid, "by": auth.user_id})
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    add_declared_routes(app, routes)

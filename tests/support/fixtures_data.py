"""Users, projects and memberships written straight into a database, for tests.

Since collab checks project membership (`DatabaseAccess`), a test client may
join `project-<uuid>` only when that project exists and its user is a member.
With an `InProcessServer`, use `await server.grant(project, "alice", "editor")`,
which returns a token; elsewhere use these functions with a sessionmaker::

    user_id, project_uuid = await create_user_and_project(sessionmaker, "alice")
    await make_member(sessionmaker, project_uuid, bob_id, "viewer")

Passwords are hashed once per test session (argon2 is deliberately slow).
"""

from __future__ import annotations

import uuid as uuid_module
from functools import lru_cache

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.access import Role
from shared.db.models import Project, ProjectMember, User

DEFAULT_PASSWORD = "correct horse battery staple"


@lru_cache(maxsize=8)
def password_hash(password: str = DEFAULT_PASSWORD) -> str:
    from argon2 import PasswordHasher

    return PasswordHasher().hash(password)


def bare_uuid(project: str) -> str:
    """A project uuid from a room name (`project-<uuid>`) or a uuid."""
    value = project.removeprefix("project-")
    return str(uuid_module.UUID(value))


def email_for(name: str) -> str:
    return name if "@" in name else f"{name}@test.example.com"


async def create_user(
    sessionmaker: async_sessionmaker[AsyncSession],
    name: str,
    *,
    password: str = DEFAULT_PASSWORD,
    roles: tuple[str, ...] = (),
) -> int:
    """The id of the user `name` (email `<name>@test.example.com`), created if missing."""
    email = email_for(name).lower()
    async with sessionmaker() as session, session.begin():
        existing = await session.scalar(select(User.id).where(User.email == email))
        if existing is not None:
            return existing
        user = User(
            email=email,
            password_hash=password_hash(password),
            display_name=name.split("@")[0],
            roles=list(roles),
        )
        session.add(user)
        await session.flush()
        return user.id


async def create_project(
    sessionmaker: async_sessionmaker[AsyncSession],
    project: str | None = None,
    *,
    owner_id: int | None = None,
    title: str = "",
) -> str:
    """Create the project (room name, uuid or None for a new one) if missing; return its uuid."""
    project_uuid = bare_uuid(project) if project else str(uuid_module.uuid4())
    async with sessionmaker() as session, session.begin():
        dialect_insert = (
            postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
        )
        await session.execute(
            dialect_insert(Project)
            .values(uuid=uuid_module.UUID(project_uuid), title=title, owner_id=owner_id)
            .on_conflict_do_nothing(index_elements=["uuid"])
        )
    if owner_id is not None:
        await make_member(sessionmaker, project_uuid, owner_id, Role.OWNER)
    return project_uuid


async def make_member(
    sessionmaker: async_sessionmaker[AsyncSession],
    project: str,
    user_id: int,
    role: Role | str = Role.EDITOR,
) -> None:
    """Give `user_id` `role` on the (existing) project; replaces a previous role."""
    role_value = Role(role).value
    async with sessionmaker() as session, session.begin():
        project_id = await session.scalar(
            select(Project.id).where(Project.uuid == uuid_module.UUID(bare_uuid(project)))
        )
        if project_id is None:
            raise LookupError(f"no project {project}")
        member = await session.get(ProjectMember, (project_id, user_id))
        if member is None:
            session.add(ProjectMember(project_id=project_id, user_id=user_id, role=role_value))
        else:
            member.role = role_value


async def remove_member(
    sessionmaker: async_sessionmaker[AsyncSession], project: str, user_id: int
) -> None:
    async with sessionmaker() as session, session.begin():
        project_id = await session.scalar(
            select(Project.id).where(Project.uuid == uuid_module.UUID(bare_uuid(project)))
        )
        member = (
            None if project_id is None else await session.get(ProjectMember, (project_id, user_id))
        )
        if member is not None:
            await session.delete(member)


async def create_user_and_project(
    sessionmaker: async_sessionmaker[AsyncSession],
    name: str = "owner",
    project: str | None = None,
    *,
    role: Role | str = Role.OWNER,
) -> tuple[int, str]:
    """A user and a project they are a member of (owner by default): (user_id, project_uuid)."""
    user_id = await create_user(sessionmaker, name)
    project_uuid = await create_project(sessionmaker, project)
    await make_member(sessionmaker, project_uuid, user_id, role)
    return user_id, project_uuid

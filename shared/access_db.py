"""The access rule backed by the database: a caller's role is their project membership.

One rule for every service (`resolve_access`):

- the token's `sub` must be a user id (an integer); anything else has no access;
- the project must exist and not be soft-deleted;
- the role is the `project_members` row of that user on that project (owner,
  editor or viewer); no row means no access.

Site admins (`"admin"` in the token's roles) get **no** implicit project
access: the admin role only governs accounts (registering users when
`AUTH_CREATE_USERS=0`, the admin CLI). An operator who must reach a project
adds themselves as a member with the admin CLI or the members API; that keeps
every access to content visible in `project_members`.

`DatabaseAccess` is the `AccessPolicy` the collab service asks on every join
and on its periodic re-check: answers (including "no access") are cached for
`ttl` seconds, so a busy room costs at most one query per user every `ttl`
seconds, and a revoked membership takes effect within `ttl` on every instance.
Joins that miss the cache at the same time share one query (`LookupBatcher`):
a storm of handshakes costs a query or two, not a pool checkout each.
The gateway calls `invalidate()` after changing memberships, so the instance
that made the change sees it at once.
"""

from __future__ import annotations

import time
import uuid as uuid_module
from collections.abc import Callable, Iterable

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.access import PolicyBase, Role
from shared.auth import Identity
from shared.batching import LookupBatcher
from shared.db.models import Project, ProjectMember


def user_id_of(identity: Identity) -> int | None:
    """The database user id a token speaks for, or None when `sub` is not one."""
    sub = identity.user_id
    if not sub.isascii() or not sub.isdigit() or len(sub) > 18:
        return None
    return int(sub)


def parse_project_uuid(value: str) -> uuid_module.UUID | None:
    """A project uuid from a path or room name, or None when it is not a uuid."""
    try:
        return uuid_module.UUID(value)
    except (ValueError, AttributeError, TypeError):
        return None


async def find_live_project(
    session: AsyncSession, project_uuid: uuid_module.UUID
) -> Project | None:
    """The project with that uuid unless it does not exist or is deleted."""
    return await session.scalar(
        select(Project).where(Project.uuid == project_uuid, Project.deleted_at.is_(None))
    )


async def member_role(session: AsyncSession, project_id: int, user_id: int) -> Role | None:
    raw = await session.scalar(
        select(ProjectMember.role).where(
            ProjectMember.project_id == project_id, ProjectMember.user_id == user_id
        )
    )
    try:
        return Role(raw) if raw is not None else None
    except ValueError:
        return None


async def resolve_access(
    session: AsyncSession, identity: Identity, project_uuid: str | uuid_module.UUID
) -> tuple[Project | None, Role | None]:
    """(the live project or None, the caller's role or None): the one access rule."""
    parsed = (
        project_uuid
        if isinstance(project_uuid, uuid_module.UUID)
        else parse_project_uuid(project_uuid)
    )
    if parsed is None:
        return None, None
    project = await find_live_project(session, parsed)
    if project is None:
        return None, None
    user_id = user_id_of(identity)
    if user_id is None:
        return project, None
    return project, await member_role(session, project.id, user_id)


class DatabaseAccess(PolicyBase):
    """`AccessPolicy` from `project_members`, with a short TTL cache.

    `sessionmaker` may be a callable returning the session factory, so the
    policy can be built before the database is opened (in a cleanup context).
    """

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession]
        | Callable[[], async_sessionmaker[AsyncSession]],
        *,
        ttl: float = 2.0,
        max_entries: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessionmaker = sessionmaker
        self.ttl = ttl
        self._max_entries = max_entries
        self._clock = clock
        self._cache: dict[tuple[str, str], tuple[float, Role | None]] = {}
        self.lookups = 0  # database queries made (for tests and metrics)
        # concurrent joins (a storm of handshakes) share one query instead of a pool checkout each
        self._batcher: LookupBatcher[tuple[str, str], Role | None] = LookupBatcher(
            self._fetch_and_remember, None
        )

    @classmethod
    def for_app(cls, app: web.Application, *, ttl: float = 2.0) -> DatabaseAccess:
        """A policy reading the app's database, resolved on first use."""
        from shared.db.resources import DATABASE

        return cls(lambda: app[DATABASE].sessionmaker, ttl=ttl)

    def _factory(self) -> async_sessionmaker[AsyncSession]:
        if isinstance(self._sessionmaker, async_sessionmaker):
            return self._sessionmaker
        return self._sessionmaker()

    async def role_for(self, identity: Identity, project_uuid: str) -> Role | None:
        key = (identity.user_id, project_uuid.lower())
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        return await self._batcher.get(key)

    async def _fetch_and_remember(
        self, keys: list[tuple[str, str]]
    ) -> dict[tuple[str, str], Role | None]:
        found: dict[tuple[str, str], Role | None] = dict(await self._member_roles(keys))
        now = self._clock()
        for key in keys:
            self._remember(key, found.get(key), now)
        return found

    async def roles_for_many(
        self, requests: Iterable[tuple[Identity, str]]
    ) -> dict[tuple[str, str], Role | None]:
        """Many answers at once: cached ones, then a single query for the rest."""
        now = self._clock()
        answers: dict[tuple[str, str], Role | None] = {}
        missing: list[tuple[str, str]] = []
        for identity, project_uuid in requests:
            key = (identity.user_id, project_uuid.lower())
            cached = self._cache.get(key)
            if cached is not None and cached[0] > now:
                answers[key] = cached[1]
            else:
                missing.append(key)
        if missing:
            found = await self._member_roles(missing)
            now = self._clock()
            for key in missing:
                answers[key] = found.get(key)
                self._remember(key, answers[key], now)
        return answers

    async def _member_roles(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], Role]:
        """Roles of live projects' members among `keys`, in one query."""
        wanted: dict[tuple[int, uuid_module.UUID], tuple[str, str]] = {}
        for key in keys:
            user_id, project_uuid = user_id_of(Identity(key[0])), parse_project_uuid(key[1])
            if user_id is not None and project_uuid is not None:
                wanted[(user_id, project_uuid)] = key
        if not wanted:
            return {}
        self.lookups += 1
        async with self._factory()() as session:
            rows = await session.execute(
                select(ProjectMember.user_id, Project.uuid, ProjectMember.role)
                .join(ProjectMember, ProjectMember.project_id == Project.id)
                .where(
                    Project.uuid.in_({project for _, project in wanted}),
                    Project.deleted_at.is_(None),
                    ProjectMember.user_id.in_({user for user, _ in wanted}),
                )
            )
        roles: dict[tuple[str, str], Role] = {}
        for user_id, project_uuid, raw in rows:
            asked = wanted.get((user_id, project_uuid))
            if asked is not None and raw in Role._value2member_map_:
                roles[asked] = Role(raw)
        return roles

    def invalidate(self, project_uuid: str | None = None) -> None:
        """Forget cached answers for one project (every project when None)."""
        if project_uuid is None:
            self._cache.clear()
            return
        wanted = str(project_uuid).lower()
        for key in [k for k in self._cache if k[1] == wanted]:
            del self._cache[key]

    def _remember(self, key: tuple[str, str], role: Role | None, now: float) -> None:
        if len(self._cache) >= self._max_entries:
            for stale in [k for k, (expires, _) in self._cache.items() if expires <= now]:
                del self._cache[stale]
            if len(self._cache) >= self._max_entries:
                self._cache.clear()
        self._cache[key] = (now + self.ttl, role)


ACCESS: web.AppKey[DatabaseAccess] = web.AppKey("database_access", DatabaseAccess)


def database_access(app: web.Application, ttl: float = 2.0) -> DatabaseAccess:
    """The app's shared `DatabaseAccess` (created on first call, before start-up).

    Gateway and collab mounted in one app share it, so a membership change
    made through the gateway invalidates the collab's cache at once.
    """
    existing = app.get(ACCESS)
    if existing is None:
        existing = DatabaseAccess.for_app(app, ttl=ttl)
        app[ACCESS] = existing
    return existing

"""The opt-in `connection.opened` / `connection.closed` webhooks of the collab service.

An authenticated socket joining or leaving a project's room is recorded through
`outbox.enqueue` (the dispatcher delivers it like any event), but only when a webhook
of the project, or a global one, lists the event. Whether one does is looked up once per
project every SUBSCRIBERS_TTL seconds (concurrent joins share one query), so a project
nobody subscribes to costs no write and at most one query per TTL, whatever the number of
connections. Events are written in the background, never holding up a join; a socket's
`closed` is written after its `opened`. Best effort: an event is lost when the database
fails at that moment, and an instance that dies records no `closed` for its sockets.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid as uuid_module
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.collab.connection import Connection
from services.collab.metrics import CollabMetrics
from shared.access_db import parse_project_uuid, user_id_of
from shared.batching import LookupBatcher
from shared.db.models import Project, Webhook
from shared.tasks import TaskOwner
from shared.webhooks import outbox
from shared.webhooks.events import CONNECTION_CLOSED, CONNECTION_OPENED, GlobalWebhooks

log = logging.getLogger(__name__)

SUBSCRIBERS_TTL = 5.0  # seconds a project's "who listens to connection events" is cached
MAX_CACHED_PROJECTS = 10_000
CONNECTION_EVENTS = frozenset((CONNECTION_OPENED, CONNECTION_CLOSED))


@dataclass(frozen=True, slots=True)
class Subscribers:
    """A project's id and the connection events some webhook of it (or a global one) lists."""

    project_id: int
    events: frozenset[str]


@dataclass(slots=True)
class _Open:
    opened_at: float  # monotonic
    recording: asyncio.Task[None]  # writing `opened`; awaited before `closed` is written


class ConnectionEvents:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        hooks: GlobalWebhooks,
        instance_id: str,
        tasks: TaskOwner,
        metrics: CollabMetrics,
        *,
        ttl: float = SUBSCRIBERS_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._hooks = hooks
        self._global = CONNECTION_EVENTS.intersection(hooks.events) if hooks.urls else frozenset()
        self._instance_id = instance_id
        self._tasks = tasks
        self._metrics = metrics
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[str, tuple[float, Subscribers | None]] = {}
        self._batcher: LookupBatcher[str, Subscribers | None] = LookupBatcher(self._fetch, None)
        self._open: dict[int, _Open] = {}
        self.lookups = 0  # queries made (for tests)

    def opened(self, project_uuid: str, conn: Connection) -> None:
        """`conn` joined the project's room (records `connection.opened` if subscribed)."""
        cached = self._cache.get(project_uuid.lower())
        if cached is not None and cached[0] > self._clock() and cached[1] is None:
            return  # nobody listens: no task, and nothing kept for the connection's life
        data = self._data(conn)
        task = self._tasks.spawn(
            self._record(project_uuid, CONNECTION_OPENED, data, outbox.utcnow()),
            name=f"connection-opened-{conn.id}",
        )
        self._open[conn.id] = _Open(self._clock(), task)

    def closed(self, project_uuid: str, conn: Connection, code: int | None) -> None:
        """`conn` left the room, closed with `code` (records `connection.closed` if subscribed)."""
        opened = self._open.pop(conn.id, None)
        if opened is None:
            return
        data = {
            **self._data(conn),
            "duration_seconds": round(self._clock() - opened.opened_at, 3),
            "close_code": code,
        }
        self._tasks.spawn(
            self._record(project_uuid, CONNECTION_CLOSED, data, outbox.utcnow(), opened.recording),
            name=f"connection-closed-{conn.id}",
        )

    def _data(self, conn: Connection) -> dict[str, Any]:
        user_id = user_id_of(conn.identity)
        return {
            "user_id": user_id if user_id is not None else conn.identity.user_id,
            "instance": self._instance_id,
            "connection": conn.id,
        }

    async def _record(
        self,
        project_uuid: str,
        event: str,
        data: dict[str, Any],
        at: datetime,
        after: asyncio.Task[None] | None = None,
    ) -> None:
        if after is not None:
            await after
        try:
            subscribers = await self.subscribers(project_uuid)
            if subscribers is None or event not in subscribers.events:
                if subscribers is None:
                    self._open.pop(data["connection"], None)  # its `closed` is not wanted either
                return
            async with self._sessionmaker() as session, session.begin():
                await outbox.enqueue(
                    session, event, subscribers.project_id, project_uuid, data, self._hooks, now=at
                )
        except Exception:
            self._metrics.errors.labels("webhook_event").inc()
            log.warning(
                "could not record a %s webhook event",
                event,
                exc_info=True,
                extra={"project": project_uuid, "connection": data["connection"]},
            )

    async def subscribers(self, project_uuid: str) -> Subscribers | None:
        """The project's connection-event subscribers (cached for the TTL); None: nobody, or
        no such project."""
        key = project_uuid.lower()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > self._clock():
            return cached[1]
        return await self._batcher.get(key)

    async def _fetch(self, keys: list[str]) -> dict[str, Subscribers | None]:
        uuids = {parsed: key for key in keys if (parsed := parse_project_uuid(key)) is not None}
        found: dict[str, Subscribers | None] = {}
        if uuids:
            self.lookups += 1
            listening = or_(*(outbox.subscribes(event) for event in CONNECTION_EVENTS))
            async with self._sessionmaker() as session:
                rows = await session.execute(
                    select(Project.uuid, Project.id, Webhook.events)
                    .outerjoin(Webhook, and_(Webhook.project_id == Project.id, listening))
                    .where(Project.uuid.in_(uuids))
                )
            listed_by: dict[uuid_module.UUID, tuple[int, set[str]]] = {}
            for project_uuid, project_id, listed in rows:
                _, events = listed_by.setdefault(project_uuid, (project_id, set(self._global)))
                events.update(CONNECTION_EVENTS.intersection(listed or ()))
            for project_uuid, (project_id, events) in listed_by.items():
                if events:
                    found[uuids[project_uuid]] = Subscribers(project_id, frozenset(events))
        now = self._clock()
        if len(self._cache) >= MAX_CACHED_PROJECTS:
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            if len(self._cache) >= MAX_CACHED_PROJECTS:
                self._cache.clear()
        for key in keys:
            self._cache[key] = (now + self._ttl, found.get(key))
        return found

"""Multi-instance mode: Redis pub/sub fan-out plus the durable update log.

What it guarantees (docs/architecture.md, "Redis contract"):
- Every accepted update is XADDed to the project's log stream *before* it is
  published, in the same Lua call (`LogPublisher`), so a peer that subscribed and
  then read the log misses nothing.
- One subscriber connection per instance; a room's channel is subscribed (and
  the subscription confirmed) before its document is loaded.
- While Redis is down, local rooms keep working; updates wait in a bounded
  backlog (beyond the bound they go straight to the database) and enter the
  log when Redis returns. After every (re)connect each open room publishes
  its state vector and peers answer with exactly the missing diff.
- Nothing accepted depends on Redis keeping it. After every reconnect, and
  whenever the epoch key shows that Redis lost its data (FLUSHALL, a restart
  without AOF, a failover to a replica that had not caught up), each open
  room compares its document with what is durable (database + log) and
  appends the difference to the log, where the worker persists it.
- Presence: a heartbeat key per instance; awareness states owned by an
  instance whose key stays missing for a whole `presence_ttl` are removed
  from every room (a live instance whose key vanished with Redis's data has
  re-announced itself by then). A clean shutdown announces itself so peers
  drop its states at once.

`RedisBackplane` is the one object `create_backplane` swaps in for
`LocalBackplane`; it composes four parts, one job each: `Outbox`
(`redis_outbox.py`: batching, backlog, spill), `Subscriptions`
(`redis_subscriptions.py`: the pub/sub connection and what arrives on it),
`Resync` (`redis_resync.py`: peers' sync, reconciling with the durable state,
hand-over) and `Presence` (`redis_presence.py`: heartbeats, gone instances,
Redis's data lifetime). It routes what arrives to rooms and wires the parts'
events to each other.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

from services.collab.backplane import BackplaneRoom, RoomHost
from services.collab.metrics import CollabMetrics
from services.collab.redis_outbox import Outbox
from services.collab.redis_presence import Presence
from services.collab.redis_resync import Resync
from services.collab.redis_subscriptions import SUBSCRIBE_TIMEOUT, Subscriptions
from shared.awareness import AwarenessOwner
from shared.envelope import INSTANCE_ID_BYTES, Envelope, Kind, awareness_body, split_awareness
from shared.health import ReadinessCheck
from shared.redis_contract import SINGLE_REDIS, RedisLayout
from shared.redis_documents import load_with_log
from shared.redis_log import REDIS_ERRORS, RedisClient
from shared.store import DocumentStore
from shared.tasks import TaskOwner

log = logging.getLogger(__name__)

CLOSE_ROOM_SECONDS = 5.0  # how long an unloading room waits for what it queued to leave
STOP_SECONDS = 5.0  # how long stop() waits for the outbox, then for background work


class RedisBackplane:
    """The multi-instance `Backplane`: outbox, subscriptions, resync and presence, wired together."""

    def __init__(
        self,
        redis: RedisClient,
        store: DocumentStore,
        metrics: CollabMetrics,
        instance_id: bytes,
        *,
        backlog_limit: int = 100_000,
        presence_interval: float = 1.0,
        presence_ttl: float = 3.0,
        layout: RedisLayout = SINGLE_REDIS,
    ) -> None:
        if len(instance_id) != INSTANCE_ID_BYTES:
            raise ValueError(f"instance_id must be {INSTANCE_ID_BYTES} bytes: {instance_id!r}")
        self.instance_id = instance_id
        self._redis = redis
        self._layout = layout
        self._store = store
        self._rooms: RoomHost | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._work = TaskOwner(
            "redis-backplane"
        )  # spills, large sends, fetches, reconciles, hand-overs
        self._subscriptions = Subscriptions(
            redis,
            metrics,
            instance_id,
            self._work,
            deliver=self._deliver,
            missed=self._missed,
            instance_gone=self._instance_gone,
            on_connected=self._on_connected,
            layout=layout,
        )
        self._outbox = Outbox(
            redis,
            store,
            metrics,
            instance_id,
            self._work,
            connected=self._subscriptions.connected,
            on_logged=self._resync_projects,
            backlog_limit=backlog_limit,
            layout=layout,
        )
        self._resync = Resync(
            redis,
            store,
            metrics,
            instance_id,
            self._outbox,
            self._work,
            is_open=self._subscriptions.is_open,
            layout=layout,
        )
        self._presence = Presence(
            redis,
            instance_id,
            interval=presence_interval,
            ttl=presence_ttl,
            on_data_lost=self._data_lost,
        )

    # lifecycle -----------------------------------------------------------

    async def start(self, rooms: RoomHost) -> None:
        self._rooms = rooms
        self._loops = [
            asyncio.create_task(self._subscriptions.run(rooms), name="redis-subscriber"),
            asyncio.create_task(self._outbox.run(), name="redis-sender"),
            asyncio.create_task(self._presence.run(rooms), name="redis-presence"),
        ]
        try:
            await self._subscriptions.wait_connected(SUBSCRIBE_TIMEOUT)
        except TimeoutError:
            log.warning("Redis unreachable at start-up; serving locally until it is back")

    async def stop(self) -> None:
        """Flush the outbox (bounded), say goodbye, disconnect."""
        await self._outbox.flush(STOP_SECONDS)
        await self._presence.say_goodbye()
        # Shutdown is bounded at every step: a stuck dependency must not keep
        # the process from exiting (the backlog was already spilled above).
        await self._work.close(STOP_SECONDS)  # waited for first: a spill must finish its write
        await self._outbox.spill_backlog()  # a large envelope that could not reach Redis meanwhile
        for task in self._loops:
            task.cancel()
        await _quietly(asyncio.gather(*self._loops, return_exceptions=True))
        self._subscriptions.disconnect()
        await _quietly(self._redis.aclose())

    async def open_room(self, project_uuid: str) -> None:
        """Subscribe to the room's channel and wait for Redis to confirm it."""
        await self._subscriptions.open(project_uuid)

    async def load(self, project_uuid: str) -> list[bytes]:
        """Stored document + log tail + updates still waiting for Redis."""
        # Captured first: whatever leaves the outbox meanwhile is then in the log.
        waiting = self._outbox.unsent_updates(project_uuid)
        updates: list[bytes] | None = None
        if self._subscriptions.connected():
            try:
                updates = await load_with_log(self._redis, self._store, project_uuid, self._layout)
            except REDIS_ERRORS:
                log.warning(
                    "log unreadable; loading from the database only",
                    extra={"project": project_uuid},
                )
        if updates is None:  # caught up from the log when Redis returns
            updates = await self._store.load_updates(project_uuid)
        return updates + waiting

    async def room_opened(self, room: BackplaneRoom) -> None:
        """Ask peers for what this room misses and for their awareness states."""
        self._resync.request(room, ask_back=False)

    async def close_room(self, room: BackplaneRoom) -> None:
        self._subscriptions.close(room.project_uuid)
        # until what the room queued has left the outbox (others' traffic may go on)
        await self._outbox.sent_so_far(CLOSE_ROOM_SECONDS)
        self._subscriptions.unsubscribe(room.project_uuid)
        self._resync.hand_over(room)

    async def quarantine(self, project_uuid: str, updates: list[bytes], reason: str) -> int:
        return await self._store.quarantine(project_uuid, updates, reason)

    def publish_update(self, project_uuid: str, update: bytes) -> None:
        self._outbox.put(project_uuid, Kind.UPDATE, update)

    def publish_awareness(
        self, project_uuid: str, connection_id: int, awareness_update: bytes
    ) -> None:
        self._outbox.put(
            project_uuid, Kind.AWARENESS, awareness_body(connection_id, awareness_update)
        )

    def publish_opaque(self, project_uuid: str, frame: bytes | str) -> None:
        if isinstance(frame, str):
            self._outbox.put(project_uuid, Kind.OPAQUE_TEXT, frame.encode())
        else:
            self._outbox.put(project_uuid, Kind.OPAQUE, frame)

    def readiness_checks(self) -> dict[str, ReadinessCheck]:
        async def redis_check() -> None:
            if not self._subscriptions.connected():
                raise ConnectionError("fan-out subscriber disconnected")
            await self._redis.ping()

        return {"redis": redis_check}

    # the parts' events -----------------------------------------------------

    def _open_rooms(self) -> list[BackplaneRoom]:
        return list(self._rooms.rooms()) if self._rooms else []

    def _deliver(self, room: BackplaneRoom, envelope: Envelope) -> None:
        """An envelope from another instance, for one of our rooms."""
        kind, body = envelope.kind, envelope.body
        if kind is Kind.UPDATE:
            room.apply_remote_update(body)
        elif kind is Kind.AWARENESS:
            connection_id, awareness_update = split_awareness(body)
            room.apply_remote_awareness(
                AwarenessOwner.remote(envelope.sender, connection_id), awareness_update
            )
        elif kind is Kind.OPAQUE:
            room.relay_remote_opaque(body)
        elif kind is Kind.OPAQUE_TEXT:
            room.relay_remote_opaque(body.decode())
        else:
            self._resync.answer(room, envelope.sender, kind, body)

    def _missed(self, room: BackplaneRoom) -> None:
        """An envelope meant for the room is gone (a stored one expired): ask peers."""
        self._resync.request(room, ask_back=False)

    def _instance_gone(self, instance_id: bytes) -> None:
        self._presence.forget_instance(instance_id, self._open_rooms())

    def _on_connected(self) -> None:
        self._outbox.wake()
        self._presence.announce()  # before peers look for our heartbeat
        self._resync.after_reconnect(self._open_rooms())

    def _resync_projects(self, projects: set[str]) -> None:
        """Backlogged updates entered the log without being published: their rooms ask
        peers to exchange what either side misses (also when the subscriber never dropped)."""
        for project_uuid in projects:
            room = self._rooms.loaded_room(project_uuid) if self._rooms else None
            if room is not None:
                self._resync.request(room, ask_back=True)

    def _data_lost(self) -> None:
        log.error(
            "Redis lost its data; every open room re-asserts its document",
            extra={"rooms": self._subscriptions.open_rooms},
        )
        self._resync.reassert(self._open_rooms())


async def _quietly(awaitable: Awaitable[object], timeout: float = 2.0) -> None:
    """Await a clean-up step, ignoring its failure and giving up after `timeout`."""
    try:
        await asyncio.wait_for(awaitable, timeout)
    except Exception:  # best-effort clean-up, by design (docstring)  # noqa: BLE001, S110
        pass

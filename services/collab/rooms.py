"""The rooms of one collab instance: load once, unload when idle, close on shutdown.

Concurrent first joins of a project share one load. A room left empty is
unloaded after a grace period, once the backplane has flushed what it
accepted; a join arriving meanwhile waits for that unload and loads afresh.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

from services.collab.backplane import Backplane
from services.collab.connection import Connection
from services.collab.metrics import CollabMetrics
from services.collab.room import Room
from shared import ydoc
from shared.awareness import AwarenessLimits
from shared.tasks import TaskOwner

log = logging.getLogger(__name__)

SHUTDOWN_DRAIN_SECONDS = 0.1


class RoomManager:
    def __init__(
        self,
        backplane: Backplane,
        metrics: CollabMetrics,
        *,
        tasks: TaskOwner,
        unload_grace: float = 30.0,
        relay_unknown_frames: bool = True,
        max_document_bytes: int = 0,
        awareness_limits: AwarenessLimits | None = None,
    ) -> None:
        self._backplane = backplane
        self._metrics = metrics
        self._tasks = tasks
        self._unload_grace = unload_grace
        self._relay_unknown = relay_unknown_frames
        self._max_document_bytes = max_document_bytes
        self._awareness_limits = awareness_limits
        self._rooms: dict[str, Room] = {}
        self._opening: dict[str, Room] = {}
        self._loading: dict[str, asyncio.Future[Room]] = {}
        self._unload_timers: dict[str, asyncio.TimerHandle] = {}
        self._unloading: dict[str, asyncio.Task[None]] = {}
        self._closing = False

    def loaded_room(self, project_uuid: str) -> Room | None:
        """The room of a project, including one still loading (remote updates apply to it)."""
        return self._rooms.get(project_uuid) or self._opening.get(project_uuid)

    def rooms(self) -> list[Room]:
        return list(self._rooms.values()) + list(self._opening.values())

    def connections(self) -> Iterator[Connection]:
        for room in self.rooms():
            yield from list(room.connections.values())

    def connection_count(self) -> int:
        return sum(len(room.connections) for room in self.rooms())

    async def acquire(self, project_uuid: str) -> Room:
        """The loaded room for a project, loading it if needed (once for concurrent callers).

        The caller must `join` the room before its next await, or the room may
        be unloaded under it.
        """
        while True:
            if self._closing:
                raise ConnectionRefusedError("shutting down")
            unloading = self._unloading.get(project_uuid)
            if unloading is not None:
                await asyncio.shield(unloading)
                continue
            room = self._rooms.get(project_uuid)
            if room is not None:
                self._cancel_unload(project_uuid)
                return room
            pending = self._loading.get(project_uuid)
            if pending is None:
                pending = asyncio.get_running_loop().create_future()
                self._loading[project_uuid] = pending
                self._tasks.spawn(self._load(project_uuid, pending), name=f"load-{project_uuid}")
            room = await asyncio.shield(pending)
            if self._rooms.get(project_uuid) is room:
                self._cancel_unload(project_uuid)
                return room

    async def _load(self, project_uuid: str, result: asyncio.Future[Room]) -> None:
        room = Room(
            project_uuid,
            self._backplane,
            self._metrics,
            tasks=self._tasks,
            relay_unknown_frames=self._relay_unknown,
            max_document_bytes=self._max_document_bytes,
            awareness_limits=self._awareness_limits,
        )
        started = time.perf_counter()
        self._opening[project_uuid] = room
        try:
            await self._backplane.open_room(project_uuid)
            await room.load()
            await self._backplane.room_opened(room)
        except BaseException as exc:
            self._opening.pop(project_uuid, None)
            self._loading.pop(project_uuid, None)
            result.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            log.exception("room load failed", extra={"project": project_uuid})
            await self._backplane.close_room(room)
            return
        self._metrics.room_load_seconds.observe(time.perf_counter() - started)
        self._opening.pop(project_uuid, None)
        self._rooms[project_uuid] = room
        self._loading.pop(project_uuid, None)
        self._metrics.rooms.set(len(self._rooms))
        result.set_result(room)
        # If every would-be joiner gave up while we loaded, the room still unloads.
        self._schedule_unload(room)

    async def apply_update(self, project_uuid: str, update: bytes) -> None:
        """Apply an update from outside a connection (an import) to the project's live
        document, loading the room if needed (it unloads after the grace period
        when nobody joins); RejectedUpdate when pycrdt refuses it."""
        room = await self.acquire(project_uuid)
        try:
            room.check_growth(update)
            room.apply_remote_update(update)
        finally:
            self._schedule_unload(room)

    def release(self, room: Room, conn: Connection) -> None:
        """A connection left; schedule the unload when the room is empty."""
        room.leave(conn)
        if room.is_empty:
            self._schedule_unload(room)

    def _schedule_unload(self, room: Room) -> None:
        if self._closing or not room.is_empty or room.project_uuid in self._unload_timers:
            return
        loop = asyncio.get_running_loop()
        self._unload_timers[room.project_uuid] = loop.call_later(
            self._unload_grace, self._start_unload, room
        )

    def _cancel_unload(self, project_uuid: str) -> None:
        timer = self._unload_timers.pop(project_uuid, None)
        if timer is not None:
            timer.cancel()

    def _start_unload(self, room: Room) -> None:
        self._unload_timers.pop(room.project_uuid, None)
        if not room.is_empty or self._rooms.get(room.project_uuid) is not room:
            return
        del self._rooms[room.project_uuid]
        self._metrics.rooms.set(len(self._rooms))
        task = self._tasks.spawn(self._unload(room), name=f"unload-{room.project_uuid}")
        self._unloading[room.project_uuid] = task
        task.add_done_callback(lambda _: self._unloading.pop(room.project_uuid, None))

    async def _unload(self, room: Room) -> None:
        try:
            await self._backplane.close_room(room)
        except Exception:
            log.exception("room unload failed", extra={"project": room.project_uuid})
        else:
            log.info("room unloaded", extra={"project": room.project_uuid})

    async def close(self, code: int, message: str) -> None:
        """Shutdown: refuse new joins, close every socket with `code`, flush every room."""
        if self._closing:
            return
        self._closing = True
        # Frames already received are handled before the sockets close (aiohttp
        # discards what is still unread once close() starts).
        await asyncio.sleep(SHUTDOWN_DRAIN_SECONDS)
        for timer in self._unload_timers.values():
            timer.cancel()
        self._unload_timers.clear()
        await asyncio.gather(
            *(conn.close(code, message) for conn in self.connections()), return_exceptions=True
        )
        rooms, self._rooms = list(self._rooms.values()), {}
        await asyncio.gather(*self._unloading.values(), return_exceptions=True)
        await asyncio.gather(*(self._unload(room) for room in rooms), return_exceptions=True)
        self._metrics.rooms.set(0)


class RoomDocuments:
    """`DocumentService` backed by this instance's rooms (the embedded process)."""

    def __init__(self, rooms: RoomManager, backplane: Backplane) -> None:
        self._rooms = rooms
        self._backplane = backplane

    async def load(self, project_uuid: str) -> list[bytes]:
        room = self._rooms.loaded_room(project_uuid)
        if room is not None:
            return [ydoc.encode_diff(room.doc)]
        return await self._backplane.load(project_uuid)

    async def apply_update(self, project_uuid: str, update: bytes) -> None:
        """Apply to the live room (loaded for the purpose if needed), then hand on;
        RejectedUpdate, with nothing relayed or stored, when pycrdt refuses it, and
        DocumentTooLarge past the room's limit."""
        await self._rooms.apply_update(project_uuid, update)
        self._backplane.publish_update(project_uuid, update)

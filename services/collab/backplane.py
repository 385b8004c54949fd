"""The one object that differs between single- and multi-instance mode.

A room calls its backplane to load its document and to hand on what it
accepted; the backplane decides where that goes. `LocalBackplane` (no Redis)
persists updates in process through the `StoreWriter`; the Redis backplane
fans out to other instances and appends to the durable log. Handlers and
rooms never ask which one they have.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from services.collab.store_writer import StoreWriter
from shared.awareness import AwarenessOwner
from shared.health import ReadinessCheck
from shared.store import DocumentStore


class BackplaneRoom(Protocol):
    """What a backplane may ask of a room (`Room` is the one implementation): its
    document's state, its own connections' awareness, and to take in what other
    instances sent."""

    @property
    def project_uuid(self) -> str: ...

    def state_vector(self) -> bytes:
        """The document's state vector (what a peer's answer is computed against)."""

    def missing_for(self, state_vector: bytes | None = None) -> bytes:
        """The update a holder of `state_vector` lacks (the whole document when None)."""

    def local_awareness_updates(self) -> list[tuple[int, bytes]]:
        """(connection id, awareness update) for this instance's connections."""

    def remote_awareness_instances(self) -> set[bytes]:
        """The other instances whose connections own awareness states here."""

    def apply_remote_update(self, update: bytes) -> None:
        """Another instance's update; RejectedUpdate when pycrdt refuses it."""

    def apply_remote_updates(self, updates: list[bytes]) -> None:
        """Many updates at once (a log catch-up); refused ones are skipped."""

    def apply_remote_awareness(self, owner: AwarenessOwner, awareness_update: bytes) -> None:
        """Awareness announced by a connection of another instance."""

    def relay_remote_opaque(self, frame: bytes | str) -> None:
        """A frame another instance relayed untouched."""

    def remove_instance_awareness(self, instance_id: bytes) -> None:
        """Drop the awareness states of another instance's connections (it went away)."""


class RoomHost(Protocol):
    """What a backplane may ask of the rooms of its instance (remote deliveries)."""

    def loaded_room(self, project_uuid: str) -> BackplaneRoom | None:
        """The room of a project, including one still loading."""

    def rooms(self) -> Sequence[BackplaneRoom]:
        """Every room, including those still loading."""


class Backplane(Protocol):
    async def start(self, rooms: RoomHost) -> None:
        """Connect; from now on remote messages are delivered to `rooms`."""

    async def stop(self) -> None:
        """Write out everything accepted and disconnect."""

    async def open_room(self, project_uuid: str) -> None:
        """Called before a room loads its document (subscribe first, then load)."""

    async def load(self, project_uuid: str) -> list[bytes]:
        """Every update of the document: stored ones and accepted-but-unstored ones."""

    async def room_opened(self, room: BackplaneRoom) -> None:
        """Called once a room has loaded (multi-instance: ask peers for what it misses)."""

    async def quarantine(self, project_uuid: str, updates: list[bytes], reason: str) -> int:
        """Set aside loaded updates pycrdt refused (`DocumentStore.quarantine`)."""

    def publish_update(self, project_uuid: str, update: bytes) -> None:
        """An accepted document update: make it durable and reach other instances."""

    def publish_awareness(
        self, project_uuid: str, connection_id: int, awareness_update: bytes
    ) -> None:
        """Entries a local connection owns (accepted by its room), as an awareness update."""

    def publish_opaque(self, project_uuid: str, frame: bytes | str) -> None:
        """A frame relayed without interpretation."""

    async def close_room(self, room: BackplaneRoom) -> None:
        """The room is unloading: flush what it accepted, stop listening for it."""

    def readiness_checks(self) -> dict[str, ReadinessCheck]:
        """Dependencies this backplane needs, for /health/ready."""


class LocalBackplane:
    """Single-instance mode: no fan-out; updates go to the store in process."""

    def __init__(self, store: DocumentStore, writer: StoreWriter) -> None:
        self._store = store
        self._writer = writer

    async def start(self, rooms: RoomHost) -> None:
        await self._writer.start()

    async def stop(self) -> None:
        await self._writer.stop()

    async def open_room(self, project_uuid: str) -> None:
        return None

    async def load(self, project_uuid: str) -> list[bytes]:
        unwritten = self._writer.pending(project_uuid)  # first: see StoreWriter.pending
        return await self._store.load_updates(project_uuid) + unwritten

    async def room_opened(self, room: BackplaneRoom) -> None:
        return None

    async def quarantine(self, project_uuid: str, updates: list[bytes], reason: str) -> int:
        return await self._store.quarantine(project_uuid, updates, reason)

    def publish_update(self, project_uuid: str, update: bytes) -> None:
        self._writer.submit(project_uuid, update)

    def publish_awareness(
        self, project_uuid: str, connection_id: int, awareness_update: bytes
    ) -> None:
        return None

    def publish_opaque(self, project_uuid: str, frame: bytes | str) -> None:
        return None

    async def close_room(self, room: BackplaneRoom) -> None:
        await self._writer.close_project(room.project_uuid)

    def readiness_checks(self) -> dict[str, ReadinessCheck]:
        return {}

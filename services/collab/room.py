"""A room: one project's live document and the connections editing it.

Lifecycle: the `RoomManager` creates a room, `load()`s its document through
the backplane, clients `join()`/`leave()`, frames go through `receive()`;
frames from other instances come in through the `apply_remote_*` methods.
The room owns the in-memory `Doc` and the awareness registry; where accepted
updates go (store, Redis) is the backplane's business.

Fresh clients (empty state vector) need the whole document. Its SyncStep2 is
encoded once and reused by every fresh join until the document next changes,
so 30 clients opening a large project together cost one encoding. Updates
must therefore reach the doc through the room (`_apply`), which drops the
cached answer. An update applied to an empty document (a stored snapshot at
load, a client's first sync answer) is itself a whole-document answer, so it
becomes the cached answer without encoding anything: a large document's
first join after it was loaded or uploaded costs no encoding.

Size: a client's update that would grow the document past
`max_document_bytes` is refused (`DocumentTooLarge`). Encoding the document
to measure it costs as much as a full sync, so the room keeps an upper bound
(the last measured size plus every update applied since) and measures only
when the bound says an update might not fit; the measurement is the full
sync answer, cached for the next fresh join.

Every pycrdt call goes through `shared/ydoc.py`: an update pycrdt refuses or
panics on is rejected (its sender is closed with 1007) and is neither relayed
nor handed to the backplane. A panic may leave the `Doc` inconsistent, so the
room then rebuilds it from the durable state (`_rebuild`) and asks every
client for what the rebuilt document lacks. A stored update that cannot be
applied at load is quarantined, and the document loads without it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from pycrdt import Doc

from services.collab.backplane import Backplane
from services.collab.connection import Connection, Payload
from services.collab.frames import encode_frame, frame_header
from services.collab.metrics import CollabMetrics
from shared import ydoc
from shared.awareness import (
    Applied,
    AwarenessEntry,
    AwarenessLimitExceeded,
    AwarenessLimits,
    AwarenessOwner,
    AwarenessRegistry,
    decode_awareness_update,
    encode_in_chunks,
)
from shared.compaction import replay
from shared.documents import check_document_size
from shared.protocol import (
    EMPTY_STATE_VECTOR,
    EMPTY_UPDATE,
    Frame,
    FrameKind,
    ProtocolError,
    encode_awareness,
    encode_sync_step1,
    encode_sync_step2,
    encode_sync_update,
    parse_frame,
    sync_step2_head,
)
from shared.tasks import TaskOwner
from shared.ydoc import RejectedUpdate

log = logging.getLogger(__name__)


class InvalidUpdate(ProtocolError):
    """A sync frame whose payload is not a valid Yjs update or state vector."""


@dataclass(frozen=True, slots=True)
class _FullSync:
    """The SyncStep2 carrying the whole document, as one WebSocket frame; `message` is the
    SyncStep2 itself, a view into the frame (a large document is held once, not twice)."""

    frame: bytes
    message: memoryview

    @classmethod
    def of(cls, update: bytes) -> _FullSync:
        # one copy of a possibly large document: header and update joined once
        head = sync_step2_head(len(update))
        header = frame_header(len(head) + len(update))
        frame = b"".join((header, head, update))
        return cls(frame, memoryview(frame)[len(header) :])


class Room:
    def __init__(
        self,
        project_uuid: str,
        backplane: Backplane,
        metrics: CollabMetrics,
        *,
        tasks: TaskOwner,
        relay_unknown_frames: bool = True,
        max_document_bytes: int = 0,
        awareness_limits: AwarenessLimits | None = None,
    ) -> None:
        self.project_uuid = project_uuid
        self._tasks = tasks
        self.doc: Doc = Doc()
        self.connections: dict[int, Connection] = {}
        self.awareness = AwarenessRegistry(awareness_limits)
        self._backplane = backplane
        self._metrics = metrics
        self._relay_unknown = relay_unknown_frames
        self._full_sync: _FullSync | None = None  # None: stale, encode on the next fresh join
        self._max_document_bytes = max_document_bytes  # 0: no limit
        self._size_bound = 0  # the encoded document is at most this long
        self._arrivals: list[bytes] | None = []  # other instances' updates, until loaded
        self._rebuilding: asyncio.Task[None] | None = None
        self._accepted_while_rebuilding: list[bytes] = []

    def __repr__(self) -> str:
        return f"<Room {self.project_uuid} connections={len(self.connections)}>"

    # lifecycle ----------------------------------------------------------

    async def load(self) -> None:
        """Fill the document from the backplane (stored snapshot, log, unstored tail).

        Updates delivered by other instances while loading are already in the
        doc; the stored ones are applied on top (Yjs updates commute). An update
        both in the database and still in the log (the worker committed it but
        has not trimmed the log yet) is applied once. Each apply is a turn of the
        event loop of its own: a large document's pieces do not add up to one stall.
        If pycrdt refuses a stored update, the history is replayed without it
        (`replay`) and the refused ones are quarantined.
        """
        updates = list(dict.fromkeys(await self._backplane.load(self.project_uuid)))
        try:
            for update in updates:
                if update and update != EMPTY_UPDATE:
                    self._apply(update, stored=True)
                    await asyncio.sleep(0)
            return
        except RejectedUpdate:
            pass
        finally:
            arrivals, self._arrivals = self._arrivals or [], None
        # the Doc may be damaged: rebuilt from the history without what pycrdt refuses
        loaded = replay(updates + arrivals)
        stored = [i for i in loaded.rejected if i < len(updates)]
        self.doc = loaded.doc
        self._full_sync = _FullSync.of(loaded.update)
        self._size_bound = len(loaded.update)
        if stored:
            await self._quarantine([updates[i] for i in stored])

    async def _quarantine(self, updates: list[bytes]) -> None:
        log.error(
            "stored updates cannot be applied; quarantined, the document loads without them",
            extra={"project": self.project_uuid, "updates": len(updates)},
        )
        try:
            count = await self._backplane.quarantine(
                self.project_uuid, updates, "refused by pycrdt when loading the room"
            )
        except Exception:
            log.exception("could not quarantine updates", extra={"project": self.project_uuid})
            return
        self._metrics.quarantined.inc(count)

    def join(self, conn: Connection) -> None:
        """Add a connection and greet it: our state vector, then current awareness."""
        self.connections[conn.id] = conn
        self._send(conn, encode_sync_step1(self.doc.get_state()), "sync_step1")
        self._send_awareness_snapshot(conn)

    def leave(self, conn: Connection) -> None:
        """Remove a connection and announce the removal of its awareness states."""
        if self.connections.pop(conn.id, None) is None:
            return
        self._announce_awareness(
            self.awareness.remove_owner(AwarenessOwner.local(conn.id)), conn.id
        )

    @property
    def is_empty(self) -> bool:
        return not self.connections

    # frames from local clients -----------------------------------------

    def receive(self, conn: Connection, data: bytes) -> None:
        """Handle one binary frame; raise ProtocolError when it is malformed."""
        frame = parse_frame(data)
        self._metrics.frames_in_by[frame.kind.value].inc()
        if frame.kind is FrameKind.SYNC_STEP1:
            self._answer_step1(conn, frame)
        elif frame.kind in (FrameKind.SYNC_STEP2, FrameKind.SYNC_UPDATE):
            self._accept_update(conn, frame, data)
        elif frame.kind is FrameKind.AWARENESS:
            self._receive_awareness(conn, frame.payload)
        elif frame.kind is FrameKind.QUERY_AWARENESS:
            self._send_awareness_snapshot(conn)
        elif frame.kind is FrameKind.OPAQUE:
            self._relay_opaque(conn, data)
        # FrameKind.AUTH from a client means nothing to the server.

    def receive_text(self, conn: Connection, text: str) -> None:
        """Text frames are never interpreted, only relayed."""
        self._metrics.frames_in_by["text"].inc()
        self._relay_opaque(conn, text)

    def _answer_step1(self, conn: Connection, frame: Frame) -> None:
        if frame.payload == EMPTY_STATE_VECTOR:
            full = self._full_sync_answer()
            self._send(conn, full.message, "sync_step2", full.frame)
            return
        try:
            missing = self.missing_for(frame.payload)
        except RejectedUpdate as exc:
            raise InvalidUpdate(f"invalid state vector: {exc}") from None
        self._send(conn, encode_sync_step2(missing), "sync_step2")

    def _full_sync_answer(self) -> _FullSync:
        """The answer to an empty state vector, encoded at most once per document state."""
        if self._full_sync is None:
            try:
                update = ydoc.encode_diff(self.doc, EMPTY_STATE_VECTOR)
            except RejectedUpdate:
                self._rebuild()  # the document itself cannot be encoded: it is damaged
                raise
            self._full_sync = _FullSync.of(update)
            self._size_bound = len(self._full_sync.message)
        return self._full_sync

    def check_growth(self, update: bytes) -> None:
        """Raise DocumentTooLarge if applying `update` could grow the document past its limit."""
        limit = self._max_document_bytes
        if limit and self._size_bound + len(update) > limit:
            check_document_size(len(self._full_sync_answer().message), update, limit)

    def _accept_update(self, conn: Connection, frame: Frame, data: bytes) -> None:
        update = frame.payload
        if update == EMPTY_UPDATE:
            return
        if not conn.role.can_edit:
            self._metrics.readonly_dropped.inc()
            return
        self.check_growth(update)
        try:
            self._apply(update)
        except RejectedUpdate as exc:
            raise InvalidUpdate(str(exc)) from None
        if self._has_receivers(exclude=conn):
            relayed = data if frame.kind is FrameKind.SYNC_UPDATE else encode_sync_update(update)
            self._broadcast(relayed, "sync_update", exclude=conn)
        self._backplane.publish_update(self.project_uuid, update)

    def _relay_opaque(self, conn: Connection, frame: bytes | str) -> None:
        if not self._relay_unknown:
            return
        self._broadcast(frame, "opaque", exclude=conn)
        self._backplane.publish_opaque(self.project_uuid, frame)

    # what the backplane reads (peers' sync requests, re-asserting, hand-over)

    def state_vector(self) -> bytes:
        return self.doc.get_state()

    def missing_for(self, state_vector: bytes | None = None) -> bytes:
        """The update a holder of `state_vector` lacks (the whole document when None);
        RejectedUpdate when pycrdt refuses the state vector or cannot encode the document."""
        return ydoc.encode_diff(self.doc, state_vector)

    # frames from other instances (through the backplane) ---------------

    def apply_remote_update(self, update: bytes) -> None:
        """A document update accepted by another instance (or imported over HTTP);
        RejectedUpdate (nothing relayed) when pycrdt refuses it."""
        self._apply(update)
        self._broadcast(encode_sync_update(update), "sync_update")

    def apply_remote_updates(self, updates: list[bytes]) -> None:
        """Many updates at once (a log catch-up): one diff goes out to the clients.
        Updates pycrdt refuses are skipped (a load quarantines them)."""
        before = self.doc.get_state()
        for update in updates:
            try:
                self._apply(update)
            except RejectedUpdate as exc:
                log.warning("skipped a log update: %s", exc, extra={"project": self.project_uuid})
        diff = ydoc.encode_diff(self.doc, before)
        if diff != EMPTY_UPDATE:
            self._broadcast(encode_sync_update(diff), "sync_update")

    def apply_remote_awareness(self, owner: AwarenessOwner, awareness_update: bytes) -> None:
        """Awareness announced on another instance; `owner` is that instance's connection.

        The same limits and ownership hold as for a local connection; what is
        refused is dropped (a remote connection cannot be closed from here)."""
        try:
            entries = decode_awareness_update(awareness_update, self.awareness.limits)
        except AwarenessLimitExceeded as exc:
            self._metrics.awareness_dropped_by[exc.reason].inc()
            return
        self._announce_awareness(self._admit_awareness(owner, entries).accepted)

    def relay_remote_opaque(self, frame: bytes | str) -> None:
        self._broadcast(frame, "opaque")

    def remove_instance_awareness(self, instance_id: bytes) -> None:
        """Drop the awareness states of another instance's connections (it went away)."""
        self._announce_awareness(self.awareness.remove_instance(instance_id))

    # awareness -------------------------------------------------------------

    def _receive_awareness(self, conn: Connection, payload: bytes) -> None:
        """A local connection's awareness update: bounded, then only the entries
        it owns are recorded and relayed (to the sender too: the echo keeps a
        quiet stock client from timing out).

        Raises AwarenessLimitExceeded past a per-frame or per-connection limit."""
        try:
            entries = decode_awareness_update(payload, self.awareness.limits)
        except AwarenessLimitExceeded as exc:
            self._metrics.awareness_dropped_by[exc.reason].inc()
            raise
        applied = self._admit_awareness(AwarenessOwner.local(conn.id), entries)
        if applied.dropped["client_ids"]:
            raise AwarenessLimitExceeded(
                "client_ids",
                f"more than {self.awareness.limits.max_client_ids} awareness client ids",
            )
        self._announce_awareness(applied.accepted, conn.id)

    def _admit_awareness(self, owner: AwarenessOwner, entries: list[AwarenessEntry]) -> Applied:
        applied = self.awareness.apply(owner, entries)
        for reason, count in applied.dropped.items():
            self._metrics.awareness_dropped_by[reason].inc(count)
        return applied

    def _announce_awareness(
        self, entries: list[AwarenessEntry], connection_id: int | None = None
    ) -> None:
        """Broadcast entries (at most `max_entries` per frame); a local connection's go to the backplane too."""
        for update in encode_in_chunks(entries, self.awareness.limits.max_entries):
            self._broadcast(encode_awareness(update), "awareness")
            if connection_id is not None:
                self._backplane.publish_awareness(self.project_uuid, connection_id, update)

    def _send_awareness_snapshot(self, conn: Connection) -> None:
        """Every current state, at most `max_entries` per frame and `max_room_bytes` in all."""
        for update in encode_in_chunks(self.awareness.states(), self.awareness.limits.max_entries):
            self._send(conn, encode_awareness(update), "awareness")

    def remote_awareness_instances(self) -> set[bytes]:
        """The other instances whose connections own awareness states here."""
        return self.awareness.remote_instances()

    def local_awareness_updates(self) -> list[tuple[int, bytes]]:
        """(connection id, awareness update) for the states of this instance's connections."""
        size = self.awareness.limits.max_entries
        return [
            (connection_id, update)
            for connection_id, entries in self.awareness.local_states().items()
            for update in encode_in_chunks(entries, size)
        ]

    def _apply(self, update: bytes, *, stored: bool = False) -> None:
        """Apply an update to the document; the cached full sync is stale from now on
        (unless the document was empty: then the update is the whole document).

        RejectedUpdate when pycrdt refuses it; after a panic the document is
        rebuilt from the durable state (for a `stored` one, by `load` itself).
        """
        was_empty = self._size_bound == 0  # nothing was ever applied to this document
        self._full_sync = None
        self._size_bound += len(update)
        try:
            ydoc.apply_update(self.doc, update)
        except RejectedUpdate as exc:
            if exc.damaged and not stored:
                self._rebuild()
            raise
        if was_empty:
            self._full_sync = _FullSync.of(update)
            self._size_bound = len(self._full_sync.message)
        if self._rebuilding is not None:
            self._accepted_while_rebuilding.append(update)
        if self._arrivals is not None and not stored:
            self._arrivals.append(update)

    def _rebuild(self) -> None:
        """Replace a document a panic may have left inconsistent (once at a time)."""
        if self._rebuilding is not None:
            return
        log.warning(
            "pycrdt panicked applying an update; rebuilding the document",
            extra={"project": self.project_uuid},
        )
        self._accepted_while_rebuilding = []
        self._rebuilding = self._tasks.spawn(
            self._rebuild_from_durable(), name=f"rebuild-{self.project_uuid}"
        )

    async def _rebuild_from_durable(self) -> None:
        """Load what the backplane holds (everything accepted so far, see `Backplane.load`),
        add what this room accepted since, swap the document in, and ask every
        client (and, in multi-instance mode, every peer) for what it lacks."""
        try:
            updates = list(dict.fromkeys(await self._backplane.load(self.project_uuid)))
            rebuilt = replay(updates + self._accepted_while_rebuilding)
        except Exception:
            log.exception(
                "rebuilding the document failed; keeping the current one",
                extra={"project": self.project_uuid},
            )
            return
        finally:
            self._rebuilding = None
        self.doc = rebuilt.doc
        self._full_sync = _FullSync.of(rebuilt.update)
        self._size_bound = len(rebuilt.update)
        self._metrics.rebuilds.inc()
        self._broadcast(encode_sync_step1(ydoc.encode_state(rebuilt.doc)), "sync_step1")
        await self._backplane.room_opened(self)
        stored = [i for i in rebuilt.rejected if i < len(updates)]
        if stored:  # a stored update the live document had taken but cannot be rebuilt from
            await self._quarantine([updates[i] for i in stored])

    # sending -------------------------------------------------------------

    def _send(self, conn: Connection, data: Payload, kind: str, frame: bytes | None = None) -> None:
        conn.send(data, frame)
        self._metrics.frames_out_by[kind].inc()
        self._metrics.bytes_out.inc(len(data))

    def _has_receivers(self, *, exclude: Connection | None) -> bool:
        return len(self.connections) > (exclude is not None and exclude.id in self.connections)

    def _broadcast(
        self, data: bytes | str, kind: str, *, exclude: Connection | None = None
    ) -> None:
        """Send the same bytes to every connection (encoded once, by the caller)."""
        if not self._has_receivers(exclude=exclude):
            return
        frame = encode_frame(data)
        count = 0
        for conn in self.connections.values():
            if conn is not exclude:
                conn.send(data, frame)
                count += 1
        if count:
            self._metrics.frames_out_by[kind].inc(count)
            self._metrics.bytes_out.inc(len(data) * count)

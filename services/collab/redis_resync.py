"""Resync: closing the gaps between this instance's rooms, their peers and what is durable.

- Peers: a room publishes its state vector (`SYNC_REQUEST`, optionally asking
  back); a peer answers with exactly the update it misses (`SYNC_REPLY`, if not
  empty) and republishes its own connections' awareness states.
- Durable state: after a reconnect, or once Redis lost its data, each open room
  applies its log tail (`catch_up`) and appends to the log, log-only, whatever
  it holds that neither the database nor the log has (`reconcile`); at most
  `REASSERT_CONCURRENCY` rooms read the database at once.
- Hand-over: a room that unloads waits up to `HANDOVER_SECONDS` for the worker
  to drain its log (or for another instance to have it open), and otherwise
  writes its whole document to the database: nothing lives in Redis alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from services.collab.backplane import BackplaneRoom
from services.collab.metrics import CollabMetrics
from services.collab.redis_outbox import MAX_BACKOFF, Outbox, write_to_database
from shared.backoff import Backoff
from shared.compaction import missing_from
from shared.envelope import (
    Kind,
    awareness_body,
    split_sync_reply,
    split_sync_request,
    sync_reply_body,
    sync_request_body,
)
from shared.protocol import EMPTY_UPDATE
from shared.redis_contract import SINGLE_REDIS, RedisLayout
from shared.redis_log import REDIS_ERRORS, RedisClient, channel_subscribers, read_log
from shared.store import DocumentStore
from shared.tasks import TaskOwner
from shared.ydoc import RejectedUpdate

log = logging.getLogger(__name__)

REASSERT_CONCURRENCY = 4  # rooms compared with the database at once after Redis lost data
HANDOVER_SECONDS = 3.0  # how long an unloaded room waits for the worker before writing itself
HANDOVER_POLL = 0.1


class Resync:
    """Sync with peers, reconciliation with the durable state, and hand-over on unload."""

    def __init__(
        self,
        redis: RedisClient,
        store: DocumentStore,
        metrics: CollabMetrics,
        instance_id: bytes,
        outbox: Outbox,
        work: TaskOwner,
        *,
        is_open: Callable[[str], bool],
        layout: RedisLayout = SINGLE_REDIS,
    ) -> None:
        self._redis = redis
        self._layout = layout
        self._store = store
        self._metrics = metrics
        self._instance_id = instance_id
        self._outbox = outbox
        self._work = work
        self._is_open = is_open
        self._reassert_slots = asyncio.Semaphore(REASSERT_CONCURRENCY)

    def request(self, room: BackplaneRoom, *, ask_back: bool) -> None:
        """Publish the room's state vector; peers answer with what it misses."""
        self._outbox.put(
            room.project_uuid,
            Kind.SYNC_REQUEST,
            sync_request_body(room.state_vector(), ask_back=ask_back),
        )
        self._metrics.resyncs.inc()

    def answer(self, room: BackplaneRoom, sender: bytes, kind: Kind, body: bytes) -> None:
        """A peer's `SYNC_REQUEST` (reply, republish awareness, ask back if asked) or a
        `SYNC_REPLY` (applied if it is meant for this instance)."""
        if kind is Kind.SYNC_REQUEST:
            ask_back, state_vector = split_sync_request(body)
            missing = room.missing_for(state_vector)
            if missing != EMPTY_UPDATE:
                self._outbox.put(
                    room.project_uuid, Kind.SYNC_REPLY, sync_reply_body(sender, missing)
                )
            for connection_id, states in room.local_awareness_updates():
                self._outbox.put(
                    room.project_uuid, Kind.AWARENESS, awareness_body(connection_id, states)
                )
            if ask_back:
                self.request(room, ask_back=False)
        elif kind is Kind.SYNC_REPLY:
            target, update = split_sync_reply(body)
            if target == self._instance_id:
                room.apply_remote_update(update)

    def after_reconnect(self, rooms: Iterable[BackplaneRoom]) -> None:
        """Whatever happened while Redis was away: peers fill it in, and so does the log
        (entries no live peer may hold); and Redis may have lost what we sent it."""
        for room in rooms:
            self.request(room, ask_back=True)
            self._work.spawn(
                self.reconcile(room, catch_up=True), name=f"reconcile-{room.project_uuid}"
            )

    def reassert(self, rooms: Iterable[BackplaneRoom]) -> None:
        """Redis lost its data: every room puts back what the durable state lacks."""
        for room in rooms:
            self._work.spawn(
                self.reconcile(room, catch_up=False), name=f"reassert-{room.project_uuid}"
            )

    async def reconcile(self, room: BackplaneRoom, *, catch_up: bool) -> None:
        """Apply the room's log tail to it (`catch_up`), then append to the log what
        the room holds that neither the database nor the log has.

        The log is read before the database (see `load_with_log`); updates the
        room accepts meanwhile may be appended twice, which is harmless.
        """
        backoff = Backoff(0.2, MAX_BACKOFF)
        async with self._reassert_slots:
            while self._is_open(room.project_uuid):
                try:
                    tail = [update for _, update in await read_log(self._redis, room.project_uuid, self._layout)]
                    stored = await self._store.load_updates(room.project_uuid)
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # Redis or the database away: the room keeps what it has  # noqa: BLE001
                    log.warning(
                        "cannot compare room with the durable state yet: %s",
                        exc,
                        extra={"project": room.project_uuid},
                    )
                    await backoff.sleep()
            else:
                return  # the room unloaded (its outbox was flushed to the log first)
            if catch_up:
                room.apply_remote_updates(tail)
            try:
                held = room.missing_for()
                missing = await asyncio.to_thread(missing_from, stored + tail, held)
            except RejectedUpdate as exc:  # the room rebuilds itself; nothing to re-assert from it
                log.warning(
                    "cannot compare room with the durable state: %s",
                    exc,
                    extra={"project": room.project_uuid},
                )
                return
        if missing is None:
            return
        log.warning(
            "re-asserting updates Redis lost",
            extra={"project": room.project_uuid, "bytes": len(missing)},
        )
        self._metrics.reasserted.inc()
        self._outbox.put_log_only(room.project_uuid, missing)

    def hand_over(self, room: BackplaneRoom) -> None:
        """After an unload, make sure (in the background) the room's document does not live in Redis alone."""
        self._work.spawn(self._hand_over(room), name=f"hand-over-{room.project_uuid}")

    async def _hand_over(self, room: BackplaneRoom) -> None:
        """Once the worker has drained the room's log, or another instance has the
        room open (and so holds everything too), nothing depends on Redis. If
        neither happens within `HANDOVER_SECONDS` (the worker is down or behind,
        Redis is unreachable), the whole document is written to the database.
        """
        deadline = asyncio.get_running_loop().time() + HANDOVER_SECONDS
        while asyncio.get_running_loop().time() < deadline:
            # first wait: our own unsubscription is then in, and not counted below
            await asyncio.sleep(HANDOVER_POLL)
            try:
                length = await self._redis.xlen(self._layout.log_stream(room.project_uuid))
                if length == 0 or await channel_subscribers(
                    self._redis, self._layout, room.project_uuid
                ):
                    return
            except REDIS_ERRORS:
                pass
        log.info(
            "room unloaded before its log was persisted; writing it to the database",
            extra={"project": room.project_uuid},
        )
        await write_to_database(
            self._store, [(room.project_uuid, room.missing_for())], self._metrics.handovers
        )

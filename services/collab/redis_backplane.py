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
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict, deque
from collections.abc import Iterable
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import Counter

from services.collab.backplane import RoomHost
from services.collab.metrics import CollabMetrics
from shared import ydoc
from shared.backoff import Backoff
from shared.compaction import missing_from
from shared.envelope import (
    INSTANCE_ID_BYTES,
    Envelope,
    EnvelopeError,
    Kind,
    awareness_body,
    decode_envelope,
    encode_envelope,
    split_awareness,
    split_sync_reply,
    split_sync_request,
    sync_reply_body,
    sync_request_body,
)
from shared.health import ReadinessCheck
from shared.protocol import EMPTY_UPDATE, ProtocolError
from shared.redis_documents import load_with_log
from shared.redis_log import (
    INLINE_ENVELOPE_BYTES,
    REDIS_ERRORS,
    LogPublisher,
    ProjectOutbox,
    channel,
    current_epoch,
    instance_key,
    log_stream,
    project_of_channel,
    read_log,
)
from shared.redis_subscriber import RedisSubscriber
from shared.store import DocumentStore
from shared.ydoc import RejectedUpdate

log = logging.getLogger(__name__)

INSTANCES_CHANNEL = "exe:yjs:instances"  # body: the id of an instance shutting down
INSTANCES_CHANNEL_BYTES = INSTANCES_CHANNEL.encode()
SUBSCRIBE_TIMEOUT = 5.0
MAX_BACKOFF = 2.0
REASSERT_CONCURRENCY = 4  # rooms compared with the database at once after Redis lost data
HANDOVER_SECONDS = 3.0  # how long an unloaded room waits for the worker before writing itself
HANDOVER_POLL = 0.1


class RedisBackplane:
    def __init__(
        self,
        redis: aioredis.Redis,
        store: DocumentStore,
        metrics: CollabMetrics,
        instance_id: bytes,
        *,
        backlog_limit: int = 100_000,
        presence_interval: float = 1.0,
        presence_ttl: float = 3.0,
    ) -> None:
        if len(instance_id) != INSTANCE_ID_BYTES:
            raise ValueError(f"instance_id must be {INSTANCE_ID_BYTES} bytes: {instance_id!r}")
        self.instance_id = instance_id
        self._redis = redis
        self._log = LogPublisher(redis)
        self._store = store
        self._metrics = metrics
        self._backlog_limit = backlog_limit
        self._presence_interval = presence_interval
        self._presence_ttl = presence_ttl
        self._rooms: RoomHost | None = None
        self._subscriber: RedisSubscriber | None = None
        self._projects: set[str] = set()
        self._subscribed: dict[str, asyncio.Future[None]] = {}
        self._outbox: list[tuple[str, Kind, bytes]] = []
        self._backlog: deque[tuple[str, bytes]] = deque()
        self._wake_sender = asyncio.Event()
        self._drained = asyncio.Event()  # outbox and backlog empty, no large envelope in flight
        self._drained.set()
        self._large_in_flight = 0
        # outbox items ever queued / ever handed on (sent, or moved to the backlog)
        self._queued = self._handed_on = 0
        self._progress = asyncio.Event()
        self._connected = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._epoch: bytes | None = None  # Redis's data lifetime, as last seen
        self._announce = asyncio.Event()  # refresh the heartbeat now
        self._missing_since: dict[bytes, float] = {}  # owners whose heartbeat key is missing
        self._reassert_slots = asyncio.Semaphore(REASSERT_CONCURRENCY)

    # lifecycle -----------------------------------------------------------

    async def start(self, rooms: RoomHost) -> None:
        self._rooms = rooms
        self._tasks = [
            asyncio.create_task(self._subscriber_loop(), name="redis-subscriber"),
            asyncio.create_task(self._sender_loop(), name="redis-sender"),
            asyncio.create_task(self._presence_loop(), name="redis-presence"),
        ]
        try:
            await asyncio.wait_for(self._connected.wait(), SUBSCRIBE_TIMEOUT)
        except TimeoutError:
            log.warning("Redis unreachable at start-up; serving locally until it is back")

    async def stop(self) -> None:
        """Flush the outbox (bounded), say goodbye, disconnect."""
        try:
            await asyncio.wait_for(self._drained.wait(), 5.0)
        except TimeoutError:
            log.error(
                "stopping with updates not yet in the Redis log; writing them to the database",
                extra={"backlog": len(self._backlog)},
            )
            stranded = list(self._backlog) + [(p, b) for p, k, b in self._outbox if k is Kind.UPDATE]
            await self._spill(stranded, self._metrics.log_spilled)
            self._backlog.clear()
        try:
            async with asyncio.timeout(2.0):
                await self._redis.publish(INSTANCES_CHANNEL, self.instance_id)
                await self._redis.delete(instance_key(self.instance_id))
        except REDIS_ERRORS:
            pass
        # Shutdown is bounded at every step: a stuck dependency must not keep
        # the process from exiting (the backlog was already spilled above).
        if self._side_tasks:  # waited for, not cancelled: a spill must finish its write
            await asyncio.wait(set(self._side_tasks), timeout=5.0)
        if self._backlog:  # a large envelope that could not reach Redis meanwhile
            await self._spill(list(self._backlog), self._metrics.log_spilled)
            self._backlog.clear()
        for task in self._tasks:
            task.cancel()
        await _quietly(asyncio.gather(*self._tasks, return_exceptions=True))
        if self._subscriber is not None:
            self._subscriber.close()
        await _quietly(self._redis.aclose())

    async def open_room(self, project_uuid: str) -> None:
        """Subscribe to the room's channel and wait for Redis to confirm it."""
        self._projects.add(project_uuid)
        if not self._connected.is_set():
            return  # the subscriber subscribes every open room when Redis returns
        try:
            await self._subscribe([project_uuid])
        except REDIS_ERRORS:
            log.warning("subscribe failed; the room resyncs when Redis returns", extra={"project": project_uuid})

    async def load(self, project_uuid: str) -> list[bytes]:
        """Stored document + log tail + updates still waiting for Redis."""
        # Captured first: whatever leaves the outbox meanwhile is then in the log.
        waiting = [u for p, u in self._backlog if p == project_uuid]
        waiting += [b for p, k, b in self._outbox if p == project_uuid and k is Kind.UPDATE]
        updates: list[bytes] | None = None
        if self._connected.is_set():
            try:
                updates = await load_with_log(self._redis, self._store, project_uuid)
            except REDIS_ERRORS:
                log.warning("log unreadable; loading from the database only", extra={"project": project_uuid})
        if updates is None:  # caught up from the log when Redis returns
            updates = await self._store.load_updates(project_uuid)
        return updates + waiting

    async def room_opened(self, room: Any) -> None:
        """Ask peers for what this room misses and for their awareness states."""
        self._request_sync(room, ask_back=False)

    async def close_room(self, room: Any) -> None:
        project_uuid = room.project_uuid
        self._projects.discard(project_uuid)
        try:  # until what the room queued has left the outbox (others' traffic may go on)
            await asyncio.wait_for(self._handed_on_up_to(self._queued), 5.0)
        except TimeoutError:
            pass  # it is still written, in order, by the sender
        waiter = self._subscribed.pop(project_uuid, None)
        if waiter is not None and self._subscriber is not None and self._connected.is_set():
            try:
                self._subscriber.unsubscribe(channel(project_uuid))
            except REDIS_ERRORS:
                pass
        self._spawn(self._hand_over(room))

    async def quarantine(self, project_uuid: str, updates: list[bytes], reason: str) -> int:
        return await self._store.quarantine(project_uuid, updates, reason)

    def publish_update(self, project_uuid: str, update: bytes) -> None:
        self._publish(project_uuid, Kind.UPDATE, update)

    def publish_awareness(self, project_uuid: str, connection_id: int, awareness_update: bytes) -> None:
        self._publish(project_uuid, Kind.AWARENESS, awareness_body(connection_id, awareness_update))

    def publish_opaque(self, project_uuid: str, frame: bytes | str) -> None:
        if isinstance(frame, str):
            self._publish(project_uuid, Kind.OPAQUE_TEXT, frame.encode())
        else:
            self._publish(project_uuid, Kind.OPAQUE, frame)

    def readiness_checks(self) -> dict[str, ReadinessCheck]:
        async def redis_check() -> None:
            if not self._connected.is_set():
                raise ConnectionError("fan-out subscriber disconnected")
            await self._redis.ping()

        return {"redis": redis_check}

    # publishing ----------------------------------------------------------

    def _request_sync(self, room: Any, *, ask_back: bool) -> None:
        """Publish the room's state vector; peers answer with what it misses."""
        self._publish(room.project_uuid, Kind.SYNC_REQUEST, sync_request_body(room.doc.get_state(), ask_back=ask_back))
        self._metrics.resyncs.inc()

    def _publish(self, project_uuid: str, kind: Kind, body: bytes) -> None:
        self._outbox.append((project_uuid, kind, body))
        self._queued += 1
        self._drained.clear()
        self._wake_sender.set()

    def _hand_on(self, count: int) -> None:
        self._handed_on += count
        self._progress.set()

    async def _handed_on_up_to(self, target: int) -> None:
        while self._handed_on < target:
            self._progress.clear()
            await self._progress.wait()

    async def _sender_loop(self) -> None:
        """Send the outbox once per wake-up: one Redis call, log appends before publishes.

        A large envelope (a document-sized update) goes in a call of its own on another
        connection (`_send_alone`): the other rooms' batches do not wait for its bytes.
        """
        backoff = Backoff(0.05, MAX_BACKOFF)
        while True:
            await self._wake_sender.wait()
            self._wake_sender.clear()
            if not self._connected.is_set():
                self._move_updates_to_backlog()
                continue
            batch, self._outbox = self._outbox, []
            for item in [item for item in batch if len(item[2]) > INLINE_ENVELOPE_BYTES]:
                batch.remove(item)
                self._large_in_flight += 1
                self._spawn(self._send_alone(item))
            backlog = list(self._backlog)
            try:
                await self._send(backlog, batch)
            except REDIS_ERRORS as exc:
                log.warning("Redis publish failed (%s); keeping updates for the log", exc)
                self._outbox[:0] = batch
                self._move_updates_to_backlog()
                await backoff.sleep()
                self._wake_sender.set()
                continue
            backoff.reset()
            self._hand_on(len(batch))
            for _ in backlog:
                self._backlog.popleft()
            self._resync_projects({project_uuid for project_uuid, _ in backlog})
            self._metrics.log_backlog.set(len(self._backlog))
            self._set_drained_if_idle()

    def _set_drained_if_idle(self) -> None:
        if not self._outbox and not self._backlog and not self._large_in_flight:
            self._drained.set()

    async def _send_alone(self, item: tuple[str, Kind, bytes]) -> None:
        """One large envelope, retried until it is in; if Redis goes away meanwhile, an
        update waits in the backlog like any other."""
        project_uuid, kind, body = item
        backoff = Backoff(0.05, MAX_BACKOFF)
        try:
            while self._connected.is_set():
                try:
                    await self._send([], [item])
                    return
                except REDIS_ERRORS as exc:
                    log.warning("Redis publish of a large envelope failed (%s); retrying", exc,
                                extra={"project": project_uuid, "bytes": len(body)})
                    await backoff.sleep()
            if kind is Kind.UPDATE:
                self._backlog.append((project_uuid, body))
                self._wake_sender.set()
        finally:
            self._large_in_flight -= 1
            self._hand_on(1)
            self._set_drained_if_idle()

    async def _send(self, backlog: list[tuple[str, bytes]], batch: list[tuple[str, Kind, bytes]]) -> None:
        outboxes: dict[str, ProjectOutbox] = defaultdict(ProjectOutbox)
        for project_uuid, update in backlog:
            outboxes[project_uuid].log_only.append(update)
        for project_uuid, kind, body in batch:
            outboxes[project_uuid].envelopes.append(encode_envelope(self.instance_id, kind, body))
        await self._log.send(outboxes)
        for _, kind, _ in batch:
            self._metrics.envelopes_out_by[kind.name.lower()].inc()

    def _resync_projects(self, projects: set[str]) -> None:
        """Backlogged updates enter the log without being published: their rooms ask
        peers to exchange what either side misses (also when the subscriber never dropped)."""
        for project_uuid in projects:
            room = self._rooms.loaded_room(project_uuid) if self._rooms else None
            if room is not None:
                self._request_sync(room, ask_back=True)

    def _move_updates_to_backlog(self) -> None:
        """Redis is down: updates wait for the log; awareness and opaque frames are moot."""
        for project_uuid, kind, body in self._outbox:
            if kind is Kind.UPDATE:
                self._backlog.append((project_uuid, body))
        self._hand_on(len(self._outbox))
        self._outbox = []
        if len(self._backlog) > self._backlog_limit:
            overflow = [self._backlog.popleft() for _ in range(len(self._backlog) - self._backlog_limit // 2)]
            self._spawn(self._spill(overflow, self._metrics.log_spilled))
        self._metrics.log_backlog.set(len(self._backlog))
        self._set_drained_if_idle()

    def _spawn(self, work: Any) -> None:
        """Run `work` in the background, kept referenced until it ends (stop() waits for it)."""
        task = asyncio.create_task(work)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def _spill(self, entries: list[tuple[str, bytes]], written: Counter) -> None:
        """Write updates straight to the database, retrying until it works; count them in `written`."""
        if not entries:
            return
        batch: dict[str, list[bytes]] = defaultdict(list)
        for project_uuid, update in entries:
            batch[project_uuid].append(update)
        backoff = Backoff(0.1, MAX_BACKOFF)
        while True:
            try:
                await self._store.append(batch)
                written.inc(len(entries))
                return
            except Exception:
                log.exception("spilling the Redis backlog to the database failed; retrying")
                await backoff.sleep()

    # subscribing ---------------------------------------------------------

    async def _subscribe(self, projects: Iterable[str]) -> None:
        loop = asyncio.get_running_loop()
        waiters = []
        names = []
        for project_uuid in projects:
            waiter = loop.create_future()
            self._subscribed[project_uuid] = waiter
            waiters.append(waiter)
            names.append(channel(project_uuid))
        if not names:
            return
        if self._subscriber is None:
            raise ConnectionError("not connected to Redis")
        self._subscriber.subscribe(*names)
        await asyncio.wait_for(asyncio.gather(*waiters), SUBSCRIBE_TIMEOUT)

    async def _subscriber_loop(self) -> None:
        backoff = Backoff(0.1, MAX_BACKOFF)
        while True:
            subscriber: RedisSubscriber | None = None
            try:
                subscriber = await RedisSubscriber.connect_like(
                    self._redis, self._on_message, self._on_subscribed
                )
                subscriber.subscribe(INSTANCES_CHANNEL)
                self._subscriber = subscriber
                await self._subscribe(list(self._projects))
                self._on_connected()
                # rooms opened while we were connecting
                await self._subscribe([p for p in self._projects if p not in self._subscribed])
                backoff.reset()
                await subscriber.closed
                raise ConnectionError("subscriber connection closed")
            except asyncio.CancelledError:
                raise
            except REDIS_ERRORS as exc:
                if self._connected.is_set():
                    log.error("lost Redis: %s; serving locally and keeping updates", exc)
                self._on_disconnected()
            finally:
                self._subscriber = None
                if subscriber is not None:
                    subscriber.close()
            await backoff.sleep()

    def _on_connected(self) -> None:
        was_down = not self._connected.is_set()
        self._connected.set()
        self._metrics.redis_connected.set(1)
        if was_down:
            log.info("Redis connected", extra={"instance": self.instance_id.hex(), "rooms": len(self._projects)})
            self._wake_sender.set()
            self._announce.set()  # before peers look for our heartbeat
            # Whatever happened while we were away: peers fill it in, and so
            # does the log (entries no live peer may hold); and Redis may have
            # lost what we sent it.
            for room in self._rooms.rooms() if self._rooms else []:
                self._request_sync(room, ask_back=True)
                self._spawn(self._reconcile(room, catch_up=True))

    async def _hand_over(self, room: Any) -> None:
        """After an unload, make sure the room's document does not live in Redis alone.

        Once the worker has drained the room's log, or another instance has the
        room open (and so holds everything too), nothing depends on Redis. If
        neither happens within `HANDOVER_SECONDS` (the worker is down or behind,
        Redis is unreachable), the whole document is written to the database.
        """
        deadline = asyncio.get_running_loop().time() + HANDOVER_SECONDS
        while asyncio.get_running_loop().time() < deadline:
            # first wait: our own unsubscription is then in, and not counted below
            await asyncio.sleep(HANDOVER_POLL)
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.xlen(log_stream(room.project_uuid))
                    pipe.pubsub_numsub(channel(room.project_uuid))
                    length, ((_, subscribers),) = await pipe.execute()
                if length == 0 or subscribers > 0:
                    return
            except REDIS_ERRORS:
                pass
        log.info("room unloaded before its log was persisted; writing it to the database",
                 extra={"project": room.project_uuid})
        await self._spill([(room.project_uuid, room.doc.get_update())], self._metrics.handovers)

    def _reassert_all(self) -> None:
        for room in self._rooms.rooms() if self._rooms else []:
            self._spawn(self._reconcile(room, catch_up=False))

    async def _reconcile(self, room: Any, *, catch_up: bool) -> None:
        """Apply the room's log tail to it (`catch_up`), then append to the log what
        the room holds that neither the database nor the log has.

        The log is read before the database (see `load_with_log`); updates the
        room accepts meanwhile may be appended twice, which is harmless.
        """
        backoff = Backoff(0.2, MAX_BACKOFF)
        async with self._reassert_slots:
            while room.project_uuid in self._projects:
                try:
                    tail = [update for _, update in await read_log(self._redis, room.project_uuid)]
                    stored = await self._store.load_updates(room.project_uuid)
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # Redis or the database away: the room keeps what it has  # noqa: BLE001
                    log.warning("cannot compare room with the durable state yet: %s", exc,
                                extra={"project": room.project_uuid})
                    await backoff.sleep()
            else:
                return  # the room unloaded (its outbox was flushed to the log first)
            if catch_up:
                room.apply_remote_updates(tail)
            try:
                held = ydoc.encode_diff(room.doc)
                missing = await asyncio.to_thread(missing_from, stored + tail, held)
            except RejectedUpdate as exc:  # the room rebuilds itself; nothing to re-assert from it
                log.warning("cannot compare room with the durable state: %s", exc,
                            extra={"project": room.project_uuid})
                return
        if missing is None:
            return
        log.warning("re-asserting updates Redis lost", extra={"project": room.project_uuid, "bytes": len(missing)})
        self._metrics.reasserted.inc()
        self._backlog.append((room.project_uuid, missing))
        self._drained.clear()
        self._wake_sender.set()

    def _on_disconnected(self) -> None:
        self._connected.clear()
        self._metrics.redis_connected.set(0)
        for waiter in self._subscribed.values():
            if not waiter.done():
                waiter.cancel()
        self._subscribed.clear()

    def _on_subscribed(self, name: bytes) -> None:
        project_uuid = project_of_channel(name)
        waiter = self._subscribed.get(project_uuid) if project_uuid else None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _on_message(self, name: bytes, data: bytes) -> None:
        if data.startswith(self.instance_id):
            return  # our own envelope, echoed by pub/sub
        if name == INSTANCES_CHANNEL_BYTES:
            if len(data) == INSTANCE_ID_BYTES:
                self._forget_instance(data)
            return
        project_uuid = project_of_channel(name)
        try:
            envelope = decode_envelope(data)
        except EnvelopeError as exc:
            self._metrics.envelopes_invalid.inc()
            log.warning("dropped a malformed envelope: %s", exc, extra={"channel": str(name)})
            return
        if project_uuid is None or self._rooms is None:
            return
        room = self._rooms.loaded_room(project_uuid)
        if room is None:
            return
        self._metrics.envelopes_in_by[envelope.kind.name.lower()].inc()
        if envelope.kind is Kind.STORED:
            self._spawn(self._fetch_stored(room, envelope.body))
            return
        self._deliver_safely(room, envelope)

    async def _fetch_stored(self, room: Any, key: bytes) -> None:
        """A large envelope came by reference: read it; if it is gone (expired, Redis
        lost it), ask peers for what the room misses instead."""
        try:
            data = await self._redis.get(key)
        except REDIS_ERRORS as exc:
            log.warning("cannot read a stored envelope: %s", exc, extra={"project": room.project_uuid})
            data = None
        if self._rooms is None or self._rooms.loaded_room(room.project_uuid) is not room:
            return
        if data is None:
            self._request_sync(room, ask_back=False)
            return
        try:
            envelope = decode_envelope(data)  # type: ignore[arg-type]  # redis-py: GET gives bytes here
        except EnvelopeError as exc:
            self._metrics.envelopes_invalid.inc()
            log.warning("dropped a malformed stored envelope: %s", exc, extra={"project": room.project_uuid})
            return
        if envelope.kind is not Kind.STORED:  # a reference to a reference would be a loop
            self._deliver_safely(room, envelope)

    def _deliver_safely(self, room: Any, envelope: Envelope) -> None:
        try:
            self._deliver(room, envelope.sender, envelope.kind, envelope.body)
        except (ValueError, ProtocolError, UnicodeDecodeError) as exc:
            self._metrics.envelopes_invalid.inc()
            log.warning("dropped an envelope with a bad body: %s", exc, extra={"project": room.project_uuid})

    def _deliver(self, room: Any, sender: bytes, kind: Kind, body: bytes) -> None:
        if kind is Kind.UPDATE:
            room.apply_remote_update(body)
        elif kind is Kind.AWARENESS:
            connection_id, awareness_update = split_awareness(body)
            room.apply_remote_awareness((sender, connection_id), awareness_update)
        elif kind is Kind.OPAQUE:
            room.relay_remote_opaque(body)
        elif kind is Kind.OPAQUE_TEXT:
            room.relay_remote_opaque(body.decode())
        elif kind is Kind.SYNC_REQUEST:
            ask_back, state_vector = split_sync_request(body)
            missing = ydoc.encode_diff(room.doc, state_vector)
            if missing != EMPTY_UPDATE:
                self._publish(room.project_uuid, Kind.SYNC_REPLY, sync_reply_body(sender, missing))
            for connection_id, states in room.local_awareness_updates():
                self.publish_awareness(room.project_uuid, connection_id, states)
            if ask_back:
                self._request_sync(room, ask_back=False)
        elif kind is Kind.SYNC_REPLY:
            target, update = split_sync_reply(body)
            if target == self.instance_id:
                room.apply_remote_update(update)

    # presence ------------------------------------------------------------

    async def _presence_loop(self) -> None:
        while True:
            try:
                await self._redis.set(
                    instance_key(self.instance_id), b"1", px=int(self._presence_ttl * 1000)
                )
                await self._check_epoch()
                await self._remove_dead_instances()
            except REDIS_ERRORS:
                pass
            self._announce.clear()
            try:
                await asyncio.wait_for(self._announce.wait(), self._presence_interval)
            except TimeoutError:
                pass

    async def _check_epoch(self) -> None:
        """Notice that Redis lost its data even without a reconnect (FLUSHALL)."""
        epoch = await current_epoch(self._redis)
        if self._epoch is not None and epoch != self._epoch:
            log.error("Redis lost its data; every open room re-asserts its document",
                      extra={"rooms": len(self._projects)})
            self._missing_since.clear()  # every heartbeat vanished with it
            self._reassert_all()
        self._epoch = epoch

    async def _remove_dead_instances(self) -> None:
        if self._rooms is None:
            return
        owners = {  # remote owners are (instance id, connection id)
            owner[0]
            for room in self._rooms.rooms()
            for owner in room.awareness.owners()
            if isinstance(owner, tuple)
        }
        if not owners:
            self._missing_since.clear()
            return
        ordered = list(owners)
        pipe = self._redis.pipeline(transaction=False)
        for owner in ordered:
            pipe.exists(instance_key(owner))
        alive = await pipe.execute()
        now = asyncio.get_running_loop().time()
        for owner, exists in zip(ordered, alive):
            if exists:
                self._missing_since.pop(owner, None)
                continue
            # Missing for a whole TTL: a live instance re-sets its key every interval.
            since = self._missing_since.setdefault(owner, now)
            if now - since >= self._presence_ttl:
                del self._missing_since[owner]
                log.info("instance gone; removing its awareness states", extra={"instance": owner.hex()})
                self._forget_instance(owner)
        for owner in set(self._missing_since) - owners:
            del self._missing_since[owner]

    def _forget_instance(self, instance_id: bytes) -> None:
        for room in self._rooms.rooms() if self._rooms else []:
            room.remove_awareness_owners(lambda owner: isinstance(owner, tuple) and owner[0] == instance_id)


async def _quietly(awaitable: Any, timeout: float = 2.0) -> None:
    """Await a clean-up step, ignoring its failure and giving up after `timeout`."""
    try:
        await asyncio.wait_for(awaitable, timeout)
    except Exception:  # best-effort clean-up, by design (docstring)  # noqa: BLE001, S110
        pass

"""The instance's one pub/sub connection: which channels it listens to, and what arrives.

It subscribes the instances channel and the channel of every open room, and a
room's subscription is confirmed before the room loads (`open`): whatever was
published before is in the log or the database, whatever comes after arrives
here. It reconnects with backoff, re-subscribing every open room, and then
tells `on_connected`. On a Redis Cluster the connection is one per master
(`ClusterSubscriber`, sharded pub/sub), and any topology change counts as a
reconnect. Incoming messages: our own envelopes are dropped by their
prefix before decoding; an instance's goodbye goes to `instance_gone`; an
envelope for a loaded room (including one still loading) goes to `deliver`,
after a `STORED` one has been read from its key (off the subscriber's path;
if the key is gone, `missed` is told the room instead). Malformed envelopes
and bad bodies are dropped and counted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from services.collab.backplane import BackplaneRoom, RoomHost
from services.collab.metrics import CollabMetrics
from shared.backoff import Backoff
from shared.envelope import INSTANCE_ID_BYTES, Envelope, EnvelopeError, Kind, decode_envelope
from shared.protocol import ProtocolError
from shared.redis_cluster_subscriber import ClusterSubscriber, connect_subscriber
from shared.redis_contract import INSTANCES_CHANNEL, SINGLE_REDIS, RedisLayout
from shared.redis_log import REDIS_ERRORS, RedisClient
from shared.redis_subscriber import RedisSubscriber
from shared.tasks import TaskOwner

log = logging.getLogger(__name__)

INSTANCES_CHANNEL_BYTES = INSTANCES_CHANNEL.encode()
SUBSCRIBE_TIMEOUT = 5.0
MAX_BACKOFF = 2.0


class Subscriptions:
    """The pub/sub connection of one instance, the channels of its open rooms, what arrives on them."""

    def __init__(
        self,
        redis: RedisClient,
        metrics: CollabMetrics,
        instance_id: bytes,
        work: TaskOwner,
        *,
        deliver: Callable[[BackplaneRoom, Envelope], None],
        missed: Callable[[BackplaneRoom], None],
        instance_gone: Callable[[bytes], None],
        on_connected: Callable[[], None],
        layout: RedisLayout = SINGLE_REDIS,
    ) -> None:
        self._redis = redis
        self._layout = layout
        self._metrics = metrics
        self._instance_id = instance_id
        self._work = work
        self._deliver = deliver
        self._missed = missed
        self._instance_gone = instance_gone
        self._on_connected = on_connected
        self._rooms: RoomHost | None = None
        self._subscriber: RedisSubscriber | ClusterSubscriber | None = None
        self._projects: set[str] = set()  # open rooms
        self._subscribed: dict[str, asyncio.Future[None]] = {}
        self._connected = asyncio.Event()

    def connected(self) -> bool:
        """Whether the subscriber is connected (and every open room subscribed or subscribing)."""
        return self._connected.is_set()

    async def wait_connected(self, timeout: float) -> None:
        """Wait up to `timeout` for the first connection; TimeoutError if it did not come."""
        await asyncio.wait_for(self._connected.wait(), timeout)

    def is_open(self, project_uuid: str) -> bool:
        return project_uuid in self._projects

    @property
    def open_rooms(self) -> int:
        return len(self._projects)

    async def open(self, project_uuid: str) -> None:
        """Subscribe to the room's channel and wait for Redis to confirm it."""
        self._projects.add(project_uuid)
        if not self._connected.is_set():
            return  # the subscriber subscribes every open room when Redis returns
        try:
            await self._subscribe([project_uuid])
        except REDIS_ERRORS:
            log.warning(
                "subscribe failed; the room resyncs when Redis returns",
                extra={"project": project_uuid},
            )

    def close(self, project_uuid: str) -> None:
        """Stop treating the room as open (no resubscription, no reconciling)."""
        self._projects.discard(project_uuid)

    def unsubscribe(self, project_uuid: str) -> None:
        """Stop listening to a closed room's channel."""
        waiter = self._subscribed.pop(project_uuid, None)
        if waiter is not None and self._subscriber is not None and self._connected.is_set():
            try:
                self._subscriber.unsubscribe(
                    self._layout.channel(project_uuid), sharded=self._layout.sharded
                )
            except REDIS_ERRORS:
                pass

    def disconnect(self) -> None:
        if self._subscriber is not None:
            self._subscriber.close()

    async def _subscribe(self, projects: Iterable[str]) -> None:
        loop = asyncio.get_running_loop()
        waiters = []
        names = []
        for project_uuid in projects:
            waiter = loop.create_future()
            self._subscribed[project_uuid] = waiter
            waiters.append(waiter)
            names.append(self._layout.channel(project_uuid))
        if not names:
            return
        if self._subscriber is None:
            raise ConnectionError("not connected to Redis")
        self._subscriber.subscribe(*names, sharded=self._layout.sharded)
        await asyncio.wait_for(asyncio.gather(*waiters), SUBSCRIBE_TIMEOUT)

    async def run(self, rooms: RoomHost) -> None:
        """Forever: connect, subscribe, deliver to `rooms` until the connection drops, back off."""
        self._rooms = rooms
        backoff = Backoff(0.1, MAX_BACKOFF)
        while True:
            subscriber: RedisSubscriber | ClusterSubscriber | None = None
            try:
                subscriber = await connect_subscriber(
                    self._redis, self._on_message, self._on_subscribed
                )
                subscriber.subscribe(INSTANCES_CHANNEL)
                self._subscriber = subscriber
                await self._subscribe(list(self._projects))
                self._set_connected()
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
                self._set_disconnected()
            finally:
                self._subscriber = None
                if subscriber is not None:
                    subscriber.close()
            await backoff.sleep()

    def _set_connected(self) -> None:
        was_down = not self._connected.is_set()
        self._connected.set()
        self._metrics.redis_connected.set(1)
        if was_down:
            log.info(
                "Redis connected",
                extra={"instance": self._instance_id.hex(), "rooms": len(self._projects)},
            )
            self._on_connected()

    def _set_disconnected(self) -> None:
        self._connected.clear()
        self._metrics.redis_connected.set(0)
        for waiter in self._subscribed.values():
            if not waiter.done():
                waiter.cancel()
        self._subscribed.clear()

    def _on_subscribed(self, name: bytes) -> None:
        project_uuid = self._layout.project_of_channel(name)
        waiter = self._subscribed.get(project_uuid) if project_uuid else None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _on_message(self, name: bytes, data: bytes) -> None:
        if data.startswith(self._instance_id):
            return  # our own envelope, echoed by pub/sub
        if name == INSTANCES_CHANNEL_BYTES:
            if len(data) == INSTANCE_ID_BYTES:
                self._instance_gone(data)
            return
        project_uuid = self._layout.project_of_channel(name)
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
            self._work.spawn(self._fetch_stored(room, envelope.body), name="redis-fetch-stored")
            return
        self._deliver_safely(room, envelope)

    async def _fetch_stored(self, room: BackplaneRoom, key: bytes) -> None:
        """A large envelope came by reference: read it; if it is gone (expired, Redis
        lost it), tell `missed` instead."""
        try:
            data = await self._redis.get(key)
        except REDIS_ERRORS as exc:
            log.warning(
                "cannot read a stored envelope: %s", exc, extra={"project": room.project_uuid}
            )
            data = None
        if self._rooms is None or self._rooms.loaded_room(room.project_uuid) is not room:
            return
        if data is None:
            self._missed(room)
            return
        try:
            envelope = decode_envelope(data)  # type: ignore[arg-type]  # redis-py: GET gives bytes here
        except EnvelopeError as exc:
            self._metrics.envelopes_invalid.inc()
            log.warning(
                "dropped a malformed stored envelope: %s", exc, extra={"project": room.project_uuid}
            )
            return
        if envelope.kind is not Kind.STORED:  # a reference to a reference would be a loop
            self._deliver_safely(room, envelope)

    def _deliver_safely(self, room: BackplaneRoom, envelope: Envelope) -> None:
        try:
            self._deliver(room, envelope)
        except (ValueError, ProtocolError, UnicodeDecodeError) as exc:
            self._metrics.envelopes_invalid.inc()
            log.warning(
                "dropped an envelope with a bad body: %s", exc, extra={"project": room.project_uuid}
            )

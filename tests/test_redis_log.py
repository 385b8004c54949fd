"""The Redis primitives of the hot path, against a real Redis: LogPublisher (one Lua
call appends to the durable log and publishes) and RedisSubscriber."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import pytest
import redis.asyncio as aioredis

from shared.envelope import Kind, decode_envelope, encode_envelope
from shared.redis_contract import PROJECT_FIELD, SINGLE_REDIS
from shared.redis_log import LogPublisher, ProjectOutbox, read_log
from shared.redis_subscriber import RedisSubscriber
from stack.servers import RedisServer

pytestmark = pytest.mark.integration

SENDER = bytes(range(16))


async def _published(pubsub: aioredis.client.PubSub, count: int) -> list[bytes]:
    received: list[bytes] = []
    async with asyncio.timeout(10):
        while len(received) < count:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None:
                received.append(message["data"])
    return received


async def test_updates_enter_the_log_before_they_are_published_and_flag_the_project_once(
    redis_server: RedisServer,
) -> None:
    redis = aioredis.Redis.from_url(redis_server.url)
    first, second, quiet = (str(uuid.uuid4()) for _ in range(3))
    pubsub = redis.pubsub()
    await pubsub.subscribe(SINGLE_REDIS.channel(first), SINGLE_REDIS.channel(second), SINGLE_REDIS.channel(quiet))
    try:
        batch = {p: ProjectOutbox() for p in (first, second, quiet)}
        batch[first].log_only.append(b"offline update")
        batch[first].envelopes += [
            encode_envelope(SENDER, Kind.UPDATE, b"update one"),
            encode_envelope(SENDER, Kind.AWARENESS, b"cursor"),
            encode_envelope(SENDER, Kind.UPDATE, b"update two"),
        ]
        batch[second].envelopes.append(encode_envelope(SENDER, Kind.UPDATE, b"other room"))
        batch[quiet].envelopes.append(encode_envelope(SENDER, Kind.AWARENESS, b"only awareness"))

        await LogPublisher(redis).send(batch)

        assert [u for _, u in await read_log(redis, first)] == [b"offline update", b"update one", b"update two"]
        assert [u for _, u in await read_log(redis, second)] == [b"other room"]
        assert await read_log(redis, quiet) == []  # awareness never enters the log
        entries = await redis.xrange(SINGLE_REDIS.dirty_stream(0))
        # redis-py types replies for decode_responses either way; this client gets bytes
        dirty = [fields[PROJECT_FIELD].decode() for _, fields in entries]  # type: ignore[union-attr,index]
        assert dirty == [first, second]
        envelopes = [decode_envelope(data) for data in await _published(pubsub, 5)]
        assert [(e.kind, e.body) for e in envelopes] == [
            (Kind.UPDATE, b"update one"),
            (Kind.AWARENESS, b"cursor"),
            (Kind.UPDATE, b"update two"),
            (Kind.UPDATE, b"other room"),
            (Kind.AWARENESS, b"only awareness"),
        ]
        assert all(e.sender == SENDER for e in envelopes)
    finally:
        await pubsub.aclose()
        await redis.aclose()


async def test_the_script_is_reloaded_after_redis_forgets_it(redis_server: RedisServer) -> None:
    redis = aioredis.Redis.from_url(redis_server.url)
    project = str(uuid.uuid4())
    try:
        publisher = LogPublisher(redis)
        outbox = ProjectOutbox()
        outbox.envelopes.append(encode_envelope(SENDER, Kind.UPDATE, b"before"))
        await publisher.send({project: outbox})
        await redis.script_flush()  # as after a Redis restart
        await publisher.send({project: outbox})
        assert [u for _, u in await read_log(redis, project)] == [b"before", b"before"]
    finally:
        await redis.aclose()


class Inbox:
    """What a RedisSubscriber reports, with a way to wait for it."""

    def __init__(self) -> None:
        self.messages: list[tuple[bytes, bytes]] = []
        self.subscribed: list[bytes] = []
        self.changed = asyncio.Event()

    def on_message(self, name: bytes, data: bytes) -> None:
        self.messages.append((name, data))
        self.changed.set()

    def on_subscribed(self, name: bytes) -> None:
        self.subscribed.append(name)
        self.changed.set()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


async def test_subscriber_confirms_delivers_and_unsubscribes(redis_server: RedisServer) -> None:
    redis = aioredis.Redis.from_url(redis_server.url)
    inbox = Inbox()
    subscriber = await RedisSubscriber.connect_like(redis, inbox.on_message, inbox.on_subscribed)
    try:
        subscriber.subscribe("room-a", "room-b")
        await inbox.wait_for(lambda: inbox.subscribed == [b"room-a", b"room-b"])
        for i in range(100):  # many messages per read reach the callback one by one, in order
            await redis.publish("room-a" if i % 2 else "room-b", f"m{i}".encode())
        await inbox.wait_for(lambda: len(inbox.messages) == 100)
        assert inbox.messages == [(b"room-a" if i % 2 else b"room-b", f"m{i}".encode()) for i in range(100)]

        subscriber.unsubscribe("room-a")
        async with asyncio.timeout(5):
            while await redis.pubsub_numsub("room-a") != [(b"room-a", 0)]:
                await asyncio.sleep(0.01)
        await redis.publish("room-b", b"still here")
        await inbox.wait_for(lambda: inbox.messages[-1] == (b"room-b", b"still here"))
    finally:
        subscriber.close()
        await redis.aclose()


async def test_subscriber_notices_a_server_that_stops_answering(redis_server: RedisServer) -> None:
    redis = aioredis.Redis.from_url(redis_server.url)
    inbox = Inbox()
    subscriber = await RedisSubscriber.connect_like(
        redis, inbox.on_message, inbox.on_subscribed, ping_interval=0.2, ping_timeout=0.5
    )
    try:
        subscriber.subscribe("room")
        await inbox.wait_for(lambda: inbox.subscribed == [b"room"])
        await redis.execute_command("CLIENT", "PAUSE", "3000", "ALL")  # a hung server: no replies
        await asyncio.wait_for(asyncio.shield(subscriber.closed), 2.5)
    finally:
        subscriber.close()
        await redis.execute_command("CLIENT", "UNPAUSE")
        await redis.aclose()


async def test_subscriber_authenticates_like_the_client_it_copies(redis_server: RedisServer) -> None:
    admin = aioredis.Redis.from_url(redis_server.url)
    await admin.config_set("requirepass", "s3cret")
    inbox = Inbox()
    authorised = aioredis.Redis(host=redis_server.host, port=redis_server.port, password="s3cret")
    wrong = aioredis.Redis(host=redis_server.host, port=redis_server.port, password="guess")
    try:
        subscriber = await RedisSubscriber.connect_like(authorised, inbox.on_message, inbox.on_subscribed)
        subscriber.subscribe("room")
        await inbox.wait_for(lambda: inbox.subscribed == [b"room"])
        subscriber.close()
        with pytest.raises(ConnectionError, match="Redis refused"):
            await RedisSubscriber.connect_like(wrong, inbox.on_message, inbox.on_subscribed)
    finally:
        await authorised.config_set("requirepass", "")
        for client in (admin, authorised, wrong):
            await client.aclose()


async def test_a_failing_handler_does_not_drop_the_subscription(redis_server: RedisServer) -> None:
    redis = aioredis.Redis.from_url(redis_server.url)
    inbox = Inbox()

    def on_message(name: bytes, data: bytes) -> None:
        if data == b"poison":
            raise RuntimeError("handler bug")
        inbox.on_message(name, data)

    subscriber = await RedisSubscriber.connect_like(redis, on_message, inbox.on_subscribed)
    try:
        subscriber.subscribe("room")
        await inbox.wait_for(lambda: inbox.subscribed == [b"room"])
        await redis.publish("room", b"poison")
        await redis.publish("room", b"fine")
        await inbox.wait_for(lambda: inbox.messages == [(b"room", b"fine")])
        assert not subscriber.closed.done()
    finally:
        subscriber.close()
        await redis.aclose()

"""LogPublisher: one Lua call appends to the durable log and publishes (real Redis)."""

from __future__ import annotations

import asyncio
import uuid

import redis.asyncio as aioredis

from shared.envelope import Kind, decode_envelope, encode_envelope
from shared.redis_log import (
    DIRTY_STREAM,
    PROJECT_FIELD,
    LogPublisher,
    ProjectOutbox,
    channel,
    read_log,
)
from tests.support.servers import RedisServer

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
    await pubsub.subscribe(channel(first), channel(second), channel(quiet))
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
        dirty = [fields[PROJECT_FIELD].decode() for _, fields in await redis.xrange(DIRTY_STREAM)]
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

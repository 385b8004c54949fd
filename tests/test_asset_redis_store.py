"""The asset coordinator's Redis store against a real Redis: its scripts' bounds, leaving, dead instances."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from services.collab.assets.decisions import CoordinatorLimits, member_key
from services.collab.assets.redis_store import RedisStore
from shared.redis_contract import assets_inbox, instance_key
from shared.tasks import TaskOwner
from stack.servers import RedisServer
from tests.support.wait import eventually

pytestmark = pytest.mark.integration

ME, PEER, DEAD = "11" * 16, "22" * 16, "33" * 16


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[RedisStore]:
    tasks = TaskOwner("test")
    limits = CoordinatorLimits(ids_per_project=3, pending_per_project=2)
    redis = aioredis.Redis(host=redis_server.host, port=redis_server.port)
    await redis.set(instance_key(bytes.fromhex(PEER)), b"1")  # PEER is alive, DEAD has no heartbeat
    store = RedisStore(redis, ME, limits, tasks)
    yield store
    await tasks.close()
    await store.stop()


async def test_holdings_are_replaced_and_bounded_by_distinct_ids(store: RedisStore) -> None:
    a, b = member_key(ME, 1), member_key(PEER, 2)
    assert (await store.announce("p", a, ["x", "y"])).kept == 2
    second = await store.announce("p", b, ["y", "z", "w", "v"])  # y is counted once
    assert (second.kept, second.dropped) == (2, 2)
    assert await store.holders("p", "y") == [a, b]
    assert await store.holder_counts("p") == {a: 2, b: 2}
    await store.announce("p", a, [])
    assert await store.holders("p", "x") == []
    assert (await store.announce("p", a, ["u"])).kept == 1  # x's place is free again


async def test_waits_are_bounded_taken_once_and_reported_to_new_holders(store: RedisStore) -> None:
    waiter = member_key(PEER, 5)
    assert await store.wait("p", "x", waiter) and await store.wait("p", "x", waiter)
    assert await store.wait("p", "y", waiter)
    assert not await store.wait("p", "z", waiter)
    assert (await store.announce("p", member_key(ME, 1), ["x", "q"])).waited == ["x"]
    assert await store.take_waiters("p", "x") == [waiter]
    assert await store.take_waiters("p", "x") == []
    assert await store.wait("p", "z", waiter)


async def test_a_dead_instances_members_are_dropped_with_everything_they_held(store: RedisStore) -> None:
    alive, dead = member_key(PEER, 1), member_key(DEAD, 1)
    await store.join("p", alive)
    assert await store.join("p", dead) == [alive]  # its instance has no heartbeat
    await store.announce("p", dead, ["x"])
    await store.wait("p", "y", dead)
    assert await store.holders("p", "x") == []
    assert await store.holding([("p", dead, "x")]) == [False]
    assert await store.waiters("p", "y") == []
    assert (await store.announce("p", alive, ["a", "b", "c"])).dropped == 0  # x no longer counts
    await store.leave("p", alive)
    assert await store.members("p") == [] and await store.holders("p", "a") == []


async def test_frames_reach_the_instance_that_holds_the_socket(store: RedisStore, redis_server: RedisServer) -> None:
    received: list[tuple[int, bytes | str]] = []
    await store.start(lambda connection, frame: received.append((connection, frame)))
    store.send(member_key(ME, 7), b"\xff{}")  # local: no Redis on the way
    assert received == [(7, b"\xff{}")]
    publisher = aioredis.Redis(host=redis_server.host, port=redis_server.port)
    try:
        await publisher.publish(assets_inbox(ME), b"8:t" + b'{"type":"trigger-resync"}')
        await publisher.publish(assets_inbox(ME), b"garbage")  # ignored
        await publisher.publish(assets_inbox(ME), b"9:b\xff{}")
        await eventually(lambda: len(received) == 3, 5)
    finally:
        await publisher.aclose()
    assert received[1:] == [(8, '{"type":"trigger-resync"}'), (9, b"\xff{}")]

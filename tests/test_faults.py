"""Faults in multi-instance mode: a killed worker, a killed collab instance, Redis and
PostgreSQL restarts. Every accepted update must survive, in clients and in PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from stack.servers import PostgresServer, RedisServer
from tests.support.cluster import Cluster, metrics_of, wait_metric, wait_stored
from tests.support.wait import eventually
from tests.support.yclient import YClient

pytestmark = pytest.mark.integration


async def edit_steadily(client: YClient, tag: str, count: int, pause: float = 0.005) -> list[str]:
    """Append `count` numbered tokens; return them."""
    tokens = []
    for i in range(count):
        token = f"<{tag}{i}>"
        client.append(token)
        tokens.append(token)
        await asyncio.sleep(pause)  # pacing the load, not synchronising
    return tokens


def assert_has_all(text: str, tokens: list[str]) -> None:
    missing = [t for t in tokens if t not in text]
    assert not missing, f"{len(missing)} edits lost, e.g. {missing[:5]}"


async def test_worker_killed_mid_stream_loses_nothing(cluster: Cluster) -> None:
    a, b = await cluster.collab("a"), await cluster.collab("b")
    worker = cluster.worker_process("w1")
    room = await cluster.new_project(1)
    token = cluster.token(1)
    async with await YClient.connect(a.ws_url, room, token) as writer:
        editing = asyncio.create_task(edit_steadily(writer, "w", 300, 0.003))
        # the worker dies mid-stream: once it has stored a batch, while the writer goes on
        await wait_metric(worker.http_url, "persistence_batches_total", 1, 15)
        worker.kill()
        tokens = await editing
        # with the worker down, a fresh client on another instance still sees every edit
        async with await YClient.connect(b.ws_url, room, token) as fresh:
            await fresh.wait_until(lambda: fresh.value == writer.value)
        assert_has_all(writer.value, tokens)
        cluster.worker_process("w2")
        await wait_stored(cluster, room, writer.value, timeout=30)


async def test_collab_instance_killed_clients_move_and_nothing_is_lost(cluster: Cluster) -> None:
    victim = cluster.collab_process("victim")
    survivor = await cluster.collab("survivor")
    await cluster.worker()
    room = await cluster.new_project(1)
    token = cluster.token(1)
    moving = await YClient.connect(victim.ws_url, room, token)
    staying = await YClient.connect(survivor.ws_url, room, token)
    try:
        moving.set_awareness({"user": {"name": "mover"}})
        await staying.wait_until(lambda: moving.doc.client_id in staying.peers)
        before = await edit_steadily(moving, "m", 50)
        before += await edit_steadily(staying, "s", 50)
        await staying.wait_until(lambda: all(t in staying.value for t in before), 10)
        victim.kill()
        # the dead instance's awareness states disappear on the survivor (heartbeat TTL)
        await staying.wait_until(lambda: moving.doc.client_id not in staying.peers, 10)
        assert (await moving.wait_closed(10)) is not None
        offline = await edit_steadily(moving, "o", 20, 0)  # typed while disconnected
        await moving.reconnect(survivor.ws_url, room, token)
        after = await edit_steadily(moving, "n", 30) + await edit_steadily(staying, "t", 30)
        everything = before + offline + after
        await YClient.wait_all(
            [staying, moving], lambda: staying.value == moving.value and all(t in moving.value for t in everything), 15
        )
        assert_has_all(staying.value, everything)
        await wait_stored(cluster, room, staying.value, timeout=30)
    finally:
        await moving.close()
        await staying.close()


async def test_redis_restart_instances_converge_without_reconnecting(
    cluster: Cluster, redis_server: RedisServer
) -> None:
    a, b = await cluster.collab("a"), await cluster.collab("b")
    await cluster.worker()
    room = await cluster.new_project(1)
    token = cluster.token(1)
    async with await YClient.connect(a.ws_url, room, token) as ca, await YClient.connect(b.ws_url, room, token) as cb:
        first = await edit_steadily(ca, "a", 20) + await edit_steadily(cb, "b", 20)
        await cb.wait_until(lambda: all(t in cb.value for t in first))
        redis_server.stop()
        during = await edit_steadily(ca, "x", 30) + await edit_steadily(cb, "y", 30)
        # local relay keeps working; readiness names Redis
        async with await YClient.connect(a.ws_url, room, token) as local_peer:
            await local_peer.wait_until(lambda: all(t in local_peer.value for t in during[:30]))
        status, body = await readiness(a.http_url)
        assert status == 503 and body["failing"] == ["redis"]
        assert "collab_log_backlog_updates 30.0" in await metrics_of(a.http_url)
        redis_server.start()
        after = await edit_steadily(ca, "p", 10) + await edit_steadily(cb, "q", 10)
        everything = first + during + after
        await YClient.wait_all([ca, cb], lambda: ca.value == cb.value and all(t in ca.value for t in everything), 20)
        assert ca.close_code is None and cb.close_code is None  # nobody reconnected
        await wait_stored(cluster, room, ca.value, timeout=30)
        status, _ = await readiness(a.http_url)
        assert status == 200


async def readiness(url: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(f"{url}/health/ready") as resp:
        return resp.status, await resp.json()


async def test_postgres_outage_worker_retries_and_catches_up(
    cluster: Cluster, postgres: PostgresServer
) -> None:
    a = await cluster.collab("a")
    worker = await cluster.worker()
    room = await cluster.new_project(1)
    token = cluster.token(1)
    async with await YClient.connect(a.ws_url, room, token) as c:
        first = await edit_steadily(c, "a", 20)
        await wait_stored(cluster, room, c.value)
        postgres.stop()
        try:
            during = await edit_steadily(c, "d", 100)
            # the document stays complete for joiners while the database is down
            async with await YClient.connect(a.ws_url, room, token) as peer:
                await peer.wait_until(lambda: peer.value == c.value)
        finally:
            postgres.start()
        after = await edit_steadily(c, "z", 20)
        await wait_stored(cluster, room, c.value, timeout=40)
        assert_has_all(c.value, first + during + after)
    text = await metrics_of(worker.http_url)
    errors = [line for line in text.splitlines() if line.startswith("persistence_errors_total")]
    assert errors, "the worker should have counted failed attempts while PostgreSQL was down"


async def test_full_backlog_spills_to_the_database(
    tmp_path: Path, redis_server: RedisServer, postgres: PostgresServer
) -> None:
    url = postgres.create_database(f"s_{uuid.uuid4().hex[:12]}")
    cluster = await Cluster(tmp_path, redis_server, url, redis_backlog=10).migrate()
    try:
        a = await cluster.collab("a")
        await cluster.worker()
        room = await cluster.new_project(1)
        async with await YClient.connect(a.ws_url, room, cluster.token(1)) as c:
            first = await edit_steadily(c, "f", 5)
            await wait_stored(cluster, room, c.value)
            redis_server.stop()
            during = await edit_steadily(c, "d", 40)
            # beyond the bound, updates go straight to the database instead of being dropped
            async def spilled_first() -> bool:  # the oldest spill first
                return during[0] in await cluster.stored_text(room)

            await eventually(spilled_first, 10, what="an update spilled to the database", interval=0.1)
            text = await metrics_of(a.http_url)
            spilled = [line for line in text.splitlines() if line.startswith("collab_log_spilled_updates_total")]
            assert spilled and float(spilled[0].split()[-1]) > 0
            redis_server.start()
            await wait_stored(cluster, room, c.value, timeout=30)
            assert_has_all(c.value, first + during)
    finally:
        await cluster.close()


async def test_failed_sends_reach_peers_once_redis_takes_writes_again(
    cluster: Cluster, redis_server: RedisServer
) -> None:
    """Redis refuses writes (out of memory under noeviction) while every connection stays
    up: the updates wait in the backlog, enter the log as log-only entries, and the room
    still resyncs with its peers, who would otherwise never see them."""
    import redis

    a, b = await cluster.collab("a"), await cluster.collab("b")
    room = await cluster.new_project(1)
    token = cluster.token(1)
    admin = redis.Redis(port=redis_server.port)
    try:
        async with await YClient.connect(a.ws_url, room, token) as ca, await YClient.connect(
            b.ws_url, room, token
        ) as cb:
            ca.append("<before>")
            await cb.wait_text("<before>")
            admin.config_set("maxmemory", 1)
            refused = await edit_steadily(ca, "r", 10)
            async with await YClient.connect(a.ws_url, room, token) as local:  # a's room has them
                await local.wait_until(lambda: all(t in local.value for t in refused))
            admin.config_set("maxmemory", 0)
            await cb.wait_until(lambda: all(t in cb.value for t in refused), 15)
    finally:
        admin.config_set("maxmemory", 0)
        admin.close()

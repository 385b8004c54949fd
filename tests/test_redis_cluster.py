"""Multi-instance mode on a real Redis Cluster (3 masters, 3 replicas, started here): sharded
pub/sub, partitioned work queue, and the faults a cluster adds (a master SIGKILLed and replaced
by its replica) besides the ones one Redis has (a worker SIGKILLed)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from pycrdt import Doc, Text
from sqlalchemy import func, select

from shared.db.engine import create_sessionmaker
from shared.db.models import Project, YjsUpdate
from stack.redis_cluster import LocalRedisCluster
from stack.servers import PostgresServer, RedisServer
from tests.support.cluster import Cluster, wait_metric, wait_stored
from tests.support.node_client import NodeYClient
from tests.support.yclient import YClient
from tests.test_faults import assert_has_all, edit_steadily

pytestmark = pytest.mark.integration

#: No compaction during a test: every accepted update stays one row, so rows can be counted.
NO_COMPACTION = {"compact_max_updates": 1_000_000, "compact_max_bytes": 1 << 30, "compact_idle_seconds": 3600}


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[LocalRedisCluster]:
    with LocalRedisCluster(tmp_path / "redis-cluster") as cluster:
        yield cluster


@pytest.fixture
async def on_cluster(
    tmp_path: Path, redis_cluster: LocalRedisCluster, postgres: PostgresServer
) -> AsyncIterator[Cluster]:
    """Collab instances and workers (on demand) on the Redis Cluster and a fresh database."""
    url = postgres.create_database(f"rc_{uuid.uuid4().hex[:12]}")
    cluster = await Cluster(tmp_path, redis_cluster, url, **NO_COMPACTION).migrate()
    try:
        yield cluster
    finally:
        await asyncio.wait_for(cluster.close(), 30)


async def rooms_on_masters(cluster: Cluster, redis_cluster: LocalRedisCluster) -> dict[int, str]:
    """One new room per master (port -> room): their keys and channels live on different shards."""
    layout = cluster.settings().redis_layout
    rooms: dict[int, str] = {}
    masters = {node.port for node in redis_cluster.masters()}
    while set(rooms) != masters:
        room = await cluster.new_project(1)
        master = redis_cluster.master_of(layout.channel(room.removeprefix("project-")))
        rooms.setdefault(master.port, room)
    return rooms


async def stored_rows(cluster: Cluster, room: str) -> int:
    async with create_sessionmaker(cluster.engine)() as session:
        project_id = (
            await session.execute(select(Project.id).where(Project.uuid == uuid.UUID(room.removeprefix("project-"))))
        ).scalar_one()
        return (
            await session.execute(select(func.count()).where(YjsUpdate.project_id == project_id))
        ).scalar_one()


async def append_over_http(gateway_url: str, room: str, token: str, text: str) -> str:
    """Export the room's document, append `text` to its text, import that; return the new text."""
    url = f"{gateway_url}/api/projects/{room.removeprefix('project-')}/yjs-document"
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.get(url) as response:
            assert response.status == 200, await response.text()
            doc: Doc = Doc()
            doc.apply_update(await response.read())
        content = doc.get("t", type=Text)
        state = doc.get_state()
        content += text
        async with session.post(
            url, data=doc.get_update(state), headers={"Content-Type": "application/octet-stream"}
        ) as response:
            assert response.status == 200, await response.text()
        return str(content)


def master_of_room(cluster: Cluster, redis_cluster: LocalRedisCluster, room: str) -> RedisServer:
    return redis_cluster.master_of(cluster.settings().redis_layout.channel(room.removeprefix("project-")))


async def test_stock_clients_on_three_instances_converge_on_every_shard(
    on_cluster: Cluster, redis_cluster: LocalRedisCluster
) -> None:
    servers = [await on_cluster.collab(name) for name in ("a", "b", "c")]
    gateway = await on_cluster.gateway()
    await on_cluster.worker()
    token = on_cluster.token(1)
    rooms = await rooms_on_masters(on_cluster, redis_cluster)
    assert len(rooms) == 3  # one room on each shard
    for room in rooms.values():
        clients = [await NodeYClient.open(server.ws_url, room, token) for server in servers]
        try:
            for client in clients:
                await client.wait_synced()
            for index, client in enumerate(clients):
                await client.append(f"[{index}]")
                expected = await client.text()
                for other in clients:
                    await other.wait_text(expected)
            assert sorted(expected) == sorted("[0][1][2]")
            # awareness crosses instances (and so the heartbeats that keep it)
            await clients[0].set_awareness({"user": {"name": "ann"}})
            for other in clients[1:]:
                await other.wait_peers(lambda states: any(s.get("user") == {"name": "ann"} for s in states.values()))
            # through a gateway: an export and an import, through the room's shard to every instance
            expected = await append_over_http(gateway.http_url, room, token, "[http]")
            for client in clients:
                await client.wait_text(expected)
            await wait_stored(on_cluster, room, expected, timeout=30)
        finally:
            for client in clients:
                await client.close()


async def test_a_master_killed_its_replica_takes_over_and_nothing_is_lost(
    on_cluster: Cluster, redis_cluster: LocalRedisCluster
) -> None:
    a, b = await on_cluster.collab("a"), await on_cluster.collab("b")
    worker = await on_cluster.worker()
    room = next(iter((await rooms_on_masters(on_cluster, redis_cluster)).values()))
    token = on_cluster.token(1)
    async with await YClient.connect(a.ws_url, room, token) as first, await YClient.connect(
        b.ws_url, room, token
    ) as second:
        editing = [
            asyncio.create_task(edit_steadily(first, "a", 300, 0.005)),
            asyncio.create_task(edit_steadily(second, "b", 300, 0.005)),
        ]
        await wait_metric(worker.http_url, "persistence_batches_total", 1, 15)
        victim = master_of_room(on_cluster, redis_cluster, room)
        victim.kill()  # mid-stream: the writers go on through the failover
        tokens = [token for tokens in await asyncio.gather(*editing) for token in tokens]
        await asyncio.to_thread(redis_cluster.wait_healthy, 30)
        assert master_of_room(on_cluster, redis_cluster, room).port != victim.port  # promoted
        await YClient.wait_all(
            [first, second],
            lambda: first.value == second.value and all(t in first.value for t in tokens),
            30,
        )
        assert_has_all(first.value, tokens)
        async with await YClient.connect(b.ws_url, room, token) as fresh:
            await fresh.wait_until(lambda: fresh.value == first.value, 15)
        await wait_stored(on_cluster, room, first.value, timeout=60)


async def test_a_worker_killed_mid_stream_loses_nothing_and_writes_nothing_twice(
    on_cluster: Cluster, redis_cluster: LocalRedisCluster
) -> None:
    a = await on_cluster.collab("a")
    worker = on_cluster.worker_process("w1")
    room = next(iter((await rooms_on_masters(on_cluster, redis_cluster)).values()))
    token = on_cluster.token(1)
    async with await YClient.connect(a.ws_url, room, token) as writer:
        editing = asyncio.create_task(edit_steadily(writer, "w", 300, 0.003))
        await wait_metric(worker.http_url, "persistence_batches_total", 1, 15)
        worker.kill()
        tokens = await editing
        assert_has_all(writer.value, tokens)
        on_cluster.worker_process("w2")
        await wait_stored(on_cluster, room, writer.value, timeout=30)
    # one row per accepted update: none lost, none committed twice by the two workers
    assert await stored_rows(on_cluster, room) == len(tokens)

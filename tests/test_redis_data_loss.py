"""Redis loses its data mid-write (restarted empty, or FLUSHALL): no accepted update is lost.

Two collab instances, each with a writer (a stock y-websocket client on one, a
pycrdt client on the other), the persistence worker and PostgreSQL. Redis
forgets everything while they edit; they keep editing. After a graceful stop
of both instances and a drain of the worker, PostgreSQL and the gateway's
export hold every edit; no live instance was ever taken for gone.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from pycrdt import Doc, Text

from stack.servers import RedisServer
from tests.support.cluster import Cluster, metric, metrics_of, wait_metric, wait_stored
from tests.support.node_client import NodeYClient
from tests.support.yclient import YClient
from tests.test_faults import assert_has_all, edit_steadily

pytestmark = pytest.mark.integration


async def node_edits(client: NodeYClient, tag: str, count: int) -> list[str]:
    tokens = []
    for i in range(count):
        token = f"<{tag}{i}>"
        await client.append(token)
        tokens.append(token)
        await asyncio.sleep(0.005)  # pacing the load, not synchronising
    return tokens


async def exported_text(gateway_url: str, project_uuid: str, token: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(
        f"{gateway_url}/api/projects/{project_uuid}/yjs-document",
        headers={"Authorization": f"Bearer {token}"},
    ) as resp:
        assert resp.status == 200, await resp.text()
        doc: Doc = Doc()
        doc.apply_update(await resp.read())
        return str(doc.get("t", type=Text))


def lose_data(redis_server: RedisServer, how: str) -> None:
    if how == "restart-empty":
        redis_server.restart_empty()
    else:
        import redis

        client = redis.Redis(port=redis_server.port)
        client.flushall()
        client.close()


@pytest.mark.parametrize("how", ["restart-empty", "flushall"])
async def test_redis_losing_its_data_loses_no_accepted_update(
    cluster: Cluster, redis_server: RedisServer, how: str
) -> None:
    a, b = cluster.collab_process("a"), cluster.collab_process("b")
    worker = await cluster.worker()
    room = await cluster.new_project(1)
    project_uuid = room.removeprefix("project-")
    token = cluster.token(1)
    async with NodeYClient.start(a.ws_url, room, token, name="node-a") as node, await YClient.connect(
        b.ws_url, room, token
    ) as py:
        py.set_awareness({"user": {"name": "py-b"}})
        await node.wait_peers(lambda peers: py.doc.client_id in peers)
        writing = asyncio.gather(node_edits(node, "n", 300), edit_steadily(py, "p", 300, 0.005))
        await py.wait_until(lambda: "<n100>" in py.value, 20)  # mid-write, some of it persisted
        lose_data(redis_server, how)
        everything = [t for part in await writing for t in part]
        await py.wait_until(lambda: all(t in py.value for t in everything), 30)
        assert await node.text() == py.value

        # the instance of the pycrdt writer stays alive: the other never removes its awareness
        assert py.doc.client_id in await node.peers()
        assert "instance gone" not in a.log_tail(400)
        final = py.value
        reasserted = [metric(await metrics_of(x.http_url), "collab_reasserted_updates_total") for x in (a, b)]
        assert sum(reasserted) >= 1  # what Redis lost was put back by the instances that held it

    assert a.stop() == 0 and b.stop() == 0  # graceful: what the rooms held is handed on
    await wait_stored(cluster, room, final, timeout=30)
    assert_has_all(await cluster.stored_text(room), everything)
    gateway = await cluster.gateway()
    assert_has_all(await exported_text(gateway.http_url, project_uuid, token), everything)

    # the worker saw its queue vanish and recovered; the instances counted what they put back
    text = await metrics_of(worker.http_url)
    assert metric(text, 'persistence_errors_total{stage="redis"}') >= 1
    assert metric(text, "persistence_redis_connected") == 1
    assert metric(text, "persistence_consume_lag_seconds") < 5


async def test_a_room_unloaded_while_the_worker_is_down_does_not_live_in_redis_alone(
    cluster: Cluster, redis_server: RedisServer
) -> None:
    a = await cluster.collab("a")  # no worker: the log is not persisted
    room = await cluster.new_project(1)
    async with await YClient.connect(a.ws_url, room, cluster.token(1)) as client:
        await edit_steadily(client, "u", 30)
        final = client.value
    # the room unloads (ROOM_UNLOAD_GRACE) and, its log still unpersisted, writes itself
    await wait_metric(a.http_url, "collab_room_handovers_total", 1, timeout=20)
    redis_server.restart_empty()  # the log is gone with Redis's data
    await cluster.worker()
    await wait_stored(cluster, room, final)

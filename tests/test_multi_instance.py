"""Multi-instance mode: Redis fan-out, durable log, persistence worker (real Redis and PostgreSQL)."""

from __future__ import annotations

import asyncio
import random
import statistics
import time

import pytest

from stack.servers import RedisServer
from tests.support.cluster import Cluster, metric, metrics_of, wait_metric, wait_stored
from tests.support.yclient import YClient
from tests.test_store import EPOCH

pytestmark = pytest.mark.integration


async def test_two_instances_converge_and_share_awareness(cluster: Cluster) -> None:
    a_srv, b_srv = await cluster.collab("a"), await cluster.collab("b")
    room = await cluster.new_project(1)
    token = cluster.token(1)
    async with await YClient.connect(a_srv.ws_url, room, token) as a, await YClient.connect(
        b_srv.ws_url, room, token
    ) as b:
        a.append("from a;")
        await b.wait_text("from a;")
        b.append("from b;")
        await a.wait_text("from a;from b;")
        a.set_awareness({"user": {"name": "ann"}})
        await b.wait_until(lambda: a.doc.client_id in b.peers)
        # fan-out latency, measured (not asserted)
        latencies = []
        for i in range(50):
            started = time.perf_counter()
            a.append(str(i % 10))
            expected = a.value
            await b.wait_until(lambda: b.value == expected)  # noqa: B023 - awaited in this pass
            latencies.append((time.perf_counter() - started) * 1000)
        print(
            f"\ncross-instance latency over 50 edits: p50 {statistics.median(latencies):.2f} ms, "
            f"max {max(latencies):.2f} ms"
        )
    assert "collab_envelopes_in_total" in await metrics_of(b_srv.http_url)


async def test_many_rooms_three_instances_random_edits_converge_with_database(cluster: Cluster) -> None:
    servers = [await cluster.collab(name) for name in ("a", "b", "c")]
    await cluster.worker("worker-1")
    await cluster.worker("worker-2")  # two workers share the queue
    token = cluster.token(1)
    rooms = [await cluster.new_project(1) for _ in range(10)]
    clients: dict[str, list[YClient]] = {}
    for room in rooms:
        clients[room] = [
            await YClient.connect(servers[i % 3].ws_url, room, token) for i in range(4)
        ]
    rng = random.Random(7)
    for _ in range(15):
        for room_clients in clients.values():
            for c in room_clients:
                if rng.random() < 0.3 and len(c.value) > 2:
                    index = rng.randrange(len(c.value) - 1)
                    c.text.__delitem__(slice(index, index + 1))
                else:
                    c.insert(rng.randrange(len(c.value) + 1), rng.choice("abcdef"))
        await asyncio.sleep(0)
    for room, room_clients in clients.items():
        first = room_clients[0]
        await YClient.wait_all(
            room_clients,
            lambda: len({x.value for x in room_clients}) == 1,  # noqa: B023 - awaited in this pass
            15,
        )
        assert len({c.value for c in room_clients}) == 1
        await wait_stored(cluster, room, first.value)
    for room_clients in clients.values():
        for c in room_clients:
            await c.close()


async def test_malformed_envelopes_are_dropped(cluster: Cluster, redis_server: RedisServer) -> None:
    import redis.asyncio as aioredis

    srv = await cluster.collab("a")
    room = await cluster.new_project(1)
    async with await YClient.connect(srv.ws_url, room, cluster.token(1)) as c:
        r = aioredis.Redis(port=redis_server.port)
        channel = f"exe:yjs:{room}"
        junks = (b"", b"short", bytes(16) + b"\x63garbage", bytes(16) + b"\x00not-a-yjs-update", random.randbytes(300))
        for junk in junks:
            await r.publish(channel, junk)
        await r.aclose()
        c.append("still fine")
        async with await YClient.connect(srv.ws_url, room, cluster.token(1)) as other:
            await other.wait_text("still fine")
    text = await metrics_of(srv.http_url)
    invalid = [line for line in text.splitlines() if line.startswith("collab_envelopes_invalid_total")]
    assert invalid and float(invalid[0].split()[-1]) >= 4


async def test_revoked_member_is_disconnected_on_every_instance(cluster: Cluster) -> None:
    from sqlalchemy import delete

    from shared.db.engine import create_sessionmaker
    from shared.db.models import ProjectMember

    a_srv, b_srv = await cluster.collab("a"), await cluster.collab("b")
    room = await cluster.new_project(1, 2)
    ca = await YClient.connect(a_srv.ws_url, room, cluster.token(2))
    cb = await YClient.connect(b_srv.ws_url, room, cluster.token(2))
    owner = await YClient.connect(a_srv.ws_url, room, cluster.token(1))
    try:
        async with create_sessionmaker(cluster.engine)() as session, session.begin():
            await session.execute(delete(ProjectMember).where(ProjectMember.user_id == 2))
        assert await ca.wait_closed(10) == 4403
        assert await cb.wait_closed(10) == 4403
        assert owner.close_code is None  # members keep their connection
    finally:
        for c in (ca, cb, owner):
            await c.close()


async def test_gateway_import_reaches_clients_on_every_instance(cluster: Cluster) -> None:
    from pycrdt import Doc, Text

    from shared.envelope import instance_id_bytes
    from shared.redis_documents import RedisDocuments
    from shared.redis_log import create_redis

    a_srv, b_srv = await cluster.collab("a"), await cluster.collab("b")
    await cluster.worker()
    room = await cluster.new_project(1)
    async with await YClient.connect(a_srv.ws_url, room, cluster.token(1)) as ca, await YClient.connect(
        b_srv.ws_url, room, cluster.token(1)
    ) as cb:
        ca.append("live;")
        await cb.wait_text("live;")
        source: Doc = Doc()
        source.get("t", type=Text).insert(0, "imported;")
        redis = create_redis(cluster.settings())
        documents = RedisDocuments(redis, cluster.store, instance_id_bytes("gateway-test"))
        await documents.apply_update(room.removeprefix("project-"), source.get_update())
        await ca.wait_until(lambda: "imported;" in ca.value)
        await cb.wait_until(lambda: cb.value == ca.value)
        exported: Doc = Doc()
        for update in await documents.load(room.removeprefix("project-")):
            exported.apply_update(update)
        assert str(exported.get("t", type=Text)) == ca.value
        await redis.aclose()
        await wait_stored(cluster, room, ca.value)


async def test_compaction_of_100k_small_updates(cluster: Cluster) -> None:
    from pycrdt import Doc, Text

    room = await cluster.new_project(1)
    project_uuid = room.removeprefix("project-")
    doc: Doc = Doc()
    text = doc.get("t", type=Text)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    t_begin = time.perf_counter()
    rng = random.Random(3)
    cursor = length = 0
    for i in range(100_000):  # a typist: runs of keystrokes, some backspaces, cursor jumps
        if rng.random() < 0.01:
            cursor = rng.randrange(length + 1)
        if cursor and rng.random() < 0.05:
            del text[cursor - 1 : cursor]
            cursor, length = cursor - 1, length - 1
        else:
            text.insert(cursor, "abcdefghij"[i % 10])
            cursor, length = cursor + 1, length + 1
    t_generated = time.perf_counter()
    history_bytes = sum(len(u) for u in updates)
    t_start = time.perf_counter()
    for start in range(0, len(updates), 10_000):
        positioned = [((1, start + i + 1), u) for i, u in enumerate(updates[start : start + 10_000])]
        await cluster.store.append_from_logs(epoch=EPOCH, batch={project_uuid: positioned})
    started = time.perf_counter()
    result = await cluster.store.compact(project_uuid)
    elapsed = time.perf_counter() - started
    assert result is not None and result.merged_updates == 100_000
    assert await cluster.stored_text(room) == str(text)
    assert (await cluster.store.log_stats(project_uuid)).count == 0
    # the snapshot grows with the document, not with its history
    assert result.snapshot_bytes < history_bytes / 8
    assert result.snapshot_bytes < 5 * len(str(text))
    print(
        f"\n100k updates, {history_bytes} bytes -> snapshot {result.snapshot_bytes} bytes for "
        f"{len(str(text))} characters; compaction {elapsed:.2f}s, "
        f"stored in {started - t_start:.2f}s, generated in {t_generated - t_begin:.2f}s"
    )


async def test_worker_compacts_an_idle_document(cluster: Cluster) -> None:
    from sqlalchemy import select

    from shared.db.engine import create_sessionmaker
    from shared.db.models import YjsDocument

    a = await cluster.collab("a")
    await cluster.worker(compact_idle_seconds="0.5", compact_max_updates="100000")
    room = await cluster.new_project(1)
    async with await YClient.connect(a.ws_url, room, cluster.token(1)) as c:
        c.append("idle ")
        c.append("compaction")
        await wait_stored(cluster, room, "idle compaction")
        async with asyncio.timeout(10):
            while True:  # polling PostgreSQL
                async with create_sessionmaker(cluster.engine)() as session:
                    version = max((await session.scalars(select(YjsDocument.snapshot_version))).all())
                if version > 0:
                    break
                await asyncio.sleep(0.1)
        assert (await cluster.store.log_stats(room.removeprefix("project-"))).count == 0
        assert await cluster.stored_text(room) == "idle compaction"


async def test_worker_commits_a_burst_in_one_transaction(cluster: Cluster) -> None:
    """The dirty stream alone wakes the worker; updates flagged within one
    `PERSIST_BATCH_SECONDS` window are committed together, and soon."""
    a = await cluster.collab("a")
    worker = await cluster.worker(persist_batch_seconds="0.3")
    room = await cluster.new_project(1)
    token = cluster.token(1)
    async with await YClient.connect(a.ws_url, room, token) as writer, await YClient.connect(
        a.ws_url, room, token
    ) as peer:
        writer.append("seed;")
        before = await wait_metric(worker.http_url, "persistence_updates_total", 1)
        for i in range(20):  # over many collab ticks: each is relayed before the next is typed
            writer.append(f"{i};")
            expected = writer.value
            await peer.wait_text(expected)
        after = await wait_metric(worker.http_url, "persistence_updates_total", 21)
        assert await cluster.stored_text(room) == writer.value
    batches = metric(after, "persistence_batches_total") - metric(
        before, "persistence_batches_total"
    )
    assert metric(after, "persistence_updates_total") == 21
    assert 1 <= batches <= 2, f"20 updates of one burst took {batches} transactions"
    # every update reached PostgreSQL within a second of entering the Redis log
    within_a_second = metric(after, 'persistence_lag_seconds_bucket{le="1.0"}')
    assert within_a_second == metric(after, "persistence_lag_seconds_count")


async def test_worker_commits_a_window_over_several_rooms_in_one_transaction(cluster: Cluster) -> None:
    """Updates flagged in several rooms within one `PERSIST_BATCH_SECONDS`
    window are read, committed and acknowledged in one pass: one transaction."""
    a = await cluster.collab("a")
    worker = await cluster.worker(persist_batch_seconds="0.3")
    rooms = [await cluster.new_project(1) for _ in range(3)]
    token = cluster.token(1)
    clients = [await YClient.connect(a.ws_url, room, token) for room in rooms]
    try:
        for client in clients:
            client.append("seed;")
        before = await wait_metric(worker.http_url, "persistence_updates_total", 3)
        for i, client in enumerate(clients):  # one burst over the three rooms
            client.append(f"burst {i};")
        after = await wait_metric(worker.http_url, "persistence_updates_total", 6)
        for room, client in zip(rooms, clients):
            assert await cluster.stored_text(room) == client.value
    finally:
        for client in clients:
            await client.close()
    assert metric(after, "persistence_updates_total") == 6
    batches = metric(after, "persistence_batches_total") - metric(before, "persistence_batches_total")
    assert batches == 1, f"a burst over 3 rooms took {batches} transactions"

"""Large documents end to end: a stock client's 30 MB sync answer, on one and on two instances.

The stock y-websocket client (`--preload`) builds the document in one
transaction before it connects, the way eXeLearning's importer writes a whole
project, so its first sync answer carries all of it in one frame. A fresh
client must then receive it, the database must hold it, and a fresh instance
must load it back. Past `MAX_DOCUMENT_BYTES` the refusal is permanent (4413):
the stock client stops instead of resending the same answer forever.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest
from pycrdt import Doc, Text

from services.embedded import create_app as create_embedded_app
from shared.config import Settings
from stack.servers import PostgresServer
from tests.support.app_server import InProcessServer
from tests.support.cluster import Cluster, metric, metrics_of
from tests.support.node_client import NodeYClient
from tests.support.yclient import YClient

pytestmark = pytest.mark.integration

PIECES, PIECE = 120_000, 250  # 30 MB of text, 35 MB encoded
SYNC_TIMEOUT = 90.0
CLOSE_TOO_LARGE = 4413


def digest(text: str) -> tuple[int, str]:
    return len(text), hashlib.sha256(text.encode()).hexdigest()


def author(server_url: str, room: str, token: str) -> NodeYClient:
    """A stock client that holds the big document before it connects."""
    return NodeYClient.start(server_url, room, token, name="author", preload=(PIECES, PIECE))


async def uploaded(client: NodeYClient) -> tuple[int, str]:
    """Once the author synced: its document's digest."""
    await client.wait_synced(SYNC_TIMEOUT)
    return await client.digest(SYNC_TIMEOUT)


async def fresh_join(server_url: str, room: str, token: str, expected: tuple[int, str]) -> None:
    """A fresh stock client receives the whole document."""
    async with NodeYClient.start(server_url, room, token, name="reader") as reader:
        await receives(reader, expected)


async def receives(reader: NodeYClient, expected: tuple[int, str]) -> None:
    await reader.wait_for(lambda e: e["event"] == "update" and e.get("length") == expected[0], SYNC_TIMEOUT)
    assert await reader.digest(SYNC_TIMEOUT) == expected


async def fresh_python_join(server_url: str, room: str, token: str, expected: tuple[int, str]) -> None:
    async with await YClient.connect(server_url, room, token, timeout=SYNC_TIMEOUT) as reader:
        await reader.wait_until(lambda: len(reader.text) == expected[0], SYNC_TIMEOUT)
        assert digest(reader.value) == expected


async def exported(http_url: str, project_uuid: str, token: str) -> tuple[int, str]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as session:
        async with session.get(f"{http_url}/api/projects/{project_uuid}/yjs-document") as resp:
            assert resp.status == 200, await resp.text()
            body = await resp.read()
        async with session.post(f"{http_url}/api/projects/{project_uuid}/versions", json={"label": "big"}) as resp:
            assert resp.status == 201, await resp.text()
            version = (await resp.json())["id"]
        async with session.get(f"{http_url}/api/projects/{project_uuid}/versions/{version}") as resp:
            assert resp.status == 200
            assert await resp.read() == body
    doc: Doc = Doc()
    doc.apply_update(body)
    return digest(str(doc.get("t", type=Text)))


async def round_trips(server: InProcessServer, stop: asyncio.Event) -> list[float]:
    """Edits in another room, each waited for by a second client, until `stop` is set."""
    room = f"project-{uuid.uuid4()}"
    token = await server.grant(room, "bystander")
    latencies = []
    async with await YClient.connect(server.ws_url, room, token) as a, await YClient.connect(
        server.ws_url, room, token
    ) as b:
        i = 0
        while not stop.is_set():
            started = time.perf_counter()
            a.append(f"<{i}>")
            await b.wait_until(lambda: f"<{i}>" in b.value, 30)  # noqa: B023 - awaited in this pass
            latencies.append(time.perf_counter() - started)
            i += 1
            await asyncio.sleep(0.01)  # pacing the probe
    return latencies


@pytest.fixture
async def pg_server(settings: Settings, postgres: PostgresServer) -> AsyncIterator[InProcessServer]:
    url = postgres.create_database(f"large_{uuid.uuid4().hex[:12]}")
    srv = await InProcessServer(create_embedded_app, settings.with_overrides(database_url=url)).start()
    try:
        yield srv
    finally:
        await srv.stop()


async def test_a_30_mb_sync_answer_reaches_a_fresh_client_and_survives_a_restart(
    pg_server: InProcessServer,
) -> None:
    srv = pg_server
    room = f"project-{uuid.uuid4()}"
    project_uuid = room.removeprefix("project-")
    token = await srv.grant(room, "author")
    stop = asyncio.Event()
    probe = asyncio.create_task(round_trips(srv, stop))
    async with author(srv.ws_url, room, token) as writer:
        expected = await uploaded(writer)
        assert expected[0] == PIECES * PIECE
        await fresh_join(srv.ws_url, room, token, expected)
    stop.set()
    latencies = await probe
    assert latencies, "the other room made no round trip while the document arrived"
    print(f"other room while a 35 MB document arrived: {len(latencies)} round trips, max {max(latencies) * 1000:.0f} ms")

    await srv.restart()  # graceful: the document is in PostgreSQL
    await fresh_python_join(srv.ws_url, room, token, expected)
    assert await exported(srv.http_url, project_uuid, token) == expected

    # the same document imported over HTTP into another project
    copy = f"project-{uuid.uuid4()}"
    copy_token = await srv.grant(copy, "author")
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as session:
        async with session.get(f"{srv.http_url}/api/projects/{project_uuid}/yjs-document") as resp:
            body = await resp.read()
        async with session.post(
            f"{srv.http_url}/api/projects/{copy.removeprefix('project-')}/yjs-document",
            data=body,
            headers={"Content-Type": "application/octet-stream", "Authorization": f"Bearer {copy_token}"},
        ) as resp:
            assert resp.status == 200, await resp.text()
    await fresh_python_join(srv.ws_url, copy, copy_token, expected)


async def test_a_30_mb_document_across_two_instances_reaches_the_database(cluster: Cluster) -> None:
    a, b = await cluster.collab("a"), await cluster.collab("b")
    await cluster.worker()
    room = await cluster.new_project(1)
    token = cluster.token(1)
    async with NodeYClient.start(b.ws_url, room, token, name="reader") as reader:
        await reader.wait_synced()
        async with author(a.ws_url, room, token) as writer:
            expected = await uploaded(writer)
            await receives(reader, expected)
    # the update crossed Redis by reference, not through pub/sub whole
    assert metric(await metrics_of(b.http_url), 'collab_envelopes_in_total{kind="stored"}') >= 1
    await a.stop()
    await b.stop()
    deadline = time.monotonic() + SYNC_TIMEOUT
    while digest(await cluster.stored_text(room)) != expected:
        assert time.monotonic() < deadline, "the worker did not persist the document"
        await asyncio.sleep(0.5)  # polling PostgreSQL: there is no event to wait on
    c = await cluster.collab("c")
    await fresh_python_join(c.ws_url, room, token, expected)


@pytest.mark.parametrize(
    "pieces, reason",
    [(10_000, "document too large"), (16_000, "message too large")],
    ids=["past-MAX_DOCUMENT_BYTES", "past-MAX_SYNC_MESSAGE_BYTES"],
)
async def test_a_document_past_the_limit_is_refused_once_and_the_stock_client_stops(
    settings: Settings, pieces: int, reason: str
) -> None:
    """2.5 MB (over the 2 MiB document limit) or 4 MB (over the 3 MiB frame limit too)."""
    srv = await InProcessServer(
        create_embedded_app,
        settings.with_overrides(max_document_bytes=2 * 1024 * 1024, max_sync_message_bytes=3 * 1024 * 1024),
    ).start()
    try:
        room = f"project-{uuid.uuid4()}"
        token = await srv.grant(room, "author")
        async with NodeYClient.start(srv.ws_url, room, token, preload=(pieces, PIECE)) as refused:
            closed = await refused.wait_event("closed", SYNC_TIMEOUT)
            assert (closed["code"], closed["reason"]) == (CLOSE_TOO_LARGE, reason)
            info = await refused.info()
            assert info["should_connect"] is False and not info["connecting"]
        text = await metrics_of(srv.http_url)
        kind = "document_too_large" if reason == "document too large" else "too_big"
        assert metric(text, f'collab_errors_total{{kind="{kind}"}}') == 1
        # the room is fine: another client edits it
        async with await YClient.connect(srv.ws_url, room, token) as writer, await YClient.connect(
            srv.ws_url, room, token
        ) as reader:
            writer.append("small")
            await reader.wait_text("small")
    finally:
        await srv.stop()


async def test_a_gateway_alone_counts_the_whole_document_against_the_limit(cluster: Cluster) -> None:
    """Multi-instance, no room open: the import is checked against the document made of
    the database and the Redis log (413 document_too_large), and nothing of it is kept."""
    gateway = await cluster.gateway(max_document_bytes="6000")
    room = await cluster.new_project(1)
    url = f"{gateway.http_url}/api/projects/{room.removeprefix('project-')}/yjs-document"

    def text_update(fill: str, size: int) -> bytes:
        doc: Doc = Doc()
        doc.get("t", type=Text).insert(0, fill * size)
        return doc.get_update()

    async with aiohttp.ClientSession(
        headers={"Authorization": f"Bearer {cluster.token(1)}", "Content-Type": "application/octet-stream"}
    ) as session:
        async with session.post(url, data=text_update("a", 3000)) as resp:
            assert resp.status == 200, await resp.text()
        async with session.post(url, data=text_update("b", 4000)) as resp:
            assert resp.status == 413 and (await resp.json())["error"]["code"] == "document_too_large"
        async with session.get(url) as resp:
            doc: Doc = Doc()
            doc.apply_update(await resp.read())
    assert str(doc.get("t", type=Text)) == "a" * 3000

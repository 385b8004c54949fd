"""Graceful restart: every accepted edit survives, on SQLite and PostgreSQL.

`InProcessServer.stop()` is aiohttp's graceful shutdown (what SIGTERM runs):
stop accepting, close sockets with 1001, flush the store.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from services.embedded import create_app
from shared.config import Settings
from shared.db.resources import DATABASE
from tests.support.app_server import InProcessServer
from tests.support.node_client import NodeYClient
from tests.support.yclient import YClient

pytestmark = pytest.mark.integration

CLOSE_GOING_AWAY = 1001


def new_room() -> str:
    return f"project-{uuid.uuid4()}"


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    """The test settings on SQLite (a temp file) or on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        assert settings.database_is_sqlite
        return settings
    postgres = request.getfixturevalue("postgres")
    url = postgres.create_database(f"restart_{uuid.uuid4().hex[:12]}")
    return settings.with_overrides(database_url=url)


@pytest.fixture
async def app_server(backend_settings: Settings) -> AsyncIterator[InProcessServer]:
    srv = await InProcessServer(create_app, backend_settings).start()
    try:
        yield srv
    finally:
        await srv.stop()


async def test_edits_survive_a_graceful_restart(app_server: InProcessServer) -> None:
    srv = app_server
    rooms = [new_room(), new_room()]
    tokens = [await srv.grant(room, "alice") for room in rooms]
    a = await YClient.connect(srv.ws_url, rooms[0], tokens[0])
    b = await YClient.connect(srv.ws_url, rooms[0], tokens[0])
    other = await YClient.connect(srv.ws_url, rooms[1], tokens[1])
    try:
        for i in range(60):  # past the default compaction threshold (50)
            a.append(f"a{i};")
            b.insert(0, f"b{i};")
        other.append("the other room")
        await YClient.wait_all([a, b], lambda: a.value == b.value and a.value.count(";") == 120)
        await other.wait_text("the other room")
        expected = a.value

        await srv.stop()
        for client in (a, b, other):
            assert await client.wait_closed() == CLOSE_GOING_AWAY
    finally:
        for client in (a, b, other):
            await client.close()

    await srv.start()
    async with await YClient.connect(srv.ws_url, rooms[0], srv.token("alice")) as fresh:
        await fresh.wait_text(expected)
        fresh.append("after restart")
    async with await YClient.connect(srv.ws_url, rooms[1], srv.token("alice")) as fresh:
        await fresh.wait_text("the other room")

    # and once more, on top of what the first restart loaded
    await srv.restart()
    async with await YClient.connect(srv.ws_url, rooms[0], srv.token("alice")) as fresh:
        await fresh.wait_text(expected + "after restart")


async def test_unflushed_edits_are_written_on_shutdown(backend_settings: Settings) -> None:
    """Edits accepted just before shutdown, still waiting in the store writer's
    batch (the flush interval is a minute here), are written by the shutdown."""
    srv = await InProcessServer(
        create_app, backend_settings.with_overrides(store_flush_interval=60.0)
    ).start()
    room = new_room()
    project_uuid = room.removeprefix("project-")
    try:
        token = await srv.grant(room, "alice")
        async with (
            await YClient.connect(srv.ws_url, room, token) as writer,
            await YClient.connect(srv.ws_url, room, token) as peer,
        ):
            for i in range(20):
                writer.append(f"{i},")
            expected = "".join(f"{i}," for i in range(20))
            await peer.wait_text(expected)  # accepted and relayed by the server...
            assert srv.app is not None
            store = srv.app[DATABASE].store
            assert await store.load_updates(project_uuid) == []  # ...but not written yet
            await srv.stop()  # no wait: shut down right away
            assert await writer.wait_closed() == CLOSE_GOING_AWAY
            assert await peer.wait_closed() == CLOSE_GOING_AWAY

        await srv.start()
        async with await YClient.connect(srv.ws_url, room, srv.token("alice")) as fresh:
            await fresh.wait_text(expected)
    finally:
        await srv.stop()


async def test_stock_client_reconnects_after_a_graceful_restart(
    app_server: InProcessServer,
) -> None:
    """The stock client sees 1001 (transient), reconnects to the restarted
    server on its own, resyncs, and keeps editing; nothing is lost either way.
    Its edits made while the server is down reach the server through the
    reconnect's sync exchange."""
    srv = app_server
    room = new_room()
    token = await srv.grant(room, "alice")
    async with NodeYClient.start(srv.ws_url, room, token, name="alice", max_backoff_ms=200) as node:
        await node.wait_synced()
        for i in range(10):
            await node.append(f"n{i};")
        mark = node.mark()
        await srv.stop()
        close = await node.wait_event("close", since=mark)
        assert close["code"] == CLOSE_GOING_AWAY
        await node.append("offline;")  # typed while the server is down
        await srv.start()
        await node.wait_synced(since=mark)  # reconnected by itself and synced
        assert not any(e["event"] == "closed" for e in node.events)  # never gave up
        expected = "".join(f"n{i};" for i in range(10)) + "offline;"
        async with await YClient.connect(srv.ws_url, room, srv.token("alice")) as fresh:
            await fresh.wait_text(expected)
            fresh.append("both ways")
            await node.wait_text(expected + "both ways")

"""Caps on one user's and one address's concurrent WebSockets: 1013 (try again later) beyond."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest

from services.collab.handler import COLLAB
from services.embedded import create_app
from shared.config import Settings
from tests.support.app_server import InProcessServer
from tests.support.yclient import YClient

pytestmark = pytest.mark.integration

TRY_AGAIN_LATER = 1013


@contextlib.asynccontextmanager
async def capped_server(settings: Settings, **caps: object) -> AsyncIterator[InProcessServer]:
    srv = await InProcessServer(create_app, settings.with_overrides(**caps)).start()
    try:
        yield srv
    finally:
        await srv.stop()


async def connect(
    server: InProcessServer, room: str, user: str, headers: dict[str, str] | None = None
) -> YClient:
    token = await server.grant(room, user)
    return await YClient.connect(server.ws_url, room, token, headers=headers)


async def wait_for_connections(server: InProcessServer, count: int) -> None:
    """Until the server has let go of closed sockets (their handlers end after the close)."""
    rooms = server.app[COLLAB].rooms  # type: ignore[index]
    async with asyncio.timeout(10):
        while rooms.connection_count() != count:
            await asyncio.sleep(0.02)


async def test_one_user_gets_at_most_the_per_user_cap(settings: Settings) -> None:
    room = f"project-{uuid.uuid4()}"
    async with capped_server(settings, max_connections_per_user=3) as srv:
        tabs = [await connect(srv, room, "viewer") for _ in range(3)]
        try:
            assert [t.close_code for t in tabs] == [None] * 3
            refused = await connect(srv, room, "viewer")
            assert await refused.wait_closed() == TRY_AGAIN_LATER
            await refused.close()
            # another user is not affected
            async with await connect(srv, room, "someone-else") as other:
                assert other.close_code is None
            # a closed socket gives its place back
            await tabs.pop().close()
            await wait_for_connections(srv, 2)
            tabs.append(await connect(srv, room, "viewer"))
            assert tabs[-1].close_code is None
        finally:
            for tab in tabs:
                await tab.close()


async def test_one_address_gets_at_most_the_per_address_cap(settings: Settings) -> None:
    room = f"project-{uuid.uuid4()}"
    caps = {"max_connections_per_address": 2, "forwarded_allow_ips": "127.0.0.1"}
    async with capped_server(settings, **caps) as srv:
        clients = [await connect(srv, room, f"user-{i}") for i in range(2)]
        try:
            refused = await connect(srv, room, "user-2")
            assert await refused.wait_closed() == TRY_AGAIN_LATER
            await refused.close()
            # behind a trusted proxy, the address is the client's, not the proxy's
            proxied = await connect(srv, room, "user-3", {"X-Forwarded-For": "198.51.100.7"})
            clients.append(proxied)
            assert proxied.close_code is None
        finally:
            for client in clients:
                await client.close()

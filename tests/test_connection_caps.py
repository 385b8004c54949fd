"""Caps on one user's and one address's concurrent WebSockets, and on one address's handshakes per
minute: 1013 (try again later) beyond."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from services.collab.handler import COLLAB
from services.collab.metrics import CollabMetrics
from services.collab.throttle import RedisThrottle
from services.embedded import create_app
from shared.config import Settings
from stack.servers import RedisServer
from tests.support.app_server import InProcessServer
from tests.support.cluster import Cluster, metric, metrics_of
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


async def handshake(
    ws_url: str, room: str, token: str, address: str
) -> tuple[int | None, str]:
    """One WebSocket handshake from `address` (via a trusted proxy's X-Forwarded-For):
    (close code, reason) when refused, (None, "") when the server starts syncing."""
    async with aiohttp.ClientSession() as session, session.ws_connect(
        f"{ws_url}/{room}", params={"token": token}, headers={"X-Forwarded-For": address}
    ) as ws:
        message = await ws.receive(timeout=10)
        if message.type is aiohttp.WSMsgType.CLOSE:
            return message.data, message.extra or ""
        return None, ""


async def test_handshakes_over_the_rate_are_refused_per_address(settings: Settings) -> None:
    room = f"project-{uuid.uuid4()}"
    caps = {"ws_connect_rate_per_address": 3, "forwarded_allow_ips": "127.0.0.1"}
    async with capped_server(settings, **caps) as srv:
        token = await srv.grant(room, "viewer")
        for _ in range(3):
            assert await handshake(srv.ws_url, room, token, "198.51.100.1") == (None, "")
        refused = await handshake(srv.ws_url, room, token, "198.51.100.1")
        assert refused == (TRY_AGAIN_LATER, "too many handshakes")
        # another address is not affected
        assert await handshake(srv.ws_url, room, token, "198.51.100.2") == (None, "")
        assert metric(await metrics_of(srv.http_url), "collab_handshakes_throttled_total") == 1


async def test_the_handshake_rate_is_shared_across_instances(cluster: Cluster) -> None:
    caps = {"ws_connect_rate_per_address": "4", "forwarded_allow_ips": "127.0.0.1"}
    a_srv, b_srv = await cluster.collab("a", **caps), await cluster.collab("b", **caps)
    room, token = await cluster.new_project(1), cluster.token(1)
    for srv in (a_srv, b_srv, a_srv, b_srv):
        assert await handshake(srv.ws_url, room, token, "203.0.113.1") == (None, "")
    for srv in (a_srv, b_srv):
        refused = await handshake(srv.ws_url, room, token, "203.0.113.1")
        assert refused == (TRY_AGAIN_LATER, "too many handshakes")
    assert await handshake(b_srv.ws_url, room, token, "203.0.113.2") == (None, "")


async def test_the_redis_throttle_fails_open_when_redis_is_gone(redis_server: RedisServer) -> None:
    registry = CollectorRegistry()
    metrics = CollabMetrics(registry)
    redis = aioredis.Redis(host=redis_server.host, port=redis_server.port, socket_connect_timeout=0.5)
    throttle = RedisThrottle(redis, 1, metrics)
    try:
        assert [await throttle.allow("192.0.2.1") for _ in range(2)] == [True, False]
        redis_server.stop()
        assert await throttle.allow("192.0.2.1")
        assert registry.get_sample_value("collab_throttle_unavailable_total") == 1
    finally:
        await throttle.close()

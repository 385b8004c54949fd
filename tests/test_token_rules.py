"""One token rule on HTTP and the WebSocket: where the token is taken from, how long it is valid,
and a socket closed with 4401 when its token expires."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import jwt
import pytest

from tests.support.api import Api
from tests.support.app_server import InProcessServer
from tests.support.yclient import YClient

pytestmark = pytest.mark.integration

CLOSE_UNAUTHORIZED = 4401


def _token(server: InProcessServer, user: str, *, iat_offset: int = 0, ttl: int = 3600) -> str:
    now = int(time.time()) + iat_offset
    claims = {"sub": str(server.users[user]), "roles": [], "iat": now, "exp": now + ttl}
    return jwt.encode(claims, server.settings.jwt_secret, algorithm="HS256")


async def ws_outcome(
    server: InProcessServer, room: str, token: str | None, headers: dict[str, str] | None = None
) -> int | None:
    """None when the socket joined and synced, else the close code it was refused with."""
    client = await YClient.connect(server.ws_url, room, token, headers=headers)
    try:
        return client.close_code
    finally:
        await client.close()


@pytest.fixture
async def room(server: InProcessServer, project: str) -> str:
    await server.grant(project, "alice")
    return project


@pytest.fixture
async def api(server: InProcessServer) -> AsyncIterator[Api]:
    async with Api(server.http_url) as client:
        yield client


async def test_a_socket_is_closed_with_4401_when_its_token_expires(
    server: InProcessServer, room: str
) -> None:
    long_lived = server.token("alice", ttl=7 * 24 * 3600)  # eXeLearning's tokens last 7 days
    async with await YClient.connect(server.ws_url, room, long_lived) as steady:
        short = await YClient.connect(server.ws_url, room, server.token("alice", ttl=2))
        try:
            assert short.close_code is None
            short.append("written before expiry;")
            await steady.wait_text("written before expiry;")
            assert await short.wait_closed(timeout=10) == CLOSE_UNAUTHORIZED
        finally:
            await short.close()
        # the 7-day token's socket is still there and still edits
        assert steady.close_code is None
        steady.append("still here")
        async with await YClient.connect(server.ws_url, room, long_lived) as late:
            await late.wait_text("written before expiry;still here")


async def test_the_authorization_header_comes_before_the_query_on_both(
    server: InProcessServer, room: str, api: Api
) -> None:
    good, bad = server.token("alice"), "not.a.token"
    # a good header wins over a bad ?token=
    assert await ws_outcome(server, room, bad, {"Authorization": f"Bearer {good}"}) is None
    assert (await api.get("/api/me", params={"token": bad}, token=good)).status == 200
    # a bad header is not rescued by a good ?token=
    refused = await ws_outcome(server, room, good, {"Authorization": f"Bearer {bad}"})
    assert refused == CLOSE_UNAUTHORIZED
    assert (await api.get("/api/me", params={"token": good}, token=bad)).status == 401
    # another scheme (a proxy's Basic credentials) is not a token: ?token= is used
    basic = {"Authorization": "Basic dXNlcjpwYXNz"}
    assert await ws_outcome(server, room, good, basic) is None
    assert (await api.get("/api/me", params={"token": good}, headers=basic)).status == 200


@pytest.mark.parametrize(
    "case, accepted",
    [
        ("issued 3 s ahead (clock skew)", True),
        ("issued 30 s ahead", False),
        ("expired 2 s ago", False),
    ],
)
async def test_the_same_validity_window_on_both(
    server: InProcessServer, room: str, api: Api, case: str, accepted: bool
) -> None:
    token = {
        "issued 3 s ahead (clock skew)": _token(server, "alice", iat_offset=3),
        "issued 30 s ahead": _token(server, "alice", iat_offset=30),
        "expired 2 s ago": _token(server, "alice", iat_offset=-60, ttl=58),
    }[case]
    http = (await api.get("/api/me", token=token)).status
    ws = await ws_outcome(server, room, token)
    assert (http, ws) == ((200, None) if accepted else (401, CLOSE_UNAUTHORIZED))

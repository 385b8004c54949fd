"""The embedded default (`make run`): the demo token and room it prints really work."""

from __future__ import annotations

import pytest

from services.demo import ensure_demo
from tests.support.app_server import InProcessServer
from tests.support.yclient import YClient

pytestmark = pytest.mark.integration


async def test_demo_token_edits_the_demo_room_and_survives_restarts(server: InProcessServer) -> None:
    token, room = await ensure_demo(server.sessionmaker, server.settings)
    again_token, again_room = await ensure_demo(server.sessionmaker, server.settings)  # idempotent
    assert again_room == room
    async with await YClient.connect(server.ws_url, room, token) as a, await YClient.connect(
        server.ws_url, room, again_token
    ) as b:
        a.append("demo")
        await b.wait_text("demo")

"""Room affinity at the balancer: nginx hashes `/yjs/<room>` over 3 collab instances.

One stack for the module (nginx, 1 gateway, 3 collabs, Redis, PostgreSQL, the
persistence worker), everything through nginx. Which instance answered a
handshake is read from its `X-Instance-Id` (the stock Node client reports it as
an `instance` event; the pycrdt client keeps the handshake response).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from stack import Stack
from tests.support.api import Api
from tests.support.editors import Editors
from tests.support.node_client import NodeYClient
from tests.support.stack_metrics import collab_by_id, connections_per_instance
from tests.support.throttle import UNTHROTTLED
from tests.support.wait import eventually
from tests.support.yclient import YClient

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"
ROOMS = 12


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    running = Stack.start(collab=3, gateway=1, env={"LOG_LEVEL": "WARNING", **UNTHROTTLED})
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
async def rooms(stack: Stack) -> AsyncIterator[tuple[str, list[str]]]:
    """A new user's token and the rooms of `ROOMS` projects it owns (made through nginx)."""
    async with Api(stack.url) as api:
        email = f"affinity-{uuid.uuid4().hex[:8]}@example.com"
        registered = await api.post(
            "/api/auth/register", json={"email": email, "password": PASSWORD, "name": "aff"}
        )
        assert registered.status == 201, registered.body
        login = await api.post("/api/auth/login", json={"email": email, "password": PASSWORD})
        assert login.status == 200, login.body
        token = str(login.json["access_token"])
        names = []
        for i in range(ROOMS):
            created = await api.post("/api/projects", json={"title": f"room {i}"}, token=token)
            assert created.status == 201, created.body
            names.append(f"project-{created.json['uuid']}")
        yield token, names


async def test_a_rooms_clients_share_an_instance_and_rooms_spread(
    stack: Stack, rooms: tuple[str, list[str]]
) -> None:
    token, names = rooms
    async with (
        NodeYClient.start(stack.ws_url, names[0], token, name="a") as a,
        NodeYClient.start(stack.ws_url, names[0], token, name="b") as b,
        NodeYClient.start(stack.ws_url, names[0], token, name="c") as c,
    ):
        for client in (a, b, c):
            await client.wait_synced()
        on = {await client.instance() for client in (a, b, c)}
        assert len(on) == 1, f"one room's clients on several instances: {on}"
        assert await connections_per_instance(stack) == {
            i.name: 3 if i.instance_id in on else 0 for i in stack.collab_instances
        }
    used = set()
    for room in names:
        async with (
            await YClient.connect(stack.ws_url, room, token) as first,
            await YClient.connect(stack.ws_url, room, token) as second,
        ):
            assert first.instance == second.instance, room
            used.add(first.instance)
    assert len(used) >= 2, f"{ROOMS} rooms all on one instance"


async def test_sigkill_of_a_rooms_instance_moves_its_clients_together(
    stack: Stack, rooms: tuple[str, list[str]]
) -> None:
    """Stock clients edit one room; its instance is SIGKILLed: they all reconnect, through
    nginx, to the same survivor, and a fresh client sees every edit any writer made."""
    token, (room, *_) = rooms
    async with (
        NodeYClient.start(stack.ws_url, room, token, name="w0", max_backoff_ms=250) as w0,
        NodeYClient.start(stack.ws_url, room, token, name="w1", max_backoff_ms=250) as w1,
        NodeYClient.start(stack.ws_url, room, token, name="w2", max_backoff_ms=250) as w2,
    ):
        writers = [w0, w1, w2]
        for writer in writers:
            await writer.wait_synced()
        (victim_id,) = {await w.instance() for w in writers}
        victim = collab_by_id(stack, victim_id)
        editors = Editors(writers)
        editors.start()
        await editors.wait_made(20)
        await asyncio.to_thread(stack.kill_collab, victim.index - 1)

        async def moved_together() -> str | None:
            now = {await w.instance() for w in writers}
            return now.pop() if len(now) == 1 and victim_id not in now else None

        survivor_id = await eventually(
            moved_together, 20, what="the writers to reconnect to one survivor", interval=0.1
        )
        assert survivor_id is not None  # eventually raises when it times out
        await editors.wait_made(len(editors.made) + 20)  # editing goes on there
        await editors.stop()
        await editors.converged()
        survivor = collab_by_id(stack, survivor_id)
        assert await connections_per_instance(stack) == {
            i.name: 3 if i is survivor else 0 for i in stack.collab_instances if i.alive
        }
        expected = await w0.digest()
        async with NodeYClient.start(stack.ws_url, room, token, name="fresh") as fresh:
            await fresh.wait_synced()
            assert await fresh.instance() == survivor_id
            assert await fresh.digest() == expected
    assert len(editors.made) > 40

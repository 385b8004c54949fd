"""What a running Stack's collab instances report on `/metrics`, for tests on the stack."""

from __future__ import annotations

import re

import aiohttp

from stack import Instance, Stack
from tests.support.wait import eventually


async def connections_per_instance(stack: Stack) -> dict[str, int]:
    """Open WebSocket connections of every live collab instance, by instance name."""
    counts = {}
    async with aiohttp.ClientSession() as session:
        for instance in stack.collab_instances:
            if not instance.alive:
                continue
            url = f"{instance.url}/metrics"
            async with session.get(url, headers=stack.metrics_headers) as resp:
                text = await resp.text()
            match = re.search(r"^collab_connections (\S+)$", text, re.MULTILINE)
            counts[instance.name] = int(float(match.group(1))) if match else 0
    return counts


async def idle(stack: Stack) -> None:
    """Wait until no collab instance holds a connection of an earlier test (so that the
    metrics count only this test's connections)."""

    async def check() -> bool:
        return not any((await connections_per_instance(stack)).values())

    await eventually(check, 10, what="earlier connections to close", interval=0.1)


def other_collab(stack: Stack, instance_id: str) -> Instance:
    """A live collab instance other than `instance_id`'s: nginx keeps a room on one
    instance (room affinity), so a test of cross-instance behaviour connects its second
    client straight to this one's `ws_url`."""
    return next(i for i in stack.collab_instances if i.alive and i.instance_id != instance_id)


def collab_by_id(stack: Stack, instance_id: str) -> Instance:
    """The collab instance that answered a handshake with this `X-Instance-Id`."""
    return next(i for i in stack.collab_instances if i.instance_id == instance_id)

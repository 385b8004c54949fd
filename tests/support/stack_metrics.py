"""What a running Stack's collab instances report on `/metrics`, for tests on the stack."""

from __future__ import annotations

import re

import aiohttp

from stack import Stack
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
    """Wait until no collab instance holds a connection of an earlier test (nginx's
    least_conn then puts the first connection anywhere and the second on the other one)."""

    async def check() -> bool:
        return not any((await connections_per_instance(stack)).values())

    await eventually(check, 10, what="earlier connections to close", interval=0.1)

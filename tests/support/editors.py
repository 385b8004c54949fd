"""Stock y-websocket clients editing one room at once, for tests on a running stack."""

from __future__ import annotations

import asyncio
import contextlib
import re

from tests.support.node_client import NodeYClient
from tests.support.wait import eventually


class Editors:
    """Stock y-websocket clients appending unique tokens as fast as a user types."""

    def __init__(self, clients: list[NodeYClient]) -> None:
        self.clients = clients
        self.made: list[str] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def _edit(self, index: int, client: NodeYClient) -> None:
        n = 0
        while not self._stop.is_set():
            token = f"<{index}:{n}>"
            await client.append(token)
            self.made.append(token)
            n += 1
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 0.03)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._edit(i, c)) for i, c in enumerate(self.clients)]

    async def wait_made(self, count: int, timeout: float = 15.0) -> None:
        """Wait until `count` edits have been made in all (not a fixed time of typing)."""
        await eventually(lambda: len(self.made) >= count, timeout, what=f"{count} edits made")

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def converged(self, timeout: float = 20.0) -> str:
        """Every client holds the same text with every token exactly once: that text."""

        async def check() -> str | None:
            texts = [await c.text() for c in self.clients]
            if len(set(texts)) == 1 and all(texts[0].count(t) == 1 for t in self.made):
                return texts[0]
            return None

        text = await eventually(
            check,
            timeout,
            what=f"{len(self.clients)} clients to converge on {len(self.made)} edits",
            interval=0.1,
        )
        assert text is not None  # eventually raises when it times out
        assert len(re.findall(r"<\d+:\d+>", text)) == len(self.made), (
            "an edit was duplicated or lost"
        )
        return str(text)

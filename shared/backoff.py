"""Exponential backoff for retry loops (Redis and database reconnects)."""

from __future__ import annotations

import asyncio


class Backoff:
    """Delays `first`, 2×`first`, … up to `cap`; `reset()` after a success."""

    def __init__(self, first: float = 0.1, cap: float = 5.0) -> None:
        self.first = first
        self.cap = cap
        self.delay = first

    def reset(self) -> None:
        self.delay = self.first

    async def sleep(self) -> None:
        """Wait the current delay, then double it (up to the cap)."""
        await asyncio.sleep(self.delay)
        self.delay = min(self.delay * 2, self.cap)

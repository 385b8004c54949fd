"""Concurrent look-ups of many keys answered by one query per batch.

`LookupBatcher.get(key)` waits for the answer of a batch: the keys asked in
the same event-loop turn, and those asked while a batch is in flight, are
fetched together by the next call of `fetch` (at most one in flight). Fifty
handshakes arriving at once then cost one or two queries instead of fifty
pool checkouts. Every answer still comes from a query started after it was
asked: nothing is cached here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LookupBatcher(Generic[K, V]):
    """Answers `get(key)` with `fetch(keys)[key]` (missing keys: `default`), in batches."""

    def __init__(self, fetch: Callable[[list[K]], Awaitable[dict[K, V]]], default: V) -> None:
        self._fetch = fetch
        self._default = default
        self._waiting: dict[K, list[asyncio.Future[V]]] = {}
        self._runner: asyncio.Task[None] | None = None

    async def get(self, key: K) -> V:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[V] = loop.create_future()
        self._waiting.setdefault(key, []).append(future)
        if self._runner is None:
            self._runner = loop.create_task(self._run())
        return await future

    async def _run(self) -> None:
        try:
            while self._waiting:
                await asyncio.sleep(0)  # the rest of this turn's callers join the batch
                batch, self._waiting = self._waiting, {}
                try:
                    found = await self._fetch(list(batch))
                except Exception as exc:  # every caller of this batch sees the failure  # noqa: BLE001
                    for futures in batch.values():
                        for future in futures:
                            if not future.done():
                                future.set_exception(exc)
                    continue
                for key, futures in batch.items():
                    answer = found.get(key, self._default)
                    for future in futures:
                        if not future.done():  # a caller that gave up (cancelled) is skipped
                            future.set_result(answer)
        finally:
            self._runner = None

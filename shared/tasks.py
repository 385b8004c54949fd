"""The background tasks of one service, owned in one place.

A task created and forgotten can be garbage-collected mid-flight, dies
silently when it fails, and outlives the service that started it. Every
background task of a service goes through its `TaskOwner` instead: it is
referenced until it ends, a failure is logged, and `close()` (at shutdown)
cancels the service's loops, waits a bounded time for the rest (closing a
socket, a compaction) and cancels what is still running, so a stopped service
leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


class TaskOwner:
    def __init__(self, service: str) -> None:
        self._service = service
        self._work: set[asyncio.Task[Any]] = set()
        self._loops: set[asyncio.Task[Any]] = set()

    def spawn(
        self, work: Coroutine[Any, Any, Any], *, name: str | None = None
    ) -> asyncio.Task[Any]:
        """Run a piece of work (it ends on its own); `close` waits for it."""
        return self._start(work, name, self._work)

    def spawn_loop(self, loop: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Run a loop that lasts as long as the service; `close` cancels it."""
        return self._start(loop, name, self._loops)

    def _start(
        self, coro: Coroutine[Any, Any, Any], name: str | None, into: set[asyncio.Task[Any]]
    ) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        into.add(task)
        task.add_done_callback(lambda done: self._finished(done, into))
        return task

    def _finished(self, task: asyncio.Task[Any], into: set[asyncio.Task[Any]]) -> None:
        into.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "background task failed",
                exc_info=task.exception(),
                extra={"service": self._service, "task": task.get_name()},
            )

    @property
    def running(self) -> int:
        return len(self._work) + len(self._loops)

    async def close(self, timeout: float = 5.0) -> None:
        """Cancel the loops, wait up to `timeout` for the rest, cancel what still runs."""
        for task in list(self._loops):
            task.cancel()
        if self._work:
            await asyncio.wait(set(self._work), timeout=timeout)
        leftover = self._work | self._loops
        for task in leftover:
            task.cancel()
        if leftover:
            await asyncio.gather(*leftover, return_exceptions=True)

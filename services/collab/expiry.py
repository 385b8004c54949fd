"""Token expiry for every socket of an instance, on one timer.

A `TimerHandle` per socket (and the closure it calls) costs ~500 bytes an idle
socket keeps for its life; here a socket is a heap entry, and one timer waits
for the earliest `exp`. Forgetting a socket only drops it from `_live`: its
entry is skipped when it comes due, and the heap is rebuilt once stale entries
outnumber live ones (tokens may last days while sockets come and go).
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Callable


class ExpiryTimer:
    """`watch(key, when, expire)`: call `expire()` at wall-clock `when` unless `forget(key)`."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int]] = []
        self._live: dict[int, Callable[[], None]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._due_at = 0.0

    def watch(self, key: int, when: float, expire: Callable[[], None]) -> None:
        """Call `expire()` at `when` (seconds since the epoch; now or past: at once)."""
        self._live[key] = expire
        heapq.heappush(self._heap, (when, key))
        if self._timer is None or when < self._due_at:
            self._arm()

    def forget(self, key: int) -> None:
        self._live.pop(key, None)
        if len(self._heap) > 2 * len(self._live) + 64:
            self._heap = [entry for entry in self._heap if entry[1] in self._live]
            heapq.heapify(self._heap)

    def __len__(self) -> int:
        return len(self._live)

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._heap:
            return
        self._due_at = self._heap[0][0]
        delay = max(0.0, self._due_at - time.time())
        self._timer = asyncio.get_running_loop().call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = time.time()
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, key = heapq.heappop(heap)
            expire = self._live.pop(key, None)
            if expire is not None:
                expire()
        self._arm()

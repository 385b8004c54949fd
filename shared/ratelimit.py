"""A sliding-window counter per key (pure logic, no I/O).

The gateway throttles logins with one limiter per instance, keyed by client
address and by account (lower-cased email); a single collab instance throttles
WebSocket handshakes per address with one (`services/collab/throttle.py`).
Behind a load balancer the gateway's limit is per instance: with N gateways an
attacker gets at most N times the limit, which is still a hard bound on online
guessing.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class RateLimiter:
    """At most `limit` hits per `window` seconds for each key."""

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._max_keys = max_keys
        self._hits: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float] | None:
        hits = self._hits.get(key)
        if hits is None:
            return None
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if not hits:
            del self._hits[key]
            return None
        return hits

    def retry_after(self, key: str) -> float | None:
        """Seconds until `key` may try again, or None when it may now."""
        if self.limit <= 0:
            return None
        now = self._clock()
        hits = self._recent(key, now)
        if hits is None or len(hits) < self.limit:
            return None
        return max(0.0, hits[0] + self.window - now)

    def hit(self, key: str) -> None:
        if self.limit <= 0:
            return
        now = self._clock()
        if len(self._hits) >= self._max_keys:
            self._sweep(now)
        hits = self._recent(key, now)
        if hits is None:
            hits = self._hits[key] = deque()
        hits.append(now)
        while len(hits) > self.limit:
            hits.popleft()

    def reset(self, key: str) -> None:
        self._hits.pop(key, None)

    def _sweep(self, now: float) -> None:
        for key in list(self._hits):
            self._recent(key, now)
        if len(self._hits) >= self._max_keys:
            self._hits.clear()

"""Handshake throttling: at most `WS_CONNECT_RATE_PER_ADDRESS` WebSocket handshakes
per client address per minute (the address of `shared/net.py`: behind a trusted
proxy, the forwarded one). A refused handshake is closed with 1013 after the
upgrade (`services/collab/handler.py`), which the stock client retries with backoff.

One object, swapped by mode like the backplane: `MemoryThrottle` in single-instance
mode (the sliding window of `shared/ratelimit.py`), `RedisThrottle` in multi-instance
mode (a fixed window per address, opened by its first handshake, shared by every
instance: one INCR + PEXPIRE script call on `shared.redis_contract.throttle_key`).

When Redis is unreachable (or slower than `REDIS_TIMEOUT`) `RedisThrottle` fails
open: the handshake is admitted unchecked, `collab_throttle_unavailable_total`
counts it and a warning is logged once per outage. A Redis outage must not refuse
every client; the per-address connection cap still holds on each instance.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from services.collab.metrics import CollabMetrics
from shared.config import Settings
from shared.ratelimit import RateLimiter
from shared.redis_contract import throttle_key
from shared.redis_log import REDIS_ERRORS, RedisClient, create_redis

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60.0
REDIS_TIMEOUT = 1.0  # the most a handshake waits for the shared count

# KEYS[1]: the address's counter; ARGV[1]: the window in ms. Returns the count so far.
_HIT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
"""


class HandshakeThrottle(Protocol):
    """Counts a handshake from `address`; False when the address is over its rate."""

    async def allow(self, address: str) -> bool: ...

    async def close(self) -> None: ...


class MemoryThrottle:
    """This process's handshakes only; a limit of 0 admits everything."""

    def __init__(
        self,
        limit: int,
        window: float = WINDOW_SECONDS,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limiter = RateLimiter(limit, window, clock=clock)

    async def allow(self, address: str) -> bool:
        if self._limiter.retry_after(address) is not None:
            return False
        self._limiter.hit(address)
        return True

    async def close(self) -> None:
        """Nothing to release."""


class RedisThrottle:
    """Every instance's handshakes, counted in Redis; fails open when Redis does not answer."""

    def __init__(
        self,
        redis: RedisClient,
        limit: int,
        metrics: CollabMetrics,
        window: float = WINDOW_SECONDS,
    ) -> None:
        self._redis = redis
        self._limit = limit
        self._window_ms = int(window * 1000)
        self._metrics = metrics
        self._hit = redis.register_script(_HIT)
        self._failing = False

    async def allow(self, address: str) -> bool:
        try:
            async with asyncio.timeout(REDIS_TIMEOUT):
                count = int(await self._hit(keys=[throttle_key(address)], args=[self._window_ms]))
        except REDIS_ERRORS as exc:
            self._metrics.throttle_unavailable.inc()
            if not self._failing:
                log.warning("handshake throttling unavailable, admitting unchecked: %r", exc)
            self._failing = True
            return True
        if self._failing:
            log.info("handshake throttling back")
            self._failing = False
        return count <= self._limit

    async def close(self) -> None:
        await self._redis.aclose()


def create_throttle(settings: Settings, metrics: CollabMetrics) -> HandshakeThrottle:
    """In memory for a single instance (or when disabled), in Redis for several."""
    limit = settings.ws_connect_rate_per_address
    if settings.multi_instance and limit > 0:
        return RedisThrottle(create_redis(settings), limit, metrics)
    return MemoryThrottle(limit)

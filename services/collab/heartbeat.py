"""One sweeper for all connections: ping the quiet ones, close the dead ones.

A task per connection would cost memory on idle sockets; one loop over all
of them every few seconds does the same job. Any frame from the client
(including a pong) counts as a sign of life.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from services.collab.close_codes import CloseCode
from services.collab.connection import Connection

log = logging.getLogger(__name__)


async def run_heartbeat(
    connections: Callable[[], Iterable[Connection]],
    *,
    ping_interval: float,
    pong_timeout: float,
) -> None:
    """Forever: ping connections silent for `ping_interval`, close those silent for `pong_timeout`."""
    tick = max(0.05, min(ping_interval, pong_timeout) / 4)
    while True:
        await asyncio.sleep(tick)
        now = time.monotonic()
        for conn in connections():
            silent = now - conn.last_seen
            if silent > pong_timeout:
                log.info("heartbeat timeout", extra={"connection": conn.id})
                conn.close_soon(CloseCode.HEARTBEAT_TIMEOUT, "heartbeat timeout")
            elif silent > ping_interval and now - conn.last_ping > ping_interval:
                conn.last_ping = now
                conn.ping()

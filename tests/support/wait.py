"""Bounded waits for tests: poll a condition instead of sleeping a fixed time.

Use an event (`YClient.wait_until`, `NodeYClient` events, `asyncio.Event`) when there is
one; `eventually` is for state nothing announces (a metric, a database row, a process).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")


@overload
async def eventually(
    predicate: Callable[[], Awaitable[T]], timeout: float = ..., *, what: str = ..., interval: float = ...
) -> T: ...
@overload
async def eventually(
    predicate: Callable[[], T], timeout: float = ..., *, what: str = ..., interval: float = ...
) -> T: ...
async def eventually(
    predicate: Callable[[], Any],
    timeout: float = 10.0,
    *,
    what: str = "",
    interval: float = 0.05,
) -> Any:
    """Call `predicate` (plain or async) until it returns something truthy; return that.

    Raises AssertionError naming `what` (or the predicate) after `timeout` seconds; the
    predicate is always tried once more at the deadline, so a slow poll cannot miss it.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"not true within {timeout} s: {what or predicate!r}")
        await asyncio.sleep(min(interval, max(0.0, deadline - time.monotonic())))

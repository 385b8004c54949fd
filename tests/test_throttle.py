"""The single-instance handshake throttle's window (pure: a fake clock, no servers)."""

from __future__ import annotations

import pytest

from services.collab.throttle import MemoryThrottle

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_the_n_plus_first_handshake_in_a_window_is_refused_per_address() -> None:
    clock = Clock()
    throttle = MemoryThrottle(3, 60.0, clock=clock)
    assert [await throttle.allow("a") for _ in range(4)] == [True, True, True, False]
    assert await throttle.allow("b")


async def test_the_window_slides() -> None:
    clock = Clock()
    throttle = MemoryThrottle(2, 60.0, clock=clock)
    assert await throttle.allow("a")
    clock.now += 30
    assert await throttle.allow("a")
    assert not await throttle.allow("a")
    clock.now += 30.5  # the first handshake has left the window, the second not
    assert await throttle.allow("a")
    assert not await throttle.allow("a")


async def test_a_rate_of_zero_admits_everything() -> None:
    throttle = MemoryThrottle(0)
    assert all([await throttle.allow("a") for _ in range(1000)])

"""Token expiry: one timer for every socket, and a socket closed with 4401 at its `exp`."""

from __future__ import annotations

import asyncio
import time

import pytest

from services.collab.expiry import ExpiryTimer
from shared.config import Settings
from tests.support.app_server import InProcessServer
from tests.support.yclient import YClient


@pytest.mark.unit
async def test_sockets_expire_in_order_unless_forgotten() -> None:
    timer, expired = ExpiryTimer(), asyncio.Queue[int]()
    now = time.time()
    for key, delay in ((1, 0.15), (2, 0.05), (3, 0.10), (4, 0.0)):
        timer.watch(key, now + delay, lambda key=key: expired.put_nowait(key))  # type: ignore[misc]
    timer.forget(3)
    got = [await asyncio.wait_for(expired.get(), 1) for _ in range(3)]
    assert got == [4, 2, 1] and len(timer) == 0


@pytest.mark.unit
def test_forgotten_entries_do_not_pile_up() -> None:
    timer = ExpiryTimer()
    far = time.time() + 86_400

    async def churn() -> None:
        for key in range(10_000):
            timer.watch(key, far, lambda: None)
            timer.forget(key)

    asyncio.run(churn())
    assert len(timer) == 0 and len(timer._heap) <= 64 + 1


@pytest.mark.integration
async def test_a_socket_is_closed_with_4401_when_its_token_expires(
    settings: Settings, project: str
) -> None:
    from services.embedded import create_app

    srv = await InProcessServer(create_app, settings).start()
    try:
        await srv.grant(project, "brief")
        short = srv.token("brief", ttl=2)
        async with await YClient.connect(srv.ws_url, project, short) as client:
            assert await client.wait_closed(10) == 4401
    finally:
        await srv.stop()

"""A real webhook receiver for tests: an aiohttp app on loopback recording every request."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web

from shared.webhooks.signature import HEADER, verify


class Receiver:
    """An HTTP endpoint that records every request; `status` is what it answers. While
    `hold` is set, a request is recorded, then left unanswered until `release()` (or until
    the sender gives up: its connection drops). With `answer_bytes`, a 200 comes with a
    body of that many bytes, streamed (or less, if the sender stops reading)."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.status = 200
        self.hold = False
        self.answer_bytes = 0
        self.answered_bytes = 0  # of the last streamed answer, as far as the sender took it
        self._released = asyncio.Event()
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> Receiver:
        async def handle(request: web.Request) -> web.StreamResponse:
            self.requests.append((dict(request.headers), await request.read()))
            if self.hold:
                await self._released.wait()
            if not self.answer_bytes:
                return web.Response(status=self.status)
            response = web.StreamResponse(status=self.status)
            await response.prepare(request)
            chunk, self.answered_bytes = b"x" * 65536, 0
            try:
                while self.answered_bytes < self.answer_bytes:
                    await response.write(chunk)
                    self.answered_bytes += len(chunk)
            except (ConnectionError, RuntimeError):
                return response  # the sender stopped reading and closed
            await response.write_eof()
            return response

        app = web.Application()
        app.router.add_post("/hook", handle)
        self.runner = web.AppRunner(app, shutdown_timeout=1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    def release(self) -> None:
        """Answer the held requests, and the next ones at once."""
        self.hold = False
        self._released.set()

    async def stop(self) -> None:
        self.release()
        if self.runner is not None:
            await self.runner.cleanup()

    def events(self, name: str) -> list[dict[str, Any]]:
        """The bodies of the requests for event `name`, in arrival order."""
        return [json.loads(body) for headers, body in self.requests if headers["X-Exe-Event"] == name]

    def signed(self, secret: str) -> bool:
        """Whether every request so far carries a valid signature with `secret`."""
        return all(verify(secret, headers[HEADER], body, now=time.time()) for headers, body in self.requests)


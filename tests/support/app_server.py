"""Running the project's aiohttp apps in the test process on a free port."""

from __future__ import annotations

from typing import Callable

from aiohttp import web

from shared.auth import mint_token
from shared.config import Settings
from tests.support.servers import free_port


class InProcessServer:
    """An app served on 127.0.0.1:<free port>; `stop()` is a graceful shutdown."""

    def __init__(
        self,
        build_app: Callable[[Settings], web.Application],
        settings: Settings,
        *,
        port: int | None = None,
    ) -> None:
        self.build_app = build_app
        self.settings = settings.with_overrides(host="127.0.0.1", port=port or free_port())
        self.runner: web.AppRunner | None = None
        self.app: web.Application | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.settings.port}/yjs"

    def token(self, user_id: str | int = "1", *, ttl: int = 3600, **claims: object) -> str:
        token, _ = mint_token(self.settings.jwt_secret, user_id, ttl_seconds=ttl, **claims)  # type: ignore[arg-type]
        return token

    async def start(self) -> "InProcessServer":
        self.app = self.build_app(self.settings)
        self.runner = web.AppRunner(self.app, shutdown_timeout=5.0)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.settings.port).start()
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
            self.app = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()

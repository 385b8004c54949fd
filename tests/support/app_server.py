"""Running the project's aiohttp apps in the test process on a free port."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from shared.auth import mint_token
from shared.config import Settings
from stack.processes import free_port


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
        self.users: dict[str, int] = {}  # names given to `grant` -> user ids

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.settings.port}/yjs"

    def token(self, user_id: str | int = "1", *, ttl: int = 3600, **claims: object) -> str:
        """A token for `user_id`; a name passed to `grant` before stands for that user's id."""
        user_id = self.users.get(str(user_id), user_id)
        token, _ = mint_token(self.settings.jwt_secret, user_id, ttl_seconds=ttl, **claims)  # type: ignore[arg-type]
        return token

    @property
    def sessionmaker(self):  # type: ignore[no-untyped-def]
        from shared.db.resources import DATABASE

        assert self.app is not None, "server not started"
        return self.app[DATABASE].sessionmaker

    async def grant(self, project: str, user: str | int = "1", role: str = "editor") -> str:
        """Make `user` a member of `project` with `role`; return a token for them.

        `project` is a room name (`project-<uuid>`) or a uuid; the project and
        the user (email `<user>@test.example.com`) are created when missing.
        Collab only admits members, so a test does this before connecting::

            token = await server.grant(project, "alice")            # editor
            viewer = await server.grant(project, "bob", "viewer")
        """
        from tests.support.fixtures_data import create_project, create_user, make_member

        user_id = await create_user(self.sessionmaker, str(user))
        self.users[str(user)] = user_id
        await create_project(self.sessionmaker, project)
        await make_member(self.sessionmaker, project, user_id, role)
        self._invalidate(project)
        return self.token(user_id)

    async def revoke(self, project: str, user: str | int) -> None:
        """Remove `user`'s membership of `project` (their connections close within seconds)."""
        from tests.support.fixtures_data import remove_member

        await remove_member(self.sessionmaker, project, self.users.get(str(user), int(user)))
        self._invalidate(project)

    def _invalidate(self, project: str) -> None:
        from shared.access_db import ACCESS
        from tests.support.fixtures_data import bare_uuid

        access = self.app.get(ACCESS) if self.app is not None else None
        if access is not None:
            access.invalidate(bare_uuid(project))

    async def start(self) -> InProcessServer:
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

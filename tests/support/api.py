"""A small HTTP client for the gateway API in tests, and a gateway run as a real process."""

from __future__ import annotations

import json as jsonlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import EllipsisType
from typing import TYPE_CHECKING, Any, Self

import aiohttp
from multidict import CIMultiDict

from tests.support.processes import ServiceProcess

if TYPE_CHECKING:
    from tests.support.app_server import InProcessServer

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return jsonlib.loads(self.body)

    @property
    def error_code(self) -> str:
        return self.json["error"]["code"]

    def is_json_error(self) -> bool:
        try:
            body = self.json
        except ValueError:
            return False
        error = body.get("error") if isinstance(body, dict) else None
        return (
            isinstance(error, dict)
            and isinstance(error.get("code"), str)
            and isinstance(error.get("message"), str)
            and self.headers.get("Content-Type", "").startswith("application/json")
        )


@dataclass
class Api:
    """`await api.get("/api/me", token=t)` -> Reply. Never raises for HTTP statuses."""

    base_url: str
    token: str | None = None
    _session: aiohttp.ClientSession | None = field(default=None, repr=False)

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def with_token(self, token: str | None) -> Api:
        return Api(self.base_url, token, self._session)

    async def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None | EllipsisType = ...,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> Reply:
        assert self._session is not None, "use `async with Api(...)`"
        all_headers = dict(headers or {})
        chosen = self.token if token is ... else token
        if chosen is not None and "Authorization" not in all_headers:
            all_headers["Authorization"] = f"Bearer {chosen}"
        async with self._session.request(
            method, self.base_url + path, headers=all_headers, **kwargs
        ) as resp:
            body = await resp.read()
            return Reply(resp.status, CIMultiDict(resp.headers), body)

    async def get(self, path: str, **kwargs: Any) -> Reply:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> Reply:
        return await self.request("POST", path, **kwargs)

    async def put(self, path: str, **kwargs: Any) -> Reply:
        return await self.request("PUT", path, **kwargs)

    async def patch(self, path: str, **kwargs: Any) -> Reply:
        return await self.request("PATCH", path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> Reply:
        return await self.request("DELETE", path, **kwargs)


class GatewayProcess(ServiceProcess):
    """`python -m services.gateway` (or another service module) as a child process."""

    def __init__(
        self, env: Mapping[str, str], *, module: str = "services.gateway", log_path: Path
    ) -> None:
        super().__init__(module, env, log_path.parent, log=log_path)

    @property
    def url(self) -> str:
        return self.http_url


async def editor_project(srv: InProcessServer) -> tuple[str, Api]:
    """A new project with a user "editor" as its editor: (room name, an open Api client as
    that editor, its token in `api.token`); the caller closes the client."""
    project = str(uuid.uuid4())
    api = Api(srv.http_url, await srv.grant(project, "editor", "editor"))
    await api.__aenter__()
    return f"project-{project}", api

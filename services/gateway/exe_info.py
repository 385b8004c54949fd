"""Two small routes eXeLearning's editor calls: the app version and the user's storage.

- `GET /api/version` (public): `{version}`, `APP_VERSION` or this package's version. The editor
  writes it into a document's metadata (`exelearning_version`) before each save.
- `GET /api/user/storage`: `{success, data: {quota_mb, used_bytes, used_mb}}`, where `used_bytes`
  is the size of the assets of the live projects the caller owns (what eXeLearning counts) and
  `quota_mb` is null: there is no per-user quota here, the limit is per project
  (`MAX_PROJECT_BYTES`, enforced at upload), and the editor skips its quota check on null.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version

from aiohttp import web
from pydantic import Field

from services.gateway.context import caller_user_id, gateway, sessionmaker
from services.gateway.quota import owned_asset_bytes
from services.gateway.schema import (
    PUBLIC,
    Reply,
    ReplyBody,
    Routes,
    reply,
)
from services.gateway.schema import (
    add_routes as add_declared_routes,
)
from services.gateway.security import require_identity


class AppVersion(ReplyBody):
    version: str


class StorageUse(ReplyBody):
    quota_mb: int | None = Field(description="null: no per-user quota")
    used_bytes: int = Field(description="assets of the live projects the caller owns")
    used_mb: int


class UserStorage(ReplyBody):
    success: bool
    data: StorageUse


routes = Routes(tags=["exelearning"])


def app_version(configured: str) -> str:
    """`configured` (APP_VERSION) when set, else the installed package's version."""
    if configured:
        return configured
    try:
        return package_version("exe-collab")
    except PackageNotFoundError:  # running from a tree that was never installed
        return "0.0.0"


@routes.get(
    "/api/version",
    "The application version (APP_VERSION), for eXeLearning's editor",
    replies={200: Reply("Version", AppVersion)},
    security=PUBLIC,
)
async def version(request: web.Request) -> web.Response:
    return reply(AppVersion(version=app_version(gateway(request).settings.app_version)))


@routes.get(
    "/api/user/storage",
    "The caller's asset storage, as eXeLearning's editor reads it",
    replies={200: Reply("Storage", UserStorage)},
    errors=(401,),
)
async def user_storage(request: web.Request) -> web.Response:
    user_id = caller_user_id(require_identity(request))
    async with sessionmaker(request)() as session:
        used = await owned_asset_bytes(session, user_id)
    use = StorageUse(quota_mb=None, used_bytes=used, used_mb=round(used / 2**20))
    return reply(UserStorage(success=True, data=use))


def add_routes(app: web.Application) -> None:
    add_declared_routes(app, routes)

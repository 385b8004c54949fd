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

from services.gateway.context import caller_user_id, gateway, sessionmaker
from services.gateway.quota import owned_asset_bytes
from services.gateway.security import require_identity


def app_version(configured: str) -> str:
    """`configured` (APP_VERSION) when set, else the installed package's version."""
    if configured:
        return configured
    try:
        return package_version("exe-collab")
    except PackageNotFoundError:  # running from a tree that was never installed
        return "0.0.0"


async def version(request: web.Request) -> web.Response:
    return web.json_response({"version": app_version(gateway(request).settings.app_version)})


async def user_storage(request: web.Request) -> web.Response:
    user_id = caller_user_id(require_identity(request))
    async with sessionmaker(request)() as session:
        used = await owned_asset_bytes(session, user_id)
    return web.json_response(
        {"success": True, "data": {"quota_mb": None, "used_bytes": used, "used_mb": round(used / 2**20)}}
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/version", version)
    app.router.add_get("/api/user/storage", user_storage)

"""Asset routes: list, download (Range, If-Range, ETag), delete.

Viewers list and download; editors and owners delete. Uploads are in
`exe_assets.py` (multipart, by name or by eXeLearning's client id), `tus.py`
(resumable) and `exe_chunks.py` (eXeLearning's chunks); all end in the same
rename-into-place step (`asset_store.place_asset`).
"""

from __future__ import annotations

import logging

from aiohttp import web
from pydantic import Field
from sqlalchemy import select

from services.gateway.asset_store import AssetOut, AssetVolume, delete_asset, validate_name
from services.gateway.context import Need, authorize, sessionmaker
from services.gateway.errors import not_found
from services.gateway.exe_models import ExeAsset
from services.gateway.exe_rules import content_disposition, header_value
from services.gateway.exe_store import find_by_key
from services.gateway.file_response import AssetFileResponse
from services.gateway.projects import PROJECT_ERRORS, ProjectPath
from services.gateway.schema import Reply, ReplyBody, Routes, reply
from services.gateway.schema import add_routes as add_declared_routes
from shared.db.models import Asset

log = logging.getLogger(__name__)

ASSET_VOLUME: web.AppKey[AssetVolume] = web.AppKey("asset_volume", AssetVolume)


class AssetPath(ProjectPath):
    name: str = Field(
        description="The asset's name (checked by `validate_name`: 400 `invalid_name`)"
    )


class AssetList(ReplyBody):
    """This API's list (`assets`) beside eXeLearning's (`success`, `data`)."""

    assets: list[AssetOut]
    success: bool
    data: list[ExeAsset]


routes = Routes(tags=["assets"])


@routes.get(
    "/api/projects/{uuid}/assets",
    "The project's assets (viewer+)",
    path_params=ProjectPath,
    replies={200: Reply("Assets", AssetList)},
    errors=PROJECT_ERRORS,
)
async def list_assets(request: web.Request) -> web.Response:
    auth = await authorize(request, Need.VIEW)
    async with sessionmaker(request)() as session:
        assets = (
            await session.scalars(
                select(Asset).where(Asset.project_id == auth.project.id).order_by(Asset.name)
            )
        ).all()
    return reply(
        AssetList(
            assets=[AssetOut.of(a) for a in assets],
            success=True,
            data=[ExeAsset.of(a) for a in assets],
        )
    )


def _name_param(request: web.Request) -> str:
    return validate_name(request.match_info["name"])


@routes.get(
    "/api/projects/{uuid}/assets/{name}",
    "Download (viewer+); supports Range, If-Range, ETag and conditional requests",
    path_params=AssetPath,
    replies={
        200: Reply(
            "The file, with its stored content type",
            content="*/*",
            headers={"ETag": "the file's entity tag"},
        ),
        206: Reply("The requested range", content="*/*"),
        304: Reply("Not modified"),
        412: Reply("If-Match failed"),
        416: Reply("Range not satisfiable"),
    },
    errors=PROJECT_ERRORS,
)
async def download_asset(request: web.Request) -> web.StreamResponse:
    """The bytes of the asset `{name}` names: a client id, else a name, else a numeric id."""
    auth = await authorize(request, Need.VIEW)
    key = _name_param(request)
    async with sessionmaker(request)() as session:
        asset = await find_by_key(session, auth.project.id, key)
    return serve_asset(request, auth.project_uuid, asset)


def serve_asset(request: web.Request, project_uuid: str, asset: Asset | None) -> AssetFileResponse:
    """The asset's file (Range, If-Range, ETag), with its metadata in the headers eXeLearning's
    editor reads (`X-Filename`, `X-Folder-Path`, `X-Original-Mime`, `X-File-Size`)."""
    if asset is None:
        raise not_found("no such asset")
    path = request.app[ASSET_VOLUME].absolute(asset.path)
    if not path.is_file():
        log.error("asset file missing", extra={"project": project_uuid, "path": asset.path})
        raise not_found("no such asset")
    return AssetFileResponse(
        path,
        headers={
            "Content-Type": asset.content_type,
            "Content-Disposition": content_disposition(asset.name),
            "X-Content-Type-Options": "nosniff",
            # user content must not run scripts in the API's origin
            "Content-Security-Policy": "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:",
            "Cache-Control": "private, no-cache",
            "X-Asset-Sha256": asset.sha256,
            "X-Filename": header_value(asset.name),
            "X-Folder-Path": header_value(asset.folder_path or ""),
            "X-Original-Mime": asset.content_type,
            "X-File-Size": str(asset.size),
        },
    )


@routes.delete(
    "/api/projects/{uuid}/assets/{name}",
    "Delete (editor+)",
    path_params=AssetPath,
    replies={204: Reply("Deleted")},
    errors=PROJECT_ERRORS,
)
async def remove_asset(request: web.Request) -> web.Response:
    auth = await authorize(request, Need.EDIT)
    name = _name_param(request)
    await delete_asset(sessionmaker(request), request.app[ASSET_VOLUME], auth.project, name)
    log.info("asset deleted", extra={"project": auth.project_uuid, "user": auth.user_id})
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    add_declared_routes(app, routes)

"""Asset routes: list, multipart upload, download (Range, If-Range, ETag), delete.

Viewers list and download; editors and owners upload and delete. Resumable
uploads (tus) are in `tus.py` and end in the same `commit_asset` step.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from urllib.parse import quote

from aiohttp import BodyPartReader, web
from pydantic import BaseModel, Field
from sqlalchemy import select

from services.gateway.asset_store import (
    AssetVolume,
    commit_asset,
    content_type_for,
    delete_asset,
    stage_stream,
    validate_name,
)
from services.gateway.context import Need, authorize, gateway, sessionmaker
from services.gateway.errors import ApiError, bad_request, not_found, too_large
from services.gateway.file_response import AssetFileResponse
from services.gateway.projects import PROJECT_ERRORS, ProjectPath
from services.gateway.quota import (
    MULTIPART_LEASE_SECONDS,
    UploadLimits,
    released_on_error,
    reserve,
)
from services.gateway.schema import (
    Multipart,
    Query,
    Reply,
    ReplyBody,
    Routes,
    Timestamp,
    reply,
)
from services.gateway.schema import add_routes as add_declared_routes
from shared.db.models import Asset

log = logging.getLogger(__name__)

ASSET_VOLUME: web.AppKey[AssetVolume] = web.AppKey("asset_volume", AssetVolume)
MULTIPART_OVERHEAD = 64 * 1024
READ_CHUNK = 256 * 1024


class AssetPath(ProjectPath):
    name: str = Field(
        description="The asset's name (checked by `validate_name`: 400 `invalid_name`)"
    )


class UploadName(Query):
    name: str | None = Field(None, description="The asset name (default: the part's filename)")


class AssetUpload(BaseModel):
    """The multipart form: the file is the part named `file`."""

    file: bytes


class AssetOut(ReplyBody):
    name: str
    size: int
    sha256: str = Field(pattern="^[0-9a-f]{64}$")
    content_type: str
    created_at: Timestamp | None

    @classmethod
    def of(cls, asset: Asset) -> AssetOut:
        return cls(
            name=asset.name,
            size=asset.size,
            sha256=asset.sha256,
            content_type=asset.content_type,
            created_at=asset.created_at,
        )


class AssetList(ReplyBody):
    assets: list[AssetOut]


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
    return reply(AssetList(assets=[AssetOut.of(a) for a in assets]))


async def _part_chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(READ_CHUNK):
        yield chunk


@contextmanager
def _multipart_errors() -> Iterator[None]:
    """aiohttp's multipart reader fails with these on a malformed body: a 400."""
    try:
        yield
    except (ValueError, AssertionError, RuntimeError, LookupError) as exc:
        raise bad_request(f"malformed multipart body: {type(exc).__name__}") from None


@routes.post(
    "/api/projects/{uuid}/assets",
    "Upload an asset as multipart/form-data, part 'file' (editor+); replaces one of the same name",
    path_params=ProjectPath,
    query=UploadName,
    body=Multipart(AssetUpload),
    replies={200: Reply("Replaced", AssetOut), 201: Reply("Stored", AssetOut)},
    errors=(*PROJECT_ERRORS, 413, 415, 429),
)
async def upload_asset(request: web.Request, query: UploadName) -> web.Response:
    auth = await authorize(request, Need.EDIT)
    settings = gateway(request).settings
    if not request.content_type.startswith("multipart/form-data"):
        raise ApiError(
            415, "upload with multipart/form-data (a 'file' part), or use the tus endpoint"
        )
    if (
        request.content_length is not None
        and request.content_length > settings.max_asset_bytes + MULTIPART_OVERHEAD
    ):
        raise too_large(f"the file is larger than the limit of {settings.max_asset_bytes} bytes")
    volume = request.app[ASSET_VOLUME]
    with _multipart_errors():
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                raise bad_request("the form has no 'file' part")
            if isinstance(part, BodyPartReader) and part.name == "file":
                break
            await part.release()
        name = validate_name(part.filename if query.name is None else query.name)
    # The file is at most the body (chunked: at most the per-file limit).
    declared = min(request.content_length or settings.max_asset_bytes, settings.max_asset_bytes)
    reservation = secrets.token_hex(16)
    await reserve(
        sessionmaker(request),
        reservation,
        auth.project.id,
        auth.user_id,
        name,
        declared,
        UploadLimits.from_settings(settings),
        MULTIPART_LEASE_SECONDS,
    )
    async with released_on_error(sessionmaker(request), reservation):
        with _multipart_errors():
            staged = await stage_stream(volume, _part_chunks(part), settings.max_asset_bytes)
        asset, created = await commit_asset(
            sessionmaker(request),
            volume,
            auth.project,
            name,
            staged,
            content_type_for(name, part.headers.get("Content-Type")),
            settings.max_project_bytes,
            reservation,
        )
    gateway(request).metrics.asset_bytes.inc(asset.size)
    log.info(
        "asset stored",
        extra={"project": auth.project_uuid, "size": asset.size, "user": auth.user_id},
    )
    return reply(AssetOut.of(asset), status=201 if created else 200)


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
    auth = await authorize(request, Need.VIEW)
    name = _name_param(request)
    async with sessionmaker(request)() as session:
        asset = await session.scalar(
            select(Asset).where(Asset.project_id == auth.project.id, Asset.name == name)
        )
    if asset is None:
        raise not_found("no such asset")
    path = request.app[ASSET_VOLUME].absolute(asset.path)
    if not path.is_file():
        log.error("asset file missing", extra={"project": auth.project_uuid, "path": asset.path})
        raise not_found("no such asset")
    return AssetFileResponse(
        path,
        headers={
            "Content-Type": asset.content_type,
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(asset.name, safe='')}",
            "X-Content-Type-Options": "nosniff",
            # user content must not run scripts in the API's origin
            "Content-Security-Policy": "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:",
            "Cache-Control": "private, no-cache",
            "X-Asset-Sha256": asset.sha256,
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

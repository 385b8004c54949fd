"""Uploads, and eXeLearning's asset routes by client id (its editor calls these unchanged).

- `POST /api/projects/{uuid}/assets[?clientId=]`: multipart `file`, optional `clientId` and
  `folderPath` fields (before or after the file; the query's clientId wins). With a client id
  the upload is idempotent (`exe_store.commit_by_client_id`): 201 the first time, 200 with the
  same asset and nothing stored after. Without one it replaces the asset of its name
  (`?name=`, else the part's filename), as it always did.
- `GET|DELETE /api/projects/{uuid}/assets/by-client-id/{client_id}`, `DELETE .../assets/bulk`.
- `POST /api/projects/{uuid}/assets/sync` and `POST /api/upload-session/{token}/batch` (in
  `exe_sync.py`).

Every upload streams into a temporary file on the volume after reserving its declared length
against the project quota (`quota.reserve`), and ends in the rename into place.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field

from aiohttp import BodyPartReader, web
from pydantic import Field

from services.gateway.asset_store import (
    StagedFile,
    commit_asset,
    content_type_for,
    delete_where,
    discard,
    stage_stream,
    validate_name,
)
from services.gateway.assets import ASSET_VOLUME, serve_asset
from services.gateway.context import Authorized, Need, authorize, gateway, sessionmaker
from services.gateway.errors import bad_request
from services.gateway.exe_models import (
    AssetForm,
    AssetStored,
    BulkDelete,
    ClientIdPath,
    Deleted,
)
from services.gateway.exe_rules import (
    CLIENT_ID_PATTERN,
    client_id,
    folder_path,
)
from services.gateway.exe_store import commit_by_client_id, find_by_client_id
from services.gateway.forms import (
    form_parts,
    multipart_errors,
    part_chunks,
    read_text,
    require_multipart,
)
from services.gateway.projects import ProjectPath
from services.gateway.quota import MULTIPART_LEASE_SECONDS, UploadLimits, released_on_error, reserve
from services.gateway.schema import Handler, Multipart, Query, Reply, Routes, reply
from services.gateway.schema import add_routes as add_declared_routes
from shared.db.models import Asset

log = logging.getLogger(__name__)

MAX_FIELD_BYTES = 4096
ASSET_ERRORS = (400, 401, 403, 404)
BYTES_HEADERS = {
    "X-Filename": "The asset's name (non-ASCII percent-encoded)",
    "X-Folder-Path": "Its folder in eXeLearning's file manager (non-ASCII percent-encoded)",
    "X-Original-Mime": "Its content type",
    "X-File-Size": "Its size in bytes",
}


class UploadQuery(Query):
    clientId: str | None = Field(None, pattern=CLIENT_ID_PATTERN)
    # checked by asset_store.validate_name (its code: invalid_name), not here
    name: str | None = Field(None, description="Store under this name (no client id)")


@dataclass
class UploadForm:
    """What an upload's form held: the staged file (or the asset already stored under the
    client id known before it), the part's filename and type, and the text fields."""

    staged: StagedFile | None = None
    existing: Asset | None = None
    filename: str | None = None
    declared_type: str | None = None
    fields: dict[str, str] = field(default_factory=dict)

    def client(self, query: UploadQuery) -> str | None:
        raw = query.clientId or self.fields.get("clientId") or None
        return None if raw is None else client_id(raw)


routes = Routes(tags=["assets"])


async def _read_form(
    request: web.Request, auth: Authorized, query: UploadQuery, reservation: str
) -> UploadForm:
    """Read the form; the file part is staged after reserving its declared length, unless a
    client id known by then is stored already (then its bytes are skipped)."""
    form = UploadForm()
    try:
        with multipart_errors():
            async for part in form_parts(request):
                if part.name == "file" and form.staged is None and form.existing is None:
                    await _take_file(request, auth, query, reservation, form, part)
                elif part.name in ("clientId", "folderPath") and part.filename is None:
                    form.fields[part.name] = await read_text(part, MAX_FIELD_BYTES)
                else:
                    await part.release()
    except BaseException:
        discard(form.staged.path if form.staged else None)
        raise
    if form.staged is None and form.existing is None:
        raise bad_request("the form has no 'file' part")
    return form


async def _take_file(
    request: web.Request,
    auth: Authorized,
    query: UploadQuery,
    reservation: str,
    form: UploadForm,
    part: BodyPartReader,
) -> None:
    settings = gateway(request).settings
    form.filename = part.filename
    form.declared_type = part.headers.get("Content-Type")
    client = form.client(query)
    if client is not None:
        async with sessionmaker(request)() as session:
            form.existing = await find_by_client_id(session, auth.project.id, client)
        if form.existing is not None:
            await part.release()
            return
    chosen = query.name or form.filename
    name = validate_name(chosen) if chosen is not None or client is None else ""
    # The file is at most the body (chunked: at most the per-file limit).
    declared = min(request.content_length or settings.max_asset_bytes, settings.max_asset_bytes)
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
    form.staged = await stage_stream(
        request.app[ASSET_VOLUME], part_chunks(part), settings.max_asset_bytes
    )


@routes.post(
    "/api/projects/{uuid}/assets",
    "Upload an asset (editor+): multipart 'file', with eXeLearning's optional 'clientId' and "
    "'folderPath'. By client id it is idempotent; without one it replaces the asset of its name",
    path_params=ProjectPath,
    query=UploadQuery,
    body=Multipart(AssetForm),
    replies={
        201: Reply("Stored", AssetStored),
        200: Reply(
            "Stored already (same client id), or an asset of that name replaced", AssetStored
        ),
    },
    errors=(*ASSET_ERRORS, 409, 413, 415, 429),
)
async def upload_asset(request: web.Request, query: UploadQuery) -> web.Response:
    auth = await authorize(request, Need.EDIT)
    settings = gateway(request).settings
    require_multipart(
        request,
        settings.max_asset_bytes,
        "upload with multipart/form-data (a 'file' part), or use the tus endpoint",
    )
    reservation = secrets.token_hex(16)
    async with released_on_error(sessionmaker(request), reservation):
        form = await _read_form(request, auth, query, reservation)
        if form.existing is not None:
            return reply(AssetStored.of(form.existing))
        staged = form.staged
        assert staged is not None  # _read_form has one or the other
        try:
            client = form.client(query)
            folder = folder_path(form.fields.get("folderPath"))
            name = None if client is not None else validate_name(query.name or form.filename)
        except BaseException:
            discard(staged.path)
            raise
        content_type = content_type_for(name or form.filename or "", form.declared_type)
        if client is not None:
            asset, created = await commit_by_client_id(
                sessionmaker(request),
                request.app[ASSET_VOLUME],
                auth.project,
                client,
                form.filename,
                folder,
                staged,
                content_type,
                settings.max_project_bytes,
                reservation,
            )
        else:
            assert name is not None
            asset, created = await commit_asset(
                sessionmaker(request),
                request.app[ASSET_VOLUME],
                auth.project,
                name,
                staged,
                content_type,
                settings.max_project_bytes,
                reservation,
            )
    if created or client is None:
        gateway(request).metrics.asset_bytes.inc(asset.size)
    log.info(
        "asset stored",
        extra={"project": auth.project_uuid, "size": asset.size, "user": auth.user_id},
    )
    return reply(AssetStored.of(asset), status=201 if created else 200)


@routes.get(
    "/api/projects/{uuid}/assets/by-client-id/{client_id}",
    "An asset's bytes by eXeLearning's client id (viewer+), with its metadata in headers",
    path_params=ClientIdPath,
    replies={
        200: Reply("The file, with its stored content type", content="*/*", headers=BYTES_HEADERS),
        206: Reply("The requested range", content="*/*", headers=BYTES_HEADERS),
    },
    errors=ASSET_ERRORS,
)
async def download_by_client_id(request: web.Request) -> web.StreamResponse:
    auth = await authorize(request, Need.VIEW)
    async with sessionmaker(request)() as session:
        asset = await find_by_client_id(session, auth.project.id, request.match_info["client_id"])
    return serve_asset(request, auth.project_uuid, asset)


async def _delete_client_ids(request: web.Request, client_ids: list[str]) -> web.Response:
    auth = await authorize(request, Need.EDIT)
    deleted = 0
    if client_ids:
        deleted = await delete_where(
            sessionmaker(request),
            request.app[ASSET_VOLUME],
            auth.project.id,
            Asset.client_id.in_(client_ids),
        )
    log.info(
        "assets deleted",
        extra={"project": auth.project_uuid, "user": auth.user_id, "count": deleted},
    )
    return reply(Deleted(success=True, deleted=deleted))


@routes.delete(
    "/api/projects/{uuid}/assets/by-client-id/{client_id}",
    "Delete the asset with this client id (editor+); none is not an error (deleted: 0)",
    path_params=ClientIdPath,
    replies={200: Reply("Deleted", Deleted)},
    errors=ASSET_ERRORS,
)
async def delete_by_client_id(request: web.Request) -> web.Response:
    return await _delete_client_ids(request, [request.match_info["client_id"]])


@routes.delete(
    "/api/projects/{uuid}/assets/bulk",
    "Delete the assets with these client ids (editor+)",
    path_params=ProjectPath,
    body=BulkDelete,
    replies={200: Reply("Deleted", Deleted)},
    errors=(*ASSET_ERRORS, 413),
)
async def delete_bulk(request: web.Request, body: BulkDelete) -> web.Response:
    return await _delete_client_ids(request, list(dict.fromkeys(body.clientIds)))


# Paths beside `/assets/{name}` (which matches them too): any other method is a 405 naming
# theirs, not a fall-through to the download route.
SHADOWING = {
    "/api/projects/{uuid}/assets/bulk": ("DELETE",),
    "/api/projects/{uuid}/assets/sync": ("POST",),
    "/api/projects/{uuid}/assets/upload-chunk": ("POST",),
}


def _only(methods: tuple[str, ...]) -> Handler:
    async def method_not_allowed(request: web.Request) -> web.StreamResponse:
        raise web.HTTPMethodNotAllowed(request.method, methods)

    return method_not_allowed


def add_routes(app: web.Application) -> None:
    add_declared_routes(app, routes)


def add_method_fallbacks(app: web.Application) -> None:
    """After the routes of these paths, before `assets.add_routes` (`/assets/{name}`)."""
    for path, methods in SHADOWING.items():
        app.router.add_route("*", path, _only(methods))

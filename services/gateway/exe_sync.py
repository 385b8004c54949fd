"""eXeLearning's batch uploads: `POST …/assets/sync` and `POST /api/upload-session/{token}/batch`.

Both take multipart repeated `files` and one `metadata` JSON list (`[{clientId, filename,
mimeType, contentHash?, folderPath?}]`), matched by position, in any order of parts; at most
`MAX_SYNC_FILES` files, metadata at most `MAX_METADATA_BYTES`, the body at most `MAX_ASSET_BYTES`
(eXeLearning's editor sends batches of at most 20 MB). The request reserves its length against
the quota once; each file is then committed by its client id like an upload, and a file that
fails (bad metadata, too large, over the quota, no name free) is reported in `results`, not
fatal. The batch route authenticates with its upload session alone (`X-Upload-Session`, equal
to the path's token, minted by a collab instance for one user and project), and the user's
current role must still allow uploads.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass

from aiohttp import web
from pydantic import ValidationError

from services.gateway.asset_store import (
    StagedFile,
    content_type_for,
    discard,
    stage_stream,
    validate_name,
)
from services.gateway.assets import ASSET_VOLUME
from services.gateway.context import (
    Authorized,
    Need,
    authorize,
    authorize_as,
    gateway,
    sessionmaker,
)
from services.gateway.errors import ApiError, bad_request, unauthorized
from services.gateway.exe_models import FileMeta, FileResult, SyncForm, SyncResult
from services.gateway.exe_rules import client_id, folder_path
from services.gateway.exe_store import commit_by_client_id
from services.gateway.forms import (
    form_parts,
    multipart_errors,
    part_chunks,
    read_text,
    require_multipart,
)
from services.gateway.projects import ProjectPath
from services.gateway.quota import MULTIPART_LEASE_SECONDS, UploadLimits, release, reserve
from services.gateway.schema import PUBLIC, Multipart, Path, Reply, Routes, error_message, reply
from services.gateway.schema import add_routes as add_declared_routes
from shared.auth import Identity, TokenError
from shared.upload_sessions import verify_upload_session

log = logging.getLogger(__name__)

MAX_SYNC_FILES = 200
MAX_METADATA_BYTES = 1024 * 1024
SESSION_HEADER = "X-Upload-Session"


@dataclass
class Received:
    """One `files` part: staged, or the reason it could not be."""

    filename: str | None
    declared_type: str | None
    staged: StagedFile | None = None
    error: str | None = None

    def discard(self) -> None:
        discard(self.staged.path if self.staged else None)


def _discard_all(files: list[Received]) -> None:
    for received in files:
        received.discard()


class SessionPath(Path):
    token: str


routes = Routes(tags=["assets"])


async def _read_batch(
    request: web.Request, auth: Authorized, reservation: str
) -> tuple[list[Received], str]:
    """The staged files and the metadata text. The first file reserves the body's length."""
    settings = gateway(request).settings
    declared = min(request.content_length or settings.max_asset_bytes, settings.max_asset_bytes)
    files: list[Received] = []
    metadata: str | None = None
    total = 0
    try:
        with multipart_errors():
            async for part in form_parts(request):
                if part.name == "files":
                    if len(files) >= MAX_SYNC_FILES:
                        raise bad_request(f"at most {MAX_SYNC_FILES} files a request")
                    if not files:
                        await reserve(
                            sessionmaker(request),
                            reservation,
                            auth.project.id,
                            auth.user_id,
                            "",
                            declared,
                            UploadLimits.from_settings(settings),
                            MULTIPART_LEASE_SECONDS,
                        )
                    received = Received(part.filename, part.headers.get("Content-Type"))
                    files.append(received)
                    try:
                        received.staged = await stage_stream(
                            request.app[ASSET_VOLUME],
                            part_chunks(part),
                            min(settings.max_asset_bytes, declared - total),
                        )
                        total += received.staged.size
                    except ApiError as exc:  # too large: this file fails, the others go on
                        received.error = exc.message
                        await part.release()
                elif part.name == "metadata" and metadata is None:
                    metadata = await read_text(part, MAX_METADATA_BYTES)
                else:
                    await part.release()
    except BaseException:
        _discard_all(files)
        raise
    if metadata is None:
        _discard_all(files)
        raise bad_request("the form has no 'metadata' part")
    return files, metadata


def _entries(metadata: str) -> list[object]:
    try:
        entries = json.loads(metadata)
    except ValueError:
        raise bad_request("'metadata' must be a JSON list") from None
    if not isinstance(entries, list):
        raise bad_request("'metadata' must be a JSON list")
    return entries


async def _commit(
    request: web.Request, auth: Authorized, reservation: str, received: Received, entry: object
) -> FileResult:
    """Store one file by its metadata entry; a failure is its result."""
    settings = gateway(request).settings
    raw_id = entry.get("clientId") if isinstance(entry, dict) else None
    shown = raw_id if isinstance(raw_id, str) else ""
    try:
        if received.staged is None:
            raise bad_request(received.error or "the file was not received")
        if entry is None:
            raise bad_request("no metadata entry for this file")
        try:
            meta = FileMeta.model_validate(entry)
        except ValidationError as exc:
            raise bad_request(error_message(exc.errors()[0])) from None
        client = client_id(meta.clientId)
        filename = validate_name(received.filename or meta.filename)
        asset, _ = await commit_by_client_id(
            sessionmaker(request),
            request.app[ASSET_VOLUME],
            auth.project,
            client,
            filename,
            folder_path(meta.folderPath),
            received.staged,
            content_type_for(filename, received.declared_type or meta.mimeType),
            settings.max_project_bytes,
            reservation,
        )
    except ApiError as exc:
        received.discard()
        return FileResult(clientId=shown, success=False, error=exc.message)
    return FileResult(clientId=client, success=True, serverId=asset.id)


async def sync_files(request: web.Request, auth: Authorized) -> SyncResult:
    """Read a batch and store each file; the reservation ends with the request."""
    require_multipart(request, gateway(request).settings.max_asset_bytes)
    reservation = secrets.token_hex(16)
    try:
        files, metadata = await _read_batch(request, auth, reservation)
        try:
            entries = _entries(metadata)
        except ApiError:
            _discard_all(files)
            raise
        results = []
        for index, received in enumerate(files):
            entry = entries[index] if index < len(entries) else None
            results.append(await _commit(request, auth, reservation, received, entry))
    finally:
        await release(sessionmaker(request), reservation)
    uploaded = sum(1 for r in results if r.success)
    log.info(
        "asset batch stored",
        extra={"project": auth.project_uuid, "user": auth.user_id, "count": uploaded},
    )
    failed = len(results) - uploaded
    return SyncResult(success=failed == 0, uploaded=uploaded, failed=failed, results=results)


BATCH_ERRORS = (400, 401, 403, 404, 413, 415, 429)


@routes.post(
    "/api/projects/{uuid}/assets/sync",
    "Store a batch of files by client id (editor+): multipart 'files' and 'metadata' "
    "(JSON list, by position); each file's failure is reported, not fatal",
    path_params=ProjectPath,
    body=Multipart(SyncForm),
    replies={200: Reply("What was stored", SyncResult)},
    errors=BATCH_ERRORS,
)
async def sync_assets(request: web.Request) -> web.Response:
    auth = await authorize(request, Need.EDIT)
    return reply(await sync_files(request, auth))


@routes.post(
    "/api/upload-session/{token}/batch",
    "eXeLearning's upload-session batch: as …/assets/sync, authenticated by the upload "
    f"session alone ({SESSION_HEADER}, equal to the path's token); the user must still be "
    "an editor or owner",
    path_params=SessionPath,
    body=Multipart(SyncForm),
    replies={200: Reply("What was stored", SyncResult)},
    errors=BATCH_ERRORS,
    security=PUBLIC,
    headers=(
        {
            "name": SESSION_HEADER,
            "in": "header",
            "required": True,
            "description": "The upload session's token (the same as in the path)",
            "schema": {"type": "string"},
        },
    ),
)
async def session_batch(request: web.Request) -> web.Response:
    token = request.match_info["token"]
    if request.headers.get(SESSION_HEADER) != token:
        raise unauthorized(f"{SESSION_HEADER} must hold this path's upload session")
    try:
        session = verify_upload_session(token, gateway(request).settings.jwt_secret)
    except TokenError as exc:
        raise unauthorized(str(exc)) from None
    identity = Identity(user_id=session.user_id)
    auth = await authorize_as(request, identity, session.project_uuid, Need.EDIT)
    return reply(await sync_files(request, auth))


def add_routes(app: web.Application) -> None:
    add_declared_routes(app, routes)

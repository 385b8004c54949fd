"""eXeLearning's chunked uploads (Resumable.js fields): files over 20 MB, in 5 MB chunks.

    POST /api/projects/{uuid}/assets/upload-chunk            multipart `file` + resumable* fields
    POST /api/projects/{uuid}/assets/upload-chunk/finalize   JSON, the same fields

The state lives on the shared volume beside tus uploads (`tus.UploadStore`), so any gateway
takes any chunk and any gateway finalizes: `FILES_DIR/uploads/<id>/` holds `chunks.json` (the
upload's fields, written by its first chunk), `chunk-<n>` (each renamed into place whole),
`data` (touched by every chunk: the activity the stale-upload sweep reads) and `lock` (the
`flock` every chunk and the finalize hold). `<id>` is a digest of (project, user,
resumableIdentifier). The chunks of one upload add up to at most `MAX_ASSET_BYTES`. Finalize
concatenates them, reserves their size against the quota and commits the file like an upload
(idempotent by client id); it answers 400 `chunks_missing` while chunks are missing, and
again `complete` after it succeeded, so the editor's retries are safe.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from aiohttp import web
from pydantic import ConfigDict, Field

from services.gateway.asset_store import (
    WRITE_BUFFER,
    AssetVolume,
    StagedFile,
    commit_asset,
    content_type_for,
    discard,
    stage_stream,
    validate_name,
)
from services.gateway.assets import ASSET_VOLUME
from services.gateway.context import Authorized, Need, authorize, gateway, sessionmaker
from services.gateway.errors import bad_request, too_large
from services.gateway.exe_models import ExeAsset
from services.gateway.exe_rules import (
    CLIENT_ID_PATTERN,
    chunk_upload_id,
    client_id,
    missing_chunks,
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
from services.gateway.quota import UploadLimits, released_on_error, reserve
from services.gateway.schema import (
    Body,
    Multipart,
    Query,
    Reply,
    ReplyBody,
    Routes,
    Text,
    reply,
    validate,
)
from services.gateway.schema import add_routes as add_declared_routes
from services.gateway.tus import LOCK_WAIT, UploadLock, UploadStore
from shared.db.models import Asset

log = logging.getLogger(__name__)

MAX_CHUNKS = 10_000
MAX_FIELD_BYTES = 4096
FIELDS = (
    "resumableIdentifier",
    "resumableChunkNumber",
    "resumableTotalChunks",
    "resumableFilename",
    "resumableType",
    "clientId",
)


class ChunkUpload(Query):
    """The fields of a chunk or a finalize (as form fields: strings coerced to numbers)."""

    resumableIdentifier: Text = Field(min_length=1, max_length=500)
    resumableTotalChunks: int = Field(ge=1, le=MAX_CHUNKS)
    resumableFilename: str = Field(min_length=1, max_length=1000)
    resumableType: str | None = Field(None, max_length=255)
    clientId: str | None = Field(None, pattern=CLIENT_ID_PATTERN)


class ChunkFields(ChunkUpload):
    resumableChunkNumber: int = Field(ge=1, le=MAX_CHUNKS)


class ChunkForm(ChunkFields):
    """The multipart body of a chunk: the bytes and the fields."""

    file: bytes


class Finalize(ChunkUpload, Body):
    """Finalize's JSON body: the same fields, strictly typed (eXeLearning sends the total as a
    number)."""

    model_config = ConfigDict(strict=True, extra="ignore")


class ChunkStored(ReplyBody):
    success: bool
    chunkNumber: int
    allUploaded: bool


class Finalized(ReplyBody):
    success: bool
    complete: bool
    data: ExeAsset


@dataclass(frozen=True)
class ChunkState:
    """`chunks.json`: whose upload, of what."""

    project_uuid: str
    user_id: int
    total: int
    filename: str
    content_type: str | None
    client_id: str | None


routes = Routes(tags=["assets"])


def _directory(store: UploadStore, auth: Authorized, identifier: str) -> Path:
    return store.directory(chunk_upload_id(auth.project_uuid, auth.user_id, identifier))


def _open(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "lock").touch()
    (directory / "data").touch()


def _load(directory: Path) -> ChunkState | None:
    try:
        return ChunkState(**json.loads((directory / "chunks.json").read_text()))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (ValueError, TypeError):
        raise bad_request("this chunked upload's state is corrupt: start it again") from None


def _save(directory: Path, state: ChunkState) -> None:
    tmp = directory / "chunks.json.tmp"
    tmp.write_text(json.dumps(asdict(state)))
    os.replace(tmp, directory / "chunks.json")


def _present(directory: Path) -> dict[int, int]:
    """Chunk number -> size, of the chunks on the volume."""
    sizes = {}
    for path in directory.glob("chunk-*"):
        number = path.name.removeprefix("chunk-")
        if number.isdigit():
            sizes[int(number)] = path.stat().st_size
    return sizes


def _place_chunk(
    directory: Path, state: ChunkState, number: int, staged: StagedFile, max_bytes: int
) -> bool:
    """Rename the staged chunk into place (under the upload's lock); whether all are there."""
    known = _load(directory)
    if known is None:
        _save(directory, state)
    elif known.total != state.total or known.filename != state.filename:
        raise bad_request("resumableTotalChunks and resumableFilename must not change")
    sizes = _present(directory)
    sizes[number] = staged.size
    if sum(sizes.values()) > max_bytes:
        raise too_large(f"the file is larger than the limit of {max_bytes} bytes")
    os.replace(staged.path, directory / f"chunk-{number}")
    os.utime(directory / "data")
    return not missing_chunks(set(sizes), state.total)


def _concatenate(volume: AssetVolume, directory: Path, total: int) -> StagedFile:
    """The chunks in order, as one staged file."""
    path = volume.new_temp_path()
    digest = hashlib.sha256()
    size = 0
    try:
        with open(path, "wb") as out:
            for number in range(1, total + 1):
                with open(directory / f"chunk-{number}", "rb") as chunk:
                    while block := chunk.read(WRITE_BUFFER):
                        digest.update(block)
                        out.write(block)
                        size += len(block)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        discard(path)
        raise
    return StagedFile(path, size, digest.hexdigest())


async def _read_chunk(request: web.Request) -> tuple[StagedFile, dict[str, str]]:
    """The chunk's bytes (staged) and the form's fields, in whatever order they came."""
    volume = request.app[ASSET_VOLUME]
    max_bytes = gateway(request).settings.max_asset_bytes
    staged: StagedFile | None = None
    fields: dict[str, str] = {}
    try:
        with multipart_errors():
            async for part in form_parts(request):
                if part.name == "file" and staged is None:
                    staged = await stage_stream(volume, part_chunks(part), max_bytes)
                elif part.name in FIELDS and part.filename is None:
                    fields[part.name] = await read_text(part, MAX_FIELD_BYTES)
                else:
                    await part.release()
    except BaseException:
        discard(staged.path if staged else None)
        raise
    if staged is None:
        raise bad_request("the form has no 'file' part")
    return staged, fields


@routes.post(
    "/api/projects/{uuid}/assets/upload-chunk",
    "One chunk of eXeLearning's chunked upload (editor+): multipart 'file' and the "
    "resumable* fields; any gateway takes any chunk",
    path_params=ProjectPath,
    body=Multipart(ChunkForm),
    replies={200: Reply("Stored", ChunkStored)},
    errors=(400, 401, 403, 404, 413, 415, 423),
)
async def upload_chunk(request: web.Request) -> web.Response:
    auth = await authorize(request, Need.EDIT)
    settings = gateway(request).settings
    require_multipart(request, settings.max_asset_bytes)
    staged, raw = await _read_chunk(request)
    try:
        fields = validate(ChunkFields, raw)
        if fields.resumableChunkNumber > fields.resumableTotalChunks:
            raise bad_request("resumableChunkNumber is past resumableTotalChunks")
        state = ChunkState(
            project_uuid=auth.project_uuid,
            user_id=auth.user_id,
            total=fields.resumableTotalChunks,
            filename=validate_name(fields.resumableFilename),
            content_type=fields.resumableType,
            client_id=None if fields.clientId is None else client_id(fields.clientId),
        )
        store = UploadStore(request.app[ASSET_VOLUME])
        directory = _directory(store, auth, fields.resumableIdentifier)
        if not directory.exists():
            await asyncio.to_thread(store.sweep, settings.upload_expiry_seconds)
        await asyncio.to_thread(_open, directory)
        lock = UploadLock(directory / "lock")
        await lock.acquire(LOCK_WAIT)
        try:
            complete = await asyncio.to_thread(
                _place_chunk,
                directory,
                state,
                fields.resumableChunkNumber,
                staged,
                settings.max_asset_bytes,
            )
        finally:
            lock.release()
    finally:
        discard(staged.path)  # gone already when it was renamed into place
    return reply(
        ChunkStored(success=True, chunkNumber=fields.resumableChunkNumber, allUploaded=complete)
    )


async def _commit(
    request: web.Request, auth: Authorized, directory: Path, state: ChunkState
) -> Asset:
    settings = gateway(request).settings
    volume = request.app[ASSET_VOLUME]
    staged = await asyncio.to_thread(_concatenate, volume, directory, state.total)
    reservation = secrets.token_hex(16)
    content_type = content_type_for(state.filename, state.content_type)
    try:
        await reserve(
            sessionmaker(request),
            reservation,
            auth.project.id,
            auth.user_id,
            state.filename,
            staged.size,
            UploadLimits.from_settings(settings),
            settings.upload_expiry_seconds,
        )
        async with released_on_error(sessionmaker(request), reservation):
            if state.client_id is not None:
                asset, _ = await commit_by_client_id(
                    sessionmaker(request),
                    volume,
                    auth.project,
                    state.client_id,
                    state.filename,
                    "",
                    staged,
                    content_type,
                    settings.max_project_bytes,
                    reservation,
                )
            else:
                asset, _ = await commit_asset(
                    sessionmaker(request),
                    volume,
                    auth.project,
                    state.filename,
                    staged,
                    content_type,
                    settings.max_project_bytes,
                    reservation,
                )
    finally:
        discard(staged.path)
    return asset


@routes.post(
    "/api/projects/{uuid}/assets/upload-chunk/finalize",
    "Assemble a chunked upload once every chunk is in (editor+), on any gateway; "
    "400 chunks_missing until then; again after success: the same answer",
    path_params=ProjectPath,
    body=Finalize,
    replies={200: Reply("Stored", Finalized)},
    errors=(400, 401, 403, 404, 409, 413, 423, 429),
)
async def finalize(request: web.Request, body: Finalize) -> web.Response:
    auth = await authorize(request, Need.EDIT)
    store = UploadStore(request.app[ASSET_VOLUME])
    directory = _directory(store, auth, body.resumableIdentifier)
    state = await asyncio.to_thread(_load, directory)
    if state is None:
        return await _finalized_before(request, auth, body)
    lock = UploadLock(directory / "lock")
    await lock.acquire(LOCK_WAIT)
    try:
        state = await asyncio.to_thread(_load, directory)
        if state is None:  # another request finalized it while this one waited
            return await _finalized_before(request, auth, body)
        present = await asyncio.to_thread(_present, directory)
        missing = missing_chunks(set(present), state.total)
        if missing:
            raise bad_request(
                f"{state.total - len(missing)} of {state.total} chunks received",
                code="chunks_missing",
            )
        asset = await _commit(request, auth, directory, state)
        await asyncio.to_thread(store.remove, directory.name)
    finally:
        lock.release()
    gateway(request).metrics.asset_bytes.inc(asset.size)
    log.info(
        "chunked upload complete",
        extra={"project": auth.project_uuid, "size": asset.size, "user": auth.user_id},
    )
    return reply(Finalized(success=True, complete=True, data=ExeAsset.of(asset)))


async def _finalized_before(request: web.Request, auth: Authorized, body: Finalize) -> web.Response:
    """No state: complete if the asset of that client id is stored, else nothing arrived."""
    if body.clientId is not None:
        async with sessionmaker(request)() as session:
            asset = await find_by_client_id(session, auth.project.id, body.clientId)
        if asset is not None:
            return reply(Finalized(success=True, complete=True, data=ExeAsset.of(asset)))
    raise bad_request(f"0 of {body.resumableTotalChunks} chunks received", code="chunks_missing")


def add_routes(app: web.Application) -> None:
    add_declared_routes(app, routes)

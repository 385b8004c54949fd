"""Resumable asset uploads: the tus 1.0.0 protocol (core + creation + termination).

Endpoints (all need an editor or owner of the project, except OPTIONS):

    OPTIONS /api/projects/{uuid}/uploads            capabilities
    POST    /api/projects/{uuid}/uploads            create (Upload-Length, Upload-Metadata: filename)
    HEAD    /api/projects/{uuid}/uploads/{id}       current Upload-Offset
    PATCH   /api/projects/{uuid}/uploads/{id}       append bytes at Upload-Offset
    DELETE  /api/projects/{uuid}/uploads/{id}       abandon the upload

All state lives on the shared volume, so any gateway instance can take any
request of an upload: `FILES_DIR/uploads/<id>/info.json` (project, user,
name, length, type; written once, atomically) and `.../data` (the bytes
received so far: its size *is* the offset, so an interrupted PATCH leaves a
valid prefix and the client resumes from `HEAD`). A PATCH holds an exclusive
`flock` on the upload's lock file, so two instances never append at once. When
the last byte arrives the data file is hashed and committed as an asset by
the same rename-into-place step as a multipart upload.

Creating an upload reserves its `Upload-Length` against the project quota in
the database (`quota.py`), within the caps on open uploads per user and per
project; HEAD and PATCH keep the reservation alive for
`UPLOAD_EXPIRY_SECONDS`, and an upload whose reservation expired is gone (404).

aiohttp-tus (PyPI) was evaluated and not used: it reads each chunk wholly
into memory, does blocking file I/O on the event loop, answers protocol
errors with 500, takes the stored file name from client metadata without
validating it as a path, has no size limits or per-project authorisation, and
does not lock an upload against concurrent PATCHes from several instances.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import errno
import fcntl
import json
import logging
import os
import re
import shutil
import time
import uuid as uuid_module
from dataclasses import asdict, dataclass
from pathlib import Path

from aiohttp import web

from services.gateway.asset_store import (
    AssetVolume,
    StagedFile,
    asset_json,
    commit_asset,
    content_type_for,
    hash_file,
    validate_name,
)
from services.gateway.assets import ASSET_VOLUME
from services.gateway.context import Authorized, Need, authorize, gateway, sessionmaker
from services.gateway.errors import ApiError, too_large
from services.gateway.quota import UploadLimits, release, released_on_error, renew, reserve

log = logging.getLogger(__name__)

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,termination"
TUS_HEADERS = {"Tus-Resumable": TUS_VERSION}
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"
READ_CHUNK = 256 * 1024
LOCK_WAIT = 5.0
_UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class UploadInfo:
    project_uuid: str
    user_id: int
    name: str
    length: int
    content_type: str
    metadata: str
    created: float


def _tus_error(status: int, message: str, code: str | None = None) -> ApiError:
    return ApiError(status, message, code=code, headers=TUS_HEADERS)


def _require_tus_resumable(request: web.Request) -> None:
    version = request.headers.get("Tus-Resumable")
    if version is None:
        raise _tus_error(400, f"the Tus-Resumable header is required (tus {TUS_VERSION})")
    if version != TUS_VERSION:
        raise ApiError(
            412,
            f"this server speaks tus {TUS_VERSION}: send 'Tus-Resumable: {TUS_VERSION}'",
            code="unsupported_tus_version",
            headers={"Tus-Version": TUS_VERSION, **TUS_HEADERS},
        )


def parse_metadata(header: str) -> dict[str, str]:
    """`Upload-Metadata`: comma-separated `key base64value` pairs (value optional)."""
    result: dict[str, str] = {}
    if not header.strip():
        return result
    for pair in header.split(","):
        parts = pair.strip().split(" ")
        if not parts[0] or len(parts) > 2 or parts[0] in result:
            raise _tus_error(400, "malformed Upload-Metadata")
        value = ""
        if len(parts) == 2:
            try:
                value = base64.b64decode(parts[1], validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                raise _tus_error(400, "Upload-Metadata values must be base64 of UTF-8") from None
        result[parts[0]] = value
    return result


def _non_negative_int(request: web.Request, header: str) -> int:
    raw = request.headers.get(header)
    if raw is None or not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise _tus_error(400, f"{header} must be a non-negative integer")
    return int(raw)


class UploadStore:
    """Upload state on the shared volume."""

    def __init__(self, volume: AssetVolume) -> None:
        self.volume = volume

    def directory(self, upload_id: str) -> Path:
        if not _UPLOAD_ID.match(upload_id):
            raise _tus_error(404, "no such upload")
        return self.volume.uploads_dir / upload_id

    def create(self, upload_id: str, info: UploadInfo) -> None:
        directory = self.volume.uploads_dir / upload_id
        directory.mkdir(parents=True)
        (directory / "data").touch()
        (directory / "lock").touch()
        tmp = directory / "info.json.tmp"
        tmp.write_text(json.dumps(asdict(info)))
        os.replace(tmp, directory / "info.json")

    def load(self, upload_id: str) -> UploadInfo:
        try:
            data = json.loads((self.directory(upload_id) / "info.json").read_text())
            return UploadInfo(**data)
        except (FileNotFoundError, NotADirectoryError):
            raise _tus_error(404, "no such upload") from None
        except (ValueError, TypeError):
            raise _tus_error(404, "no such upload (corrupt state)") from None

    def offset(self, upload_id: str) -> int:
        try:
            return (self.directory(upload_id) / "data").stat().st_size
        except FileNotFoundError:
            raise _tus_error(404, "no such upload") from None

    def remove(self, upload_id: str) -> None:
        shutil.rmtree(self.directory(upload_id), ignore_errors=True)

    def sweep(self, max_age: float) -> int:
        """Remove uploads not touched for `max_age` seconds (abandoned)."""
        removed = 0
        now = time.time()
        try:
            entries = list(self.volume.uploads_dir.iterdir())
        except FileNotFoundError:
            return 0
        for entry in entries:
            try:
                touched = max(entry.stat().st_mtime, (entry / "data").stat().st_mtime)
            except OSError:
                touched = 0.0
            if now - touched > max_age:
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
        return removed


class UploadLock:
    """An exclusive flock on an upload's lock file (released when the process dies)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    async def acquire(self, timeout: float) -> None:
        try:
            self.fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            raise _tus_error(404, "no such upload") from None
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
            if time.monotonic() >= deadline:
                self.release()
                raise _tus_error(423, "another request is writing this upload; retry shortly")
            await asyncio.sleep(0.05)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None


def _uploads(request: web.Request) -> UploadStore:
    return UploadStore(request.app[ASSET_VOLUME])


def _location(request: web.Request, upload_id: str) -> str:
    return f"/api/projects/{request.match_info['uuid']}/uploads/{upload_id}"


async def tus_options(request: web.Request) -> web.Response:
    settings = gateway(request).settings
    return web.Response(
        status=204,
        headers={
            **TUS_HEADERS,
            "Tus-Version": TUS_VERSION,
            "Tus-Extension": TUS_EXTENSIONS,
            "Tus-Max-Size": str(settings.max_asset_bytes),
        },
    )


async def tus_create(request: web.Request) -> web.Response:
    auth = await authorize(request, Need.EDIT)
    _require_tus_resumable(request)
    settings = gateway(request).settings
    if "Upload-Defer-Length" in request.headers:
        raise _tus_error(400, "Upload-Defer-Length is not supported: send Upload-Length")
    length = _non_negative_int(request, "Upload-Length")
    if length > settings.max_asset_bytes:
        raise ApiError(
            413,
            f"the file is larger than the limit of {settings.max_asset_bytes} bytes",
            headers=TUS_HEADERS,
        )
    if request.content_length:
        raise _tus_error(400, "creation-with-upload is not supported: send the bytes with PATCH")
    metadata_header = request.headers.get("Upload-Metadata", "")
    if len(metadata_header) > 8192:
        raise _tus_error(400, "Upload-Metadata is too long")
    metadata = parse_metadata(metadata_header)
    name = validate_name(metadata.get("filename") or metadata.get("name") or "")
    info = UploadInfo(
        project_uuid=auth.project_uuid,
        user_id=auth.user_id,
        name=name,
        length=length,
        content_type=content_type_for(name, metadata.get("filetype") or metadata.get("type")),
        metadata=metadata_header,
        created=time.time(),
    )
    store = _uploads(request)
    await asyncio.to_thread(store.sweep, settings.upload_expiry_seconds)
    upload_id = uuid_module.uuid4().hex
    await reserve(
        sessionmaker(request),
        upload_id,
        auth.project.id,
        auth.user_id,
        name,
        length,
        UploadLimits.from_settings(settings),
        settings.upload_expiry_seconds,
    )
    async with released_on_error(sessionmaker(request), upload_id):
        await asyncio.to_thread(store.create, upload_id, info)
    if length == 0:
        await _complete(request, auth, store, upload_id, info)
    return web.Response(
        status=201,
        headers={**TUS_HEADERS, "Location": _location(request, upload_id), "Upload-Offset": "0"},
    )


async def _own_upload(request: web.Request) -> tuple[Authorized, UploadStore, str, UploadInfo]:
    auth = await authorize(request, Need.EDIT)
    _require_tus_resumable(request)
    store = _uploads(request)
    upload_id = request.match_info["upload_id"]
    info = await asyncio.to_thread(store.load, upload_id)
    if info.project_uuid != auth.project_uuid or info.user_id != auth.user_id:
        raise _tus_error(404, "no such upload")
    return auth, store, upload_id, info


async def _live_upload(request: web.Request) -> tuple[Authorized, UploadStore, str, UploadInfo]:
    """The caller's upload, its reservation renewed; 404 (and its files removed) once expired."""
    auth, store, upload_id, info = await _own_upload(request)
    expiry = gateway(request).settings.upload_expiry_seconds
    if not await renew(sessionmaker(request), upload_id, expiry):
        await asyncio.to_thread(store.remove, upload_id)
        raise _tus_error(404, "no such upload (it expired)")
    return auth, store, upload_id, info


async def tus_head(request: web.Request) -> web.Response:
    _, store, upload_id, info = await _live_upload(request)
    offset = await asyncio.to_thread(store.offset, upload_id)
    headers = {
        **TUS_HEADERS,
        "Upload-Offset": str(offset),
        "Upload-Length": str(info.length),
        "Cache-Control": "no-store",
    }
    if info.metadata:
        headers["Upload-Metadata"] = info.metadata
    return web.Response(status=200, headers=headers)


def _append(path: Path, data: bytes) -> None:
    with open(path, "ab") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


async def tus_patch(request: web.Request) -> web.Response:
    auth, store, upload_id, info = await _live_upload(request)
    if request.headers.get("Content-Type", "").split(";")[0].strip().lower() != OFFSET_CONTENT_TYPE:
        raise _tus_error(415, f"PATCH bodies must be {OFFSET_CONTENT_TYPE}")
    claimed = _non_negative_int(request, "Upload-Offset")
    lock = UploadLock(store.directory(upload_id) / "lock")
    await lock.acquire(LOCK_WAIT)
    try:
        offset = await asyncio.to_thread(store.offset, upload_id)
        if claimed != offset:
            raise ApiError(
                409,
                f"Upload-Offset is {claimed} but the upload is at {offset}",
                code="offset_mismatch",
                headers={**TUS_HEADERS, "Upload-Offset": str(offset)},
            )
        declared = request.content_length
        if declared is not None and offset + declared > info.length:
            raise too_large("the body goes past Upload-Length")
        data_path = store.directory(upload_id) / "data"
        buffer = bytearray()
        try:
            while chunk := await request.content.read(READ_CHUNK):
                if offset + len(buffer) + len(chunk) > info.length:
                    raise too_large("the body goes past Upload-Length")
                buffer += chunk
                if len(buffer) >= 1024 * 1024:
                    await asyncio.to_thread(_append, data_path, bytes(buffer))
                    offset += len(buffer)
                    buffer.clear()
        finally:
            # Whatever arrived is kept, even when the connection dropped: it is a
            # valid prefix and the client resumes from HEAD's offset.
            if buffer:
                await asyncio.to_thread(_append, data_path, bytes(buffer))
                offset += len(buffer)
                buffer.clear()
        if offset == info.length:
            await _complete(request, auth, store, upload_id, info)
    finally:
        lock.release()
    return web.Response(status=204, headers={**TUS_HEADERS, "Upload-Offset": str(offset)})


async def _complete(
    request: web.Request, auth: Authorized, store: UploadStore, upload_id: str, info: UploadInfo
) -> None:
    """The last byte arrived: hash the data and commit it as an asset."""
    settings = gateway(request).settings
    directory = store.directory(upload_id)
    staged_path = store.volume.new_temp_path()
    await asyncio.to_thread(os.replace, directory / "data", staged_path)
    size, digest = await asyncio.to_thread(hash_file, staged_path)
    try:
        async with released_on_error(sessionmaker(request), upload_id):
            asset, _ = await commit_asset(
                sessionmaker(request),
                store.volume,
                auth.project,
                info.name,
                StagedFile(staged_path, size, digest),
                info.content_type,
                settings.max_project_bytes,
                upload_id,
            )
    finally:
        await asyncio.to_thread(store.remove, upload_id)
    gateway(request).metrics.asset_bytes.inc(asset.size)
    log.info(
        "tus upload complete",
        extra={"project": info.project_uuid, "size": size, "asset": asset_json(asset)["name"]},
    )


async def tus_delete(request: web.Request) -> web.Response:
    _, store, upload_id, _ = await _own_upload(request)
    lock = UploadLock(store.directory(upload_id) / "lock")
    await lock.acquire(LOCK_WAIT)
    try:
        await asyncio.to_thread(store.remove, upload_id)
        await release(sessionmaker(request), upload_id)
    finally:
        lock.release()
    return web.Response(status=204, headers=TUS_HEADERS)


def add_routes(app: web.Application) -> None:
    app.router.add_route("OPTIONS", "/api/projects/{uuid}/uploads", tus_options)
    app.router.add_post("/api/projects/{uuid}/uploads", tus_create)
    app.router.add_route("HEAD", "/api/projects/{uuid}/uploads/{upload_id}", tus_head)
    app.router.add_patch("/api/projects/{uuid}/uploads/{upload_id}", tus_patch)
    app.router.add_delete("/api/projects/{uuid}/uploads/{upload_id}", tus_delete)

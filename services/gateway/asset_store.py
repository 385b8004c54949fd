"""Project assets on the shared volume, with their metadata in the `assets` table.

Layout (docs/architecture.md): `FILES_DIR/assets/<first two hex of uuid>/<uuid>/<name>`.
Every upload (multipart or tus) is written to a temporary file under
`FILES_DIR/tmp/` (the same volume, so the final `rename` is atomic), hashed
while it streams, size-checked as it grows, fsynced, then renamed into place
in the same step that records it; a crash at any point leaves at most a
temporary file, never a half file under a real name.

Names are one path component: NFC-normalised, 1..255 UTF-8 bytes, no `/` or
`\\`, no control characters, no leading dot, no trailing dot or space, none
of `<>:"|?*`, not a reserved device name (CON, NUL, COM1...) and not one of
the asset routes' own segments (`bulk`, `sync`, `upload-chunk`, `by-client-id`).
"""

from __future__ import annotations

import asyncio
import hashlib
import mimetypes
import os
import re
import secrets
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from pydantic import Field
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.gateway.errors import bad_request, not_found, too_large
from services.gateway.quota import check_quota, forget, lock_project
from services.gateway.schema import ReplyBody, Timestamp
from shared.db.engine import upsert_insert
from shared.db.models import Asset, Project

MAX_NAME_BYTES = 255
_FORBIDDEN_CHARS = set('/\\<>:"|?*')
_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³])(\..*)?$", re.IGNORECASE)
_CONTENT_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$")
WRITE_BUFFER = 1024 * 1024
# Path segments of routes beside `/assets/{name}`: an asset of that name would be shadowed.
ROUTE_NAMES = frozenset({"bulk", "sync", "upload-chunk", "by-client-id"})


def validate_name(raw: object) -> str:
    """The canonical asset name, or a 400 saying what is wrong with it."""
    if not isinstance(raw, str) or not raw:
        raise bad_request("an asset name is required", code="invalid_name")
    name = unicodedata.normalize("NFC", raw)
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise bad_request(f"asset names are at most {MAX_NAME_BYTES} bytes", code="invalid_name")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") for c in name):
        raise bad_request("asset names must not contain control characters", code="invalid_name")
    if any(c in _FORBIDDEN_CHARS for c in name):
        raise bad_request('asset names must not contain / \\ < > : " | ? *', code="invalid_name")
    if name.startswith(".") or name.endswith((".", " ")) or name != name.strip():
        raise bad_request(
            "asset names must not start with a dot nor start or end with spaces or dots",
            code="invalid_name",
        )
    if _RESERVED.match(name) or name.lower() in ROUTE_NAMES:
        raise bad_request("this asset name is reserved", code="invalid_name")
    return name


def content_type_for(name: str, declared: str | None) -> str:
    declared = (declared or "").split(";", 1)[0].strip().lower()
    if declared and declared != "application/octet-stream" and _CONTENT_TYPE.match(declared):
        return declared
    guessed, _ = mimetypes.guess_type(name, strict=False)
    return guessed or "application/octet-stream"


class AssetOut(ReplyBody):
    """This API's fields of an asset, in every answer that describes one."""

    name: str
    size: int
    sha256: str = Field(pattern="^[0-9a-f]{64}$")
    content_type: str
    created_at: Timestamp | None

    @classmethod
    def of(cls, asset: Asset) -> Self:
        return cls(**cls.fields_of(asset))

    @classmethod
    def fields_of(cls, asset: Asset) -> dict[str, Any]:
        """The model's fields for `asset` (a subclass adds its own)."""
        return {
            "name": asset.name,
            "size": asset.size,
            "sha256": asset.sha256,
            "content_type": asset.content_type,
            "created_at": asset.created_at,
        }


class AssetVolume:
    """Paths on the shared volume."""

    def __init__(self, files_dir: Path) -> None:
        self.root = Path(files_dir).resolve()
        self.assets_dir = self.root / "assets"
        self.tmp_dir = self.root / "tmp"
        self.uploads_dir = self.root / "uploads"

    def relative_path(self, project_uuid: str, name: str) -> str:
        return f"assets/{project_uuid[:2]}/{project_uuid}/{name}"

    def absolute(self, relative: str) -> Path:
        path = (self.root / relative).resolve()
        if self.root not in path.parents:
            raise not_found("no such asset")  # never serve outside the volume
        return path

    def new_temp_path(self) -> Path:
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        return self.tmp_dir / f"upload-{secrets.token_hex(16)}.part"

    def check_writable(self) -> None:
        """Readiness: create, write, fsync and remove a probe file."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        probe = self.tmp_dir / f"ready-{secrets.token_hex(8)}"
        with open(probe, "wb") as handle:
            handle.write(b"ok")
            handle.flush()
            os.fsync(handle.fileno())
        probe.unlink()


@dataclass(frozen=True)
class StagedFile:
    """A complete upload in a temporary file, with its size and digest."""

    path: Path
    size: int
    sha256: str


def _append(path: Path, data: bytes) -> None:
    with open(path, "ab") as handle:
        handle.write(data)


def _fsync(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def discard(path: Path | None) -> None:
    if path is not None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


async def stage_stream(
    volume: AssetVolume, chunks: AsyncIterator[bytes], max_bytes: int
) -> StagedFile:
    """Write a stream to a temporary file; 413 (and no file left) once it passes `max_bytes`."""
    path = volume.new_temp_path()
    path.touch()
    digest = hashlib.sha256()
    size = 0
    buffer = bytearray()
    try:
        async for chunk in chunks:
            size += len(chunk)
            if size > max_bytes:
                raise too_large(f"the file is larger than the limit of {max_bytes} bytes")
            digest.update(chunk)
            buffer += chunk
            if len(buffer) >= WRITE_BUFFER:
                await asyncio.to_thread(_append, path, bytes(buffer))
                buffer.clear()
        if buffer:
            await asyncio.to_thread(_append, path, bytes(buffer))
        await asyncio.to_thread(_fsync, path)
    except BaseException:
        discard(path)
        raise
    return StagedFile(path, size, digest.hexdigest())


def hash_file(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while block := handle.read(WRITE_BUFFER):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


async def commit_asset(
    sessionmaker: async_sessionmaker[AsyncSession],
    volume: AssetVolume,
    project: Project,
    name: str,
    staged: StagedFile,
    content_type: str,
    max_project_bytes: int,
    reservation: str,
) -> tuple[Asset, bool]:
    """Move a staged file into place and record it; (asset, created). 413 over the project quota.

    The project row is locked for the transaction, so concurrent uploads to
    one project are checked against the quota (`quota.py`) one at a time; the
    upload's `reservation` ends in the same transaction.
    """
    try:
        async with sessionmaker() as session, session.begin():
            await lock_project(session, project.id)
            await check_quota(
                session, project.id, name, staged.size, max_project_bytes, reservation=reservation
            )
            await forget(session, reservation)
            existing = await find_named(session, project.id, name)
            await place_asset(session, volume, project, name, staged, content_type)
        asset = await reread(sessionmaker, project.id, name)
    finally:
        discard(staged.path)  # gone already when the rename happened
    return asset, existing is None


async def find_named(session: AsyncSession, project_id: int, name: str) -> Asset | None:
    return await session.scalar(
        select(Asset).where(Asset.project_id == project_id, Asset.name == name)
    )


async def place_asset(
    session: AsyncSession,
    volume: AssetVolume,
    project: Project,
    name: str,
    staged: StagedFile,
    content_type: str,
    *,
    client_id: str | None = None,
    folder_path: str = "",
) -> None:
    """Record the asset `name` (replacing one of that name) and rename the staged file into
    place, in the caller's transaction, which holds the project's row lock (`lock_project`).

    A replacement keeps the row's client id and folder unless new ones are given."""
    relative = volume.relative_path(str(project.uuid), name)
    final = volume.absolute(relative)
    values: dict[str, Any] = {
        "project_id": project.id,
        "name": name,
        "path": relative,
        "size": staged.size,
        "sha256": staged.sha256,
        "content_type": content_type,
    }
    if client_id is not None:
        values |= {"client_id": client_id, "folder_path": folder_path}
    await session.execute(
        upsert_insert(session)(Asset)
        .values(**values)
        .on_conflict_do_update(
            index_elements=["project_id", "name"],
            set_={k: v for k, v in values.items() if k not in ("project_id", "name")}
            | {"created_at": func.now()},
        )
    )
    await asyncio.to_thread(final.parent.mkdir, parents=True, exist_ok=True)
    await asyncio.to_thread(os.replace, staged.path, final)


async def reread(
    sessionmaker: async_sessionmaker[AsyncSession], project_id: int, name: str
) -> Asset:
    """The asset as stored (server-side timestamps); 404 when it was deleted meanwhile."""
    async with sessionmaker() as session:
        asset = await find_named(session, project_id, name)
    if asset is None:
        raise not_found("the asset was deleted as it was stored")
    return asset


async def delete_asset(
    sessionmaker: async_sessionmaker[AsyncSession], volume: AssetVolume, project: Project, name: str
) -> None:
    """Forget the asset `name` and remove its file; 404 when there is none."""
    if not await delete_where(sessionmaker, volume, project.id, Asset.name == name):
        raise not_found("no such asset")


async def delete_where(
    sessionmaker: async_sessionmaker[AsyncSession],
    volume: AssetVolume,
    project_id: int,
    condition: ColumnElement[bool],
) -> int:
    """Forget the project's assets matching `condition`, then remove their files (a crash in
    between leaves orphan files, not rows without one); how many there were."""
    async with sessionmaker() as session, session.begin():
        assets = (
            await session.scalars(
                select(Asset).where(Asset.project_id == project_id, condition).with_for_update()
            )
        ).all()
        paths = [volume.absolute(asset.path) for asset in assets]
        for asset in assets:
            await session.delete(asset)
    for path in paths:
        await asyncio.to_thread(discard, path)
    return len(paths)

"""The project quota: stored assets plus the reservations of open uploads.

An upload reserves its declared length before any byte reaches the volume: a
tus upload its `Upload-Length` at creation, a multipart upload its body's
length (the per-file limit when the body is chunked) before it streams. The
reservations are rows of `upload_reservations`, so every gateway instance sees
the same ones; a reservation is taken under the project's row lock (and the
user's, for the per-user cap), the same lock `commit_asset` holds, so that
`assets + live reservations <= MAX_PROJECT_BYTES` holds however many instances
take uploads at once.

A reservation ends when its upload is committed (in the transaction that
records the asset), abandoned, or when `expires_at` passes: a tus upload moves
it forward with every PATCH (`UPLOAD_EXPIRY_SECONDS` after the last one); a
multipart upload holds it for `MULTIPART_LEASE_SECONDS` at most, so a gateway
that dies mid-upload does not hold bytes for long. An expired reservation
counts for nothing at once and is deleted by the next reservation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.gateway.errors import ApiError, not_found, too_large
from shared.config import Settings
from shared.db.models import Asset, Project, UploadReservation, User

MULTIPART_LEASE_SECONDS = 3600


@dataclass(frozen=True)
class UploadLimits:
    """The quota and the caps on open uploads (0 = no cap)."""

    max_project_bytes: int
    per_user: int
    per_project: int

    @classmethod
    def from_settings(cls, settings: Settings) -> UploadLimits:
        return cls(
            settings.max_project_bytes,
            settings.max_open_uploads_per_user,
            settings.max_open_uploads_per_project,
        )


def _now() -> datetime:
    return datetime.now(UTC)


def _live(now: datetime) -> ColumnElement[bool]:
    return UploadReservation.expires_at > now


async def lock_project(session: AsyncSession, project_id: int) -> None:
    """Lock the project's row for the transaction; 404 when it is gone or deleted."""
    locked = await session.scalar(
        select(Project.id)
        .where(Project.id == project_id, Project.deleted_at.is_(None))
        .with_for_update()
    )
    if locked is None:
        raise not_found("no such project")


async def check_quota(
    session: AsyncSession,
    project_id: int,
    name: str,
    size: int,
    max_project_bytes: int,
    *,
    reservation: str | None = None,
) -> None:
    """413 unless the project's assets (the asset `name` would replace aside), the other
    live reservations and `size` fit in `max_project_bytes`."""
    used = await session.scalar(
        select(func.coalesce(func.sum(Asset.size), 0)).where(
            Asset.project_id == project_id, Asset.name != name
        )
    )
    reserved_query = select(func.coalesce(func.sum(UploadReservation.bytes), 0)).where(
        UploadReservation.project_id == project_id, _live(_now())
    )
    if reservation is not None:
        reserved_query = reserved_query.where(UploadReservation.id != reservation)
    reserved = await session.scalar(reserved_query)
    if int(used or 0) + int(reserved or 0) + size > max_project_bytes:
        raise too_large(
            f"the project's assets and open uploads would exceed its limit of "
            f"{max_project_bytes} bytes"
        )


async def owned_asset_bytes(session: AsyncSession, user_id: int) -> int:
    """The bytes of the assets of the live projects `user_id` owns (their storage use)."""
    used = await session.scalar(
        select(func.coalesce(func.sum(Asset.size), 0))
        .join(Project, Project.id == Asset.project_id)
        .where(Project.owner_id == user_id, Project.deleted_at.is_(None))
    )
    return int(used or 0)


async def _open_uploads(session: AsyncSession, column: ColumnElement[bool], now: datetime) -> int:
    return int(await session.scalar(select(func.count()).where(column, _live(now))) or 0)


async def reserve(
    sessionmaker: async_sessionmaker[AsyncSession],
    reservation: str,
    project_id: int,
    user_id: int,
    name: str,
    size: int,
    limits: UploadLimits,
    lease_seconds: float,
) -> None:
    """Reserve `size` bytes of the project's quota for the upload `reservation`.

    413 over the quota, 429 past a cap on open uploads, 404 for a deleted project.
    """
    now = _now()
    async with sessionmaker() as session, session.begin():
        # A write first: on SQLite it takes the database's write lock before the reads below.
        await session.execute(delete(UploadReservation).where(UploadReservation.expires_at <= now))
        await session.scalar(select(User.id).where(User.id == user_id).with_for_update())
        await lock_project(session, project_id)
        caps = (
            (limits.per_user, UploadReservation.user_id == user_id, "you have"),
            (limits.per_project, UploadReservation.project_id == project_id, "this project has"),
        )
        for cap, column, who in caps:
            if cap and await _open_uploads(session, column, now) >= cap:
                raise ApiError(
                    429,
                    f"{who} {cap} unfinished uploads: complete or cancel one first",
                    code="too_many_uploads",
                )
        await check_quota(session, project_id, name, size, limits.max_project_bytes)
        session.add(
            UploadReservation(
                id=reservation,
                project_id=project_id,
                user_id=user_id,
                bytes=size,
                expires_at=now + timedelta(seconds=lease_seconds),
            )
        )


async def renew(
    sessionmaker: async_sessionmaker[AsyncSession], reservation: str, lease_seconds: float
) -> bool:
    """Move a live reservation's expiry `lease_seconds` ahead; False when it expired or is gone."""
    now = _now()
    async with sessionmaker() as session, session.begin():
        result = await session.execute(
            update(UploadReservation)
            .where(UploadReservation.id == reservation, _live(now))
            .values(expires_at=now + timedelta(seconds=lease_seconds))
        )
    return bool(cast(CursorResult[Any], result).rowcount)  # an UPDATE's result is a cursor's


async def forget(session: AsyncSession, reservation: str) -> None:
    """Delete the reservation in the caller's transaction (nothing happens when it is gone)."""
    await session.execute(delete(UploadReservation).where(UploadReservation.id == reservation))


async def release(sessionmaker: async_sessionmaker[AsyncSession], reservation: str) -> None:
    """Give the reservation's bytes back: its upload was abandoned or failed."""
    async with sessionmaker() as session, session.begin():
        await forget(session, reservation)


@asynccontextmanager
async def released_on_error(
    sessionmaker: async_sessionmaker[AsyncSession], reservation: str
) -> AsyncIterator[None]:
    """Release the reservation when the block fails (or is cancelled)."""
    try:
        yield
    except BaseException:
        await release(sessionmaker, reservation)
        raise

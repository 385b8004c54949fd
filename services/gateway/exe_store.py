"""Assets stored by eXeLearning's client id: idempotent commit, lookups by key.

`commit_by_client_id` holds the project's row lock (`quota.lock_project`) from the check for
an asset with that client id to the rename into place, so two authors uploading the same file
at once store it once: the first gets `created`, the other the same asset.
"""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.gateway.asset_store import (
    AssetVolume,
    StagedFile,
    discard,
    find_named,
    place_asset,
    reread,
    validate_name,
)
from services.gateway.errors import ApiError, conflict
from services.gateway.exe_rules import candidate_names
from services.gateway.quota import check_quota, forget, lock_project
from shared.db.models import Asset, Project


async def find_by_client_id(session: AsyncSession, project_id: int, client: str) -> Asset | None:
    return await session.scalar(
        select(Asset).where(Asset.project_id == project_id, Asset.client_id == client)
    )


async def find_by_key(session: AsyncSession, project_id: int, key: str) -> Asset | None:
    """The asset a download key names: its client id first, then its name, then its id."""
    conditions = [Asset.client_id == key, Asset.name == key]
    if key.isascii() and key.isdigit() and len(key) <= 18:
        conditions.append(Asset.id == int(key))
    found = (
        await session.scalars(select(Asset).where(Asset.project_id == project_id, or_(*conditions)))
    ).all()

    def rank(asset: Asset) -> int:
        return 0 if asset.client_id == key else 1 if asset.name == key else 2

    return min(found, key=rank, default=None)


async def _free_name(
    session: AsyncSession, project_id: int, filename: str | None, client: str
) -> str:
    """The first candidate name no asset holds (every holder has another client id here)."""
    for candidate in candidate_names(filename, client):
        try:
            name = validate_name(candidate)
        except ApiError:
            continue  # e.g. too long once the id is added
        if await find_named(session, project_id, name) is None:
            return name
    raise conflict(f"every name this file could take is used by another asset ({filename!r})")


async def commit_by_client_id(
    sessionmaker: async_sessionmaker[AsyncSession],
    volume: AssetVolume,
    project: Project,
    client: str,
    filename: str | None,
    folder: str,
    staged: StagedFile,
    content_type: str,
    max_project_bytes: int,
    reservation: str,
) -> tuple[Asset, bool]:
    """Store the staged file as the asset with client id `client`; (asset, created). When the
    project already has that client id, nothing is stored and the existing asset is returned."""
    try:
        async with sessionmaker() as session, session.begin():
            await lock_project(session, project.id)
            await forget(session, reservation)
            existing = await find_by_client_id(session, project.id, client)
            if existing is not None:
                return existing, False
            name = await _free_name(session, project.id, filename, client)
            await check_quota(session, project.id, name, staged.size, max_project_bytes)
            await place_asset(
                session,
                volume,
                project,
                name,
                staged,
                content_type,
                client_id=client,
                folder_path=folder,
            )
        return await reread(sessionmaker, project.id, name), True
    finally:
        discard(staged.path)  # gone already when the rename happened

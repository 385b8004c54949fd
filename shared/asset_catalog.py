"""Read-only lookups the asset coordinator makes in the database.

"The file is stored" means an `assets` row of that project with that
`client_id` (eXeLearning's content-hash id); the gateway writes those rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.db.models import Asset, Project

IN_CHUNK = 1000  # ids per IN (...) query


@dataclass(frozen=True, slots=True)
class StoredAsset:
    """What `asset-ready` tells a client about a stored file."""

    client_id: str
    size: int
    mime_type: str
    filename: str


def _project_uuid(project_uuid: str) -> uuid.UUID:
    return uuid.UUID(project_uuid)


async def find_asset(
    sessionmaker: async_sessionmaker[AsyncSession], project_uuid: str, client_id: str
) -> StoredAsset | None:
    """The stored asset of a project with this client id, or None."""
    query = (
        select(Asset.client_id, Asset.size, Asset.content_type, Asset.name)
        .join(Project, Project.id == Asset.project_id)
        .where(Project.uuid == _project_uuid(project_uuid), Asset.client_id == client_id)
    )
    async with sessionmaker() as session:
        row = (await session.execute(query)).first()
    if row is None:
        return None
    return StoredAsset(
        client_id=client_id, size=row.size, mime_type=row.content_type, filename=row.name
    )


async def stored_client_ids(
    sessionmaker: async_sessionmaker[AsyncSession], project_uuid: str, client_ids: Iterable[str]
) -> set[str]:
    """Which of `client_ids` the project has stored."""
    wanted = list(dict.fromkeys(client_ids))
    found: set[str] = set()
    async with sessionmaker() as session:
        for start in range(0, len(wanted), IN_CHUNK):
            query = (
                select(Asset.client_id)
                .join(Project, Project.id == Asset.project_id)
                .where(
                    Project.uuid == _project_uuid(project_uuid),
                    Asset.client_id.in_(wanted[start : start + IN_CHUNK]),
                )
            )
            found.update(cid for cid in (await session.scalars(query)) if cid is not None)
    return found


async def never_saved(sessionmaker: async_sessionmaker[AsyncSession], project_uuid: str) -> bool:
    """True when eXeLearning's editor never saved the project's whole document (`saved_at` unset)."""
    query = select(Project.saved_at).where(Project.uuid == _project_uuid(project_uuid))
    async with sessionmaker() as session:
        row = (await session.execute(query)).first()
    return row is not None and row.saved_at is None

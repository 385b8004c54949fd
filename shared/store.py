"""The document store: Yjs documents in the database behind one small interface.

Layout (docs/architecture.md, "Data model"): `yjs_documents` holds one compacted snapshot per project,
`yjs_updates` the updates appended since. Loading returns the snapshot and the
log; compaction folds the log into a new snapshot in one transaction and
deletes exactly the rows it merged, so an update appended meanwhile survives.
The same code runs on SQLite (embedded) and PostgreSQL (production).
"""

from __future__ import annotations

import asyncio
import uuid as uuid_module
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, Table, bindparam, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.compaction import LogStats, build_snapshot
from shared.db.engine import upsert_insert
from shared.db.models import Project, YjsDocument, YjsQuarantine, YjsUpdate
from shared.redis_contract import format_log_position, written_up_to
from shared.webhooks.events import GlobalWebhooks
from shared.webhooks.outbox import record_document_changes

_DELETE_CHUNK = 5000
_COMPACT_ATTEMPTS = 5


# Hot writes (appends, compaction) go to the tables, not the mapped classes:
# the ORM's bulk insert/update/delete paths cost several times more Python per
# statement, for rows nobody reads back as objects.
# (Declarative types `__table__` as a FromClause; on these mapped classes it is their Table.)
_UPDATES = cast(Table, YjsUpdate.__table__)
_DOCUMENTS = cast(Table, YjsDocument.__table__)
_QUARANTINE = cast(Table, YjsQuarantine.__table__)


class _SnapshotChanged(Exception):
    """Another compaction replaced the snapshot while this one was merging."""


@dataclass(frozen=True, slots=True)
class CompactionResult:
    merged_updates: int
    merged_bytes: int
    snapshot_bytes: int
    snapshot_version: int
    quarantined: int = 0  # merged updates pycrdt refused, moved to yjs_quarantine


class DocumentStore:
    """Append, load and compact Yjs documents, keyed by project uuid.

    Every append also notes, in its transaction, the projects whose document changed for
    their `document.updated` webhooks (`record_document_changes`; `webhooks` are the
    configuration's global ones), so an event stands for a committed state.
    """

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        webhooks: GlobalWebhooks | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._webhooks = webhooks or GlobalWebhooks()
        self._project_ids: dict[str, int] = {}
        self._documents: set[int] = set()  # projects whose document row is known to exist

    async def load_updates(self, project_uuid: str) -> list[bytes]:
        """The stored document: its snapshot (if any) followed by the log, oldest first.

        The log is read before the snapshot: the two reads see different
        commits (SQLite without a read transaction, PostgreSQL in READ
        COMMITTED), and a compaction committing in between then only makes
        the snapshot contain log rows already read, never lose them.
        """
        async with self._sessionmaker() as session:
            project_id = await self._find_project_id(session, project_uuid)
            if project_id is None:
                return []
            log = (
                await session.scalars(
                    select(YjsUpdate.update)
                    .where(YjsUpdate.project_id == project_id)
                    .order_by(YjsUpdate.id)
                )
            ).all()
            snapshot = await session.scalar(
                select(YjsDocument.snapshot).where(YjsDocument.project_id == project_id)
            )
        return ([snapshot] if snapshot else []) + list(log)

    async def quarantine(self, project_uuid: str, updates: Sequence[bytes], reason: str) -> int:
        """Set aside updates a load could not apply; returns how many were recorded.

        In one transaction, every `yjs_updates` row of the project holding one
        of `updates` moves to `yjs_quarantine` (keeping its id as `source_id`);
        an update found in no row (a Redis log entry, a pending write, the
        snapshot) is recorded with no source and nothing else changes.
        """
        wanted = list(dict.fromkeys(updates))
        if not wanted:
            return 0
        async with self._sessionmaker() as session, session.begin():
            project_id = await self._find_project_id(session, project_uuid)
            if project_id is None:
                return 0
            rows = (
                await session.execute(
                    select(_UPDATES.c.id, _UPDATES.c.update).where(
                        _UPDATES.c.project_id == project_id, _UPDATES.c.update.in_(wanted)
                    )
                )
            ).all()
            found = {bytes(row.update) for row in rows}
            sources = [(row.update, row.id) for row in rows]
            sources += [(update, None) for update in wanted if update not in found]
            await session.execute(
                insert(_QUARANTINE),
                [
                    {
                        "project_id": project_id,
                        "update": update,
                        "reason": reason[:500],
                        "source_id": source,
                    }
                    for update, source in sources
                ],
            )
            if rows:
                moved = [row.id for row in rows]
                await session.execute(delete(_UPDATES).where(_UPDATES.c.id.in_(moved)))
        return len(sources)

    async def append(self, batch: Mapping[str, Sequence[bytes]]) -> None:
        """Append updates for several projects in one transaction.

        A project row is created when missing (open-access mode, where rooms
        exist before any gateway call). Callers that trigger compactions keep
        the log's size themselves (`LogSizes`, `log_stats`).
        """
        batch = {uuid: updates for uuid, updates in batch.items() if updates}
        if not batch:
            return
        async with self._sessionmaker() as session, session.begin():
            ids = {uuid: await self._ensure_project_id(session, uuid) for uuid in batch}
            await session.execute(
                insert(_UPDATES),
                [
                    {"project_id": ids[uuid], "update": update}
                    for uuid, updates in batch.items()
                    for update in updates
                ],
            )
            await record_document_changes(session, set(ids.values()), self._webhooks)
        self._project_ids.update(ids)  # committed now
        self._documents.update(ids.values())

    async def append_from_logs(
        self,
        batch: Mapping[str, Sequence[tuple[tuple[int, int], bytes]]],
        *,
        epoch: str | Mapping[str, str],
        with_stats_for: Collection[str] = frozenset(),
    ) -> dict[str, tuple[int, LogStats | None]]:
        """Append several projects' Redis-log entries `(position, update)`
        exactly once, in one transaction; `epoch` is the run id of the Redis
        server the positions come from, or one per project (the partitions of a
        Redis Cluster live on several servers).

        Each document row remembers the last position written (and its epoch);
        entries at or before it in the same epoch are skipped, under row locks taken in id order by one
        statement, so workers racing on overlapping projects never write an
        entry twice nor deadlock. Returns, per project with entries, (rows
        written, log stats after the append for projects in `with_stats_for`,
        else None).
        """
        batch = {uuid: entries for uuid, entries in batch.items() if entries}
        if not batch:
            return {}
        async with self._sessionmaker() as session, session.begin():
            # sorted: concurrent inserts of new projects' rows wait on each other in one order
            ids = {uuid: await self._ensure_project_id(session, uuid) for uuid in sorted(batch)}
            documents = {
                row.project_id: row
                for row in await session.execute(
                    select(_DOCUMENTS.c.id, _DOCUMENTS.c.project_id, _DOCUMENTS.c.log_position)
                    .where(_DOCUMENTS.c.project_id.in_(ids.values()))
                    .order_by(_DOCUMENTS.c.id)
                    .with_for_update()
                )
            }
            rows: list[dict[str, object]] = []
            positions: list[dict[str, object]] = []
            written: dict[str, int] = {}
            for uuid, entries in batch.items():
                document = documents[ids[uuid]]
                run_id = epoch if isinstance(epoch, str) else epoch[uuid]
                done = written_up_to(document.log_position, run_id)
                fresh = [(position, update) for position, update in entries if position > done]
                written[uuid] = len(fresh)
                if fresh:
                    rows.extend({"project_id": ids[uuid], "update": update} for _, update in fresh)
                    last = max(position for position, _ in fresh)
                    positions.append(
                        {"document": document.id, "position": format_log_position(run_id, last)}
                    )
            if rows:
                await session.execute(insert(_UPDATES), rows)
                await session.execute(
                    update(_DOCUMENTS)
                    .where(_DOCUMENTS.c.id == bindparam("document"))
                    .values(log_position=bindparam("position")),
                    positions,
                )
            changed = {ids[uuid] for uuid, count in written.items() if count}
            await record_document_changes(session, changed, self._webhooks)
            result = {
                uuid: (
                    count,
                    await self._log_stats(session, ids[uuid]) if uuid in with_stats_for else None,
                )
                for uuid, count in written.items()
            }
        self._project_ids.update(ids)  # committed now
        self._documents.update(ids.values())
        return result

    async def log_stats(self, project_uuid: str) -> LogStats:
        async with self._sessionmaker() as session:
            project_id = await self._find_project_id(session, project_uuid)
            if project_id is None:
                return LogStats(0, 0)
            return await self._log_stats(session, project_id)

    async def compact(self, project_uuid: str) -> CompactionResult | None:
        """Fold the log into a new snapshot; None when there was nothing to fold.

        Two compactions of one project may race (a room unloading while a
        threshold compaction runs, or two workers): the snapshot is replaced
        only if its version is still the one this merge started from, else the
        merge is discarded and redone, so a snapshot that already folded in a
        newer update is never overwritten by an older one. (PostgreSQL also
        serialises them with the row lock; SQLite ignores FOR UPDATE.)
        """
        for _ in range(_COMPACT_ATTEMPTS):
            try:
                return await self._compact_once(project_uuid)
            except _SnapshotChanged:
                continue
        return None

    async def _compact_once(self, project_uuid: str) -> CompactionResult | None:
        async with self._sessionmaker() as session, session.begin():
            project_id = await self._find_project_id(session, project_uuid)
            if project_id is None:
                return None
            document = (
                await session.execute(
                    select(YjsDocument.id, YjsDocument.snapshot, YjsDocument.snapshot_version)
                    .where(YjsDocument.project_id == project_id)
                    .with_for_update()
                )
            ).one_or_none()
            rows = (
                await session.execute(
                    select(YjsUpdate.id, YjsUpdate.update)
                    .where(YjsUpdate.project_id == project_id)
                    .order_by(YjsUpdate.id)
                )
            ).all()
            if document is None or not rows:
                return None
            updates = [row.update for row in rows]
            merged = ([document.snapshot] if document.snapshot else []) + updates
            sources = ([None] if document.snapshot else []) + [row.id for row in rows]
            snapshot = await asyncio.to_thread(build_snapshot, merged)
            version = document.snapshot_version + 1
            replaced = await session.execute(
                update(_DOCUMENTS)
                .where(
                    _DOCUMENTS.c.id == document.id,
                    _DOCUMENTS.c.snapshot_version == document.snapshot_version,
                )
                .values(
                    snapshot=snapshot.update,
                    state_vector=snapshot.state_vector,
                    snapshot_version=version,
                )
            )
            if cast(CursorResult[Any], replaced).rowcount != 1:  # an UPDATE's result is a cursor's
                raise _SnapshotChanged  # rolls the transaction back
            if snapshot.rejected:  # left out of the snapshot: kept aside, not lost
                await session.execute(
                    insert(_QUARANTINE),
                    [
                        {
                            "project_id": project_id,
                            "update": merged[index],
                            "reason": "refused by pycrdt during compaction",
                            "source_id": sources[index],
                        }
                        for index in snapshot.rejected
                    ],
                )
            merged_ids = [row.id for row in rows]
            for start in range(0, len(merged_ids), _DELETE_CHUNK):
                await session.execute(
                    delete(_UPDATES).where(
                        _UPDATES.c.id.in_(merged_ids[start : start + _DELETE_CHUNK])
                    )
                )
            return CompactionResult(
                merged_updates=len(rows),
                merged_bytes=sum(len(u) for u in updates),
                snapshot_bytes=len(snapshot.update),
                snapshot_version=version,
                quarantined=len(snapshot.rejected),
            )

    async def _log_stats(self, session: AsyncSession, project_id: int) -> LogStats:
        snapshot_size = (
            select(func.coalesce(func.length(YjsDocument.snapshot), 0))
            .where(YjsDocument.project_id == project_id)
            .scalar_subquery()
        )
        count, size, snapshot = (
            await session.execute(
                select(
                    func.count(YjsUpdate.id),
                    func.coalesce(func.sum(func.length(YjsUpdate.update)), 0),
                    snapshot_size,
                ).where(YjsUpdate.project_id == project_id)
            )
        ).one()
        return LogStats(int(count), int(size), int(snapshot or 0))

    async def _find_project_id(self, session: AsyncSession, project_uuid: str) -> int | None:
        cached = self._project_ids.get(project_uuid)
        if cached is not None:
            return cached
        project_id = await session.scalar(
            select(Project.id).where(Project.uuid == uuid_module.UUID(project_uuid))
        )
        if project_id is not None:
            self._project_ids[project_uuid] = project_id
        return project_id

    async def _ensure_project_id(self, session: AsyncSession, project_uuid: str) -> int:
        """The project's id, creating the project and its document row when missing.

        The document row is ensured (a no-op upsert) until a commit has shown
        that it exists: a project created elsewhere (by the gateway) has none,
        and its id may already be cached by a load. Ids found here are not cached, since this
        transaction may still roll back; callers cache them after commit.
        """
        project_id = self._project_ids.get(project_uuid)
        if project_id is None:
            await session.execute(
                upsert_insert(session)(Project)
                .values(uuid=uuid_module.UUID(project_uuid), title="")
                .on_conflict_do_nothing(index_elements=["uuid"])
            )
            project_id = await session.scalar(
                select(Project.id).where(Project.uuid == uuid_module.UUID(project_uuid))
            )
            if project_id is None:
                raise LookupError(f"project {project_uuid} was deleted while it was being created")
        if project_id not in self._documents:
            await session.execute(
                upsert_insert(session)(YjsDocument)
                .values(project_id=project_id, snapshot=b"", state_vector=b"", snapshot_version=0)
                .on_conflict_do_nothing(index_elements=["project_id"])
            )
        return project_id

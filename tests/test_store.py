"""The document store against SQLite and PostgreSQL: append, load, compact.

Every database test here runs twice, once per backend (the
`migrated_database_url` fixture). The last test drives the collab service's
`StoreWriter` through a real server and checks that the compaction thresholds
fire.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from pycrdt import Doc, Text
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import shared.store as store_module
from services.persistence.group_commit import GroupCommit
from shared.compaction import LogSizes, build_doc, build_snapshot, missing_from
from shared.config import Settings
from shared.db.engine import create_engine, create_sessionmaker
from shared.db.models import Project, YjsDocument, YjsUpdate
from shared.store import DocumentStore, LogStats
from tests.support.app_server import InProcessServer
from tests.support.yclient import YClient

pytestmark = pytest.mark.integration

EPOCH = "5a1f0c3e9b7d2468"  # the Redis server lifetime the test's log positions come from


@pytest.fixture
async def sessionmaker(
    migrated_database_url: str,
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(migrated_database_url)
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()


@pytest.fixture
def store(sessionmaker: async_sessionmaker[AsyncSession]) -> DocumentStore:
    return DocumentStore(sessionmaker)


class Recorder:
    """A pycrdt document whose every local transaction is captured as one update."""

    def __init__(self) -> None:
        self.doc: Doc = Doc()
        self.text: Text = self.doc.get("t", type=Text)
        self.updates: list[bytes] = []
        self.doc.observe(lambda event: self.updates.append(event.update))

    def take(self) -> list[bytes]:
        updates, self.updates = self.updates, []
        return updates


def text_of(updates: list[bytes]) -> str:
    return str(build_doc(updates).get("t", type=Text))


def new_project() -> str:
    return str(uuid.uuid4())


# --------------------------------------------------------------------------- basics


async def test_append_and_load_round_trip(store: DocumentStore) -> None:
    project = new_project()
    assert await store.load_updates(project) == []  # unknown project: empty document

    rec = Recorder()
    rec.text += "hello"
    rec.text += " wörld €😀"
    rec.text.insert(0, ">> ")
    first = rec.take()
    assert len(first) == 3
    await store.append({project: first})
    assert await store.log_stats(project) == LogStats(3, sum(len(u) for u in first))

    loaded = await store.load_updates(project)
    assert loaded == first  # no snapshot yet: the log, oldest first, byte for byte
    assert text_of(loaded) == ">> hello wörld €😀"

    del rec.text[0:3]
    second = rec.take()
    await store.append({project: second})
    assert text_of(await store.load_updates(project)) == "hello wörld €😀"


async def test_append_several_projects_in_one_call(
    store: DocumentStore, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    a, b, empty = new_project(), new_project(), new_project()
    ra, rb = Recorder(), Recorder()
    ra.text += "alpha"
    rb.text += "beta"
    rb.text += "!"
    await store.append({a: ra.take(), b: rb.take(), empty: []})
    async with sessionmaker() as session:  # projects without updates are skipped
        created = {str(u) for u in (await session.scalars(select(Project.uuid))).all()}
    assert a in created and b in created and empty not in created
    assert (await store.log_stats(a)).count == 1 and (await store.log_stats(b)).count == 2
    assert text_of(await store.load_updates(a)) == "alpha"
    assert text_of(await store.load_updates(b)) == "beta!"


async def test_log_stats(store: DocumentStore) -> None:
    project = new_project()
    assert await store.log_stats(project) == LogStats(0, 0)
    rec = Recorder()
    sizes = 0
    for i in range(7):
        rec.text += f"edit {i};"
    updates = rec.take()
    sizes = sum(len(u) for u in updates)
    await store.append({project: updates[:4]})
    await store.append({project: updates[4:]})
    assert await store.log_stats(project) == LogStats(7, sizes)
    result = await store.compact(project)
    assert result is not None
    assert await store.log_stats(project) == LogStats(0, 0, result.snapshot_bytes)


def log_entries(count: int, ms: int = 1000) -> tuple[list[bytes], list[tuple[tuple[int, int], bytes]]]:
    """`count` updates of a fresh document, and the same as Redis-log entries `(position, update)`."""
    rec = Recorder()
    for i in range(count):
        rec.text += f"{i};"
    updates = rec.take()
    return updates, [((ms, i), update) for i, update in enumerate(updates)]


async def test_append_from_logs_writes_each_entry_once_across_projects(store: DocumentStore) -> None:
    a, b, c = new_project(), new_project(), new_project()
    updates_a, entries_a = log_entries(5)
    updates_b, entries_b = log_entries(4, ms=2000)
    updates_c, entries_c = log_entries(2, ms=3000)
    size = {a: sum(map(len, updates_a)), b: sum(map(len, updates_b)), c: sum(map(len, updates_c))}
    first = await store.append_from_logs(
        epoch=EPOCH, batch={a: entries_a[:3], b: entries_b, c: [], new_project(): []}, with_stats_for={a, c}
    )
    # projects without entries are skipped; stats only where asked for
    assert first == {a: (3, LogStats(3, sum(map(len, updates_a[:3])))), b: (4, None)}
    # a second pass over the whole logs (another worker, a retry) writes only what is new, per project
    second = await store.append_from_logs(epoch=EPOCH, batch={a: entries_a, b: entries_b, c: entries_c}, with_stats_for={a, b, c})
    assert second == {a: (2, LogStats(5, size[a])), b: (0, LogStats(4, size[b])), c: (2, LogStats(2, size[c]))}
    assert await store.append_from_logs(epoch=EPOCH, batch={c: entries_c, a: entries_a}) == {c: (0, None), a: (0, None)}
    assert await store.load_updates(a) == updates_a
    assert await store.load_updates(b) == updates_b
    assert await store.load_updates(c) == updates_c


async def test_append_from_logs_trusts_positions_only_within_one_redis_lifetime(store: DocumentStore) -> None:
    """A restarted or failed-over Redis may hand out ids below those already written:
    under another run id every entry is written (a duplicate is harmless, a skip loses it)."""
    project = new_project()
    updates, entries = log_entries(3, ms=5000)
    assert await store.append_from_logs({project: entries}, epoch=EPOCH) == {project: (3, None)}
    late_updates, late_entries = log_entries(2, ms=1000)  # a new server whose clock is behind
    assert await store.append_from_logs({project: late_entries}, epoch=EPOCH) == {project: (0, None)}
    assert await store.append_from_logs({project: late_entries}, epoch="another-run-id") == {project: (2, None)}
    assert await store.load_updates(project) == updates + late_updates


async def test_append_from_logs_creates_a_missing_document_row(
    store: DocumentStore, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """A project made by the gateway has no document row yet (and a load may
    have cached its id); a batch with it and an unknown project writes both."""
    from tests.support.fixtures_data import create_project

    made, unknown = await create_project(sessionmaker), new_project()
    assert await store.load_updates(made) == []  # caches the id, no document row
    updates_made, entries_made = log_entries(3)
    updates_unknown, entries_unknown = log_entries(2)
    written = await store.append_from_logs(epoch=EPOCH, batch={made: entries_made, unknown: entries_unknown})
    assert written == {made: (3, None), unknown: (2, None)}
    assert await store.load_updates(made) == updates_made
    assert await store.load_updates(unknown) == updates_unknown
    async with sessionmaker() as session:
        positions = (
            await session.execute(
                select(Project.uuid, YjsDocument.log_position).join(YjsDocument, YjsDocument.project_id == Project.id)
            )
        ).all()
    assert {str(u): p for u, p in positions if str(u) in (made, unknown)} == {made: f"{EPOCH}/1000-2", unknown: f"{EPOCH}/1000-1"}


async def test_racing_batches_over_the_same_projects_write_each_entry_once(
    sessionmaker: async_sessionmaker[AsyncSession], migrated_database_url: str
) -> None:
    """Two workers (two stores) committing overlapping batches, listed in
    opposite orders, at the same time: no deadlock, no entry twice. PostgreSQL
    only: the persistence workers' database (SQLite ignores FOR UPDATE)."""
    if migrated_database_url.startswith("sqlite"):
        pytest.skip("row locks: PostgreSQL only")
    projects = [new_project() for _ in range(6)]
    logs = {project: log_entries(30, ms=1000 + i) for i, project in enumerate(projects)}
    one, other = DocumentStore(sessionmaker), DocumentStore(sessionmaker)
    for upto in (10, 20, 30):
        results = await asyncio.wait_for(
            asyncio.gather(
                one.append_from_logs(epoch=EPOCH, batch={p: logs[p][1][:upto] for p in projects}),
                other.append_from_logs(epoch=EPOCH, batch={p: logs[p][1][:upto] for p in reversed(projects)}),
            ),
            30,
        )
        for project in projects:
            assert results[0][project][0] + results[1][project][0] == 10
    for project in projects:
        assert await one.load_updates(project) == logs[project][0]


async def test_a_batch_locks_documents_lowest_id_first(
    sessionmaker: async_sessionmaker[AsyncSession], migrated_database_url: str
) -> None:
    """While a batch waits for one document's row lock it holds none with a
    higher id, so batches over overlapping projects (two workers) queue
    instead of deadlocking, whatever order their projects come in."""
    if migrated_database_url.startswith("sqlite"):
        pytest.skip("row locks: PostgreSQL only")
    low, high = new_project(), new_project()
    logs = {low: log_entries(4)[1], high: log_entries(4, ms=2000)[1]}
    store, other = DocumentStore(sessionmaker), DocumentStore(sessionmaker)
    await store.append_from_logs(epoch=EPOCH, batch={low: logs[low][:1]})  # document rows, in id order
    await store.append_from_logs(epoch=EPOCH, batch={high: logs[high][:1]})
    async with sessionmaker() as blocker, blocker.begin():
        await blocker.execute(  # another worker's transaction holds the lower row
            select(YjsDocument.id)
            .join(Project, Project.id == YjsDocument.project_id)
            .where(Project.uuid == uuid.UUID(low))
            .with_for_update()
        )
        waiting = asyncio.create_task(store.append_from_logs(epoch=EPOCH, batch={high: logs[high][:2], low: logs[low][:2]}))
        lock_waits = text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
        async with asyncio.timeout(10):
            while True:  # polling PostgreSQL until the batch waits for the lock
                async with sessionmaker() as session:  # (a fresh transaction: the view is snapshotted per one)
                    if await session.scalar(lock_waits):
                        break
                await asyncio.sleep(0.02)
        # the higher row is free: a batch over it alone commits meanwhile
        assert await asyncio.wait_for(other.append_from_logs(epoch=EPOCH, batch={high: logs[high][:3]}), 10) == {high: (2, None)}
        assert not waiting.done()
    assert await asyncio.wait_for(waiting, 10) == {high: (0, None), low: (1, None)}
    assert await store.load_updates(high) == [update for _, update in logs[high][:3]]


def test_missing_from_is_exactly_what_the_durable_updates_lack() -> None:
    rec = Recorder()
    rec.text += "kept;"
    durable = rec.take()
    rec.text += "lost;"
    del rec.text[0:2]  # a deletion only: no new clock, still a change
    held = rec.doc.get_update()
    missing = missing_from(durable, held)
    assert missing is not None
    assert str(build_doc([*durable, missing]).get("t", type=Text)) == "pt;lost;"
    assert missing_from([*durable, missing], held) is None  # nothing left to put back
    assert missing_from([held], held) is None


def test_log_sizes_count_in_memory_until_a_compaction() -> None:
    sizes = LogSizes()
    assert sizes.grown("p", 2, 20) is None and sizes.get("p") is None  # unknown: the caller queries
    sizes.set("p", LogStats(3, 30, 100))  # what the query counted
    assert sizes.grown("p", 2, 20) == LogStats(5, 50, 100)
    assert sizes.grown("p", 0, 0) == sizes.get("p") == LogStats(5, 50, 100)
    assert sizes.get("q") is None
    sizes.forget("p")  # compacted: the next write queries again
    assert sizes.get("p") is None and sizes.grown("p", 1, 10) is None
    sizes.forget("p")  # forgetting an unknown project is harmless


def test_worker_write_amplification_is_database_bytes_over_update_bytes() -> None:
    from prometheus_client import CollectorRegistry

    from services.persistence.metrics import WorkerMetrics

    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    metrics.record_written(0, 500)  # a snapshot before any update: no ratio yet
    assert registry.get_sample_value("persistence_write_amplification") == 0.0
    metrics.record_written(100, 100)  # update rows
    metrics.record_written(0, 150)  # a compaction's snapshot
    assert registry.get_sample_value("persistence_update_bytes_total") == 100.0
    assert registry.get_sample_value("persistence_db_bytes_written_total") == 750.0
    assert registry.get_sample_value("persistence_write_amplification") == 7.5


async def test_compaction_of_nothing_returns_none(store: DocumentStore) -> None:
    assert await store.compact(new_project()) is None  # unknown project

    project = new_project()
    rec = Recorder()
    rec.text += "something"
    await store.append({project: rec.take()})
    result = await store.compact(project)
    assert result is not None and result.merged_updates == 1 and result.snapshot_version == 1
    assert await store.compact(project) is None  # log empty now
    assert text_of(await store.load_updates(project)) == "something"


async def test_successive_compactions_keep_history(store: DocumentStore) -> None:
    project = new_project()
    rec = Recorder()
    expected_versions = []
    for round_ in range(3):
        rec.text += f"[round {round_}]"
        await store.append({project: rec.take()})
        result = await store.compact(project)
        assert result is not None
        expected_versions.append(result.snapshot_version)
        # the previous snapshot is folded in, not replaced
        assert text_of(await store.load_updates(project)) == str(rec.text)
    assert expected_versions == [1, 2, 3]
    assert len(await store.load_updates(project)) == 1  # just the snapshot


async def test_project_created_by_the_gateway_is_compacted(
    store: DocumentStore, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """A project row made elsewhere (gateway) has no document row; a room's
    load caches its id first. Appends must still create the document row, or
    compaction never happens for such projects."""
    from tests.support.fixtures_data import create_project

    project = await create_project(sessionmaker, title="made by the gateway")
    assert await store.load_updates(project) == []  # the room loads first
    rec = Recorder()
    rec.text += "edited in a gateway-made project"
    await store.append({project: rec.take()})
    result = await store.compact(project)
    assert result is not None and result.snapshot_version == 1
    assert text_of(await store.load_updates(project)) == "edited in a gateway-made project"
    assert await store.log_stats(project) == LogStats(0, 0, result.snapshot_bytes)


# --------------------------------------------------------------------------- compaction


def random_edits(count: int, seed: int) -> Recorder:
    """`count` random insertions and deletions on a Text, one transaction each."""
    rng = random.Random(seed)
    rec = Recorder()
    # ASCII only: pycrdt's Text indexes UTF-8 bytes, so random positions
    # could fall inside a multi-byte character (non-ASCII is covered above).
    alphabet = "abcdefghijklmnopqrstuvwxyz ABC.,;\n"
    for _ in range(count):
        length = len(rec.text)
        if length > 20 and rng.random() < 0.4:
            start = rng.randrange(length)
            end = min(length, start + rng.randint(1, 8))
            del rec.text[start:end]
        else:
            chunk = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6)))
            rec.text.insert(rng.randint(0, length), chunk)
    return rec


async def test_compaction_preserves_10k_random_edits(
    store: DocumentStore, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    project = new_project()
    rec = random_edits(10_000, seed=20240601)
    updates = rec.take()
    assert len(updates) == 10_000
    expected = str(rec.text)
    assert len(expected) > 100

    for start in range(0, len(updates), 1000):
        await store.append({project: updates[start : start + 1000]})
    assert await store.log_stats(project) == LogStats(10_000, sum(len(u) for u in updates))
    assert text_of(await store.load_updates(project)) == expected

    result = await store.compact(project)
    assert result is not None
    assert result.merged_updates == 10_000
    assert result.merged_bytes == sum(len(u) for u in updates)
    assert result.snapshot_bytes < result.merged_bytes

    loaded = await store.load_updates(project)
    assert len(loaded) == 1  # the snapshot alone
    assert len(loaded[0]) == result.snapshot_bytes
    assert text_of(loaded) == expected
    assert await store.log_stats(project) == LogStats(0, 0, result.snapshot_bytes)

    # the snapshot is a complete document: a client with it needs nothing more
    assert build_doc(loaded).get_state() == rec.doc.get_state()
    # and the stored state vector matches it
    async with sessionmaker() as session:
        row = (
            await session.execute(
                select(YjsDocument.state_vector, YjsDocument.snapshot_version)
                .join(Project, Project.id == YjsDocument.project_id)
                .where(Project.uuid == uuid.UUID(project))
            )
        ).one()
    assert row.state_vector == rec.doc.get_state()
    assert row.snapshot_version == 1

    # edits made after the compaction still apply on top of the snapshot
    rec.text.insert(0, "after:")
    await store.append({project: rec.take()})
    assert text_of(await store.load_updates(project)) == "after:" + expected


def _hold_snapshot_build(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[threading.Event, threading.Event]:
    """Make the store's snapshot build block until released.

    Returns (building, release): `building` is set once compaction has read
    the log and is merging it; the merge continues when `release` is set.
    """
    building, release = threading.Event(), threading.Event()

    def held_build(updates):  # type: ignore[no-untyped-def]
        building.set()
        if not release.wait(30):
            raise TimeoutError("test never released the compaction")
        return build_snapshot(updates)

    monkeypatch.setattr(store_module, "build_snapshot", held_build)
    return building, release


async def _wait_thread_event(event: threading.Event, timeout: float = 10.0) -> None:
    assert await asyncio.to_thread(event.wait, timeout), "compaction never reached the merge"


async def test_update_appended_during_compaction_survives(
    store: DocumentStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = new_project()
    rec = random_edits(500, seed=7)
    await store.append({project: rec.take()})

    building, release = _hold_snapshot_build(monkeypatch)
    compaction = asyncio.create_task(store.compact(project))
    await _wait_thread_event(building)  # compaction has read the log and is merging it

    rec.text += "<appended during compaction>"
    late = rec.take()
    assert len(late) == 1
    # The append must commit while the compaction is still in flight.
    await asyncio.wait_for(store.append({project: late}), 10)
    assert (await store.log_stats(project)).count == 501
    assert not compaction.done()

    release.set()
    result = await asyncio.wait_for(compaction, 30)
    assert result is not None and result.merged_updates == 500  # the late one was not folded in

    monkeypatch.undo()
    assert await store.log_stats(project) == LogStats(1, len(late[0]), result.snapshot_bytes)
    assert text_of(await store.load_updates(project)) == str(rec.text)
    again = await store.compact(project)
    assert again is not None and again.merged_updates == 1 and again.snapshot_version == 2
    assert text_of(await store.load_updates(project)) == str(rec.text)
    assert str(rec.text).endswith("<appended during compaction>")


async def test_append_racing_a_real_compaction_of_a_large_log(store: DocumentStore) -> None:
    """No hooks: appends keep arriving while a long compaction runs."""
    project = new_project()
    rec = random_edits(10_000, seed=11)
    updates = rec.take()
    for start in range(0, len(updates), 2500):
        await store.append({project: updates[start : start + 2500]})

    compaction = asyncio.create_task(store.compact(project))
    appended = 0
    during = 0
    while not compaction.done() or appended == 0:
        rec.text += f"<{appended}>"
        await store.append({project: rec.take()})
        appended += 1
        if not compaction.done():
            during += 1
    result = await compaction
    assert result is not None
    assert during >= 1, "no append overlapped the compaction"
    assert result.merged_updates >= 10_000
    assert text_of(await store.load_updates(project)) == str(rec.text)
    await store.compact(project)
    assert text_of(await store.load_updates(project)) == str(rec.text)


async def test_concurrent_compactions_lose_nothing(
    store: DocumentStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two compactions of one project (e.g. a room unloading while a threshold
    compaction runs) with an append between them: the last writer must not
    overwrite a snapshot that already folded in the newer update."""
    project = new_project()
    rec = Recorder()
    rec.text += "base"
    await store.append({project: rec.take()})

    building, release = _hold_snapshot_build(monkeypatch)
    slow = asyncio.create_task(store.compact(project))  # reads {base}, then blocks
    await _wait_thread_event(building)

    rec.text += "+late"
    await store.append({project: rec.take()})
    monkeypatch.undo()  # the second compaction builds without waiting
    fast = asyncio.create_task(store.compact(project))
    # Let the second compaction run as far as it can while the first holds
    # (to the end on SQLite; on PostgreSQL it waits for the first's row lock).
    await asyncio.wait({fast}, timeout=0.5)
    release.set()
    await asyncio.wait_for(asyncio.gather(slow, fast, return_exceptions=True), 30)
    for task in (slow, fast):
        exc = task.exception()
        assert exc is None, f"compaction failed: {exc!r}"

    assert text_of(await store.load_updates(project)) == "base+late"
    await store.compact(project)
    assert text_of(await store.load_updates(project)) == "base+late"


class _Gate:
    """Pauses the task that set it after its first SQL statement."""

    def __init__(self) -> None:
        self.statements = 0
        self.paused = asyncio.Event()
        self.release = asyncio.Event()


_GATE: contextvars.ContextVar[_Gate | None] = contextvars.ContextVar("gate", default=None)


class _GatedSession(AsyncSession):
    """An AsyncSession that lets a test stop a chosen task between two statements."""

    async def _after_statement(self) -> None:
        gate = _GATE.get()
        if gate is not None:
            gate.statements += 1
            if gate.statements == 1:
                gate.paused.set()
                await gate.release.wait()

    async def execute(self, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        result = await super().execute(*args, **kwargs)
        await self._after_statement()
        return result

    async def scalar(self, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        result = await super().scalar(*args, **kwargs)
        await self._after_statement()
        return result

    async def scalars(self, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        result = await super().scalars(*args, **kwargs)
        await self._after_statement()
        return result


async def test_load_during_a_compaction_is_complete(migrated_database_url: str) -> None:
    """A room loading while a compaction commits must not read the old (empty)
    snapshot and then the new (emptied) log."""
    engine = create_engine(migrated_database_url)
    try:
        store = DocumentStore(
            async_sessionmaker(engine, class_=_GatedSession, expire_on_commit=False)
        )
        project = new_project()
        rec = Recorder()
        rec.text += "only in the log until compacted"
        await store.append({project: rec.take()})
        assert await store.load_updates(project)  # caches the project id: the load below
        # goes straight to reading the document

        gate = _Gate()

        async def gated_load() -> list[bytes]:
            _GATE.set(gate)
            return await store.load_updates(project)

        load = asyncio.create_task(gated_load())
        await asyncio.wait_for(gate.paused.wait(), 10)  # the load has run one query
        result = await asyncio.wait_for(store.compact(project), 10)
        assert result is not None
        gate.release.set()
        assert text_of(await asyncio.wait_for(load, 10)) == "only in the log until compacted"
    finally:
        await engine.dispose()


# --------------------------------------------------------------------------- StoreWriter thresholds


def _local_backplane(store: DocumentStore):  # type: ignore[no-untyped-def]
    from prometheus_client import CollectorRegistry

    from services.collab.backplane import LocalBackplane
    from services.collab.metrics import CollabMetrics
    from services.collab.store_writer import StoreWriter
    from shared.compaction import CompactionPolicy

    writer = StoreWriter(store, CompactionPolicy(), CollabMetrics(CollectorRegistry()), interval=60)
    return LocalBackplane(store, writer), writer


async def test_backplane_load_sees_updates_while_their_write_is_in_flight(
    store: DocumentStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Single-instance loads (a room, a gateway export) read the store plus
    the writer's unwritten updates; a batch being committed is in neither
    place unless the writer still reports it."""
    backplane, writer = _local_backplane(store)
    project = new_project()
    rec = Recorder()
    rec.text += "accepted, being written"
    writer.submit(project, rec.take()[0])

    entered, release = asyncio.Event(), asyncio.Event()
    real_append = store.append

    async def slow_append(batch, **options):  # type: ignore[no-untyped-def]
        entered.set()
        await release.wait()
        return await real_append(batch, **options)

    monkeypatch.setattr(store, "append", slow_append)
    flush = asyncio.create_task(writer.flush())
    try:
        await asyncio.wait_for(entered.wait(), 10)  # the batch is in flight
        assert text_of(await backplane.load(project)) == "accepted, being written"
    finally:
        release.set()
        await asyncio.wait_for(flush, 10)
    assert text_of(await backplane.load(project)) == "accepted, being written"


async def test_backplane_load_racing_a_flush_commit_is_complete(migrated_database_url: str) -> None:
    """The write commits while the load is between its store read and asking
    the writer: the load must not miss the batch in both places."""
    engine = create_engine(migrated_database_url)
    try:
        store = DocumentStore(
            async_sessionmaker(engine, class_=_GatedSession, expire_on_commit=False)
        )
        backplane, writer = _local_backplane(store)
        project = new_project()
        rec = Recorder()
        rec.text += "seed"
        await store.append({project: rec.take()})  # the project exists, its id is cached
        await store.load_updates(project)
        rec.text += "+pending"
        writer.submit(project, rec.take()[0])

        gate = _Gate()

        async def gated_load() -> list[bytes]:
            _GATE.set(gate)
            return await backplane.load(project)

        load = asyncio.create_task(gated_load())
        await asyncio.wait_for(gate.paused.wait(), 10)  # the store read has begun
        await asyncio.wait_for(writer.flush(), 10)  # ...and the batch commits meanwhile
        gate.release.set()
        assert text_of(await asyncio.wait_for(load, 10)) == "seed+pending"
    finally:
        await engine.dispose()


async def _db_state(url: str, project_uuid: str) -> tuple[int, int]:
    """(rows in yjs_updates, snapshot_version) of a project, read directly."""
    engine = create_engine(url)
    try:
        async with create_sessionmaker(engine)() as session:
            project_id = await session.scalar(
                select(Project.id).where(Project.uuid == uuid.UUID(project_uuid))
            )
            if project_id is None:
                return 0, 0
            count = await session.scalar(
                select(func.count())
                .select_from(YjsUpdate)
                .where(YjsUpdate.project_id == project_id)
            )
            version = await session.scalar(
                select(YjsDocument.snapshot_version).where(YjsDocument.project_id == project_id)
            )
            return int(count or 0), int(version or 0)
    finally:
        await engine.dispose()


async def _until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    """Poll an async condition (a database query) until it holds, bounded."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_store_writer_compacts_on_count_threshold(
    settings: Settings, migrated_database_url: str
) -> None:
    from services.embedded import create_app

    srv = await InProcessServer(
        create_app,
        settings.with_overrides(
            database_url=migrated_database_url,
            compact_max_updates=5,
            compact_max_bytes=10 * 1024 * 1024,
            room_unload_grace=60.0,  # the room stays loaded: only the threshold can compact
        ),
    ).start()
    project_uuid = str(uuid.uuid4())
    room = f"project-{project_uuid}"
    try:
        token = await srv.grant(room, "writer")
        async with await YClient.connect(srv.ws_url, room, token) as client:
            expected = "".join(f"{i}," for i in range(40))
            for i in range(40):
                client.append(f"{i},")
            async with await YClient.connect(srv.ws_url, room, token) as probe:
                await probe.wait_text(expected)

            async def compacted() -> bool:
                count, version = await _db_state(migrated_database_url, project_uuid)
                return version > 0 and count < 40

            await _until(compacted, 15, "a threshold compaction")
            count, version = await _db_state(migrated_database_url, project_uuid)
            assert version >= 1
            assert count < 40
    finally:
        await srv.stop()

    # and the compacted store still holds every edit
    engine = create_engine(migrated_database_url)
    try:
        stored = await DocumentStore(create_sessionmaker(engine)).load_updates(project_uuid)
    finally:
        await engine.dispose()
    assert text_of(stored) == expected


# --------------------------------------------------------------------------- quarantine


async def test_quarantine_moves_the_rows_and_compaction_sets_aside_what_panics(
    store: DocumentStore, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """On SQLite and PostgreSQL: `quarantine` moves matching rows in one transaction
    (an update in no row is recorded without a source); a compaction leaves out and
    sets aside a row pycrdt panics on (the pair of tests/test_panics.py)."""
    from shared.db.models import YjsQuarantine
    from tests.test_panics import U, X

    project, other = new_project(), new_project()
    updates, _ = log_entries(3)
    await store.append({project: [X, U, *updates], other: [X, U]})
    assert await store.quarantine(project, [U, b"\x01\x00"], "test") == 2
    assert U not in await store.load_updates(project)
    assert U in await store.load_updates(other)  # another project's row is untouched
    async with sessionmaker() as session:
        rows = (await session.execute(select(YjsQuarantine.update, YjsQuarantine.source_id))).all()
    assert sorted((bytes(r.update), r.source_id is None) for r in rows) == [(b"\x01\x00", True), (U, False)]

    result = await store.compact(other)
    assert result is not None and result.quarantined == 1 and result.merged_updates == 2
    (snapshot,) = await store.load_updates(other)
    assert str(build_doc([snapshot]).get("codemirror", type=Text)) == "hello world"
    async with sessionmaker() as session:
        assert await session.scalar(select(func.count(YjsQuarantine.id))) == 3


class CountingStore(DocumentStore):
    """A real store that counts its `append_from_logs` transactions."""

    transactions = 0

    async def append_from_logs(self, *args: Any, **kwargs: Any) -> dict[str, tuple[int, LogStats | None]]:
        self.transactions += 1
        return await super().append_from_logs(*args, **kwargs)


async def test_passes_that_commit_at_once_share_a_transaction_each_under_its_run_id(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    store = CountingStore(sessionmaker)
    commits = GroupCommit(store)
    projects = [new_project() for _ in range(4)]
    logs = {project: log_entries(3, ms=1000 * (n + 1)) for n, project in enumerate(projects)}
    results = await asyncio.gather(
        *(
            commits.append({project: logs[project][1]}, epoch=f"run-{n}", with_stats_for={project})
            for n, project in enumerate(projects)
        )
    )
    assert store.transactions == 1  # four passes of one tick, one transaction
    for project, result in zip(projects, results):
        assert result == {project: (3, LogStats(3, sum(map(len, logs[project][0]))))}
        assert await store.load_updates(project) == logs[project][0]
    # each project's position is under its own pass's run id: a replay there writes nothing...
    again = await commits.append({projects[1]: logs[projects[1]][1]}, epoch="run-1", with_stats_for=())
    assert again == {projects[1]: (0, None)}
    # ...while the same positions under another server's run id are taken again
    other = await commits.append({projects[1]: logs[projects[1]][1]}, epoch="run-0", with_stats_for=())
    assert other == {projects[1]: (3, None)}


async def test_a_failed_group_commit_fails_every_pass_in_it(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    commits = GroupCommit(DocumentStore(sessionmaker))
    good, bad = new_project(), "not-a-uuid"
    outcomes = await asyncio.gather(
        commits.append({good: log_entries(1)[1]}, epoch=EPOCH, with_stats_for=()),
        commits.append({bad: log_entries(1)[1]}, epoch=EPOCH, with_stats_for=()),
        return_exceptions=True,
    )
    assert all(isinstance(outcome, Exception) for outcome in outcomes)
    assert await DocumentStore(sessionmaker).load_updates(good) == []  # nothing half-committed
    # the next pass commits on its own
    assert await commits.append({good: log_entries(1)[1]}, epoch=EPOCH, with_stats_for=()) == {good: (1, None)}

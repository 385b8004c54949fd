"""Batched, retrying writes of accepted updates to the document store.

Used in single-instance mode, where the collab process persists its own
updates (in multi-instance mode the persistence worker does it from the Redis
log). Updates are collected for `interval` seconds and written in one
transaction; a failed write keeps the batch and retries with backoff, so a
database restart loses nothing that was accepted. Compaction runs when a
project's log passes the policy's thresholds and when its room unloads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict

from services.collab.metrics import CollabMetrics
from shared.backoff import Backoff
from shared.compaction import CompactionPolicy, IdleTracker, LogSizes, LogStats
from shared.store import DocumentStore

log = logging.getLogger(__name__)

MAX_BACKOFF = 5.0


class StoreWriter:
    def __init__(
        self,
        store: DocumentStore,
        policy: CompactionPolicy,
        metrics: CollabMetrics,
        *,
        interval: float = 0.2,
        idle_compact_seconds: float = 30.0,
    ) -> None:
        self._store = store
        self._policy = policy
        self._metrics = metrics
        self._interval = interval
        self._pending: dict[str, list[bytes]] = defaultdict(list)
        self._writing: dict[str, list[bytes]] = {}  # the batch being committed
        self._wakeup = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._compactions: dict[str, asyncio.Task[None]] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._idle = IdleTracker(idle_compact_seconds)
        self._sizes = LogSizes()
        self._idle_task: asyncio.Task[None] | None = None

    def submit(self, project_uuid: str, update: bytes) -> None:
        """Queue an accepted update; it is written within about `interval` seconds."""
        self._pending[project_uuid].append(update)
        self._metrics.store_pending.inc()
        self._wakeup.set()

    def pending(self, project_uuid: str) -> list[bytes]:
        """Updates accepted for a project but not yet committed (including a
        batch being written now). Ask before reading the store: whatever
        commits in between is then in one of the two answers."""
        return list(self._writing.get(project_uuid, ())) + list(self._pending.get(project_uuid, ()))

    async def start(self) -> None:
        self._loop_task = asyncio.create_task(self._run(), name="store-writer")
        self._idle_task = asyncio.create_task(self._compact_idle(), name="store-idle-compaction")

    async def stop(self) -> None:
        """Write everything pending and wait for running compactions."""
        for task in (self._loop_task, self._idle_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self.flush(retry=True)
        await asyncio.gather(*self._compactions.values(), return_exceptions=True)

    async def flush(self, *, retry: bool = False) -> None:
        """Write what is pending now; with `retry`, keep trying until it is written."""
        backoff = Backoff(0.1, MAX_BACKOFF)
        while True:
            try:
                await self._write_pending()
                return
            except Exception:
                self._metrics.store_errors.inc()
                log.exception("store write failed; will retry")
                if not retry:
                    raise
                await backoff.sleep()

    async def close_project(self, project_uuid: str) -> None:
        """Flush a project whose room is unloading, and compact it when worth it."""
        await self.flush(retry=True)
        if await self._due_when_idle(project_uuid):
            await self._compact(project_uuid)

    async def _run(self) -> None:
        backoff = Backoff(0.1, MAX_BACKOFF)
        while True:
            await self._wakeup.wait()
            await asyncio.sleep(self._interval)  # coalesce a burst into one transaction
            self._wakeup.clear()
            try:
                await self._write_pending()
                backoff.reset()
            except Exception:
                self._metrics.store_errors.inc()
                log.exception("store write failed; retrying in %.1fs", backoff.delay)
                self._wakeup.set()
                await backoff.sleep()

    async def _write_pending(self) -> None:
        async with self._flush_lock:
            if not self._pending:
                return
            batch, self._pending = self._pending, defaultdict(list)
            self._writing = batch
            try:
                await self._store.append(batch)
            except BaseException:
                for project_uuid, updates in batch.items():
                    self._pending[project_uuid][:0] = updates
                raise
            finally:
                self._writing = {}
            written = sum(len(updates) for updates in batch.values())
            self._metrics.store_pending.dec(written)
            self._metrics.store_updates.inc(written)
            self._metrics.store_flushes.inc()
        now = time.monotonic()
        for project_uuid, updates in batch.items():
            self._idle.touch(project_uuid, now)
            stats = await self._track(project_uuid, updates)
            if self._policy.due(stats.count, stats.bytes, stats.snapshot_bytes):
                self._schedule_compaction(project_uuid)

    async def _track(self, project_uuid: str, written: list[bytes]) -> LogStats:
        """The project's log size after `written`, counted here instead of by a
        query per flush (one query after start-up and after each compaction)."""
        stats = self._sizes.grown(project_uuid, len(written), sum(map(len, written)))
        if stats is None:
            stats = await self._store.log_stats(project_uuid)  # includes `written`
            self._sizes.set(project_uuid, stats)
        return stats

    async def _due_when_idle(self, project_uuid: str) -> bool:
        stats = self._sizes.get(project_uuid) or await self._store.log_stats(project_uuid)
        return self._policy.due_when_idle(stats.count, stats.bytes, stats.snapshot_bytes)

    def _schedule_compaction(self, project_uuid: str) -> None:
        if project_uuid in self._compactions:
            return
        task = asyncio.create_task(self._compact(project_uuid))
        self._compactions[project_uuid] = task
        task.add_done_callback(lambda _: self._compactions.pop(project_uuid, None))

    async def _compact_idle(self) -> None:
        while True:
            await asyncio.sleep(self._idle.check_interval)
            for project_uuid in self._idle.due(time.monotonic()):
                self._idle.compacted(project_uuid)  # checked now; the next write re-arms it
                try:
                    if await self._due_when_idle(project_uuid):
                        self._schedule_compaction(project_uuid)
                except Exception:
                    log.exception("idle compaction check failed", extra={"project": project_uuid})

    async def _compact(self, project_uuid: str) -> None:
        self._idle.compacted(project_uuid)
        try:
            result = await self._store.compact(project_uuid)
        except Exception:
            log.exception("compaction failed", extra={"project": project_uuid})
            return
        finally:
            self._sizes.forget(project_uuid)  # recounted on the next write
        if result is not None:
            self._metrics.compactions.inc()
            self._metrics.quarantined.inc(result.quarantined)
            log.info(
                "compacted",
                extra={
                    "project": project_uuid,
                    "merged_updates": result.merged_updates,
                    "snapshot_bytes": result.snapshot_bytes,
                    "quarantined": result.quarantined,
                },
            )

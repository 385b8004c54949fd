"""The persistence worker: Redis log -> `yjs_updates` -> compacted snapshot.

Work arrives on the `exe:yjs:dirty` stream (on a Redis Cluster: one stream per
partition, `PERSIST_PARTITIONS`, each consumed by a loop of its own, with the
same rules), consumed through the consumer group `persistence` (several
workers share the work; entries a dead worker left pending are claimed with
XAUTOCLAIM). A blocking XREADGROUP wakes the
worker as soon as a collab instance flags a project; it then gathers what
else arrives for `batch_seconds` and makes one pass over all the window's
projects, in a constant number of round trips however many there are: one
Redis pipeline reads their logs, one transaction commits the new entries
(exactly once, see `DocumentStore.append_from_logs`), one pipeline trims the
logs up to what was committed and acknowledges the window's work entries.
Nothing is acknowledged or trimmed before the commit, so a crash or a
database outage loses nothing: the next pass (here or on another worker)
redoes it. The logs' sizes for the compaction triggers are counted in memory
(`LogSizes`), not queried on every pass; compactions run after the pass, one
project at a time.

Redis may lose its data (restart without AOF, failover to a replica that had
not caught up, FLUSHALL). The worker then finds its consumer group gone
(NOGROUP on any read): it recreates the group from the start of whatever
stream exists and re-reads every project log, since the work entries that
pointed at them may be gone; log positions from the lost lifetime are not
trusted (see `LogReader`). The collab instances put back what the lost logs
held (see `RedisBackplane`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from typing import cast

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from services.persistence.group_commit import GroupCommit
from services.persistence.metrics import WorkerMetrics
from shared.backoff import Backoff
from shared.compaction import CompactionPolicy, IdleTracker, LogSizes, LogStats
from shared.redis_contract import (
    CONSUMER_GROUP,
    PROJECT_FIELD,
    SINGLE_REDIS,
    RedisLayout,
    format_stream_id,
    parse_stream_id,
)
from shared.redis_log import REDIS_ERRORS, LogReader, RedisClient
from shared.store import DocumentStore

log = logging.getLogger(__name__)

MAX_BACKOFF = 5.0


class PersistenceWorker:
    def __init__(
        self,
        redis: RedisClient,
        store: DocumentStore,
        policy: CompactionPolicy,
        metrics: WorkerMetrics,
        consumer: str,
        *,
        idle_compact_seconds: float = 30.0,
        claim_idle_ms: int = 15_000,
        batch_size: int = 200,
        batch_seconds: float = 0.1,
        layout: RedisLayout = SINGLE_REDIS,
    ) -> None:
        self._redis = redis
        self._layout = layout
        self._logs = LogReader(redis, layout)
        self._store = store
        self._commits = GroupCommit(store)
        self._policy = policy
        self._metrics = metrics
        self._consumer = consumer
        self._claim_idle_ms = claim_idle_ms
        self._batch_size = batch_size
        self._batch_seconds = batch_seconds
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._idle = IdleTracker(idle_compact_seconds)
        self._sizes = LogSizes()
        self._tasks: list[asyncio.Task[None]] = []
        self._last_pass = dict.fromkeys(range(layout.partitions), time.monotonic())
        metrics.consume_lag.set_function(self.stalled_for)

    def stalled_for(self) -> float:
        """Seconds since the slowest queue loop last completed a pass (grows while it cannot
        consume)."""
        return time.monotonic() - min(self._last_pass.values())

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._queue_loop(partition), name=f"worker-queue-{partition}")
            for partition in range(self._layout.partitions)
        ]
        self._tasks.append(asyncio.create_task(self._idle_loop(), name="worker-idle-compaction"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        try:
            await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), 5.0)
        except TimeoutError:
            log.warning("worker tasks did not stop within 5 s")
        # Let an in-flight commit finish; whatever is not acknowledged is redone later.
        await self._commits.wait_idle()
        for lock in list(self._locks.values()):
            async with lock:
                pass

    # a pass ------------------------------------------------------------------

    async def persist(self, work: Mapping[str, Sequence[bytes]]) -> int:
        """Commit the logs of the projects in `work` (one transaction per partition, shared
        with other loops' passes that commit at the same moment: `GroupCommit`); return the
        entries written.

        After each commit, one round trip trims the logs and acknowledges the
        work entries `work[project]`; then the projects due for compaction are
        compacted.
        """
        by_partition: dict[int, dict[str, Sequence[bytes]]] = defaultdict(dict)
        for project_uuid, entry_ids in work.items():
            by_partition[self._layout.partition(project_uuid)][project_uuid] = entry_ids
        written = 0
        for partition, part in sorted(by_partition.items()):
            written += await self._persist_partition(partition, part)
        return written

    async def _persist_partition(self, partition: int, work: Mapping[str, Sequence[bytes]]) -> int:
        projects = sorted(work)
        async with AsyncExitStack() as stack:
            for project_uuid in projects:  # in one order, so concurrent passes never wait in a cycle
                await stack.enter_async_context(self._locks[project_uuid])
            epoch, logs = await self._read_logs(projects)
            layout = self._layout
            results = await self._commits.append(
                logs, epoch=epoch, with_stats_for={p for p in logs if self._sizes.get(p) is None}
            )
            written, due = self._record(logs, results)
            async with self._redis.pipeline(transaction=False) as pipe:
                for project_uuid, entries in logs.items():
                    newest = entries[-1][0]
                    after_newest = format_stream_id((newest[0], newest[1] + 1))
                    pipe.xtrim(layout.log_stream(project_uuid), minid=after_newest, approximate=False)
                acknowledge = [entry_id for entry_ids in work.values() for entry_id in entry_ids]
                if acknowledge:
                    pipe.xack(layout.dirty_stream(partition), CONSUMER_GROUP, *acknowledge)
                await pipe.execute()
        for project_uuid in due:  # committed and acknowledged: a failure here loses nothing
            await self._compact_or_log(project_uuid)
        return written

    async def _read_logs(
        self, projects: Sequence[str]
    ) -> tuple[str, dict[str, list[tuple[tuple[int, int], bytes]]]]:
        """The run id of the Redis server holding them and the non-empty logs of `projects`
        (of one partition) as (position, update), oldest first, in one round trip."""
        epoch, logs = await self._logs.read(projects)
        return epoch, {
            project_uuid: [(parse_stream_id(entry_id), update) for entry_id, update in entries]
            for project_uuid, entries in logs.items()
            if entries
        }

    def _record(
        self,
        logs: Mapping[str, Sequence[tuple[tuple[int, int], bytes]]],
        results: Mapping[str, tuple[int, LogStats | None]],
    ) -> tuple[int, list[str]]:
        """Metrics and log sizes after a commit; returns (entries written, projects due for compaction)."""
        now_ms, now = time.time() * 1000, time.monotonic()
        total = total_bytes = 0
        due = []
        for project_uuid, entries in logs.items():
            written, counted = results[project_uuid]
            fresh = entries[len(entries) - written :]  # positions ascend: the new entries are the tail
            size = sum(len(update) for _, update in fresh)
            for position, _ in fresh:
                self._metrics.lag.observe(max(0.0, (now_ms - position[0]) / 1000))
            total, total_bytes = total + written, total_bytes + size
            self._idle.touch(project_uuid, now)
            if counted is None:
                stats = self._sizes.grown(project_uuid, written, size)
            else:
                stats = counted
                self._sizes.set(project_uuid, counted)
            if stats is not None and self._policy.due(stats.count, stats.bytes, stats.snapshot_bytes):
                due.append(project_uuid)
        if total:
            self._metrics.record_written(total_bytes, total_bytes)
            self._metrics.updates_persisted.inc(total)
            self._metrics.batches.inc()
        return total, due

    async def compact(self, project_uuid: str) -> None:
        async with self._locks[project_uuid]:
            result = await self._store.compact(project_uuid)
            self._idle.compacted(project_uuid)
            self._sizes.forget(project_uuid)
        if result is None:
            return
        self._metrics.compactions.inc()
        self._metrics.quarantined.inc(result.quarantined)
        self._metrics.record_written(0, result.snapshot_bytes)
        log.info(
            "compacted",
            extra={
                "project": project_uuid,
                "merged_updates": result.merged_updates,
                "merged_bytes": result.merged_bytes,
                "snapshot_bytes": result.snapshot_bytes,
                "quarantined": result.quarantined,
            },
        )

    async def _compact_or_log(self, project_uuid: str) -> None:
        """Compact; a failure is counted and logged (the log stays, a later trigger retries)."""
        try:
            await self.compact(project_uuid)
        except Exception:
            self._metrics.errors.labels("compaction").inc()
            log.exception("compaction failed", extra={"project": project_uuid})

    # the work queue ----------------------------------------------------------

    async def _ensure_group(self, stream: str) -> None:
        try:
            await self._redis.xgroup_create(stream, CONSUMER_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _queue_loop(self, partition: int) -> None:
        stream = self._layout.dirty_stream(partition)
        backoff = Backoff(0.1, MAX_BACKOFF)
        loop = asyncio.get_running_loop()
        group_ready = False
        own_pending = True  # at start-up and after a failed pass: our unacknowledged entries
        next_claim = 0.0
        while True:
            try:
                if not group_ready:  # at start-up, and after Redis lost its data
                    await self._ensure_group(stream)
                    await self._sweep_logs(partition)
                    group_ready = True
                self._metrics.redis_connected.set(1)
                # Our own unacknowledged entries first (a failed pass), then ones a dead
                # worker left behind (checked every quarter `claim_idle_ms`), then new work.
                entries = await self._read_group(stream, "0", block=None) if own_pending else []
                if not entries and loop.time() >= next_claim:
                    next_claim = loop.time() + self._claim_idle_ms / 4000
                    _, entries, _ = await self._redis.xautoclaim(
                        stream, CONSUMER_GROUP, self._consumer, self._claim_idle_ms, "0-0", count=self._batch_size
                    )
                if not entries:
                    entries = await self._read_group(stream, ">", block=1000)
                    if entries and self._batch_seconds > 0:
                        # gather the rest of the burst: one pass per window, the windows of
                        # every loop aligned so that their commits meet (`GroupCommit`)
                        await asyncio.sleep(self._batch_seconds - loop.time() % self._batch_seconds)
                        entries += await self._read_group(stream, ">", block=None)
                own_pending = bool(entries)  # cleared once the pass below succeeds
                await self._process(stream, entries)
                own_pending = False
                self._last_pass[partition] = time.monotonic()
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except ResponseError as exc:
                if "NOGROUP" in str(exc):
                    group_ready = False
                    log.error("the work queue's consumer group is gone: Redis lost its data; "
                              "recreating it and re-reading every log", extra={"stream": stream})
                else:
                    log.warning("work queue error: %s", exc)
                self._metrics.errors.labels("redis").inc()
                await backoff.sleep()
            except REDIS_ERRORS as exc:
                self._metrics.redis_connected.set(0)
                self._metrics.errors.labels("redis").inc()
                log.warning("Redis unavailable (%s); retrying in %.1fs", exc, backoff.delay)
                await backoff.sleep()
            except Exception:
                self._metrics.errors.labels("database").inc()
                log.exception("database write failed; retrying in %.1fs", backoff.delay)
                await backoff.sleep()

    async def _read_group(
        self, stream: str, start: str, block: int | None
    ) -> list[tuple[bytes, dict[bytes, bytes]]]:
        command: list[str | int] = ["XREADGROUP", "GROUP", CONSUMER_GROUP, self._consumer]
        command += ["COUNT", self._batch_size]
        if block is not None:
            command += ["BLOCK", block]
        response = await self._redis.execute_command(
            *command, "STREAMS", stream, start, **self._node_of(stream)
        )
        # redis-py types the reply for decode_responses either way; this client gets bytes
        entries = cast("list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] | None", response)
        return [entry for _, stream_entries in entries or [] for entry in stream_entries if entry[1]]

    def _node_of(self, stream: str) -> dict[str, object]:
        """On a cluster, the node serving `stream`: redis-py cannot find XREADGROUP's key
        (it follows a keyword) and would send COMMAND GETKEYS before every read."""
        if isinstance(self._redis, aioredis.RedisCluster):
            return {"target_nodes": self._redis.get_node_from_key(stream)}
        return {}

    async def _process(self, stream: str, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        by_project: dict[str, list[bytes]] = defaultdict(list)
        stray: list[bytes] = []  # malformed: no project; acknowledged so they do not loop
        for entry_id, fields in entries:
            project = fields.get(PROJECT_FIELD)
            if project:
                by_project[project.decode()].append(entry_id)
            else:
                stray.append(entry_id)
        if by_project:
            await self.persist(by_project)
        if stray:
            await self._redis.xack(stream, CONSUMER_GROUP, *stray)

    # housekeeping ------------------------------------------------------------

    async def _idle_loop(self) -> None:
        """Compact projects whose log has been quiet for `idle_compact_seconds`."""
        while True:
            await asyncio.sleep(self._idle.check_interval)
            for project_uuid in self._idle.due(time.monotonic()):
                self._idle.compacted(project_uuid)  # checked now; the next write re-arms it
                stats = self._sizes.get(project_uuid)
                if stats is not None and not self._policy.due_when_idle(
                    stats.count, stats.bytes, stats.snapshot_bytes
                ):
                    continue
                await self._compact_or_log(project_uuid)

    async def _sweep_logs(self, partition: int) -> None:
        """Persist every non-empty log of the partition (work queued before we existed, or
        whose work entry was lost)."""
        layout = self._layout
        projects = [
            project
            async for key in self._redis.scan_iter(match=layout.log_stream_pattern, count=500)
            if (project := layout.project_of_log_stream(key)) is not None
            and layout.partition(project) == partition
        ]
        for start in range(0, len(projects), self._batch_size):
            await self.persist({project: () for project in projects[start : start + self._batch_size]})
        if projects:
            log.info("swept the project logs", extra={"projects": len(projects)})

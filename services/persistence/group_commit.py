"""Group commit: the passes of several queue loops that reach the database at once share one
transaction.

On a Redis Cluster the worker runs one queue loop per partition, and each pass
would otherwise be a transaction of its own, holding a partition's few
projects: a 16-partition worker paid about six times the database and Python
time per update of the one-loop worker. A pass hands its logs to
`GroupCommit.append`; the first one is committed at once, and whatever arrives
while a commit runs goes into the next one, so no pass waits longer than one
commit more than it would alone. Each pass's projects are its own (a project
belongs to one partition), and each keeps the run id its positions come from.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from shared.compaction import LogStats
from shared.store import DocumentStore

Logs = Mapping[str, Sequence[tuple[tuple[int, int], bytes]]]
Results = dict[str, tuple[int, LogStats | None]]


@dataclass(frozen=True, slots=True)
class _Pass:
    logs: Logs
    epoch: str
    with_stats_for: Collection[str]
    done: asyncio.Future[Results]


class GroupCommit:
    """`DocumentStore.append_from_logs` for concurrent passes, merged while a commit runs."""

    def __init__(self, store: DocumentStore) -> None:
        self._store = store
        self._waiting: list[_Pass] = []
        self._committer: asyncio.Task[None] | None = None

    async def append(self, logs: Logs, *, epoch: str, with_stats_for: Collection[str]) -> Results:
        """Append `logs` (positions from the Redis server whose run id is `epoch`) exactly once;
        per project, (rows written, log stats if asked for)."""
        done: asyncio.Future[Results] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Pass(logs, epoch, with_stats_for, done))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_waiting(), name="worker-commit")
        return await done

    async def wait_idle(self) -> None:
        """Until the commit in flight (if any) and those queued behind it are done."""
        if self._committer is not None:
            await asyncio.gather(self._committer, return_exceptions=True)

    async def _commit_waiting(self) -> None:
        await asyncio.sleep(0)  # passes woken by the same tick join the first commit
        while self._waiting:
            passes, self._waiting = self._waiting, []
            logs: dict[str, Sequence[tuple[tuple[int, int], bytes]]] = {}
            epochs: dict[str, str] = {}
            stats: set[str] = set()
            for one in passes:
                logs.update(one.logs)
                epochs.update(dict.fromkeys(one.logs, one.epoch))
                stats.update(one.with_stats_for)
            try:
                results = await self._store.append_from_logs(logs, epoch=epochs, with_stats_for=stats)
            except Exception as exc:  # each pass retries on its own  # noqa: BLE001
                for one in passes:
                    if not one.done.done():
                        one.done.set_exception(exc)
                continue
            for one in passes:
                if not one.done.done():
                    one.done.set_result({p: results[p] for p in one.logs if p in results})

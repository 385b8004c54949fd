"""What one collab instance sends to Redis: batched, kept while Redis is away, spilled when too much.

Everything a room hands on (updates, awareness, relayed frames, sync messages)
is queued here as `(project, kind, body)` and sent by one sender task: each
wake-up sends everything queued since the previous call in one
`LogPublisher.send` (log appends before publishes, one Lua call), except
envelopes over `INLINE_ENVELOPE_BYTES`, each sent alone on another connection
so other rooms' batches do not wait behind a document's megabytes.

While Redis is away, updates wait in a bounded backlog and everything else
is dropped (peers resync by state vector when it returns); past
`backlog_limit` entries the oldest are written straight to the database.
Backlog entries enter the log as log-only entries (not published): once they
are in, `on_logged` is told their projects, whose rooms then ask peers to
exchange what either side misses.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict, deque
from collections.abc import Callable, Iterable

from prometheus_client import Counter

from services.collab.metrics import CollabMetrics
from shared.backoff import Backoff
from shared.envelope import Kind, encode_envelope
from shared.redis_contract import INLINE_ENVELOPE_BYTES, SINGLE_REDIS, RedisLayout
from shared.redis_log import REDIS_ERRORS, LogPublisher, ProjectOutbox, RedisClient
from shared.store import DocumentStore
from shared.tasks import TaskOwner

log = logging.getLogger(__name__)

MAX_BACKOFF = 2.0

#: An item to send: (project uuid, envelope kind, envelope body).
Item = tuple[str, Kind, bytes]


def batch_outboxes(
    instance_id: bytes, backlog: Iterable[tuple[str, bytes]], items: Iterable[Item]
) -> dict[str, ProjectOutbox]:
    """One send's content per project: backlog updates for the log only, items as envelopes."""
    outboxes: dict[str, ProjectOutbox] = defaultdict(ProjectOutbox)
    for project_uuid, update in backlog:
        outboxes[project_uuid].log_only.append(update)
    for project_uuid, kind, body in items:
        outboxes[project_uuid].envelopes.append(encode_envelope(instance_id, kind, body))
    return outboxes


async def write_to_database(
    store: DocumentStore, entries: list[tuple[str, bytes]], written: Counter
) -> None:
    """Write updates straight to the database, retrying until it works; count them in `written`."""
    if not entries:
        return
    batch: dict[str, list[bytes]] = defaultdict(list)
    for project_uuid, update in entries:
        batch[project_uuid].append(update)
    backoff = Backoff(0.1, MAX_BACKOFF)
    while True:
        try:
            await store.append(batch)
            written.inc(len(entries))
            return
        except Exception:
            log.exception("spilling the Redis backlog to the database failed; retrying")
            await backoff.sleep()


class Outbox:
    """The queue of envelopes to send, the backlog of updates waiting for Redis, and their sender."""

    def __init__(
        self,
        redis: RedisClient,
        store: DocumentStore,
        metrics: CollabMetrics,
        instance_id: bytes,
        work: TaskOwner,
        *,
        connected: Callable[[], bool],
        on_logged: Callable[[set[str]], None],
        backlog_limit: int,
        layout: RedisLayout = SINGLE_REDIS,
    ) -> None:
        self._log = LogPublisher(redis, layout)
        self._store = store
        self._metrics = metrics
        self._instance_id = instance_id
        self._work = work
        self._connected = connected
        self._on_logged = on_logged
        self._backlog_limit = backlog_limit
        self._items: list[Item] = []
        self._backlog: deque[tuple[str, bytes]] = deque()
        self._wake_sender = asyncio.Event()
        self._drained = asyncio.Event()  # items and backlog empty, no large envelope in flight
        self._drained.set()
        self._large_in_flight = 0
        # items ever queued / ever handed on (sent, or moved to the backlog)
        self._queued = self._handed_on = 0
        self._progress = asyncio.Event()

    def put(self, project_uuid: str, kind: Kind, body: bytes) -> None:
        """Queue an envelope for the next send."""
        self._items.append((project_uuid, kind, body))
        self._queued += 1
        self._drained.clear()
        self._wake_sender.set()

    def put_log_only(self, project_uuid: str, update: bytes) -> None:
        """Queue an update for the log without publishing it (peers get it by resync)."""
        self._backlog.append((project_uuid, update))
        self._drained.clear()
        self._wake_sender.set()

    def wake(self) -> None:
        """Send now (Redis is back)."""
        self._wake_sender.set()

    def unsent_updates(self, project_uuid: str) -> list[bytes]:
        """A project's updates not yet handed to Redis (backlog first, then queued)."""
        waiting = [u for p, u in self._backlog if p == project_uuid]
        return waiting + [b for p, k, b in self._items if p == project_uuid and k is Kind.UPDATE]

    async def sent_so_far(self, timeout: float) -> None:
        """Wait (up to `timeout`) until everything queued until now has been handed on;
        later traffic does not delay it."""
        try:
            await asyncio.wait_for(self._handed_on_up_to(self._queued), timeout)
        except TimeoutError:
            pass  # it is still written, in order, by the sender

    async def flush(self, timeout: float) -> None:
        """Wait (up to `timeout`) for every item and the backlog to reach Redis; write
        the updates that did not to the database."""
        try:
            await asyncio.wait_for(self._drained.wait(), timeout)
        except TimeoutError:
            log.error(
                "stopping with updates not yet in the Redis log; writing them to the database",
                extra={"backlog": len(self._backlog)},
            )
            stranded = list(self._backlog) + [(p, b) for p, k, b in self._items if k is Kind.UPDATE]
            await write_to_database(self._store, stranded, self._metrics.log_spilled)
            self._backlog.clear()

    async def spill_backlog(self) -> None:
        """Write the backlog to the database (at shutdown: a large envelope that could
        not reach Redis after `flush`)."""
        if self._backlog:
            await write_to_database(self._store, list(self._backlog), self._metrics.log_spilled)
            self._backlog.clear()

    def _hand_on(self, count: int) -> None:
        self._handed_on += count
        self._progress.set()

    async def _handed_on_up_to(self, target: int) -> None:
        while self._handed_on < target:
            self._progress.clear()
            await self._progress.wait()

    async def run(self) -> None:
        """Forever: send the queue once per wake-up, one Redis call, log appends before publishes.

        A large envelope (a document-sized update) goes in a call of its own on another
        connection (`_send_alone`): the other rooms' batches do not wait for its bytes.
        """
        backoff = Backoff(0.05, MAX_BACKOFF)
        while True:
            await self._wake_sender.wait()
            self._wake_sender.clear()
            if not self._connected():
                self._move_updates_to_backlog()
                continue
            batch, self._items = self._items, []
            for item in [item for item in batch if len(item[2]) > INLINE_ENVELOPE_BYTES]:
                batch.remove(item)
                self._large_in_flight += 1
                self._work.spawn(self._send_alone(item), name="redis-send-large")
            backlog = list(self._backlog)
            try:
                await self._send(backlog, batch)
            except REDIS_ERRORS as exc:
                log.warning("Redis publish failed (%s); keeping updates for the log", exc)
                self._items[:0] = batch
                self._move_updates_to_backlog()
                await backoff.sleep()
                self._wake_sender.set()
                continue
            backoff.reset()
            self._hand_on(len(batch))
            for _ in backlog:
                self._backlog.popleft()
            self._on_logged({project_uuid for project_uuid, _ in backlog})
            self._metrics.log_backlog.set(len(self._backlog))
            self._set_drained_if_idle()

    def _set_drained_if_idle(self) -> None:
        if not self._items and not self._backlog and not self._large_in_flight:
            self._drained.set()

    async def _send_alone(self, item: Item) -> None:
        """One large envelope, retried until it is in; if Redis goes away meanwhile, an
        update waits in the backlog like any other."""
        project_uuid, kind, body = item
        backoff = Backoff(0.05, MAX_BACKOFF)
        try:
            while self._connected():
                try:
                    await self._send([], [item])
                    return
                except REDIS_ERRORS as exc:
                    log.warning(
                        "Redis publish of a large envelope failed (%s); retrying",
                        exc,
                        extra={"project": project_uuid, "bytes": len(body)},
                    )
                    await backoff.sleep()
            if kind is Kind.UPDATE:
                self._backlog.append((project_uuid, body))
                self._wake_sender.set()
        finally:
            self._large_in_flight -= 1
            self._hand_on(1)
            self._set_drained_if_idle()

    async def _send(self, backlog: list[tuple[str, bytes]], batch: list[Item]) -> None:
        await self._log.send(batch_outboxes(self._instance_id, backlog, batch))
        for _, kind, _ in batch:
            self._metrics.envelopes_out_by[kind.name.lower()].inc()

    def _move_updates_to_backlog(self) -> None:
        """Redis is down: updates wait for the log; awareness and opaque frames are moot."""
        for project_uuid, kind, body in self._items:
            if kind is Kind.UPDATE:
                self._backlog.append((project_uuid, body))
        self._hand_on(len(self._items))
        self._items = []
        if len(self._backlog) > self._backlog_limit:
            overflow = [
                self._backlog.popleft()
                for _ in range(len(self._backlog) - self._backlog_limit // 2)
            ]
            self._work.spawn(
                write_to_database(self._store, overflow, self._metrics.log_spilled),
                name="redis-spill",
            )
        self._metrics.log_backlog.set(len(self._backlog))
        self._set_drained_if_idle()

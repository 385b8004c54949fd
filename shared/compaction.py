"""Merging a document's history into one garbage-collected snapshot (pure, CPU only).

Updates are applied one by one to a fresh `Doc` and the result encoded once:
much faster than `merge_updates` over a long list (which grows roughly
quadratically) and, unlike it, garbage-collects deleted content. An update
pycrdt refuses or panics on is left out and reported (`replay`), so a bad
stored row never makes a document unopenable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pycrdt import Doc

from shared import ydoc
from shared.protocol import EMPTY_UPDATE
from shared.ydoc import RejectedUpdate


@dataclass(frozen=True, slots=True)
class Snapshot:
    update: bytes  # the whole document as one Yjs update
    state_vector: bytes
    rejected: tuple[int, ...] = ()  # indexes of the updates left out (see `replay`)


@dataclass(frozen=True, slots=True)
class Replayed:
    doc: Doc
    update: bytes  # `doc` encoded as one update (the settle check's output; reuse it)
    rejected: tuple[int, ...]  # indexes of the updates that were refused, left out of `doc`


def replay(updates: Sequence[bytes]) -> Replayed:
    """A Doc holding every update that pycrdt accepts, and the indexes of those it refuses.

    Fast path: every update into one fresh Doc, then one encoding to check
    that the result settles (encodes without a panic); that is the whole cost
    of a healthy history. Otherwise the history is replayed one update at a
    time, each one checked, and a refused update is left out (the Doc is
    rebuilt without it when its panic may have damaged it), so a document
    always opens, without the updates that cannot be part of it.
    """
    doc: Doc = Doc()
    try:
        for update in updates:
            if update and update != EMPTY_UPDATE:
                ydoc.apply_update(doc, update)
        return Replayed(doc, ydoc.encode_diff(doc), ())
    except RejectedUpdate:
        pass
    return _replay_checking_each(updates)


def _replay_checking_each(updates: Sequence[bytes]) -> Replayed:
    accepted: list[bytes] = []
    rejected: list[int] = []
    doc: Doc = Doc()
    for index, update in enumerate(updates):
        if not update or update == EMPTY_UPDATE:
            continue
        try:
            ydoc.apply_update(doc, update)
            ydoc.encode_diff(doc)  # settles: a later encode or join will not panic on it
        except RejectedUpdate:
            rejected.append(index)
            doc = Doc()
            for good in accepted:
                ydoc.apply_update(doc, good)  # each was accepted in this order before
            continue
        accepted.append(update)
    return Replayed(doc, ydoc.encode_diff(doc), tuple(rejected))


def build_doc(updates: Sequence[bytes]) -> Doc:
    """A Doc holding every update (empty ones skipped, refused ones left out: `replay`)."""
    return replay(updates).doc


def missing_from(durable: Sequence[bytes], held: bytes) -> bytes | None:
    """What the document state `held` has that the `durable` updates lack, as one
    update (None when nothing): exactly what applying `held` on top would change.
    RejectedUpdate when `held` cannot be applied on top."""
    doc = build_doc(durable)
    changes: list[bytes] = []
    doc.observe(lambda event: changes.append(event.update))
    ydoc.apply_update(doc, held)
    return changes[0] if changes else None


def build_snapshot(updates: Sequence[bytes]) -> Snapshot:
    """Merge `updates` (a previous snapshot may be the first) into one snapshot."""
    replayed = replay(updates)
    return Snapshot(
        update=replayed.update,
        state_vector=ydoc.encode_state(replayed.doc),
        rejected=replayed.rejected,
    )


@dataclass(frozen=True, slots=True)
class CompactionPolicy:
    """When a project's update log is folded into its snapshot.

    Passing `max_updates` rows or `max_bytes` makes a compaction worth
    considering; it runs once the log holds at least `min_log_ratio` (r) times
    the snapshot's bytes, and in any case past `max_rows` rows, which keeps
    loading a room fast. An idle document is compacted on the ratio alone.

    Every compaction rewrites the whole document, so the bytes written per
    byte of update (write amplification) tend to 1 + 1/r + c, where c is the
    snapshot's size over the history's: small for typing (runs of characters
    merge), about 1 for scattered inserts (each one splits an item). r = 8
    keeps amplification under 1.5 for both while the log stays a bounded
    multiple of the document (and `max_rows` bounds its row count).
    """

    max_updates: int = 500
    max_bytes: int = 512 * 1024
    min_log_ratio: float = 8.0
    max_rows: int = 10_000

    def _worth_it(self, size: int, snapshot_size: int) -> bool:
        return size >= self.min_log_ratio * snapshot_size

    def due(self, count: int, size: int, snapshot_size: int) -> bool:
        """After a write: is the log due for compaction?"""
        if count >= self.max_rows:
            return True
        over = count >= self.max_updates or size >= self.max_bytes
        return (
            _has_merge_work(count, snapshot_size) and over and self._worth_it(size, snapshot_size)
        )

    def due_when_idle(self, count: int, size: int, snapshot_size: int) -> bool:
        """For a document nobody has written to for a while."""
        return _has_merge_work(count, snapshot_size) and (
            count >= self.max_rows or self._worth_it(size, snapshot_size)
        )


def _has_merge_work(count: int, snapshot_size: int) -> bool:
    """A single update and no snapshot is already the whole document in one piece (an
    upload or import of a large document): rewriting it would cost a full decode and
    encode for nothing."""
    return count > 1 or (count == 1 and snapshot_size > 0)


@dataclass(frozen=True, slots=True)
class LogStats:
    """The size of a project's not-yet-compacted update log."""

    count: int
    bytes: int
    snapshot_bytes: int = 0


class LogSizes:
    """Each project's log size, kept in memory instead of counted by a query per write.

    Pure bookkeeping for the compaction triggers (the collab's store writer and
    the persistence worker): the caller queries the database once, when
    `grown` answers None (after start-up and after each compaction, which
    `forget`s the project), `set`s the answer, and from then on adds what it
    writes. A count covers the writes of its own process only: with several
    persistence workers sharing a project, each one's figure is an estimate
    (low by the others' writes since its query, high by rows another worker
    has compacted meanwhile). That is fine: compaction is idempotent and safe
    to run early or late, so a wrong estimate only shifts when it runs.
    """

    def __init__(self) -> None:
        self._sizes: dict[str, LogStats] = {}

    def get(self, project_uuid: str) -> LogStats | None:
        return self._sizes.get(project_uuid)

    def set(self, project_uuid: str, stats: LogStats) -> None:
        """The project's log size as counted by the database."""
        self._sizes[project_uuid] = stats

    def grown(self, project_uuid: str, count: int, nbytes: int) -> LogStats | None:
        """Add `count` rows of `nbytes` in all; the new size, or None when unknown (query it)."""
        known = self._sizes.get(project_uuid)
        if known is None:
            return None
        grown = LogStats(known.count + count, known.bytes + nbytes, known.snapshot_bytes)
        self._sizes[project_uuid] = grown
        return grown

    def forget(self, project_uuid: str) -> None:
        """After a compaction: the next write queries again."""
        self._sizes.pop(project_uuid, None)


class IdleTracker:
    """Which projects have written updates since their last compaction, and when.

    Pure bookkeeping for the idle compaction trigger (the collab's store writer
    in single-instance mode, the persistence worker in multi-instance mode).
    """

    def __init__(self, idle_seconds: float) -> None:
        self.idle_seconds = idle_seconds
        self._last_write: dict[str, float] = {}

    def touch(self, project_uuid: str, now: float) -> None:
        """The project's log grew at `now`."""
        self._last_write[project_uuid] = now

    def compacted(self, project_uuid: str) -> None:
        self._last_write.pop(project_uuid, None)

    def due(self, now: float) -> list[str]:
        """Projects quiet for at least `idle_seconds`, with updates not yet compacted."""
        return [p for p, t in self._last_write.items() if now - t >= self.idle_seconds]

    @property
    def check_interval(self) -> float:
        return max(0.2, min(5.0, self.idle_seconds / 4))

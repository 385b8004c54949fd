"""Merging a document's history into one garbage-collected snapshot (pure, CPU only).

Updates are applied one by one to a fresh `Doc` and the result encoded once:
much faster than `merge_updates` over a long list (which grows roughly
quadratically) and, unlike it, garbage-collects deleted content.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from pycrdt import Doc

from shared.protocol import EMPTY_UPDATE


@dataclass(frozen=True, slots=True)
class Snapshot:
    update: bytes  # the whole document as one Yjs update
    state_vector: bytes


def build_doc(updates: Iterable[bytes]) -> Doc:
    """A Doc holding every update (empty ones skipped)."""
    doc: Doc = Doc()
    for update in updates:
        if update and update != EMPTY_UPDATE:
            doc.apply_update(update)
    return doc


def build_snapshot(updates: Iterable[bytes]) -> Snapshot:
    """Merge `updates` (a previous snapshot may be the first) into one snapshot."""
    doc = build_doc(updates)
    return Snapshot(update=doc.get_update(), state_vector=doc.get_state())


@dataclass(frozen=True, slots=True)
class CompactionPolicy:
    """When a project's update log is folded into its snapshot.

    Passing `max_updates` rows or `max_bytes` makes a compaction worth
    considering; it runs once the log holds at least `min_log_ratio` times the
    snapshot's bytes, so every byte of update is rewritten into snapshots at
    most 1/`min_log_ratio` times (write amplification ≤ 1 + 1/ratio), and in
    any case past `max_rows` rows, which keeps loading a room fast. An idle
    document is compacted on the ratio alone.
    """

    max_updates: int = 50
    max_bytes: int = 512 * 1024
    min_log_ratio: float = 2.0
    max_rows: int = 10_000

    def _worth_it(self, size: int, snapshot_size: int) -> bool:
        return size >= self.min_log_ratio * snapshot_size

    def due(self, count: int, size: int, snapshot_size: int) -> bool:
        """After a write: is the log due for compaction?"""
        if count >= self.max_rows:
            return True
        over = count >= self.max_updates or size >= self.max_bytes
        return count > 0 and over and self._worth_it(size, snapshot_size)

    def due_when_idle(self, count: int, size: int, snapshot_size: int) -> bool:
        """For a document nobody has written to for a while."""
        return count > 0 and (count >= self.max_rows or self._worth_it(size, snapshot_size))


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

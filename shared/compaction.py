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
    """When a project's update log is folded into its snapshot."""

    max_updates: int = 50
    max_bytes: int = 512 * 1024

    def due(self, count: int, size: int) -> bool:
        return count >= self.max_updates or size >= self.max_bytes

"""Reading and writing whole documents from outside a room (HTTP import/export).

The gateway uses whatever `DocumentService` the process provides: in the
embedded process, the collab rooms themselves (an import is applied to the
live room, loaded for it if needed, and reaches connected clients at once);
in a multi-instance deployment, the Redis backplane (an import is published
like any update and appended to the durable log); a gateway alone in
single-instance mode falls back to the store. Without a live room, an import
is first applied to the current document built from the durable state
(`check_applies`): an update pycrdt refuses or panics on against it is a
`RejectedUpdate` and is stored nowhere.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from aiohttp import web

from shared import ydoc
from shared.compaction import build_doc, replay
from shared.store import DocumentStore


class DocumentTooLarge(Exception):
    """Applying the update would grow the document past `MAX_DOCUMENT_BYTES`."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"the document would grow to about {size} bytes, past the limit of {limit}"
        )
        self.size = size
        self.limit = limit


def check_document_size(current: int, update: bytes, limit: int) -> None:
    """Raise DocumentTooLarge unless a document of `current` bytes may take `update` (limit 0: none)."""
    if limit and current + len(update) > limit:
        raise DocumentTooLarge(current + len(update), limit)


class DocumentService(Protocol):
    async def load(self, project_uuid: str) -> list[bytes]:
        """Every update of the document, including accepted ones not yet compacted or stored."""
        ...

    async def apply_update(self, project_uuid: str, update: bytes) -> None:
        """Accept an update as if a client had sent it; RejectedUpdate, with nothing
        stored or relayed, when it cannot be applied to the current document.

        Raises DocumentTooLarge where the service knows the document's size."""
        ...


DOCUMENTS: web.AppKey[DocumentService] = web.AppKey("documents", DocumentService)


async def export_document(documents: DocumentService, project_uuid: str) -> bytes:
    """The whole current document as one Yjs update."""
    updates = await documents.load(project_uuid)
    return (await asyncio.to_thread(replay, updates)).update  # its settle check's encoding


def check_applies(current: list[bytes], update: bytes, max_document_bytes: int = 0) -> None:
    """RejectedUpdate unless `update` applies (and the result encodes) on top of
    the document made of the `current` updates; DocumentTooLarge if the result is
    over `max_document_bytes` (0: no limit). CPU-bound: run it in a thread."""
    doc = build_doc(current)
    ydoc.apply_update(doc, update)
    size = len(ydoc.encode_diff(doc))
    if max_document_bytes and size > max_document_bytes:
        raise DocumentTooLarge(size, max_document_bytes)


class StoreDocuments:
    """The store alone: for a gateway with neither local rooms nor Redis."""

    def __init__(self, store: DocumentStore, max_document_bytes: int = 0) -> None:
        self._store = store
        self._max_document_bytes = max_document_bytes

    async def load(self, project_uuid: str) -> list[bytes]:
        return await self._store.load_updates(project_uuid)

    async def apply_update(self, project_uuid: str, update: bytes) -> None:
        current = await self._store.load_updates(project_uuid)
        await asyncio.to_thread(check_applies, current, update, self._max_document_bytes)
        await self._store.append({project_uuid: [update]})

"""Whole-document access in multi-instance mode (gateway import/export, room loads)."""

from __future__ import annotations

import asyncio

from shared.documents import check_applies
from shared.envelope import Kind, encode_envelope
from shared.redis_contract import SINGLE_REDIS, RedisLayout
from shared.redis_log import LogPublisher, ProjectOutbox, RedisClient, read_log
from shared.store import DocumentStore


async def load_with_log(
    redis: RedisClient,
    store: DocumentStore,
    project_uuid: str,
    layout: RedisLayout = SINGLE_REDIS,
) -> list[bytes]:
    """The stored document plus the log tail not yet in the database.

    The log is read first: the worker trims only entries it has committed, so
    anything trimmed before this read is in the database read after it.
    """
    tail = [update for _, update in await read_log(redis, project_uuid, layout)]
    return await store.load_updates(project_uuid) + tail


class RedisDocuments:
    """`DocumentService` for a process without local rooms (a gateway) in multi-instance mode.

    An imported update takes the same path as a client's: appended to the
    durable log and published to the room's channel, where every collab
    instance applies it and relays it to its clients. It is first applied to
    the current document (database + log, `check_applies`); one that pycrdt
    refuses is a RejectedUpdate, one that would grow it past `max_document_bytes`
    is DocumentTooLarge, and either goes nowhere.
    """

    def __init__(
        self,
        redis: RedisClient,
        store: DocumentStore,
        instance_id: bytes,
        max_document_bytes: int = 0,
        layout: RedisLayout = SINGLE_REDIS,
    ) -> None:
        self._redis = redis
        self._layout = layout
        self._log = LogPublisher(redis, layout)
        self._store = store
        self._instance_id = instance_id
        self._max_document_bytes = max_document_bytes

    async def load(self, project_uuid: str) -> list[bytes]:
        return await load_with_log(self._redis, self._store, project_uuid, self._layout)

    async def apply_update(self, project_uuid: str, update: bytes) -> None:
        current = await load_with_log(self._redis, self._store, project_uuid, self._layout)
        await asyncio.to_thread(check_applies, current, update, self._max_document_bytes)
        outbox = ProjectOutbox()
        outbox.envelopes.append(encode_envelope(self._instance_id, Kind.UPDATE, update))
        await self._log.send({project_uuid: outbox})

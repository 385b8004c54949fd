"""Redis names and primitives shared by collab, gateway and the persistence worker.

Keys (DESIGN.md "Redis contract"):
- `exe:yjs:project-{uuid}`: fan-out channel (pub/sub) of envelopes.
- `exe:yjs:log:project-{uuid}`: stream of accepted updates not yet in the database
  (field `u`: the update). The worker trims it after each commit.
- `exe:yjs:dirty`: work-queue stream (field `p`: project uuid) consumed by the
  workers' consumer group `persistence`.
- `exe:yjs:instance:{hex id}`: heartbeat key of a live collab instance (TTL).
"""

from __future__ import annotations

import asyncio
from typing import Sequence

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.config import Settings

CHANNEL_PREFIX = "exe:yjs:project-"
CHANNEL_PATTERN = "exe:yjs:project-*"
DIRTY_STREAM = "exe:yjs:dirty"
CONSUMER_GROUP = "persistence"
UPDATE_FIELD = b"u"
PROJECT_FIELD = b"p"
DIRTY_MAXLEN = 100_000

#: What a lost or restarting Redis raises; callers back off and retry.
REDIS_ERRORS = (RedisError, ConnectionError, OSError, asyncio.TimeoutError)


def channel(project_uuid: str) -> str:
    return f"{CHANNEL_PREFIX}{project_uuid}"


def project_of_channel(name: str | bytes) -> str | None:
    text = name.decode() if isinstance(name, bytes) else name
    return text[len(CHANNEL_PREFIX) :] if text.startswith(CHANNEL_PREFIX) else None


def log_stream(project_uuid: str) -> str:
    return f"exe:yjs:log:project-{project_uuid}"


def instance_key(instance_id: bytes) -> str:
    return f"exe:yjs:instance:{instance_id.hex()}"


def create_redis(settings: Settings) -> aioredis.Redis:
    """A client with bounded timeouts, so a Redis outage fails fast instead of hanging."""
    return aioredis.Redis(
        host=settings.redis_host,
        port=settings.redis_port,
        password=settings.redis_password or None,
        db=settings.redis_db,
        socket_connect_timeout=2.0,
        socket_timeout=5.0,
        health_check_interval=10,
        # one quick reconnect hides a restarted Redis from single commands
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )


def parse_stream_id(stream_id: bytes | str) -> tuple[int, int]:
    text = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def format_stream_id(position: tuple[int, int]) -> str:
    return f"{position[0]}-{position[1]}"


async def read_log(redis: aioredis.Redis, project_uuid: str) -> list[tuple[bytes, bytes]]:
    """Every entry of a project's log as (stream id, update), oldest first."""
    entries = await redis.xrange(log_stream(project_uuid))
    return [(entry_id, fields[UPDATE_FIELD]) for entry_id, fields in entries if UPDATE_FIELD in fields]


def queue_updates(pipe: aioredis.client.Pipeline, project_uuid: str, updates: Sequence[bytes]) -> None:
    """Append updates to the project's log and flag the project dirty (in `pipe`)."""
    stream = log_stream(project_uuid)
    for update in updates:
        pipe.xadd(stream, {UPDATE_FIELD: update})
    pipe.xadd(DIRTY_STREAM, {PROJECT_FIELD: project_uuid.encode()}, maxlen=DIRTY_MAXLEN, approximate=True)

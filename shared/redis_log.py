"""The Redis log primitives shared by collab, gateway and the persistence worker.

A Redis client with bounded timeouts, reading the project logs, the epoch
token, and `LogPublisher`: one Lua call per batch appends to the logs, flags
the projects dirty and publishes. The names it uses are the contract in
`shared/redis_contract.py`.

Nothing here is trusted to survive: Redis may lose its data (restart without
AOF, failover to a replica that had not caught up, FLUSHALL). The rooms that
still hold an edit put it back (`RedisBackplane`), the worker recreates its
consumer group and re-reads every log, and log positions are only compared
within one Redis server lifetime (`read_logs` returns its run id).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.config import Settings
from shared.envelope import HEADER_BYTES, INSTANCE_ID_BYTES, Kind
from shared.redis_contract import (
    DIRTY_MAXLEN,
    DIRTY_STREAM,
    EPOCH_KEY,
    INLINE_ENVELOPE_BYTES,
    PROJECT_FIELD,
    STORED_ENVELOPE_PREFIX,
    STORED_ENVELOPE_SEQ,
    STORED_ENVELOPE_TTL_MS,
    UPDATE_FIELD,
    channel,
    log_stream,
)

#: What a lost or restarting Redis raises; callers back off and retry.
REDIS_ERRORS = (RedisError, ConnectionError, OSError, asyncio.TimeoutError)


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


async def read_log(redis: aioredis.Redis, project_uuid: str) -> list[tuple[bytes, bytes]]:
    """Every entry of a project's log as (stream id, update), oldest first."""
    return _log_entries(await redis.xrange(log_stream(project_uuid)))  # type: ignore[arg-type]  # redis-py: xrange may be None


async def read_logs(
    redis: aioredis.Redis, projects: Sequence[str]
) -> tuple[str, dict[str, list[tuple[bytes, bytes]]]]:
    """`read_log` of several projects in one round trip, with the run id of the
    Redis server that answered.

    Stream ids only ascend within one server's lifetime: a restarted Redis, or a
    replica promoted with a clock behind its master's, may hand out ids below
    ones already persisted, so positions are compared only under the same run id.
    """
    async with redis.pipeline(transaction=False) as pipe:
        pipe.info("server")
        for project_uuid in projects:
            pipe.xrange(log_stream(project_uuid))
        info, *replies = await pipe.execute()
    logs = {project_uuid: _log_entries(entries) for project_uuid, entries in zip(projects, replies)}
    return str(info["run_id"]), logs


async def current_epoch(redis: aioredis.Redis) -> bytes:
    """The token of Redis's current data lifetime, set now if Redis has none (lost its data)."""
    candidate = os.urandom(8).hex().encode()
    previous = await redis.set(EPOCH_KEY, candidate, nx=True, get=True)
    return previous if previous is not None else candidate  # type: ignore[return-value]  # redis-py: SET GET returns the bytes value


def _log_entries(entries: list) -> list[tuple[bytes, bytes]]:  # type: ignore[type-arg]
    return [
        (entry_id, fields[UPDATE_FIELD]) for entry_id, fields in entries if UPDATE_FIELD in fields
    ]


# One atomic step per batch: every update enters its project's log before it
# is published, and a project with new log entries is flagged dirty once.
# KEYS[1]: the dirty stream; KEYS[1 + p]: the log stream of project p.
# ARGV[1]: the dirty stream's MAXLEN; then, per project p: its channel, its
# uuid, N, N updates for the log only, M, M envelopes to publish. An envelope
# of kind UPDATE also enters the log (its body, after the header). An envelope
# over INLINE_ENVELOPE_BYTES is stored under a key of its own and the channel
# gets a STORED envelope (same sender) naming that key.
_APPEND_AND_PUBLISH = f"""
local arg = 2
local function publish(channel, envelope)
  if #envelope <= {INLINE_ENVELOPE_BYTES} then
    redis.call('PUBLISH', channel, envelope)
    return
  end
  local key = '{STORED_ENVELOPE_PREFIX}' .. redis.call('INCR', '{STORED_ENVELOPE_SEQ}')
  redis.call('SET', key, envelope, 'PX', {STORED_ENVELOPE_TTL_MS})
  redis.call('PUBLISH', channel, string.sub(envelope, 1, {INSTANCE_ID_BYTES}) .. string.char({int(Kind.STORED)}) .. key)
end
for p = 2, #KEYS do
  local log, channel, project = KEYS[p], ARGV[arg], ARGV[arg + 1]
  local logged = tonumber(ARGV[arg + 2])
  arg = arg + 3
  for i = arg, arg + logged - 1 do
    redis.call('XADD', log, '*', '{UPDATE_FIELD.decode()}', ARGV[i])
  end
  arg = arg + logged
  local published = tonumber(ARGV[arg])
  arg = arg + 1
  for i = arg, arg + published - 1 do
    local envelope = ARGV[i]
    if string.byte(envelope, {HEADER_BYTES}) == {int(Kind.UPDATE)} then
      redis.call('XADD', log, '*', '{UPDATE_FIELD.decode()}', string.sub(envelope, {HEADER_BYTES + 1}))
      logged = logged + 1
    end
    publish(channel, envelope)
  end
  arg = arg + published
  if logged > 0 then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', '{PROJECT_FIELD.decode()}', project)
  end
end
"""


class ProjectOutbox:
    """What one batch sends for a project: updates for the log only (accepted
    while Redis was away; peers resync by state vector) and envelopes to publish."""

    __slots__ = ("envelopes", "log_only")

    def __init__(self) -> None:
        self.log_only: list[bytes] = []
        self.envelopes: list[bytes] = []


class LogPublisher:
    """Appends to the durable log and publishes envelopes: one Redis call per batch.

    A Lua script does it server-side, so a batch costs one command and one
    reply however many updates and projects it holds, and an update's bytes
    cross the network once (the log entry is cut from its envelope).
    """

    def __init__(self, redis: aioredis.Redis) -> None:
        self._script = redis.register_script(_APPEND_AND_PUBLISH)

    async def send(self, batch: Mapping[str, ProjectOutbox]) -> None:
        keys: list[str] = [DIRTY_STREAM]
        args: list[bytes | str | int] = [DIRTY_MAXLEN]
        for project_uuid, outbox in batch.items():
            keys.append(log_stream(project_uuid))
            args += (channel(project_uuid), project_uuid, len(outbox.log_only), *outbox.log_only)
            args += (len(outbox.envelopes), *outbox.envelopes)
        if len(keys) > 1:
            await self._script(keys=keys, args=args)

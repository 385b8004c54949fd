"""The Redis log primitives shared by collab, gateway and the persistence worker.

A Redis client with bounded timeouts, reading the project logs, the epoch
token, and `LogPublisher`: one Lua call per batch appends to the logs, flags
the projects dirty and publishes. The names it uses are the contract in
`shared/redis_contract.py`.

Nothing here is trusted to survive: Redis may lose its data (restart without
AOF, failover to a replica that had not caught up, FLUSHALL). The rooms that
still hold an edit put it back (`RedisBackplane`), the worker recreates its
consumer group and re-reads every log, and log positions are only compared
within one Redis server lifetime (`LogReader` returns its run id).
"""

from __future__ import annotations

import asyncio
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.config import Settings
from shared.envelope import HEADER_BYTES, INSTANCE_ID_BYTES, Kind
from shared.redis_contract import (
    DIRTY_MAXLEN,
    EPOCH_KEY,
    INLINE_ENVELOPE_BYTES,
    PROJECT_FIELD,
    SINGLE_REDIS,
    STORED_ENVELOPE_TTL_MS,
    UPDATE_FIELD,
    RedisLayout,
)

#: What a lost or restarting Redis raises; callers back off and retry.
REDIS_ERRORS = (RedisError, ConnectionError, OSError, asyncio.TimeoutError)


#: A client of one Redis or of a Redis Cluster (`create_redis`); both speak the same commands.
RedisClient = aioredis.Redis | aioredis.RedisCluster


def create_redis(settings: Settings) -> RedisClient:
    """A client with bounded timeouts, so a Redis outage fails fast instead of hanging: of the
    cluster of `REDIS_CLUSTER_NODES` if set (it follows MOVED and failovers itself), else of
    `REDIS_HOST`."""
    timeouts = {
        "socket_connect_timeout": 2.0,
        "socket_timeout": 5.0,
        "health_check_interval": 10,
    }
    cluster = settings.cluster_nodes
    if cluster is not None:
        return aioredis.RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in cluster.nodes],
            username=cluster.username or None,
            password=cluster.password or settings.redis_password or None,
            # a failover takes the cluster a few node timeouts: keep retrying through it
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.1), 6),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
            **timeouts,  # type: ignore[arg-type]
        )
    return aioredis.Redis(
        host=settings.redis_host,
        port=settings.redis_port,
        password=settings.redis_password or None,
        db=settings.redis_db,
        # one quick reconnect hides a restarted Redis from single commands
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        **timeouts,  # type: ignore[arg-type]
    )


async def read_log(
    redis: RedisClient, project_uuid: str, layout: RedisLayout = SINGLE_REDIS
) -> list[tuple[bytes, bytes]]:
    """Every entry of a project's log as (stream id, update), oldest first."""
    return _log_entries(await redis.xrange(layout.log_stream(project_uuid)))  # type: ignore[arg-type]  # redis-py: xrange may be None


# KEYS: log streams of one slot (one Redis, or one partition of a cluster).
# Returns the run id of the server that holds them, then each stream's XRANGE.
_READ_LOGS = """
local info = redis.call('INFO', 'server')
local result = {string.match(info, 'run_id:(%w+)')}
for i = 1, #KEYS do
  result[i + 1] = redis.call('XRANGE', KEYS[i], '-', '+')
end
return result
"""


class LogReader:
    """Reads several project logs of one partition in one call, with the run id of the
    server that holds them (one script: in a cluster that is the node serving the slot).

    Stream ids only ascend within one server's lifetime: a restarted Redis, or a
    replica promoted with a clock behind its master's, may hand out ids below
    ones already persisted, so positions are compared only under the same run id.
    """

    def __init__(self, redis: RedisClient, layout: RedisLayout) -> None:
        self._script = redis.register_script(_READ_LOGS)
        self._layout = layout

    async def read(
        self, projects: Sequence[str]
    ) -> tuple[str, dict[str, list[tuple[bytes, bytes]]]]:
        """(run id, project -> its entries); every project must be of one partition."""
        if len({self._layout.partition(p) for p in projects}) > 1:
            raise ValueError("read one partition's logs at a time")
        keys = [self._layout.log_stream(p) for p in projects] or [self._layout.dirty_stream(0)]
        run_id, *replies = await self._script(keys=keys)  # type: ignore[misc]  # redis-py: a list here
        logs = {project_uuid: _log_entries(entries) for project_uuid, entries in zip(projects, replies)}
        return run_id.decode(), logs


async def current_epoch(redis: RedisClient) -> bytes:
    """The token of Redis's current data lifetime, set now if Redis has none (lost its data)."""
    candidate = os.urandom(8).hex().encode()
    previous = await redis.set(EPOCH_KEY, candidate, nx=True, get=True)
    return previous if previous is not None else candidate  # type: ignore[return-value]  # redis-py: SET GET returns the bytes value


def _log_entries(entries: list) -> list[tuple[bytes, bytes]]:  # type: ignore[type-arg]
    """XRANGE's reply (entries as (id, {field: value}) from redis-py, or as (id, [field,
    value, ...]) from a script) as (id, update)."""
    result = []
    for entry_id, fields in entries:
        values = fields if isinstance(fields, dict) else dict(zip(fields[::2], fields[1::2]))
        if UPDATE_FIELD in values:
            result.append((entry_id, values[UPDATE_FIELD]))
    return result


# One atomic step per batch of one partition: every update enters its project's
# log before it is published, and a project with new log entries is flagged
# dirty once. KEYS[1]: the partition's dirty stream; KEYS[2]: its stored-envelope
# counter; KEYS[2 + p]: the log stream of project p. ARGV[1]: the dirty stream's
# MAXLEN; ARGV[2]: PUBLISH or SPUBLISH; ARGV[3]: the stored-envelope key prefix;
# then, per project p: its channel, its uuid, N, N updates for the log only, M,
# M envelopes to publish. An envelope of kind UPDATE also enters the log (its
# body, after the header). An envelope over INLINE_ENVELOPE_BYTES is stored under
# a key of its own and the channel gets a STORED envelope (same sender) naming it.
_APPEND_AND_PUBLISH = f"""
local publish_command, stored_prefix = ARGV[2], ARGV[3]
local arg = 4
local function publish(channel, envelope)
  if #envelope <= {INLINE_ENVELOPE_BYTES} then
    redis.call(publish_command, channel, envelope)
    return
  end
  local key = stored_prefix .. redis.call('INCR', KEYS[2])
  redis.call('SET', key, envelope, 'PX', {STORED_ENVELOPE_TTL_MS})
  redis.call(publish_command, channel, string.sub(envelope, 1, {INSTANCE_ID_BYTES}) .. string.char({int(Kind.STORED)}) .. key)
end
for p = 3, #KEYS do
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
    """Appends to the durable log and publishes envelopes: one Redis call per batch and partition.

    A Lua script does it server-side, so a batch costs one command and one
    reply however many updates and projects it holds (on one Redis; in a
    cluster, one per partition the batch touches, each on the shard that
    serves it), and an update's bytes cross the network once (the log entry is
    cut from its envelope).
    """

    def __init__(self, redis: RedisClient, layout: RedisLayout = SINGLE_REDIS) -> None:
        self._script = redis.register_script(_APPEND_AND_PUBLISH)
        self._layout = layout

    async def send(self, batch: Mapping[str, ProjectOutbox]) -> None:
        layout = self._layout
        by_partition: dict[int, list[str]] = defaultdict(list)
        for project_uuid in batch:
            by_partition[layout.partition(project_uuid)].append(project_uuid)
        calls = []
        for partition, projects in by_partition.items():
            keys = [layout.dirty_stream(partition), layout.stored_envelope_seq(partition)]
            args: list[bytes | str | int] = [
                DIRTY_MAXLEN,
                layout.publish_command,
                layout.stored_envelope_prefix(partition),
            ]
            for project_uuid in projects:
                outbox = batch[project_uuid]
                keys.append(layout.log_stream(project_uuid))
                args += (layout.channel(project_uuid), project_uuid, len(outbox.log_only), *outbox.log_only)
                args += (len(outbox.envelopes), *outbox.envelopes)
            calls.append(self._script(keys=keys, args=args))
        if len(calls) == 1:
            await calls[0]  # one Redis, or one partition: no task to gather
        elif calls:
            await asyncio.gather(*calls)


async def channel_subscribers(redis: RedisClient, layout: RedisLayout, project_uuid: str) -> int:
    """How many connections (any instance) listen to the project's channel."""
    name = layout.channel(project_uuid)
    if layout.sharded:
        reply = await redis.pubsub_shardnumsub(name)  # type: ignore[union-attr]  # cluster-only command
    else:
        reply = await redis.pubsub_numsub(name)
    return int(reply[0][1])

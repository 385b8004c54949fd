"""Multi-instance mode: the coordinator's state in Redis, and delivery to a socket on any instance.

Every key and channel name the coordinator uses is defined in this module's
"names" block (docs/architecture.md, "Redis contract"). Holdings, waits and
memberships are keyed by member (`{instance hex}/{connection id}`) and only
members whose instance's heartbeat key (`exe:yjs:instance:{hex}`, kept by the
backplane) exists count as alive: a SIGKILLed instance takes its holders with
it, and the first instance that meets one of its members removes what that
member held, waited for and its membership. Every key expires a day after its
last write, so nothing outlives its project for ever. A frame for a socket on
another instance is published on that instance's inbox channel.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from services.collab.assets.decisions import CoordinatorLimits, split_member
from services.collab.assets.store import Announced, Deliver
from shared.backoff import Backoff
from shared.redis_cluster_subscriber import ClusterSubscriber, connect_subscriber
from shared.redis_contract import SINGLE_REDIS, RedisLayout, assets_inbox, instance_key
from shared.redis_log import REDIS_ERRORS, RedisClient
from shared.redis_subscriber import RedisSubscriber
from shared.tasks import TaskOwner

log = logging.getLogger(__name__)

# names ---------------------------------------------------------------------
# Under RedisLayout.assets_prefix(uuid): `members` (zset: member -> join time), `holders`
# (set of members holding something), `holder:{member}` (set of its asset ids),
# `has:{asset}` (set of members holding it), `ids` (hash: asset -> holders),
# `wait:{asset}` (set of waiting members), `waits:{member}` (set of assets it
# waits for), `pending` (set of "{asset} {member}": the project's waits).
KEY_TTL_SECONDS = 86_400


# scripts (KEYS[1] is always the project prefix, whose hash tag in a cluster puts every
# key of the project in its slot; ARGV[1] the member) ------------------------------
_DROP_HOLDINGS = """
local function drop_holdings(p, m)
  local key = p .. 'holder:' .. m
  for _, id in ipairs(redis.call('SMEMBERS', key)) do
    redis.call('SREM', p .. 'has:' .. id, m)
    if redis.call('HINCRBY', p .. 'ids', id, -1) <= 0 then redis.call('HDEL', p .. 'ids', id) end
  end
  redis.call('DEL', key)
  redis.call('SREM', p .. 'holders', m)
end
"""

# ARGV[2] ids per project, ARGV[3] ttl, ARGV[4..] ids -> {kept, dropped, waited ids...}
_ANNOUNCE = (
    _DROP_HOLDINGS
    + """
local p, m, limit, ttl = KEYS[1], ARGV[1], tonumber(ARGV[2]), ARGV[3]
drop_holdings(p, m)
local key, kept, dropped, result = p .. 'holder:' .. m, 0, 0, {}
for i = 4, #ARGV do
  local id = ARGV[i]
  if redis.call('HEXISTS', p .. 'ids', id) == 0 and redis.call('HLEN', p .. 'ids') >= limit then
    dropped = dropped + 1
  elseif redis.call('SADD', key, id) == 1 then
    kept = kept + 1
    redis.call('HINCRBY', p .. 'ids', id, 1)
    redis.call('SADD', p .. 'has:' .. id, m)
    redis.call('EXPIRE', p .. 'has:' .. id, ttl)
    if redis.call('EXISTS', p .. 'wait:' .. id) == 1 then table.insert(result, id) end
  end
end
if kept > 0 then
  redis.call('SADD', p .. 'holders', m)
  for _, k in ipairs({key, p .. 'holders', p .. 'ids'}) do redis.call('EXPIRE', k, ttl) end
end
table.insert(result, 1, dropped)
table.insert(result, 1, kept)
return result
"""
)

_LEAVE = (
    _DROP_HOLDINGS
    + """
local p, m = KEYS[1], ARGV[1]
redis.call('ZREM', p .. 'members', m)
drop_holdings(p, m)
for _, id in ipairs(redis.call('SMEMBERS', p .. 'waits:' .. m)) do
  redis.call('SREM', p .. 'wait:' .. id, m)
  redis.call('SREM', p .. 'pending', id .. ' ' .. m)
end
redis.call('DEL', p .. 'waits:' .. m)
return 1
"""
)

# ARGV[2] asset, ARGV[3] pending per project, ARGV[4] ttl -> 1 waiting, 0 over the bound
_WAIT = """
local p, m, id, limit, ttl = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
if redis.call('SISMEMBER', p .. 'wait:' .. id, m) == 1 then return 1 end
if redis.call('SCARD', p .. 'pending') >= limit then return 0 end
redis.call('SADD', p .. 'wait:' .. id, m)
redis.call('SADD', p .. 'waits:' .. m, id)
redis.call('SADD', p .. 'pending', id .. ' ' .. m)
for _, k in ipairs({p .. 'wait:' .. id, p .. 'waits:' .. m, p .. 'pending'}) do redis.call('EXPIRE', k, ttl) end
return 1
"""

# ARGV[1] asset -> the members that waited
_TAKE_WAITERS = """
local p, id = KEYS[1], ARGV[1]
local waiters = redis.call('SMEMBERS', p .. 'wait:' .. id)
redis.call('DEL', p .. 'wait:' .. id)
for _, m in ipairs(waiters) do
  redis.call('SREM', p .. 'waits:' .. m, id)
  redis.call('SREM', p .. 'pending', id .. ' ' .. m)
end
return waiters
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisStore:
    """`CoordinatorStore` over Redis; `instance` is this instance's hex id (as in its heartbeat key)."""

    def __init__(
        self,
        redis: RedisClient,
        instance: str,
        limits: CoordinatorLimits,
        tasks: TaskOwner,
        layout: RedisLayout = SINGLE_REDIS,
    ) -> None:
        self.instance = instance
        self._redis = redis
        self._prefix = layout.assets_prefix
        self._limits = limits
        self._tasks = tasks
        self._announce = redis.register_script(_ANNOUNCE)
        self._leave = redis.register_script(_LEAVE)
        self._wait = redis.register_script(_WAIT)
        self._take = redis.register_script(_TAKE_WAITERS)
        self._deliver: Deliver | None = None
        self._inbox = assets_inbox(instance).encode()
        self._subscribed = asyncio.Event()

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver
        self._tasks.spawn_loop(self._inbox_loop(), name="asset-inbox")
        try:
            await asyncio.wait_for(self._subscribed.wait(), 5.0)
        except TimeoutError:
            log.warning("asset coordinator inbox not subscribed yet; Redis unreachable")

    async def stop(self) -> None:
        self._deliver = None
        await self._redis.aclose()

    # membership and holdings ---------------------------------------------

    async def join(self, project: str, member: str) -> list[str]:
        key = self._prefix(project) + "members"
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zadd(key, {member: time.time()}, nx=True)
            pipe.expire(key, KEY_TTL_SECONDS)
            await pipe.execute()
        return await self.members(project)

    async def members(self, project: str) -> list[str]:
        members = await self._redis.zrange(self._prefix(project) + "members", 0, -1)
        return await self._live(project, [_text(m) for m in members])  # type: ignore[arg-type]  # redis-py: plain ZRANGE gives members

    async def waiters(self, project: str, asset: str) -> list[str]:
        members = await self._redis.smembers(self._prefix(project) + f"wait:{asset}")  # type: ignore[misc]  # redis-py: awaitable here
        return sorted(await self._live(project, [_text(m) for m in members]))

    async def leave(self, project: str, member: str) -> None:
        await self._leave(keys=[self._prefix(project)], args=[member])

    async def announce(self, project: str, member: str, ids: list[str]) -> Announced:
        reply = await self._announce(
            keys=[self._prefix(project)],
            args=[
                member,
                self._limits.ids_per_project,
                KEY_TTL_SECONDS,
                *ids,
            ]
        )
        return Announced(int(reply[0]), int(reply[1]), [_text(i) for i in reply[2:]])

    async def holders(self, project: str, asset: str) -> list[str]:
        members = await self._redis.smembers(self._prefix(project) + f"has:{asset}")  # type: ignore[misc]  # redis-py: awaitable here
        return sorted(await self._live(project, [_text(m) for m in members]))

    async def holder_counts(self, project: str) -> dict[str, int]:
        prefix = self._prefix(project)
        members = await self._live(
            project,
            [_text(m) for m in await self._redis.smembers(prefix + "holders")],  # type: ignore[misc]  # redis-py: awaitable here
        )
        async with self._redis.pipeline(transaction=False) as pipe:
            for member in members:
                pipe.scard(prefix + f"holder:{member}")
            counts = await pipe.execute()
        return dict(zip(members, (int(c) for c in counts)))

    async def held_by(self, project: str, member: str) -> list[str]:
        ids = await self._redis.smembers(self._prefix(project) + f"holder:{member}")  # type: ignore[misc]  # redis-py: awaitable here
        return sorted(_text(i) for i in ids)

    async def wait(self, project: str, asset: str, member: str) -> bool:
        reply = await self._wait(
            keys=[self._prefix(project)],
            args=[
                member,
                asset,
                self._limits.pending_per_project,
                KEY_TTL_SECONDS,
            ]
        )
        return bool(reply)

    async def take_waiters(self, project: str, asset: str) -> list[str]:
        reply = await self._take(keys=[self._prefix(project)], args=[asset])
        return sorted(_text(m) for m in reply)

    async def holding(self, checks: list[tuple[str, str, str]]) -> list[bool]:
        if not checks:
            return []
        alive = await self._alive_instances(split_member(holder)[0] for _, holder, _ in checks)
        async with self._redis.pipeline(transaction=False) as pipe:
            for project, holder, asset in checks:
                pipe.sismember(self._prefix(project) + f"holder:{holder}", asset)
            held = await pipe.execute()
        return [bool(h) and split_member(c[1])[0] in alive for c, h in zip(checks, held)]

    async def _live(self, project: str, members: list[str]) -> list[str]:
        """The members whose instance is alive, in order; the others are removed."""
        valid = [m for m in members if _is_member(m)]
        alive = await self._alive_instances(split_member(m)[0] for m in valid)
        dead = [m for m in members if m not in valid or split_member(m)[0] not in alive]
        for member in dead:
            log.info(
                "removing a departed instance's socket from the asset coordinator",
                extra={"project": project, "member": member},
            )
            await self.leave(project, member)
        return [m for m in valid if split_member(m)[0] in alive]

    async def _alive_instances(self, instances: Iterable[str]) -> set[str]:
        others = sorted(set(instances) - {self.instance})
        alive = {self.instance}
        if others:
            async with self._redis.pipeline(transaction=False) as pipe:
                for instance in others:
                    pipe.exists(instance_key(bytes.fromhex(instance)))
                exists = await pipe.execute()
            alive.update(i for i, e in zip(others, exists) if e)
        return alive

    # delivery --------------------------------------------------------------

    def send(self, member: str, frame: bytes | str) -> None:
        instance, connection_id = split_member(member)
        if instance == self.instance:
            if self._deliver is not None:
                self._deliver(connection_id, frame)
            return
        kind, body = (b"t", frame.encode()) if isinstance(frame, str) else (b"b", frame)
        message = f"{connection_id}:".encode() + kind + body
        self._tasks.spawn(self._publish(assets_inbox(instance), message), name="asset-send")

    async def _publish(self, name: str, message: bytes) -> None:
        try:
            await self._redis.publish(name, message)
        except REDIS_ERRORS as exc:
            log.warning("could not deliver an asset message to another instance: %s", exc)

    def _on_message(self, name: bytes, data: bytes) -> None:
        head, _, rest = data.partition(b":")
        if name != self._inbox or not head.isdigit() or not rest or self._deliver is None:
            return
        body = rest[1:]
        if rest[:1] == b"t":
            try:
                self._deliver(int(head), body.decode())
            except UnicodeDecodeError:
                log.warning("dropped an undecodable asset message")
        else:
            self._deliver(int(head), body)

    def _on_subscribed(self, name: bytes) -> None:
        if name == self._inbox:
            self._subscribed.set()

    async def _inbox_loop(self) -> None:
        backoff = Backoff(0.1, 2.0)
        while True:
            subscriber: RedisSubscriber | ClusterSubscriber | None = None
            try:
                subscriber = await connect_subscriber(
                    self._redis, self._on_message, self._on_subscribed
                )
                subscriber.subscribe(self._inbox)
                backoff.reset()
                await subscriber.closed
            except asyncio.CancelledError:
                raise
            except REDIS_ERRORS as exc:
                log.warning("asset coordinator inbox disconnected: %s", exc)
            finally:
                self._subscribed.clear()
                if subscriber is not None:
                    subscriber.close()
            await backoff.sleep()


def _is_member(key: str) -> bool:
    try:
        instance, _ = split_member(key)
        bytes.fromhex(instance)
    except ValueError:
        return False
    return True

"""Presence: this instance's heartbeat, the other instances' absence, Redis's data lifetime.

Every `interval` the instance sets its heartbeat key with a TTL of `ttl`, reads
the epoch token (a different one than last time means Redis lost its data:
`on_data_lost`), and checks in one pipeline the key of every other instance
owning awareness states in a local room. An instance whose key stays missing
for a whole `ttl` is gone, and its connections' states are removed from every
room. The grace matters when Redis loses its data: every heartbeat vanishes at
once, and each live instance re-sets its key within one interval (at once
after a reconnect, `announce`), before a peer acts. A clean shutdown
(`say_goodbye`) publishes the instance's id and deletes its key, so peers drop
its states at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping

from services.collab.backplane import BackplaneRoom, RoomHost
from shared.redis_contract import INSTANCES_CHANNEL, instance_key
from shared.redis_log import REDIS_ERRORS, RedisClient, current_epoch

log = logging.getLogger(__name__)


class Absences:
    """Which instances' heartbeat keys have stayed missing for a whole `ttl` (pure)."""

    def __init__(self, ttl: float) -> None:
        self._ttl = ttl
        self._missing_since: dict[bytes, float] = {}

    def observe(self, alive: Mapping[bytes, bool], now: float) -> list[bytes]:
        """Record which of the instances of interest have a heartbeat key at `now`;
        return those missing for `ttl` (each reported once). Instances not in
        `alive` are no longer of interest and are forgotten."""
        gone = []
        for instance_id, exists in alive.items():
            if exists:
                self._missing_since.pop(instance_id, None)
                continue
            since = self._missing_since.setdefault(instance_id, now)
            if now - since >= self._ttl:
                del self._missing_since[instance_id]
                gone.append(instance_id)
        for instance_id in set(self._missing_since) - set(alive):
            del self._missing_since[instance_id]
        return gone

    def clear(self) -> None:
        """Forget every absence (Redis lost its data: every heartbeat vanished with it)."""
        self._missing_since.clear()


class Presence:
    """This instance's heartbeat and epoch check, and the removal of gone instances' awareness."""

    def __init__(
        self,
        redis: RedisClient,
        instance_id: bytes,
        *,
        interval: float,
        ttl: float,
        on_data_lost: Callable[[], None],
    ) -> None:
        self._redis = redis
        self._instance_id = instance_id
        self._interval = interval
        self._ttl = ttl
        self._on_data_lost = on_data_lost
        self._epoch: bytes | None = None  # Redis's data lifetime, as last seen
        self._announce = asyncio.Event()  # refresh the heartbeat now
        self._absences = Absences(ttl)

    def announce(self) -> None:
        """Refresh the heartbeat now (Redis is back: before peers look for it)."""
        self._announce.set()

    async def run(self, rooms: RoomHost) -> None:
        """Forever: heartbeat, epoch check, removal of gone instances from `rooms`, every `interval`."""
        while True:
            try:
                await self._redis.set(
                    instance_key(self._instance_id), b"1", px=int(self._ttl * 1000)
                )
                await self._check_epoch()
                await self._remove_gone_instances(rooms)
            except REDIS_ERRORS:
                pass
            self._announce.clear()
            try:
                await asyncio.wait_for(self._announce.wait(), self._interval)
            except TimeoutError:
                pass

    async def say_goodbye(self) -> None:
        """Tell peers this instance is gone (bounded; best effort)."""
        try:
            async with asyncio.timeout(2.0):
                await self._redis.publish(INSTANCES_CHANNEL, self._instance_id)
                await self._redis.delete(instance_key(self._instance_id))
        except REDIS_ERRORS:
            pass

    @staticmethod
    def forget_instance(instance_id: bytes, rooms: Iterable[BackplaneRoom]) -> None:
        """Remove the awareness states of `instance_id`'s connections from every room."""
        for room in rooms:
            room.remove_instance_awareness(instance_id)

    async def _check_epoch(self) -> None:
        """Notice that Redis lost its data even without a reconnect (FLUSHALL)."""
        epoch = await current_epoch(self._redis)
        if self._epoch is not None and epoch != self._epoch:
            self._absences.clear()  # every heartbeat vanished with it
            self._on_data_lost()
        self._epoch = epoch

    async def _remove_gone_instances(self, rooms: RoomHost) -> None:
        owners = list(
            {
                instance_id
                for room in rooms.rooms()
                for instance_id in room.remote_awareness_instances()
            }
        )
        alive: list[bool] = []
        if owners:
            pipe = self._redis.pipeline(transaction=False)
            for instance_id in owners:
                pipe.exists(instance_key(instance_id))
            alive = [bool(exists) for exists in await pipe.execute()]
        for instance_id in self._absences.observe(
            dict(zip(owners, alive)), asyncio.get_running_loop().time()
        ):
            log.info(
                "instance gone; removing its awareness states",
                extra={"instance": instance_id.hex()},
            )
            self.forget_instance(instance_id, rooms.rooms())

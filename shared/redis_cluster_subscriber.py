"""Pub/sub across a Redis Cluster: one lean `RedisSubscriber` per master.

Sharded channels (SSUBSCRIBE) are served only by the master of their slot, so
each room channel is subscribed on the connection to that master (one command
per slot: Redis refuses an SSUBSCRIBE naming channels of several slots); classic
channels (instance announcements, asset control frames), which a cluster
delivers on every node, go to the first connection. The slot map is the
cluster client's, refreshed at each connect. Anything that changes it (a
failover, a slot moved) drops a connection or makes the node refuse with MOVED,
and either closes the whole subscriber (`closed`): its owner connects again to
the current topology, resubscribes and resyncs, as after any reconnect.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

import redis.asyncio as aioredis
from redis.crc import key_slot

from shared.redis_subscriber import OnMessage, OnSubscribed, RedisSubscriber


class ClusterSubscriber:
    """The `RedisSubscriber` interface over every master of a cluster."""

    def __init__(
        self, cluster: aioredis.RedisCluster, subscribers: dict[str, RedisSubscriber]
    ) -> None:
        self._cluster = cluster
        self._subscribers = subscribers  # node name (host:port) -> its connection
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for subscriber in subscribers.values():
            subscriber.closed.add_done_callback(lambda _: self.close())

    @classmethod
    async def connect(
        cls,
        cluster: aioredis.RedisCluster,
        on_message: OnMessage,
        on_subscribed: OnSubscribed,
        **options: float,
    ) -> ClusterSubscriber:
        """Connect to every master the cluster has now (refreshing its slot map first)."""
        await cluster.nodes_manager.initialize()
        credentials = cluster.connection_kwargs
        subscribers: dict[str, RedisSubscriber] = {}
        try:
            for node in cluster.get_primaries():
                subscribers[node.name] = await RedisSubscriber.connect(
                    node.host,
                    int(node.port),
                    on_message,
                    on_subscribed,
                    username=credentials.get("username"),
                    password=credentials.get("password"),
                    **options,
                )
        except BaseException:
            for subscriber in subscribers.values():
                subscriber.close()
            raise
        return cls(cluster, subscribers)

    def subscribe(self, *channels: str | bytes, sharded: bool = False) -> None:
        for subscriber, names in self._route(channels, sharded):
            subscriber.subscribe(*names, sharded=sharded)

    def unsubscribe(self, *channels: str | bytes, sharded: bool = False) -> None:
        for subscriber, names in self._route(channels, sharded):
            subscriber.unsubscribe(*names, sharded=sharded)

    def close(self) -> None:
        for subscriber in self._subscribers.values():
            subscriber.close()
        if not self.closed.done():
            self.closed.set_result(None)

    def _route(
        self, channels: tuple[str | bytes, ...], sharded: bool
    ) -> list[tuple[RedisSubscriber, list[str | bytes]]]:
        """The commands to send: classic channels on the first connection; sharded ones
        grouped by slot (one SSUBSCRIBE may name one slot only) on the slot's master."""
        if not sharded:
            return [(next(iter(self._subscribers.values())), list(channels))]
        by_slot: dict[int, list[str | bytes]] = defaultdict(list)
        for name in channels:
            by_slot[key_slot(name.encode() if isinstance(name, str) else name)].append(name)
        routed = []
        for slot, names in by_slot.items():
            node = self._cluster.nodes_manager.get_node_from_slot(slot)
            subscriber = self._subscribers.get(node.name) if node is not None else None
            if subscriber is None:  # no master we knew at connect serves it: the map changed
                self.close()
                raise ConnectionError(f"the cluster's slot map changed (slot {slot})")
            routed.append((subscriber, names))
        return routed


async def connect_subscriber(
    redis: aioredis.Redis | aioredis.RedisCluster,
    on_message: OnMessage,
    on_subscribed: OnSubscribed,
    **options: float,
) -> RedisSubscriber | ClusterSubscriber:
    """A lean subscriber to what `redis` talks to: one server, or every master of a cluster."""
    if isinstance(redis, aioredis.RedisCluster):
        return await ClusterSubscriber.connect(redis, on_message, on_subscribed, **options)
    return await RedisSubscriber.connect_like(redis, on_message, on_subscribed, **options)

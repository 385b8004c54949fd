"""A lean Redis pub/sub subscriber: one connection, RESP parsed by hiredis.

A collab instance receives every envelope of every room it has open, its own
included (pub/sub echoes to the publisher), so the per-message cost of the
subscriber is paid once per update per instance. redis-py's `PubSub` spends
about 50 µs of Python per message (a read timeout, the retry wrapper, a dict
per message, one task switch each). This subscriber is an asyncio `Protocol`:
bytes go to `hiredis.Reader` and each message is handed to `on_message`
synchronously, as many per read as arrived.

Liveness: a PING every `ping_interval` seconds must be answered within
`ping_timeout`, otherwise the connection is closed, so a silently dropped
connection is noticed like a reset one (`closed` completes either way).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from collections.abc import Callable
from typing import Any, cast

import hiredis
import redis.asyncio as aioredis

log = logging.getLogger(__name__)

OnMessage = Callable[[bytes, bytes], None]  # (channel, data)
OnSubscribed = Callable[[bytes], None]  # (channel)


class RedisSubscriber(asyncio.Protocol):
    """Subscribe and unsubscribe; confirmations and messages arrive as callbacks."""

    def __init__(self, on_message: OnMessage, on_subscribed: OnSubscribed) -> None:
        self._on_message = on_message
        self._on_subscribed = on_subscribed
        self._reader = hiredis.Reader()
        self._transport: asyncio.Transport | None = None
        self._replies: deque[asyncio.Future[object]] = deque()  # commands answered outside pub/sub
        self._pong: asyncio.Future[None] | None = None
        self._pinger: asyncio.Task[None] | None = None
        self._leaving: set[bytes] = set()  # sharded channels we asked to leave
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @classmethod
    async def connect_like(
        cls,
        redis: aioredis.Redis,
        on_message: OnMessage,
        on_subscribed: OnSubscribed,
        **options: float,
    ) -> RedisSubscriber:
        """Connect to the server `redis` talks to, with its credentials."""
        kwargs = redis.connection_pool.connection_kwargs
        return await cls.connect(
            kwargs.get("host", "localhost"),
            kwargs.get("port", 6379),
            on_message,
            on_subscribed,
            username=kwargs.get("username"),
            password=kwargs.get("password"),
            **options,
        )

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        on_message: OnMessage,
        on_subscribed: OnSubscribed,
        *,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 2.0,
        ping_interval: float = 5.0,
        ping_timeout: float = 5.0,
    ) -> RedisSubscriber:
        """Connect to `host:port` and log in if a password is given."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            _, subscriber = await loop.create_connection(
                lambda: cls(on_message, on_subscribed), host, port
            )
            try:
                if password:
                    await subscriber._command(b"AUTH", *([username] if username else []), password)
            except BaseException:
                subscriber.close()
                raise
        subscriber._pinger = loop.create_task(subscriber._keep_alive(ping_interval, ping_timeout))
        return subscriber

    def subscribe(self, *channels: str | bytes, sharded: bool = False) -> None:
        """Subscribe (SSUBSCRIBE if `sharded`: a cluster's per-slot channels, which must all
        be served by this node); each channel's confirmation calls `on_subscribed`."""
        self._write(b"SSUBSCRIBE" if sharded else b"SUBSCRIBE", *channels)

    def unsubscribe(self, *channels: str | bytes, sharded: bool = False) -> None:
        if sharded:
            self._leaving.update(_as_bytes(c) for c in channels)
        self._write(b"SUNSUBSCRIBE" if sharded else b"UNSUBSCRIBE", *channels)

    def close(self) -> None:
        if self._pinger is not None:
            self._pinger.cancel()
        if self._transport is not None:
            self._transport.close()

    # asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while (reply := self._reader.gets()) is not False:
            if isinstance(reply, list) and reply:
                try:
                    self._push(reply)
                except Exception:  # one bad message must not drop the connection
                    log.exception("handling a pub/sub message failed")
            elif self._replies:
                waiter = self._replies.popleft()
                if not waiter.done():
                    if isinstance(reply, hiredis.ReplyError):
                        waiter.set_exception(ConnectionError(f"Redis refused: {reply}"))
                    else:
                        waiter.set_result(reply)
            elif isinstance(reply, hiredis.ReplyError):
                # e.g. MOVED: the slot of a sharded channel is served elsewhere now;
                # closing makes the owner reconnect to the current topology and resync
                log.warning("Redis refused a pub/sub command: %s; reconnecting", reply)
                self.close()

    def _push(self, reply: list[bytes]) -> None:
        kind = reply[0]
        if kind in (b"message", b"smessage"):
            self._on_message(reply[1], reply[2])
        elif kind in (b"subscribe", b"ssubscribe"):
            self._on_subscribed(reply[1])
        elif kind == b"sunsubscribe" and reply[1] in self._leaving:
            self._leaving.discard(reply[1])
        elif kind == b"sunsubscribe":
            # not asked for: the server dropped a sharded subscription (its slot moved,
            # or it became a replica); the owner reconnects to the current topology,
            # resubscribes and resyncs
            log.warning("Redis dropped a sharded subscription (slot moved); reconnecting")
            self.close()
        elif kind == b"pong" and self._pong is not None and not self._pong.done():
            self._pong.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._pinger is not None:
            self._pinger.cancel()
        for waiter in self._replies:
            if not waiter.done():
                waiter.set_exception(ConnectionError("Redis connection lost"))
        self._replies.clear()
        if not self.closed.done():
            self.closed.set_result(None)

    # internals -------------------------------------------------------------

    def _write(self, *args: str | bytes) -> None:
        if self._transport is None:
            raise ConnectionError("Redis subscriber is not connected")
        self._transport.write(hiredis.pack_command(cast(Any, args)))  # its stub wants a 1-tuple

    async def _command(self, *args: str | bytes) -> object:
        """A command answered with a plain reply (before any subscription)."""
        waiter: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._replies.append(waiter)
        self._write(*args)
        return await waiter

    async def _keep_alive(self, interval: float, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            self._pong = loop.create_future()
            try:
                self._write(b"PING")
                await asyncio.wait_for(self._pong, timeout)
            except (TimeoutError, ConnectionError):
                self.close()
                return


def _as_bytes(name: str | bytes) -> bytes:
    return name.encode() if isinstance(name, str) else name

"""One client's WebSocket, with a non-blocking send path.

Broadcasting must never wait on a slow socket. `send` writes the frame
straight to the transport while the socket keeps up (no task, no copy: a
broadcast encodes its frame once, see `frames.py`); once the transport's
buffer passes `HIGH_WATER`, frames queue and a writer task drains them with
aiohttp's flow control. A client that lets more than `max_queued_bytes` pile
up is disconnected with 1013 instead of growing the server's memory without
bound.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque

from aiohttp import web

from services.collab.close_codes import CloseCode
from services.collab.frames import encode_frame
from shared.access import Role
from shared.auth import Identity

log = logging.getLogger(__name__)

_ids = itertools.count(1)

HIGH_WATER = 256 * 1024


class Connection:
    """A joined client: its socket, who it is, and its outgoing queue."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport | None,
        identity: Identity,
        role: Role,
        *,
        max_queued_bytes: int = 64 * 1024 * 1024,
        frames_per_second: float = 0.0,
    ) -> None:
        self.id = next(_ids)
        self.ws = ws
        self._transport = transport
        self.identity = identity
        self.role = role
        self.last_seen = time.monotonic()
        self.last_ping = 0.0
        self._queue: deque[bytes | str] = deque()
        self._queued_bytes = 0
        self._max_queued_bytes = max_queued_bytes
        self._writer: asyncio.Task[None] | None = None
        # token bucket over incoming frames (0 = unlimited); burst of two seconds' worth
        self._rate = frames_per_second
        self._tokens = self._burst = frames_per_second * 2
        self._refilled = self.last_seen

    def allow_frame(self, now: float) -> bool:
        """Take one token for an incoming frame; False when the client floods."""
        if not self._rate:
            return True
        self._tokens = min(self._burst, self._tokens + (now - self._refilled) * self._rate)
        self._refilled = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def __repr__(self) -> str:
        return f"<Connection {self.id} user={self.identity.user_id} role={self.role.value}>"

    @property
    def closed(self) -> bool:
        return self.ws.closed

    def send(self, data: bytes | str, frame: bytes | None = None) -> None:
        """Send `data` (bytes: binary, str: text) without waiting; `frame` is its
        pre-encoded WebSocket frame when the caller has one."""
        if self.ws.closed:
            return
        transport = self._transport
        if (
            self._writer is None
            and transport is not None
            and not transport.is_closing()
            and transport.get_write_buffer_size() < HIGH_WATER
        ):
            transport.write(frame if frame is not None else encode_frame(data))
            return
        self._queue.append(data)
        self._queued_bytes += len(data)
        if self._queued_bytes > self._max_queued_bytes:
            log.warning("slow consumer disconnected", extra={"connection": self.id})
            self._queue.clear()
            self._queued_bytes = 0
            asyncio.get_running_loop().create_task(
                self.close(CloseCode.TRY_AGAIN_LATER, "too slow")
            )
            return
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while self._queue:
                data = self._queue.popleft()
                self._queued_bytes -= len(data)
                if isinstance(data, bytes):
                    await self.ws.send_bytes(data)
                else:
                    await self.ws.send_str(data)
        except (ConnectionError, RuntimeError):
            self._queue.clear()
            self._queued_bytes = 0
        finally:
            self._writer = None

    async def flush(self) -> None:
        """Wait until queued frames are handed to the socket."""
        writer = self._writer
        if writer is not None:
            await asyncio.shield(writer)

    async def close(self, code: int, message: str = "") -> None:
        """Flush what is queued, then close with `code`."""
        try:
            await asyncio.wait_for(self.flush(), 2.0)
        except (asyncio.TimeoutError, ConnectionError, RuntimeError):
            pass
        await self.ws.close(code=code, message=message.encode()[:120])

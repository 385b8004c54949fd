"""One client's WebSocket, with a non-blocking send path.

Broadcasting must never wait on a slow socket. While the socket keeps up,
`send` only appends the (already encoded, see `frames.py`) frame to the
connection's tick buffer; at the end of the event-loop tick the `TickWriter`
writes each socket's frames with one `transport.write`, so a client sent
several frames in one tick costs one system call, not several. Once the
transport's buffer passes `HIGH_WATER`, frames queue instead and are written
when the transport says its buffer drained (`FrameSocket.when_writable`). A
client that lets more than `max_queued_bytes` pile up is disconnected with
1013 instead of growing the server's memory without bound.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque

from services.collab.close_codes import CloseCode
from services.collab.frame_socket import FrameSocket
from services.collab.frames import encode_frame
from shared.access import Role
from shared.auth import Identity
from shared.tasks import TaskOwner

log = logging.getLogger(__name__)

_ids = itertools.count(1)

HIGH_WATER = 256 * 1024
#: Handling a connection's frames yields to the event loop after this much work (seconds).
TIME_SLICE = 0.0005

Payload = bytes | memoryview | str  # a binary frame's bytes (or a view of them), or a text frame


class TickWriter:
    """Writes every connection's frames of one event-loop tick together, at its end."""

    def __init__(self) -> None:
        self._due: list[Connection] = []

    def schedule(self, conn: Connection) -> None:
        """`conn` has frames to write; the first call of a tick schedules the flush."""
        if not self._due:
            asyncio.get_running_loop().call_soon(self._flush)
        self._due.append(conn)

    def _flush(self) -> None:
        due, self._due = self._due, []
        for conn in due:
            try:
                conn.write_tick()
            except Exception:  # one broken socket must not keep the others' frames back
                log.exception("writing to a socket failed", extra={"connection": conn.id})


class Connection:
    """A joined client: its socket, who it is, and its outgoing queue."""

    __slots__ = (
        "_burst",
        "_flushed",
        "_max_queued_bytes",
        "_queue",
        "_queued_bytes",
        "_rate",
        "_refilled",
        "_tasks",
        "_tick_frames",
        "_tick_writer",
        "_tokens",
        "_work",
        "id",
        "identity",
        "last_ping",
        "last_seen",
        "role",
        "socket",
    )

    def __init__(
        self,
        socket: FrameSocket,
        identity: Identity,
        role: Role,
        tick_writer: TickWriter,
        *,
        tasks: TaskOwner,
        max_queued_bytes: int = 64 * 1024 * 1024,
        frames_per_second: float = 0.0,
    ) -> None:
        self.id = next(_ids)
        self.socket = socket
        self.identity = identity
        self.role = role
        self.last_seen = time.monotonic()
        self.last_ping = 0.0
        self._tick_writer = tick_writer
        self._tasks = tasks
        self._tick_frames: list[bytes] = []  # encoded frames written at the end of this tick
        self._queue: deque[bytes] | None = None  # encoded frames waiting for the socket to drain
        self._queued_bytes = 0
        self._max_queued_bytes = max_queued_bytes
        self._flushed: asyncio.Future[None] | None = None  # `flush` waiting for the queue
        # token bucket over incoming frames (0 = unlimited); burst of two seconds' worth
        self._rate = frames_per_second
        self._tokens = self._burst = frames_per_second * 2
        self._refilled = self.last_seen
        self._work = 0.0  # seconds of frame handling since the last yield to the loop

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

    def charge(self, seconds: float) -> bool:
        """Add `seconds` of work on this connection's frames; True once a time slice
        is used up (the caller then yields, so other rooms' sockets get their turn)."""
        self._work += seconds
        if self._work < TIME_SLICE:
            return False
        self._work = 0.0
        return True

    def __repr__(self) -> str:
        return f"<Connection {self.id} user={self.identity.user_id} role={self.role.value}>"

    @property
    def closed(self) -> bool:
        return self.socket.closed

    def send(self, data: Payload, frame: bytes | None = None) -> None:
        """Send `data` (bytes or a view of them: binary, str: text) without waiting;
        `frame` is its pre-encoded WebSocket frame when the caller has one."""
        socket = self.socket
        if socket.closed:
            return
        if frame is None:
            frame = encode_frame(data)
        if self._tick_frames or (self._queue is None and socket.buffered() < HIGH_WATER):
            if not self._tick_frames:
                self._tick_writer.schedule(self)
            self._tick_frames.append(frame)
            return
        if self._queue is None:
            self._queue = deque()
            socket.when_writable(self._drain)
        self._queue.append(frame)
        self._queued_bytes += len(frame)
        if self._queued_bytes > self._max_queued_bytes:
            log.warning("slow consumer disconnected", extra={"connection": self.id})
            self._drop_queue()
            self.close_soon(CloseCode.TRY_AGAIN_LATER, "too slow")

    def write_tick(self) -> None:
        """Write the frames gathered this tick in one system call."""
        frames, self._tick_frames = self._tick_frames, []
        if frames:
            self.socket.write(frames[0] if len(frames) == 1 else b"".join(frames))

    def _drain(self) -> None:
        """The socket's buffer drained (or the socket is gone): write what queued while
        the buffer stays under HIGH_WATER; above it the transport has paused, and its
        next drain calls this again."""
        queue, socket = self._queue, self.socket
        if queue is None:
            return
        if socket.closed:
            self._drop_queue()
            return
        while queue and (room := HIGH_WATER - socket.buffered()) > 0:
            batch: list[bytes] = []
            while queue and room > 0:
                frame = queue.popleft()
                batch.append(frame)
                room -= len(frame)
                self._queued_bytes -= len(frame)
            socket.write(b"".join(batch))
        if queue:
            socket.when_writable(self._drain)
        else:
            self._drop_queue()

    def _drop_queue(self) -> None:
        self._queue = None
        self._queued_bytes = 0
        flushed, self._flushed = self._flushed, None
        if flushed is not None and not flushed.done():
            flushed.set_result(None)

    async def flush(self) -> None:
        """Wait until queued frames are handed to the socket."""
        self.write_tick()
        if self._queue is not None:
            if self._flushed is None:
                self._flushed = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._flushed)

    def pong(self, payload: bytes) -> None:
        """Answer a client's ping."""
        self.socket.pong(payload)

    def ping(self) -> None:
        """Ask a quiet client for a sign of life."""
        self.socket.ping()

    def close_soon(self, code: int, message: str = "") -> None:
        """`close` in the background (from code that must not wait for it)."""
        self._tasks.spawn(self.close(code, message), name=f"close-{self.id}")

    async def close(self, code: int, message: str = "") -> None:
        """Flush what is queued, then close with `code`."""
        try:
            await asyncio.wait_for(self.flush(), 2.0)
        except TimeoutError:
            pass
        self._drop_queue()
        await self.socket.close(code, message.encode()[:120])

"""One client's WebSocket after the handshake, as an asyncio protocol: no task per socket.

aiohttp answers the handshake and hands the transport over (`websocket.py`).
From then on frames are parsed in `data_received` (aiohttp's reader) and given
to the socket's `FrameHandler` in order, one by one. A handler that must
await (a control frame's Redis work, a close) returns an awaitable: reading
pauses and later frames wait until it is done, as they did behind a
`receive()` loop.

Closing follows RFC 6455 §7 as aiohttp's WebSocketResponse did (same codes,
same timeouts): a client's close frame is answered with 1000 and the
connection closed; `close()` sends ours and waits up to `CLOSE_TIMEOUT` for
the answer. A frame over the socket's limit (`MAX_SYNC_MESSAGE_BYTES`, the
most one frame may hold in memory while it arrives) can never be accepted
and is refused with 4413, which the stock y-websocket client does not retry.
The client is still sending that frame then: dropping the connection would
make the kernel reset it on the unread bytes, and a client that sees the
reset before the close frame (the `ws` package, browsers) reports 1006. So
the connection is half-closed instead (FIN after the close frame), the rest
is read and dropped, and it closes when the client closes its side, or after
`LINGER_SECONDS`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Protocol

from aiohttp import WebSocketError, WSCloseCode, WSMessage, WSMsgType

from services.collab.close_codes import CloseCode
from services.collab.frames import OPCODE_PING, OPCODE_PONG, close_frame, control_frame
from services.collab.websocket import frame_parser
from shared.tasks import TaskOwner

CLOSE_TIMEOUT = 10.0  # aiohttp's WebSocketResponse default
LINGER_SECONDS = 5.0
FRAME_TOO_LARGE = b"message too large"
#: Bytes kept from a client before its socket is started (the room still loading).
EARLY_BYTES = 64 * 1024


class FrameHandler(Protocol):
    """What a started socket calls."""

    def on_frame(self, message: WSMessage) -> Awaitable[None] | None:
        """A data frame, ping or pong; an awaitable holds back later frames until done."""

    def on_refused(self, error: BaseException) -> None:
        """The reader refused a frame (the socket is closing with its code)."""

    def on_closed(self) -> None:
        """Once, when the socket stops being open (either side closed, or it was lost)."""


class State(Enum):
    OPEN = 1
    CLOSING = 2  # our close frame sent, waiting for the client's
    LINGERING = 3  # refused an oversized frame: half-closed, reading and dropping the rest
    CLOSED = 4


class FrameSocket(asyncio.Protocol):
    """A WebSocket's frames in and out over a transport taken from aiohttp."""

    __slots__ = (
        "_backlog",
        "_busy",
        "_early",
        "_gone",
        "_handler",
        "_parser",
        "_state",
        "_tasks",
        "_timer",
        "_told",
        "_transport",
        "_when_writable",
        "close_code",
    )

    def __init__(self, max_frame_bytes: int, tasks: TaskOwner) -> None:
        self._transport: asyncio.Transport | None = None
        self._tasks = tasks
        self._parser = frame_parser(self._on_message, self._on_reader_error, max_frame_bytes)
        self._handler: FrameHandler | None = None
        self._told = False  # the handler heard `on_closed`
        self._early: bytearray | None = bytearray()  # what arrives before `start`
        self._backlog: deque[WSMessage] | None = None  # frames behind an awaited one
        self._busy = False
        self._state = State.OPEN
        self.close_code: int | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._gone: asyncio.Future[None] | None = None  # created by whoever waits for the end
        self._when_writable: Callable[[], None] | None = None

    # ------------------------------------------------------------------ lifecycle

    def attach(self, transport: asyncio.Transport, early: bytes) -> None:
        """The transport is ours now; `early`: bytes the client sent before this."""
        self._transport = transport
        if self._early is not None:
            self._early[:0] = early

    def start(self, handler: FrameHandler) -> None:
        """Read frames (those that arrived already first) and give them to `handler`."""
        self._handler = handler
        early, self._early = bytes(self._early or b""), None
        transport = self._transport
        if self._state is State.CLOSED or transport is None:
            self._end()
            return
        if not transport.is_reading():
            transport.resume_reading()
        if early:
            self.data_received(early)

    @property
    def closed(self) -> bool:
        """True once closing started (no frame is sent after a close frame)."""
        return self._state is not State.OPEN

    # ------------------------------------------------------------------ asyncio.Protocol

    def data_received(self, data: bytes) -> None:
        if self._state is State.LINGERING or self._state is State.CLOSED:
            return
        if self._early is not None:
            self._early += data
            if len(self._early) > EARLY_BYTES and self._transport is not None:
                self._transport.pause_reading()  # resumed by `start`
            return
        self._parser.feed_data(data)

    def eof_received(self) -> bool:
        return False  # the transport closes; connection_lost follows

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.close_code is None:
            self.close_code = WSCloseCode.ABNORMAL_CLOSURE
        self._state = State.CLOSED
        self._end()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._gone is not None and not self._gone.done():
            self._gone.set_result(None)
        self._writable()

    def pause_writing(self) -> None:
        """The transport's buffer is full; `when_writable` callers wait for `resume_writing`."""

    def resume_writing(self) -> None:
        self._writable()

    # ------------------------------------------------------------------ frames in

    def _on_message(self, message: WSMessage) -> None:
        if self._busy and self._state is State.OPEN:
            if self._backlog is None:
                self._backlog = deque()
            self._backlog.append(message)
            return
        self._dispatch(message)

    def _dispatch(self, message: WSMessage) -> None:
        if message.type is WSMsgType.CLOSE:
            self._close_received(message.data)
            return
        if self._state is not State.OPEN or self._handler is None:
            return  # after our close frame, only the client's close matters
        step = self._handler.on_frame(message)
        if step is not None:
            self._busy = True
            if self._transport is not None and not self._transport.is_closing():
                self._transport.pause_reading()
            self._tasks.spawn(self._await(step), name="frame")

    async def _await(self, step: Awaitable[None]) -> None:
        try:
            await step
        finally:
            self._busy = False
            self._drain_backlog()

    def _drain_backlog(self) -> None:
        backlog = self._backlog
        while backlog and not self._busy:
            self._dispatch(backlog.popleft())
        if self._busy:
            return
        self._backlog = None
        transport = self._transport
        if self._state is State.OPEN and transport is not None and not transport.is_closing():
            transport.resume_reading()

    def _close_received(self, code: int) -> None:
        state, self._state = self._state, State.CLOSED
        if state is State.OPEN:
            self.close_code = code
            self._write(close_frame(WSCloseCode.OK))
        elif state is State.CLOSING:
            self.close_code = code
        self._end()
        if self._transport is not None:
            self._transport.close()

    def _on_reader_error(self, error: BaseException) -> None:
        too_big = isinstance(error, WebSocketError) and error.code == WSCloseCode.MESSAGE_TOO_BIG
        if self._state is State.CLOSING and too_big:
            self._linger()  # a refused client sending blind: our close frame is out already
            return
        if self._state is not State.OPEN:
            return
        if too_big:
            self._state, self.close_code = State.LINGERING, CloseCode.TOO_LARGE
            self._write(close_frame(CloseCode.TOO_LARGE, FRAME_TOO_LARGE))
        else:
            code = error.code if isinstance(error, WebSocketError) else CloseCode.INTERNAL_ERROR
            self._state, self.close_code = State.CLOSED, code
            self._write(close_frame(code))
        if self._handler is not None:
            self._handler.on_refused(error)
        self._end()
        if too_big:
            self._linger()
        elif self._transport is not None:
            self._transport.close()

    def _linger(self) -> None:
        """Half-close, drop what still arrives, close when the client does (or LINGER_SECONDS)."""
        self._state = State.LINGERING
        transport = self._transport
        if transport is None:
            return
        if self._timer is not None:
            self._timer.cancel()
        if transport.can_write_eof():
            transport.write_eof()
            self._timer = asyncio.get_running_loop().call_later(LINGER_SECONDS, transport.close)
        else:
            transport.close()

    # ------------------------------------------------------------------ frames out

    def write(self, data: bytes) -> None:
        """Write encoded frames (nothing once closing started)."""
        if self._state is State.OPEN:
            self._write(data)

    def _write(self, data: bytes) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def ping(self, payload: bytes = b"") -> None:
        self.write(control_frame(OPCODE_PING, payload))

    def pong(self, payload: bytes = b"") -> None:
        self.write(control_frame(OPCODE_PONG, payload))

    def buffered(self) -> int:
        """Bytes written but not yet sent; a closed socket counts as full."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return 1 << 62
        return transport.get_write_buffer_size()

    def when_writable(self, callback: Callable[[], None]) -> None:
        """Call `callback` once, when the transport's buffer drains or the socket is gone."""
        self._when_writable = callback

    def _writable(self) -> None:
        callback, self._when_writable = self._when_writable, None
        if callback is not None:
            callback()

    async def close(self, code: int, reason: bytes = b"") -> None:
        """Send a close frame and wait (at most CLOSE_TIMEOUT) for the client's, then close."""
        if self._state is not State.OPEN:
            return
        self._state, self.close_code = State.CLOSING, code
        self._write(close_frame(code, reason))
        self._end()
        transport = self._transport
        if transport is None:
            return
        loop = asyncio.get_running_loop()
        self._gone = gone = loop.create_future()
        self._timer = loop.call_later(CLOSE_TIMEOUT, self._give_up)
        # The answer may already wait behind a frame being handled, or not be read yet.
        answer = next((m for m in self._backlog or () if m.type is WSMsgType.CLOSE), None)
        if answer is not None:
            self._close_received(answer.data)
        elif not transport.is_reading():
            transport.resume_reading()
        await gone

    def _give_up(self) -> None:
        self._timer = None
        self.close_code = WSCloseCode.ABNORMAL_CLOSURE
        if self._transport is not None:
            self._transport.abort()

    def _end(self) -> None:
        """Tell the handler, once, that the socket is no longer open."""
        if self._handler is not None and not self._told:
            self._told = True
            self._handler.on_closed()

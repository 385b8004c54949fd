"""Every aiohttp internal the collab endpoint relies on, in one module.

Checked against aiohttp 3.14.5; pyproject pins 3.14.x (>=3.14.5) for that reason.
`tests/test_websocket_handover.py` fails loudly when any of it changes.

aiohttp answers the WebSocket handshake (`WebSocketResponse.prepare`: the
header checks, the 101); then the connection is taken from it, so that no
request, response, request handler or handler task stays alive for the
connection's life (they were most of an idle socket's memory):

- before `prepare`, the bytes aiohttp's HTTP parser read past the handshake
  (`RequestHandler._message_tail`) are taken, and the transport is given to
  the caller's protocol (`transport.set_protocol`, public asyncio);
- after it, the request handler forgets the transport (`RequestHandler.transport
  = None`: once the web handler returns, `RequestHandler.start()` closes the
  transport it still holds) and its server forgets the connection
  (`Server.connection_lost`, what aiohttp's own `connection_lost` calls; it
  drops the handler once its task ends, so graceful shutdown does not wait on it);
- the response's `write_eof`, which aiohttp calls after the handler returns
  (a WebSocketResponse sends a close frame there), does nothing.

Frames are then parsed by aiohttp's own `WebSocketReader` (the Cython one where
it is built), fed with `feed_data`. That reader delivers into a
`WebSocketDataQueue` (typed so in Cython): `FrameSink` subclasses it and hands
each message on at once (`feed_data` is a cpdef method, which a Python subclass
may override) instead of queueing it for a task to await.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import WSMessage, web
from aiohttp._websocket.reader import WebSocketDataQueue, WebSocketReader


class Handshake(web.WebSocketResponse):
    """The handshake's response; the connection is handed over right after `prepare`."""

    def __init__(self) -> None:
        super().__init__(autoping=False, compress=False)

    async def write_eof(self) -> None:  # type: ignore[override]
        """Nothing: the connection is no longer aiohttp's when it calls this."""


async def hand_over(
    request: web.Request, response: Handshake, protocol: asyncio.Protocol
) -> tuple[asyncio.Transport, bytes]:
    """Answer the handshake, then give the connection to `protocol`: (its transport,
    the bytes the client sent past the handshake, for `protocol` to read first).

    A request that is no WebSocket handshake raises aiohttp's 400 as `prepare` does.
    """
    handler = request.protocol
    transport = handler.transport
    if transport is None or transport.is_closing():
        raise ConnectionResetError("Connection lost")
    if not response.can_prepare(request):
        await response.prepare(request)  # raises the HTTPBadRequest that says why
    early, handler._message_tail = handler._message_tail, b""
    transport.set_protocol(protocol)
    try:
        await response.prepare(request)
    except BaseException:
        transport.abort()
        raise
    finally:
        handler.transport = None
        if handler._manager is not None:
            handler._manager.connection_lost(handler, None)
    return transport, early


class FrameSink(WebSocketDataQueue):
    """Where `WebSocketReader` puts what it parses: handed to callbacks at once."""

    __slots__ = ("_on_error", "_on_message")
    # The queue's own state, read by the pure-Python reader (the Cython one reads its C
    # fields, left zero): nothing is ever queued, so the reader never stalls.
    _size = 0
    _limit = 0
    _stalled_reader = None

    def __init__(
        self, on_message: Callable[[WSMessage], None], on_error: Callable[[BaseException], None]
    ) -> None:
        # WebSocketDataQueue.__init__ is not called: its buffer, waiter and flow control
        # (a deque of ~600 bytes per socket) serve a reader task, and there is none.
        self._on_message = on_message
        self._on_error = on_error

    def feed_data(self, data: WSMessage, size: int) -> None:  # type: ignore[override]
        self._on_message(data)

    def set_exception(self, exc: BaseException, exc_cause: Any = None) -> None:
        self._on_error(exc)

    def feed_eof(self) -> None:
        """The end of the stream comes to the protocol as `connection_lost`."""


def frame_parser(
    on_message: Callable[[WSMessage], None],
    on_error: Callable[[BaseException], None],
    max_frame_bytes: int,
) -> WebSocketReader:
    """aiohttp's frame reader: `feed_data(bytes)` calls `on_message` per message
    (text decoded to str; fragments joined) and `on_error` once on a bad or too large
    frame (a `WebSocketError` with its close code), after which it reads nothing.
    """
    # aiohttp refuses a message of exactly max_msg_size, hence one more
    return WebSocketReader(
        FrameSink(on_message, on_error), max_frame_bytes + 1, compress=False, decode_text=True
    )

"""The collab endpoint's WebSocketResponse: frame limits, and close codes clients can read.

aiohttp's reader holds at most `MAX_SYNC_MESSAGE_BYTES` of one frame (the
most memory a connection may hold while a frame arrives): a larger frame can
never be accepted, and is refused with 4413, which the stock y-websocket
client does not retry (it would resend the same answer forever). Smaller
limits by kind (`MAX_MESSAGE_BYTES` for anything but a document update) are
the handler's. aiohttp refuses a frame of exactly its `max_msg_size`, so it is
given one more.

On an oversized frame aiohttp sends the close frame and closes the TCP
connection at once, while the client is still sending the frame: the unread
bytes make the kernel reset the connection, and a client that sees the reset
before the close frame (the stock `ws` package, browsers: a write error ends
the socket) reports 1006. Here the connection is half-closed instead (FIN
after the close frame), the rest of the frame is read and dropped, and the
connection closes when the client closes its side, or after `LINGER_SECONDS`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import WebSocketError, WSCloseCode, web

from services.collab.close_codes import CloseCode

LINGER_SECONDS = 5.0
_LINGER_POLL = 0.02
FRAME_TOO_LARGE = "message too large"


class CollabWebSocket(web.WebSocketResponse):
    def __init__(self, *, max_frame_bytes: int, **kwargs: Any) -> None:
        super().__init__(max_msg_size=max_frame_bytes + 1, **kwargs)
        self._transport: asyncio.Transport | None = None
        self._lingering = False

    async def prepare(self, request: web.BaseRequest) -> Any:
        self._transport = request.transport
        return await super().prepare(request)

    async def close(
        self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True
    ) -> bool:
        if code == WSCloseCode.MESSAGE_TOO_BIG and self._reader_refused_a_frame():
            code, message = CloseCode.TOO_LARGE, FRAME_TOO_LARGE.encode()
            self._close_code = code
        return await super().close(code=code, message=message, drain=drain)

    def _reader_refused_a_frame(self) -> bool:
        # While aiohttp closes after the refusal, the error is still only the reader's.
        reader = self._reader
        exc = self.exception() or (reader.exception() if reader is not None else None)
        return isinstance(exc, WebSocketError) and exc.code == WSCloseCode.MESSAGE_TOO_BIG

    def _close_transport(self) -> None:
        """aiohttp's hook to drop the connection: after an oversized frame, half-close instead."""
        transport = self._transport
        if (
            self._reader_refused_a_frame()
            and transport is not None
            and transport.can_write_eof()
            and not transport.is_closing()
        ):
            self._close_code = CloseCode.TOO_LARGE  # aiohttp set 1006 just before
            self._lingering = True
            transport.write_eof()
            return
        super()._close_transport()

    async def linger(self) -> None:
        """After a refused frame: wait until the client closes (at most LINGER_SECONDS), then close."""
        transport = self._transport
        if not self._lingering or transport is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LINGER_SECONDS
        while not transport.is_closing() and loop.time() < deadline:
            await asyncio.sleep(_LINGER_POLL)
        transport.close()

"""The collab endpoint's WebSocketResponse: the documented frame limit, and a 1009 clients can read.

`MAX_MESSAGE_BYTES` is the largest frame accepted, a larger one closes with
1009. aiohttp refuses a frame of exactly its `max_msg_size`, so it is given
one more. On such a frame aiohttp sends the 1009 close frame and closes the
TCP connection at once, while the client is still sending the frame: the
unread bytes make the kernel reset the connection, and a client that sees the
reset before the close frame (the stock `ws` package, browsers: a write
error ends the socket) reports 1006. Here the connection is half-closed
instead (FIN after the close frame), the rest of the frame is read and
dropped, and the connection closes when the client closes its side, or after
`LINGER_SECONDS`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import WebSocketError, WSCloseCode, web

LINGER_SECONDS = 5.0
_LINGER_POLL = 0.02


class CollabWebSocket(web.WebSocketResponse):
    def __init__(self, *, max_message_bytes: int, **kwargs: Any) -> None:
        super().__init__(max_msg_size=max_message_bytes + 1, **kwargs)
        self._transport: asyncio.Transport | None = None
        self._lingering = False

    async def prepare(self, request: web.BaseRequest) -> Any:
        self._transport = request.transport
        return await super().prepare(request)

    def _close_transport(self) -> None:
        """aiohttp's hook to drop the connection: after an oversized frame, half-close instead."""
        exc = self.exception()
        transport = self._transport
        if (
            isinstance(exc, WebSocketError)
            and exc.code == WSCloseCode.MESSAGE_TOO_BIG
            and transport is not None
            and transport.can_write_eof()
            and not transport.is_closing()
        ):
            self._close_code = WSCloseCode.MESSAGE_TOO_BIG  # aiohttp set 1006 just before
            self._lingering = True
            transport.write_eof()
            return
        super()._close_transport()

    async def linger(self) -> None:
        """After a 1009: wait until the client closes (at most LINGER_SECONDS), then close."""
        transport = self._transport
        if not self._lingering or transport is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LINGER_SECONDS
        while not transport.is_closing() and loop.time() < deadline:
            await asyncio.sleep(_LINGER_POLL)
        transport.close()

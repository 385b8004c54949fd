"""A joined connection's incoming frames, handled as its socket reads them.

`Session` is the `FrameHandler` of a joined socket (`frame_socket.py`): each
frame is rate-limited, size-checked and handed to the room or the asset
coordinator in the socket's `data_received`; what the client sent wrong
closes it with the documented code. When the socket stops being open, the
connection leaves its room.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from aiohttp import WSMessage, WSMsgType

from services.collab.assets.codec import ControlRefused, is_control
from services.collab.close_codes import CloseCode
from services.collab.connection import Connection
from services.collab.room import Room
from shared.awareness import AwarenessLimitExceeded
from shared.documents import DocumentTooLarge
from shared.protocol import ProtocolError, carries_update

if TYPE_CHECKING:
    from services.collab.handler import CollabContext

log = logging.getLogger(__name__)


class Session:
    """One joined connection: what its frames do, and its leaving."""

    __slots__ = ("_address", "_ctx", "_room", "conn")

    def __init__(self, ctx: CollabContext, room: Room, conn: Connection, address: str) -> None:
        self._ctx = ctx
        self._room = room
        self.conn = conn
        self._address = address

    def on_frame(self, message: WSMessage) -> Awaitable[None] | None:
        """Handle one frame; an awaitable when it needs I/O (later frames wait for it)."""
        ctx, conn = self._ctx, self.conn
        conn.last_seen = now = time.monotonic()
        if not conn.allow_frame(now):
            ctx.metrics.errors.labels("rate_limited").inc()
            log.warning(
                "closing a flooding connection",
                extra={"connection": conn.id, "project": self._room.project_uuid},
            )
            return conn.close(CloseCode.POLICY_VIOLATION, "too many messages")
        try:
            step = self._handle(message)
        except Exception as exc:  # every failure closes the socket with its code  # noqa: BLE001
            return self._refuse_for(exc)
        if step is not None:
            return self._guarded(step)
        if conn.charge(time.monotonic() - now):
            return asyncio.sleep(0)  # a burst of buffered frames must not hold the loop
        return None

    def _handle(self, message: WSMessage) -> Awaitable[None] | None:
        ctx, conn, room = self._ctx, self.conn, self._room
        if message.type is WSMsgType.BINARY or message.type is WSMsgType.TEXT:
            data = message.data
            ctx.metrics.bytes_in.inc(len(data))
            if self._over_frame_limit(message):
                ctx.metrics.errors.labels("too_big").inc()
                log.info(
                    "closing on an oversized frame",
                    extra={"connection": conn.id, "bytes": len(data)},
                )
                return self._refuse_content(CloseCode.MESSAGE_TOO_BIG, "message too big")
            if is_control(data):  # eXeLearning's asset coordination: for the server only
                ctx.metrics.frames_in_by["control"].inc()
                return ctx.assets.receive(conn, room.project_uuid, data)
            if message.type is WSMsgType.BINARY:
                room.receive(conn, data)
            else:
                room.receive_text(conn, data)
        elif message.type is WSMsgType.PING:
            conn.pong(bytes(message.data))
        return None

    async def _guarded(self, step: Awaitable[None]) -> None:
        try:
            await step
        except Exception as exc:  # as in on_frame  # noqa: BLE001
            await self._refuse_for(exc)

    def _over_frame_limit(self, message: WSMessage) -> bool:
        """A frame other than a document update over MAX_MESSAGE_BYTES (those may be as
        large as a document, up to MAX_SYNC_MESSAGE_BYTES, which the frame reader enforces)."""
        data = message.data
        if len(data) <= self._ctx.settings.max_message_bytes:
            return False
        return message.type is WSMsgType.TEXT or not carries_update(data)

    def _refuse_for(self, exc: Exception) -> Awaitable[None]:
        """The close for what handling a frame raised (called in its `except`)."""
        conn = self.conn
        if isinstance(exc, DocumentTooLarge):
            self._warn(
                "document_too_large", "refusing an update: %s", exc, user=conn.identity.user_id
            )
            return conn.close(CloseCode.TOO_LARGE, "document too large")
        if isinstance(exc, AwarenessLimitExceeded):
            self._warn("awareness_limit", "closing connection over an awareness limit: %s", exc)
            if exc.too_big:
                return self._refuse_content(CloseCode.MESSAGE_TOO_BIG, "awareness too big")
            return self._refuse_content(CloseCode.POLICY_VIOLATION, "awareness over limit")
        if isinstance(exc, ControlRefused):
            self._warn("invalid_control", "closing connection on a control message: %s", exc.reason)
            return self._refuse_content(exc.code, exc.reason)
        if isinstance(exc, ProtocolError):
            self._warn("invalid_frame", "closing connection on bad frame: %s", exc)
            return self._refuse_content(CloseCode.INVALID_DATA, "invalid frame")
        self._ctx.metrics.errors.labels("internal").inc()
        log.exception("internal error handling a frame", extra={"connection": conn.id})
        return conn.close(CloseCode.INTERNAL_ERROR, "internal error")

    def _warn(self, kind: str, message: str, detail: object, **extra: object) -> None:
        """Count a refusal of kind `kind` and log it."""
        self._ctx.metrics.errors.labels(kind).inc()
        log.warning(
            message,
            detail,
            extra={"connection": self.conn.id, "project": self._room.project_uuid, **extra},
        )

    async def _refuse_content(self, code: CloseCode, reason: str) -> None:
        """Close for what the client sent; permanently (4429) once it keeps sending it
        (`services/collab/refusals.py`)."""
        ctx, conn, project = self._ctx, self.conn, self._room.project_uuid
        if ctx.refusals.repeated(conn.identity.user_id, project, code, time.monotonic()):
            ctx.metrics.errors.labels("refused_repeatedly").inc()
            log.warning(
                "refusing for good: the client keeps sending what is refused",
                extra={
                    "connection": conn.id,
                    "project": project,
                    "user": conn.identity.user_id,
                    "code": int(code),
                },
            )
            code, reason = CloseCode.REFUSED_REPEATEDLY, f"refused repeatedly: {reason}"
        await conn.close(code, reason)

    def on_refused(self, error: BaseException) -> None:
        """The frame reader refused a frame: too large (4413) or malformed."""
        too_big = self.conn.socket.close_code == CloseCode.TOO_LARGE
        self._ctx.metrics.errors.labels("too_big" if too_big else "transport").inc()
        log.info("websocket error: %s", error, extra={"connection": self.conn.id})

    def expire(self) -> None:
        """The token's `exp` passed: close with 4401."""
        log.info("token expired; closing", extra={"connection": self.conn.id})
        self.conn.close_soon(CloseCode.UNAUTHORIZED, "token expired")

    def on_closed(self) -> None:
        """Leave the room, and stop counting the connection."""
        ctx, conn, project = self._ctx, self.conn, self._room.project_uuid
        ctx.expiry.forget(conn.id)
        ctx.rooms.release(self._room, conn)
        ctx.connection_events.closed(project, conn, conn.socket.close_code)
        ctx.metrics.connections.dec()
        ctx.limits.release(conn.identity.user_id, self._address)
        ctx.tasks.spawn(ctx.assets.left(conn, project), name=f"left-{conn.id}")
        log.info(
            "disconnected",
            extra={"project": project, "connection": conn.id, "code": conn.socket.close_code},
        )

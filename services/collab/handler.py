"""The WebSocket endpoint `/yjs/project-{uuid}`: authenticate, authorise, serve.

Refusals happen after the upgrade, as close codes a browser can see: the
stock y-websocket client stops retrying only for 4400-4499, so permanent
refusals use that range (4400 bad room, 4401 bad token, 4403 no access).
The token is found and verified as on HTTP (`shared/auth.py`), and a socket
is closed with 4401 when its token's `exp` passes.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field

from aiohttp import WSMessage, WSMsgType, web

from services.collab.assets.codec import ControlRefused, is_control
from services.collab.assets.coordinator import AssetCoordinator
from services.collab.close_codes import CloseCode
from services.collab.connection import Connection, TickWriter
from services.collab.connection_events import ConnectionEvents
from services.collab.limits import ConnectionLimits
from services.collab.metrics import CollabMetrics
from services.collab.refusals import RefusalHistory
from services.collab.room import Room
from services.collab.rooms import RoomManager
from services.collab.throttle import HandshakeThrottle
from services.collab.websocket import CollabWebSocket
from shared.access import AccessPolicy, Role
from shared.auth import Identity, TokenError, request_token, verify_token
from shared.awareness import AwarenessLimitExceeded
from shared.config import Settings
from shared.documents import DocumentTooLarge
from shared.net import client_address
from shared.protocol import ProtocolError, carries_update
from shared.tasks import TaskOwner

log = logging.getLogger(__name__)

REFUSED_FRAME_BYTES = 1024  # what a refused socket may send before it reads the close frame
ROOM_NAME = re.compile(r"^project-([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$")


@dataclass(frozen=True)
class CollabContext:
    """Everything the endpoint needs, built once per app."""

    settings: Settings
    rooms: RoomManager
    access: AccessPolicy
    metrics: CollabMetrics
    instance_id: str
    limits: ConnectionLimits
    throttle: HandshakeThrottle
    tasks: TaskOwner
    assets: AssetCoordinator
    connection_events: ConnectionEvents
    tick_writer: TickWriter = field(default_factory=TickWriter)
    refusals: RefusalHistory = field(default_factory=RefusalHistory)


COLLAB: web.AppKey[CollabContext] = web.AppKey("collab", CollabContext)


def parse_room_name(name: str) -> str | None:
    """The project uuid of a room name `project-<uuid>` (lower-case), or None."""
    match = ROOM_NAME.match(name.lower())
    return match.group(1) if match else None


async def _refuse(
    ctx: CollabContext, ws: web.WebSocketResponse, code: int, reason: str
) -> web.WebSocketResponse:
    ctx.metrics.rejected.labels(str(code)).inc()
    await ws.close(code=code, message=reason.encode())
    return ws


@dataclass(frozen=True, slots=True)
class _Admitted:
    identity: Identity
    role: Role
    project_uuid: str
    address: str


@dataclass(frozen=True, slots=True)
class _Refused:
    code: CloseCode
    reason: str


async def _admit(ctx: CollabContext, request: web.Request) -> _Admitted | _Refused:
    """Who connects, to which room, and whether they may (before the upgrade: a refused
    socket is then given a frame limit too small for anything it may already be sending)."""
    address = client_address(request, ctx.settings.forwarded_allow_ips)
    if not await ctx.throttle.allow(address):
        ctx.metrics.throttled.inc()
        log.info("websocket refused: too many handshakes", extra={"remote": address})
        return _Refused(CloseCode.TRY_AGAIN_LATER, "too many handshakes")
    project_uuid = parse_room_name(request.match_info["room"])
    if project_uuid is None:
        return _Refused(CloseCode.BAD_ROOM, "bad room name")
    token = request_token(request.headers.get("Authorization"), request.query.get("token"))
    try:
        identity = verify_token(token or "", ctx.settings.jwt_secret)
    except TokenError as exc:
        log.info(
            "websocket refused: %s", exc, extra={"project": project_uuid, "remote": request.remote}
        )
        return _Refused(CloseCode.UNAUTHORIZED, "unauthorized")
    try:
        role = await ctx.access.role_for(identity, project_uuid)
    except Exception:
        log.exception("access check failed", extra={"project": project_uuid})
        return _Refused(CloseCode.TRY_AGAIN_LATER, "try again later")
    if role is None:
        return _Refused(CloseCode.FORBIDDEN, "forbidden")
    if ctx.refusals.blocked(identity.user_id, project_uuid, time.monotonic()):
        return _Refused(CloseCode.REFUSED_REPEATEDLY, "refused repeatedly")
    if not ctx.limits.admit(identity.user_id, address):
        log.info(
            "websocket refused: too many connections",
            extra={"user": identity.user_id, "remote": address},
        )
        return _Refused(CloseCode.TRY_AGAIN_LATER, "too many connections")
    return _Admitted(identity, role, project_uuid, address)


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    ctx = request.app[COLLAB]
    admission = await _admit(ctx, request)
    refused = isinstance(admission, _Refused)
    ws = CollabWebSocket(
        max_frame_bytes=REFUSED_FRAME_BYTES if refused else ctx.settings.max_sync_message_bytes,
        autoping=False,
        compress=False,
    )
    ws.headers["X-Instance-Id"] = ctx.instance_id
    try:
        await ws.prepare(request)
    except BaseException:
        if isinstance(admission, _Admitted):
            ctx.limits.release(admission.identity.user_id, admission.address)
        raise
    if isinstance(admission, _Refused):
        await _refuse(ctx, ws, admission.code, admission.reason)
    else:
        try:
            await _join_and_serve(
                ctx, request, ws, admission.identity, admission.role, admission.project_uuid
            )
        finally:
            ctx.limits.release(admission.identity.user_id, admission.address)
    await ws.linger()
    return ws


async def _join_and_serve(
    ctx: CollabContext,
    request: web.Request,
    ws: CollabWebSocket,
    identity: Identity,
    role: Role,
    project_uuid: str,
) -> None:
    """Join the project's room (loading it) and serve the socket until it closes."""
    try:
        room = await ctx.rooms.acquire(project_uuid)
    except ConnectionRefusedError:
        await _refuse(ctx, ws, CloseCode.GOING_AWAY, "server shutting down")
        return
    except Exception:
        log.exception("room unavailable", extra={"project": project_uuid})
        await _refuse(ctx, ws, CloseCode.TRY_AGAIN_LATER, "try again later")
        return

    if ctx.rooms.connection_count() >= ctx.settings.max_connections:
        await _refuse(ctx, ws, CloseCode.TRY_AGAIN_LATER, "server full")
        return
    conn = Connection(
        ws,
        request.transport,
        identity,
        role,
        ctx.tick_writer,
        tasks=ctx.tasks,
        frames_per_second=ctx.settings.max_frames_per_second,
    )
    room.join(conn)
    ctx.connection_events.opened(project_uuid, conn)
    expiry = _close_when_token_expires(conn)
    ctx.metrics.connections.inc()
    log.info(
        "connected",
        extra={
            "project": project_uuid,
            "user": identity.user_id,
            "role": role.value,
            "connection": conn.id,
        },
    )
    try:
        await _serve(ctx, room, conn)
    finally:
        expiry.cancel()
        ctx.rooms.release(room, conn)
        ctx.connection_events.closed(project_uuid, conn, ws.close_code)
        await ctx.assets.left(conn, project_uuid)
        ctx.metrics.connections.dec()
        log.info(
            "disconnected",
            extra={"project": project_uuid, "connection": conn.id, "code": ws.close_code},
        )


def _close_when_token_expires(conn: Connection) -> asyncio.TimerHandle:
    """Close the socket with 4401 at its token's `exp`, at once if it has none.

    `verify_token` requires `exp`, so only a hand-made identity lacks one.
    """
    expires_at = conn.identity.expires_at
    delay = 0.0 if expires_at is None else max(0.0, expires_at - time.time())

    def close() -> None:
        log.info("token expired; closing", extra={"connection": conn.id})
        conn.close_soon(CloseCode.UNAUTHORIZED, "token expired")

    loop = asyncio.get_running_loop()
    return loop.call_later(delay, close)


async def _refuse_content(
    ctx: CollabContext, room: Room, conn: Connection, code: CloseCode, reason: str
) -> None:
    """Close for what the client sent; permanently (4429) once it keeps sending it
    (`services/collab/refusals.py`)."""
    if ctx.refusals.repeated(conn.identity.user_id, room.project_uuid, code, time.monotonic()):
        ctx.metrics.errors.labels("refused_repeatedly").inc()
        log.warning(
            "refusing for good: the client keeps sending what is refused",
            extra={
                "connection": conn.id,
                "project": room.project_uuid,
                "user": conn.identity.user_id,
                "code": int(code),
            },
        )
        code, reason = CloseCode.REFUSED_REPEATEDLY, f"refused repeatedly: {reason}"
    await conn.close(code, reason)


def _over_frame_limit(ctx: CollabContext, message: WSMessage) -> bool:
    """A frame other than a document update over MAX_MESSAGE_BYTES (those may be as large
    as a document, up to MAX_SYNC_MESSAGE_BYTES, which aiohttp's reader enforces)."""
    data = message.data
    if len(data) <= ctx.settings.max_message_bytes:
        return False
    return message.type is WSMsgType.TEXT or not carries_update(data)


async def _serve(ctx: CollabContext, room: Room, conn: Connection) -> None:
    ws = conn.ws
    async for message in ws:
        conn.last_seen = now = time.monotonic()
        if not conn.allow_frame(now):
            ctx.metrics.errors.labels("rate_limited").inc()
            log.warning(
                "closing a flooding connection",
                extra={"connection": conn.id, "project": room.project_uuid},
            )
            await conn.close(CloseCode.POLICY_VIOLATION, "too many messages")
            return
        try:
            if message.type in (WSMsgType.BINARY, WSMsgType.TEXT):
                ctx.metrics.bytes_in.inc(len(message.data))
                if _over_frame_limit(ctx, message):
                    ctx.metrics.errors.labels("too_big").inc()
                    log.info(
                        "closing on an oversized frame",
                        extra={"connection": conn.id, "bytes": len(message.data)},
                    )
                    await _refuse_content(
                        ctx, room, conn, CloseCode.MESSAGE_TOO_BIG, "message too big"
                    )
                    return
                if is_control(
                    message.data
                ):  # eXeLearning's asset coordination: for the server only
                    ctx.metrics.frames_in_by["control"].inc()
                    await ctx.assets.receive(conn, room.project_uuid, message.data)
                elif message.type is WSMsgType.BINARY:
                    room.receive(conn, message.data)
                else:
                    room.receive_text(conn, message.data)
            elif message.type is WSMsgType.PING:
                await ws.pong(message.data)
            elif message.type is WSMsgType.ERROR:
                too_big = ws.close_code == CloseCode.TOO_LARGE
                ctx.metrics.errors.labels("too_big" if too_big else "transport").inc()
                log.info("websocket error: %s", ws.exception(), extra={"connection": conn.id})
                return
        except DocumentTooLarge as exc:
            ctx.metrics.errors.labels("document_too_large").inc()
            log.warning(
                "refusing an update: %s",
                exc,
                extra={
                    "connection": conn.id,
                    "project": room.project_uuid,
                    "user": conn.identity.user_id,
                },
            )
            await conn.close(CloseCode.TOO_LARGE, "document too large")
            return
        except AwarenessLimitExceeded as exc:
            await _refuse_awareness(ctx, room, conn, exc)
            return
        except ControlRefused as exc:
            ctx.metrics.errors.labels("invalid_control").inc()
            log.warning(
                "closing connection on a control message: %s",
                exc.reason,
                extra={"connection": conn.id, "project": room.project_uuid},
            )
            await _refuse_content(ctx, room, conn, exc.code, exc.reason)
            return
        except ProtocolError as exc:
            ctx.metrics.errors.labels("invalid_frame").inc()
            log.warning(
                "closing connection on bad frame: %s",
                exc,
                extra={"connection": conn.id, "project": room.project_uuid},
            )
            await _refuse_content(ctx, room, conn, CloseCode.INVALID_DATA, "invalid frame")
            return
        except Exception:
            ctx.metrics.errors.labels("internal").inc()
            log.exception("internal error handling a frame", extra={"connection": conn.id})
            await conn.close(CloseCode.INTERNAL_ERROR, "internal error")
            return
        if conn.charge(time.monotonic() - now):
            await asyncio.sleep(0)  # a burst of buffered frames must not hold the loop


async def _refuse_awareness(
    ctx: CollabContext, room: Room, conn: Connection, exc: AwarenessLimitExceeded
) -> None:
    """Close a connection over an awareness limit: 1009 for a state too big, else 1008."""
    ctx.metrics.errors.labels("awareness_limit").inc()
    log.warning(
        "closing connection over an awareness limit: %s",
        exc,
        extra={"connection": conn.id, "project": room.project_uuid},
    )
    code = CloseCode.MESSAGE_TOO_BIG if exc.too_big else CloseCode.POLICY_VIOLATION
    await _refuse_content(
        ctx, room, conn, code, "awareness too big" if exc.too_big else "awareness over limit"
    )

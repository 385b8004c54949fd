"""The WebSocket endpoint `/yjs/project-{uuid}`: authenticate, authorise, serve.

Refusals happen after the upgrade, as close codes a browser can see: the
stock y-websocket client stops retrying only for 4400-4499, so permanent
refusals use that range (4400 bad room, 4401 bad token, 4403 no access).
The token is found and verified as on HTTP (`shared/auth.py`), and a socket
is closed with 4401 when its token's `exp` passes.

aiohttp answers the handshake; then the connection is handed to a
`FrameSocket` (`websocket.py`, `frame_socket.py`) and the handler returns:
a joined connection's frames are handled by its `Session` as they are read.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field

from aiohttp import WSMessage, web

from services.collab.assets.coordinator import AssetCoordinator
from services.collab.close_codes import CloseCode
from services.collab.connection import Connection, TickWriter
from services.collab.connection_events import ConnectionEvents
from services.collab.expiry import ExpiryTimer
from services.collab.frame_socket import FrameSocket
from services.collab.limits import ConnectionLimits
from services.collab.metrics import CollabMetrics
from services.collab.refusals import RefusalHistory
from services.collab.rooms import RoomManager
from services.collab.session import Session
from services.collab.throttle import HandshakeThrottle
from services.collab.websocket import Handshake, hand_over
from shared.access import AccessPolicy, Role
from shared.auth import Identity, TokenError, request_token, verify_token
from shared.config import Settings
from shared.net import client_address
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
    expiry: ExpiryTimer = field(default_factory=ExpiryTimer)


COLLAB: web.AppKey[CollabContext] = web.AppKey("collab", CollabContext)


def parse_room_name(name: str) -> str | None:
    """The project uuid of a room name `project-<uuid>` (lower-case), or None."""
    match = ROOM_NAME.match(name.lower())
    return match.group(1) if match else None


class _Refusing:
    """The handler of a socket being refused: what it sends is dropped."""

    def on_frame(self, message: WSMessage) -> None:
        return None

    def on_refused(self, error: BaseException) -> None:
        pass

    def on_closed(self) -> None:
        pass


_REFUSING = _Refusing()


async def _refuse(ctx: CollabContext, socket: FrameSocket, code: int, reason: str) -> None:
    ctx.metrics.rejected.labels(str(code)).inc()
    socket.start(_REFUSING)
    await socket.close(code, reason.encode())


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
    socket = FrameSocket(
        REFUSED_FRAME_BYTES if refused else ctx.settings.max_sync_message_bytes, ctx.tasks
    )
    response = Handshake()
    response.headers["X-Instance-Id"] = ctx.instance_id
    try:
        socket.attach(*await hand_over(request, response, socket))
    except BaseException:
        if isinstance(admission, _Admitted):
            ctx.limits.release(admission.identity.user_id, admission.address)
        raise
    if isinstance(admission, _Refused):
        await _refuse(ctx, socket, admission.code, admission.reason)
    elif not await _join(ctx, socket, admission):
        ctx.limits.release(admission.identity.user_id, admission.address)
    return response


async def _join(ctx: CollabContext, socket: FrameSocket, admitted: _Admitted) -> bool:
    """Join the project's room (loading it) and start serving the socket; False when
    refused (the caller then stops counting it)."""
    try:
        room = await ctx.rooms.acquire(admitted.project_uuid)
    except ConnectionRefusedError:
        await _refuse(ctx, socket, CloseCode.GOING_AWAY, "server shutting down")
        return False
    except Exception:
        log.exception("room unavailable", extra={"project": admitted.project_uuid})
        await _refuse(ctx, socket, CloseCode.TRY_AGAIN_LATER, "try again later")
        return False

    if ctx.rooms.connection_count() >= ctx.settings.max_connections:
        await _refuse(ctx, socket, CloseCode.TRY_AGAIN_LATER, "server full")
        return False
    identity = admitted.identity
    conn = Connection(
        socket,
        identity,
        admitted.role,
        ctx.tick_writer,
        tasks=ctx.tasks,
        frames_per_second=ctx.settings.max_frames_per_second,
    )
    session = Session(ctx, room, conn, admitted.address)
    room.join(conn)
    ctx.connection_events.opened(admitted.project_uuid, conn)
    # `verify_token` requires `exp`, so only a hand-made identity lacks one: closed at once
    ctx.expiry.watch(conn.id, identity.expires_at or 0.0, session.expire)
    ctx.metrics.connections.inc()
    log.info(
        "connected",
        extra={
            "project": admitted.project_uuid,
            "user": identity.user_id,
            "role": admitted.role.value,
            "connection": conn.id,
        },
    )
    socket.start(session)
    return True

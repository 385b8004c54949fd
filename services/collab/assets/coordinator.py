"""The asset coordinator: answers eXeLearning's control messages (docs/architecture.md,
"Asset coordination"; the messages are listed in the README).

An image one author inserts lives only in that author's browser until it is
uploaded. The coordinator knows who holds which asset (`awareness-update`),
asks a holder to upload what another socket needs (`upload-request`), tells
the waiting sockets once the file is stored (`asset-ready`), and otherwise
says `asset-not-found` and keeps the request until a holder appears. Its state
lives in a `CoordinatorStore` (memory or Redis) so that a holder on another
instance is found; the upload requests this instance sent are followed up
(`Asks`): a holder that leaves, dies with its instance or does not deliver is
replaced by another holder, or the waiters hear `asset-not-found`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.collab.assets import codec
from services.collab.assets.codec import BadControl, ControlMessage
from services.collab.assets.decisions import (
    Asks,
    CoordinatorLimits,
    member_key,
    pick_bulk_holder,
    pick_holder,
)
from services.collab.assets.store import CoordinatorStore
from services.collab.connection import Connection
from shared.asset_catalog import StoredAsset, find_asset, never_saved, stored_client_ids
from shared.upload_sessions import mint_upload_session

log = logging.getLogger(__name__)

STEP_TIMEOUT = 5.0  # one message's handling, Redis and database included
ASK_TIMEOUT = 60.0  # a live holder that has not delivered by then is asked again (or replaced)
MAX_BATCH_FILES = 50  # what upload-session-ready advertises for the batch route
MAX_BATCH_BYTES = 100 * 1024 * 1024


class AssetCoordinator:
    def __init__(
        self,
        store: CoordinatorStore,
        sessionmaker: async_sessionmaker[AsyncSession],
        jwt_secret: str,
        limits: CoordinatorLimits,
        *,
        sweep_interval: float = 1.0,
    ) -> None:
        self._store = store
        self._sessionmaker = sessionmaker
        self._secret = jwt_secret
        self.limits = limits
        self._sweep_interval = sweep_interval
        self._sockets: dict[int, Connection] = {}
        self._asks = Asks(limits.asks_per_instance, ASK_TIMEOUT)
        self._handlers: dict[str, Callable[[Connection, str, dict[str, Any]], Awaitable[None]]] = {
            "awareness-update": self._on_awareness,
            "request-asset": self._on_request,
            "asset-uploaded": self._on_uploaded,
            "bulk-upload-progress": self._on_bulk_progress,
            "priority-update": self._on_priority,
            "navigation-hint": self._on_navigation,
            "upload-session-create": self._on_upload_session,
        }

    async def start(self) -> None:
        await self._store.start(self._deliver)

    async def stop(self) -> None:
        await self._store.stop()

    def member(self, conn: Connection) -> str:
        return member_key(self._store.instance, conn.id)

    # lifecycle of a socket -------------------------------------------------

    async def _enter(self, conn: Connection, project: str) -> None:
        """A socket's first control frame makes it a member of the project's coordination
        (a stock Yjs client never sends one, so it is never sent a control frame); from
        the second member on, collaboration starts."""
        self._sockets[conn.id] = conn
        members = await self._store.join(project, self.member(conn))
        if len(members) >= 2:
            await self._collaboration(project, members)

    async def left(self, conn: Connection, project: str) -> None:
        """The socket ended: it no longer holds, waits or counts as a member."""
        if self._sockets.pop(conn.id, None) is None:
            return
        try:
            async with asyncio.timeout(STEP_TIMEOUT):
                await self._store.leave(project, self.member(conn))
        except Exception:  # its entries are removed when their instance is found gone, or expire
            log.exception(
                "asset coordinator: leave not recorded",
                extra={"project": project, "connection": conn.id},
            )

    async def _collaboration(self, project: str, members: list[str]) -> None:
        """eXeLearning's start of collaboration: everyone re-broadcasts its presence, the
        holder of the most assets uploads those not stored, and a project never saved
        is saved by its oldest socket."""
        for member in members:
            self._send(
                member, "trigger-resync", {"reason": "new-client-joined", "projectUuid": project}
            )
        if await never_saved(self._sessionmaker, project):
            self._send(
                members[0],
                "request-sync-state",
                {"reason": "collaboration-started", "projectUuid": project},
            )
        holder = pick_bulk_holder(await self._store.holder_counts(project))
        if holder is None:
            return
        held = await self._store.held_by(project, holder)
        stored = await stored_client_ids(self._sessionmaker, project, held)
        missing = [asset for asset in held if asset not in stored]
        if missing:
            self._send(
                holder,
                "bulk-upload-request",
                {
                    "assetIds": missing,
                    "uploadUrl": f"/projects/{project}/assets",
                    "reason": "collaboration-sync",
                },
            )

    # messages ----------------------------------------------------------------

    async def receive(self, conn: Connection, project: str, frame: bytes | str) -> None:
        """Handle one control frame; ControlRefused when the socket must be closed for it.
        Any other failure is answered with an `error` message and the socket goes on."""
        message = None
        try:
            message = codec.decode_control(frame, self.limits.message_bytes)
            async with asyncio.timeout(STEP_TIMEOUT):
                if conn.id not in self._sockets:
                    await self._enter(conn, project)
                handler = self._handlers.get(message.type)
                if handler is None:
                    raise BadControl("unknown message type")
                await handler(conn, project, message.data)
        except BadControl as exc:
            self._answer_error(conn, message, str(exc))
        except codec.ControlRefused:
            raise
        except Exception:  # Redis or the database away: answered, the socket goes on
            log.exception(
                "asset coordinator could not handle a message",
                extra={"project": project, "connection": conn.id},
            )
            self._answer_error(conn, message, "coordinator unavailable, try again")

    def _answer_error(self, conn: Connection, message: ControlMessage | None, error: str) -> None:
        # straight to the socket: it may not have joined the coordination yet
        conn.send(
            codec.encode(
                "error", {"error": error, "messageType": message.type if message else None}
            )
        )

    async def _on_awareness(self, conn: Connection, project: str, data: dict[str, Any]) -> None:
        ids = codec.asset_ids(data.get("availableAssets"), self.limits.ids_per_message)
        if not conn.role.can_edit:
            return  # a viewer cannot upload, so it is never asked to
        me = self.member(conn)
        announced = await self._store.announce(project, me, ids)
        if announced.dropped:
            log.warning(
                "asset ids over the project's bound ignored",
                extra={"project": project, "dropped": announced.dropped},
            )
        for asset in announced.waited:
            self._ask(project, asset, me, "")

    async def _on_request(self, conn: Connection, project: str, data: dict[str, Any]) -> None:
        asset = codec.asset_id(data.get("assetId"))
        await self._serve_or_wait(conn, project, asset, notify_missing=True)

    async def _on_priority(self, conn: Connection, project: str, data: dict[str, Any]) -> None:
        asset = codec.asset_id(data.get("assetId"))
        if await self._ready(conn, project, asset):
            return
        self._send(
            self.member(conn),
            "priority-ack",
            {"assetId": asset, "queuePosition": 0, "estimatedWait": 0},
        )
        await self._wait(conn, project, asset, notify_missing=False)

    async def _on_navigation(self, conn: Connection, project: str, data: dict[str, Any]) -> None:
        ids = codec.asset_ids(data.get("assetIds"), self.limits.ids_per_message)
        stored = await stored_client_ids(self._sessionmaker, project, ids)
        for asset in ids:
            if asset not in stored:
                await self._wait(conn, project, asset, notify_missing=False)

    async def _serve_or_wait(
        self, conn: Connection, project: str, asset: str, *, notify_missing: bool
    ) -> None:
        if not await self._ready(conn, project, asset):
            await self._wait(conn, project, asset, notify_missing=notify_missing)

    async def _ready(self, conn: Connection, project: str, asset: str) -> bool:
        """Send asset-ready when the file is stored."""
        stored = await find_asset(self._sessionmaker, project, asset)
        if stored is not None:
            self._send(self.member(conn), "asset-ready", _ready_data(project, stored))
        return stored is not None

    async def _wait(
        self, conn: Connection, project: str, asset: str, *, notify_missing: bool
    ) -> None:
        """Queue the socket for `asset` and ask a holder, unless one was already asked."""
        me = self.member(conn)
        if not await self._store.wait(project, asset, me):
            self._send(
                me, "asset-not-found", {"assetId": asset, "error": "too many pending requests"}
            )
            return
        asked = self._asks.get(project, asset)
        if asked is not None:
            return  # its upload serves every waiter
        holder = pick_holder(await self._store.holders(project, asset), exclude={me})
        if holder is not None:
            self._ask(project, asset, holder, me)
        elif notify_missing:
            self._not_found(project, asset, [me])

    def _ask(self, project: str, asset: str, holder: str, requested_by: str) -> None:
        self._asks.record(project, asset, holder, time.monotonic())
        self._send(
            holder,
            "upload-request",
            {
                "assetId": asset,
                "requestId": f"{asset}:{holder}",
                "requestedBy": requested_by,
                "urgency": "high",
                "uploadUrl": f"/projects/{project}/assets?clientId={asset}",
            },
        )

    def _not_found(self, project: str, asset: str, waiters: list[str]) -> None:
        data = {
            "assetId": asset,
            "error": "no connected author holds this asset yet; it comes when one does",
        }
        for waiter in waiters:
            self._send(waiter, "asset-not-found", data)

    async def _on_uploaded(self, conn: Connection, project: str, data: dict[str, Any]) -> None:
        asset = codec.asset_id(data.get("assetId"))
        me = self.member(conn)
        stored = (
            await find_asset(self._sessionmaker, project, asset)
            if data.get("success") is True
            else None
        )
        if stored is not None:
            await self._stored(project, asset, stored, uploaded_by=me)
            return
        # the holder could not upload: another one, or the waiters hear it is not found
        ask = self._asks.get(project, asset)
        tried = {me} | (ask.tried if ask else set())
        await self._reask(project, asset, tried)

    async def _stored(
        self, project: str, asset: str, stored: StoredAsset, *, uploaded_by: str
    ) -> None:
        self._asks.resolve(project, asset)
        ready = _ready_data(project, stored)
        for waiter in await self._store.take_waiters(project, asset):
            self._send(waiter, "asset-ready", ready)
        available = {"assetId": asset, "size": stored.size}
        for member in await self._store.members(project):
            if member != uploaded_by:
                self._send(member, "asset-available", available)

    async def _reask(self, project: str, asset: str, tried: set[str]) -> None:
        """Serve the waiters of `asset` again: a holder not yet tried, else asset-not-found
        (they keep waiting for a holder to appear)."""
        waiters = await self._store.waiters(project, asset)
        if not waiters:
            self._asks.resolve(project, asset)
            return
        holder = pick_holder(
            await self._store.holders(project, asset), exclude=tried | set(waiters)
        )
        if holder is not None:
            self._ask(project, asset, holder, waiters[0])
            ask = self._asks.get(project, asset)
            if ask is not None:
                ask.tried |= tried
            return
        self._asks.resolve(project, asset)
        self._not_found(project, asset, waiters)

    async def _on_bulk_progress(self, conn: Connection, project: str, data: dict[str, Any]) -> None:
        if data.get("status") != "completed":
            return
        me = self.member(conn)
        done = {
            "uploadedBy": me,
            "totalAvailable": _count(data.get("completed")),
            "failedCount": _count(data.get("failed")),
        }
        for member in await self._store.members(project):
            if member != me:
                self._send(member, "bulk-upload-complete", done)

    async def _on_upload_session(
        self, conn: Connection, project: str, data: dict[str, Any]
    ) -> None:
        manifest = data.get("manifest", [])
        if not isinstance(manifest, list):
            raise BadControl("manifest must be a list")
        if len(manifest) > self.limits.manifest_entries:
            raise codec.ControlRefused(codec.CloseCode.POLICY_VIOLATION, "upload manifest too long")
        if not conn.role.can_edit:
            self._send(
                self.member(conn), "upload-session-ready", _session_error("viewers cannot upload")
            )
            return
        if data.get("projectId", project) != project:
            self._send(
                self.member(conn),
                "upload-session-ready",
                _session_error("projectId is not this room's project"),
            )
            return
        token, expires_at = mint_upload_session(self._secret, project, conn.identity.user_id)
        self._send(
            self.member(conn),
            "upload-session-ready",
            {
                "sessionToken": token,
                "expiresAt": expires_at * 1000,  # the client reads it as a JavaScript time (ms)
                "config": {
                    "maxBatchSize": MAX_BATCH_FILES,
                    "maxBatchBytes": MAX_BATCH_BYTES,
                    "endpoints": {
                        "batch": f"/api/upload-session/{token}/batch",
                        "cancel": f"/api/upload-session/{token}",
                    },
                },
            },
        )

    # delivery and follow-up ----------------------------------------------------

    def _send(self, member: str, message_type: str, data: dict[str, Any]) -> None:
        self._store.send(member, codec.encode(message_type, data))

    def _deliver(self, connection_id: int, frame: bytes | str) -> None:
        conn = self._sockets.get(connection_id)
        if conn is not None:
            conn.send(frame)

    async def run_sweeps(self) -> None:
        """Follow up the upload requests this instance sent (a loop for the TaskOwner)."""
        while True:
            await asyncio.sleep(self._sweep_interval)
            try:
                async with asyncio.timeout(STEP_TIMEOUT * 2):
                    await self.sweep()
            except Exception:  # Redis away: the next sweep tries again
                log.exception("asset coordinator sweep failed")

    async def sweep(self) -> None:
        """Ask again where the asked holder is gone (left, or its instance died) or overdue."""
        pending = self._asks.pending()
        held = await self._store.holding(
            [(project, ask.holder, asset) for project, asset, ask in pending]
        )
        now = time.monotonic()
        for (project, asset, ask), holding in zip(pending, held):
            if holding and not self._asks.overdue(ask, now):
                continue
            log.info(
                "asked holder gone or silent; serving the waiters again",
                extra={"project": project, "asset": asset, "holder": ask.holder},
            )
            await self._reask(project, asset, ask.tried if holding else ask.tried | {ask.holder})


def _ready_data(project: str, stored: StoredAsset) -> dict[str, Any]:
    return {
        "assetId": stored.client_id,
        "url": f"/projects/{project}/assets/by-client-id/{stored.client_id}",
        "size": stored.size,
        "mimeType": stored.mime_type,
        "filename": stored.filename,
    }


def _session_error(error: str) -> dict[str, Any]:
    return {
        "sessionToken": "",
        "expiresAt": 0,
        "config": {"maxBatchSize": 0, "maxBatchBytes": 0, "endpoints": {"batch": "", "cancel": ""}},
        "error": error,
    }


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0

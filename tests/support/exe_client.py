"""A Node client playing eXeLearning's editor (tests/node/exe_client.mjs) from asyncio tests.

    async with ExeNodeClient.start(stack.ws_url, room, token, api_url=stack.url + "/api") as a:
        await a.hold(asset, b"...", "photo.png", "image/png")
        ready = await b.wait_control("asset-ready")

Besides :class:`NodeYClient`'s events it reports ``control`` (type, data, binary: every
control frame received; none reaches y-websocket), ``uploaded`` (asset, status, body: an
``upload-request`` answered), ``upload_deferred``, ``downloaded`` (asset, status, size,
sha256, headers: an ``asset-ready`` fetched), ``assets_listed`` (status, client_ids: the
project's asset list, read on every connect) and ``saved`` (a ``request-sync-state``
answered).
"""

from __future__ import annotations

import base64
from typing import Any

from tests.support.node_client import DEFAULT_TIMEOUT, Event, NodeYClient

#: The control messages eXeLearning's client sends (the server interprets them, never relays).
CLIENT_MESSAGES = frozenset(
    {
        "awareness-update",
        "request-asset",
        "asset-uploaded",
        "bulk-upload-progress",
        "priority-update",
        "navigation-hint",
        "upload-session-create",
    }
)


class ExeNodeClient(NodeYClient):
    """A stock y-websocket provider plus eXeLearning's asset handler and save calls."""

    def controls(self, message_type: str | None = None) -> list[Event]:
        """The control frames received so far (of one type, or all)."""
        return [
            e for e in self.events if e["event"] == "control" and message_type in (None, e["type"])
        ]

    async def wait_control(
        self, message_type: str, timeout: float = DEFAULT_TIMEOUT, *, since: int = 0, **data: Any
    ) -> dict[str, Any]:
        """The data of the first control message of that type whose fields include `data`."""
        event = await self.wait_for(
            lambda e: (
                e["event"] == "control"
                and e["type"] == message_type
                and all(e["data"].get(k) == v for k, v in data.items())
            ),
            timeout,
            since=since,
        )
        return dict(event["data"])

    async def hold(
        self, asset: str, content: bytes, filename: str, mime: str, *, defer: int = 0
    ) -> None:
        """Hold a file (an image the author inserted) and announce it; `defer`: leave the
        first that many upload requests unanswered, like a slow upload."""
        await self._request(
            "hold",
            asset=asset,
            base64=base64.b64encode(content).decode(),
            filename=filename,
            mime=mime,
            defer=defer,
        )

    async def request_asset(self, asset: str) -> None:
        """`request-asset` (priority high, reason render), as on rendering a missing image."""
        await self._request("request_asset", asset=asset)

    async def send_control(self, message_type: str, data: dict[str, Any]) -> None:
        """Any control frame, as the client sends it (0xFF + JSON)."""
        await self._request("control", type=message_type, data=data)

    async def save(
        self,
        *,
        mark_saved: bool = False,
        cookie: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """POST the whole document to yjs-document: (status, JSON body). With `cookie`, as
        `navigator.sendBeacon` sends it (that cookie and `headers`, no Bearer token)."""
        fields: dict[str, Any] = {"mark_saved": mark_saved, "headers": headers or {}}
        if cookie is not None:
            fields["cookie"] = cookie
        reply = await self._request("save", **fields)
        return int(reply["status"]), reply["body"]

    async def load(self) -> tuple[int, str | None]:
        """GET yjs-document into a fresh document: (status, its text)."""
        reply = await self._request("load")
        return int(reply["status"]), reply["text"]

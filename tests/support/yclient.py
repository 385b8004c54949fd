"""A y-websocket client built on pycrdt, for tests and benchmarks.

Speaks the same protocol as the stock `WebsocketProvider`: answers SyncStep1,
applies SyncStep2/updates, sends its own edits as updates, tracks awareness.
Waiting is event-driven: `wait_until(predicate)` wakes on every frame.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, Self

import aiohttp
from pycrdt import Doc, Text

from shared.awareness import AwarenessEntry, decode_awareness_update, encode_awareness_update
from shared.protocol import (
    FrameKind,
    encode_awareness,
    encode_sync_step1,
    encode_sync_step2,
    encode_sync_update,
    parse_frame,
)


class YClient:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse, session: aiohttp.ClientSession | None) -> None:
        self.ws = ws
        self._own_session = session
        self.doc: Doc = Doc()
        self.text: Text = self.doc.get("t", type=Text)
        self.synced = asyncio.Event()
        self.peers: dict[int, Any] = {}
        self.opaque: list[bytes | str] = []
        self.frames: list[FrameKind] = []
        self.close_code: int | None = None
        self._clock = 0
        self._awareness_state: Any = None
        self._remote = False
        self._changed = asyncio.Event()
        self.doc.observe(self._on_local_change)
        self._reader = asyncio.create_task(self._read())

    async def reconnect(self, base_url: str, room: str, token: str, *, timeout: float = 10.0) -> None:
        """Open a new socket (e.g. to another instance) keeping the document, like
        the stock provider does: the sync exchange sends what the server misses."""
        if not self.ws.closed:
            await self.ws.close()
        await asyncio.gather(self._reader, return_exceptions=True)
        assert self._own_session is not None
        self.ws = await self._own_session.ws_connect(
            f"{base_url}/{room}", params={"token": token}, max_msg_size=0
        )
        self.close_code = None
        self.synced.clear()
        self._reader = asyncio.create_task(self._read())
        await self.ws.send_bytes(encode_sync_step1(self.doc.get_state()))
        if self._awareness_state is not None:
            self.set_awareness(self._awareness_state)
        await self.wait_until(lambda: self.synced.is_set(), timeout)

    @classmethod
    async def connect(
        cls,
        base_url: str,
        room: str,
        token: str | None,
        *,
        headers: dict[str, str] | None = None,
        wait_synced: bool = True,
        timeout: float = 10.0,
    ) -> YClient:
        """Open `base_url/room?token=...` (base like ws://127.0.0.1:8080/yjs)."""
        session = aiohttp.ClientSession()
        params = {"token": token} if token is not None else {}
        ws = await session.ws_connect(
            f"{base_url}/{room}", params=params, headers=headers, max_msg_size=0, autoping=True
        )
        client = cls(ws, session)
        await client.ws.send_bytes(encode_sync_step1(client.doc.get_state()))
        if wait_synced:
            await client.wait_until(lambda: client.synced.is_set() or client.close_code is not None, timeout)
        return client

    # edits -------------------------------------------------------------

    def _on_local_change(self, event: Any) -> None:
        if self._remote or self.ws.closed:
            return
        asyncio.get_running_loop().create_task(self.ws.send_bytes(encode_sync_update(event.update)))

    @property
    def instance(self) -> str:
        """The X-Instance-Id the handshake was answered with (the collab instance it is on)."""
        return self.ws._response.headers["X-Instance-Id"]  # aiohttp keeps the handshake response here

    def insert(self, index: int, value: str) -> None:
        self.text.insert(index, value)

    def append(self, value: str) -> None:
        self.text += value

    @property
    def value(self) -> str:
        return str(self.text)

    def set_awareness(self, state: Any) -> None:
        self._awareness_state = state
        self._clock += 1
        entry = AwarenessEntry(self.doc.client_id, self._clock, json.dumps(state).encode())
        asyncio.get_running_loop().create_task(
            self.ws.send_bytes(encode_awareness(encode_awareness_update([entry])))
        )

    async def send_raw(self, data: bytes | str) -> None:
        if isinstance(data, bytes):
            await self.ws.send_bytes(data)
        else:
            await self.ws.send_str(data)

    # waiting -----------------------------------------------------------

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Return once `predicate()` holds; raise TimeoutError after `timeout` seconds."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    @staticmethod
    async def wait_all(clients: list[YClient], predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Return once `predicate()` holds, re-checking whenever *any* of `clients`
        receives a frame (a predicate about several clients may turn true on the
        frame of one that is not the caller)."""
        async with asyncio.timeout(timeout):
            while not predicate():
                for client in clients:
                    client._changed.clear()
                waiters = [asyncio.ensure_future(client._changed.wait()) for client in clients]
                try:
                    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiter in waiters:
                        waiter.cancel()

    async def wait_text(self, expected: str, timeout: float = 10.0) -> None:
        try:
            await self.wait_until(lambda: self.value == expected, timeout)
        except TimeoutError:
            raise AssertionError(f"text is {self.value!r}, expected {expected!r}") from None

    async def wait_closed(self, timeout: float = 10.0) -> int | None:
        await self.wait_until(lambda: self.close_code is not None, timeout)
        return self.close_code

    # reading -----------------------------------------------------------

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                if message.type is aiohttp.WSMsgType.BINARY:
                    self._handle(message.data)
                elif message.type is aiohttp.WSMsgType.TEXT:
                    self.opaque.append(message.data)
                self._changed.set()
        finally:
            self.close_code = self.ws.close_code if self.ws.close_code is not None else -1
            self._changed.set()

    def _handle(self, data: bytes) -> None:
        frame = parse_frame(data)
        self.frames.append(frame.kind)
        if frame.kind is FrameKind.SYNC_STEP1:
            reply = encode_sync_step2(self.doc.get_update(frame.payload))
            asyncio.get_running_loop().create_task(self.ws.send_bytes(reply))
        elif frame.kind in (FrameKind.SYNC_STEP2, FrameKind.SYNC_UPDATE):
            self._remote = True
            try:
                self.doc.apply_update(frame.payload)
            finally:
                self._remote = False
            if frame.kind is FrameKind.SYNC_STEP2:
                self.synced.set()
        elif frame.kind is FrameKind.AWARENESS:
            for entry in decode_awareness_update(frame.payload):
                if entry.client_id == self.doc.client_id:
                    continue
                if entry.removed:
                    self.peers.pop(entry.client_id, None)
                else:
                    self.peers[entry.client_id] = json.loads(entry.state)
        elif frame.kind is FrameKind.OPAQUE:
            self.opaque.append(data)

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.gather(self._reader, return_exceptions=True)
        if self._own_session is not None:
            await self._own_session.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

"""FrameSocket over a recording transport: frame order behind awaited ones, the close
handshake both ways, and the half-close after an oversized frame."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable
from typing import Any, cast

import pytest
from aiohttp import WSMessage

from services.collab import frame_socket
from services.collab.frame_socket import FrameSocket
from services.collab.frames import close_frame
from shared.tasks import TaskOwner

pytestmark = pytest.mark.unit


def _masked(opcode: int, payload: bytes) -> bytes:
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


def _close(code: int) -> bytes:
    return _masked(0x8, struct.pack("!H", code))


class Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.reading = True
        self.closing = False
        self.eof_written = False
        self.protocol: FrameSocket | None = None

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0

    def is_reading(self) -> bool:
        return self.reading and not self.closing

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            assert self.protocol is not None
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    abort = close


class Recorder:
    """Records frames; a frame b"slow" is handled by awaiting `release`."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.release = asyncio.Event()
        self.closed = 0
        self.refused: list[BaseException] = []

    def on_frame(self, message: WSMessage) -> Awaitable[None] | None:
        self.frames.append(message.data)
        return self._released() if message.data == b"slow" else None

    async def _released(self) -> None:
        await self.release.wait()

    def on_refused(self, error: BaseException) -> None:
        self.refused.append(error)

    def on_closed(self) -> None:
        self.closed += 1


def _socket(early: bytes = b"") -> tuple[FrameSocket, Transport, Recorder]:
    sock, transport, handler = FrameSocket(16, TaskOwner("test")), Transport(), Recorder()
    transport.protocol = sock
    sock.attach(cast(Any, transport), early)
    return sock, transport, handler


async def test_frames_behind_an_awaited_one_wait_for_it_in_order() -> None:
    sock, transport, handler = _socket(early=_masked(0x2, b"early"))
    sock.data_received(_masked(0x2, b"before start"))
    sock.start(handler)
    assert handler.frames == [b"early", b"before start"]
    sock.data_received(_masked(0x2, b"slow") + _masked(0x2, b"after"))
    assert handler.frames[-1] == b"slow" and not transport.reading
    sock.data_received(_masked(0x2, b"later"))
    await asyncio.sleep(0)
    assert handler.frames[-1] == b"slow"
    handler.release.set()
    for _ in range(3):
        await asyncio.sleep(0)
    assert handler.frames[-3:] == [b"slow", b"after", b"later"] and transport.reading


async def test_a_clients_close_is_answered_with_1000() -> None:
    sock, transport, handler = _socket()
    sock.start(handler)
    sock.data_received(_close(4000))
    assert transport.writes == [close_frame(1000)] and transport.closing
    assert sock.close_code == 4000 and sock.closed and handler.closed == 1
    sock.write(b"nothing after the close")
    assert len(transport.writes) == 1


async def test_close_waits_for_the_answer_even_behind_an_awaited_frame() -> None:
    sock, transport, handler = _socket()
    sock.start(handler)
    sock.data_received(_masked(0x2, b"slow") + _close(1000))  # the answer is already queued
    await asyncio.wait_for(sock.close(4401, b"token expired"), 1)
    assert transport.writes == [close_frame(4401, b"token expired")]
    assert sock.close_code == 1000 and handler.closed == 1


async def test_close_gives_up_after_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(frame_socket, "CLOSE_TIMEOUT", 0.05)
    sock, transport, handler = _socket()
    sock.start(handler)
    await asyncio.wait_for(sock.close(1001), 1)
    assert transport.closing and sock.close_code == 1006


async def test_an_oversized_frame_is_refused_with_4413_and_a_half_close() -> None:
    sock, transport, handler = _socket()
    sock.start(handler)
    sock.data_received(bytes([0x82, 0x80 | 126]) + struct.pack("!H", 1000) + b"\0\0\0\0" + b"x" * 100)
    assert transport.writes == [close_frame(4413, b"message too large")]
    assert transport.eof_written and not transport.closing  # the rest is read and dropped
    assert len(handler.refused) == 1 and handler.closed == 1
    sock.data_received(b"x" * 900)
    assert sock.eof_received() is False  # the client closed its side: the transport closes


async def test_a_ping_reaches_the_handler_and_a_malformed_frame_closes_with_its_code() -> None:
    sock, transport, handler = _socket()
    sock.start(handler)
    sock.data_received(_masked(0x9, b"hi"))
    assert handler.frames == [bytearray(b"hi")]
    sock.data_received(bytes([0x82 | 0x70, 0x80]) + b"\0\0\0\0")  # reserved bits set
    assert transport.writes == [close_frame(1002)] and transport.closing
    assert [type(e).__name__ for e in handler.refused] == ["WebSocketError"]
    assert handler.frames[-1:] == [bytearray(b"hi")]

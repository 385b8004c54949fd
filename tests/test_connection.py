"""Connection's send path: frames of one event-loop tick leave in one write per socket."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from services.collab.connection import HIGH_WATER, Connection, TickWriter
from services.collab.frame_socket import FrameSocket
from services.collab.frames import encode_frame
from shared.access import Role
from shared.auth import Identity
from shared.tasks import TaskOwner

pytestmark = pytest.mark.unit


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.buffered = 0

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return self.buffered


def _connection(tick_writer: TickWriter) -> tuple[Connection, RecordingTransport, FrameSocket]:
    transport, tasks = RecordingTransport(), TaskOwner("test")
    socket = FrameSocket(1024, tasks)
    socket.attach(cast(Any, transport), b"")
    conn = Connection(socket, Identity(user_id="u1"), Role.EDITOR, tick_writer, tasks=tasks)
    return conn, transport, socket


async def test_frames_sent_in_one_tick_are_written_together_in_order() -> None:
    tick_writer = TickWriter()
    first, first_transport, _ = _connection(tick_writer)
    second, second_transport, _ = _connection(tick_writer)

    first.send(b"one")
    second.send(b"two")
    first.send(b"three", encode_frame(b"three"))
    assert first_transport.writes == [] and second_transport.writes == []  # not before the tick ends

    await asyncio.sleep(0)
    assert first_transport.writes == [encode_frame(b"one") + encode_frame(b"three")]
    assert second_transport.writes == [encode_frame(b"two")]

    first.send("text")
    await asyncio.sleep(0)
    assert first_transport.writes[1:] == [encode_frame("text")]


async def test_flush_writes_the_tick_at_once() -> None:
    conn, transport, _ = _connection(TickWriter())
    conn.send(b"last words")
    await conn.flush()  # close() flushes before its close frame
    assert transport.writes == [encode_frame(b"last words")]
    await asyncio.sleep(0)
    assert transport.writes == [encode_frame(b"last words")]  # not written twice


async def test_a_full_socket_buffer_queues_frames_until_the_transport_drains() -> None:
    conn, transport, socket = _connection(TickWriter())
    transport.buffered = HIGH_WATER
    conn.send(b"queued")
    conn.send(b"in order")
    flushed = asyncio.ensure_future(conn.flush())
    await asyncio.sleep(0)
    assert transport.writes == [] and not flushed.done()
    transport.buffered = 0
    socket.resume_writing()  # what the transport calls once its buffer drained
    await asyncio.wait_for(flushed, 1.0)
    assert transport.writes == [encode_frame(b"queued") + encode_frame(b"in order")]


async def test_a_socket_that_fails_to_write_does_not_hold_back_the_others() -> None:
    tick_writer = TickWriter()
    broken, broken_transport, _ = _connection(tick_writer)
    healthy, healthy_transport, _ = _connection(tick_writer)

    def fail(data: bytes) -> None:
        raise RuntimeError("transport gone")

    broken_transport.write = fail  # type: ignore[method-assign]
    broken.send(b"lost")
    healthy.send(b"delivered")
    await asyncio.sleep(0)
    assert healthy_transport.writes == [encode_frame(b"delivered")]
    broken.send(b"next tick")  # the broken one is scheduled again, not stuck
    healthy.send(b"again")
    await asyncio.sleep(0)
    assert healthy_transport.writes[1:] == [encode_frame(b"again")]


async def test_the_task_owner_logs_failures_cancels_loops_and_bounds_the_wait(caplog: Any) -> None:
    owner = TaskOwner("test")
    finished = asyncio.Event()

    async def fails() -> None:
        raise RuntimeError("boom")

    async def works() -> None:
        await asyncio.sleep(0)
        finished.set()

    async def forever() -> None:
        await asyncio.Event().wait()

    owner.spawn(fails(), name="failing")
    owner.spawn(works())
    owner.spawn_loop(forever(), name="loop")
    hangs = owner.spawn(forever(), name="stuck")
    await asyncio.sleep(0.01)  # let the failing task run
    assert any("background task failed" in r.message and getattr(r, "task", "") == "failing" for r in caplog.records)
    await owner.close(timeout=0.05)
    assert finished.is_set() and hangs.cancelled() and owner.running == 0

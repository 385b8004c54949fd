"""The aiohttp internals `services/collab/websocket.py` relies on: these fail loudly
when an aiohttp release changes them (read that module's docstring first).

A plain aiohttp app hands its sockets to an echoing `FrameSocket`; the collab
endpoint's own sockets are checked to hold no request, handler or task.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import os
import socket
import struct
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMessage, WSMsgType, web
from aiohttp._websocket import reader as aiohttp_reader
from aiohttp.helpers import NO_EXTENSIONS
from aiohttp.web_protocol import RequestHandler

from services.collab.frame_socket import FrameSocket
from services.collab.websocket import Handshake, frame_parser, hand_over
from shared.config import Settings
from shared.tasks import TaskOwner
from stack.processes import free_port
from tests.support.app_server import InProcessServer
from tests.support.wait import eventually
from tests.support.yclient import YClient


def _masked(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """A client frame (masked with a zero key, so the payload reads as is)."""
    assert len(payload) < 126
    return bytes([(0x80 if fin else 0) | opcode, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


def _handshake(path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


@pytest.mark.unit
def test_the_reader_is_aiohttps_cython_one_and_delivers_to_the_sink() -> None:
    if not NO_EXTENSIONS:
        assert aiohttp_reader.WebSocketReader.__module__.endswith("reader_c")
    got: list[WSMessage] = []
    errors: list[BaseException] = []
    parser = frame_parser(got.append, errors.append, max_frame_bytes=8)
    stream = (
        _masked(0x2, b"bin")
        + _masked(0x1, "tëxt".encode())
        + _masked(0x1, b"par", fin=False)
        + _masked(0x0, b"ts")
        + _masked(0x9, b"ping")
        + _masked(0x8, struct.pack("!H", 1000) + b"bye")
    )
    for i in range(0, len(stream), 5):  # split anywhere: the reader keeps its state
        parser.feed_data(stream[i : i + 5])
    assert [(m.type, m.data) for m in got] == [
        (WSMsgType.BINARY, b"bin"),
        (WSMsgType.TEXT, "tëxt"),
        (WSMsgType.TEXT, "parts"),
        (WSMsgType.PING, bytearray(b"ping")),
        (WSMsgType.CLOSE, 1000),
    ]
    assert errors == []
    parser.feed_data(_masked(0x2, b"123456789"))  # one byte over the limit
    assert len(errors) == 1 and getattr(errors[0], "code", None) == 1009


@pytest.mark.unit
def test_the_request_handler_still_has_what_hand_over_uses() -> None:
    assert "_message_tail" in RequestHandler.__slots__
    assert "_manager" in RequestHandler.__slots__
    assert callable(getattr(web.Server, "connection_lost", None))
    assert "write_eof" in web.WebSocketResponse.__dict__  # what Handshake overrides


class _Echo:
    """Echoes data frames."""

    def __init__(self, sock: FrameSocket) -> None:
        self.sock = sock
        self.closed = asyncio.Event()

    def on_frame(self, message: WSMessage) -> Awaitable[None] | None:
        if message.type is WSMsgType.BINARY:
            self.sock.write(bytes([0x82, len(message.data)]) + message.data)
        return None

    def on_refused(self, error: BaseException) -> None:
        pass

    def on_closed(self) -> None:
        self.closed.set()


class _EchoApp:
    def __init__(self) -> None:
        self.tasks = TaskOwner("test")
        self.sockets: list[_Echo] = []
        self.handlers_returned = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        sock = FrameSocket(1024, self.tasks)
        response = Handshake()
        sock.attach(*await hand_over(request, response, sock))
        echo = _Echo(sock)
        self.sockets.append(echo)
        sock.start(echo)
        self.handlers_returned += 1
        return response


@pytest.fixture
async def echo_app() -> AsyncIterator[tuple[_EchoApp, web.AppRunner, int]]:
    echo = _EchoApp()
    app = web.Application()
    app.router.add_get("/ws", echo.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield echo, runner, port
    finally:
        await runner.cleanup()
        await echo.tasks.close()


@pytest.mark.integration
async def test_a_handed_over_socket_outlives_its_handler_and_aiohttp_forgets_it(
    echo_app: tuple[_EchoApp, web.AppRunner, int],
) -> None:
    echo, runner, port = echo_app
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"http://127.0.0.1:{port}/ws") as ws,
    ):
        await eventually(lambda: echo.handlers_returned == 1, 5, what="the handler returned")
        server = runner.server
        assert server is not None

        def forgotten() -> bool:
            return not server.connections

        await eventually(forgotten, 5, what="aiohttp forgot the connection")
        gc.collect()
        assert not [o for o in gc.get_objects() if isinstance(o, web.BaseRequest)]
        for word in (b"one", b"two"):
            await ws.send_bytes(word)
            reply = await asyncio.wait_for(ws.receive(), 5)
            assert (reply.type, reply.data) == (WSMsgType.BINARY, word)
        await ws.ping(b"hello")  # answered by nobody here: FrameSocket leaves pings to its handler
        await ws.close(code=4000)
        assert ws.close_code == 1000  # the server's answer, as aiohttp's WebSocketResponse gave
    await asyncio.wait_for(echo.sockets[0].closed.wait(), 5)
    assert echo.sockets[0].sock.close_code == 4000


@pytest.mark.integration
async def test_frames_sent_with_the_handshake_are_read_first(
    echo_app: tuple[_EchoApp, web.AppRunner, int],
) -> None:
    """A client that writes its first frames before the 101 arrives (aiohttp's parser
    keeps them past the request): they reach the new protocol, in order."""
    _, _, port = echo_app

    def exchange() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(_handshake("/ws") + _masked(0x2, b"early") + _masked(0x2, b"later"))
            received = b""
            while received.count(b"early") + received.count(b"later") < 2:
                chunk = sock.recv(65536)
                assert chunk, received
                received += chunk
            return received

    received = await asyncio.to_thread(exchange)
    assert received.startswith(b"HTTP/1.1 101")
    assert received.split(b"\r\n\r\n", 1)[1] == b"\x82\x05early\x82\x05later"


@pytest.mark.integration
async def test_collab_sockets_hold_no_request_and_no_task(settings: Settings, project: str) -> None:
    from services.embedded import create_app

    srv = await InProcessServer(create_app, settings).start()
    try:
        token = await srv.grant(project)
        clients = [await YClient.connect(srv.ws_url, project, token) for _ in range(5)]
        try:
            clients[0].append("typed")
            await clients[-1].wait_text("typed")

            def server_side_leftovers() -> list[Any]:
                gc.collect()
                requests = [o for o in gc.get_objects() if isinstance(o, web.BaseRequest)]
                handlers = [
                    t
                    for t in asyncio.all_tasks()
                    if "RequestHandler" in getattr(t.get_coro(), "__qualname__", "")
                ]
                return requests + handlers

            await eventually(
                lambda: not server_side_leftovers(), 5, what="no request or handler task"
            )
        finally:
            await asyncio.gather(*(c.close() for c in clients))
    finally:
        await srv.stop()


@pytest.mark.integration
async def test_quiet_clients_are_pinged_and_silent_ones_closed_with_4008(
    settings: Settings, project: str
) -> None:
    from services.embedded import create_app

    srv = await InProcessServer(
        create_app, settings.with_overrides(ping_interval=0.2, pong_timeout=0.8)
    ).start()
    try:
        token = await srv.grant(project)
        url = f"{srv.ws_url}/{project}?token={token}"
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(url, autoping=False) as silent,
            session.ws_connect(url, autoping=False) as answering,
        ):
            await answering.ping(b"are you there")
            pings = 0
            async with asyncio.timeout(5):
                while pings < 3:  # the server pings a quiet client, and answers its ping
                    msg = await answering.receive()
                    if msg.type is WSMsgType.PONG:
                        assert msg.data == b"are you there"
                    elif msg.type is WSMsgType.PING:
                        pings += 1
                        await answering.pong(msg.data)
            async with asyncio.timeout(5):
                while (msg := await silent.receive()).type is not WSMsgType.CLOSE:
                    pass
            assert msg.data == 4008
            assert not answering.closed
    finally:
        await srv.stop()

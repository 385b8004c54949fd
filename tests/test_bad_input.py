"""Bad input on the collab endpoint: each refusal or bad frame closes only the
offending connection, with the documented close code, while other rooms (and
the other clients of the same room) carry on and keep their data.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import socket
import struct
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import jwt
import pytest

from shared.auth import mint_token
from shared.config import Settings
from shared.protocol import FrameKind, encode_sync_update
from tests.support.app_server import InProcessServer
from tests.support.cluster import metric, metrics_of
from tests.support.node_client import NodeYClient
from tests.support.yclient import YClient

# HS512 with the test secret is the point of one case; PyJWT warns about its length.
pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning"),
]

CLOSE_BAD_ROOM = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_INVALID_DATA = 1007
CLOSE_TOO_BIG = 1009
CLOSE_TOO_LARGE = 4413
CLOSE_REFUSED_REPEATEDLY = 4429


def new_room() -> str:
    return f"project-{uuid.uuid4()}"


async def join(server: InProcessServer, room: str, user: str = "member") -> YClient:
    """A connected client of `room` for `user`, made a member (editor) first."""
    return await YClient.connect(server.ws_url, room, await server.grant(room, user))


async def refused_with(
    server: InProcessServer,
    room: str,
    token: str | None,
    *,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> int | None:
    """Open a raw WebSocket and return the close code the server ends it with."""
    params = {"token": token} if token is not None else {}
    async with (
        asyncio.timeout(timeout),
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{server.ws_url}/{room}", params=params, headers=headers) as ws,
    ):
        while True:
            msg = await ws.receive()
            if msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.ERROR,
            ):
                return ws.close_code


@dataclass
class Bystander:
    """A client in another room, with text written before the bad input."""

    server: InProcessServer
    room: str
    client: YClient
    text: str

    async def assert_unaffected(self) -> None:
        # still connected, can still edit, and the server still has everything
        assert self.client.close_code is None, f"bystander closed with {self.client.close_code}"
        marker = f"[after {len(self.text)}]"
        self.client.append(marker)
        self.text += marker
        async with await join(self.server, self.room, "fresh") as fresh:
            await fresh.wait_text(self.text)
        # and the app itself still answers plain HTTP
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{self.server.http_url}/healthcheck") as resp,
        ):
            assert resp.status == 200


async def make_bystander(server: InProcessServer) -> Bystander:
    room = new_room()
    client = await join(server, room, "bystander")
    text = "written before the bad input;"
    client.append(text)
    # a second client confirms the server accepted it before anything bad happens
    async with await join(server, room, "check") as check:
        await check.wait_text(text)
    return Bystander(server, room, client, text)


@pytest.fixture
async def bystander(server: InProcessServer) -> AsyncIterator[Bystander]:
    b = await make_bystander(server)
    try:
        yield b
    finally:
        await b.client.close()


# --------------------------------------------------------------------------- handshake refusals


@pytest.mark.parametrize(
    "room",
    [
        "project-not-a-uuid",
        "project-",
        "room-00000000-0000-0000-0000-000000000000",
        "project-00000000-0000-0000-0000-000000000000-extra",
        "project-00000000000000000000000000000000",
        "PROJECT",
    ],
)
async def test_bad_room_name_is_refused_with_4400(
    server: InProcessServer, bystander: Bystander, room: str
) -> None:
    assert await refused_with(server, room, server.token()) == CLOSE_BAD_ROOM
    await bystander.assert_unaffected()


def _b64(obj: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def _claims(ttl: int = 3600) -> dict[str, object]:
    now = int(time.time())
    return {"sub": "mallory", "email": "", "roles": ["admin"], "iat": now, "exp": now + ttl}


def bad_tokens(secret: str) -> dict[str, str | None]:
    none_token = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims())}."
    return {
        "missing": None,
        "empty": "",
        "expired": mint_token(secret, "alice", ttl_seconds=-120)[0],
        "forged": mint_token("some-other-secret-" + "y" * 40, "alice")[0],
        "alg_none": none_token,
        "alg_none_with_signature": none_token + "c2lnbmF0dXJl",
        "hs512": jwt.encode(_claims(), secret, algorithm="HS512"),
        "no_exp": jwt.encode(
            {k: v for k, v in _claims().items() if k != "exp"}, secret, algorithm="HS256"
        ),
        "garbage": "definitely.not.a-jwt",
        "random": base64.urlsafe_b64encode(random.Random(5).randbytes(90)).decode(),
    }


BAD_TOKEN_CASES = [
    "missing",
    "empty",
    "expired",
    "forged",
    "alg_none",
    "alg_none_with_signature",
    "hs512",
    "no_exp",
    "garbage",
    "random",
]


@pytest.mark.parametrize("case", BAD_TOKEN_CASES)
async def test_bad_token_in_query_is_refused_with_4401(
    server: InProcessServer, bystander: Bystander, case: str
) -> None:
    tokens = bad_tokens(server.settings.jwt_secret)
    assert list(tokens) == BAD_TOKEN_CASES
    assert await refused_with(server, new_room(), tokens[case]) == CLOSE_UNAUTHORIZED
    await bystander.assert_unaffected()


@pytest.mark.parametrize("case", ["expired", "forged", "alg_none", "hs512", "garbage"])
async def test_bad_bearer_token_is_refused_with_4401(
    server: InProcessServer, bystander: Bystander, case: str
) -> None:
    token = bad_tokens(server.settings.jwt_secret)[case]
    code = await refused_with(
        server, new_room(), None, headers={"Authorization": f"Bearer {token}"}
    )
    assert code == CLOSE_UNAUTHORIZED
    await bystander.assert_unaffected()


async def test_valid_bearer_header_is_accepted(
    server: InProcessServer, bystander: Bystander
) -> None:
    """The positive control for the refusals above: a good header token joins."""
    token = await server.grant(bystander.room, "bearer")
    async with await YClient.connect(
        server.ws_url, bystander.room, None, headers={"Authorization": f"Bearer {token}"}
    ) as client:
        await client.wait_text(bystander.text)
        assert client.close_code is None


async def test_refusals_do_not_leak_rooms_or_connections(server: InProcessServer) -> None:
    for case in ("missing", "expired", "forged"):
        token = bad_tokens(server.settings.jwt_secret)[case]
        assert await refused_with(server, new_room(), token) == CLOSE_UNAUTHORIZED
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{server.http_url}/metrics") as resp,
    ):
        metrics = await resp.text()
    assert "collab_connections 0.0" in metrics
    assert "collab_rooms 0.0" in metrics


# --------------------------------------------------------------------------- bad frames


async def offend(
    server: InProcessServer, bystander: Bystander, frame: bytes | str, expected_code: int
) -> None:
    """Send `frame` from one client of a room while a peer shares that room;
    the sender alone is closed with `expected_code`; peer and bystander carry on."""
    room = new_room()
    async with await join(server, room, "peer") as peer:
        peer.append("peer text;")
        offender = await join(server, room, "offender")
        try:
            await offender.wait_text("peer text;")
            await offender.send_raw(frame)
            assert await offender.wait_closed() == expected_code
        finally:
            await offender.close()
        assert peer.close_code is None
        peer.append("still editing;")
        async with await join(server, room, "late") as late:
            await late.wait_text("peer text;still editing;")
    await bystander.assert_unaffected()


TRUNCATED = {
    "sync_no_subtype": b"\x00",
    "sync_update_no_length": b"\x00\x02",
    "sync_update_truncated_length_varint": b"\x00\x02\xff",
    "sync_update_truncated_payload": b"\x00\x02\x05ab",
    "sync_step1_truncated_payload": b"\x00\x00\x09\x01",
    "sync_unknown_subtype": b"\x00\x07\x00",
    "awareness_no_payload": b"\x01",
    "awareness_truncated_entry": b"\x01\x05\x03\x01\x80",
    "auth_truncated": b"\x02\x00\x10short",
    "message_type_truncated_varint": b"\x80",
    "empty_frame": b"",
}


@pytest.mark.parametrize("case", list(TRUNCATED))
async def test_truncated_frame_closes_only_that_connection_with_1007(
    server: InProcessServer, bystander: Bystander, case: str
) -> None:
    await offend(server, bystander, TRUNCATED[case], CLOSE_INVALID_DATA)


INVALID_UPDATES = {
    "update_garbage": encode_sync_update(b"\xff\xfe\xfd\xfc this is not a yjs update"),
    "step2_garbage": b"\x00\x01" + bytes([20]) + b"\x07" * 20,
    "step1_bad_state_vector": b"\x00\x00\x04\x05\xff\xff\xff",
}


@pytest.mark.parametrize("case", list(INVALID_UPDATES))
async def test_invalid_yjs_update_closes_only_that_connection_with_1007(
    server: InProcessServer, bystander: Bystander, case: str
) -> None:
    await offend(server, bystander, INVALID_UPDATES[case], CLOSE_INVALID_DATA)


async def test_invalid_update_does_not_reach_the_document(server: InProcessServer) -> None:
    room = new_room()
    async with await join(server, room) as a:
        a.append("clean")
        bad = await join(server, room)
        await bad.send_raw(INVALID_UPDATES["update_garbage"])
        assert await bad.wait_closed() == CLOSE_INVALID_DATA
        await bad.close()
        async with await join(server, room) as b:
            await b.wait_text("clean")
            # and the room's document still accepts and relays edits
            b.append("+more")
            await a.wait_text("clean+more")


def random_frames(first_bytes: range | list[int], count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [
        bytes([rng.choice(first_bytes)]) + rng.randbytes(rng.randint(3, 200)) for _ in range(count)
    ]


async def test_random_bytes_of_a_known_type_close_with_1007(
    server: InProcessServer, bystander: Bystander
) -> None:
    # message types 0 (sync), 1 (awareness), 2 (auth) followed by noise
    frames = random_frames([0, 1, 2], 12, seed=1234)
    for frame in frames:
        await offend(server, bystander, frame, CLOSE_INVALID_DATA)


async def test_random_bytes_of_an_unknown_type_are_relayed(
    server: InProcessServer, bystander: Bystander
) -> None:
    frames = random_frames(range(4, 128), 20, seed=99)
    room = new_room()
    async with await join(server, room) as sender, await join(server, room) as receiver:
        for frame in frames:
            await sender.send_raw(frame)
        await receiver.wait_until(lambda: len(receiver.opaque) >= len(frames))
        assert receiver.opaque == frames  # byte for byte, in order
        assert sender.opaque == []  # not echoed to the sender
        assert sender.close_code is None and receiver.close_code is None
        sender.append("still fine")
        await receiver.wait_text("still fine")
    await bystander.assert_unaffected()


async def test_query_awareness_with_trailing_bytes_is_answered(
    server: InProcessServer, bystander: Bystander
) -> None:
    """Type 3 carries no payload; like y-protocols, trailing bytes are ignored."""
    room = new_room()
    async with await join(server, room) as a, await join(server, room) as b:
        a.set_awareness({"user": "a"})
        await b.wait_until(lambda: a.doc.client_id in b.peers)
        before = b.frames.count(FrameKind.AWARENESS)
        await b.send_raw(b"\x03" + random.Random(3).randbytes(40))
        await b.wait_until(lambda: b.frames.count(FrameKind.AWARENESS) > before)
        assert b.close_code is None
    await bystander.assert_unaffected()


# --------------------------------------------------------------------------- oversized frames


@pytest.fixture
async def small_server(settings: Settings) -> AsyncIterator[InProcessServer]:
    from services.embedded import create_app

    srv = await InProcessServer(
        create_app,
        settings.with_overrides(
            max_message_bytes=64 * 1024,
            max_sync_message_bytes=512 * 1024,
            max_document_bytes=400 * 1024,
        ),
    ).start()
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.mark.parametrize("kind", ["binary_opaque", "awareness", "text"])
async def test_an_oversized_ordinary_frame_closes_only_that_connection_with_1009(
    small_server: InProcessServer, kind: str
) -> None:
    bystander = await make_bystander(small_server)
    try:
        if kind == "binary_opaque":
            frame: bytes | str = b"\x09" + b"y" * 100_000
        elif kind == "awareness":
            frame = b"\x01" + b"\xff" * 100_000
        else:
            frame = "z" * 100_000
        assert len(frame) > small_server.settings.max_message_bytes
        await offend(small_server, bystander, frame, CLOSE_TOO_BIG)
        # a frame just under the limit is fine
        room = new_room()
        async with await join(small_server, room) as a, await join(small_server, room) as b:
            a.append("w" * 30_000)
            await b.wait_text("w" * 30_000)
            assert a.close_code is None
    finally:
        await bystander.client.close()


def _text_update(size: int) -> bytes:
    from pycrdt import Doc, Text

    doc: Doc = Doc()
    doc.get("t", type=Text).insert(0, "x" * size)
    return doc.get_update()


async def test_a_document_update_may_be_larger_than_an_ordinary_frame(
    small_server: InProcessServer,
) -> None:
    """Up to MAX_SYNC_MESSAGE_BYTES, as long as the document stays under MAX_DOCUMENT_BYTES."""
    room = new_room()
    update = _text_update(300_000)
    assert len(update) > small_server.settings.max_message_bytes
    async with await join(small_server, room) as a, await join(small_server, room) as b:
        await a.send_raw(encode_sync_update(update))
        await b.wait_until(lambda: len(b.value) == 300_000)
        assert a.close_code is None


@pytest.mark.parametrize("size", [420_000, 600_000])
async def test_an_update_past_the_document_limit_closes_with_4413(
    small_server: InProcessServer, size: int
) -> None:
    """Past MAX_DOCUMENT_BYTES (420 kB) or even MAX_SYNC_MESSAGE_BYTES (600 kB): the
    permanent 4413, the document keeps what it had, the room and others carry on."""
    bystander = await make_bystander(small_server)
    try:
        room = new_room()
        async with await join(small_server, room) as a, await join(small_server, room) as b:
            a.append("kept")
            await b.wait_text("kept")
            await a.send_raw(encode_sync_update(_text_update(size)))
            await a.wait_closed()
            assert a.close_code == CLOSE_TOO_LARGE
            b.append("!")
            async with await join(small_server, room) as c:
                await c.wait_text("kept!")
            assert b.close_code is None
        await bystander.assert_unaffected()
    finally:
        await bystander.client.close()


async def test_growth_is_refused_once_the_document_is_at_its_limit(
    small_server: InProcessServer,
) -> None:
    """Many updates that each fit, together past the limit: the one that crosses it is refused."""
    room = new_room()
    async with await join(small_server, room) as a, await join(small_server, room) as b:
        for _ in range(3):
            a.append("p" * 100_000)
        await b.wait_until(lambda: len(b.value) == 300_000)
        a.append("q" * 150_000)
        await a.wait_closed()
        assert a.close_code == CLOSE_TOO_LARGE
        async with await join(small_server, room) as c:
            await c.wait_until(lambda: len(c.value) == 300_000)
            assert "q" not in c.value


async def test_a_stock_client_refused_for_what_it_resends_stops_reconnecting(
    small_server: InProcessServer,
) -> None:
    """An awareness state over MAX_MESSAGE_BYTES: the stock client resends it on every
    reconnect. Twice 1009, then the permanent 4429, and the client stops."""
    room = new_room()
    token = await small_server.grant(room, "looper")
    async with NodeYClient.start(small_server.ws_url, room, token) as client:
        await client.wait_synced()
        await client.set_awareness({"blob": "a" * 100_000})
        closed = await client.wait_event("closed", 30)
        assert closed["code"] == CLOSE_REFUSED_REPEATEDLY
        info = await client.info()
        assert info["should_connect"] is False and not info["connecting"]
    text = await metrics_of(small_server.http_url)
    assert metric(text, 'collab_errors_total{kind="too_big"}') == 3
    assert metric(text, 'collab_errors_total{kind="refused_repeatedly"}') == 1
    # for a while, that user's new sockets to that room are refused at once
    assert await refused_with(small_server, room, token) == CLOSE_REFUSED_REPEATEDLY
    # another user, or the same user in another room, is not affected
    async with await join(small_server, room) as a, await join(small_server, room) as b:
        a.append("fine")
        await b.wait_text("fine")
    other = new_room()
    async with await join(small_server, other, "looper") as c:
        assert c.close_code is None


def test_refusal_history_escalates_only_repeats_of_one_kind_in_one_room() -> None:
    from services.collab.refusals import RefusalHistory

    history = RefusalHistory(limit=3, window=60.0, max_keys=2)
    assert not history.repeated("u", "r", 1007, 0.0)
    assert not history.repeated("u", "r", 1009, 1.0)  # another kind
    assert not history.repeated("u", "other", 1007, 2.0)  # another room (evicts the oldest key)
    assert not history.repeated("u", "r", 1007, 3.0)
    assert not history.repeated("u", "r", 1007, 4.0)  # the first was evicted with max_keys=2
    assert history.repeated("u", "r", 1007, 5.0)
    assert history.blocked("u", "r", 6.0) and not history.blocked("u", "other", 6.0)
    assert not history.repeated("u", "r", 1007, 100.0)  # the window passed
    assert not history.blocked("u", "r", 100.0)


def _send_oversized_frame(port: int, path: str, size: int) -> tuple[OSError | None, int | None]:
    """Open a WebSocket by hand, send one binary frame of `size` bytes whole, then read until
    the server closes: (the error sending raised, if any; the close code the server sent)."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        received = b""
        while b"\r\n\r\n" not in received:
            received += sock.recv(65536)
        assert received.startswith(b"HTTP/1.1 101"), received[:100]
        received = received.split(b"\r\n\r\n", 1)[1]
        header = bytes([0x82, 0x80 | 127]) + struct.pack("!Q", size) + b"\x00" * 4  # mask 0
        error: OSError | None = None
        try:
            sock.sendall(header + b"\x09" * size)
            while chunk := sock.recv(65536):
                received += chunk
        except OSError as exc:
            error = exc
    while len(received) >= 2:  # the server's frames: unmasked
        opcode, length, start = received[0] & 0x0F, received[1] & 0x7F, 2
        if length == 126:
            length, start = struct.unpack("!H", received[2:4])[0], 4
        elif length == 127:
            length, start = struct.unpack("!Q", received[2:10])[0], 10
        if opcode == 0x8:
            return error, struct.unpack("!H", received[start : start + 2])[0]
        received = received[start + length :]
    return error, None


async def test_a_frame_far_over_the_limit_still_gets_its_close_code(
    small_server: InProcessServer,
) -> None:
    """The client sends its whole 16 MB frame (past MAX_SYNC_MESSAGE_BYTES: never acceptable,
    4413): the server reads and drops it after sending the close frame, instead of
    resetting a connection the client is still writing to (seen as 1006)."""
    room = new_room()
    token = await small_server.grant(room, "big-sender")
    error, code = await asyncio.to_thread(
        _send_oversized_frame, small_server.settings.port, f"/yjs/{room}?token={token}", 16_000_000
    )
    assert error is None, f"the connection was reset while the frame was sent: {error!r}"
    assert code == CLOSE_TOO_LARGE


async def test_a_frame_of_exactly_the_limit_is_accepted(small_server: InProcessServer) -> None:
    room = new_room()
    limit = small_server.settings.max_message_bytes
    frame = b"\x09" + b"e" * (limit - 1)
    async with await join(small_server, room) as a, await join(small_server, room) as b:
        await a.send_raw(frame)
        await b.wait_until(lambda: frame in b.opaque)
        assert a.close_code is None

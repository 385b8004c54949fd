"""The collab service in single-instance mode, driven by pycrdt clients."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from tests.support.app_server import InProcessServer
from tests.support.yclient import YClient

pytestmark = pytest.mark.integration


async def test_two_clients_converge_both_ways(server: InProcessServer, project: str) -> None:
    token = await server.grant(project, "alice")
    async with await YClient.connect(server.ws_url, project, token) as a, await YClient.connect(
        server.ws_url, project, token
    ) as b:
        a.append("hello")
        await b.wait_text("hello")
        b.append(" world")
        await a.wait_text("hello world")
        a.insert(0, ">> ")
        b.insert(len(b.value), "!")
        await YClient.wait_all([a, b], lambda: a.value == b.value and len(a.value) == len(">> hello world!"))
        assert a.value == b.value


async def test_late_joiner_gets_document_from_server_alone(server: InProcessServer, project: str) -> None:
    token = await server.grant(project)
    async with await YClient.connect(server.ws_url, project, token) as a, await YClient.connect(
        server.ws_url, project, token
    ) as observer:
        a.append("written before anyone else came")
        await observer.wait_text("written before anyone else came")
    # Nobody else is online; a new client syncs from the server's document alone.
    async with await YClient.connect(server.ws_url, project, token) as late:
        await late.wait_text("written before anyone else came")


async def test_awareness_appears_and_disappears_on_disconnect(server: InProcessServer, project: str) -> None:
    token = await server.grant(project)
    async with await YClient.connect(server.ws_url, project, token) as watcher:
        other = await YClient.connect(server.ws_url, project, token)
        other.set_awareness({"user": {"name": "bob"}})
        await watcher.wait_until(lambda: other.doc.client_id in watcher.peers)
        assert watcher.peers[other.doc.client_id] == {"user": {"name": "bob"}}
        # the sender receives its own awareness back (keeps quiet stock clients alive)
        await other.wait_until(lambda: other.frames.count(_awareness_kind()) >= 1)
        await other.close()
        await watcher.wait_until(lambda: other.doc.client_id not in watcher.peers)


async def test_joiner_receives_current_awareness(server: InProcessServer, project: str) -> None:
    token = await server.grant(project)
    async with await YClient.connect(server.ws_url, project, token) as first:
        first.set_awareness({"user": {"name": "ann"}})
        await first.wait_until(lambda: _awareness_kind() in first.frames)
        async with await YClient.connect(server.ws_url, project, token) as second:
            await second.wait_until(lambda: first.doc.client_id in second.peers)


def _awareness_kind():  # type: ignore[no-untyped-def]
    from shared.protocol import FrameKind

    return FrameKind.AWARENESS


async def test_opaque_frames_are_relayed(server: InProcessServer, project: str) -> None:
    """Frames of unknown types and text that is not JSON; JSON text is a control message
    for the server (tests/test_asset_coordinator.py)."""
    token = await server.grant(project)
    async with await YClient.connect(server.ws_url, project, token) as a, await YClient.connect(
        server.ws_url, project, token
    ) as b:
        await a.send_raw(b"\x09custom-asset-message")
        await a.send_raw("plain text")
        await b.wait_until(lambda: len(b.opaque) == 2)
        assert b.opaque == [b"\x09custom-asset-message", "plain text"]
        assert a.opaque == []


async def test_viewer_updates_are_dropped(settings, project: str) -> None:  # type: ignore[no-untyped-def]
    from shared.access import PolicyBase, Role

    class ViewerForBob(PolicyBase):
        async def role_for(self, identity, project_uuid):  # type: ignore[no-untyped-def]
            return Role.VIEWER if identity.user_id == "bob" else Role.EDITOR

    def build(s):  # type: ignore[no-untyped-def]
        from services.collab.app import create_app

        return create_app(s, access=ViewerForBob())

    srv = await InProcessServer(build, settings).start()
    try:
        async with await YClient.connect(srv.ws_url, project, srv.token("alice")) as alice, await YClient.connect(
            srv.ws_url, project, srv.token("bob")
        ) as bob:
            bob.append("vandalism")
            alice.append("ok")
            await bob.wait_until(lambda: "ok" in bob.value)
            # alice never sees bob's edit; a fresh client neither
            async with await YClient.connect(srv.ws_url, project, srv.token("carol")) as carol:
                await carol.wait_text("ok")
            assert alice.value == "ok"
            metrics = await _metrics(srv)
            assert "collab_readonly_dropped_total 1.0" in metrics
    finally:
        await srv.stop()


async def _metrics(srv: InProcessServer) -> str:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(f"{srv.http_url}/metrics") as resp:
        return await resp.text()


async def test_metrics_and_health(server: InProcessServer, project: str) -> None:
    import aiohttp

    async with await YClient.connect(server.ws_url, project, await server.grant(project)) as a:
        a.append("x")
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{server.http_url}/healthcheck") as resp:
                assert resp.status == 200
            async with session.get(f"{server.http_url}/health/ready") as resp:
                body = await resp.json()
                assert resp.status == 200 and body["checks"]["database"] == "ok"
            await a.wait_until(lambda: True)
        text = await _metrics(server)
        assert "collab_connections 1.0" in text
        assert "collab_rooms 1.0" in text
        assert 'collab_frames_in_total{kind="sync_update"}' in text


async def test_concurrent_first_joins_load_once(server: InProcessServer, project: str) -> None:
    token = await server.grant(project)
    clients = await asyncio.gather(*(YClient.connect(server.ws_url, project, token) for _ in range(8)))
    try:
        clients[0].append("same room")
        for c in clients[1:]:
            await c.wait_text("same room")
        text = await _metrics(server)
        assert "collab_room_load_seconds_count 1.0" in text
    finally:
        await asyncio.gather(*(c.close() for c in clients))


async def test_flooding_connection_is_closed_others_unaffected(settings, project: str) -> None:  # type: ignore[no-untyped-def]
    from services.embedded import create_app
    from shared.protocol import encode_query_awareness

    srv = await InProcessServer(create_app, settings.with_overrides(max_frames_per_second=20.0)).start()
    try:
        token = await srv.grant(project)
        async with await YClient.connect(srv.ws_url, project, token) as calm, await YClient.connect(
            srv.ws_url, project, token
        ) as flooder:
            for _ in range(200):
                await flooder.send_raw(encode_query_awareness())
            assert await flooder.wait_closed(5) == 1008
            calm.append("still here")
            async with await YClient.connect(srv.ws_url, project, token) as fresh:
                await fresh.wait_text("still here")
    finally:
        await srv.stop()


async def test_idle_document_is_compacted_while_its_room_stays_open(settings, project: str) -> None:  # type: ignore[no-untyped-def]
    from services.embedded import create_app
    from shared.db.models import YjsDocument

    idle = settings.with_overrides(compact_idle_seconds=0.5, compact_max_updates=10_000, compact_max_bytes=10**9)
    srv = await InProcessServer(create_app, idle).start()
    try:
        token = await srv.grant(project)
        async with await YClient.connect(srv.ws_url, project, token) as c:
            for word in ("quiet ", "room ", "compacts"):
                c.append(word)
            async with asyncio.timeout(10):
                while True:  # polling the database: compaction emits no event a client sees
                    async with srv.sessionmaker() as session:
                        versions = (await session.scalars(select(YjsDocument.snapshot_version))).all()
                    if versions and max(versions) > 0:
                        break
                    await asyncio.sleep(0.1)
            async with await YClient.connect(srv.ws_url, project, token) as fresh:
                await fresh.wait_text("quiet room compacts")
    finally:
        await srv.stop()


async def test_large_updates_are_relayed_intact(server: InProcessServer, project: str) -> None:
    token = await server.grant(project)
    big = "x" * 200_000  # frames with a 64-bit length
    async with await YClient.connect(server.ws_url, project, token) as a, await YClient.connect(
        server.ws_url, project, token
    ) as b:
        a.append(big)
        await b.wait_text(big)
        b.append("!")
        await a.wait_text(big + "!")


async def test_fresh_joiners_get_every_edit(server: InProcessServer, project: str) -> None:
    token = await server.grant(project)
    async with await YClient.connect(server.ws_url, project, token) as writer:
        writer.append("first")
        async with await YClient.connect(server.ws_url, project, token) as fresh:
            await fresh.wait_text("first")
            writer.append(" second")
            await fresh.wait_text("first second")  # the server has applied it
        # a full document encoded for the first fresh joiner must not be served again
        async with await YClient.connect(server.ws_url, project, token) as later:
            await later.wait_text("first second")


async def test_simultaneous_fresh_joiners_all_get_the_document(server: InProcessServer, project: str) -> None:
    token = await server.grant(project)
    text = "course material " * 5_000
    async with await YClient.connect(server.ws_url, project, token) as writer:
        writer.append(text)
        async with await YClient.connect(server.ws_url, project, token) as observer:
            await observer.wait_text(text)
        students = await asyncio.gather(*(YClient.connect(server.ws_url, project, token) for _ in range(6)))
        try:
            for student in students:
                await student.wait_text(text)
        finally:
            await asyncio.gather(*(s.close() for s in students))



class _FakeConnection:
    """What a room needs of a connection; records the (data, frame) pairs it is sent."""

    def __init__(self, conn_id: int) -> None:
        from shared.access import Role

        self.id = conn_id
        self.role = Role.EDITOR
        self.sent: list[tuple[bytes | str, bytes | None]] = []

    def send(self, data: bytes | str, frame: bytes | None = None) -> None:
        self.sent.append((data, frame))

    def last_step2(self) -> tuple[bytes, bytes | None]:
        """The update of the last frame sent, a SyncStep2, and its pre-encoded frame."""
        from services.collab.frames import encode_frame
        from shared.protocol import FrameKind, parse_frame

        data, frame = self.sent[-1]
        if isinstance(data, memoryview):  # a cached full sync: a view into its frame
            data = bytes(data)
        assert isinstance(data, bytes)
        assert frame is None or frame == encode_frame(data)
        parsed = parse_frame(data)
        assert parsed.kind is FrameKind.SYNC_STEP2
        return parsed.payload, frame


class _Writer:
    """A client document whose edits are handed to the room as updates."""

    def __init__(self) -> None:
        from pycrdt import Doc, Text

        self.doc: Doc = Doc()
        self.text = self.doc.get("t", type=Text)

    def edit(self, text: str) -> bytes:
        before = self.doc.get_state()
        self.text += text
        return self.doc.get_update(before)


def _room():  # type: ignore[no-untyped-def]
    from prometheus_client import CollectorRegistry

    from services.collab.metrics import CollabMetrics
    from services.collab.room import Room

    class Backplane:
        def publish_update(self, project_uuid: str, update: bytes) -> None:
            pass

    from shared.tasks import TaskOwner

    return Room("p", Backplane(), CollabMetrics(CollectorRegistry()), tasks=TaskOwner("test"))  # type: ignore[arg-type]


def _text_of(update: bytes) -> str:
    from pycrdt import Doc, Text

    doc: Doc = Doc()
    doc.apply_update(update)
    return str(doc.get("t", type=Text))


def test_fresh_joins_share_one_encoding_until_the_document_changes() -> None:
    from shared.protocol import EMPTY_STATE_VECTOR, encode_sync_step1, encode_sync_update

    room, writer, editor = _room(), _Writer(), _FakeConnection(0)
    join = encode_sync_step1(EMPTY_STATE_VECTOR)
    room.receive(editor, encode_sync_update(writer.edit("a")))
    first, second = _FakeConnection(1), _FakeConnection(2)
    room.receive(first, join)
    room.receive(second, join)
    (update, frame), (_, same_frame) = first.last_step2(), second.last_step2()
    assert _text_of(update) == "a"
    assert frame is not None and same_frame is frame  # encoded once, sent twice

    # each way an update reaches the doc makes the next fresh join re-encode
    changes = [
        lambda: room.receive(editor, encode_sync_update(writer.edit("b"))),
        lambda: room.apply_remote_update(writer.edit("c")),
        lambda: room.apply_remote_updates([writer.edit("d"), writer.edit("e")]),
    ]
    for conn_id, change in enumerate(changes, start=3):
        change()
        fresh = _FakeConnection(conn_id)
        room.receive(fresh, join)
        update, new_frame = fresh.last_step2()
        assert new_frame is not frame
        assert _text_of(update) == str(writer.text)
        frame = new_frame
    assert str(writer.text) == "abcde"


def test_joins_with_a_state_vector_get_only_what_they_miss() -> None:
    from pycrdt import Doc, Text

    from shared.protocol import encode_sync_step1, encode_sync_update

    room, writer, editor = _room(), _Writer(), _FakeConnection(0)
    room.receive(editor, encode_sync_update(writer.edit("known " * 100)))
    client: Doc = Doc()
    client.apply_update(writer.doc.get_update())
    room.receive(editor, encode_sync_update(writer.edit("new")))

    returning = _FakeConnection(1)
    room.receive(returning, encode_sync_step1(client.get_state()))
    missing, _ = returning.last_step2()
    assert len(missing) < len(writer.doc.get_update()) // 10
    client.apply_update(missing)
    assert str(client.get("t", type=Text)) == str(writer.text)

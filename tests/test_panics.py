"""No update can brick a document: pycrdt panics are rejected updates, bad stored rows are quarantined.

The pair X, U below parses, and each applies on its own, but applying U after
X makes yrs 0.28 panic (`block_store.rs: Option::unwrap() on None`), a
`pyo3_runtime.PanicException` that `except Exception` misses.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from pycrdt import Array, Doc, Map, Text
from sqlalchemy import func, select

from services.embedded import create_app as create_embedded_app
from shared import ydoc
from shared.compaction import build_doc, build_snapshot, replay
from shared.db.models import Project, YjsQuarantine, YjsUpdate
from shared.db.resources import DATABASE
from shared.protocol import FrameKind, encode_sync_step1, encode_sync_update, parse_frame
from shared.store import DocumentStore
from shared.ydoc import RejectedUpdate
from tests.conftest import make_settings
from tests.support.api import Api, editor_project
from tests.support.app_server import InProcessServer
from tests.support.cluster import Cluster, metric, metrics_of
from tests.support.yclient import YClient

pytestmark = pytest.mark.integration

X = bytes.fromhex(
    "0103b1d1f9d6030004010a636f64656d6972726f720b68656c6c6f20776f726c64"
    "2801016d016b0177017608010161017c3f80000000"
)
U = bytes.fromhex(
    "0101b1d1f9d603ffffffffffffff00c4b1d1f9d60305b1d1f9d603060351515101b1d1f9d6030200030401"
)
OCTET = {"Content-Type": "application/octet-stream"}
ALIVE = 0  # what `send_updates` reports for an update after which the connection still answers
# a refusal is 1007; the fuzz sends each pair as a fresh user, so it never meets the 4429 a
# user refused again and again gets (services/collab/refusals.py, tested in test_bad_input.py)
ANSWERS = (ALIVE, 1007)


def codemirror_text(update: bytes) -> str:
    return str(build_doc([update]).get("codemirror", type=Text))


def text_of(update: bytes) -> str:
    return str(build_doc([update]).get("t", type=Text))


async def send_updates(ws_url: str, room: str, token: str, updates: list[bytes]) -> list[int]:
    """Send each update on one socket, then a probe (SyncStep1); per update, ALIVE if the
    probe was answered, else the close code (-1: dropped without one). Stops at a close."""
    results: list[int] = []
    async with aiohttp.ClientSession() as session, session.ws_connect(
        f"{ws_url}/{room}", params={"token": token}, max_msg_size=0
    ) as ws:
        for update in updates:
            await ws.send_bytes(encode_sync_update(update))
            await ws.send_bytes(encode_sync_step1(b"\x00"))
            while True:
                message = await asyncio.wait_for(ws.receive(), 10)
                if message.type is aiohttp.WSMsgType.BINARY:
                    if parse_frame(message.data).kind is FrameKind.SYNC_STEP2:
                        results.append(ALIVE)
                        break
                    continue
                if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                    results.append(ws.close_code if ws.close_code is not None else -1)
                    return results
                if message.type is aiohttp.WSMsgType.ERROR:
                    results.append(-1)
                    return results
    return results


async def assert_usable(
    api: Api, ws_url: str, room: str, token: str, marker: str, *, restorable: bool = True
) -> None:
    """Export, versions and a join all work, and a joiner's edit is exported. Without
    `restorable`, a restore may also be refused with a 400 (fuzzed content pycrdt
    accepted can still panic when edited: the restore is then refused, not dropped)."""
    project = room.removeprefix("project-")
    url = f"/api/projects/{project}/yjs-document"
    assert (await api.get(url)).status == 200
    async with await YClient.connect(ws_url, room, token) as joiner:
        assert joiner.synced.is_set(), "a joiner got no SyncStep2"
        joiner.append(marker)
        for _ in range(100):
            if marker in text_of((await api.get(url)).body):
                break
            await asyncio.sleep(0.05)
        assert marker in text_of((await api.get(url)).body)
    version = await api.post(f"/api/projects/{project}/versions", json={"label": marker})
    assert version.status == 201, version.body
    listed = await api.get(f"/api/projects/{project}/versions")
    assert listed.status == 200 and listed.json["versions"]
    restored = await api.post(f"/api/projects/{project}/versions/{version.json['id']}/restore")
    assert restored.status == 200 or (not restorable and restored.status == 400), restored.body


# pure -------------------------------------------------------------------------


def test_the_pair_is_a_rejected_update_and_marks_the_doc_damaged() -> None:
    doc: Doc = Doc()
    ydoc.apply_update(doc, X)
    with pytest.raises(RejectedUpdate) as caught:
        ydoc.apply_update(doc, U)
    assert caught.value.damaged and isinstance(caught.value, ValueError)
    with pytest.raises(RejectedUpdate) as refused:
        ydoc.apply_update(Doc(), b"\x01\x02\x03")
    assert not refused.value.damaged


def test_replay_leaves_out_what_panics_in_either_order() -> None:
    forward = replay([X, U])
    assert forward.rejected == (1,) and codemirror_text(ydoc.encode_diff(forward.doc)) == "hello world"
    backward = replay([U, X, b"", b"\x00\x00"])
    assert backward.rejected == (1,)
    snapshot = build_snapshot([X, U, X])
    assert snapshot.rejected == (1,) and codemirror_text(snapshot.update) == "hello world"
    healthy: Doc = Doc()
    healthy.get("t", type=Text).insert(0, "ok")
    assert replay([healthy.get_update()]).rejected == ()


# single-instance (embedded) -----------------------------------------------------


async def _project(srv: InProcessServer) -> tuple[str, str, Api]:
    """A new project with an editor: (room name, the editor's token, an open Api client)."""
    room, api = await editor_project(srv)
    assert api.token is not None
    return room, api.token, api


async def test_http_import_of_the_pair_is_a_400_and_the_document_lives_on(server: InProcessServer) -> None:
    room, token, api = await _project(server)
    url = f"/api/projects/{room.removeprefix('project-')}/yjs-document"
    try:
        assert (await api.post(url, data=X, headers=OCTET)).status == 200
        refused = await api.post(url, data=U, headers=OCTET)
        assert refused.status == 400 and refused.error_code == "invalid_update", refused.body
        await assert_usable(api, server.ws_url, room, token, "after;")
        await server.restart()
        await assert_usable(api, server.ws_url, room, token, "restarted;")
        assert codemirror_text((await api.get(url)).body) == "hello world"
        store: DocumentStore = server.app[DATABASE].store  # type: ignore[index]
        assert U not in await store.load_updates(room.removeprefix("project-"))
    finally:
        await api.close()


async def test_websocket_pair_closes_the_sender_with_1007_and_the_room_carries_on(
    server: InProcessServer,
) -> None:
    room, token, api = await _project(server)
    try:
        async with await YClient.connect(server.ws_url, room, token) as bystander:
            bystander.append("before;")
            await asyncio.sleep(0.3)
            assert await send_updates(server.ws_url, room, token, [X, U]) == [ALIVE, 1007]
            assert bystander.close_code is None
            bystander.append("bystander;")
            async with await YClient.connect(server.ws_url, room, token) as joiner:
                await joiner.wait_until(lambda: "bystander;" in joiner.value)
                assert "before;" in joiner.value
            await assert_usable(api, server.ws_url, room, token, "after;")
        metrics = await metrics_of(server.http_url)
        assert metric(metrics, "collab_document_rebuilds_total") >= 1
        await server.restart()
        await assert_usable(api, server.ws_url, room, token, "restarted;")
    finally:
        await api.close()


async def test_a_stored_panicking_update_is_quarantined_at_load(server: InProcessServer) -> None:
    """Rows written before the fix: the room loads without the bad one, which moves aside."""
    room, token, api = await _project(server)
    project = room.removeprefix("project-")
    store: DocumentStore = server.app[DATABASE].store  # type: ignore[index]
    try:
        await store.append({project: [X]})
        await store.append({project: [U]})
        async with await YClient.connect(server.ws_url, room, token) as joiner:
            assert joiner.synced.is_set()
            assert str(joiner.doc.get("codemirror", type=Text)) == "hello world"
        assert U not in await store.load_updates(project)
        async with server.sessionmaker() as session:
            rows = (
                await session.execute(
                    select(YjsQuarantine.update, YjsQuarantine.source_id, YjsQuarantine.reason)
                    .join(Project, Project.id == YjsQuarantine.project_id)
                    .where(Project.uuid == uuid.UUID(project))
                )
            ).all()
        assert [bytes(r.update) for r in rows] == [U] and rows[0].source_id is not None, rows
        assert metric(await metrics_of(server.http_url), "yjs_quarantined_updates_total") == 1
        await assert_usable(api, server.ws_url, room, token, "after;")
        listed = await asyncio.to_thread(_admin_quarantine, server, project)
        assert listed.returncode == 0, listed.stderr
        assert project in listed.stdout and f"{len(U)} bytes" in listed.stdout
        assert listed.stdout.strip().endswith("1 quarantined update(s)")
    finally:
        await api.close()


def _admin_quarantine(server: InProcessServer, project: str) -> subprocess.CompletedProcess[str]:
    settings = server.settings
    env = {
        **os.environ,
        "DATA_DIR": str(settings.data_dir),
        "DATABASE_URL": settings.database_url,
        "API_JWT_SECRET": settings.jwt_secret,
        "APP_SECRET": settings.app_secret,
        "RUN_MIGRATIONS": "0",
    }
    return subprocess.run(  # the callers check the return code
        [sys.executable, "-m", "services.gateway.admin", "quarantine", project],
        check=False,
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_compaction_quarantines_a_panicking_row(server: InProcessServer) -> None:
    room, _, api = await _project(server)
    project = room.removeprefix("project-")
    store: DocumentStore = server.app[DATABASE].store  # type: ignore[index]
    try:
        await store.append({project: [X, U]})
        result = await store.compact(project)
        assert result is not None and result.quarantined == 1
        assert codemirror_text(build_doc(await store.load_updates(project)).get_update()) == "hello world"
        async with server.sessionmaker() as session:
            count = await session.scalar(select(func.count(YjsQuarantine.id)))
            left = await session.scalar(select(func.count(YjsUpdate.id)))
        assert count == 1 and left == 0
    finally:
        await api.close()


# multi-instance -------------------------------------------------------------------


async def test_multi_instance_pair_over_http_and_websocket(cluster: Cluster) -> None:
    a_srv, b_srv, gateway = await cluster.pair()
    room = await cluster.new_project(1)
    token = cluster.token(1)
    url = f"/api/projects/{room.removeprefix('project-')}/yjs-document"
    async with Api(gateway.http_url, token) as api:
        # HTTP, room not loaded: the gateway validates against the durable document
        assert (await api.post(url, data=X, headers=OCTET)).status == 200
        refused = await api.post(url, data=U, headers=OCTET)
        assert refused.status == 400 and refused.error_code == "invalid_update", refused.body
        # WebSocket, room live on both instances
        async with await YClient.connect(b_srv.ws_url, room, token) as on_b:
            await on_b.wait_until(lambda: str(on_b.doc.get("codemirror", type=Text)) == "hello world")
            assert await send_updates(a_srv.ws_url, room, token, [U]) == [1007]
            # the live room refuses the import too
            refused = await api.post(url, data=U, headers=OCTET)
            assert refused.status == 400, refused.body
            on_b.append("b;")
            async with await YClient.connect(a_srv.ws_url, room, token) as on_a:
                await on_a.wait_until(lambda: "b;" in on_a.value)
                on_a.append("a;")
                await on_b.wait_until(lambda: "a;" in on_b.value)
            assert on_b.close_code is None
        await assert_usable(api, a_srv.ws_url, room, token, "after;")
        await a_srv.restart()
        await b_srv.restart()
        await assert_usable(api, b_srv.ws_url, room, token, "restarted;")


# fuzz ---------------------------------------------------------------------------

SEED = 20260512
PAIRS = 150  # pairs per channel (import, WebSocket): about ten seconds in all


def _corpus() -> list[bytes]:
    """Real updates: text typing and deletes, maps, arrays, and the known bad pair."""
    updates = [X, U]
    doc: Doc = Doc()
    text = doc.get("t", type=Text)
    meta = doc.get("m", type=Map)
    items = doc.get("a", type=Array)
    for i in range(12):
        before = doc.get_state()
        if i % 4 == 3 and len(text) > 2:
            del text[0:2]
        else:
            text.insert(len(text), f"w{i} ")
        meta[f"k{i % 3}"] = i
        items.append(i)
        updates.append(doc.get_update(before))
    updates.append(doc.get_update())
    return updates


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        value, shift, at = value | (byte & 0x7F) << shift, shift + 7, at + 1
        if byte < 0x80:
            return value, at


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | 0x80 if value else byte)
        if not value:
            return bytes(out)


def _with_clock(rng: random.Random, data: bytes) -> bytes:
    """The first struct's clock (after the group count, struct count, client) set to an extreme."""
    try:
        at = _varint(data, _varint(data, _varint(data, 0)[1])[1])[1]
        clock, end = _varint(data, at)
    except IndexError:
        return data
    extreme = rng.choice([2**63 - 1, 2**56 - 1, 2**53, 2**32, clock + 1, max(0, clock - 1), 0])
    return data[:at] + _encode_varint(extreme) + data[end:]


def _mutate(rng: random.Random, corpus: list[bytes]) -> bytes:
    base = bytearray(rng.choice(corpus))
    how = rng.randrange(6)
    if how == 0 and base:  # byte flips
        for _ in range(rng.randint(1, 4)):
            base[rng.randrange(len(base))] ^= 1 << rng.randrange(8)
    elif how == 1 and len(base) > 2:  # truncation
        del base[rng.randrange(1, len(base)) :]
    elif how == 2:  # a clock set to an extreme
        base = bytearray(_with_clock(rng, bytes(base)))
    elif how == 3 and base:  # a length (any varint) set to an extreme
        at = rng.randrange(len(base))
        base[at : at + 1] = rng.choice([b"\xff\xff\xff\xff\x0f", b"\xff\xff\xff\xff\xff\xff\xff\x7f", b"\x00"])
    elif how == 4:  # splice of two updates
        other = rng.choice(corpus)
        cut_a, cut_b = rng.randrange(len(base) + 1), rng.randrange(len(other) + 1)
        base = base[:cut_a] + bytearray(other[cut_b:])
    # how == 5: a real update unchanged
    return bytes(base) or b"\x00"


@pytest.fixture
async def lazy_server(tmp_path: Path) -> AsyncIterator[InProcessServer]:
    srv = await InProcessServer(create_embedded_app, make_settings(tmp_path, room_unload_grace=0.2)).start()
    try:
        yield srv
    finally:
        await srv.stop()


async def test_fuzzed_pairs_never_drop_a_connection_nor_brick_a_document(
    lazy_server: InProcessServer,
) -> None:
    srv = lazy_server
    rng = random.Random(SEED)
    corpus = _corpus()
    room, token, api = await _project(srv)
    url = f"/api/projects/{room.removeprefix('project-')}/yjs-document"
    try:
        for i in range(PAIRS):
            first, second = _mutate(rng, corpus), _mutate(rng, corpus)
            for body in (first, second):
                reply = await api.post(url, data=body, headers=OCTET)
                assert reply.status in (200, 400), (i, body.hex(), reply.status, reply.body)
            fuzzer = await srv.grant(room, f"fuzzer-{i}", "editor")
            results = await send_updates(srv.ws_url, room, fuzzer, [_mutate(rng, corpus), _mutate(rng, corpus)])
            assert all(code in ANSWERS for code in results), (i, results)
            if i % 10 == 9:  # the room unloads and reloads from what was stored
                assert (await api.get(url)).status == 200
                async with await YClient.connect(srv.ws_url, room, token) as joiner:
                    assert joiner.synced.is_set(), i
                await asyncio.sleep(0.5)
        await assert_usable(api, srv.ws_url, room, token, "survived;", restorable=False)
        # the run did exercise panics, not only pycrdt's ordinary refusals
        assert metric(await metrics_of(srv.http_url), "collab_document_rebuilds_total") > 0
        await srv.restart()
        await assert_usable(api, srv.ws_url, room, token, "restarted;", restorable=False)
    finally:
        await api.close()


async def test_fuzzed_pairs_across_instances_never_split_or_brick_the_room(cluster: Cluster) -> None:
    """Multi-instance: fuzzed pairs through the gateway and instance a; a client on b keeps
    its connection, and the two instances, the export and the database agree afterwards."""
    a_srv, b_srv, gateway = await cluster.pair()
    fuzzers = range(2, 2 + PAIRS // 5)  # one user per pair
    room = await cluster.new_project(1, *fuzzers)
    token = cluster.token(1)
    url = f"/api/projects/{room.removeprefix('project-')}/yjs-document"
    rng = random.Random(SEED + 1)
    corpus = _corpus()
    async with Api(gateway.http_url, token) as api, await YClient.connect(b_srv.ws_url, room, token) as on_b:
        for i in range(PAIRS // 5):
            for body in (_mutate(rng, corpus), _mutate(rng, corpus)):
                reply = await api.post(url, data=body, headers=OCTET)
                assert reply.status in (200, 400), (i, body.hex(), reply.status, reply.body)
            results = await send_updates(
                a_srv.ws_url, room, cluster.token(fuzzers[i]), [_mutate(rng, corpus), _mutate(rng, corpus)]
            )
            assert all(code in ANSWERS for code in results), (i, results)
        assert on_b.close_code is None
        on_b.append("from b;")
        async with await YClient.connect(a_srv.ws_url, room, token) as on_a:
            await on_a.wait_until(lambda: "from b;" in on_a.value)
            await YClient.wait_all([on_a, on_b], lambda: _same(on_a.doc, on_b.doc))
        await assert_usable(api, a_srv.ws_url, room, token, "after;", restorable=False)


def _same(one: Doc, other: Doc) -> bool:
    """The same clocks for every client (a state vector's entry order may differ)."""
    return _clocks(one.get_state()) == _clocks(other.get_state())


def _clocks(state_vector: bytes) -> dict[int, int]:
    count, at = _varint(state_vector, 0)
    clocks = {}
    for _ in range(count):
        client, at = _varint(state_vector, at)
        clocks[client], at = _varint(state_vector, at)
    return clocks

"""Awareness ownership and limits: the registry alone, then through the collab endpoint."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.embedded import create_app as create_embedded_app
from shared.awareness import (
    AwarenessEntry,
    AwarenessLimitExceeded,
    AwarenessLimits,
    AwarenessOwner,
    AwarenessRegistry,
    decode_awareness_update,
    encode_awareness_update,
    encode_in_chunks,
)
from shared.protocol import FrameKind, ProtocolError, encode_awareness, parse_frame
from tests.conftest import make_settings
from tests.support.app_server import InProcessServer
from tests.support.awareness_flood import flood_frame
from tests.support.cluster import Cluster, metric, metrics_of
from tests.support.yclient import YClient

pytestmark = pytest.mark.integration

ALICE = AwarenessEntry(7, 3, b'{"user":{"name":"alice"}}')
ALICE_CONN, BOB_CONN, MALLORY_CONN = (AwarenessOwner.local(connection_id) for connection_id in (1, 2, 3))


def _frame(*entries: AwarenessEntry) -> bytes:
    return encode_awareness(encode_awareness_update(entries))


# the registry -----------------------------------------------------------------


def test_a_client_id_belongs_to_its_first_announcer() -> None:
    registry = AwarenessRegistry()
    assert registry.apply(ALICE_CONN, [ALICE]).accepted == [ALICE]
    spoof = registry.apply(MALLORY_CONN, [AwarenessEntry(7, 99, b'{"user":{"name":"mallory"}}')])
    removal = registry.apply(MALLORY_CONN, [AwarenessEntry(7, 100, b"null")])
    assert spoof.accepted == [] and spoof.dropped["foreign"] == 1
    assert removal.accepted == [] and removal.dropped["foreign"] == 1
    assert registry.states() == [ALICE]
    # the owner still renews and removes its own state
    renewed = AwarenessEntry(7, 4, b'{"user":{"name":"alice"},"cursor":3}')
    assert registry.apply(ALICE_CONN, [renewed]).accepted == [renewed]
    assert registry.remove_owner(MALLORY_CONN) == []
    assert registry.remove_owner(ALICE_CONN) == [AwarenessEntry(7, 5, b"null")]
    # once the owner is gone the id is free again, but only with a newer clock
    assert registry.apply(MALLORY_CONN, [AwarenessEntry(7, 5, b"{}")]).dropped["stale"] == 1
    assert registry.apply(BOB_CONN, [AwarenessEntry(7, 6, b"{}")]).accepted


def test_owners_hold_at_most_max_client_ids_and_rooms_max_room_bytes() -> None:
    registry = AwarenessRegistry(AwarenessLimits(max_client_ids=2, max_room_bytes=100))
    applied = registry.apply(ALICE_CONN, [AwarenessEntry(i, 1, b"{}") for i in range(1, 4)])
    assert [e.client_id for e in applied.accepted] == [1, 2] and applied.dropped["client_ids"] == 1
    big = AwarenessEntry(10, 1, b'"' + b"x" * 90 + b'"')
    assert registry.apply(BOB_CONN, [big]).dropped["room_bytes"] == 1
    assert registry.bytes == sum(e.encoded_size for e in registry.states()) == 10
    assert len(encode_awareness_update(registry.states())) - 1 == registry.bytes
    registry.remove_owner(ALICE_CONN)
    assert registry.bytes == 0 and registry.apply(BOB_CONN, [big]).accepted == [big]


def test_a_removed_id_is_not_revived_by_a_late_echo_and_tombstones_are_bounded() -> None:
    from shared.awareness import MAX_TOMBSTONES

    registry = AwarenessRegistry(AwarenessLimits(max_client_ids=MAX_TOMBSTONES * 2))
    registry.apply(ALICE_CONN, [ALICE])
    registry.remove_owner(ALICE_CONN)
    assert registry.apply(BOB_CONN, [ALICE]).dropped["stale"] == 1  # bob's echo of alice's state
    many = [AwarenessEntry(1000 + i, 1, b"{}") for i in range(MAX_TOMBSTONES + 10)]
    registry.apply(MALLORY_CONN, many)
    registry.remove_owner(MALLORY_CONN)
    assert len(registry._removed) == MAX_TOMBSTONES


def test_remote_owners_are_instance_and_connection() -> None:
    registry = AwarenessRegistry()
    i, j = b"i" * 16, b"j" * 16
    registry.apply(AwarenessOwner.remote(i, 1), [ALICE])
    registry.apply(AwarenessOwner.remote(i, 2), [AwarenessEntry(8, 1, b"{}")])
    registry.apply(AwarenessOwner.remote(j, 1), [AwarenessEntry(9, 1, b"{}")])
    registry.apply(AwarenessOwner.local(1), [AwarenessEntry(10, 1, b"{}")])  # same connection id, this instance
    assert registry.apply(AwarenessOwner.remote(i, 2), [AwarenessEntry(7, 9, b"null")]).dropped["foreign"] == 1
    assert registry.remote_instances() == {i, j}
    assert registry.local_states() == {1: [AwarenessEntry(10, 1, b"{}")]}
    removed = registry.remove_instance(i)
    assert sorted(e.client_id for e in removed) == [7, 8]
    assert sorted(e.client_id for e in registry.states()) == [9, 10]
    assert registry.remote_instances() == {j}


def test_decoding_refuses_a_million_entries_before_reading_them() -> None:
    payload = parse_frame(flood_frame(1_000_000)).payload
    assert len(payload) > 6_500_000
    started = time.perf_counter()
    with pytest.raises(AwarenessLimitExceeded) as refused:
        decode_awareness_update(payload, AwarenessLimits(max_entries=100))
    assert time.perf_counter() - started < 0.005
    assert refused.value.reason == "entries" and not refused.value.too_big
    with pytest.raises(AwarenessLimitExceeded) as too_big:
        decode_awareness_update(
            encode_awareness_update([AwarenessEntry(1, 1, b"x" * 65)]), AwarenessLimits(max_state_bytes=64)
        )
    assert too_big.value.too_big
    with pytest.raises(ProtocolError):  # a count the bytes cannot hold, even without limits
        decode_awareness_update(b"\xc0\x84\x3d" + b"\x00" * 10)


def test_chunks_hold_at_most_max_entries() -> None:
    entries = [AwarenessEntry(i, 1, b"{}") for i in range(1, 251)]
    chunks = encode_in_chunks(entries, 100)
    assert [len(decode_awareness_update(c)) for c in chunks] == [100, 100, 50]
    assert encode_in_chunks([], 100) == []


# through the endpoint ------------------------------------------------------------


@pytest.fixture
async def small_server(tmp_path: Path) -> AsyncIterator[InProcessServer]:
    """Small awareness limits, so that every limit is reached with a few frames."""
    settings = make_settings(
        tmp_path,
        awareness_max_entries=3,
        awareness_max_state_bytes=256,
        awareness_max_client_ids=2,
        awareness_max_room_bytes=2048,
    )
    srv = await InProcessServer(create_embedded_app, settings).start()
    try:
        yield srv
    finally:
        await srv.stop()


async def _dropped(server: InProcessServer, reason: str) -> float:
    return metric(await metrics_of(server.http_url), f'collab_awareness_dropped_total{{reason="{reason}"}}')


async def test_a_viewer_cannot_change_or_remove_anothers_state(server: InProcessServer, project: str) -> None:
    alice_token = await server.grant(project, "alice")
    mallory_token = await server.grant(project, "mallory", "viewer")
    async with await YClient.connect(server.ws_url, project, alice_token) as alice, await YClient.connect(
        server.ws_url, project, alice_token
    ) as watcher, await YClient.connect(server.ws_url, project, mallory_token) as mallory:
        alice.set_awareness({"user": {"name": "alice"}})
        await watcher.wait_until(lambda: watcher.peers.get(alice.doc.client_id) == {"user": {"name": "alice"}})
        await mallory.wait_until(lambda: alice.doc.client_id in mallory.peers)
        victim = alice.doc.client_id
        await mallory.send_raw(_frame(AwarenessEntry(victim, 1000, b'{"user":{"name":"mallory"}}')))
        await mallory.send_raw(_frame(AwarenessEntry(victim, 1001, b"null")))
        mallory.set_awareness({"user": {"name": "mallory"}})  # her own state is relayed
        await watcher.wait_until(lambda: mallory.doc.client_id in watcher.peers)
        assert watcher.peers[victim] == {"user": {"name": "alice"}}
        assert await _dropped(server, "foreign") >= 2
        assert mallory.close_code is None
        async with await YClient.connect(server.ws_url, project, alice_token) as joiner:
            await joiner.wait_until(lambda: len(joiner.peers) == 2)
            assert joiner.peers[victim] == {"user": {"name": "alice"}}


async def test_limits_close_the_connection(small_server: InProcessServer, project: str) -> None:
    token = await small_server.grant(project, "alice")
    cases = [
        (_frame(*(AwarenessEntry(i, 1, b"{}") for i in range(1, 5))), 1008, "entries"),
        (_frame(AwarenessEntry(1, 1, json.dumps("x" * 300).encode())), 1009, "state_bytes"),
        (_frame(*(AwarenessEntry(i, 1, b"{}") for i in range(1, 4))), 1008, "client_ids"),
    ]
    for frame, code, reason in cases:
        async with await YClient.connect(small_server.ws_url, project, token) as client:
            await client.send_raw(frame)
            assert await client.wait_closed() == code
        assert await _dropped(small_server, reason) >= 1


async def test_a_joiner_gets_the_room_in_bounded_frames(small_server: InProcessServer, project: str) -> None:
    """5 connections x 2 ids of ~200 bytes: the room keeps what fits in 2048 bytes,
    and a joiner gets it in frames of at most 3 entries."""
    token = await small_server.grant(project, "alice")
    clients = [await YClient.connect(small_server.ws_url, project, token) for _ in range(6)]
    try:
        for n, client in enumerate(clients[:5]):
            state = json.dumps({"n": n, "pad": "x" * 190}).encode()
            await client.send_raw(_frame(AwarenessEntry(100 + 2 * n, 1, state), AwarenessEntry(101 + 2 * n, 1, state)))
        await clients[5].wait_until(lambda: len(clients[5].peers) >= 9)
        assert await _dropped(small_server, "room_bytes") >= 1
        async with await YClient.connect(small_server.ws_url, project, token) as joiner:
            await joiner.wait_until(lambda: len(joiner.peers) >= 9)
            assert len(joiner.peers) == 9  # 9 states of 216 encoded bytes fit in 2048
            assert joiner.frames.count(FrameKind.AWARENESS) == 3  # at most 3 entries per frame
    finally:
        for client in clients:
            await client.close()


async def test_ownership_holds_across_instances(cluster: Cluster) -> None:
    """Alice's id is owned on instance b by (a, alice's connection): mallory on b cannot
    change or remove it, mallory's own state still travels, and alice leaving removes hers everywhere."""
    a_srv, b_srv = await cluster.collab("a"), await cluster.collab("b")
    room = await cluster.new_project(1, 2)
    async with await YClient.connect(a_srv.ws_url, room, cluster.token(1)) as alice, await YClient.connect(
        b_srv.ws_url, room, cluster.token(1)
    ) as watcher_b, await YClient.connect(a_srv.ws_url, room, cluster.token(1)) as watcher_a, await YClient.connect(
        b_srv.ws_url, room, cluster.token(2)
    ) as mallory:
        alice.set_awareness({"user": {"name": "alice"}})
        victim = alice.doc.client_id
        await mallory.wait_until(lambda: victim in mallory.peers)
        await mallory.send_raw(_frame(AwarenessEntry(victim, 50, b'{"user":{"name":"mallory"}}')))
        await mallory.send_raw(_frame(AwarenessEntry(victim, 51, b"null")))
        mallory.set_awareness({"user": {"name": "mallory"}})
        for watcher in (watcher_a, watcher_b):
            await watcher.wait_until(lambda w=watcher: mallory.doc.client_id in w.peers)  # type: ignore[misc]
            assert watcher.peers[victim] == {"user": {"name": "alice"}}
        await alice.close()
        for watcher in (watcher_a, watcher_b):
            await watcher.wait_until(lambda w=watcher: victim not in w.peers)  # type: ignore[misc]
        assert mallory.doc.client_id in watcher_a.peers

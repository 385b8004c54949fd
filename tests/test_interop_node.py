"""Interoperability with the stock npm `y-websocket` client (`WebsocketProvider`
under Node with the `ws` polyfill), driven through `tests/node/client.mjs`."""

from __future__ import annotations

import uuid

import aiohttp
import pytest

from shared.awareness import (
    AwarenessEntry,
    AwarenessOwner,
    AwarenessRegistry,
    encode_awareness_update,
)
from shared.protocol import encode_awareness
from tests.support.app_server import InProcessServer
from tests.support.node_client import NodeYClient
from tests.support.yclient import YClient

pytestmark = pytest.mark.integration

QUIET_SECONDS = 35.0  # more than y-websocket's 30 s messageReconnectTimeout


def new_room() -> str:
    return f"project-{uuid.uuid4()}"


def _name_of(state: object) -> str | None:
    if isinstance(state, dict) and isinstance(state.get("user"), dict):
        return state["user"].get("name")
    return None


def _names(states: dict[int, object]) -> set[str]:
    return {name for name in map(_name_of, states.values()) if name is not None}


async def _rejected(server: InProcessServer, code: int) -> float:
    """The server's count of connections refused with `code`."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{server.http_url}/metrics") as resp,
    ):
        text = await resp.text()
    prefix = f'collab_rejected_total{{code="{code}"}} '
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return 0.0


async def test_stock_client_and_python_client_converge(server: InProcessServer) -> None:
    room = new_room()
    node_token = await server.grant(room, "node-user")
    py_token = await server.grant(room, "py-user")
    async with NodeYClient.start(server.ws_url, room, node_token, name="node") as node:
        await node.wait_synced()
        async with await YClient.connect(server.ws_url, room, py_token) as py:
            # node -> python
            await node.append("from node;")
            await py.wait_text("from node;")
            # python -> node
            py.append("from python;")
            await node.wait_text("from node;from python;")
            # concurrent edits from both sides converge to the same text
            await node.insert(0, "N>")
            py.insert(0, "P>")
            await py.wait_until(lambda: len(py.value) == len("N>P>from node;from python;"))
            final = py.value
            assert sorted(final[:4]) == sorted("N>P>")
            assert await node.wait_text(final) == final
            await node.delete(0, 4)
            await py.wait_text("from node;from python;")

    # a stock client joining later gets the whole document from the server alone
    async with NodeYClient.start(server.ws_url, room, node_token, name="late") as late:
        await late.wait_synced()
        assert await late.wait_text("from node;from python;") == "from node;from python;"


async def test_python_edits_reach_a_stock_client_that_joined_first(server: InProcessServer) -> None:
    room = new_room()
    token = await server.grant(room, "both")
    async with await YClient.connect(server.ws_url, room, token) as py:
        py.append("x" * 5000)  # a larger update than the small edits above
        async with NodeYClient.start(server.ws_url, room, token) as node:
            await node.wait_synced()
            await node.wait_text("x" * 5000)
            py.append("!")
            await node.wait_text("x" * 5000 + "!")


async def test_two_stock_clients_see_each_others_awareness(server: InProcessServer) -> None:
    room = new_room()
    token_a = await server.grant(room, "alice")
    token_b = await server.grant(room, "bob")
    async with NodeYClient.start(server.ws_url, room, token_a, name="alice") as alice:
        await alice.wait_synced()
        bob = await NodeYClient.open(server.ws_url, room, token_b, name="bob")
        try:
            await bob.wait_synced()
            await alice.wait_peers(lambda s: "bob" in _names(s))
            await bob.wait_peers(lambda s: "alice" in _names(s))
            # an awareness change travels too
            await bob.set_awareness({"user": {"name": "bob"}, "cursor": 7})
            states = await alice.wait_peers(
                lambda s: any(isinstance(v, dict) and v.get("cursor") == 7 for v in s.values())
            )
            assert bob.client_id is not None
            assert states[bob.client_id] == {"user": {"name": "bob"}, "cursor": 7}

            # bob vanishes without saying goodbye (no awareness removal of his
            # own): the server announces his removal when his socket closes
            assert bob._proc is not None
            bob._proc.kill()
            await alice.wait_peers(lambda s: bob.client_id not in s)
        finally:
            await bob.close()


async def test_a_stock_clients_state_survives_a_spoofer(server: InProcessServer) -> None:
    """A viewer sends entries for a stock client's id (a newer state, then its
    removal): the server drops them; every stock peer, and a later joiner,
    still sees the real state, and presence still vanishes on disconnect."""
    room = new_room()
    token_a = await server.grant(room, "alice")
    token_b = await server.grant(room, "bob")
    token_m = await server.grant(room, "mallory", "viewer")
    async with NodeYClient.start(server.ws_url, room, token_a, name="alice") as alice, NodeYClient.start(
        server.ws_url, room, token_b, name="bob"
    ) as bob, await YClient.connect(server.ws_url, room, token_m) as mallory:
        await alice.wait_synced()
        await bob.wait_synced()
        await alice.set_awareness({"user": {"name": "alice"}, "cursor": 3})
        await bob.wait_peers(lambda s: any(isinstance(v, dict) and v.get("cursor") == 3 for v in s.values()))
        await mallory.wait_until(lambda: alice.client_id in mallory.peers)
        victim = alice.client_id
        assert victim is not None
        for clock, state in ((1000, b'{"user":{"name":"mallory"},"cursor":666}'), (1001, b"null")):
            await mallory.send_raw(encode_awareness(encode_awareness_update([AwarenessEntry(victim, clock, state)])))
        mallory.set_awareness({"user": {"name": "mallory"}})  # after the spoofs, on the same socket
        states = await bob.wait_peers(lambda s: "mallory" in _names(s))
        assert states[victim] == {"user": {"name": "alice"}, "cursor": 3}
        assert mallory.close_code is None  # dropped, not a reason to close
        async with NodeYClient.start(server.ws_url, room, token_b, name="carol") as carol:
            await carol.wait_synced()
            states = await carol.wait_peers(lambda s: {"alice", "mallory"} <= _names(s))
            assert states[victim] == {"user": {"name": "alice"}, "cursor": 3}
        await mallory.close()
        await bob.wait_peers(lambda s: "mallory" not in _names(s))
        assert alice._proc is not None
        alice._proc.kill()
        await bob.wait_peers(lambda s: victim not in s)


def test_registry_ignores_a_stock_clients_echo_of_a_peer_state() -> None:
    """The stock client re-sends every peer state it receives (same clock); the
    server must keep the state with its author, so the author's disconnect
    still removes it."""
    registry = AwarenessRegistry()
    bob_conn, alice_conn, bob_conn_2 = (AwarenessOwner.local(connection_id) for connection_id in (1, 2, 3))
    bob = AwarenessEntry(7, 3, b'{"user":{"name":"bob"}}')
    registry.apply(bob_conn, [bob])
    registry.apply(alice_conn, [AwarenessEntry(9, 1, b'{"user":{"name":"alice"}}')])
    registry.apply(alice_conn, [bob])  # alice's echo of bob's state
    removal = registry.remove_owner(bob_conn)
    assert [(e.client_id, e.clock, e.removed) for e in removal] == [(7, 4, True)]
    # a late echo of the old state does not bring the ghost back
    registry.apply(alice_conn, [bob])
    assert registry.states() == [AwarenessEntry(9, 1, b'{"user":{"name":"alice"}}')]
    # bob himself, renewing with a newer clock on a new connection, is back
    registry.apply(bob_conn_2, [AwarenessEntry(7, 5, b'{"user":{"name":"bob"}}')])
    assert len(registry) == 2
    removal = registry.remove_owner(bob_conn_2)
    assert [(e.client_id, e.clock, e.removed) for e in removal] == [(7, 6, True)]


@pytest.mark.parametrize(
    "case, expected_code",
    [("bad_token", 4401), ("expired_token", 4401), ("bad_room", 4400), ("not_a_member", 4403)],
)
async def test_refused_stock_client_does_not_reconnect(
    server: InProcessServer, case: str, expected_code: int
) -> None:
    room = new_room()
    if case == "bad_token":
        token = "not-a-valid-token"
    elif case == "expired_token":
        await server.grant(room, "late")
        token = server.token("late", ttl=-120)
    elif case == "bad_room":
        token = await server.grant(room, "lost")
        room = "project-not-a-uuid"
    else:
        await server.grant(room, "owner")
        token = server.token(987654)  # a valid token of a user who is no member

    before = await _rejected(server, expected_code)
    async with NodeYClient.start(server.ws_url, room, token, max_backoff_ms=200) as node:
        close = await node.wait_event("close", code=expected_code)
        assert close["local"] is False
        closed = await node.wait_event("closed", code=expected_code)
        after_closed = node.events.index(closed) + 1
        # A reconnect would come within the 200 ms maximum backoff; give it
        # five times that to show up.
        with pytest.raises(TimeoutError):
            await node.wait_for(
                lambda e: e["event"] == "status" and e["status"] in ("connecting", "connected"),
                1.0,
                since=after_closed,
            )
        info = await node.info()
        assert info["should_connect"] is False and info["connected"] is False
        assert not any(e["event"] == "synced" for e in node.events)
    assert await _rejected(server, expected_code) == before + 1  # exactly one attempt


async def test_stock_client_stays_connected_in_a_quiet_room(server: InProcessServer) -> None:
    """Alone in a room for 35 s, the stock client receives nothing but the echo
    of its own 15 s awareness renewal; without that echo it would close the
    socket after 30 s of silence and reconnect."""
    room = new_room()
    token = await server.grant(room, "quiet")
    async with NodeYClient.start(server.ws_url, room, token, name="quiet") as node:
        await node.wait_synced()
        await node.append("before the quiet")
        quiet_from = node.mark()
        with pytest.raises(TimeoutError):
            # Fails at once if the provider closes or reconnects during the window.
            await node.wait_for(
                lambda e: (
                    e["event"] in ("close", "closed", "connection_error")
                    or (e["event"] == "status" and e["status"] != "connected")
                ),
                QUIET_SECONDS,
                since=quiet_from,
            )
        info = await node.info()
        assert info["connected"] is True and info["synced"] is True
        assert [e for e in node.events[quiet_from:] if e["event"] in ("status", "synced")] == []

        # the connection is live, not just open: edits flow both ways on it
        async with await YClient.connect(server.ws_url, room, await server.grant(room, "py")) as py:
            await py.wait_text("before the quiet")
            py.append(" and after")
            await node.wait_text("before the quiet and after")
            await node.append("!")
            await py.wait_text("before the quiet and after!")
        assert not any(e["event"] in ("close", "closed") for e in node.events)

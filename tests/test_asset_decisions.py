"""The asset coordinator's pure parts: the control-frame codec, who is asked, queueing, limits."""

from __future__ import annotations

import json

import pytest

from services.collab.assets import codec
from services.collab.assets.codec import BadControl, ControlRefused
from services.collab.assets.decisions import (
    Asks,
    CoordinatorLimits,
    member_key,
    pick_bulk_holder,
    pick_holder,
    split_member,
)
from services.collab.assets.store import MemoryStore
from services.collab.close_codes import CloseCode

pytestmark = pytest.mark.unit


def test_control_frames_are_0xff_binary_or_json_text() -> None:
    assert codec.is_control(b"\xff{}")
    assert codec.is_control(' {"type": "x"}')
    assert not codec.is_control(b"\x00\x00\x01\x00")  # a Yjs sync frame
    assert not codec.is_control(b"\x7f{}")  # another opaque type
    assert not codec.is_control("plain text")
    assert not codec.is_control(b"")


def test_decoding_a_frame_and_its_refusals() -> None:
    message = codec.decode_control(b"\xff" + json.dumps({"type": "request-asset", "data": {"assetId": "a"}}).encode(), 1000)
    assert (message.type, message.data) == ("request-asset", {"assetId": "a"})
    with pytest.raises(ControlRefused) as too_big:
        codec.decode_control(b"\xff" + b" " * 1000, 1000)
    assert too_big.value.code is CloseCode.MESSAGE_TOO_BIG
    for bad in (b"\xff{not json", b"\xff\xfe\xfd", b"\xff[1, 2]", b'\xff{"data": {}}', '{"type": 3}'):
        with pytest.raises(ControlRefused) as refused:
            codec.decode_control(bad, 1000)
        assert refused.value.code is CloseCode.INVALID_DATA
    with pytest.raises(BadControl):
        codec.decode_control(b'\xff{"type": "x", "data": [1]}', 1000)


def test_asset_ids_are_checked_and_bounded() -> None:
    assert codec.asset_ids(["a-1", "a-1", "b_2"], 5) == ["a-1", "b_2"]
    for bad in ("a", [1], ["../etc"], ["x" * 65], [""]):
        with pytest.raises(BadControl):
            codec.asset_ids(bad, 5)
    with pytest.raises(ControlRefused) as refused:
        codec.asset_ids(["a"] * 6, 5)
    assert refused.value.code is CloseCode.POLICY_VIOLATION


def test_the_client_reads_two_messages_from_text_frames_and_the_rest_from_binary() -> None:
    resync = codec.encode("trigger-resync", {"reason": "new-client-joined", "projectUuid": "p"})
    assert isinstance(resync, str)
    assert json.loads(resync) == {"type": "trigger-resync", "reason": "new-client-joined", "projectUuid": "p"}
    assert isinstance(codec.encode("request-sync-state", {}), str)
    ready = codec.encode("asset-ready", {"assetId": "a"})
    assert isinstance(ready, bytes) and ready[0] == 0xFF
    assert json.loads(ready[1:]) == {"type": "asset-ready", "data": {"assetId": "a"}}


def test_member_keys_round_trip_and_refuse_garbage() -> None:
    assert split_member(member_key("ab12", 7)) == ("ab12", 7)
    for bad in ("", "ab12", "ab12/", "/7", "ab12/x"):
        with pytest.raises(ValueError):
            split_member(bad)


def test_who_is_asked() -> None:
    assert pick_holder(["b/1", "a/2"], exclude=["a/2"]) == "b/1"
    assert pick_holder(["b/1", "a/2"]) == "a/2"  # the same for the same holders
    assert pick_holder(["a/2"], exclude=["a/2"]) is None  # only the requester holds it
    assert pick_bulk_holder({"a/1": 3, "b/1": 7, "c/1": 7}) == "b/1"
    assert pick_bulk_holder({"a/1": 0}) is None
    assert pick_bulk_holder({}) is None


def test_asks_follow_the_current_holder_and_are_bounded() -> None:
    asks = Asks(limit=2, timeout=10)
    assert asks.record("p", "x", "a/1", now=0)
    assert asks.record("p", "x", "b/1", now=5)  # re-asked of another holder
    ask = asks.get("p", "x")
    assert ask is not None and ask.holder == "b/1" and ask.tried == {"a/1"}
    assert not asks.overdue(ask, 14) and asks.overdue(ask, 15)
    assert asks.record("p", "y", "a/1", now=0)
    assert not asks.record("p", "z", "a/1", now=0)  # full
    assert asks.resolve("p", "x") is not None and len(asks) == 1


async def test_holdings_replace_and_the_project_bound_ignores_new_ids() -> None:
    store = MemoryStore(CoordinatorLimits(ids_per_project=3))
    first = await store.announce("p", "local/1", ["a", "b"])
    assert (first.kept, first.dropped) == (2, 0)
    second = await store.announce("p", "local/2", ["b", "c", "d", "e"])  # b is already counted
    assert (second.kept, second.dropped) == (2, 2)
    assert await store.holders("p", "b") == ["local/1", "local/2"]
    await store.announce("p", "local/1", [])  # a new announcement replaces the old one
    assert await store.holders("p", "a") == []
    assert await store.holder_counts("p") == {"local/2": 2}


async def test_waiting_is_bounded_and_served_once() -> None:
    store = MemoryStore(CoordinatorLimits(pending_per_project=2))
    assert await store.wait("p", "x", "local/1")
    assert await store.wait("p", "x", "local/1")  # the same wait again costs nothing
    assert await store.wait("p", "y", "local/1")
    assert not await store.wait("p", "z", "local/2")  # the project's bound
    announced = await store.announce("p", "local/3", ["x", "q"])
    assert announced.waited == ["x"]
    assert await store.take_waiters("p", "x") == ["local/1"]
    assert await store.take_waiters("p", "x") == []
    assert await store.wait("p", "z", "local/2")  # room again


async def test_a_leaving_socket_takes_its_holdings_waits_and_membership() -> None:
    store = MemoryStore(CoordinatorLimits())
    assert await store.join("p", "local/1") == ["local/1"]
    assert await store.join("p", "local/2") == ["local/1", "local/2"]  # oldest first
    await store.announce("p", "local/1", ["a"])
    await store.wait("p", "b", "local/1")
    assert await store.holding([("p", "local/1", "a"), ("p", "local/1", "b")]) == [True, False]
    await store.leave("p", "local/1")
    assert await store.members("p") == ["local/2"]
    assert await store.holders("p", "a") == []
    assert await store.waiters("p", "b") == []
    assert await store.holding([("p", "local/1", "a")]) == [False]

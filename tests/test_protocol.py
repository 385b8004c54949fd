"""The y-websocket codec against byte vectors made by the real npm y-protocols/yjs
(tests/node/gen_vectors.mjs wrote tests/data/protocol_vectors.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pycrdt import Doc, Text

from shared.awareness import (
    AwarenessEntry,
    AwarenessOwner,
    AwarenessRegistry,
    decode_awareness_update,
    encode_awareness_update,
)
from shared.protocol import (
    FrameKind,
    ProtocolError,
    encode_awareness,
    encode_permission_denied,
    encode_query_awareness,
    encode_sync_step1,
    encode_sync_step2,
    encode_sync_update,
    parse_frame,
)

pytestmark = pytest.mark.unit

VECTORS = json.loads((Path(__file__).parent / "data" / "protocol_vectors.json").read_text())
BY_NAME = {v["name"]: v for v in VECTORS}
SYNC_KINDS = {0: FrameKind.SYNC_STEP1, 1: FrameKind.SYNC_STEP2, 2: FrameKind.SYNC_UPDATE}
ENCODERS = {0: encode_sync_step1, 1: encode_sync_step2, 2: encode_sync_update}


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_npm_vector_parses_and_reencodes_identically(vector: dict) -> None:
    raw = bytes.fromhex(vector["hex"])
    frame = parse_frame(raw)
    if vector["message_type"] == 0:
        assert frame.kind is SYNC_KINDS[vector["sync_type"]]
        assert frame.payload == bytes.fromhex(vector["payload_hex"])
        assert ENCODERS[vector["sync_type"]](frame.payload) == raw
    elif vector["message_type"] == 1:
        assert frame.kind is FrameKind.AWARENESS
        assert encode_awareness(frame.payload) == raw
        entries = decode_awareness_update(frame.payload)
        expected = vector["awareness"]
        assert [(e.client_id, e.clock) for e in entries] == [
            (a["client_id"], a["clock"]) for a in expected
        ]
        assert [json.loads(e.state) for e in entries] == [a["state"] for a in expected]
        assert encode_awareness_update(entries) == frame.payload
    elif vector["message_type"] == 2:
        assert frame.kind is FrameKind.AUTH
        assert frame.payload.decode() == vector["reason"]
        assert encode_permission_denied(vector["reason"]) == raw
    else:
        assert frame.kind is FrameKind.QUERY_AWARENESS
        assert encode_query_awareness() == raw


@pytest.mark.parametrize("vector", [v for v in VECTORS if "text" in v], ids=lambda v: v["name"])
def test_npm_updates_apply_in_pycrdt(vector: dict) -> None:
    doc: Doc = Doc()
    for name in vector.get("after", []) + [vector["name"]]:
        doc.apply_update(parse_frame(bytes.fromhex(BY_NAME[name]["hex"])).payload)
    assert str(doc.get("t", type=Text)) == vector["text"]


def test_large_update_uses_a_multibyte_length() -> None:
    raw = bytes.fromhex(BY_NAME["sync_update_large"]["hex"])
    assert raw[2] & 0x80 and raw[3] & 0x80  # 3-byte varint length
    assert len(parse_frame(raw).payload) > 16 * 1024


def test_python_doc_round_trip() -> None:
    doc: Doc = Doc()
    text = doc.get("t", type=Text)
    text += "hello"
    frame = parse_frame(encode_sync_update(doc.get_update()))
    other: Doc = Doc()
    other.apply_update(frame.payload)
    assert str(other.get("t", type=Text)) == "hello"
    step1 = parse_frame(encode_sync_step1(other.get_state()))
    assert step1.kind is FrameKind.SYNC_STEP1 and step1.payload == other.get_state()


@pytest.mark.parametrize(
    "raw",
    [b"", b"\x00", b"\x00\x02", b"\x00\x02\x05ab", b"\x80", b"\x00\x07\x00", b"\x01\x05\x01", b"\x02\x00\x09ab"],
    ids=["empty", "sync-no-subtype", "update-no-length", "update-short", "truncated-type", "bad-subtype", "awareness-short", "auth-short"],
)
def test_malformed_frames_raise(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_frame(raw)


def test_unknown_types_are_opaque() -> None:
    for raw in (b"\x04hello", b"\x7f", b"\xff\x01"):
        frame = parse_frame(raw)
        assert frame.kind is FrameKind.OPAQUE and frame.payload == raw


def test_malformed_awareness_update_raises() -> None:
    with pytest.raises(ProtocolError):
        decode_awareness_update(b"\x02\x0a\x01\x02{}")  # announces two entries, has one


def test_awareness_registry_tracks_owners_and_removes() -> None:
    registry = AwarenessRegistry()
    registry.apply(AwarenessOwner.local(1), [AwarenessEntry(1, 1, b'{"n":1}'), AwarenessEntry(2, 1, b'{"n":2}')])
    registry.apply(AwarenessOwner.local(2), [AwarenessEntry(3, 4, b'{"n":3}')])
    registry.apply(AwarenessOwner.local(1), [AwarenessEntry(1, 0, b'{"stale":1}')])  # older clock ignored
    snapshot = registry.states()
    assert {(e.client_id, e.state) for e in snapshot} == {(1, b'{"n":1}'), (2, b'{"n":2}'), (3, b'{"n":3}')}
    removal = registry.remove_owner(AwarenessOwner.local(1))
    assert {(e.client_id, e.clock, e.removed) for e in removal} == {(1, 2, True), (2, 2, True)}
    assert registry.remove_owner(AwarenessOwner.local(1)) == []
    assert len(registry) == 1
    registry.apply(AwarenessOwner.local(2), [AwarenessEntry(3, 5, b"null")])
    assert registry.states() == [] and registry.bytes == 0


def test_compaction_policy_bounds_write_amplification() -> None:
    from shared.compaction import CompactionPolicy

    policy = CompactionPolicy(max_updates=50, max_bytes=1000, min_log_ratio=2.0, max_rows=500)
    assert not policy.due(0, 0, 0)
    assert not policy.due(49, 900, 0)  # below both thresholds
    assert policy.due(50, 100, 0)  # first compaction: no snapshot yet
    assert not policy.due(60, 300, 200)  # log smaller than twice the snapshot: not worth rewriting it
    assert policy.due(60, 400, 200)
    assert policy.due(500, 10, 10**6)  # too many rows slow loading down whatever the sizes
    assert policy.due_when_idle(3, 50, 20) and not policy.due_when_idle(3, 50, 100)
    assert not policy.due_when_idle(0, 0, 0)
    # one update and no snapshot (a large upload) is already the whole document in one piece
    assert not policy.due(1, 10**7, 0) and not policy.due_when_idle(1, 10**7, 0)
    assert policy.due(2, 10**7, 0) and policy.due(1, 10**7, 10)

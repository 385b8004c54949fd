"""The Redis envelope (pure)."""

from __future__ import annotations

import pytest

from shared.envelope import (
    EnvelopeError,
    Kind,
    decode_envelope,
    encode_envelope,
    instance_id_bytes,
    split_sync_reply,
    split_sync_request,
    sync_reply_body,
    sync_request_body,
)

pytestmark = pytest.mark.unit

SENDER = bytes(range(16))


@pytest.mark.parametrize("kind", list(Kind))
def test_round_trip(kind: Kind) -> None:
    body = SENDER[::-1] + b"payload" if kind is Kind.SYNC_REPLY else b"payload"
    envelope = decode_envelope(encode_envelope(SENDER, kind, body))
    assert (envelope.sender, envelope.kind, envelope.body) == (SENDER, kind, body)


@pytest.mark.parametrize(
    "raw",
    [b"", b"short", SENDER, SENDER + b"\x63body", SENDER + bytes((Kind.SYNC_REPLY,)) + b"tooshort"],
    ids=["empty", "short", "no-kind", "unknown-kind", "reply-without-target"],
)
def test_malformed_envelopes_raise(raw: bytes) -> None:
    with pytest.raises(EnvelopeError):
        decode_envelope(raw)


def test_sync_bodies() -> None:
    assert split_sync_request(sync_request_body(b"\x01\x02\x03", ask_back=True)) == (True, b"\x01\x02\x03")
    assert split_sync_request(sync_request_body(b"\x00", ask_back=False)) == (False, b"\x00")
    with pytest.raises(EnvelopeError):
        split_sync_request(b"")
    assert split_sync_reply(sync_reply_body(SENDER, b"diff")) == (SENDER, b"diff")


def test_instance_ids_are_16_bytes_and_stable() -> None:
    assert instance_id_bytes("collab-1") == instance_id_bytes("collab-1") != instance_id_bytes("collab-2")
    assert len(instance_id_bytes("collab-1")) == 16
    assert instance_id_bytes(SENDER.hex()) == SENDER

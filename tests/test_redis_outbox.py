"""The outbox's batching (pure): one send's content per project."""

from __future__ import annotations

import pytest

from services.collab.redis_outbox import batch_outboxes
from shared.envelope import Kind, decode_envelope

pytestmark = pytest.mark.unit

SENDER = bytes(range(16))


def test_backlog_goes_to_the_log_only_and_items_become_envelopes_in_order() -> None:
    outboxes = batch_outboxes(
        SENDER,
        [("p", b"backlogged-1"), ("q", b"backlogged-2")],
        [("p", Kind.UPDATE, b"u1"), ("p", Kind.AWARENESS, b"a1"), ("q", Kind.OPAQUE, b"o1")],
    )
    assert set(outboxes) == {"p", "q"}
    assert outboxes["p"].log_only == [b"backlogged-1"] and outboxes["q"].log_only == [b"backlogged-2"]
    decoded = [decode_envelope(e) for e in outboxes["p"].envelopes]
    assert [(e.sender, e.kind, e.body) for e in decoded] == [(SENDER, Kind.UPDATE, b"u1"), (SENDER, Kind.AWARENESS, b"a1")]
    assert [decode_envelope(e).kind for e in outboxes["q"].envelopes] == [Kind.OPAQUE]


def test_nothing_to_send_is_no_project() -> None:
    assert batch_outboxes(SENDER, [], []) == {}

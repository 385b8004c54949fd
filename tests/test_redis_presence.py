"""Presence's absence tracking (pure): an instance is gone after a whole TTL without a heartbeat."""

from __future__ import annotations

import pytest

from services.collab.redis_presence import Absences

pytestmark = pytest.mark.unit

A, B = b"a" * 16, b"b" * 16


def test_an_instance_is_gone_once_missing_for_a_whole_ttl_and_reported_once() -> None:
    absences = Absences(ttl=3.0)
    assert absences.observe({A: False, B: True}, now=10.0) == []
    assert absences.observe({A: False, B: True}, now=12.9) == []
    assert absences.observe({A: False, B: False}, now=13.0) == [A]
    assert absences.observe({A: False, B: False}, now=14.0) == []  # A starts over; B missing since 13
    assert absences.observe({A: False, B: False}, now=16.0) == [B]


def test_a_heartbeat_seen_again_resets_the_wait() -> None:
    absences = Absences(ttl=3.0)
    absences.observe({A: False}, now=10.0)
    absences.observe({A: True}, now=11.0)  # it re-set its key (Redis lost its data, say)
    assert absences.observe({A: False}, now=12.0) == []
    assert absences.observe({A: False}, now=14.9) == []
    assert absences.observe({A: False}, now=15.0) == [A]


def test_instances_no_longer_of_interest_and_a_clear_are_forgotten() -> None:
    absences = Absences(ttl=3.0)
    absences.observe({A: False}, now=10.0)
    absences.observe({}, now=11.0)  # A owns no state in any room any more
    assert absences.observe({A: False}, now=13.5) == []  # its wait started again at 13.5
    absences.clear()
    assert absences.observe({A: False}, now=16.0) == []
    assert absences.observe({A: False}, now=19.0) == [A]

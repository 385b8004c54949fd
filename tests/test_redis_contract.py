"""The Redis contract (pure): names, and log positions across Redis lifetimes."""

from __future__ import annotations

import pytest

from shared.redis_contract import (
    LOG_STREAM_PATTERN,
    channel,
    format_log_position,
    format_stream_id,
    instance_key,
    log_stream,
    parse_stream_id,
    project_of_channel,
    project_of_log_stream,
    throttle_key,
    written_up_to,
)

pytestmark = pytest.mark.unit

PROJECT = "0b5e4a1c-6f0e-4c8e-9d6a-2f0f8f3c1a77"
RUN_ID = "5d1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c"


def test_names_are_the_documented_ones() -> None:
    assert channel(PROJECT) == f"exe:yjs:project-{PROJECT}"
    assert log_stream(PROJECT) == f"exe:yjs:log:project-{PROJECT}"
    assert LOG_STREAM_PATTERN == "exe:yjs:log:project-*"
    assert instance_key(bytes(range(16))) == "exe:yjs:instance:000102030405060708090a0b0c0d0e0f"
    assert throttle_key("2001:db8::1") == "exe:throttle:ws:2001:db8::1"


def test_names_give_back_their_project_and_nothing_else() -> None:
    assert project_of_channel(channel(PROJECT).encode()) == PROJECT
    assert project_of_log_stream(log_stream(PROJECT).encode()) == PROJECT
    assert project_of_channel("exe:yjs:instances") is None
    assert project_of_channel(log_stream(PROJECT)) is None
    assert project_of_log_stream(channel(PROJECT)) is None


def test_stream_ids_parse_and_format() -> None:
    assert parse_stream_id(b"1700000000000-3") == (1700000000000, 3)
    assert parse_stream_id("1700000000000") == (1700000000000, 0)
    assert format_stream_id((1700000000000, 3)) == "1700000000000-3"
    assert parse_stream_id(b"9-10") > parse_stream_id(b"9-9")  # compared as numbers, not text


def test_a_log_position_is_trusted_only_under_the_same_redis_lifetime() -> None:
    stored = format_log_position(RUN_ID, (1700000000000, 3))
    assert stored == f"{RUN_ID[:16]}/1700000000000-3"
    assert written_up_to(stored, RUN_ID) == (1700000000000, 3)
    assert written_up_to(stored, "f" * 40) == (-1, -1)  # another server lifetime: take every entry
    assert written_up_to("", RUN_ID) == (-1, -1)  # never written
    assert written_up_to("1700000000000-3", RUN_ID) == (-1, -1)  # written before lifetimes were recorded

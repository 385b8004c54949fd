"""The Redis contract (pure): names, and log positions across Redis lifetimes."""

from __future__ import annotations

import pytest

from shared.redis_contract import (
    SINGLE_REDIS,
    RedisLayout,
    format_log_position,
    format_stream_id,
    instance_key,
    parse_stream_id,
    throttle_key,
    written_up_to,
)

pytestmark = pytest.mark.unit

PROJECT = "0b5e4a1c-6f0e-4c8e-9d6a-2f0f8f3c1a77"
RUN_ID = "5d1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c"


def test_single_redis_keeps_the_seeds_names() -> None:
    layout = SINGLE_REDIS
    assert layout.channel(PROJECT) == f"exe:yjs:project-{PROJECT}"
    assert layout.log_stream(PROJECT) == f"exe:yjs:log:project-{PROJECT}"
    assert layout.log_stream_pattern == "exe:yjs:log:project-*"
    assert layout.dirty_stream(layout.partition(PROJECT)) == "exe:yjs:dirty"
    assert layout.stored_envelope_prefix(0) == "exe:yjs:envelope:"
    assert layout.stored_envelope_seq(0) == "exe:yjs:envelope-seq"
    assert layout.assets_prefix(PROJECT) == f"exe:assets:{PROJECT}:"
    assert layout.publish_command == "PUBLISH"
    assert instance_key(bytes(range(16))) == "exe:yjs:instance:000102030405060708090a0b0c0d0e0f"
    assert throttle_key("2001:db8::1") == "exe:throttle:ws:2001:db8::1"


def hash_tag(key: str) -> str:
    """What Redis Cluster hashes: the text between the first `{` and the next `}`."""
    start = key.index("{")
    return key[start + 1 : key.index("}", start)]


def test_a_cluster_puts_a_projects_keys_and_its_partitions_queue_in_one_slot() -> None:
    layout = RedisLayout.cluster(16)
    partition = layout.partition(PROJECT)
    assert 0 <= partition < 16
    names = [
        layout.channel(PROJECT),
        layout.log_stream(PROJECT),
        layout.dirty_stream(partition),
        layout.stored_envelope_prefix(partition) + "7",
        layout.stored_envelope_seq(partition),
    ]
    assert {hash_tag(name) for name in names} == {f"p{partition}"}
    assert hash_tag(layout.assets_prefix(PROJECT) + "members") == PROJECT
    assert layout.channel(PROJECT) == f"exe:yjs:{{p{partition}}}:project-{PROJECT}"
    assert layout.publish_command == "SPUBLISH"


def test_partitions_spread_projects() -> None:
    layout = RedisLayout.cluster(8)
    partitions = {layout.partition(f"{n:08d}-0000-4000-8000-000000000000") for n in range(200)}
    assert partitions == set(range(8))
    with pytest.raises(ValueError):
        RedisLayout.cluster(0)


@pytest.mark.parametrize("layout", [SINGLE_REDIS, RedisLayout.cluster(16)])
def test_names_give_back_their_project_and_nothing_else(layout: RedisLayout) -> None:
    assert layout.project_of_channel(layout.channel(PROJECT).encode()) == PROJECT
    assert layout.project_of_log_stream(layout.log_stream(PROJECT).encode()) == PROJECT
    assert layout.project_of_channel("exe:yjs:instances") is None
    assert layout.project_of_channel(layout.log_stream(PROJECT)) is None
    assert layout.project_of_log_stream(layout.channel(PROJECT)) is None


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

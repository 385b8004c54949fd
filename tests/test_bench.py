"""The benchmark harness (bench/) measures what it claims to.

Pure accounting (percentiles, expected deliveries, the ledger, histogram
quantiles); a tiny scenario against a fake relay that drops every 10th update
(the loss must show in the delivery ratio, exactly); and the tiny scenario
against the project in single-instance mode, as `make bench` runs it; the
cluster target's Redis command count on a real Redis Cluster.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest
from aiohttp import WSMsgType, web
from redis.cluster import RedisCluster

from bench.accounting import (
    LatencySummary,
    Ledger,
    PhaseTally,
    delivery_ratio,
    expected_deliveries,
    histogram_quantile,
    make_token,
    parse_prometheus,
    percentile,
    sustained,
)
from bench.run import LoadRun, ServerProbe
from bench.scenarios import BenchConfig, client_specs, scenario_a
from bench.targets import SingleTarget, Target, command_calls
from shared.protocol import encode_sync_step2, encode_sync_update
from stack.processes import free_port
from stack.redis_cluster import LocalRedisCluster
from stack.redis_part import ClusterRedis

# Tiers per test (tests/conftest.py): the pure accounting is `unit`, everything that starts a
# server (the fake relay, the project) is `bench`.

# ---------------------------------------------------------------------------
# pure accounting
# ---------------------------------------------------------------------------


@pytest.mark.unit
def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([7], 99) == 7
    assert math.isnan(percentile([], 50))
    summary = LatencySummary.of_micros([3000, 1000, 2000, 4000])
    assert (summary.count, summary.p50, summary.max, summary.mean) == (4, 2.0, 4.0, 2.5)


@pytest.mark.unit
def test_expected_deliveries_count_every_other_client_of_the_room() -> None:
    room_of = {1: 0, 2: 0, 3: 0, 4: 1, 5: 1}  # a room of 3, a room of 2
    sent = {1: 10, 2: 5, 3: 0, 4: 7, 5: 1}
    assert expected_deliveries(sent, room_of) == (10 + 5) * 2 + (7 + 1) * 1
    assert delivery_ratio(27, 38) == pytest.approx(27 / 38)
    assert delivery_ratio(0, 0) == 1.0


@pytest.mark.unit
def test_ledger_counts_distinct_deliveries_and_flags_the_rest() -> None:
    ledger = Ledger({1: 0, 2: 0, 3: 1})

    def frame(*tokens: str) -> bytes:
        return encode_sync_update(b"".join(t.encode() for t in tokens))

    now = 5_000_000
    assert (
        ledger.record(
            2,
            frame(make_token(1, 1, 1, now - 2_000_000), make_token(1, 1, 2, now - 1_000_000)),
            now,
        )
        == 2
    )
    assert ledger.record(2, frame(make_token(1, 1, 1, now)), now) == 0  # the same edit again
    ledger.record(2, frame(make_token(1, 3, 1, now)), now)  # from another room
    ledger.record(2, frame(make_token(1, 2, 1, now)), now)  # its own edit echoed
    ledger.record(2, frame(make_token(1, 99, 1, now)), now)  # a client nobody started
    tally = ledger.tally(1)
    assert (tally.received, tally.duplicates, tally.misrouted, tally.echoes, ledger.unknown) == (
        2,
        1,
        1,
        1,
        1,
    )
    assert sorted(tally.latencies_us) == [1000, 2000]
    assert PhaseTally.from_wire(tally.to_wire()).latencies_us == tally.latencies_us


@pytest.mark.unit
def test_sustained_needs_both_ratio_and_p99() -> None:
    from bench.accounting import PhaseResult

    def result(received: int, p99: float) -> PhaseResult:
        latency = LatencySummary(received, 1.0, 1.0, p99, p99, 1.0)
        return PhaseResult(4, 1, 1.0, 1.0, 100, 300, received, 0, 0, 0, latency)

    assert sustained(result(300, 10.0))
    assert sustained(result(297, 99.0))
    assert not sustained(result(296, 10.0))  # 0.9867 < 0.99
    assert not sustained(result(300, 101.0))


@pytest.mark.unit
def test_histogram_quantile_interpolates_like_promql() -> None:
    text = "\n".join(  # noqa: FLY002 - one Prometheus sample per line
        [
            "# TYPE persistence_lag_seconds histogram",
            'persistence_lag_seconds_bucket{le="0.01"} 50.0',
            'persistence_lag_seconds_bucket{le="0.1"} 90.0',
            'persistence_lag_seconds_bucket{le="1.0"} 100.0',
            'persistence_lag_seconds_bucket{le="+Inf"} 100.0',
            "persistence_lag_seconds_count 100.0",
        ]
    )
    from bench.accounting import histogram_buckets

    buckets = histogram_buckets(parse_prometheus(text), "persistence_lag_seconds")
    assert histogram_quantile(buckets, 0.5) == pytest.approx(0.01)
    assert histogram_quantile(buckets, 0.7) == pytest.approx(0.01 + 0.09 * 0.5)
    assert histogram_quantile(buckets, 0.99) == pytest.approx(0.1 + 0.9 * 0.9)


@pytest.mark.unit
def test_clients_are_dealt_over_instances_per_client_or_per_room() -> None:
    target = Target()
    target.ws_bases = ["ws://a", "ws://b", "ws://c"]

    def bases(affinity: bool) -> list[list[str]]:
        specs = client_specs(target, ["r0", "r1", "r2", "r3"], 2, affinity=affinity)
        return [[s.url.rsplit("/", 1)[0] for s in specs if s.room == r] for r in range(4)]

    assert bases(False) == [
        ["ws://a", "ws://b"],
        ["ws://c", "ws://a"],
        ["ws://b", "ws://c"],
        ["ws://a", "ws://b"],
    ]
    assert bases(True) == [["ws://a"] * 2, ["ws://b"] * 2, ["ws://c"] * 2, ["ws://a"] * 2]


# ---------------------------------------------------------------------------
# a fake relay: the harness must catch what it drops
# ---------------------------------------------------------------------------


class FakeRelay(Target):
    """A minimal y-websocket relay that forwards updates to the rest of the room and
    drops every `drop_every`-th one (0: drops nothing)."""

    name = "fake"

    def __init__(self, drop_every: int) -> None:
        super().__init__()
        self.drop_every = drop_every
        self.updates = 0
        self.dropped = 0
        self.rooms: dict[str, set[web.WebSocketResponse]] = {}
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        peers = self.rooms.setdefault(request.match_info["room"], set())
        peers.add(ws)
        try:
            async for message in ws:
                if message.type is not WSMsgType.BINARY:
                    continue
                data = message.data
                if data[:2] == b"\x00\x00":  # SyncStep1: the document is always empty here
                    await ws.send_bytes(encode_sync_step2(b"\x00\x00"))
                elif data[:2] == b"\x00\x02":
                    self.updates += 1
                    if self.drop_every and self.updates % self.drop_every == 0:
                        self.dropped += 1
                        continue
                    for peer in list(peers):
                        if peer is not ws and not peer.closed:
                            await peer.send_bytes(data)
        finally:
            peers.discard(ws)
        return ws

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/yjs/{room}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.ws_bases = [f"ws://127.0.0.1:{port}/yjs"]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.mark.bench
@pytest.mark.parametrize("drop_every", [0, 10])
async def test_a_relay_that_drops_updates_is_caught(drop_every: int) -> None:
    relay = FakeRelay(drop_every)
    await relay.start()
    try:
        rooms = await relay.new_rooms(2, users=3)
        specs = client_specs(relay, rooms, 3)
        async with LoadRun(specs, workers=0) as run:
            opened = await run.open()
            assert opened["opened"] == 6
            result = await run.phase(
                1, rate=20, duration=1.0, probe=ServerProbe(), drain_timeout=1.0, lead_in=0.05
            )
    finally:
        await relay.stop()
    assert result.edits_sent == relay.updates > 0
    assert result.expected == result.edits_sent * 2  # rooms of 3: two other clients each
    assert result.received == result.expected - relay.dropped * 2  # every drop costs two deliveries
    assert result.duplicates == result.misrouted == result.echoes == 0
    assert result.latency.count == result.received
    if drop_every:
        assert relay.dropped >= result.edits_sent // 10 > 0
        assert result.ratio == pytest.approx(1 - relay.dropped / result.edits_sent)
        assert result.ratio < 0.95
    else:
        assert result.ratio == 1.0


# ---------------------------------------------------------------------------
# the tiny scenario against the project (single-instance mode, SQLite)
# ---------------------------------------------------------------------------


@pytest.mark.bench
async def test_tiny_scenario_a_against_the_single_instance_collab() -> None:
    target = SingleTarget(database="sqlite", log_level="WARNING")
    cfg = BenchConfig(
        workers=1, a_rooms=2, a_clients=3, a_rate=10.0, a_duration=1.0, drain_timeout=5.0
    )
    lines: list[str] = []
    await target.start()
    try:
        result = await asyncio.wait_for(scenario_a(target, cfg, lines.append), 60)
    finally:
        await target.stop()
    phase = result["phase"]
    assert result["open"]["opened"] == 6 and result["open"]["failed"] == 0
    assert phase["edits_sent"] > 0
    assert phase["expected"] == phase["edits_sent"] * 2
    assert phase["received"] == phase["expected"]
    assert phase["ratio"] == 1.0
    assert phase["duplicates"] == phase["misrouted"] == phase["echoes"] == 0
    assert 0 < phase["latency"]["p50"] <= phase["latency"]["p99"] <= phase["latency"]["max"]
    assert phase["server_cpu_s"]["collab"] > 0
    assert phase["cpu_us_per_delivery"] > 0
    assert phase["loadgen_cpu_s"] > 0
    assert result["peak_rss_kb"]["collab"] > 10_000
    # every edit is in the server's document, as a fresh client sees it
    convergence = dict(result["convergence"])
    document_bytes = convergence.pop("document_bytes")
    assert convergence == {
        "views": 2,
        "complete": 2,
        "missing": 0,
        "unexpected": 0,
        "errors": [],
    }
    # each edit is one token of ~20 characters in the documents (what (e) compares compaction with)
    assert document_bytes > 20 * phase["edits_sent"]


@pytest.mark.bench
async def test_tiny_scenario_h_against_the_single_instance_collab() -> None:
    """(h) with a small document: the upload lands, every join (warm, and cold from the
    database) gets all of it, the other room's round trips are counted and the server's
    RSS is read."""
    from bench.large import scenario_h
    from bench.targets import JoinDocument

    target = SingleTarget(database="sqlite", log_level="WARNING")
    document = JoinDocument.build(2_000, pending=0)
    lines: list[str] = []
    await target.start()
    try:
        result = await asyncio.wait_for(scenario_h(target, 2, document, lines.append), 120)
    finally:
        await target.stop()
    assert result["document_bytes"] == len(document.full)
    assert len(result["join_samples_ms"]) == 2 and result["join_ms"] > 0
    assert len(result["cold_join_samples_ms"]) == 2 and result["cold_join_ms"] > 0
    assert result["other_room_round_trips"] > 0
    assert (
        0
        < result["other_room_p50_ms"]
        <= result["other_room_p99_ms"]
        <= result["other_room_max_ms"]
    )
    assert result["peak_rss_kb"] >= result["rss_before_kb"] > 10_000


@pytest.mark.bench
async def test_tiny_big_room_scenarios_against_the_single_instance_collab() -> None:
    """(f) and (i) tiny: one room, every delivery counted, awareness on; (g) tiny: every
    storm client gets the whole document, and the server's CPU for the storm is read."""
    from bench.bigroom import scenario_big_room, scenario_g
    from bench.targets import JoinDocument

    target = SingleTarget(database="sqlite", log_level="WARNING")
    cfg = BenchConfig(workers=1, drain_timeout=5.0).scaled(0.05)
    # enough work for the CPU counters (10 ms ticks) to move
    cfg.f_rate, cfg.g_clients, cfg.g_updates = 10.0, 20, 4_000
    document = JoinDocument.build(cfg.g_updates, pending=0)
    lines: list[str] = []
    await target.start()
    try:
        f = await asyncio.wait_for(
            scenario_big_room(
                target, cfg, lines.append, key="f", clients=cfg.f_clients, editors=cfg.f_clients
            ),
            60,
        )
        i = await asyncio.wait_for(
            scenario_big_room(
                target, cfg, lines.append, key="i", clients=cfg.i_clients, editors=cfg.i_editors
            ),
            60,
        )
        g = await asyncio.wait_for(scenario_g(target, cfg, document, lines.append), 120)
    finally:
        await target.stop()
    for result, clients, editors in (
        (f, cfg.f_clients, cfg.f_clients),
        (i, cfg.i_clients, cfg.i_editors),
    ):
        phase = result["phase"]
        assert result["open"]["opened"] == clients and phase["rooms"] == 1
        assert phase["edits_sent"] > 0
        assert phase["expected"] == phase["edits_sent"] * (clients - 1)
        assert phase["received"] == phase["expected"] and phase["ratio"] == 1.0
        assert phase["closed_clients"] == 0  # the awareness updates were accepted
        assert 0 < phase["latency"]["p50"] <= phase["latency"]["p99"] <= phase["latency"]["max"]
        assert phase["cpu_us_per_delivery"] > 0 and phase["loadgen_cpu_s"] > 0
        assert result["convergence"]["complete"] == result["convergence"]["views"] == 1
        assert result["editors"] == editors
    assert g["open"]["opened"] == g["clients"] == cfg.g_clients and g["complete"]
    assert g["synced_ms"]["count"] == cfg.g_clients
    assert 0 < g["synced_ms"]["p50"] <= g["synced_ms"]["p99"] <= g["synced_ms"]["max"]
    # a tiny storm may take the server less than one clock tick (10 ms) of CPU
    assert g["relay_cpu_s"] >= 0 and g["loadgen_cpu_s"] > 0
    assert min(g["open"]["synced_bytes"]) >= len(document.full) // 2


@pytest.mark.bench
def test_redis_commands_of_a_cluster_are_counted_once_over_its_masters(tmp_path: Path) -> None:
    """The cluster target's commands per update: every master's, no replica's replay."""
    with LocalRedisCluster(tmp_path / "redis-cluster") as cluster:
        part = ClusterRedis([(node.port, node.process) for node in cluster.nodes])
        masters = part.master_urls()
        assert sorted(masters) == sorted(node.url for node in cluster.masters())
        before = command_calls(masters)
        with RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port) as client:
            for i in range(30):
                client.set(f"key-{i}", "v")
        assert len({cluster.master_of(f"key-{i}").port for i in range(30)}) == 3
        assert command_calls(masters)["set"] - before.get("set", 0) == 30

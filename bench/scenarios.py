"""The scenarios of `make bench` (issue 6), each run against one target.

(a) moderate load: 20 rooms x 4 clients x 5 edits/s for 20 s.
(b) throughput: 10 rooms x 10 clients; edits/s per client raised in steps
    until the delivery ratio drops below 0.99 or p99 passes 100 ms (or the
    load generator cannot keep the schedule); the highest sustained
    deliveries/s is the result. The first failing step is retried once, so
    a burst of other work on the machine does not end the climb.
(c) join: a ~5 MB document built from 20k updates; time from connect to
    synced for a fresh client, median of 5: warm (the room is open) and, on
    the project, cold from the database, compacted and with 10k pending
    updates.
(d) idle: 10,000 authenticated connections to one server process (100 rooms,
    10 users per room with 10 connections each, so the server's access
    checks are partly cached); RSS per connection and the CPU it burns while
    nobody types.
(e) persistence (targets with the worker): lag from accept to commit and
    write amplification, measured during (a).
(f), (i), (g) one big room and a join storm: see `bench/bigroom.py`.
(h) large document: ~20 MB from 80k updates, uploaded through the socket as
    one update, then fresh joins (median of 3); another room's round-trip p99
    meanwhile, and the server's peak RSS per MB of document (`bench/large.py`).

`BenchConfig.scaled(f)` shrinks everything for quick runs and tests.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from bench.accounting import (
    PhaseResult,
    histogram_buckets,
    histogram_delta,
    histogram_quantile,
    parse_prometheus,
    sustained,
)
from bench.large import scenario_h
from bench.loadgen import ClientSpec
from bench.probe import check_documents, join
from bench.procstat import (
    cpu_seconds,
    machine_busy_seconds,
    own_cpu_seconds,
    peak_rss_kb,
    raise_nofile,
    reset_peak_rss,
    rss_kb,
)
from bench.profile import Profiler
from bench.run import LoadRun
from bench.targets import JoinDocument, Target
from shared.compaction import CompactionPolicy

Log = Callable[[str], None]

DEFAULT_B_RATES = (2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 80.0, 100.0, 125.0)


@dataclass
class BenchConfig:
    workers: int = 2  # load processes
    # a room's clients all on one instance (room r on instance r mod n), as nginx's room
    # hash deals them, instead of each room's clients round-robin over the instances
    room_affinity: bool = False
    drain_timeout: float = 3.0
    settle: float = 1.0  # pause between scenarios
    # (a)
    a_rooms: int = 20
    a_clients: int = 4
    a_rate: float = 5.0
    a_duration: float = 20.0
    # (b)
    b_rooms: int = 10
    b_clients: int = 10
    b_rates: tuple[float, ...] = DEFAULT_B_RATES
    b_step: float = 4.0
    b_budget: float = 60.0
    b_min_ratio: float = 0.99
    b_max_p99_ms: float = 100.0
    # (c)
    c_updates: int = 20_000
    c_pending: int = 10_000
    c_samples: int = 5
    # (d)
    d_connections: int = 10_000
    d_rooms: int = 100
    d_users_per_room: int = (
        10  # each user holds connections/rooms/users connections (tabs) in its room
    )
    d_idle_window: float = 5.0
    d_connect_concurrency: int = 100
    # (h)
    h_updates: int = 80_000
    h_samples: int = 3
    # (f) and its 500-client variant (i): one room, awareness on (bench/bigroom.py)
    f_clients: int = 100
    f_rate: float = 1.0
    f_duration: float = 20.0
    f_awareness_period: float = 2.0
    i_clients: int = 500
    i_editors: int = 10
    # (g) join storm
    g_clients: int = 50
    g_updates: int = 16_000  # ~4 MB
    # before each scenario, wait (up to quiet_wait s, at most quiet_budget s per run) until the
    # rest of the machine uses less than quiet_threshold of a core: other work skews every number
    quiet_wait: float = 30.0
    quiet_budget: float = 120.0
    quiet_threshold: float = 0.3
    # profiling (py-spy) of the hot path during (a) and (b)
    profile_dir: Path | None = None

    def scaled(self, factor: float) -> BenchConfig:
        """Everything smaller (durations, clients, connections, document) by `factor`."""
        if factor >= 1:
            return self
        f = max(factor, 0.01)
        return replace(
            self,
            a_rooms=max(2, round(self.a_rooms * f)),
            a_duration=max(1.0, self.a_duration * f),
            b_rooms=max(2, round(self.b_rooms * f)),
            b_step=max(1.0, self.b_step * f),
            b_budget=max(5.0, self.b_budget * f),
            c_updates=max(200, round(self.c_updates * f)),
            c_pending=max(100, round(self.c_pending * f)),
            c_samples=max(1, round(self.c_samples * f)) if f < 0.5 else self.c_samples,
            d_connections=max(50, round(self.d_connections * f)),
            d_rooms=max(2, round(self.d_rooms * f)),
            d_idle_window=max(1.0, self.d_idle_window * f),
            h_updates=max(2_000, round(self.h_updates * f)),
            f_clients=max(3, round(self.f_clients * f)),
            f_duration=max(1.0, self.f_duration * f),
            i_clients=max(4, round(self.i_clients * f)),
            i_editors=max(2, round(self.i_editors * f)),
            g_clients=max(2, round(self.g_clients * f)),
            g_updates=max(200, round(self.g_updates * f)),
        )

    def to_json(self) -> dict:
        data = asdict(self)
        data["profile_dir"] = str(self.profile_dir) if self.profile_dir else None
        return data


def client_specs(
    target: Target, rooms: list[str], per_room: int, *, sends: bool = True, affinity: bool = False
) -> list[ClientSpec]:
    """`per_room` clients in each room, user k for the k-th, dealt round-robin over the
    instances (`affinity`: each room's clients on one instance, rooms round-robin)."""
    specs: list[ClientSpec] = []
    for r, room in enumerate(rooms):
        for k in range(per_room):
            deal = r if affinity else len(specs)
            base = target.ws_bases[deal % len(target.ws_bases)]
            specs.append(
                ClientSpec(len(specs) + 1, r, target.url(room, user=k + 1, base=base), sends)
            )
    return specs


def room_views(target: Target, rooms: list[str]) -> dict[int, list[str]]:
    """Every instance's view of every room (for the convergence check)."""
    return {
        r: [target.url(room, user=1, base=base) for base in target.ws_bases]
        for r, room in enumerate(rooms)
    }


def profiler_for(target: Target, cfg: BenchConfig, scenario: str) -> Profiler | None:
    if cfg.profile_dir is None or target.kind not in ("project-single", "project-multi"):
        return None
    pids = {label: target.probe.processes[label][0] for label in target.probe.hot_path}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    profiler = Profiler(cfg.profile_dir, f"{stamp}-{target.name}-{scenario}", pids)
    return profiler if profiler.start() else None


# ---------------------------------------------------------------------------
# (a) and (e)
# ---------------------------------------------------------------------------


async def measured_phase(
    target: Target,
    cfg: BenchConfig,
    log: Log,
    key: str,
    rooms: list[str],
    specs: list[ClientSpec],
    *,
    rate: float,
    duration: float,
    awareness_period: float = 0.0,
) -> tuple[PhaseResult, dict[str, Any]]:
    """Open `specs`, run one measured phase (profiled with --profile), then check every
    room's document: the phase, and the scenario's result without the other details."""
    target.probe.reset_peaks()
    profiler = profiler_for(target, cfg, key)
    async with LoadRun(specs, workers=cfg.workers) as run:
        opened = await run.open()
        log(
            f"  ({key}) {opened['opened']}/{len(specs)} clients connected in {opened['seconds']:.1f}s"
        )
        if opened["failed"]:
            log(f"  ({key}) connect failures: {opened['errors']}")
        phase = await run.phase(
            1,
            rate=rate,
            duration=duration,
            probe=target.probe,
            drain_timeout=cfg.drain_timeout,
            awareness_period=awareness_period,
        )
        peaks = target.probe.peak_rss_kb()
        convergence = await check_documents(room_views(target, rooms), run.sent_by_room())
    profile = profiler.stop() if profiler else None
    result: dict[str, Any] = {
        "open": opened,
        "phase": phase.to_json(),
        "peak_rss_kb": peaks,
        "convergence": convergence,
    }
    if profile:
        result["profile"] = profile
    return phase, result


async def scenario_a(target: Target, cfg: BenchConfig, log: Log) -> dict[str, Any]:
    rooms = await target.new_rooms(cfg.a_rooms, users=cfg.a_clients)
    specs = client_specs(target, rooms, cfg.a_clients, affinity=cfg.room_affinity)
    metrics_before = await target.persistence_metrics()
    calls_before = await target.redis_command_calls()
    phase, result = await measured_phase(
        target, cfg, log, "a", rooms, specs, rate=cfg.a_rate, duration=cfg.a_duration
    )
    if metrics_before is not None:
        result["persistence"] = await _persistence(
            target, metrics_before, phase.edits_sent, result["convergence"]["document_bytes"], log
        )
    if calls_before is not None:
        calls_after = await target.redis_command_calls() or {}
        result["redis"] = redis_cost(calls_before, calls_after, phase, log)
    return result


def redis_cost(
    before: dict[str, int], after: dict[str, int], phase: PhaseResult, log: Log
) -> dict[str, Any]:
    """What each accepted update of (a) cost Redis: commands (every process's, including the
    worker's and those a script runs) and the redis-server's CPU, per edit sent."""
    calls = {name: after[name] - before.get(name, 0) for name in after}
    calls = {name: n for name, n in sorted(calls.items(), key=lambda kv: -kv[1]) if n > 0}
    edits = phase.edits_sent or 1
    cpu_us = {
        label: seconds * 1e6 / edits
        for label, seconds in phase.server_cpu_s.items()
        if not label.startswith("collab")
    }
    result = {
        "edits_sent": phase.edits_sent,
        "commands_per_update": sum(calls.values()) / edits,
        "commands": calls,
        "cpu_us_per_update": cpu_us,
        "note": "INFO commandstats delta over (a) and the persistence drain after it, per edit sent; "
        "cpu_us_per_update: each non-collab process's CPU during (a)'s phase, per edit sent",
    }
    log(
        f"  (a) Redis: {result['commands_per_update']:.1f} commands per update; CPU per update "
        + ", ".join(f"{label} {us:.0f} µs" for label, us in cpu_us.items())
    )
    return result


async def _persistence(
    target: Target,
    before_text: str,
    edits: int,
    document_bytes: int,
    log: Log,
    timeout: float = 20.0,
) -> dict[str, Any]:
    """(e): wait until the worker committed every edit of (a), then read its metrics.

    Amplification during a 20 s run depends on whether a compaction happened
    to fall inside it; the lifetime figure the compaction policy converges to
    (see `CompactionPolicy`) is reported next to it: 1 + 1/ratio + c, c being
    the documents' encoded size over the bytes of updates that built them.
    """
    before = parse_prometheus(before_text)
    deadline = time.monotonic() + timeout
    while True:
        after = parse_prometheus(await target.persistence_metrics() or "")
        persisted = after.get("persistence_updates_total", 0) - before.get(
            "persistence_updates_total", 0
        )
        if persisted >= edits or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    buckets = histogram_delta(
        histogram_buckets(after, "persistence_lag_seconds"),
        histogram_buckets(before, "persistence_lag_seconds"),
    )
    lag_count = delta("persistence_lag_seconds_count")
    update_bytes = delta("persistence_update_bytes_total")
    db_bytes = delta("persistence_db_bytes_written_total")
    result = {
        "edits_sent": edits,
        "updates_persisted": persisted,
        "lag_p50_ms": histogram_quantile(buckets, 0.50) * 1000,
        "lag_p99_ms": histogram_quantile(buckets, 0.99) * 1000,
        "lag_mean_ms": delta("persistence_lag_seconds_sum") / lag_count * 1000
        if lag_count
        else math.nan,
        "lag_buckets": buckets,
        "update_bytes": update_bytes,
        "db_bytes_written": db_bytes,
        "write_amplification": db_bytes / update_bytes if update_bytes else math.nan,
        "snapshot_over_history": document_bytes / update_bytes if update_bytes else math.nan,
        "lifetime_amplification": 1
        + 1 / CompactionPolicy().min_log_ratio
        + document_bytes / update_bytes
        if update_bytes
        else math.nan,
        "compactions": delta("persistence_compactions_total"),
        "transactions": delta("persistence_batches_total"),
        "note": "lag quantiles interpolated in the worker's persistence_lag_seconds histogram buckets "
        "(from XADD to COMMIT); amplification = db bytes written / update bytes, during (a)",
    }
    log(
        f"  (e) persisted {persisted:.0f}/{edits}; lag p50 {result['lag_p50_ms']:.1f} ms p99 {result['lag_p99_ms']:.1f} ms;"
        f" write amplification {result['write_amplification']:.2f}"
        f" (over a document's life: {result['lifetime_amplification']:.2f})"
    )
    return result


# ---------------------------------------------------------------------------
# (b)
# ---------------------------------------------------------------------------


async def scenario_b(target: Target, cfg: BenchConfig, log: Log) -> dict[str, Any]:
    rooms = await target.new_rooms(cfg.b_rooms, users=cfg.b_clients)
    specs = client_specs(target, rooms, cfg.b_clients, affinity=cfg.room_affinity)
    target.probe.reset_peaks()
    steps: list[PhaseResult] = []
    stop_reason = "all steps sustained"
    best: PhaseResult | None = None
    profiler = profiler_for(target, cfg, "b")
    async with LoadRun(specs, workers=cfg.workers) as run:
        opened = await run.open()
        started = time.monotonic()
        phase = 0
        rates = list(cfg.b_rates)
        retried = False
        while rates:
            rate = rates[0]
            if time.monotonic() - started + cfg.b_step + 1.0 > cfg.b_budget:
                stop_reason = f"time budget ({cfg.b_budget:.0f} s) used"
                break
            phase += 1
            step = await run.phase(
                phase,
                rate=rate,
                duration=cfg.b_step,
                probe=target.probe,
                drain_timeout=min(2.0, cfg.drain_timeout),
            )
            steps.append(step)
            nominal = len(specs) * rate * cfg.b_step
            ok = sustained(step, min_ratio=cfg.b_min_ratio, max_p99_ms=cfg.b_max_p99_ms)
            log(
                f"  (b) {rate:g}/s per client: {step.deliveries_per_s:,.0f} deliveries/s"
                f" ratio {step.ratio:.4f} p99 {step.latency.p99:.1f} ms,"
                f" {step.cpu_us_per_delivery():.1f} us/delivery, load CPU"
                f" {step.loadgen_cpu_percent:.0f}%, other CPU {step.other_cpu_percent:.0f}%"
                f"{'' if ok else '  <- not sustained'}"
            )
            if ok and (best is None or step.deliveries_per_s > best.deliveries_per_s):
                best = step
            if not ok:
                if not retried:  # one retry per run: a burst of other work must not end it
                    retried = True
                    continue
                stop_reason = (
                    f"delivery ratio < {cfg.b_min_ratio:.2f}"
                    if step.ratio < cfg.b_min_ratio
                    else f"p99 > {cfg.b_max_p99_ms:.0f} ms"
                )
                break
            if step.edits_sent < 0.95 * nominal:
                stop_reason = "load generator could not keep the schedule (sent < 95% of nominal)"
                break
            rates.pop(0)
        peaks = target.probe.peak_rss_kb()
        convergence = await check_documents(room_views(target, rooms), run.sent_by_room())
    profile = profiler.stop() if profiler else None
    instances = len(target.probe.hot_path) or 1
    result: dict[str, Any] = {
        "open": opened,
        "steps": [s.to_json() for s in steps],
        "stop_reason": stop_reason,
        "best": best.to_json() if best else None,
        "best_deliveries_per_s": best.deliveries_per_s if best else 0.0,
        "best_deliveries_per_s_per_instance": (best.deliveries_per_s / instances) if best else 0.0,
        "peak_rss_kb": peaks,
        "convergence": convergence,
    }
    if profile:
        result["profile"] = profile
    return result


# ---------------------------------------------------------------------------
# (c)
# ---------------------------------------------------------------------------


def _median_join(samples: list) -> dict[str, Any]:
    return {
        "synced_ms": statistics.median(s.synced_ms for s in samples),
        "applied_ms": statistics.median(s.applied_ms for s in samples),
        "open_ms": statistics.median(s.open_ms for s in samples),
        "samples_synced_ms": [round(s.synced_ms, 2) for s in samples],
        "update_bytes": samples[0].update_bytes,
        "text_ok": all(s.text_length == samples[0].text_length for s in samples),
        "text_length": samples[0].text_length,
    }


async def push_document(url: str, updates: list[bytes]) -> Any:
    """A holder client that pushes `updates` into a room and stays connected (keeps it open)."""
    import aiohttp

    from shared.protocol import encode_sync_step1, encode_sync_update

    session = aiohttp.ClientSession()
    ws = await session.ws_connect(url, max_msg_size=0, compress=0)
    await ws.send_bytes(encode_sync_step1(b"\x00"))
    for update in updates:
        await ws.send_bytes(encode_sync_update(update))
    # the server handles one socket's frames in order: once it answers this
    # SyncStep1, it has applied every update above
    from pycrdt import Doc

    probe_state = Doc().get_state()
    await ws.send_bytes(encode_sync_step1(probe_state))
    seen_step2 = 0
    async with asyncio.timeout(120):
        while seen_step2 < 2:  # the answer to our first SyncStep1, then to the second
            message = await ws.receive()
            if message.type is aiohttp.WSMsgType.BINARY and message.data[:2] == b"\x00\x01":
                seen_step2 += 1
            elif message.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.ERROR,
            ):
                raise ConnectionError(f"holder closed while pushing (code {ws.close_code})")
    return session, ws


async def scenario_c(
    target: Target, cfg: BenchConfig, document: JoinDocument, log: Log
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "document_updates": len(document.updates),
        "document_update_bytes": document.update_bytes,
        "document_bytes": len(document.full),
        "pending_updates": document.pending,
        "samples": cfg.c_samples,
    }
    cold = await target.prepare_cold_rooms(document, cfg.c_samples)
    if cold is not None:
        for variant, rooms in cold.items():
            samples = [(await join(target.url(room)))[0] for room in rooms]
            result[f"cold_{variant}"] = _median_join(samples)
            log(
                f"  (c) cold {variant}: median {result[f'cold_{variant}']['synced_ms']:.1f} ms to synced"
            )
        # warm: the room stays loaded while a holder is connected
        for variant, rooms in cold.items():
            session, holder = await push_document(target.url(rooms[0]), [])
            try:
                samples = [(await join(target.url(rooms[0])))[0] for _ in range(cfg.c_samples)]
            finally:
                await holder.close()
                await session.close()
            result[f"warm_{variant}"] = _median_join(samples)
            log(
                f"  (c) warm ({variant} in the store): median {result[f'warm_{variant}']['synced_ms']:.1f} ms"
            )
    else:
        for variant, updates in (("compacted", [document.full]), ("pending", document.updates)):
            room = (await target.new_rooms(1, users=1))[0]
            session, holder = await push_document(target.url(room), updates)
            try:
                samples = [(await join(target.url(room)))[0] for _ in range(cfg.c_samples)]
            finally:
                await holder.close()
                await session.close()
            result[f"warm_{variant}"] = _median_join(samples)
            how = (
                "pushed as one update"
                if variant == "compacted"
                else f"pushed as {len(updates)} updates"
            )
            log(f"  (c) warm ({how}): median {result[f'warm_{variant}']['synced_ms']:.1f} ms")
    return result


# ---------------------------------------------------------------------------
# (d)
# ---------------------------------------------------------------------------


async def scenario_d(
    target: Target, cfg: BenchConfig, log: Log, *, restart: bool = True
) -> dict[str, Any]:
    if restart:  # a fresh process: RSS before/after measures the connections, not earlier scenarios
        await target.restart_idle_target()
    label, base, pid = target.idle_target()
    per_room = max(1, cfg.d_connections // cfg.d_rooms)
    users = max(1, min(per_room, cfg.d_users_per_room))
    rooms = await target.new_rooms(cfg.d_rooms, users=users)
    specs = [
        ClientSpec(
            r * per_room + k + 1, r, target.url(room, user=k % users + 1, base=base), sends=False
        )
        for r, room in enumerate(rooms)
        for k in range(per_room)
    ]
    nofile = raise_nofile()
    if pid is not None:
        try:
            nofile = raise_nofile(pid, len(specs) + 2048)
        except Exception as exc:  # optional tuning; the run goes on without it  # noqa: BLE001
            log(f"  (d) could not raise the server's RLIMIT_NOFILE: {exc}")
        reset_peak_rss(pid)
    await asyncio.sleep(0.5)
    rss_before = rss_kb(pid) if pid else 0
    async with LoadRun(specs, workers=cfg.workers) as run:
        opened = await run.open(concurrency=cfg.d_connect_concurrency, timeout=120.0)
        log(
            f"  (d) {opened['opened']}/{len(specs)} idle connections open in {opened['seconds']:.1f}s"
            + (f"; failures: {opened['errors']}" if opened["failed"] else "")
        )
        await asyncio.sleep(2.0)
        rss_after = rss_kb(pid) if pid else 0
        cpu_before = cpu_seconds(pid) if pid else 0.0
        await asyncio.sleep(cfg.d_idle_window)
        cpu_after = cpu_seconds(pid) if pid else 0.0
        peak = peak_rss_kb(pid) if pid else 0
        status = await run.status()
    count = max(1, opened["opened"])
    result = {
        "process": label,
        "connections": len(specs),
        "rooms": len(rooms),
        "users_per_room": users,
        "open": opened,
        "server_nofile": nofile,
        "rss_before_kb": rss_before,
        "rss_after_kb": rss_after,
        "peak_rss_kb": peak,
        "rss_per_connection_kb": (rss_after - rss_before) / count if pid else math.nan,
        "idle_cpu_percent": 100.0 * (cpu_after - cpu_before) / cfg.d_idle_window
        if pid
        else math.nan,
        "closed_while_idle": status["closed"],
        "close_codes": status["close_codes"],
    }
    log(
        f"  (d) RSS {rss_before / 1024:.0f} -> {rss_after / 1024:.0f} MB: "
        f"{result['rss_per_connection_kb']:.1f} KB/connection; idle CPU {result['idle_cpu_percent']:.0f}%"
    )
    return result


async def background_load(target: Target, window: float = 1.0) -> float:
    """CPU (in cores) the machine spends on anything but the target and this process."""
    busy, servers, own = machine_busy_seconds(), sum(target.probe.cpu().values()), own_cpu_seconds()
    await asyncio.sleep(window)
    busy = machine_busy_seconds() - busy
    ours = sum(target.probe.cpu().values()) - servers + own_cpu_seconds() - own
    return max(0.0, (busy - ours) / window)


class QuietWaiter:
    """Waits for a quiet machine before a scenario, within a budget for the whole run."""

    def __init__(self, cfg: BenchConfig) -> None:
        self.cfg = cfg
        self.spent = 0.0

    async def wait(self, target: Target, log: Log) -> float:
        started = time.monotonic()
        limit = min(self.cfg.quiet_wait, max(0.0, self.cfg.quiet_budget - self.spent))
        other = await background_load(target)
        announced = False
        while other > self.cfg.quiet_threshold and time.monotonic() - started < limit:
            if not announced:
                log(
                    f"  other processes use {other:.0%} of a core: waiting up to {limit:.0f}s for a quiet machine"
                )
                announced = True
            other = await background_load(target)
        self.spent += time.monotonic() - started
        if other > self.cfg.quiet_threshold:
            log(
                f"  WARNING: starting with {other:.0%} of a core used by other processes (numbers will be noisy)"
            )
        return other


SCENARIOS = (
    "a",
    "b",
    "f",
    "i",
    "c",
    "g",
    "h",
    "d",
)  # the order they run in; (d) restarts its server


async def run_target(
    target: Target,
    scenarios: set[str],
    cfg: BenchConfig,
    log: Log,
    document: Callable[[], JoinDocument],
    quiet: QuietWaiter | None = None,
    large_document: Callable[[], JoinDocument] | None = None,
    storm_document: Callable[[], JoinDocument] | None = None,
) -> dict[str, Any]:
    """Every selected scenario against one started target; failures are recorded, not raised."""
    from bench.bigroom import scenario_big_room, scenario_g  # it builds on this module

    results: dict[str, Any] = {}
    quiet = quiet or QuietWaiter(cfg)
    wanted = set(scenarios)
    if "e" in wanted:
        wanted.add("a")
    for name in SCENARIOS:
        if name not in wanted:
            continue
        log(f"[{target.name}] scenario ({name})")
        background = await quiet.wait(target, log)
        started = time.monotonic()
        try:
            if name == "a":
                results["a"] = await scenario_a(target, cfg, log)
                if "persistence" in results["a"]:
                    results["e"] = results["a"].pop("persistence")
            elif name == "b":
                results["b"] = await scenario_b(target, cfg, log)
            elif name == "f":
                results["f"] = await scenario_big_room(
                    target, cfg, log, key="f", clients=cfg.f_clients, editors=cfg.f_clients
                )
            elif name == "i":
                results["i"] = await scenario_big_room(
                    target, cfg, log, key="i", clients=cfg.i_clients, editors=cfg.i_editors
                )
            elif name == "g":
                assert storm_document is not None, "scenario (g) needs its document"
                results["g"] = await scenario_g(target, cfg, storm_document(), log)
            elif name == "c":
                results["c"] = await scenario_c(target, cfg, document(), log)
            elif name == "h":
                assert large_document is not None, "scenario (h) needs its document"
                results["h"] = await scenario_h(target, cfg.h_samples, large_document(), log)
            elif name == "d":
                results["d"] = await scenario_d(target, cfg, log)
        except Exception as exc:  # one scenario failing must not lose the others  # noqa: BLE001
            import traceback

            log(f"  ({name}) FAILED: {type(exc).__name__}: {exc}")
            results[name] = {
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(),
            }
        results.setdefault("seconds", {})[name] = round(time.monotonic() - started, 1)
        if background is not None:
            results.setdefault("background_cores_at_start", {})[name] = round(background, 2)
        await asyncio.sleep(cfg.settle)
    return results


__all__ = ["SCENARIOS", "BenchConfig", "QuietWaiter", "client_specs", "run_target"]

"""The big-room scenarios of `make bench` (issue 17).

(f) one room x 100 clients x 1 edit/s for 20 s, awareness on: every client
    also moves its cursor (an awareness update) every 2 s.
(i) (f)'s large variant: one room x 500 clients, 10 of them edit (1 edit/s,
    cursor every 2 s), 490 only watch.
(g) join storm: 50 fresh clients connect at once to a room holding a ~4 MB
    document (kept open by a holder client); time from connect to synced per
    client, and the server's CPU seconds for the whole storm.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from bench.probe import join
from bench.run import LoadRun, cpu_delta
from bench.scenarios import (
    BenchConfig,
    Log,
    client_specs,
    measured_phase,
    profiler_for,
    push_document,
    room_views,
)
from bench.targets import JoinDocument, Target


async def scenario_big_room(
    target: Target, cfg: BenchConfig, log: Log, *, key: str, clients: int, editors: int
) -> dict[str, Any]:
    """(f) or (i): one room of `clients`, the first `editors` of them editing and moving cursors."""
    rooms = await target.new_rooms(1, users=clients)
    specs = [
        replace(spec, sends=i < editors)
        for i, spec in enumerate(client_specs(target, rooms, clients, affinity=cfg.room_affinity))
    ]
    phase, result = await measured_phase(
        target,
        cfg,
        log,
        key,
        rooms,
        specs,
        rate=cfg.f_rate,
        duration=cfg.f_duration,
        awareness_period=cfg.f_awareness_period,
    )
    log(
        f"  ({key}) ratio {phase.ratio:.4f} p50 {phase.latency.p50:.1f} p99 {phase.latency.p99:.1f}"
        f" max {phase.latency.max:.1f} ms; {phase.cpu_us_per_delivery():.1f} us/delivery;"
        f" load CPU {phase.loadgen_cpu_percent:.0f}%"
    )
    return {"editors": editors, "awareness_period_s": cfg.f_awareness_period, **result}


async def scenario_g(
    target: Target, cfg: BenchConfig, document: JoinDocument, log: Log
) -> dict[str, Any]:
    """(g): `cfg.g_clients` fresh clients join the open room at once."""
    room = (await target.new_rooms(1, users=cfg.g_clients))[0]
    session, holder = await push_document(target.url(room), [document.full])
    try:
        specs = client_specs(target, [room], cfg.g_clients, sends=False, affinity=cfg.room_affinity)
        async with LoadRun(specs, workers=cfg.workers) as run:
            await run.status()  # the load processes are up before the storm starts
            profiler = profiler_for(target, cfg, "g")
            cpu_before = target.probe.cpu()
            opened = await run.open(concurrency=len(specs), timeout=120.0)
            cpu = cpu_delta(target.probe.cpu(), cpu_before)
            profile = profiler.stop() if profiler else None
        views = [(await join(url))[0] for url in room_views(target, [room])[0]]
    finally:
        await holder.close()
        await session.close()
    relay_cpu = sum(cpu.get(label, 0.0) for label in target.probe.hot_path)
    complete = (
        opened["failed"] == 0
        and all(view.text_length == document.text_length for view in views)
        and len(opened["synced_bytes"]) >= 1
        and min(opened["synced_bytes"]) >= min(view.update_bytes for view in views)
    )
    synced = opened["synced_ms"]
    log(
        f"  (g) {opened['opened']}/{len(specs)} synced; p50 {synced['p50']:.0f} p99 {synced['p99']:.0f}"
        f" max {synced['max']:.0f} ms; server CPU {relay_cpu:.2f} s; load CPU {opened['loadgen_cpu_s']:.2f} s"
    )
    result: dict[str, Any] = {
        "clients": len(specs),
        "document_bytes": len(document.full),
        "document_updates": len(document.updates),
        "open": opened,
        "synced_ms": synced,
        "complete": complete,
        "server_cpu_s": cpu,
        "relay_cpu_s": relay_cpu,
        "all_server_cpu_s": sum(cpu.values()),
        "loadgen_cpu_s": opened["loadgen_cpu_s"],
        "loadgen_processes": cfg.workers,
        "view_update_bytes": [view.update_bytes for view in views],
    }
    if profile:
        result["profile"] = profile
    return result


__all__ = ["scenario_big_room", "scenario_g"]

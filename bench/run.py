"""One load run: clients spread over load processes, phases measured end to end.

    run = LoadRun(specs, workers=2)
    await run.open()
    result = await run.phase(1, rate=5, duration=20, probe=probe)
    await run.close()

A phase: snapshot the server processes' CPU, let every load process send on
its schedule, collect how many edits each client sent, wait until every
expected delivery arrived (or `drain_timeout` passed), snapshot the CPU
again, gather the receivers' tallies and build a `PhaseResult`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Self

from bench.accounting import (
    LatencySummary,
    PhaseResult,
    PhaseTally,
    expected_deliveries,
    merge_tallies,
)
from bench.loadgen import ClientSpec, InProcessWorker, ProcessWorker
from bench.procstat import cpu_seconds, machine_busy_seconds, peak_rss_kb, reset_peak_rss, rss_kb


@dataclass
class ServerProbe:
    """The server processes of a target: label -> (pid, whole process tree?)."""

    processes: dict[str, tuple[int, bool]] = field(default_factory=dict)
    hot_path: list[str] = field(default_factory=list)  # the processes that relay edits

    def cpu(self) -> dict[str, float]:
        return {label: cpu_seconds(pid, tree=tree) for label, (pid, tree) in self.processes.items()}

    def rss_kb(self) -> dict[str, int]:
        return {label: rss_kb(pid, tree=tree) for label, (pid, tree) in self.processes.items()}

    def peak_rss_kb(self) -> dict[str, int]:
        return {label: peak_rss_kb(pid, tree=tree) for label, (pid, tree) in self.processes.items()}

    def reset_peaks(self) -> None:
        for pid, tree in self.processes.values():
            reset_peak_rss(pid, tree=tree)


def cpu_delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {label: max(0.0, after[label] - before.get(label, 0.0)) for label in after}


class LoadRun:
    def __init__(self, specs: Sequence[ClientSpec], *, workers: int = 2) -> None:
        """`workers` load processes (0: in this process, for tests); clients are dealt round-robin."""
        self.specs = list(specs)
        self.room_of = {spec.id: spec.room for spec in self.specs}
        self.rooms = len(set(self.room_of.values()))
        count = max(1, workers)
        self._workers: list[InProcessWorker | ProcessWorker] = (
            [InProcessWorker()] if workers == 0 else [ProcessWorker() for _ in range(count)]
        )
        self._shares = [self.specs[i :: len(self._workers)] for i in range(len(self._workers))]
        self.open_result: dict[str, Any] = {}
        self.sent_total: dict[int, int] = {}  # client id -> edits sent over all phases

    @property
    def worker_pids(self) -> list[int]:
        return [w.pid for w in self._workers if w.pid is not None]

    async def _all(self, method: str, *args: Any, **kwargs: Any) -> list[Any]:
        return await asyncio.gather(*(w.call(method, *args, **kwargs) for w in self._workers))

    async def open(self, *, concurrency: int = 100, timeout: float = 30.0) -> dict[str, Any]:
        started = time.monotonic()
        results = await asyncio.gather(
            *(
                w.call("open", share, self.room_of, concurrency=concurrency, timeout=timeout)
                for w, share in zip(self._workers, self._shares, strict=True)
            )
        )
        errors = sorted({e for r in results for e in r["errors"]})[:5]
        self.open_result = {
            "opened": sum(r["opened"] for r in results),
            "failed": sum(r["failed"] for r in results),
            "errors": errors,
            "seconds": time.monotonic() - started,
            "loadgen_cpu_s": sum(r["cpu_s"] for r in results),
            "synced_ms": asdict(
                LatencySummary.of_micros(round(ms * 1000) for r in results for ms in r["synced_ms"])
            ),
            "synced_bytes": sorted({b for r in results for b in r["synced_bytes"]}),
        }
        return self.open_result

    async def status(self) -> dict[str, Any]:
        results = await self._all("status")
        return {
            "clients": sum(r["clients"] for r in results),
            "closed": sum(r["closed"] for r in results),
            "close_codes": sorted({c for r in results for c in r["close_codes"]}),
        }

    async def phase(
        self,
        phase: int,
        *,
        rate: float,
        duration: float,
        probe: ServerProbe,
        drain_timeout: float = 3.0,
        lead_in: float = 0.3,
        awareness_period: float = 0.0,
    ) -> PhaseResult:
        """Send at `rate` edits/s per sender for `duration` s (and an awareness update each
        `awareness_period` s per sender, when > 0); measure everything."""
        cpu_before = probe.cpu()
        busy_before = machine_busy_seconds()
        started = time.monotonic()
        start_at = started + lead_in
        sends = await self._all("phase", phase, rate, duration, start_at, awareness_period)
        sent: dict[int, int] = {}
        for part in sends:
            sent.update(part["sent"])
        for client, count in sent.items():
            self.sent_total[client] = self.sent_total.get(client, 0) + count
        expected = expected_deliveries(sent, self.room_of)
        deadline = time.monotonic() + drain_timeout
        while True:
            received = sum(await self._all("progress", phase))
            if received >= expected or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.02)
        cpu_after = probe.cpu()
        busy_after = machine_busy_seconds()
        wall = time.monotonic() - started
        collected = await self._all("collect", phase)
        tally: PhaseTally = merge_tallies(PhaseTally.from_wire(c["tally"]) for c in collected)
        return PhaseResult(
            clients=len(self.specs),
            rooms=self.rooms,
            rate_per_client=rate,
            duration_s=duration,
            edits_sent=sum(sent.values()),
            expected=expected,
            received=tally.received,
            duplicates=tally.duplicates,
            misrouted=tally.misrouted,
            echoes=tally.echoes,
            latency=LatencySummary.of_micros(tally.latencies_us),
            server_cpu_s=cpu_delta(cpu_after, cpu_before),
            hot_path=list(probe.hot_path),
            loadgen_cpu_s=sum(c["cpu_s"] for c in collected),
            loadgen_processes=len(self._workers),
            wall_s=wall,
            closed_clients=sum(c["closed"] for c in collected),
            max_send_lag_ms=max(part["max_lag_ms"] for part in sends),
            machine_busy_s=busy_after - busy_before,
        )

    def sent_by_room(self) -> dict[int, int]:
        rooms: dict[int, int] = {}
        for client, count in self.sent_total.items():
            room = self.room_of[client]
            rooms[room] = rooms.get(room, 0) + count
        return rooms

    async def close(self) -> None:
        try:
            await self._all("close")
        finally:
            await asyncio.gather(*(w.stop() for w in self._workers), return_exceptions=True)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

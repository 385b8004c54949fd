"""Markdown building blocks shared by the bench's reports (bench/report.py, bench/report_bigroom.py)."""

from __future__ import annotations

import math
from typing import Any


def num(value: Any, digits: int = 1, unit: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and math.isnan(value):
        return "–"
    if isinstance(value, (int,)) and not isinstance(value, bool):
        return f"{value:,}{unit}"
    return f"{value:,.{digits}f}{unit}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def phase_row(name: str, phase: dict[str, Any], extra: dict[str, Any] | None = None) -> list[str]:
    latency = phase["latency"]
    return [
        name,
        f"{phase['clients']} / {phase['rooms']}",
        num(phase["edits_sent"]),
        f"{phase['received']:,} / {phase['expected']:,}",
        f"{phase['ratio']:.4f}",
        f"{num(latency['p50'], 2)} / {num(latency['p95'], 2)} / {num(latency['p99'], 2)} / {num(latency['max'], 1)}",
        num(phase["deliveries_per_s"], 0),
        num(phase["cpu_us_per_delivery"], 1),
        num(phase["total_server_cpu_us_per_delivery"], 1),
        num(phase["loadgen_cpu_percent"], 0, "%"),
        num(phase.get("other_cpu_percent"), 0, "%"),
    ]


PHASE_HEADER = [
    "target",
    "clients / rooms",
    "edits sent",
    "received / expected",
    "delivery ratio",
    "latency ms p50 / p95 / p99 / max",
    "deliveries/s",
    "server CPU µs/delivery (relay)",
    "(all server processes)",
    "load gen CPU",
    "other CPU on the machine",
]

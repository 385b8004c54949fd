"""The Markdown tables and goals of the big-room scenarios (f), (i) and (g) (bench/bigroom.py)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

from bench.markdown import PHASE_HEADER, num, phase_row, table

Rows = list[tuple[str, dict[str, Any]]]
Goal = tuple[Any, ...]  # goal, target, value, met, then (target, scenario) pairs for the noise


def tables(config: dict[str, Any], scenario: Callable[[str], Rows]) -> list[str]:
    """The lines of the (f), (i) and (g) sections (empty for scenarios not run)."""
    out: list[str] = []
    awareness = f"cursor (awareness update) every {config['f_awareness_period']:g} s per editor"
    for key, title in (
        ("f", f"### (f) one room × {config['f_clients']} clients, all editing {config['f_rate']:g} edit/s, {awareness}"),
        ("i", f"### (i) one room × {config['i_clients']} clients: {config['i_editors']} edit ({config['f_rate']:g}/s, {awareness}), the rest watch"),
    ):  # fmt: skip
        rows = scenario(key)
        if not rows:
            continue
        out += ["", f"{title}, {config['f_duration']:g} s", ""]
        out.append(
            table(
                PHASE_HEADER + ["documents complete"],
                [
                    [name, f"FAILED: {res['error']}"] + [""] * (len(PHASE_HEADER) - 1)
                    if "error" in res
                    else phase_row(name, res["phase"])
                    + [f"{res['convergence']['complete']}/{res['convergence']['views']}"]
                    for name, res in rows
                ],
            )
        )
    rows = scenario("g")
    if rows:
        out += [
            "",
            f"### (g) join storm: {config['g_clients']} clients at once on one open room",
            "",
        ]
        header = [
            "target",
            "document",
            "synced / clients",
            "every client complete",
            "time to synced ms p50 / p99 / max",
            "server CPU s (relay)",
            "(all server processes)",
            "load gen CPU s",
        ]
        body = []
        for name, res in rows:
            if "error" in res:
                body.append([name, f"FAILED: {res['error']}"] + [""] * (len(header) - 2))
                continue
            synced = res["synced_ms"]
            body.append(
                [
                    name,
                    f"{res['document_bytes'] / 2**20:.1f} MiB",
                    f"{res['open']['opened']} / {res['clients']}",
                    "yes" if res["complete"] else "**no**",
                    f"{num(synced['p50'], 0)} / {num(synced['p99'], 0)} / {num(synced['max'], 0)}",
                    num(res["relay_cpu_s"], 2),
                    num(res["all_server_cpu_s"], 2),
                    num(res["loadgen_cpu_s"], 2),
                ]
            )
        out.append(table(header, body))
    return out


def goals(result: Callable[[str, str], dict[str, Any] | None], target: str) -> Iterator[Goal]:
    """The issue's numbers for (f), (i) and (g) on one project target, as goal rows."""
    node_f, f = result("node", "f"), result(target, "f")
    if f:
        p99, ratio = f["phase"]["latency"]["p99"], f["phase"]["ratio"]
        node_p99 = node_f["phase"]["latency"]["p99"] if node_f else math.nan
        ok = ratio == 1.0 and p99 <= 50 and not p99 > node_p99
        value = f"p99 {p99:.1f} ms (node {node_p99:.1f}), ratio {ratio:.4f}"
        yield (
            "(f) ratio 1.0, p99 ≤ 50 ms and ≤ node's",
            target,
            value,
            ok,
            (target, "f"),
            ("node", "f"),
        )
    i = result(target, "i")
    if i:
        p99, ratio = i["phase"]["latency"]["p99"], i["phase"]["ratio"]
        value = f"p99 {p99:.1f} ms, ratio {ratio:.4f}"
        yield (
            "(i) ratio 1.0, p99 ≤ 250 ms",
            target,
            value,
            ratio == 1.0 and p99 <= 250,
            (target, "i"),
        )
    node_g, g = result("node", "g"), result(target, "g")
    if g:
        theirs = node_g["relay_cpu_s"] if node_g else math.nan
        share = g["relay_cpu_s"] / theirs if theirs else math.nan
        value = f"{g['relay_cpu_s']:.2f} vs {theirs:.2f} s = {share:.2f}×"
        ok = g["complete"] and share <= 0.2
        yield (
            "(g) every client complete, server CPU ≤ 0.2× node's",
            target,
            value,
            ok,
            (target, "g"),
            ("node", "g"),
        )


__all__ = ["goals", "tables"]

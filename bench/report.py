"""The results of a run as Markdown tables (stdout, docs/performance.md) and JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bench import report_bigroom
from bench.markdown import PHASE_HEADER
from bench.markdown import num as _num
from bench.markdown import phase_row as _phase_row
from bench.markdown import table as _table

LOADGEN_NOTE = (
    "The load generator runs on the same machine ({nproc} cores) as the servers and competes with "
    "them for CPU: its CPU is shown per scenario (% of one core, summed over its {workers} processes)."
)


def _mb(kb: float | None) -> str:
    return "–" if not kb else f"{kb / 1024:,.0f}"


def _peaks(peaks: dict[str, int] | None) -> str:
    if not peaks:
        return "–"
    return ", ".join(f"{label} {_mb(kb)}" for label, kb in peaks.items())


def _join_ms(result: dict[str, Any], variant: str, field: str = "synced_ms") -> str:
    return _num((result.get(variant) or {}).get(field), 1)


def markdown(report: dict[str, Any]) -> str:
    out: list[str] = []
    machine = report["machine"]
    code = report.get("code") or {}
    version = f", code {code['commit']}" if code.get("commit") else ""
    if code.get("services_changed"):
        version += " + uncommitted changes in services/ or shared/"
    out.append(
        f"Run {report['started']} on {machine['nproc']} × {machine['cpu_model']}, "
        f"{machine['memory_gib']} GiB{version}"
    )
    out.append("")
    out.append(LOADGEN_NOTE.format(nproc=machine["nproc"], workers=report["config"]["workers"]))
    targets = report["targets"]
    for name, target in targets.items():
        if "error" in target:
            out.append(f"\n**{name}: failed to start**: {target['error']}")

    def scenario(key: str) -> list[tuple[str, dict[str, Any]]]:
        return [
            (n, t["scenarios"][key]) for n, t in targets.items() if key in t.get("scenarios", {})
        ]

    rows_a = scenario("a")
    if rows_a:
        c = report["config"]
        out += [
            "",
            f"### (a) moderate load: {c['a_rooms']} rooms × {c['a_clients']} clients × {c['a_rate']:g} edits/s for {c['a_duration']:g} s",
            "",
        ]
        rows = []
        for name, res in rows_a:
            if "error" in res:
                rows.append([name, f"FAILED: {res['error']}"] + [""] * (len(PHASE_HEADER) - 2))
                continue
            rows.append(_phase_row(name, res["phase"]))
        out.append(_table(PHASE_HEADER, rows))
        out.append("")
        out.append(
            _table(
                [
                    "target",
                    "peak RSS MB (per process)",
                    "documents complete (views)",
                    "duplicates / misrouted / echoes",
                    "connections closed",
                ],
                [
                    [
                        name,
                        _peaks(res.get("peak_rss_kb")),
                        f"{res['convergence']['complete']}/{res['convergence']['views']}"
                        + (
                            f" (missing {res['convergence']['missing']})"
                            if res["convergence"]["missing"]
                            else ""
                        ),
                        f"{res['phase']['duplicates']} / {res['phase']['misrouted']} / {res['phase']['echoes']}",
                        str(res["phase"]["closed_clients"]),
                    ]
                    for name, res in rows_a
                    if "error" not in res
                ],
            )
        )

    rows_b = scenario("b")
    if rows_b:
        c = report["config"]
        out += [
            "",
            f"### (b) throughput: {c['b_rooms']} rooms × {c['b_clients']} clients, edits/s per client raised in {c['b_step']:g} s steps until ratio < {c['b_min_ratio']} or p99 > {c['b_max_p99_ms']:g} ms",
            "",
        ]
        rows = []
        for name, res in rows_b:
            if "error" in res:
                rows.append([name, f"FAILED: {res['error']}"] + [""] * 7)
                continue
            best = res.get("best") or {}
            rows.append(
                [
                    name,
                    _num(res["best_deliveries_per_s"], 0),
                    _num(res["best_deliveries_per_s_per_instance"], 0),
                    _num(best.get("rate_per_client"), 0),
                    _num(best.get("cpu_us_per_delivery"), 1),
                    _num((best.get("latency") or {}).get("p99"), 2),
                    _num(best.get("loadgen_cpu_percent"), 0, "%"),
                    res["stop_reason"],
                ]
            )
        out.append(
            _table(
                [
                    "target",
                    "highest sustained deliveries/s",
                    "per relay instance",
                    "at edits/s per client",
                    "server CPU µs/delivery",
                    "p99 ms",
                    "load gen CPU",
                    "stopped because",
                ],
                rows,
            )
        )
        out.append("")
        step_rows = []
        for name, res in rows_b:
            for step in res.get("steps", []):
                step_rows.append(
                    [
                        name,
                        _num(step["rate_per_client"], 0),
                        _num(step["edits_per_s"], 0),
                        _num(step["deliveries_per_s"], 0),
                        f"{step['ratio']:.4f}",
                        _num(step["latency"]["p99"], 2),
                        _num(step["cpu_us_per_delivery"], 1),
                        _num(step["loadgen_cpu_percent"], 0, "%"),
                        _num(step.get("other_cpu_percent"), 0, "%"),
                    ]
                )
        out.append("<details><summary>(b) every step</summary>\n")
        out.append(
            _table(
                [
                    "target",
                    "edits/s per client",
                    "edits/s",
                    "deliveries/s",
                    "ratio",
                    "p99 ms",
                    "µs/delivery",
                    "load gen CPU",
                    "other CPU",
                ],
                step_rows,
            )
        )
        out.append("\n</details>")

    rows_c = scenario("c")
    if rows_c:
        first = next((r for _, r in rows_c if "error" not in r), None)
        size = (
            f"{first['document_bytes'] / 1e6:.1f} MB from {first['document_updates']:,} updates"
            if first
            else ""
        )
        out += [
            "",
            f"### (c) join: a document of {size}; ms from connect to synced (SyncStep2 received), median of {first['samples'] if first else 5}",
            "",
        ]
        rows = []
        for name, res in rows_c:
            if "error" in res:
                rows.append([name, f"FAILED: {res['error']}", "", "", "", ""])
                continue
            rows.append(
                [
                    name,
                    _join_ms(res, "warm_compacted"),
                    _join_ms(res, "warm_pending"),
                    _join_ms(res, "cold_compacted"),
                    _join_ms(res, "cold_pending"),
                    _join_ms(res, "warm_compacted", "applied_ms"),
                ]
            )
        out.append(
            _table(
                [
                    "target",
                    "warm (room open)",
                    "warm, doc built from updates",
                    "cold, compacted in DB",
                    "cold, 10k pending updates in DB",
                    "warm incl. client apply",
                ],
                rows,
            )
        )

    rows_d = scenario("d")
    if rows_d:
        first = next((r for _, r in rows_d if "error" not in r), None)
        shape = (
            f": {first['rooms']} rooms × {first['connections'] // max(1, first['rooms'])} connections "
            f"({first['users_per_room']} users per room)"
            if first
            else ""
        )
        out += ["", f"### (d) idle authenticated connections to one server process{shape}", ""]
        rows = []
        for name, res in rows_d:
            if "error" in res:
                rows.append([name, f"FAILED: {res['error']}", "", "", "", "", ""])
                continue
            rows.append(
                [
                    f"{name} ({res['process']})",
                    f"{res['open']['opened']:,} / {res['connections']:,}",
                    _num(res["open"]["seconds"], 1),
                    f"{_mb(res['rss_before_kb'])} → {_mb(res['rss_after_kb'])}",
                    _num(res["rss_per_connection_kb"], 1),
                    _num(res["idle_cpu_percent"], 0, "%"),
                    str(res["closed_while_idle"]),
                ]
            )
        out.append(
            _table(
                [
                    "target",
                    "connections open",
                    "seconds to open",
                    "RSS MB",
                    "KB per connection",
                    "CPU while idle",
                    "closed while idle",
                ],
                rows,
            )
        )

    rows_e = scenario("e")
    if rows_e:
        out += ["", "### (e) persistence during (a)", ""]
        rows = []
        for name, res in rows_e:
            rows.append(
                [
                    name,
                    f"{res['updates_persisted']:,.0f} / {res['edits_sent']:,}",
                    _num(res["lag_p50_ms"], 1),
                    _num(res["lag_p99_ms"], 1),
                    _num(res["lag_mean_ms"], 1),
                    _num(res["write_amplification"], 2),
                    _num(res["compactions"], 0),
                    _num(res.get("snapshot_over_history", math.nan), 2),
                    _num(res.get("lifetime_amplification", math.nan), 2),
                ]
            )
        out.append(
            _table(
                [
                    "target",
                    "persisted / sent",
                    "lag p50 ms",
                    "lag p99 ms",
                    "lag mean ms",
                    "write amplification",
                    "compactions",
                    "document / updates bytes (c)",
                    "over a document's life (1 + 1/ratio + c)",
                ],
                rows,
            )
        )

    rows_cost = [(name, res["redis"]) for name, res in scenario("a") if "redis" in res]
    if rows_cost:
        out += [
            "",
            "### what one accepted update of (a) costs Redis, the worker and PostgreSQL",
            "",
        ]
        rows = []
        for name, cost in rows_cost:
            top = ", ".join(
                f"{cmd} {n / cost['edits_sent']:.2f}"
                for cmd, n in list(cost["commands"].items())[:6]
            )
            cpu = ", ".join(f"{label} {us:.0f}" for label, us in cost["cpu_us_per_update"].items())
            rows.append([name, _num(cost["commands_per_update"], 1), top, cpu])
        out.append(
            _table(
                [
                    "target",
                    "Redis commands per update",
                    "most called (per update)",
                    "CPU µs per update",
                ],
                rows,
            )
        )

    rows_h = scenario("h")
    if rows_h:
        out += [
            "",
            "### (h) a large document: uploaded as one update, then fresh joins (median)",
            "",
        ]
        rows = []
        for name, res in rows_h:
            if "error" in res:
                rows.append([name, f"FAILED: {res['error']}"] + [""] * 7)
                continue
            rows.append(
                [
                    name,
                    f"{res['document_bytes'] / 2**20:.1f} MiB / {res['document_updates']:,}",
                    _num(res["upload_ms"], 0),
                    _num(res["join_ms"], 0),
                    _num(res["cold_join_ms"], 0),
                    _num(res["other_room_p50_ms"], 1),
                    _num(res["other_room_p99_ms"], 1),
                    _num(res["other_room_max_ms"], 0),
                    _num(res["peak_rss_per_document_mb"], 2),
                ]
            )
        out.append(
            _table(
                [
                    "target",
                    "document / updates",
                    "upload ms",
                    "join ms (room open)",
                    "join ms (cold, from the DB)",
                    "other room p50 ms",
                    "other room p99 ms",
                    "other room max ms",
                    "peak RSS per MB of document per open room",
                ],
                rows,
            )
        )

    out += report_bigroom.tables(report["config"], scenario)

    goals = goal_rows(report)
    if goals:
        out += ["", "### against the issue's goals (ratio = project / node in this run)", ""]
        out.append(_table(["goal", "target", "value", "met", "other CPU during it"], goals))
        out.append(
            "\nA goal measured while other processes used more than 30 % of a core "
            "(last column) is not a reliable verdict: rerun on a quiet machine."
        )

    profiles = [
        (name, key, res["profile"])
        for name, target in targets.items()
        for key, res in target.get("scenarios", {}).items()
        if isinstance(res, dict) and res.get("profile")
    ]
    for name, key, profile in profiles:
        for label, summary in profile.items():
            if "self" not in summary:
                continue
            out += [
                "",
                f"<details><summary>profile {name} ({key}) {label}: {summary['samples']} samples, top self time</summary>\n",
            ]
            out.append(
                _table(["function", "% self"], [[f"`{f}`", f"{p}"] for f, p in summary["self"]])
            )
            out.append("\n</details>")
    return "\n".join(out)


def _scenario(report: dict[str, Any], target: str, key: str) -> dict[str, Any] | None:
    res = report["targets"].get(target, {}).get("scenarios", {}).get(key)
    return res if isinstance(res, dict) and "error" not in res else None


def _noise(report: dict[str, Any], target: str, key: str) -> float:
    """% of a core other processes used during a target's scenario (nan when unknown)."""
    scenarios = report["targets"].get(target, {}).get("scenarios", {})
    res = scenarios.get("a" if key == "e" else key)
    if not isinstance(res, dict) or "error" in res:
        return math.nan
    if key in ("a", "e", "f", "i"):
        return res["phase"].get("other_cpu_percent", math.nan)
    if key == "b":
        return max(
            (s.get("other_cpu_percent", 0.0) for s in res.get("steps", [])), default=math.nan
        )
    return 100.0 * scenarios.get("background_cores_at_start", {}).get(key, math.nan)


def goal_rows(report: dict[str, Any]) -> list[list[str]]:
    """The issue's numbers to reach, checked against this run (with how noisy it was)."""
    rows: list[list[str]] = []
    node_a = _scenario(report, "node", "a")
    node_b = _scenario(report, "node", "b")
    node_h = _scenario(report, "node", "h")

    def add(goal: str, target: str, value: str, ok: bool, *noise: tuple[str, str]) -> None:
        levels = [_noise(report, t, k) for t, k in noise]
        known = [v for v in levels if not math.isnan(v)]
        rows.append([goal, target, value, _yes(ok), f"{max(known):.0f}%" if known else "–"])

    for target in ("single", "multi"):
        a = _scenario(report, target, "a")
        if a and node_a:
            mine = a["phase"]["cpu_us_per_delivery"]
            theirs = node_a["phase"]["cpu_us_per_delivery"]
            ratio = mine / theirs if theirs else math.nan
            value = f"{mine:.1f} vs {theirs:.1f} µs = {ratio:.2f}×"
            add(
                "(a) server CPU per delivery ≤ node's",
                target,
                value,
                ratio <= 1.0,
                (target, "a"),
                ("node", "a"),
            )
        if a and target == "multi":
            p99 = a["phase"]["latency"]["p99"]
            value = f"{p99:.2f} ms, ratio {a['phase']['ratio']:.4f}"
            ok = p99 <= 5 and a["phase"]["ratio"] == 1.0
            add("(a) cross-instance p99 ≤ 5 ms, ratio 1.0", target, value, ok, (target, "a"))
        b = _scenario(report, target, "b")
        if b and node_b:
            mine = b["best_deliveries_per_s_per_instance"]
            theirs = node_b["best_deliveries_per_s_per_instance"]
            value = f"{mine:,.0f} vs {theirs:,.0f}"
            add(
                "(b) sustained deliveries/s per instance ≥ node's",
                target,
                value,
                mine >= theirs,
                (target, "b"),
                ("node", "b"),
            )
        c = _scenario(report, target, "c")
        for key, limit in (
            ("cold_compacted", 80.0),
            ("cold_pending", 300.0),
            ("warm_compacted", 80.0),
        ):
            if c and key in c:
                value = c[key]["synced_ms"]
                goal = f"(c) join {key.replace('_', ' ')} ≤ {limit:.0f} ms"
                add(goal, target, f"{value:.1f} ms", value <= limit, (target, "c"))
        d = _scenario(report, target, "d")
        if d:
            value = d["rss_per_connection_kb"]
            add(
                "(d) ≤ 20 KB RSS per idle connection",
                target,
                f"{value:.1f} KB",
                value <= 20,
                (target, "d"),
            )
        h = _scenario(report, target, "h")
        if h and "error" not in h:
            if node_h and "error" not in node_h:
                ratio = h["join_ms"] / node_h["join_ms"]
                value = f"{h['join_ms']:.0f} vs {node_h['join_ms']:.0f} ms = {ratio:.2f}×"
                add(
                    "(h) large-document join ≤ 0.8× node's",
                    target,
                    value,
                    ratio <= 0.8,
                    (target, "h"),
                    ("node", "h"),
                )
            per_mb = h["peak_rss_per_document_mb"]
            if per_mb is not None:
                add(
                    "(h) peak RSS ≤ 4× the document",
                    target,
                    f"{per_mb:.2f}×",
                    per_mb <= 4,
                    (target, "h"),
                )
            p99 = h["other_room_p99_ms"]
            add(
                "(h) another room's p99 during it ≤ 50 ms",
                target,
                f"{p99:.1f} ms",
                p99 <= 50,
                (target, "h"),
            )
        for row in report_bigroom.goals(lambda t, k: _scenario(report, t, k), target):
            add(*row)
        e = _scenario(report, target, "e")
        if e:
            lag, amplification = e["lag_p99_ms"], e["write_amplification"]
            add(
                "(e) persistence lag p99 ≤ 1 s", target, f"{lag:.0f} ms", lag <= 1000, (target, "e")
            )
            add(
                "(e) write amplification ≤ 1.5",
                target,
                f"{amplification:.2f} during (a);"
                f" {e.get('lifetime_amplification', math.nan):.2f} over a document's life",
                amplification <= 1.5,
                (target, "e"),
            )
    return rows


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return None
    return value


def write_json(report: dict[str, Any], directory: Path, stamp: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{stamp}.json"
    path.write_text(json.dumps(_jsonable(report), indent=2) + "\n")
    return path


BEGIN_MARK = "<!-- bench:begin (written by python -m bench --update-docs) -->"
END_MARK = "<!-- bench:end -->"


def update_docs(path: Path, tables: str, json_path: Path) -> None:
    """Replace the part of docs/performance.md between the bench markers with `tables`."""
    text = path.read_text()
    start, end = text.find(BEGIN_MARK), text.find(END_MARK)
    if start < 0 or end < start:
        raise ValueError(f"{path} has no {BEGIN_MARK} ... {END_MARK} section")
    body = f"{BEGIN_MARK}\n\n{tables}\n\nJSON of this run: `bench/results/{json_path.name}` (not committed)\n\n"
    path.write_text(text[:start] + body + text[end:])

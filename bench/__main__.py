"""`python -m bench` (what `make bench` runs): every scenario against single, multi and node
(`--targets` adds cluster).

    python -m bench                                  # the full suite (~12 min)
    python -m bench --targets single,node --scenarios a,c
    python -m bench --scale 0.2                      # everything smaller and shorter
    python -m bench --url mine=ws://127.0.0.1:1234/yjs,pid=4242
    python -m bench --targets single,multi --scenarios a,b --profile
    python -m bench --targets multi,cluster --scenarios a  # one Redis vs a Redis Cluster

Prints a Markdown table per scenario and writes bench/results/<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from bench import report as reporting
from bench.procstat import machine, raise_nofile
from bench.scenarios import DEFAULT_B_RATES, BenchConfig, QuietWaiter, run_target
from bench.targets import JoinDocument, Target, UrlTarget, make_target

RESULTS = Path(__file__).resolve().parent / "results"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "performance.md"
ALL_TARGETS = ("single", "multi", "cluster", "node")
#: What a run without --targets measures (the cluster target only when asked for).
DEFAULT_TARGETS = ("single", "multi", "node")
ALL_SCENARIOS = ("a", "b", "c", "d", "e", "f", "g", "h", "i")


def _csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--targets",
        type=_csv,
        default=list(DEFAULT_TARGETS),
        help=f"{','.join(ALL_TARGETS)} (default: {','.join(DEFAULT_TARGETS)})",
    )
    parser.add_argument(
        "--url",
        action="append",
        default=[],
        metavar="NAME=URL[,pid=PID][,token=T]",
        help="an extra y-websocket target (repeatable); pid= makes its CPU and RSS measurable",
    )
    parser.add_argument(
        "--scenarios", type=_csv, default=list(ALL_SCENARIOS), help="a,b,c,d,e,f,g,h,i (default: all)"
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="shrink every scenario by this factor (0.1 = quick)",
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="load generator processes (default 2)"
    )
    parser.add_argument(
        "--single-db",
        choices=("postgresql", "sqlite"),
        default="postgresql",
        help="database of the single-instance target (default postgresql)",
    )
    parser.add_argument(
        "--server-log-level",
        default="INFO",
        help="LOG_LEVEL of the project's services (default INFO)",
    )
    parser.add_argument("--a-duration", type=float, help="seconds of scenario (a) (default 20)")
    parser.add_argument(
        "--b-rates",
        type=lambda v: tuple(float(x) for x in _csv(v)),
        help=f"edits/s per client for the steps of (b) (default {','.join(f'{r:g}' for r in DEFAULT_B_RATES)})",
    )
    parser.add_argument(
        "--f-duration", type=float, help="seconds of scenarios (f) and (i) (default 20)"
    )
    parser.add_argument("--b-step", type=float, help="seconds per step of (b) (default 4)")
    parser.add_argument(
        "--idle-connections", type=int, help="connections of scenario (d) (default 10000)"
    )
    parser.add_argument(
        "--doc-updates", type=int, help="updates of the join document of (c) (default 20000)"
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=30.0,
        help="seconds to wait before a scenario for other processes to go quiet (0: don't; default 30)",
    )
    parser.add_argument(
        "--room-affinity",
        action="store_true",
        help="(a), (b): each room's clients on one instance, as nginx's room hash deals them",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the relaying processes during (a), (b), (f), (i) and (g) (raw stacks in bench/results/profiles/)",
    )
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help="where the JSON goes (default bench/results/)"
    )
    parser.add_argument(
        "--update-docs",
        action="store_true",
        help=f"also put the tables into {DOCS.relative_to(DOCS.parents[1])} (between its bench markers)",
    )
    args = parser.parse_args(argv)
    unknown = set(args.targets) - set(ALL_TARGETS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}; use --url for other servers")
    unknown = set(args.scenarios) - set(ALL_SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}")
    return args


def build_config(args: argparse.Namespace) -> BenchConfig:
    cfg = BenchConfig(
        workers=args.workers, quiet_wait=args.quiet_wait, room_affinity=args.room_affinity
    ).scaled(args.scale)
    overrides: dict[str, Any] = {}
    if args.a_duration:
        overrides["a_duration"] = args.a_duration
    if args.b_rates:
        overrides["b_rates"] = args.b_rates
    if args.f_duration:
        overrides["f_duration"] = args.f_duration
    if args.b_step:
        overrides["b_step"] = args.b_step
    if args.idle_connections:
        overrides["d_connections"] = args.idle_connections
        overrides["d_rooms"] = max(1, min(cfg.d_rooms, args.idle_connections // 10))
    if args.doc_updates:
        overrides["c_updates"] = args.doc_updates
        overrides["c_pending"] = args.doc_updates // 2
    if args.profile:
        overrides["profile_dir"] = args.out / "profiles"
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


async def run(args: argparse.Namespace) -> dict[str, Any]:
    cfg = build_config(args)
    raise_nofile()

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    targets: list[Target] = [
        make_target(name, single_database=args.single_db, log_level=args.server_log_level)
        for name in args.targets
    ]
    targets += [UrlTarget.parse(spec) for spec in args.url]

    document = _document_builder("(c) join document", log, cfg.c_updates, cfg.c_pending)
    large_document = _document_builder("(h) large document", log, cfg.h_updates)
    storm_document = _document_builder("(g) storm document", log, cfg.g_updates)
    quiet = QuietWaiter(cfg)
    report: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "code": code_version(),
        "config": cfg.to_json(),
        "scenarios": sorted(set(args.scenarios)),
        "notes": [
            reporting.LOADGEN_NOTE.format(nproc=machine()["nproc"], workers=cfg.workers),
            (
                "Latency: the sender's time.monotonic_ns() is in the edit's text; every receiving client "
                "subtracts it from its own clock at receipt (same machine, one clock)."
            ),
            (
                "Server CPU per delivery: utime+stime (from /proc) of the relaying processes (collab instances, "
                "or the node server) over the phase, divided by deliveries received; '(all server processes)' "
                "adds Redis, the persistence worker and PostgreSQL (its whole process tree)."
            ),
            (
                "Receivers count tokens in the frames; they do not apply updates. After (a) and (b) a fresh "
                "client applies each room's document on every instance and checks it holds every edit sent."
            ),
            "The Node reference server echoes every update to its sender too: counted as echoes, not deliveries.",
        ],
        "targets": {},
    }
    for target in targets:
        log(f"[{target.name}] starting")
        entry: dict[str, Any] = {"kind": target.kind}
        report["targets"][target.name] = entry
        try:
            await target.start()
        except Exception as exc:  # the other targets still run  # noqa: BLE001
            log(f"[{target.name}] failed to start: {exc}")
            entry["error"] = f"{type(exc).__name__}: {exc}"
            await _quietly(target.stop())
            continue
        entry["info"] = target.info
        entry["processes"] = {label: pid for label, (pid, _) in target.probe.processes.items()}
        try:
            entry["scenarios"] = await run_target(
                target,
                set(args.scenarios),
                cfg,
                log,
                document,
                quiet,
                large_document,
                storm_document,
            )
            entry["processes"] = {label: pid for label, (pid, _) in target.probe.processes.items()}
        finally:
            await _quietly(target.stop())
            log(f"[{target.name}] stopped")
    report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return report


def _document_builder(
    label: str, log: Callable[[str], None], updates: int, pending: int = 0
) -> Callable[[], JoinDocument]:
    """A scenario's document, built on first use (once per run, shared by every target)."""

    @lru_cache(maxsize=1)
    def build() -> JoinDocument:
        started = time.monotonic()
        doc = JoinDocument.build(updates, pending)
        log(
            f"  {label}: {len(doc.full) / 1e6:.1f} MB from {len(doc.updates):,} updates, built in {time.monotonic() - started:.1f}s"
        )
        return doc

    return build


def code_version() -> dict[str, Any]:
    """The commit measured, and whether the work tree had uncommitted changes to it."""
    import subprocess

    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False, timeout=30)
        return result.stdout.strip()

    changed = git("status", "--porcelain", "--", "services", "shared")
    return {"commit": git("rev-parse", "--short", "HEAD"), "services_changed": bool(changed)}


async def _quietly(awaitable: Any) -> None:
    try:
        await awaitable
    except Exception as exc:  # a failing stop is reported, not raised  # noqa: BLE001
        print(f"  (while stopping: {type(exc).__name__}: {exc})", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    report = asyncio.run(run(args))
    report["seconds"] = round(time.monotonic() - started, 1)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = reporting.write_json(report, args.out, stamp)
    tables = reporting.markdown(report)
    print(tables)
    print(f"\nJSON: {path}  ({report['seconds']:.0f} s)")
    if args.update_docs:
        reporting.update_docs(DOCS, tables, path)
        print(f"updated {DOCS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

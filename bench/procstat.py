"""CPU time and memory of server processes, read from /proc (Linux only).

CPU of a process is utime + stime + cutime + cstime (field 14-17 of
/proc/PID/stat), in seconds; `tree=True` adds every descendant, which is
how PostgreSQL (one backend process per connection) and nginx are measured.
A child that exits between two readings is still counted: its time moves into
its parent's cutime/cstime when it is reaped.
"""

from __future__ import annotations

import os
import platform
import resource
import subprocess
from pathlib import Path

from stack.processes import descendants, stat_fields

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def cpu_seconds(pid: int, *, tree: bool = False) -> float:
    """utime+stime(+reaped children) of `pid`, and of its descendants with `tree`."""
    fields = stat_fields(pid)
    if fields is None:
        return 0.0
    # after the name: state(3) ppid(4) ... utime(14) stime(15) cutime(16) cstime(17)
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
    total = ticks / CLOCK_TICKS
    if tree:
        total += sum(cpu_seconds(child) for child in descendants(pid))
    return total


def status_kb(pid: int, field: str) -> int:
    """A `kB` field of /proc/PID/status (VmRSS, VmHWM, ...); 0 when unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def rss_kb(pid: int, *, tree: bool = False) -> int:
    own = status_kb(pid, "VmRSS")
    return own + (sum(status_kb(c, "VmRSS") for c in descendants(pid)) if tree else 0)


def peak_rss_kb(pid: int, *, tree: bool = False) -> int:
    """VmHWM: the peak resident set since start or since `reset_peak_rss`."""
    own = status_kb(pid, "VmHWM")
    return own + (sum(status_kb(c, "VmHWM") for c in descendants(pid)) if tree else 0)


def reset_peak_rss(pid: int, *, tree: bool = False) -> bool:
    """Reset VmHWM to the current RSS (`echo 5 > /proc/PID/clear_refs`); False if not allowed."""
    ok = True
    for target in [pid] + (descendants(pid) if tree else []):
        try:
            Path(f"/proc/{target}/clear_refs").write_text("5")
        except OSError:
            ok = False
    return ok


def raise_nofile(pid: int | None = None, wanted: int | None = None) -> int:
    """Raise the soft RLIMIT_NOFILE of this process (pid None) or of another one.

    Up to `wanted`, or to the hard limit when `wanted` is None or above it; never
    lowers it. Another process is changed with prlimit(1). Returns the soft limit.
    """
    if pid is None or pid == os.getpid():
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    else:
        soft, hard = nofile_of(pid), nofile_of(pid, hard=True)
    unlimited = hard in (resource.RLIM_INFINITY, -1)
    target = hard if wanted is None or (not unlimited and wanted > hard) else wanted
    if soft != resource.RLIM_INFINITY and soft >= target:
        return soft
    if pid is None or pid == os.getpid():
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    limit = f"{target}:{'unlimited' if unlimited else hard}"
    subprocess.run(
        ["prlimit", f"--pid={pid}", f"--nofile={limit}"],
        check=True,
        capture_output=True,
        timeout=10,
    )
    return nofile_of(pid)


def nofile_of(pid: int, *, hard: bool = False) -> int:
    """The soft (or hard) open-files limit of a process; -1 for unlimited, 0 when unreadable."""
    try:
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                value = line.split()[4 if hard else 3]
                return -1 if value == "unlimited" else int(value)
    except (OSError, ValueError, IndexError):
        pass
    return 0


def machine_busy_seconds() -> float:
    """CPU time all cores spent busy since boot (user, nice, system, irq, softirq, steal)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    except (OSError, ValueError, IndexError):
        return 0.0
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def own_cpu_seconds() -> float:
    """CPU of the calling process (all threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine() -> dict:
    """What the numbers were measured on."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }

"""Sampling profiles of server processes with py-spy, summarised as text.

`Profiler.start()` attaches `py-spy record --nonblocking --format raw` to each
Python process; `stop()` interrupts it (py-spy writes its output on SIGINT)
and summarises the collapsed stacks: the functions with the most samples on
top of the stack (self) and anywhere on it (inclusive). The raw files go to
bench/results/profiles/ (ignored by git); feed them to speedscope or
flamegraph.pl for a picture.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path


def py_spy() -> str | None:
    local = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


class Profiler:
    def __init__(self, out_dir: Path, name: str, pids: dict[str, int], *, rate: int = 200) -> None:
        self.out_dir = out_dir
        self.name = name
        self.pids = pids
        self.rate = rate
        self._running: list[tuple[str, Path, subprocess.Popen[bytes]]] = []

    def start(self) -> bool:
        binary = py_spy()
        if binary is None:
            return False
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for label, pid in self.pids.items():
            path = self.out_dir / f"{self.name}-{label}.txt"
            process = subprocess.Popen(
                [binary, "record", "--pid", str(pid), "--rate", str(self.rate), "--nonblocking",
                 "--format", "raw", "--output", str(path)],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )  # fmt: skip
            self._running.append((label, path, process))
        time.sleep(0.5)  # attach before the load starts
        return True

    def stop(self) -> dict[str, dict]:
        summaries = {}
        for label, path, process in self._running:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
            try:
                _, err = process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                _, err = process.communicate()
            if path.exists():
                summaries[label] = {"file": str(path), **summarize(path.read_text())}
            else:
                summaries[label] = {"error": (err or b"").decode(errors="replace")[-500:]}
        self._running = []
        return summaries


def _short(frame: str) -> str:
    """`func (path/to/module.py:123)` -> `func (module.py:123)`."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit('/', 1)[-1]}" if where else name


def summarize(collapsed: str, top: int = 15) -> dict:
    """Self and inclusive sample shares of the functions in py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count

    def share(count: int) -> float:
        return round(100.0 * count / total, 1) if total else 0.0

    return {
        "samples": total,
        "self": [(f, share(c)) for f, c in own.most_common(top)],
        "inclusive": [(f, share(c)) for f, c in inclusive.most_common(top * 2)],
    }

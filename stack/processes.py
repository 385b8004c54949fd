"""Detached child processes that another process can stop later, exactly.

`make stack` starts its processes and exits; `make stack-down`, a different
process, must stop exactly those processes and nothing else. So every
process is recorded as (pid, start time): the start time (field 22 of
/proc/PID/stat) tells a live process from a later one that reused the pid.
Each one runs in its own session (so a Ctrl-C in the terminal does not reach
it and its process group can be signalled), with stdout and stderr appended
to a log file.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
POLL_INTERVAL = 0.05


class StackError(RuntimeError):
    """The stack could not be started or controlled; the message says why."""


# -- ports and readiness --------------------------------------------------------

_handed_out: set[int] = set()


def free_port(host: str = LOOPBACK) -> int:
    """A free TCP port on `host`, never the same one twice in this process."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise StackError("no free port found")


def port_accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The status of GET `url`, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return None


def poll_until(
    check: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Call `check` until it is true; StackError at the deadline or when `alive()` turns false."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if alive is not None and not alive():
            raise StackError(f"the process exited while waiting for {what}")
        if time.monotonic() >= deadline:
            raise StackError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(POLL_INTERVAL)


# -- /proc ----------------------------------------------------------------------


def stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat from field 3 (state) on, or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses.
    return stat.rsplit(")", 1)[-1].split()


def pid_alive(pid: int) -> bool:
    """True when `pid` exists and is not a zombie (a zombie holds nothing any more)."""
    fields = stat_fields(pid)
    if fields is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return fields[0] not in ("Z", "X")


def start_time(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot (None when it does not exist)."""
    fields = stat_fields(pid)
    return int(fields[19]) if fields is not None and len(fields) > 19 else None


def _by_parent() -> dict[int, list[int]]:
    """Every process's pid under its parent's pid (one pass over /proc)."""
    result: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := stat_fields(int(entry))) is not None and len(fields) > 1:
            result.setdefault(int(fields[1]), []).append(int(entry))
    return result


def children(pid: int) -> list[int]:
    return _by_parent().get(pid, [])


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, zombies too (PostgreSQL backends leave the group: walk the tree)."""
    by_parent = _by_parent()
    found: list[int] = []
    todo = list(by_parent.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(by_parent.get(child, []))
    return found


def listening_inodes() -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 9 and fields[3] == "0A":
                    inodes.add(fields[9])
    return inodes


def holds_socket(pid: int, inodes: set[str]) -> bool:
    """True when `pid` has one of the socket `inodes` open."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return False
    except OSError:
        return True
    for fd in fds:
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:[") and target[8:-1] in inodes:
                return True
    return False


# -- processes ------------------------------------------------------------------


def is_root() -> bool:
    return os.geteuid() == 0


def as_user(user: str | None) -> dict[str, Any]:
    """subprocess arguments that run a child as the OS user `user` (none for None)."""
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


#: Variables of the caller's environment that would point a child at other servers.
FOREIGN_PREFIXES = ("DB_", "REDIS_", "PG")


def plain_env() -> dict[str, str]:
    """The caller's environment without FOREIGN_PREFIXES variables, LC_ALL=C unless set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_PREFIXES)}
    env.setdefault("LC_ALL", "C")
    return env


def tail(path: Path, lines: int = 30) -> str:
    try:
        with path.open("rb") as fh:
            with contextlib.suppress(OSError):
                fh.seek(-32 * 1024, os.SEEK_END)
            data = fh.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


@dataclass
class Process:
    """A process started by the stack (or read back from stack.json)."""

    name: str
    pid: int
    started: int
    log: str
    argv: list[str] = field(default_factory=list)
    #: The signal that makes this program shut down cleanly.
    stop_signal: int = int(signal.SIGTERM)
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def spawn(
        cls,
        name: str,
        argv: Sequence[str],
        *,
        log: Path,
        env: Mapping[str, str],
        cwd: Path,
        user: str | None = None,
        stop_signal: int = signal.SIGTERM,
    ) -> Process:
        """Start `argv` in its own session, output appended to `log`."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            out.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} $ {' '.join(argv)}\n".encode())
            out.flush()
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=dict(env),
                start_new_session=True,
                **as_user(user),
            )
        started = start_time(popen.pid) or 0
        return cls(name, popen.pid, started, str(log), list(argv), int(stop_signal), popen)

    # -- state -------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """True while this very process (not a later one with the same pid) runs."""
        if self.popen is not None:
            return self.popen.poll() is None and pid_alive(self.pid)
        return pid_alive(self.pid) and start_time(self.pid) == self.started

    def log_tail(self, lines: int = 30) -> str:
        return tail(Path(self.log), lines)

    @property
    def returncode(self) -> int | None:
        """The exit status once a process this one started has ended (None otherwise)."""
        return self.popen.poll() if self.popen is not None else None

    def record(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pid": self.pid,
            "started": self.started,
            "log": self.log,
            "argv": list(self.argv),
            "stop_signal": self.stop_signal,
        }

    @classmethod
    def from_record(cls, data: Mapping[str, Any]) -> Process:
        return cls(
            name=data["name"],
            pid=int(data["pid"]),
            started=int(data["started"]),
            log=data["log"],
            argv=list(data.get("argv", [])),
            stop_signal=int(data.get("stop_signal", signal.SIGTERM)),
        )

    # -- control -----------------------------------------------------------------

    def signal(self, sig: int) -> None:
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def _signal_group(self, sig: int) -> None:
        # The process leads its own session/group (start_new_session).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` s for the process to end; True when it did."""
        deadline = time.monotonic() + timeout
        while self.alive:
            if time.monotonic() >= deadline:
                return False
            if self.popen is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.popen.wait(timeout=POLL_INTERVAL)
            else:
                time.sleep(POLL_INTERVAL)
        return True

    def stop(self, timeout: float = 20.0) -> None:
        """Clean shutdown with `stop_signal`; SIGKILL at the deadline; then nothing is left."""
        if not self.alive:
            self._reap()
            return
        family = self._family()
        self.signal(self.stop_signal)
        if not self.wait(timeout):
            self._signal_group(signal.SIGKILL)
            self.signal(signal.SIGKILL)
            self.wait(10)
        self._kill_leftovers(family)

    def kill(self) -> None:
        """SIGKILL the process and everything it started (a crash)."""
        if not self.alive:
            self._reap()
            return
        # Frozen, it cannot start more processes (PostgreSQL backends) while they are collected.
        self.signal(signal.SIGSTOP)
        family = self._family()
        self._signal_group(signal.SIGKILL)
        self.signal(signal.SIGKILL)
        self.wait(10)
        self._kill_leftovers(family)

    def _family(self) -> dict[int, int | None]:
        """The descendants now, with their start times."""
        return {pid: start_time(pid) for pid in descendants(self.pid)}

    def _kill_leftovers(self, family: dict[int, int | None]) -> None:
        self._signal_group(signal.SIGKILL)
        for pid, started in family.items():
            # Only the very processes seen before (pids may be reused).
            if pid_alive(pid) and start_time(pid) == started:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(
            pid_alive(p) and start_time(p) == started for p, started in family.items()
        ):
            time.sleep(POLL_INTERVAL)
        self._reap()

    def _reap(self) -> None:
        if self.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=1)


# -- binaries -------------------------------------------------------------------


def find_binary(name: str, *candidates: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            return candidate
    raise StackError(f"{name} not found: run `make system-deps` (scripts/install-system-deps.sh)")


def postgres_bindir() -> Path:
    """The newest /usr/lib/postgresql/<version>/bin (or the directory of initdb on PATH)."""
    needed = ("initdb", "postgres", "pg_isready", "psql")

    def usable(directory: Path) -> bool:
        return all(os.access(directory / n, os.X_OK) for n in needed)

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(p) for p in path.parent.name.split(".") if p.isdigit()) or (0,)

    for directory in sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True):
        if usable(directory):
            return directory
    initdb = shutil.which("initdb")
    if initdb and usable(Path(initdb).parent):
        return Path(initdb).parent
    raise StackError("PostgreSQL (initdb, postgres) not found: run `make system-deps`")

"""Throwaway Redis, PostgreSQL and nginx servers for the test suite.

Every server started here listens on 127.0.0.1 on a free port, keeps all of
its state (data, sockets, logs, pid files) inside its own temporary
directory and is a child process of the test run, so a test can stop it,
SIGKILL it and start it again on the same port with the same data.
The machine's own services (PostgreSQL on 5432, Redis on 6379, ...) are
never touched.

Readiness is always established by polling with a bounded deadline (PING
for Redis, ``pg_isready`` for PostgreSQL, a TCP connect for nginx), never by
sleeping a fixed amount of time.

Each process runs in its own session (``start_new_session=True``) so that a
Ctrl-C in the terminal does not reach it and so that :meth:`kill` can take
down the whole process group (Redis AOF-rewrite children, nginx workers).
Servers still alive when the interpreter exits are stopped (5 s grace, then
SIGKILL) and their temporary directories removed by an ``atexit`` hook.

The API is synchronous (blocking subprocess calls, sub-second except the
first PostgreSQL start); call it from sync fixtures, or directly in async
tests when briefly blocking the event loop is acceptable.

Typical use::

    with RedisServer() as redis_srv, PostgresServer() as pg:
        url = pg.create_database("app")
        ...
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from stack.processes import free_port, port_accepts  # one port registry per process

__all__ = [
    "LOOPBACK",
    "NginxServer",
    "PostgresServer",
    "RedisServer",
    "ServerError",
    "ServerStartError",
    "free_port",
    "nginx_binary",
    "postgres_bindir",
    "redis_server_binary",
    "wait_for_port",
]

LOOPBACK = "127.0.0.1"

#: How often readiness checks are retried while waiting for a deadline.
_POLL_INTERVAL = 0.02


class ServerError(RuntimeError):
    """A throwaway server could not be controlled as requested."""


class ServerStartError(ServerError):
    """A throwaway server failed to start; the message carries its log tail."""


# --------------------------------------------------------------------------
# Generic helpers
# --------------------------------------------------------------------------

def wait_for_port(
    host: str,
    port: int,
    timeout: float = 10.0,
    *,
    process: subprocess.Popen[Any] | None = None,
) -> None:
    """Block until (*host*, *port*) accepts TCP connections.

    Polls until *timeout* seconds have passed, then raises
    :class:`TimeoutError`. When *process* is given and exits first, a
    :class:`ServerStartError` is raised immediately instead of waiting out
    the deadline.
    """
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if port_accepts(host, port, timeout=max(0.05, min(0.5, remaining))):
            return
        if process is not None and process.poll() is not None:
            raise ServerStartError(
                f"process {process.pid} exited with code {process.returncode} "
                f"before {host}:{port} accepted connections"
            )
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{host}:{port} did not accept connections within {timeout:.1f}s")
        time.sleep(_POLL_INTERVAL)


def _poll_until(
    check: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    process: subprocess.Popen[Any] | None = None,
) -> None:
    """Call *check* until it returns True or *timeout* elapses.

    Raises :class:`TimeoutError` at the deadline, or :class:`ServerStartError`
    as soon as *process* (when given) has exited.
    """
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if process is not None and process.poll() is not None:
            raise ServerStartError(
                f"process {process.pid} exited with code {process.returncode} while waiting for {what}"
            )
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(_POLL_INTERVAL)


def _tail(path: Path, lines: int = 40) -> str:
    """Return the last *lines* lines of *path* ('' when it does not exist)."""
    try:
        with path.open("rb") as fh:
            try:
                fh.seek(-64 * 1024, os.SEEK_END)
            except OSError:
                fh.seek(0)
            data = fh.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def _clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for child processes: no PG*/REDIS* leakage from the caller."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PG", "REDIS"))}
    env.setdefault("LC_ALL", "C")
    if extra:
        env.update(extra)
    return env


def _is_root() -> bool:
    return os.geteuid() == 0


def _pid_alive(pid: int) -> bool:
    """True when *pid* exists and is not a zombie.

    Zombies count as dead: they hold no memory or sockets any more, and the
    container's PID 1 may never reap re-parented processes.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    # Field 3 (state) follows the parenthesised command name.
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X")


def _children(pid: int) -> list[int]:
    """Return the PIDs whose parent is *pid* (via /proc)."""
    result: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[1] == str(pid):
            result.append(int(entry))
    return result


def _listening_inodes() -> set[str]:
    """Socket inodes of every TCP socket in LISTEN state (this network namespace)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A":
                inodes.add(fields[9])
    return inodes


def _holds_any_socket(pid: int, inodes: set[str]) -> bool:
    """True when *pid* has an open fd on one of the socket *inodes*.

    When its fds cannot be inspected the process is assumed to hold them.
    """
    fd_dir = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    for fd in fds:
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            return True
    return False


def _signal_group(proc: subprocess.Popen[Any], sig: int) -> None:
    """Send *sig* to the process group led by *proc* (falls back to the pid)."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)


# --------------------------------------------------------------------------
# Binary discovery
# --------------------------------------------------------------------------


def redis_server_binary() -> str:
    """Return the path of ``redis-server`` (PATH, then /usr/bin, /usr/local/bin)."""
    found = shutil.which("redis-server")
    if found:
        return found
    for candidate in ("/usr/bin/redis-server", "/usr/local/bin/redis-server"):
        if os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError("redis-server not found; run scripts/install-system-deps.sh")


def _version_key(path: Path) -> tuple[int, ...]:
    parts = re.findall(r"\d+", path.parent.name)
    return tuple(int(p) for p in parts) or (0,)


def postgres_bindir() -> Path:
    """Return the directory holding ``initdb``/``postgres``/``pg_isready``.

    Looks at the newest ``/usr/lib/postgresql/<version>/bin`` first, then
    ``pg_config --bindir``, then the directory of ``initdb`` on PATH.
    """
    needed = ("initdb", "postgres", "pg_isready", "psql")

    def usable(directory: Path) -> bool:
        return all(os.access(directory / name, os.X_OK) for name in needed)

    versioned = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    for directory in versioned:
        if usable(directory):
            return directory
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            if out and usable(Path(out)):
                return Path(out)
    initdb = shutil.which("initdb")
    if initdb and usable(Path(initdb).parent):
        return Path(initdb).parent
    raise FileNotFoundError(
        "PostgreSQL server binaries (initdb, postgres) not found; run scripts/install-system-deps.sh"
    )


def nginx_binary() -> str:
    """Return the path of ``nginx`` (PATH, then /usr/sbin, /usr/local/sbin, ...)."""
    found = shutil.which("nginx")
    if found:
        return found
    for candidate in (
        "/usr/sbin/nginx",
        "/usr/local/sbin/nginx",
        "/usr/local/nginx/sbin/nginx",
        "/usr/bin/nginx",
    ):
        if os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError("nginx not found; run scripts/install-system-deps.sh")


# --------------------------------------------------------------------------
# Shared process management
# --------------------------------------------------------------------------

_live_servers: set[_ManagedServer] = set()


def _atexit_cleanup() -> None:
    """Stop (briefly graceful, then SIGKILL) and remove servers left behind."""
    for server in list(_live_servers):
        with contextlib.suppress(Exception):
            if server.running:
                server.stop(timeout=5)
        with contextlib.suppress(Exception):
            server.kill()
        with contextlib.suppress(Exception):
            server.cleanup()


atexit.register(_atexit_cleanup)


class _ManagedServer:
    """Common plumbing: temp dir, log files, child process, context manager."""

    #: Short name used for the temp dir prefix and messages.
    kind = "server"

    def __init__(self, *, port: int | None = None, host: str = LOOPBACK) -> None:
        self.host: str = host
        self._port_fixed = port is not None
        self._port: int = port if port is not None else free_port(host)
        # As root, service users (postgres, nginx workers) must be able to
        # traverse every parent directory: use /tmp rather than $TMPDIR.
        parent = "/tmp" if _is_root() and os.path.isdir("/tmp") else None
        self.base_dir: Path = Path(tempfile.mkdtemp(prefix=f"exe-collab-{self.kind}-", dir=parent))
        os.chmod(self.base_dir, 0o755)
        self.process: subprocess.Popen[bytes] | None = None
        self._log_handle: IO[bytes] | None = None
        _live_servers.add(self)

    # -- properties ---------------------------------------------------------

    @property
    def port(self) -> int:
        """TCP port the server listens on (stable across restarts)."""
        return self._port

    @property
    def log_path(self) -> Path:
        """File receiving the child process's stdout and stderr."""
        return self.base_dir / f"{self.kind}.log"

    @property
    def pid(self) -> int | None:
        """PID of the running server process, or None."""
        if self.process is None or self.process.poll() is not None:
            return None
        return self.process.pid

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self.process is not None and self.process.poll() is None

    # -- hooks for subclasses ----------------------------------------------

    def _log_paths(self) -> list[Path]:
        """Log files worth showing when something goes wrong."""
        return [self.log_path]

    def log_tail(self, lines: int = 40) -> str:
        """Return the tail of every log file of this server, labelled."""
        chunks = []
        for path in self._log_paths():
            text = _tail(path, lines)
            if text:
                chunks.append(f"--- {path} ---\n{text}")
        return "\n".join(chunks) or "(no log output)"

    def _start_error(self, message: str) -> ServerStartError:
        return ServerStartError(
            f"{self.kind} on {self.host}:{self.port}: {message}\n{self.log_tail()}"
        )

    def _spawn(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        user: str | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start *argv* in its own session with output appended to the log file."""
        if self.running:
            raise ServerError(f"{self.kind} is already running (pid {self.pid})")
        self._close_log()
        self._log_handle = self.log_path.open("ab")
        self._log_handle.write(f"\n==== {time.strftime('%H:%M:%S')} $ {' '.join(argv)}\n".encode())
        self._log_handle.flush()
        kwargs: dict[str, Any] = {}
        if user is not None:
            entry = pwd.getpwnam(user)
            kwargs.update(user=entry.pw_uid, group=entry.pw_gid, extra_groups=[])
        self.process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            cwd=self.base_dir,
            env=dict(env) if env is not None else _clean_env(),
            start_new_session=True,
            **kwargs,
        )
        return self.process

    def _close_log(self) -> None:
        if self._log_handle is not None:
            with contextlib.suppress(OSError):
                self._log_handle.close()
            self._log_handle = None

    def _wait_exit(self, timeout: float) -> bool:
        """Wait up to *timeout* for the process to exit; True when it did."""
        if self.process is None:
            return True
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def _terminate(self, sig: int, timeout: float) -> None:
        """Send *sig* to the server, wait, escalate to SIGKILL at the deadline."""
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            if not self._wait_exit(timeout):
                _signal_group(proc, signal.SIGKILL)
                self._wait_exit(10)
                self._close_log()
                raise ServerError(
                    f"{self.kind} did not exit within {timeout:.0f}s of signal {signal.Signals(sig).name}; "
                    f"killed it\n{self.log_tail()}"
                )
        self._close_log()

    # -- public lifecycle ------------------------------------------------------

    def start(self, timeout: float = 30.0) -> Self:  # pragma: no cover - overridden
        raise NotImplementedError

    def stop(self, timeout: float = 30.0) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def kill(self) -> None:
        """SIGKILL the server's whole process group and reap it (crash simulation)."""
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            _signal_group(proc, signal.SIGKILL)
            self._wait_exit(10)
        self._close_log()

    def restart(self, timeout: float = 30.0) -> Self:
        """Stop gracefully (*timeout* for the stop) and start again, same port and data."""
        self.stop(timeout=timeout)
        return self.start()

    def cleanup(self) -> None:
        """Kill the server if it is still running and delete its temp dir."""
        if self.running:
            self.kill()
        self._close_log()
        shutil.rmtree(self.base_dir, ignore_errors=True)
        _live_servers.discard(self)

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self.running:
                try:
                    self.stop()
                except ServerError:
                    self.kill()
        finally:
            self.cleanup()

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"<{type(self).__name__} {self.host}:{self.port} {state} dir={self.base_dir}>"


# --------------------------------------------------------------------------
# Redis
# --------------------------------------------------------------------------


class RedisServer(_ManagedServer):
    """A throwaway ``redis-server`` on 127.0.0.1.

    By default the append-only file is enabled (``appendonly yes``,
    ``appendfsync everysec``) and RDB snapshots are disabled, so data
    written before :meth:`stop` *or* :meth:`kill` survives :meth:`start`
    again: Redis writes the AOF buffer to the file before it replies to a
    client, so a process crash loses nothing that was acknowledged (only a
    machine crash could lose the last second).
    """

    kind = "redis"

    def __init__(
        self,
        *,
        port: int | None = None,
        appendonly: bool = True,
        appendfsync: str = "everysec",
        extra_args: Sequence[str] = (),
        binary: str | None = None,
    ) -> None:
        """Prepare (but do not start) a server.

        :param port: fixed port; a free one is chosen when omitted.
        :param appendonly: enable the AOF so restarts keep data.
        :param appendfsync: ``always``, ``everysec`` or ``no``.
        :param extra_args: additional ``--option value`` arguments.
        :param binary: explicit ``redis-server`` path.
        """
        if appendfsync not in ("always", "everysec", "no"):
            raise ValueError(f"invalid appendfsync {appendfsync!r}")
        self.binary: str = binary or redis_server_binary()
        super().__init__(port=port)
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.extra_args: list[str] = list(extra_args)
        self.data_dir: Path = self.base_dir / "data"
        self.data_dir.mkdir()

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://{self.host}:{self.port}/0"

    @property
    def server_log_path(self) -> Path:
        """Redis' own log file (``--logfile``)."""
        return self.base_dir / "redis-server.log"

    def _log_paths(self) -> list[Path]:
        return [self.log_path, self.server_log_path]

    def _argv(self) -> list[str]:
        return [
            self.binary,
            "--port", str(self.port),
            "--bind", self.host,
            "--daemonize", "no",
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            "--dir", str(self.data_dir),
            "--maxmemory-policy", "noeviction",
            "--logfile", str(self.server_log_path),
            "--loglevel", "notice",
            *self.extra_args,
        ]  # fmt: skip

    def ping(self, timeout: float = 0.5) -> bool:
        """True when the server answers ``PING`` with ``+PONG``.

        A server still loading its AOF answers ``-LOADING`` and is reported
        as not ready.
        """
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
                sock.settimeout(timeout)
                sock.sendall(b"PING\r\n")
                reply = b""
                while not reply.endswith(b"\r\n"):
                    chunk = sock.recv(256)
                    if not chunk:
                        break
                    reply += chunk
        except OSError:
            return False
        return reply.startswith(b"+PONG")

    def start(self, timeout: float = 30.0) -> Self:
        """Start the server and wait until it answers ``PING``."""
        attempts = 1 if self._port_fixed or self.process is not None else 3
        for attempt in range(attempts):
            self._spawn(self._argv())
            try:
                _poll_until(self.ping, timeout=timeout, what="redis PING", process=self.process)
            except (TimeoutError, ServerStartError) as exc:
                port_taken = "Address already in use" in self.log_tail()
                self.kill()
                if port_taken and attempt + 1 < attempts:
                    self._port = free_port(self.host)
                    continue
                raise self._start_error(str(exc)) from None
            return self
        raise AssertionError("unreachable")

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful shutdown (SIGTERM: flushes and fsyncs the AOF) and wait."""
        self._terminate(signal.SIGTERM, timeout)

    def restart_empty(self) -> Self:
        """SIGKILL, delete every file it kept, start again on the same port: a Redis
        host lost, or a failover to a replica that had nothing yet."""
        self.kill()
        shutil.rmtree(self.data_dir)
        self.data_dir.mkdir()
        return self.start()


# --------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------

_DB_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class PostgresServer(_ManagedServer):
    """A throwaway PostgreSQL cluster on 127.0.0.1.

    ``initdb`` runs once (trust auth, superuser ``postgres``, UTF8, C locale).
    The postmaster is a direct child of the test process; when the tests
    run as root it runs as the ``postgres`` OS user (PostgreSQL refuses to
    run as root). Durability is traded for speed by default (``fsync=off``,
    ``synchronous_commit=off``, ``full_page_writes=off``); pass
    ``durable=True`` to keep ``synchronous_commit=on`` when a test kills the
    server and expects every acknowledged commit to survive.
    """

    kind = "postgres"

    def __init__(
        self,
        *,
        port: int | None = None,
        durable: bool = False,
        settings: Mapping[str, str] | None = None,
        bindir: str | os.PathLike[str] | None = None,
    ) -> None:
        """Prepare (but do not start) a cluster.

        :param port: fixed port; a free one is chosen when omitted.
        :param durable: keep ``synchronous_commit=on`` (fsync stays off).
        :param settings: extra ``-c name=value`` server settings.
        :param bindir: directory holding the PostgreSQL binaries.
        """
        self.bindir: Path = Path(bindir) if bindir is not None else postgres_bindir()
        super().__init__(port=port)
        self.run_as: str | None = None
        if _is_root():
            try:
                entry = pwd.getpwnam("postgres")
            except KeyError:
                raise ServerError(
                    "running as root but there is no 'postgres' OS user to run PostgreSQL as"
                ) from None
            self.run_as = "postgres"
            os.chown(self.base_dir, entry.pw_uid, entry.pw_gid)
        self.data_dir: Path = self.base_dir / "data"
        self.socket_dir: Path = self.base_dir / "sock"
        self.socket_dir.mkdir(mode=0o755)
        if self.run_as is not None:
            entry = pwd.getpwnam(self.run_as)
            os.chown(self.socket_dir, entry.pw_uid, entry.pw_gid)
        self.settings: dict[str, str] = {
            "listen_addresses": self.host,
            "fsync": "off",
            "synchronous_commit": "on" if durable else "off",
            "full_page_writes": "off",
            "logging_collector": "off",
            "max_connections": "200",
        }
        if settings:
            self.settings.update(settings)
        self._initialised = False

    # -- helpers ------------------------------------------------------------

    def _bin(self, name: str) -> str:
        return str(self.bindir / name)

    def _as_service_user(self, argv: Sequence[str]) -> list[str]:
        """Prefix *argv* with ``runuser -u postgres --`` when running as root."""
        if self.run_as is None:
            return list(argv)
        runuser = shutil.which("runuser") or "/usr/sbin/runuser"
        return [runuser, "-u", self.run_as, "--", *argv]

    def _initdb(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            self._initialised = True
            return
        argv = self._as_service_user(
            [
                self._bin("initdb"),
                "-D", str(self.data_dir),
                "-U", "postgres",
                "-A", "trust",
                "-E", "UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )  # fmt: skip
        with self.log_path.open("ab") as log:
            log.write(f"\n==== $ {' '.join(argv)}\n".encode())
            log.flush()
            result = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.base_dir,
                env=_clean_env(),
                timeout=120,
                check=False,
            )
        if result.returncode != 0:
            raise self._start_error(f"initdb failed with exit code {result.returncode}")
        self._initialised = True

    def _argv(self) -> list[str]:
        argv = [
            self._bin("postgres"),
            "-D", str(self.data_dir),
            "-p", str(self.port),
            "-k", str(self.socket_dir),
        ]  # fmt: skip
        for name, value in self.settings.items():
            argv += ["-c", f"{name}={value}"]
        return argv

    def is_ready(self) -> bool:
        """True when ``pg_isready`` reports the server accepts connections."""
        try:
            result = subprocess.run(
                [
                    self._bin("pg_isready"),
                    "-q",
                    "-h", self.host,
                    "-p", str(self.port),
                    "-U", "postgres",
                    "-d", "postgres",
                    "-t", "2",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=_clean_env(),
                timeout=10,
                check=False,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired):
            return False
        return result.returncode == 0

    def _postmaster_pid_file(self) -> Path:
        return self.data_dir / "postmaster.pid"

    # -- lifecycle -------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> Self:
        """``initdb`` (first time only), start the postmaster and wait for readiness.

        Starting after :meth:`kill` performs crash recovery first; the wait
        covers it.
        """
        if not self._initialised:
            self._initdb()
        attempts = 1 if self._port_fixed or self.process is not None else 3
        for attempt in range(attempts):
            self._spawn(self._argv(), user=self.run_as)
            try:
                _poll_until(self.is_ready, timeout=timeout, what="pg_isready", process=self.process)
            except (TimeoutError, ServerStartError) as exc:
                port_taken = "Address already in use" in self.log_tail()
                self.kill()
                if port_taken and attempt + 1 < attempts:
                    self._port = free_port(self.host)
                    continue
                raise self._start_error(str(exc)) from None
            return self
        raise AssertionError("unreachable")

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT: roll back sessions, checkpoint) and wait."""
        self._terminate(signal.SIGINT, timeout)

    def kill(self) -> None:
        """Crash the server: SIGKILL the postmaster and every backend.

        PostgreSQL backends are in their own sessions, so killing the
        postmaster's process group is not enough; the postmaster is frozen
        with SIGSTOP (so it cannot fork), its children are collected and
        everything is SIGKILLed. Returns once no process of the cluster is
        left, so :meth:`start` can reuse the data directory immediately.
        """
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGSTOP)
            victims = _children(proc.pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            for pid in victims:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self._wait_exit(10)
            with contextlib.suppress(TimeoutError):
                _poll_until(
                    lambda: not any(_pid_alive(pid) for pid in victims),
                    timeout=10,
                    what="postgres backends to exit",
                )
        self._close_log()

    def cleanup(self) -> None:
        """Kill the server if needed, drop its SysV shm segment, delete the temp dir."""
        if self.running:
            self.kill()
        self._remove_stale_shm()
        super().cleanup()

    def _remove_stale_shm(self) -> None:
        """Remove the SysV segment left behind by a killed postmaster, if any."""
        try:
            lines = self._postmaster_pid_file().read_text().splitlines()
        except OSError:
            return
        # Line 7 is "<shm key> <shm id>".
        if len(lines) < 7:
            return
        fields = lines[6].split()
        ipcrm = shutil.which("ipcrm")
        if len(fields) == 2 and fields[1].isdigit() and ipcrm:
            subprocess.run(
                [ipcrm, "-m", fields[1]],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,
            )

    # -- databases ---------------------------------------------------------------

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL: ``postgresql+asyncpg://postgres@127.0.0.1:PORT/<database>``."""
        return f"postgresql+asyncpg://postgres@{self.host}:{self.port}/{database}"

    def dsn(self, database: str = "postgres") -> str:
        """libpq/asyncpg DSN: ``postgresql://postgres@127.0.0.1:PORT/<database>``."""
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run *sql* with ``psql`` as superuser and return its (unaligned) output."""
        if not self.running:
            raise ServerError("postgres is not running")
        result = subprocess.run(
            [
                self._bin("psql"),
                "-X", "-q", "-A", "-t",
                "-v", "ON_ERROR_STOP=1",
                "-h", self.host,
                "-p", str(self.port),
                "-U", "postgres",
                "-d", database,
                "-c", sql,
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=_clean_env(),
            timeout=60,
            check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise ServerError(f"psql failed ({result.returncode}): {result.stderr.strip()}")
        return result.stdout

    def create_database(self, name: str, *, exist_ok: bool = False) -> str:
        """Create database *name* and return its SQLAlchemy asyncpg URL."""
        if not _DB_NAME_RE.match(name):
            raise ValueError(f"invalid database name {name!r}")
        exists = self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'").strip() == "1"
        if exists and not exist_ok:
            raise ServerError(f"database {name!r} already exists")
        if not exists:
            self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop database *name* (terminating its connections); no error if absent."""
        if not _DB_NAME_RE.match(name):
            raise ValueError(f"invalid database name {name!r}")
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --------------------------------------------------------------------------
# nginx
# --------------------------------------------------------------------------

_TEMP_PATH_DIRECTIVES = (
    "client_body_temp_path",
    "proxy_temp_path",
    "fastcgi_temp_path",
    "uwsgi_temp_path",
    "scgi_temp_path",
)


_nginx_e_support: dict[str, bool] = {}


def _nginx_supports_e(binary: str) -> bool:
    """True when *binary* knows ``-e`` (startup error log; nginx >= 1.19.5)."""
    if binary not in _nginx_e_support:
        try:
            out = subprocess.run(
                [binary, "-h"], capture_output=True, text=True, timeout=10, check=False
            )
            _nginx_e_support[binary] = "-e filename" in (out.stdout + out.stderr)
        except (OSError, subprocess.TimeoutExpired):
            _nginx_e_support[binary] = False
    return _nginx_e_support[binary]


class NginxServer(_ManagedServer):
    """A throwaway nginx master process (``daemon off``) in a temp prefix.

    Give either a complete ``nginx.conf`` (*config*: a ``str`` is the config
    text, a :class:`~pathlib.Path` is read) or just
    the contents of the ``http { }`` block (*http_config*); in the latter
    case events/pid/log/temp-path boilerplate is generated. In both, these
    placeholders are substituted:

    * ``@PORT@``   – :attr:`port` (a free port unless *port* is given),
    * ``@PREFIX@`` – the prefix directory,
    * ``@HOST@``   – ``127.0.0.1``.

    The pid file, error log and temp paths always live in the prefix (for a
    full config they are injected unless the config sets them itself). The
    config must not contain a ``daemon`` directive. When running as root,
    workers run as nginx's default user (nobody); the prefix is
    world-traversable and its ``tmp`` directory world-writable so they can
    use it.
    """

    kind = "nginx"

    def __init__(
        self,
        config: str | os.PathLike[str] | None = None,
        *,
        http_config: str | None = None,
        port: int | None = None,
        binary: str | None = None,
    ) -> None:
        """Prepare (but do not start) nginx; see the class docstring."""
        if (config is None) == (http_config is None):
            raise ValueError("pass exactly one of config or http_config")
        self.binary: str = binary or nginx_binary()
        if http_config is not None:
            text = http_config
        elif isinstance(config, str):
            text = config
        else:
            assert config is not None
            text = Path(config).read_text()
        if port is None and "@PORT@" not in text:
            match = re.search(r"^\s*listen\s+(?:[\w.\[\]:]*:)?(\d+)\b", text, re.MULTILINE)
            if not match:
                raise ValueError(
                    "cannot tell which port nginx listens on: pass port= or use @PORT@"
                )
            port = int(match.group(1))
        super().__init__(port=port)
        self.logs_dir: Path = self.base_dir / "logs"
        self.tmp_dir: Path = self.base_dir / "tmp"
        self.logs_dir.mkdir(mode=0o755)
        self.tmp_dir.mkdir()
        os.chmod(self.tmp_dir, 0o1777)
        self.conf_path: Path = self.base_dir / "nginx.conf"
        self._write_config(None if http_config is not None else text, http_config)

    # -- config --------------------------------------------------------------

    @property
    def pid_path(self) -> Path:
        return self.base_dir / "nginx.pid"

    @property
    def error_log_path(self) -> Path:
        return self.logs_dir / "error.log"

    @property
    def access_log_path(self) -> Path:
        return self.logs_dir / "access.log"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self.port}"

    def _log_paths(self) -> list[Path]:
        return [self.log_path, self.error_log_path]

    def _substitute(self, text: str) -> str:
        return (
            text.replace("@PORT@", str(self.port))
            .replace("@PREFIX@", str(self.base_dir))
            .replace("@HOST@", self.host)
        )

    def _temp_paths(self) -> str:
        return "".join(
            f"    {name} {self.tmp_dir / name.removesuffix('_temp_path')};\n"
            for name in _TEMP_PATH_DIRECTIVES
        )

    def _write_config(self, full: str | None, http_config: str | None) -> None:
        if http_config is not None:
            text = (
                "worker_processes 1;\n"
                f"pid {self.pid_path};\n"
                f"error_log {self.error_log_path} info;\n"
                "events { worker_connections 256; }\n"
                "http {\n"
                f"    access_log {self.access_log_path};\n"
                f"{self._temp_paths()}"
                f"{http_config}\n"
                "}\n"
            )
        else:
            assert full is not None
            text = full
            if re.search(r"^\s*daemon\s", text, re.MULTILINE):
                raise ValueError(
                    "nginx config must not set 'daemon'; NginxServer runs nginx in the foreground"
                )
            if not any(name in text for name in _TEMP_PATH_DIRECTIVES):
                text = re.sub(
                    r"^(\s*http\s*\{)",
                    lambda m: m.group(1) + "\n" + self._temp_paths(),
                    text,
                    count=1,
                    flags=re.MULTILINE,
                )
        self.conf_path.write_text(self._substitute(text))

    def set_config(self, config: str | None = None, *, http_config: str | None = None) -> None:
        """Replace the config file (apply it with :meth:`reload`)."""
        if (config is None) == (http_config is None):
            raise ValueError("pass exactly one of config or http_config")
        self._write_config(config, http_config)

    def _argv(self, *extra: str) -> list[str]:
        conf_text = self.conf_path.read_text()
        directives = "daemon off;"
        if not re.search(r"^\s*pid\s", conf_text, re.MULTILINE):
            directives += f" pid {self.pid_path};"
        if not re.search(r"^\s*error_log\s", conf_text, re.MULTILINE):
            directives += f" error_log {self.error_log_path};"
        startup_log = ["-e", str(self.error_log_path)] if _nginx_supports_e(self.binary) else []
        return [
            self.binary,
            "-p", f"{self.base_dir}/",
            *startup_log,
            "-c", str(self.conf_path),
            "-g", directives,
            *extra,
        ]  # fmt: skip

    def check_config(self) -> None:
        """Run ``nginx -t``; raise :class:`ServerError` with nginx's stderr on failure."""
        result = subprocess.run(
            self._argv("-t", "-q"),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            cwd=self.base_dir,
            env=_clean_env(),
            timeout=30,
            check=False,
        )
        if result.returncode != 0:
            raise ServerError(
                f"nginx -t rejected {self.conf_path} (exit {result.returncode}):\n"
                f"{(result.stderr + result.stdout).strip()}\n--- config ---\n{self.conf_path.read_text()}"
            )

    # -- lifecycle -------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> Self:
        """Validate the config, start nginx and wait until the port accepts connections."""
        self.check_config()
        self._spawn(self._argv())
        deadline = time.monotonic() + timeout
        try:
            wait_for_port(self.host, self.port, timeout, process=self.process)
            # nginx binds its sockets *before* installing signal handlers; a
            # SIGHUP in that window would kill it. Workers are forked only
            # after the handlers exist, so wait for one (unless there is no
            # master/worker split).
            if not re.search(r"^\s*master_process\s+off", self.conf_path.read_text(), re.MULTILINE):
                _poll_until(
                    lambda: bool(self.workers()),
                    timeout=max(0.1, deadline - time.monotonic()),
                    what="nginx worker processes",
                    process=self.process,
                )
        except (TimeoutError, ServerStartError) as exc:
            self.kill()
            raise self._start_error(str(exc)) from None
        return self

    def workers(self) -> list[int]:
        """PIDs of the master's current child processes."""
        if not self.running:
            return []
        assert self.process is not None
        return [pid for pid in _children(self.process.pid) if _pid_alive(pid)]

    def reload(self, timeout: float = 30.0) -> None:
        """Validate the (possibly changed) config, SIGHUP the master, wait for it to apply.

        Returns once a worker started after the reload exists and every old
        worker has either exited or closed its listening sockets, i.e. every
        *new* connection gets the new configuration. Old workers may still
        finish requests/WebSockets on connections accepted before.
        """
        if not self.running:
            raise ServerError("nginx is not running")
        assert self.process is not None
        self.check_config()
        before = set(self.workers())
        self.process.send_signal(signal.SIGHUP)

        def applied() -> bool:
            if not set(self.workers()) - before:
                return False
            listening = _listening_inodes()
            return not any(_pid_alive(pid) and _holds_any_socket(pid, listening) for pid in before)

        try:
            _poll_until(
                applied,
                timeout=timeout,
                what="nginx to apply the reloaded config",
                process=self.process,
            )
        except (TimeoutError, ServerStartError) as exc:
            raise ServerError(f"nginx reload failed: {exc}\n{self.log_tail()}") from None

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGTERM) and wait for master and workers."""
        self._terminate(signal.SIGTERM, timeout)

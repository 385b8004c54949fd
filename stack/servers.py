"""Redis, PostgreSQL, nginx and the project's services as child processes on loopback.

One implementation for `make stack` (stack/stack.py) and the tests (tests/conftest.py,
tests/support/): each server is a :class:`~stack.processes.Process` plus the port it
listens on, the files it keeps and how to tell that it is ready (PING, `pg_isready`,
nginx's workers, an HTTP 200), always waited for with a bounded deadline.

A server given no `base_dir` keeps everything in a temporary directory of its own that
`cleanup()` deletes; such servers are also stopped (and their directories removed) when
the interpreter exits. `start()` on a port the server picked itself retries on another
free port when the first was taken meanwhile; a server keeps its port across restarts.

    with RedisServer() as redis_srv, PostgresServer() as pg:
        url = pg.create_database("app")
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
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self

from stack.processes import (
    LOOPBACK,
    REPO_ROOT,
    Process,
    StackError,
    as_user,
    children,
    find_binary,
    free_port,
    holds_socket,
    http_status,
    is_root,
    listening_inodes,
    pid_alive,
    plain_env,
    poll_until,
    port_accepts,
    postgres_bindir,
    tail,
)

#: Between readiness checks: each is an HTTP request or a subprocess, and the servers
#: starting meanwhile want the CPU.
_READY_INTERVAL = 0.1

_owned: set[Server] = set()


@atexit.register
def _cleanup_owned() -> None:
    """Stop the servers that own a temporary directory and remove the directories."""
    for server in list(_owned):
        with contextlib.suppress(Exception):
            server.cleanup()


class Server:
    """A server process on 127.0.0.1:`port`; subclasses say how to run it and when it is ready."""

    kind = "server"
    stop_signal: int = signal.SIGTERM
    #: The OS user the process runs as (None: this one).
    user: str | None = None

    def __init__(
        self,
        base_dir: Path | None = None,
        *,
        port: int | None = None,
        log: Path | None = None,
        name: str | None = None,
    ) -> None:
        self.host = LOOPBACK
        self.name = name or self.kind
        self._port_fixed = port is not None
        self.port: int = port if port is not None else free_port()
        self._owns_dir = base_dir is None
        if base_dir is None:
            # Service users (postgres, nginx workers) must traverse every parent: /tmp as root.
            parent = "/tmp" if is_root() else None
            base_dir = Path(tempfile.mkdtemp(prefix=f"exe-collab-{self.kind}-", dir=parent))
            base_dir.chmod(0o755)
            _owned.add(self)
        base_dir.mkdir(parents=True, exist_ok=True)
        self.base_dir = base_dir
        self.log_path = log or base_dir / f"{self.kind}.log"
        self.process: Process | None = None

    # -- what a subclass defines -----------------------------------------------

    def argv(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        """True once the server serves (checked repeatedly while it starts)."""
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return plain_env()

    @property
    def cwd(self) -> Path:
        return self.base_dir

    def log_paths(self) -> list[Path]:
        """The files worth showing when something goes wrong."""
        return [self.log_path]

    # -- state ---------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.alive

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.running and self.process is not None else None

    def log_tail(self, lines: int = 40) -> str:
        chunks = [f"--- {path} ---\n{text}" for path in self.log_paths() if (text := tail(path, lines))]
        return "\n".join(chunks) or "(no log output)"

    # -- lifecycle -----------------------------------------------------------------

    def spawn(self) -> Process:
        """Start the process (without waiting for it); see :func:`wait_ready`."""
        if self.running:
            raise StackError(f"{self.name} is already running (pid {self.pid})")
        self.process = Process.spawn(
            self.name, self.argv(), log=self.log_path, env=self.env(), cwd=self.cwd,
            user=self.user, stop_signal=self.stop_signal,
        )  # fmt: skip
        return self.process

    def start(self, timeout: float = 60.0) -> Self:
        """Start and wait until ready; StackError with the log's tail when it does not get there."""
        attempts = 1 if self._port_fixed or self.process is not None else 3
        for attempt in range(1, attempts + 1):
            self.spawn()
            try:
                wait_ready([self], timeout)
                return self
            except StackError:
                self.kill()
                if attempt < attempts and "Address already in use" in self.log_tail():
                    self.port = free_port()  # taken since free_port() handed it out
                    continue
                raise
        raise AssertionError("unreachable")

    def stop(self, timeout: float = 30.0) -> int | None:
        """Clean shutdown (`stop_signal`), SIGKILL at the deadline; nothing of it is left.
        Its exit status (None when it was not running)."""
        if self.process is None:
            return None
        self.process.stop(timeout)
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL the server and everything it started (a crash)."""
        if self.process is not None:
            self.process.kill()

    def restart(self, timeout: float = 30.0) -> Self:
        """Stop (`timeout` for the stop) and start again: same port, same data."""
        self.stop(timeout)
        return self.start()

    def cleanup(self) -> None:
        """Kill the server if it still runs; delete its directory when it is a temporary one."""
        self.kill()
        if self._owns_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)
        _owned.discard(self)

    def __enter__(self) -> Self:
        return self if self.running else self.start()

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            self.cleanup()

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"<{type(self).__name__} {self.host}:{self.port} {state} dir={self.base_dir}>"


def wait_ready(servers: Sequence[Server], timeout: float) -> None:
    """Wait until every server is ready, all at once; StackError naming one that exits or is late."""
    deadline = time.monotonic() + timeout
    pending = list(servers)
    while pending:
        for server in list(pending):
            if server.ready():
                pending.remove(server)
            elif not server.running:
                raise StackError(f"{server.name} exited before it was ready:\n{server.log_tail()}")
        if pending and time.monotonic() >= deadline:
            names = ", ".join(s.name for s in pending)
            raise StackError(
                f"{names} not ready within {timeout:.0f} s on port {pending[0].port}:\n"
                f"{pending[0].log_tail()}"
            )
        if pending:
            time.sleep(_READY_INTERVAL)


def _succeeds(argv: Sequence[str]) -> bool:
    try:
        result = subprocess.run(argv, check=False, capture_output=True, env=plain_env(), timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


# -- Redis -------------------------------------------------------------------------


class RedisServer(Server):
    """`redis-server` with the AOF on (`appendfsync everysec`), no RDB snapshots, `noeviction`.

    Redis writes the AOF buffer before it replies, so what a client saw acknowledged
    survives :meth:`stop` and :meth:`kill` alike.
    """

    kind = "redis"

    def __init__(
        self,
        base_dir: Path | None = None,
        *,
        port: int | None = None,
        log: Path | None = None,
        appendonly: bool = True,
        appendfsync: str = "everysec",
        extra_args: Sequence[str] = (),
        name: str | None = None,
    ) -> None:
        if appendfsync not in ("always", "everysec", "no"):
            raise ValueError(f"invalid appendfsync {appendfsync!r}")
        self.binary = find_binary("redis-server", "/usr/bin/redis-server", "/usr/local/bin/redis-server")
        super().__init__(base_dir, port=port, log=log, name=name)
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.extra_args = list(extra_args)
        self.data_dir = self.base_dir / "data"
        self.data_dir.mkdir(exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def argv(self) -> list[str]:
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
            *self.extra_args,
        ]  # fmt: skip

    def ready(self) -> bool:
        """PING answers +PONG (a server still loading its AOF answers -LOADING: not ready)."""
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                sock.settimeout(0.5)
                sock.sendall(b"PING\r\n")
                reply = b""
                while not reply.endswith(b"\r\n") and (chunk := sock.recv(256)):
                    reply += chunk
        except OSError:
            return False
        return reply.startswith(b"+PONG")

    def restart_empty(self) -> Self:
        """SIGKILL, delete every file it kept, start again on the same port: a Redis host
        lost, or a failover to a replica that had nothing yet."""
        self.kill()
        shutil.rmtree(self.data_dir)
        self.data_dir.mkdir()
        return self.start()


# -- PostgreSQL ----------------------------------------------------------------------

_DB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class PostgresServer(Server):
    """A PostgreSQL cluster of its own (`initdb` once: trust auth, superuser `postgres`, UTF8, C).

    As root the postmaster runs as the `postgres` OS user (PostgreSQL refuses root).
    `fsync` and `full_page_writes` are off; so is `synchronous_commit` unless `durable`
    (a test that kills the server and expects every acknowledged commit back).
    """

    kind = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown: roll back sessions, checkpoint

    def __init__(
        self,
        base_dir: Path | None = None,
        *,
        port: int | None = None,
        log: Path | None = None,
        durable: bool = False,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.bindir = postgres_bindir()
        super().__init__(base_dir, port=port, log=log)
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir / "sock"
        self.socket_dir.mkdir(mode=0o755, exist_ok=True)
        if is_root():
            try:
                entry = pwd.getpwnam("postgres")
            except KeyError:
                raise StackError("running as root but there is no 'postgres' OS user to run PostgreSQL as") from None
            self.user = "postgres"
            for directory in (self.base_dir, self.socket_dir):
                os.chown(directory, entry.pw_uid, entry.pw_gid)
        self.settings = {
            "listen_addresses": self.host,
            "unix_socket_directories": str(self.socket_dir),
            "fsync": "off",
            "synchronous_commit": "on" if durable else "off",
            "full_page_writes": "off",
            "logging_collector": "off",
            "max_connections": "200",
            **(settings or {}),
        }

    def _bin(self, name: str) -> str:
        return str(self.bindir / name)

    def argv(self) -> list[str]:
        argv = [self._bin("postgres"), "-D", str(self.data_dir), "-p", str(self.port)]
        for name, value in self.settings.items():
            argv += ["-c", f"{name}={value}"]
        return argv

    def ready(self) -> bool:
        return _succeeds(
            [self._bin("pg_isready"), "-q", "-h", self.host, "-p", str(self.port), "-U", "postgres", "-t", "2"]
        )

    def start(self, timeout: float = 60.0) -> Self:
        """`initdb` the first time, then start; after :meth:`kill` the wait covers crash recovery."""
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        return super().start(timeout)

    def _initdb(self) -> None:
        argv = [self._bin("initdb"), "-D", str(self.data_dir), "-U", "postgres", "-A", "trust",
                "-E", "UTF8", "--locale=C", "--no-sync"]  # fmt: skip
        with self.log_path.open("ab") as out:
            out.write(f"\n==== $ {' '.join(argv)}\n".encode())
            out.flush()
            result = subprocess.run(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=self.base_dir,
                env=plain_env(), timeout=120, check=False, **as_user(self.user),
            )  # fmt: skip
        if result.returncode != 0:
            raise StackError(f"initdb failed (exit {result.returncode}):\n{self.log_tail()}")

    def cleanup(self) -> None:
        """Also drop the SysV shared memory segment a killed postmaster leaves behind."""
        self.kill()
        with contextlib.suppress(OSError, IndexError, ValueError):
            # postmaster.pid's line 7 is "<shm key> <shm id>".
            shm_id = int((self.data_dir / "postmaster.pid").read_text().splitlines()[6].split()[1])
            subprocess.run(["ipcrm", "-m", str(shm_id)], capture_output=True, check=False, timeout=10)
        super().cleanup()

    # -- databases -------------------------------------------------------------------

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL: `postgresql+asyncpg://postgres@127.0.0.1:PORT/<database>`."""
        return f"postgresql+asyncpg://postgres@{self.host}:{self.port}/{database}"

    def dsn(self, database: str = "postgres") -> str:
        """libpq/asyncpg DSN: `postgresql://postgres@127.0.0.1:PORT/<database>`."""
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run `sql` with psql as the superuser; its unaligned output."""
        if not self.running:
            raise StackError("postgres is not running")
        result = subprocess.run(
            [self._bin("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", self.host,
             "-p", str(self.port), "-U", "postgres", "-d", database, "-c", sql],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, env=plain_env(), timeout=60, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise StackError(f"psql failed ({result.returncode}): {result.stderr.strip()}")
        return result.stdout

    def create_database(self, name: str, *, exist_ok: bool = False) -> str:
        """Create database `name`; its SQLAlchemy URL."""
        if not _DB_NAME.match(name):
            raise ValueError(f"invalid database name {name!r}")
        exists = self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'").strip() == "1"
        if exists and not exist_ok:
            raise StackError(f"database {name!r} already exists")
        if not exists:
            self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop database `name` (closing its connections); no error when it does not exist."""
        if not _DB_NAME.match(name):
            raise ValueError(f"invalid database name {name!r}")
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- nginx ---------------------------------------------------------------------------


class NginxServer(Server):
    """An nginx master (`daemon off`) running `conf` with `prefix` as its prefix.

    The config sets the port (`port` says which), its pid file and temp paths; startup
    errors go to `error_log`.
    """

    kind = "nginx"

    def __init__(self, conf: Path, *, prefix: Path, port: int, error_log: Path, log: Path | None = None) -> None:
        self.binary = find_binary("nginx", "/usr/sbin/nginx", "/usr/local/sbin/nginx")
        self.conf = conf
        self.error_log = error_log
        super().__init__(prefix, port=port, log=log)

    def argv(self, *extra: str) -> list[str]:
        return [self.binary, "-p", f"{self.base_dir}/", "-e", str(self.error_log), "-c", str(self.conf),
                "-g", "daemon off;", *extra]  # fmt: skip

    def log_paths(self) -> list[Path]:
        return [self.log_path, self.error_log]

    def check_config(self) -> None:
        """`nginx -t`; StackError with nginx's complaint when it rejects the config."""
        result = subprocess.run(
            self.argv("-t", "-q"), check=False, capture_output=True, text=True, env=plain_env(), timeout=30
        )
        if result.returncode != 0:
            raise StackError(f"nginx -t rejected {self.conf}:\n{(result.stderr + result.stdout).strip()}")

    def spawn(self) -> Process:
        self.check_config()
        return super().spawn()

    def ready(self) -> bool:
        # nginx binds before it installs its signal handlers, and forks workers after: a
        # SIGHUP before the workers exist would kill it.
        return port_accepts(self.host, self.port) and bool(self.workers())

    def workers(self) -> list[int]:
        return children(self.process.pid) if self.running and self.process is not None else []

    def reload(self, timeout: float = 30.0) -> None:
        """Check the config, SIGHUP, return once every new connection gets the new config:
        a new worker exists and no old one still listens (old ones may finish their connections)."""
        process = self.process
        if process is None or not process.alive:
            raise StackError("nginx is not running")
        self.check_config()
        before = set(self.workers())
        process.signal(signal.SIGHUP)

        def applied() -> bool:
            if not set(self.workers()) - before:
                return False
            listening = listening_inodes()
            return not any(pid_alive(p) and holds_socket(p, listening) for p in before)

        poll_until(applied, timeout=timeout, what="nginx to apply its new config", alive=lambda: process.alive)


# -- the project's services ----------------------------------------------------------------


class Service(Server):
    """`python -m <module>` (a service of this repository) on `port`, ready when GET
    `ready_path` answers 200. `env` is its whole environment; HOST and PORT are added."""

    kind = "service"

    def __init__(
        self,
        module: str,
        env: Mapping[str, str],
        base_dir: Path,
        *,
        port: int | None = None,
        log: Path | None = None,
        name: str | None = None,
        ready_path: str = "/healthcheck",
    ) -> None:
        self.module = module
        self.ready_path = ready_path
        self._env = dict(env)
        super().__init__(base_dir, port=port, log=log, name=name or module)
        if log is None:
            self.log_path = base_dir / f"{module.replace('.', '-')}-{self.port}.log"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/yjs"

    @property
    def cwd(self) -> Path:
        return REPO_ROOT

    def argv(self) -> list[str]:
        return [sys.executable, "-m", self.module]

    def env(self) -> dict[str, str]:
        return {**self._env, "HOST": self.host, "PORT": str(self.port)}

    def ready(self) -> bool:
        return http_status(self.http_url + self.ready_path, timeout=2) == 200

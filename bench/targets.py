"""The servers a benchmark run measures, side by side.

- `single`: one `python -m services.collab` without Redis (single-instance
  mode: it persists in process), on a throwaway PostgreSQL (or SQLite).
- `multi`: the project's HA topology from `make stack` (`stack.Stack`):
  2 collab instances + Redis + the persistence worker + PostgreSQL; load
  clients connect to the collab instances directly, round-robin (nginx and
  the gateways run but are not on the measured path).
- `cluster`: `multi` on a Redis Cluster of 3 masters and 3 replicas
  (`make stack redis=cluster`); Redis commands are counted on every master.
- `node`: the official reference server `@y/websocket-server@0.1.1`
  (installed from npm into bench/node/), in-memory, no auth.
- `url`: any y-websocket endpoint given on the command line.

A target knows its WebSocket base URLs, how to make rooms a token may join
(project targets write users, projects and memberships straight into their
database), which processes to measure, and how to put a big document into a
room for the join scenario.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from bench.run import ServerProbe
from stack.processes import http_status
from stack.servers import PostgresServer, Server, Service

ROOT = Path(__file__).resolve().parents[1]
NODE_DIR = ROOT / "bench" / "node"
NODE_SERVER = NODE_DIR / "node_modules" / "@y" / "websocket-server" / "src" / "server.js"
BENCH_SECRET = "bench-secret-" + "b" * 40


@dataclass
class JoinDocument:
    """The join scenario's document: `count` Y.Text inserts of ~256 characters (~5 MB)."""

    updates: list[bytes]
    full: bytes  # the whole document as one update
    head: bytes  # the first `len(updates) - pending` updates as one update
    pending: int  # how many updates stay uncompacted in the "pending" variant
    text_length: int

    @classmethod
    def build(cls, count: int = 20_000, pending: int = 10_000, chunk: int = 256) -> JoinDocument:
        import random
        import string

        from pycrdt import Doc, Text

        rng = random.Random(20_000)
        alphabet = string.ascii_letters + string.digits + " "
        base = "".join(rng.choice(alphabet) for _ in range(chunk * 2))
        doc: Doc = Doc()
        text = doc.get("t", type=Text)
        updates: list[bytes] = []
        doc.observe(lambda event: updates.append(event.update))
        head = b""
        length = 0
        for i in range(count):
            piece = base[i % chunk : i % chunk + chunk - (i % 17)]
            text.insert(0, piece)  # prepending is cheap in pycrdt; appending a long text is not
            length += len(piece)
            if i + 1 == count - pending:
                head = doc.get_update()
        return cls(updates, doc.get_update(), head or b"\x00\x00", pending, length)

    @property
    def update_bytes(self) -> int:
        return sum(len(u) for u in self.updates)


class Target:
    """Common interface; see the module docstring."""

    name = "target"
    kind = "generic"
    persistent = False  # rooms (documents) survive with no connection
    has_auth = False

    def __init__(self) -> None:
        self.ws_bases: list[str] = []
        self.probe = ServerProbe()
        self.info: dict[str, Any] = {}

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def url(self, room: str, user: int = 1, base: str | None = None) -> str:
        return f"{base or self.ws_bases[0]}/{room}"

    async def new_rooms(self, count: int, users: int) -> list[str]:
        """`count` fresh rooms that users 1..`users` may edit."""
        return [f"project-{uuid.uuid4()}" for _ in range(count)]

    def idle_target(self) -> tuple[str, str, int | None]:
        """(label, ws base, pid) of the one server process scenario (d) loads."""
        label = self.probe.hot_path[0] if self.probe.hot_path else ""
        pid = self.probe.processes[label][0] if label else None
        return label, self.ws_bases[0], pid

    async def restart_idle_target(self) -> None:
        """Restart the process scenario (d) measures, so its RSS baseline is a fresh process."""

    async def persistence_metrics(self) -> str | None:
        """The persistence worker's /metrics text, when the target has one."""
        return None

    async def redis_command_calls(self) -> dict[str, int] | None:
        """Calls per Redis command since the server started (`INFO commandstats`; commands a
        script runs are counted too), when the target has a Redis."""
        return None

    async def prepare_cold_rooms(
        self, document: JoinDocument, samples: int
    ) -> dict[str, list[str]] | None:
        """Rooms whose stored document is `document` (compacted / with pending updates); None
        when the target keeps documents only in memory."""
        return None


# ---------------------------------------------------------------------------
# the project
# ---------------------------------------------------------------------------


class ProjectTarget(Target):
    """Shared by the project's targets: the database side (memberships, stored documents)."""

    persistent = True
    has_auth = True

    def __init__(self) -> None:
        super().__init__()
        self.database_url = ""
        self.jwt_secret = BENCH_SECRET
        self._engine: Any = None
        self._sessionmaker: Any = None
        self._users = 0
        self._tokens: dict[int, str] = {}

    def url(self, room: str, user: int = 1, base: str | None = None) -> str:
        return f"{base or self.ws_bases[0]}/{room}?token={self.token(user)}"

    def token(self, user: int) -> str:
        token = self._tokens.get(user)
        if token is None:
            from shared.auth import mint_token

            token = self._tokens[user] = mint_token(self.jwt_secret, user, ttl_seconds=6 * 3600)[0]
        return token

    def _open_database(self) -> None:
        from shared.db.engine import create_engine, create_sessionmaker

        self._engine = create_engine(self.database_url)
        self._sessionmaker = create_sessionmaker(self._engine)

    async def _close_database(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    async def _ensure_users(self, count: int) -> None:
        from sqlalchemy import insert

        from shared.db.models import User

        if count <= self._users:
            return
        async with self._sessionmaker() as session, session.begin():
            await session.execute(
                insert(User),
                [
                    {
                        "id": i,
                        "email": f"bench-{i}@bench.invalid",
                        "password_hash": "-",
                        "display_name": f"bench {i}",
                        "roles": [],
                    }
                    for i in range(self._users + 1, count + 1)
                ],
            )
        self._users = count

    async def new_rooms(self, count: int, users: int) -> list[str]:
        from sqlalchemy import insert, select

        from shared.db.models import Project, ProjectMember

        await self._ensure_users(max(1, users))
        uuids = [uuid.uuid4() for _ in range(count)]
        async with self._sessionmaker() as session, session.begin():
            await session.execute(
                insert(Project), [{"uuid": u, "title": "bench", "owner_id": 1} for u in uuids]
            )
            ids = (
                (await session.execute(select(Project.id).where(Project.uuid.in_(uuids))))
                .scalars()
                .all()
            )
            await session.execute(
                insert(ProjectMember),
                [
                    {"project_id": pid, "user_id": user, "role": "owner" if user == 1 else "editor"}
                    for pid in ids
                    for user in range(1, max(1, users) + 1)
                ],
            )
        return [f"project-{u}" for u in uuids]

    async def prepare_cold_rooms(
        self, document: JoinDocument, samples: int
    ) -> dict[str, list[str]]:
        """Write the document straight into the store: compacted, and snapshot + pending log rows."""
        from shared.store import DocumentStore

        store = DocumentStore(self._sessionmaker)
        compacted = await self.new_rooms(samples, users=1)
        pending = await self.new_rooms(samples, users=1)
        for room in compacted:
            project = room.removeprefix("project-")
            await store.append({project: [document.full]})
            await store.compact(project)
        for room in pending:
            project = room.removeprefix("project-")
            await store.append({project: [document.head]})
            await store.compact(project)
            tail = document.updates[len(document.updates) - document.pending :]
            for start in range(0, len(tail), 2000):
                await store.append({project: tail[start : start + 2000]})
        return {"compacted": compacted, "pending": pending}


# The load generator is one address and a few users opening thousands of sockets (scenario d).
UNCAPPED_SOCKETS = {
    "WS_MAX_CONNECTIONS_PER_USER": "0",
    "WS_MAX_CONNECTIONS_PER_ADDRESS": "0",
    "WS_CONNECT_RATE_PER_ADDRESS": "0",
}


def _server_env(secret: str) -> dict[str, str]:
    """Variables of this environment that must not leak into a service we start."""
    drop = (
        "REDIS_",
        "DB_",
        "DATABASE_URL",
        "API_JWT_SECRET",
        "APP_SECRET",
        "INSTANCE_ID",
        "HOST",
        "PORT",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(API_JWT_SECRET=secret, APP_SECRET=secret, APP_ENV="production", PYTHONUNBUFFERED="1")
    return env


def _python_info() -> dict[str, Any]:
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    import aiohttp
    import pycrdt

    return {
        "event_loop": loop,
        "aiohttp": aiohttp.__version__,
        "pycrdt": getattr(pycrdt, "__version__", "?"),
    }


class SingleTarget(ProjectTarget):
    """One collab process in single-instance mode (no Redis), persisting in process."""

    name = "single"
    kind = "project-single"

    def __init__(
        self,
        *,
        database: str = "postgresql",
        log_level: str = "INFO",
        env: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.database = database
        self.log_level = log_level
        self.env_overrides = dict(env or {})
        self._workdir = Path(tempfile.mkdtemp(prefix="exe-collab-bench-single-"))
        self._postgres: Any = None
        self._process: Any = None

    async def start(self) -> None:
        from shared.db.engine import upgrade

        if self.database == "postgresql":
            self._postgres = PostgresServer(durable=True)
            await asyncio.to_thread(self._postgres.start)
            self.database_url = await asyncio.to_thread(self._postgres.create_database, "bench")
        else:
            self.database_url = f"sqlite+aiosqlite:///{self._workdir / 'bench.sqlite'}"
        await upgrade(self.database_url)
        self._open_database()
        env = _server_env(self.jwt_secret)
        env.update(
            DATABASE_URL=self.database_url,
            DATA_DIR=str(self._workdir / "data"),
            RUN_MIGRATIONS="0",
            LOG_LEVEL=self.log_level,
            REDIS_HOST="",
            **UNCAPPED_SOCKETS,
            **self.env_overrides,
        )
        self._process = Service("services.collab", {**os.environ, **env}, self._workdir)
        await asyncio.to_thread(self._process.start, 60.0)
        self.ws_bases = [self._process.ws_url]
        self.probe = ServerProbe(
            {"collab": (self._process.process.pid, False)}, hot_path=["collab"]
        )
        if self._postgres is not None:
            self.probe.processes["postgres"] = (self._postgres.pid, True)
        self.info = {
            "mode": "single-instance (no Redis), persists in process",
            "database": self.database,
            "collab_log": str(self._process.log_path),
            "env_overrides": self.env_overrides,
            **_python_info(),
        }

    async def restart_idle_target(self) -> None:
        await asyncio.to_thread(self._process.stop)
        await asyncio.to_thread(self._process.start, 60.0)
        self.probe.processes["collab"] = (self._process.process.pid, False)

    async def stop(self) -> None:
        await self._close_database()
        if self._process is not None:
            await asyncio.to_thread(self._process.stop)
        if self._postgres is not None:
            await asyncio.to_thread(self._postgres.cleanup)
        shutil.rmtree(self._workdir, ignore_errors=True)


class MultiTarget(ProjectTarget):
    """`make stack`'s topology with `collabs` collab instances, Redis and the worker."""

    name = "multi"
    kind = "project-multi"
    redis = "single"  # the stack's Redis: see stack/redis_part.py
    redis_label = "Redis"

    def __init__(
        self, *, collabs: int = 2, log_level: str = "INFO", env: dict[str, str] | None = None
    ) -> None:
        super().__init__()
        self.collabs = collabs
        self.log_level = log_level
        self.env_overrides = dict(env or {})
        self._stack: Any = None

    async def start(self) -> None:
        from stack.stack import Stack

        env = {"LOG_LEVEL": self.log_level, **UNCAPPED_SOCKETS, **self.env_overrides}
        self._stack = await asyncio.to_thread(
            Stack.start,
            collab=self.collabs,
            gateway=1,
            redis=self.redis,
            env=env,
            jwt_secret=self.jwt_secret,
            timeout=90.0,
        )
        stack = self._stack
        self.database_url = stack.database_url
        self._open_database()
        collabs = stack.collab_instances
        self.ws_bases = [f"ws://127.0.0.1:{i.port}/yjs" for i in collabs]
        processes = {i.name: (i.pid, False) for i in collabs}
        for node in stack.redis.processes():
            processes[node.name] = (node.pid, False)
        for worker in stack.persistence_instances:
            processes[worker.name] = (worker.pid, False)
        processes["postgres"] = (stack.postgres.pid, True)
        self.probe = ServerProbe(processes, hot_path=[i.name for i in collabs])
        self.info = {
            "mode": f"multi-instance: {self.collabs} collab + {self.redis_label} + persistence worker "
            f"+ PostgreSQL (make stack redis={self.redis})",
            "clients": "round-robin over the collab instances, directly (not through nginx)",
            "run_dir": str(stack.run_dir),
            "env_overrides": env,
            **_python_info(),
        }

    def idle_target(self) -> tuple[str, str, int | None]:
        first = self._stack.collab_instances[0]
        return first.name, self.ws_bases[0], first.pid

    async def restart_idle_target(self) -> None:
        first = await asyncio.to_thread(self._stack.restart_collab, 0)
        self.probe.processes[first.name] = (first.pid, False)

    async def persistence_metrics(self) -> str | None:
        workers = self._stack.persistence_instances if self._stack else []
        if not workers:
            return None
        return await asyncio.to_thread(
            _http_text, workers[0].url + "/metrics", headers=self._stack.metrics_headers
        )

    async def redis_command_calls(self) -> dict[str, int] | None:
        """Summed over the masters (a replica's commandstats count what it replays)."""
        return await asyncio.to_thread(command_calls, self._stack.redis.master_urls())

    async def stop(self) -> None:
        await self._close_database()
        if self._stack is not None:
            await asyncio.to_thread(self._stack.stop)


class ClusterTarget(MultiTarget):
    """`multi` on a Redis Cluster of 3 masters and 3 replicas (`make stack redis=cluster`)."""

    name = "cluster"
    redis = "cluster"
    redis_label = "Redis Cluster (3 masters, 3 replicas)"


# ---------------------------------------------------------------------------
# the reference and anything else
# ---------------------------------------------------------------------------


def ensure_node_server() -> Path:
    """Install bench/node (npm ci, from the committed lock file) when needed."""
    if NODE_SERVER.exists():
        return NODE_SERVER
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm not found: the Node reference target needs Node.js 20 and npm")
    subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=NODE_DIR,
        check=True,
        timeout=600,
    )
    return NODE_SERVER


class _NodeServer(Server):
    """The official y-websocket server under Node, in memory; ready once it answers HTTP."""

    kind = "node"

    def __init__(self, script: Path) -> None:
        super().__init__()
        self.script = script

    @property
    def cwd(self) -> Path:
        return NODE_DIR

    def argv(self) -> list[str]:
        return ["node", str(self.script)]

    def env(self) -> dict[str, str]:
        env = {**os.environ, "HOST": self.host, "PORT": str(self.port)}
        env.pop("YPERSISTENCE", None)
        return env

    def ready(self) -> bool:
        return http_status(f"http://{self.host}:{self.port}/", timeout=0.5) is not None


class NodeTarget(Target):
    """@y/websocket-server 0.1.1 (the official y-websocket server), in memory, no auth."""

    name = "node"
    kind = "node"

    def __init__(self) -> None:
        super().__init__()
        self._server: _NodeServer | None = None

    async def start(self) -> None:
        self._server = _NodeServer(await asyncio.to_thread(ensure_node_server))
        await asyncio.to_thread(self._server.start, 30.0)
        assert self._server.pid is not None  # started
        self.ws_bases = [f"ws://127.0.0.1:{self._server.port}/yjs"]
        self.probe = ServerProbe({"node": (self._server.pid, False)}, hot_path=["node"])
        version = await asyncio.to_thread(_node_version)
        self.info = {"mode": "@y/websocket-server 0.1.1, in memory, no auth", "node": version}

    async def restart_idle_target(self) -> None:
        await self.stop()
        await self.start()

    async def stop(self) -> None:
        if self._server is not None:
            await asyncio.to_thread(self._server.stop, 10.0)
            self._server.cleanup()


class UrlTarget(Target):
    """Any y-websocket endpoint: `NAME=ws://host:port/base[,pid=PID][,token=TOKEN]`."""

    kind = "url"

    def __init__(
        self, name: str, base: str, *, pid: int | None = None, token: str | None = None
    ) -> None:
        super().__init__()
        self.name = name
        self.ws_bases = [base.rstrip("/")]
        self._token = token
        if pid:
            self.probe = ServerProbe({name: (pid, True)}, hot_path=[name])
        self.info = {"mode": "external y-websocket endpoint", "url": base, "pid": pid}

    @classmethod
    def parse(cls, spec: str) -> UrlTarget:
        name, _, rest = spec.partition("=")
        if not name or not rest:
            raise ValueError(
                f"--url wants NAME=ws://host:port/base[,pid=PID][,token=T], got {spec!r}"
            )
        base, *options = rest.split(",")
        opts = dict(option.split("=", 1) for option in options if "=" in option)
        return cls(
            name, base, pid=int(opts["pid"]) if "pid" in opts else None, token=opts.get("token")
        )

    def url(self, room: str, user: int = 1, base: str | None = None) -> str:
        suffix = f"?token={self._token}" if self._token else ""
        return f"{base or self.ws_bases[0]}/{room}{suffix}"


def _node_version() -> str:
    result = subprocess.run(
        ["node", "--version"], capture_output=True, text=True, check=False, timeout=30
    )
    return result.stdout.strip()


def _http_text(url: str, timeout: float = 5.0, headers: dict[str, str] | None = None) -> str | None:
    try:
        request = urllib.request.Request(url, headers=headers or {})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read().decode()
    except OSError:
        return None


def command_calls(redis_urls: list[str]) -> dict[str, int]:
    """Calls per command, summed over the servers of `redis_urls`."""
    calls: Counter[str] = Counter()
    for url in redis_urls:
        with redis.Redis.from_url(url) as client:
            stats = client.info("commandstats")
        calls.update({name.removeprefix("cmdstat_"): int(entry["calls"]) for name, entry in stats.items()})
    return dict(calls)


def make_target(
    name: str, *, single_database: str = "postgresql", log_level: str = "INFO"
) -> Target:
    if name == "single":
        return SingleTarget(database=single_database, log_level=log_level)
    if name == "multi":
        return MultiTarget(log_level=log_level)
    if name == "cluster":
        return ClusterTarget(log_level=log_level)
    if name == "node":
        return NodeTarget()
    raise ValueError(f"unknown target {name!r} (single, multi, cluster, node, or --url NAME=URL)")


__all__ = [
    "ClusterTarget",
    "JoinDocument",
    "MultiTarget",
    "NodeTarget",
    "SingleTarget",
    "Target",
    "UrlTarget",
    "make_target",
]

"""The HA topology from real processes on loopback (`make stack`).

    nginx (the project's config) -> N gateways, N collabs
    redis-server (AOF on, noeviction), or with `redis="cluster"` a Redis Cluster of
    3 masters + 3 replicas (stack/redis_part.py), PostgreSQL (temp cluster),
    migrations, one persistence worker (when services/persistence exists)

Everything listens on 127.0.0.1 on free ports. The run directory (default
`./run/stack` for the CLI, a temporary one for tests) holds `stack.json`
(ports, pids, urls, instances), `stack.env` (the secrets, mode 0600),
`pids/` and `logs/`, Redis' AOF (`redis/`, or `redis-cluster/` made anew by every
start) and the shared assets directory. The
PostgreSQL cluster and nginx's temp files live in a scratch directory under
/tmp that the service users (postgres, nginx workers) can reach; it is
deleted by `stop()`.

Programmatic use (tests, benchmarks)::

    with Stack.start(collab=2, gateway=2) as stack:
        stack.url                   # http://127.0.0.1:PORT (nginx)
        stack.collab_instances      # [Instance(port, pid, url, instance_id), ...]
        stack.kill_collab(0)        # SIGKILL, stays in nginx's upstream (a crash)
        stack.restart_collab(0)     # back on the same port, new INSTANCE_ID
        stack.start_collab()        # scale up: new instance, nginx reloaded

Every method blocks until the change is in effect; from asyncio code call
them with `asyncio.to_thread`.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from stack import nginx as nginx_conf
from stack.nginx import Upstreams  # the class body's `nginx_conf` property hides the module
from stack.processes import (
    FOREIGN_PREFIXES,
    LOOPBACK,
    REPO_ROOT,
    Process,
    StackError,
    free_port,
    http_status,
    poll_until,
    tail,
)
from stack.redis_part import (
    RedisPart,
    SingleRedis,
    process_entry,
    redis_part,
    redis_part_from_record,
)
from stack.servers import NginxServer, PostgresServer, Service, wait_ready

DEFAULT_RUN_DIR = REPO_ROOT / "run" / "stack"
STATE_FILE = "stack.json"
SECRETS_FILE = "stack.env"
DATABASE_NAME = "exelearning"
SERVICES = ("gateway", "collab", "persistence")

#: Variables of the caller's environment that must not reach the services
#: (the stack sets its own).
_OWN_VARIABLES = {
    "APP_ENV", "HOST", "PORT", "DATABASE_URL", "DATA_DIR", "FILES_DIR", "INSTANCE_ID",
    "API_JWT_SECRET", "APP_SECRET", "RUN_MIGRATIONS", "AUTH_CREATE_USERS", "FORWARDED_ALLOW_IPS",
    "METRICS_TOKEN", "REDIS_HOST", "REDIS_PORT", "REDIS_CLUSTER_NODES",
}  # fmt: skip


def persistence_available() -> bool:
    """True once the persistence worker exists (`python -m services.persistence`)."""
    return (REPO_ROOT / "services" / "persistence" / "__main__.py").exists()


@dataclass
class Instance:
    """One gateway, collab or persistence process behind nginx."""

    service: str
    index: int
    port: int
    instance_id: str
    process: Process | None = None

    @property
    def name(self) -> str:
        return f"{self.service}-{self.index}"

    @property
    def url(self) -> str:
        """The instance itself, bypassing nginx: `http://127.0.0.1:PORT`."""
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def ws_url(self) -> str:
        """A collab instance's rooms, bypassing nginx: `ws://127.0.0.1:PORT/yjs`."""
        return f"ws://{LOOPBACK}:{self.port}/yjs"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.alive

    def record(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "name": self.name,
            "index": self.index,
            "port": self.port,
            "url": self.url,
            "instance_id": self.instance_id,
            "pid": self.pid,
            "alive": self.alive,
            "log": self.process.log if self.process else None,
            "process": self.process.record() if self.process else None,
        }


class Stack:
    """A running loopback stack; build it with :meth:`start` or :meth:`attach`."""

    def __init__(self, run_dir: Path, scratch_dir: Path) -> None:
        self.run_dir = run_dir
        self.scratch_dir = scratch_dir
        self.logs_dir = run_dir / "logs"
        self.nginx_dir = run_dir / "nginx"
        self.files_dir = run_dir / "files"
        self.nginx_port = 0
        self.postgres_port = 0
        self.jwt_secret = ""
        self.app_secret = ""
        self.metrics_token = ""
        self.client_max_body_size = nginx_conf.COMPOSE_VARIABLES["NGINX_CLIENT_MAX_BODY_SIZE"]
        self.env_overrides: dict[str, str] = {}
        self.redis: RedisPart = SingleRedis()
        self.postgres: Process | None = None
        self.nginx: Process | None = None
        self._nginx_server: NginxServer | None = None
        self._services: dict[str, Service] = {}  # by instance name
        self.instances: dict[str, list[Instance]] = {s: [] for s in SERVICES}
        self.warnings: list[str] = []
        self.timeout = 60.0
        self._owns_run_dir = False
        self._lock = threading.RLock()
        self._stopped = False

    # -- construction ----------------------------------------------------------

    @classmethod
    def start(
        cls,
        collab: int = 2,
        gateway: int = 2,
        *,
        persistence: bool = True,
        redis: str = "single",
        run_dir: str | os.PathLike[str] | None = None,
        nginx_port: int | None = None,
        env: Mapping[str, str] | None = None,
        jwt_secret: str | None = None,
        app_secret: str | None = None,
        client_max_body_size: str | None = None,
        timeout: float = 60.0,
        detach: bool = False,
    ) -> Stack:
        """Start the whole topology and return once nginx answers through every part.

        `redis` is `single` (one redis-server) or `cluster` (a Redis Cluster of 3 masters
        and 3 replicas). `env` adds or overrides service environment variables (e.g.
        `WS_PING_INTERVAL`). Without `run_dir` a temporary directory is used
        and deleted by :meth:`stop`. Unless `detach`, the processes are
        stopped when this interpreter exits, should :meth:`stop` not be called.
        """
        if collab < 1 or gateway < 1:
            raise ValueError("a stack needs at least one collab and one gateway instance")
        part = redis_part(redis)
        owns = run_dir is None
        run_path = Path(run_dir) if run_dir is not None else Path(tempfile.mkdtemp(prefix="exe-collab-stack-run-"))
        run_path = run_path.resolve()
        _refuse_running(run_path)
        scratch = Path(tempfile.mkdtemp(prefix="exe-collab-stack-", dir="/tmp"))
        os.chmod(scratch, 0o755)
        stack = cls(run_path, scratch)
        stack._owns_run_dir = owns
        stack.redis = part
        stack.timeout = timeout
        stack.jwt_secret = jwt_secret or secrets.token_urlsafe(48)
        stack.app_secret = app_secret or secrets.token_urlsafe(48)
        stack.metrics_token = secrets.token_urlsafe(32)
        stack.env_overrides = dict(env or {})
        if client_max_body_size:
            stack.client_max_body_size = client_max_body_size
        elif {"MAX_ASSET_BYTES", "MAX_SYNC_MESSAGE_BYTES"} & set(stack.env_overrides):
            stack.client_max_body_size = nginx_conf.client_max_body_size(
                int(stack.env_overrides.get("MAX_ASSET_BYTES", nginx_conf.DEFAULT_MAX_ASSET_BYTES)),
                int(stack.env_overrides.get("MAX_SYNC_MESSAGE_BYTES", nginx_conf.DEFAULT_MAX_SYNC_MESSAGE_BYTES)),
            )
        if not detach:
            atexit.register(stack._atexit)
        try:
            stack._boot(collab, gateway, persistence, nginx_port)
        except BaseException:
            with contextlib.suppress(Exception):
                stack.stop(keep_logs=True)
            raise
        return stack

    @classmethod
    def attach(cls, run_dir: str | os.PathLike[str] = DEFAULT_RUN_DIR) -> Stack:
        """The stack described by `run_dir/stack.json` (started by another process)."""
        run_path = Path(run_dir).resolve()
        try:
            state = json.loads((run_path / STATE_FILE).read_text())
        except FileNotFoundError:
            raise StackError(f"no stack in {run_path} (no {STATE_FILE})") from None
        stack = cls(run_path, Path(state["scratch_dir"]))
        stack.nginx_port = state["nginx"]["port"]
        stack.redis = redis_part_from_record(state["redis"])
        stack.postgres_port = state["postgres"]["port"]
        stack.client_max_body_size = state.get("client_max_body_size", stack.client_max_body_size)
        stack.env_overrides = dict(state.get("env_overrides", {}))
        for part in ("postgres", "nginx"):
            record = state[part].get("process")
            setattr(stack, part, Process.from_record(record) if record else None)
        for item in state["instances"]:
            stack.instances.setdefault(item["service"], []).append(
                Instance(
                    item["service"],
                    item["index"],
                    item["port"],
                    item["instance_id"],
                    Process.from_record(item["process"]) if item.get("process") else None,
                )
            )
        with contextlib.suppress(OSError):
            for line in (run_path / SECRETS_FILE).read_text().splitlines():
                key, _, value = line.partition("=")
                if key == "API_JWT_SECRET":
                    stack.jwt_secret = value
                elif key == "APP_SECRET":
                    stack.app_secret = value
                elif key == "METRICS_TOKEN":
                    stack.metrics_token = value
        return stack

    # -- addresses ---------------------------------------------------------------

    @property
    def url(self) -> str:
        """The load balancer: `http://127.0.0.1:PORT`."""
        return f"http://{LOOPBACK}:{self.nginx_port}"

    @property
    def metrics_headers(self) -> dict[str, str]:
        """What an instance's `/metrics` asks of its scraper (`METRICS_TOKEN`)."""
        return {"Authorization": f"Bearer {self.metrics_token}"}

    @property
    def ws_url(self) -> str:
        """`ws://127.0.0.1:PORT/yjs` (append `/project-<uuid>?token=...`)."""
        return f"ws://{LOOPBACK}:{self.nginx_port}/yjs"

    @property
    def redis_url(self) -> str:
        """`redis://127.0.0.1:PORT/0`, or `redis+cluster://` and every node of a cluster."""
        return self.redis.url

    @property
    def database_url(self) -> str:
        """SQLAlchemy URL (asyncpg); trust authentication, no password."""
        return f"postgresql+asyncpg://postgres@{LOOPBACK}:{self.postgres_port}/{DATABASE_NAME}"

    @property
    def database_dsn(self) -> str:
        """libpq/asyncpg DSN of the same database."""
        return f"postgresql://postgres@{LOOPBACK}:{self.postgres_port}/{DATABASE_NAME}"

    @property
    def gateway_instances(self) -> list[Instance]:
        return list(self.instances["gateway"])

    @property
    def collab_instances(self) -> list[Instance]:
        return list(self.instances["collab"])

    @property
    def persistence_instances(self) -> list[Instance]:
        return list(self.instances["persistence"])

    @property
    def nginx_conf(self) -> Path:
        """The main nginx config file this stack runs with."""
        return self.nginx_dir / nginx_conf.MAIN_CONF

    @property
    def nginx_access_log(self) -> Path:
        return self.logs_dir / "nginx-access.log"

    def mint_token(
        self, user_id: str | int = "stack-user", *, email: str = "", ttl_seconds: int = 3600
    ) -> str:
        """A JWT every instance of this stack accepts."""
        from shared.auth import mint_token

        return mint_token(self.jwt_secret, user_id, email=email, ttl_seconds=ttl_seconds)[0]

    def processes(self) -> list[Process]:
        """Every process of the stack, in stop order (front to back)."""
        result = [self.nginx] if self.nginx else []
        for service in SERVICES:
            result += [i.process for i in self.instances[service] if i.process is not None]
        result += self.redis.processes()
        result += [self.postgres] if self.postgres else []
        return result

    # -- scaling and failures ------------------------------------------------------

    def start_collab(self) -> Instance:
        """Scale up: one more collab instance, added to nginx (reloaded)."""
        return self.start_instance("collab")

    def kill_collab(self, index: int) -> Instance:
        """SIGKILL collab instance `index` (a crash); nginx keeps it as a failing upstream."""
        return self.kill_instance("collab", index)

    def stop_collab(self, index: int) -> Instance:
        """Gracefully stop collab instance `index` (SIGTERM: clients get 1001)."""
        return self.stop_instance("collab", index)

    def restart_collab(self, index: int, *, graceful: bool = True) -> Instance:
        """Stop (SIGTERM, or SIGKILL when not `graceful`) and start again on the same port."""
        return self.restart_instance("collab", index, graceful=graceful)

    def start_gateway(self) -> Instance:
        return self.start_instance("gateway")

    def kill_gateway(self, index: int) -> Instance:
        return self.kill_instance("gateway", index)

    def restart_gateway(self, index: int, *, graceful: bool = True) -> Instance:
        return self.restart_instance("gateway", index, graceful=graceful)

    def start_instance(self, service: str) -> Instance:
        with self._lock:
            instance = self._new_instance(service)
            self._spawn_instance(instance)
            self._wait_ready([instance])
            if service in ("gateway", "collab"):
                self._write_upstreams()
                self.reload_nginx()
            self._save()
            return instance

    def kill_instance(self, service: str, index: int) -> Instance:
        with self._lock:
            instance = self.instances[service][index]
            if instance.process is not None:
                instance.process.kill()
            self._save()
            return instance

    def stop_instance(self, service: str, index: int, timeout: float = 20.0) -> Instance:
        with self._lock:
            instance = self.instances[service][index]
            if instance.process is not None:
                instance.process.stop(timeout)
            self._save()
            return instance

    def restart_instance(self, service: str, index: int, *, graceful: bool = True) -> Instance:
        with self._lock:
            instance = self.instances[service][index]
            if instance.process is not None:
                if graceful:
                    instance.process.stop()
                else:
                    instance.process.kill()
            instance.instance_id = _new_instance_id()
            self._spawn_instance(instance)
            self._wait_ready([instance])
            self._save()
            return instance

    def reload_nginx(self, timeout: float = 30.0) -> None:
        """Check the config, SIGHUP nginx, return once new connections get the new config."""
        if self._nginx_server is None:
            raise StackError("nginx is not running")
        self._nginx_server.reload(timeout)

    # -- stopping ------------------------------------------------------------------

    def stop(self, *, keep_logs: bool = False) -> None:
        """Stop every process of the stack (front to back) and remove the scratch directory.

        Afterwards none of the stack's processes is left. A temporary run
        directory is deleted too unless `keep_logs`.
        """
        with self._lock:
            errors = []
            for process in self.processes():
                try:
                    process.stop(timeout=20.0)
                except Exception as exc:  # noqa: BLE001 - keep stopping the others
                    errors.append(f"{process.name}: {exc}")
            self._stopped = True
            shutil.rmtree(self.scratch_dir, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                (self.run_dir / STATE_FILE).unlink()
            shutil.rmtree(self.run_dir / "pids", ignore_errors=True)
            if self._owns_run_dir and not keep_logs:
                shutil.rmtree(self.run_dir, ignore_errors=True)
            if errors:
                raise StackError("; ".join(errors))

    def _atexit(self) -> None:
        if not self._stopped:
            with contextlib.suppress(Exception):
                self.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- state ----------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """What stack.json holds (no secrets)."""
        return {
            "version": 1,
            "url": self.url,
            "ws_url": self.ws_url,
            "run_dir": str(self.run_dir),
            "scratch_dir": str(self.scratch_dir),
            "secrets_file": str(self.run_dir / SECRETS_FILE),
            "files_dir": str(self.files_dir),
            "client_max_body_size": self.client_max_body_size,
            "env_overrides": self.env_overrides,
            "nginx": process_entry(
                self.nginx,
                self.nginx_port,
                url=self.url,
                conf=str(self.nginx_conf),
                access_log=str(self.nginx_access_log),
                error_log=str(self.logs_dir / "nginx-error.log"),
            ),
            "redis": self.redis.record(),
            "postgres": process_entry(self.postgres, self.postgres_port, database_url=self.database_url),
            "instances": [i.record() for s in SERVICES for i in self.instances[s]],
            "counts": {s: len(self.instances[s]) for s in SERVICES},
            "warnings": self.warnings,
        }

    def _save(self) -> None:
        state = self.state()
        tmp = self.run_dir / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(self.run_dir / STATE_FILE)
        pids = self.run_dir / "pids"
        shutil.rmtree(pids, ignore_errors=True)
        pids.mkdir()
        for process in self.processes():
            if process.alive:
                (pids / f"{process.name}.pid").write_text(f"{process.pid}\n")

    # -- boot -------------------------------------------------------------------------

    def _boot(self, collab: int, gateway: int, persistence: bool, nginx_port: int | None) -> None:
        for directory in (self.run_dir, self.logs_dir, self.files_dir):
            directory.mkdir(parents=True, exist_ok=True)
        secrets_path = self.run_dir / SECRETS_FILE
        secrets_path.write_text(
            f"API_JWT_SECRET={self.jwt_secret}\nAPP_SECRET={self.app_secret}\n"
            f"METRICS_TOKEN={self.metrics_token}\n"
        )
        secrets_path.chmod(0o600)

        self.redis.start(self.run_dir, self.logs_dir, self.timeout)
        self._start_postgres()
        self._migrate()

        new = [self._new_instance("gateway") for _ in range(gateway)]
        new += [self._new_instance("collab") for _ in range(collab)]
        if persistence:
            if persistence_available():
                new.append(self._new_instance("persistence"))
            else:
                warning = (
                    "services/persistence/__main__.py does not exist yet: no persistence worker"
                )
                self.warnings.append(warning)
                print(f"stack: WARNING: {warning}", file=sys.stderr)
        for instance in new:
            self._spawn_instance(instance)
        self._wait_ready(new)
        self._start_nginx(nginx_port)
        self._save()

    def _env(self, **extra: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in _OWN_VARIABLES and not k.startswith(FOREIGN_PREFIXES)
        }
        env.update(
            APP_ENV="production",
            API_JWT_SECRET=self.jwt_secret,
            APP_SECRET=self.app_secret,
            METRICS_TOKEN=self.metrics_token,
            DATABASE_URL=self.database_url,
            **self.redis.env(),
            FILES_DIR=str(self.files_dir),
            RUN_MIGRATIONS="0",
            AUTH_CREATE_USERS="1",
            # nginx is the only client: believe its X-Forwarded-For.
            FORWARDED_ALLOW_IPS=LOOPBACK,
            PYTHONUNBUFFERED="1",
        )
        env.update(extra)
        env.update(self.env_overrides)
        return env

    def _start_postgres(self) -> None:
        # In the scratch directory: the postgres OS user (as root) must reach it.
        server = PostgresServer(
            self.scratch_dir / "postgres", log=self.logs_dir / "postgres.log", durable=True,
            settings={"max_connections": "300"},
        )  # fmt: skip
        self.postgres = server.start(self.timeout).process
        self.postgres_port = server.port
        server.create_database(DATABASE_NAME)

    def _migrate(self) -> None:
        log = self.logs_dir / "migrate.log"
        with log.open("ab") as out:
            result = subprocess.run(
                [sys.executable, "-m", "alembic", "upgrade", "head"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=REPO_ROOT, env=self._env(DATA_DIR=str(self.run_dir / "data" / "migrate")),
                timeout=300, check=False,
            )  # fmt: skip
        if result.returncode != 0:
            raise StackError(f"migrations failed (exit {result.returncode}):\n{tail(log)}")

    def _new_instance(self, service: str) -> Instance:
        index = len(self.instances[service]) + 1
        instance = Instance(service, index, free_port(), _new_instance_id())
        self.instances[service].append(instance)
        return instance

    def _spawn_instance(self, instance: Instance) -> None:
        data_dir = self.run_dir / "data" / instance.name
        service = Service(
            f"services.{instance.service}",
            self._env(INSTANCE_ID=instance.instance_id, DATA_DIR=str(data_dir)),
            data_dir,
            port=instance.port,
            log=self.logs_dir / f"{instance.name}.log",
            name=instance.name,
            ready_path="/health/ready",
        )
        instance.process = service.spawn()
        self._services[instance.name] = service

    def _wait_ready(self, instances: list[Instance]) -> None:
        """Wait until every instance answers 200 on /health/ready (all in parallel)."""
        wait_ready([self._services[i.name] for i in instances], self.timeout)

    def _nginx_variables(self) -> dict[str, str]:
        temp = self.scratch_dir / "nginx-temp"
        temp.mkdir(exist_ok=True)
        temp.chmod(0o1777)
        return nginx_conf.stack_variables(
            port=self.nginx_port,
            logs_dir=self.logs_dir,
            temp_dir=temp,
            pid_file=self.nginx_dir / "nginx.pid",
            client_max_body_size=self.client_max_body_size,
        )

    def _upstreams(self) -> Upstreams:
        return nginx_conf.loopback_upstreams(
            [i.port for i in self.instances["gateway"]],
            [i.port for i in self.instances["collab"]],
        )

    def _write_upstreams(self) -> None:
        nginx_conf.write_upstreams(self.nginx_dir, self._upstreams())

    def _start_nginx(self, port: int | None) -> None:
        self.nginx_port = port or free_port()
        nginx_conf.write_config(self.nginx_dir, self._nginx_variables(), self._upstreams())
        server = NginxServer(
            self.nginx_conf, prefix=self.nginx_dir, port=self.nginx_port,
            error_log=self.logs_dir / "nginx-error.log", log=self.logs_dir / "nginx.log",
        )  # fmt: skip
        self._nginx_server = server.start(self.timeout)
        nginx = self.nginx = server.process
        assert nginx is not None  # started
        try:
            poll_until(lambda: http_status(self.url + "/health") == 200, timeout=self.timeout,
                       what="nginx /health", alive=lambda: nginx.alive)  # fmt: skip
        except StackError as exc:
            raise StackError(f"nginx: {exc}:\n{server.log_tail()}") from None

def _new_instance_id() -> str:
    """A fresh id per process incarnation (32 hex digits = the envelope's 16 bytes)."""
    return uuid.uuid4().hex


def _refuse_running(run_dir: Path) -> None:
    """Refuse to start over a stack that still runs in `run_dir`."""
    if not (run_dir / STATE_FILE).exists():

        return
    try:
        existing = Stack.attach(run_dir)
    except (StackError, ValueError, KeyError):
        return
    if any(p.alive for p in existing.processes()):
        raise StackError(
            f"a stack is already running in {run_dir} ({existing.url}): stop it first "
            "(make stack-down)"
        )
    # A stack that died without stack-down: drop what it left behind.
    if existing.scratch_dir.name.startswith("exe-collab-stack-"):
        shutil.rmtree(existing.scratch_dir, ignore_errors=True)

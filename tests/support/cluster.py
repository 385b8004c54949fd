"""Several collab instances, a worker, one Redis (or a Redis Cluster) and one PostgreSQL, for
multi-instance tests."""

from __future__ import annotations

import uuid
from pathlib import Path

import aiohttp
from pycrdt import Text

from services.collab.app import create_app as create_collab_app
from services.gateway.app import create_app as create_gateway_app
from services.persistence.app import create_app as create_worker_app
from shared.compaction import build_doc
from shared.config import Settings
from shared.db.engine import create_engine, create_sessionmaker, upgrade
from shared.db.models import Project, ProjectMember, User
from shared.store import DocumentStore
from stack.redis_cluster import LocalRedisCluster
from stack.servers import RedisServer
from tests.support.app_server import InProcessServer
from tests.support.processes import ServiceProcess
from tests.support.throttle import UNTHROTTLED
from tests.support.wait import eventually

SECRET = "cluster-test-secret-" + "y" * 32


class Cluster:
    def __init__(
        self,
        tmp_path: Path,
        redis: RedisServer | LocalRedisCluster,
        database_url: str,
        **overrides: object,
    ) -> None:
        self.tmp_path = tmp_path
        self.redis = redis
        self.database_url = database_url
        self.overrides = overrides
        self.engine = create_engine(database_url)
        self.store = DocumentStore(create_sessionmaker(self.engine))
        self.servers: list[InProcessServer] = []
        self.processes: list[ServiceProcess] = []

    @property
    def env(self) -> dict[str, str]:
        """The environment of a service process in this cluster."""
        env = {
            "API_JWT_SECRET": SECRET,
            "APP_SECRET": SECRET,
            **self._redis_env(),
            "DATABASE_URL": self.database_url,
            "DATA_DIR": str(self.tmp_path / "data"),
            "RUN_MIGRATIONS": "0",
            "PRESENCE_INTERVAL": "0.3",
            "PRESENCE_TTL": "1.0",
            "ROOM_UNLOAD_GRACE": "1",
            "COMPACT_IDLE_SECONDS": "2",
            "LOG_LEVEL": "INFO",
            **UNTHROTTLED,
        }
        env.update({key.upper(): str(value) for key, value in self.overrides.items()})
        return env

    def _redis_env(self) -> dict[str, str]:
        if isinstance(self.redis, LocalRedisCluster):
            return {"REDIS_CLUSTER_NODES": self.redis.seeds, "PERSIST_PARTITIONS": "8"}
        return {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(self.redis.port)}

    def settings(self, **overrides: str) -> Settings:
        return Settings.from_env({**self.env, **{k.upper(): v for k, v in overrides.items()}})

    async def migrate(self) -> Cluster:
        await upgrade(self.database_url)
        return self

    async def collab(self, name: str, **overrides: str) -> InProcessServer:
        server = await InProcessServer(create_collab_app, self.settings(instance_id=name, **overrides)).start()
        self.servers.append(server)
        return server

    async def worker(self, name: str = "worker-1", **overrides: str) -> InProcessServer:
        server = await InProcessServer(create_worker_app, self.settings(instance_id=name, **overrides)).start()
        self.servers.append(server)
        return server

    async def gateway(self, name: str = "gateway-1", **overrides: str) -> InProcessServer:
        server = await InProcessServer(create_gateway_app, self.settings(instance_id=name, **overrides)).start()
        self.servers.append(server)
        return server

    async def pair(self) -> tuple[InProcessServer, InProcessServer, InProcessServer]:
        """Collab instances "a" and "b", a gateway and a persistence worker: (a, b, gateway)."""
        a, b = await self.collab("a"), await self.collab("b")
        gateway = await self.gateway()
        await self.worker()
        return a, b, gateway

    def collab_process(self, name: str) -> ServiceProcess:
        process = ServiceProcess("services.collab", {**self.env, "INSTANCE_ID": name}, self.tmp_path)
        self.processes.append(process)
        return process.start()

    def worker_process(self, name: str = "worker-p") -> ServiceProcess:
        process = ServiceProcess("services.persistence", {**self.env, "INSTANCE_ID": name}, self.tmp_path)
        self.processes.append(process)
        return process.start()

    def token(self, user_id: int = 1) -> str:
        from shared.auth import mint_token

        return mint_token(SECRET, user_id, ttl_seconds=3600)[0]

    async def new_project(self, *user_ids: int, role: str = "editor") -> str:
        """A project with these users as members (`role`); returns the room name."""
        project_uuid = uuid.uuid4()
        async with create_sessionmaker(self.engine)() as session, session.begin():
            for user_id in user_ids or (1,):
                if await session.get(User, user_id) is None:
                    session.add(User(id=user_id, email=f"user{user_id}@test.example.com", password_hash="-", display_name="", roles=[]))
            await session.flush()
            project = Project(uuid=project_uuid, title="t", owner_id=(user_ids or (1,))[0])
            session.add(project)
            await session.flush()
            for user_id in user_ids or (1,):
                session.add(ProjectMember(project_id=project.id, user_id=user_id, role=role))
        return f"project-{project_uuid}"

    async def stored_text(self, room: str) -> str:
        """The document as the database holds it (snapshot + update rows)."""
        updates = await self.store.load_updates(room.removeprefix("project-"))
        return str(build_doc(updates).get("t", type=Text))

    async def close(self) -> None:
        for server in reversed(self.servers):
            await server.stop()
        for process in self.processes:
            process.kill()
        await self.engine.dispose()


async def metrics_of(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as resp:
        return await resp.text()


def metric(text: str, sample: str) -> float:
    """One sample's value in Prometheus text, e.g. `persistence_batches_total` (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


async def wait_metric(url: str, sample: str, expected: float, timeout: float = 15.0) -> str:
    """Wait until a sample reaches `expected`; return the whole metrics text of that moment."""

    async def reached() -> str:  # "" (falsy) until the sample gets there
        text = await metrics_of(url)
        return text if metric(text, sample) >= expected else ""

    return await eventually(reached, timeout, what=f"{sample} to reach {expected} at {url}")


async def wait_stored(cluster: Cluster, room: str, expected: str, timeout: float = 15.0) -> None:
    """Wait until the database holds `expected` as the room's text."""

    async def stored() -> bool:
        return await cluster.stored_text(room) == expected

    await eventually(stored, timeout, what=f"the database to hold {expected!r}", interval=0.1)

"""Shared fixtures: settings on a temp dir, throwaway PostgreSQL, in-process servers."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from services.embedded import create_app as create_embedded_app
from shared.config import Settings
from shared.db.engine import upgrade
from stack.servers import PostgresServer, RedisServer
from tests.support.app_server import InProcessServer
from tests.support.cluster import Cluster
from tests.support.throttle import UNTHROTTLED
from tests.support.webhook_receiver import Receiver

TEST_SECRET = "test-secret-" + "x" * 40

TIERS = ("unit", "integration", "browser", "bench")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test has exactly one tier marker (pyproject.toml lists them): a test module says
    `pytestmark = pytest.mark.<tier>`, test_bench.py marks each test. A test with none or
    several fails the collection, so a new module cannot slip out of `make test-fast`'s view."""
    wrong = []
    for item in items:
        tiers = sorted({m.name for m in item.iter_markers() if m.name in TIERS})
        if len(tiers) != 1:
            wrong.append(f"{item.nodeid}: {tiers or 'no tier'}")
    if wrong:
        raise pytest.UsageError(
            "each test needs exactly one of the markers " + ", ".join(TIERS) + ":\n  "
            + "\n  ".join(wrong)
        )


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    base = Settings.from_env(
        {
            "DATA_DIR": str(tmp_path / "data"),
            "API_JWT_SECRET": TEST_SECRET,
            "APP_SECRET": TEST_SECRET,
            "ROOM_UNLOAD_GRACE": "0.5",
            "STORE_FLUSH_INTERVAL": "0.02",
            **UNTHROTTLED,
        }
    )
    return base.with_overrides(**overrides)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each store test runs against both backends."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'store.sqlite'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.create_database(f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture
async def migrated_database_url(database_url: str) -> str:
    await upgrade(database_url)
    return database_url


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[InProcessServer]:
    """The embedded app (gateway + collab, single-instance, SQLite)."""
    srv = await InProcessServer(create_embedded_app, settings).start()
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
def project() -> str:
    return f"project-{uuid.uuid4()}"


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A throwaway redis-server (AOF on), stopped and removed after the test."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
async def cluster(tmp_path: Path, redis_server: RedisServer, postgres: PostgresServer) -> AsyncIterator[Cluster]:
    """Multi-instance mode: Redis, a fresh migrated PostgreSQL database, collab instances on demand."""
    url = postgres.create_database(f"c_{uuid.uuid4().hex[:12]}")
    c = await Cluster(tmp_path, redis_server, url).migrate()
    try:
        yield c
    finally:
        try:
            await asyncio.wait_for(c.close(), 30)
        except TimeoutError:  # say what hangs instead of waiting for pytest-timeout
            for task in asyncio.all_tasks():
                task.print_stack(file=sys.stderr)
            raise


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A webhook receiver on loopback (register webhooks with WEBHOOK_ALLOW_PRIVATE=1)."""
    r = await Receiver().start()
    try:
        yield r
    finally:
        await r.stop()

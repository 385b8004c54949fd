"""The throwaway servers of stack/servers.py that the tests and `make stack` run."""

from __future__ import annotations

import os
import pwd
import socket
from pathlib import Path

import aiohttp
import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type hints
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from stack.processes import LOOPBACK, StackError, find_binary, free_port, port_accepts
from stack.servers import NginxServer, PostgresServer, RedisServer

pytestmark = pytest.mark.integration


def _nginx_available() -> bool:
    try:
        find_binary("nginx", "/usr/sbin/nginx", "/usr/local/sbin/nginx")
    except StackError:
        return False
    return True


needs_nginx = pytest.mark.skipif(
    not _nginx_available(),
    reason="nginx is not installed (run scripts/install-system-deps.sh as root)",
)


def _proc_uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for pid {pid}")


# --------------------------------------------------------------------------
# generic helpers
# --------------------------------------------------------------------------


def test_free_port_is_bindable_and_not_repeated() -> None:
    ports = [free_port() for _ in range(20)]
    assert len(set(ports)) == len(ports)
    with socket.socket() as sock:
        sock.bind((LOOPBACK, ports[-1]))


def test_port_accepts() -> None:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        sock.listen()
        assert port_accepts(LOOPBACK, sock.getsockname()[1])
    assert not port_accepts(LOOPBACK, free_port())


# --------------------------------------------------------------------------
# Redis
# --------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_redis_start_set_get(redis_server: RedisServer) -> None:
    assert redis_server.host == LOOPBACK
    assert redis_server.port not in (6379,)
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        assert await client.ping()
        await client.set("greeting", "hello")
        assert await client.get("greeting") == b"hello"
        config = await client.config_get("appendonly")
        assert config["appendonly"] == "yes"
        assert (await client.config_get("maxmemory-policy"))["maxmemory-policy"] == "noeviction"
        assert (await client.config_get("save"))["save"] == ""
    finally:
        await client.aclose()


@pytest.mark.asyncio
async def test_redis_restart_and_kill_keep_aof_data(redis_server: RedisServer) -> None:
    port, data_dir = redis_server.port, redis_server.data_dir
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        await client.set("k1", "v1")
        redis_server.restart()
        assert redis_server.port == port
        # redis.asyncio has no retry by default: drop the now-dead pooled socket.
        await client.connection_pool.disconnect()
        assert await client.get("k1") == b"v1"

        await client.set("k2", "v2")
        redis_server.kill()
        assert not redis_server.running
        with pytest.raises(aioredis.ConnectionError):
            await client.ping()

        redis_server.start()
        assert redis_server.port == port and redis_server.data_dir == data_dir
        await client.connection_pool.disconnect()
        assert await client.mget("k1", "k2") == [b"v1", b"v2"]
    finally:
        await client.aclose()


def test_redis_without_aof_loses_data_on_restart() -> None:
    import redis

    with RedisServer(appendonly=False) as server:
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")
        server.restart()
        assert client.get("k") is None
        client.close()


def test_redis_start_failure_reports_log_tail() -> None:
    with socket.socket() as blocker:
        blocker.bind((LOOPBACK, 0))
        blocker.listen()
        server = RedisServer(port=blocker.getsockname()[1])
        try:
            with pytest.raises(StackError) as excinfo:
                server.start(timeout=10)
            assert "Address already in use" in str(excinfo.value)
            assert not server.running
        finally:
            server.cleanup()


def test_redis_cleanup_removes_everything() -> None:
    server = RedisServer().start()
    pid, base_dir = server.pid, server.base_dir
    assert pid is not None and base_dir.is_dir()
    server.cleanup()
    assert not base_dir.exists()
    assert not server.running
    assert (
        not Path(f"/proc/{pid}/cmdline").exists()
        or "redis" not in Path(f"/proc/{pid}/cmdline").read_text()
    )


# --------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_postgres_create_database_query_and_restart() -> None:
    with PostgresServer() as pg:
        assert pg.port != 5432
        if os.geteuid() == 0:
            assert pg.pid is not None
            assert _proc_uid(pg.pid) == pwd.getpwnam("postgres").pw_uid

        url = pg.create_database("exe_test")
        assert url == f"postgresql+asyncpg://postgres@127.0.0.1:{pg.port}/exe_test"
        assert pg.create_database("exe_test", exist_ok=True) == url
        with pytest.raises(StackError):
            pg.create_database("exe_test")

        conn = await asyncpg.connect(pg.dsn("exe_test"))
        try:
            assert await conn.fetchval("SELECT current_database()") == "exe_test"
            assert await conn.fetchval("SHOW server_encoding") == "UTF8"
            await conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
            await conn.execute("INSERT INTO t VALUES (1, 'one')")
        finally:
            await conn.close()

        port = pg.port
        pg.stop()
        assert not pg.running
        with pytest.raises(OSError):
            await asyncpg.connect(pg.dsn("exe_test"), timeout=2)
        pg.start()
        assert pg.port == port

        conn = await asyncpg.connect(pg.dsn("exe_test"))
        try:
            assert await conn.fetchval("SELECT v FROM t WHERE id = 1") == "one"
        finally:
            await conn.close()
        pg.drop_database("exe_test")
        assert pg.psql("SELECT count(*) FROM pg_database WHERE datname = 'exe_test'").strip() == "0"


@pytest.mark.asyncio
async def test_postgres_kill_and_crash_recovery() -> None:
    with PostgresServer(durable=True) as pg:
        pg.create_database("crashy")
        conn = await asyncpg.connect(pg.dsn("crashy"))
        await conn.execute("CREATE TABLE t (id int)")
        await conn.execute("INSERT INTO t SELECT generate_series(1, 1000)")
        pg.kill()
        assert not pg.running
        with pytest.raises((ConnectionError, asyncpg.PostgresError, OSError)):
            await conn.fetchval("SELECT 1")
        conn.terminate()

        pg.start()  # crash recovery on the same port and data directory
        conn = await asyncpg.connect(pg.dsn("crashy"))
        try:
            assert await conn.fetchval("SELECT count(*) FROM t") == 1000
        finally:
            await conn.close()


# --------------------------------------------------------------------------
# nginx
# --------------------------------------------------------------------------


async def _start_backend() -> tuple[web.AppRunner, int]:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=f"backend {request.path} tag={request.headers.get('X-Tag')}")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, LOOPBACK, port).start()
    return runner, port


def _write_conf(directory: Path, port: int, http: str) -> Path:
    """directory/nginx.conf with `http` as its http block (`@PORT@`: `port`)."""
    temp = "".join(
        f"    {kind}_temp_path {directory / kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = directory / "nginx.conf"
    conf.write_text(
        f"worker_processes 1;\npid {directory / 'nginx.pid'};\nevents {{ worker_connections 64; }}\n"
        f"http {{\n    access_log off;\n{temp}{http.replace('@PORT@', str(port))}\n}}\n"
    )
    return conf


def _nginx(directory: Path, http: str) -> NginxServer:
    port = free_port()
    conf = _write_conf(directory, port, http)
    return NginxServer(conf, prefix=directory, port=port, error_log=directory / "error.log")


def _proxy_conf(backend_port: int, tag: str) -> str:
    return f"""
    server {{
        listen 127.0.0.1:@PORT@;
        location / {{
            proxy_pass http://127.0.0.1:{backend_port};
            proxy_set_header X-Tag {tag};
        }}
    }}
    """


@needs_nginx
@pytest.mark.asyncio
async def test_nginx_proxies_and_reloads(tmp_path: Path) -> None:
    runner, backend_port = await _start_backend()
    try:
        with _nginx(tmp_path, _proxy_conf(backend_port, "first")) as nginx:
            url = f"http://127.0.0.1:{nginx.port}"
            assert (tmp_path / "nginx.pid").exists()
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{url}/hello") as resp,
            ):
                assert resp.status == 200
                assert await resp.text() == "backend /hello tag=first"

            _write_conf(tmp_path, nginx.port, _proxy_conf(backend_port, "second"))
            nginx.reload()
            # A fresh connection: kept-alive ones may still hit an old worker.
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{url}/again") as resp,
            ):
                assert await resp.text() == "backend /again tag=second"
            port = nginx.port
        assert not port_accepts(LOOPBACK, port)
    finally:
        await runner.cleanup()


@needs_nginx
def test_nginx_invalid_config_raises_with_stderr(tmp_path: Path) -> None:
    nginx = _nginx(tmp_path, "server { listen 127.0.0.1:@PORT@; bogus_directive on; }")
    try:
        with pytest.raises(StackError, match="bogus_directive"):
            nginx.start()
        assert not nginx.running
    finally:
        nginx.cleanup()

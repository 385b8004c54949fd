"""What every service shows of itself: errors aiohttp answers alone, the Server header, /metrics,
and credentials in the logs."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from services.collab.app import create_app as create_collab_app
from services.embedded import create_app as create_embedded_app
from services.gateway.app import create_app as create_gateway_app
from services.persistence.app import create_app as create_persistence_app
from shared.config import Settings
from shared.logs import JsonFormatter
from stack.servers import RedisServer
from tests.conftest import make_settings
from tests.support.app_server import InProcessServer

pytestmark = pytest.mark.integration

SECRET_TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ2aWN0aW0ifQ.c2VjcmV0LXNpZ25hdHVyZQ"

# Requests aiohttp cannot parse, each carrying credentials aiohttp used to echo back.
MALFORMED = {
    "request_line": f"GET /api/me?token={SECRET_TOKEN} HTTP/1.1 junk\r\n"
    f"Authorization: Bearer {SECRET_TOKEN}\r\n\r\n",
    "header_value": f"GET /api/me HTTP/1.1\r\nHost: x\r\n"
    f"Authorization: Bearer {SECRET_TOKEN}\x01\r\n\r\n",
    "header_name": f"GET /api/me HTTP/1.1\r\nHost: x\r\nAuthorization : Bearer {SECRET_TOKEN}\r\n\r\n",
    "cookie": f"GET /x HTTP/1.1\r\nHost: x\r\nCookie: session={SECRET_TOKEN}\x7f\r\n\r\n",
    "version": f"GET /yjs/x?token={SECRET_TOKEN} HTTP/9.1\r\nHost: x\r\n\r\n",
}


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    """Every log line of the test, as the services write them (JSON, redacted)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("test"))
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


async def raw_exchange(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(10):
            return await reader.read()
    finally:
        writer.close()


def _split(reply: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


SERVICES: dict[str, Callable[[Settings], web.Application]] = {
    "gateway": create_gateway_app,
    "collab": create_collab_app,
    "embedded": create_embedded_app,
    "persistence": create_persistence_app,
}


@pytest.fixture(params=list(SERVICES))
async def service(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[InProcessServer]:
    """Each service's app, as `python -m services.<name>` builds it."""
    settings = make_settings(tmp_path)
    if request.param == "persistence":
        redis: RedisServer = request.getfixturevalue("redis_server")
        settings = settings.with_overrides(redis_host="127.0.0.1", redis_port=redis.port)
    srv = await InProcessServer(SERVICES[request.param], settings).start()
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.mark.parametrize("case", list(MALFORMED))
async def test_unparseable_requests_get_json_that_echoes_nothing(
    service: InProcessServer, captured_logs: io.StringIO, case: str
) -> None:
    reply = await raw_exchange(service.settings.port, MALFORMED[case].encode())
    status, headers, body = _split(reply)
    assert status == 400
    assert headers["content-type"].startswith("application/json")
    assert json.loads(body)["error"]["code"] == "bad_request"
    assert SECRET_TOKEN.encode() not in reply
    assert headers["server"] == "exe-collab"
    logged = captured_logs.getvalue()
    assert "malformed request" in logged
    assert SECRET_TOKEN not in logged and "Traceback" not in logged


async def test_no_version_in_the_server_header(service: InProcessServer) -> None:
    async with aiohttp.ClientSession() as session:
        for path in ("/healthcheck", "/no-such-route"):
            async with session.get(service.http_url + path) as resp:
                assert resp.headers["Server"] == "exe-collab", path
        if service.build_app in (create_collab_app, create_embedded_app):
            async with session.ws_connect(f"{service.ws_url}/bad-room") as ws:
                assert ws._response.headers["Server"] == "exe-collab"


def test_credentials_are_redacted_from_every_log_line() -> None:
    formatter = JsonFormatter("test")
    try:
        raise ValueError(f"bad header b'Authorization: Bearer {SECRET_TOKEN}'")
    except ValueError:
        exc_info = sys.exc_info()
    message = "GET /yjs/p?token=%s&x=1 Cookie: s=%s"
    record = logging.LogRecord(
        "test", logging.INFO, __file__, 1, message, ("abc123", "c00kie"), exc_info
    )
    record.headers = {"Authorization": "Basic dXNlcjpwYXNz", "Set-Cookie": "id=s3cr3t"}
    record.note = f"a bare {SECRET_TOKEN} too"
    line = formatter.format(record)
    entry = json.loads(line)  # still one valid JSON object
    for secret in (SECRET_TOKEN, "abc123", "c00kie", "dXNlcjpwYXNz", "s3cr3t"):
        assert secret not in line, secret
    assert "token=[redacted]&x=1" in entry["msg"]
    assert "[redacted]" in entry["exc"] and "[redacted]" in entry["note"]


# -- /metrics ------------------------------------------------------------------------------


async def _metrics_status(srv: InProcessServer, headers: dict[str, str] | None = None) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{srv.http_url}/metrics", headers=headers) as resp,
    ):
        return resp.status


@pytest.mark.parametrize("build", [create_gateway_app, create_collab_app, create_embedded_app])
async def test_metrics_need_the_metrics_token_when_one_is_set(
    tmp_path: Path, build: Callable[[Settings], web.Application]
) -> None:
    settings = make_settings(tmp_path, metrics_token="scrape-me")
    srv = await InProcessServer(build, settings).start()
    try:
        assert await _metrics_status(srv) == 401
        assert await _metrics_status(srv, {"Authorization": "Bearer wrong"}) == 401
        assert await _metrics_status(srv, {"Authorization": f"Bearer {SECRET_TOKEN}"}) == 401
        assert await _metrics_status(srv, {"Authorization": "Bearer scrape-me"}) == 200
    finally:
        await srv.stop()


async def test_metrics_are_off_in_production_without_a_token(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, app_env="prod", run_migrations=True)
    srv = await InProcessServer(create_embedded_app, settings).start()
    try:
        assert await _metrics_status(srv) == 404
    finally:
        await srv.stop()

"""Gateway operations: readiness names a failing assets volume, metrics count requests by route."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.api import Api
from tests.support.app_server import InProcessServer

pytestmark = pytest.mark.integration


async def test_readiness_checks_database_and_assets_volume(server: InProcessServer) -> None:
    async with Api(server.http_url) as api:
        ready = await api.get("/health/ready")
        assert ready.status == 200
        assert ready.json["checks"] == {"database": "ok", "assets_volume": "ok"}

        # the volume stops being writable: a file where the temp directory must be
        tmp = Path(server.settings.files_dir).resolve() / "tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.write_text("not a directory")
        try:
            down = await api.get("/health/ready")
            assert down.status == 503
            assert down.json["failing"] == ["assets_volume"]
            assert (await api.get("/healthcheck")).status == 200  # liveness does not depend on it
        finally:
            tmp.unlink()
        assert (await api.get("/health/ready")).status == 200


async def test_metrics_count_requests_by_route_template(server: InProcessServer) -> None:
    async with Api(server.http_url) as api:
        for _ in range(3):
            await api.get("/api/projects/00000000-0000-0000-0000-000000000000", token=None)
        await api.post("/api/auth/login", json={"email": "a@example.com", "password": "x" * 8})
        text = (await api.get("/metrics")).body.decode()
    assert (
        'gateway_http_requests_total{method="GET",route="/api/projects/{uuid}",status="401"} 3.0'
        in text
    )
    assert 'gateway_logins_total{outcome="failed"} 1.0' in text
    assert "00000000-0000" not in text  # no unbounded labels

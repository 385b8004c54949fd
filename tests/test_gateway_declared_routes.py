"""What the schema layer keeps as the hand validation did: path parameters answer the route's
own error, GETs answer HEAD, declared public routes need no token, others do."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.api import Api
from tests.support.app_server import InProcessServer
from tests.support.fixtures_data import create_user_and_project

pytestmark = pytest.mark.integration


@pytest.fixture
async def owner(server: InProcessServer) -> AsyncIterator[tuple[Api, str]]:
    user_id, project = await create_user_and_project(server.sessionmaker, "owner")
    async with Api(server.http_url, server.token(user_id)) as api:
        yield api, project


async def test_path_parameters_answer_the_routes_own_errors(owner: tuple[Api, str]) -> None:
    api, project = owner
    created = await api.post(f"/api/projects/{project}/versions", json={"label": "v"})
    assert created.status == 201, created.body
    version = created.json["id"]
    assert (await api.get(f"/api/projects/{project}/versions/{version}")).status == 200
    for spelled in (f"%20{version}", f"+{version}", f"{version}.0", "1_0", "0"):
        missing = await api.get(f"/api/projects/{project}/versions/{spelled}")
        assert missing.status == 404 and missing.json["error"]["message"] == "no such version"
    bad_email = await api.put(
        f"/api/projects/{project}/members/not-an-email", json={"role": "viewer"}
    )
    assert (
        bad_email.status == 400
        and bad_email.json["error"]["message"] == "not a valid email address"
    )
    assert (await api.get("/api/projects/not-a-uuid/members")).status == 404
    upload = await api.request(
        "HEAD", f"/api/projects/{project}/uploads/nothex", headers={"Tus-Resumable": "1.0.0"}
    )
    assert upload.status == 404 and upload.headers["Tus-Resumable"] == "1.0.0"


async def test_gets_answer_head(owner: tuple[Api, str]) -> None:
    api, project = owner
    assert (await api.request("HEAD", f"/api/projects/{project}")).status == 200
    assert (await api.request("HEAD", "/", token=None)).status == 200


async def test_declared_public_routes_need_no_token(server: InProcessServer) -> None:
    async with Api(server.http_url) as api:
        for path in ("/api/version", "/api/openapi.json", "/", "/healthcheck"):
            assert (await api.get(path)).status == 200, path
        assert (await api.post("/api/auth/logout")).status == 200
        assert (await api.request("OPTIONS", "/api/projects/anything/uploads")).status == 204
        for path in ("/api/projects", "/api/me", "/api/user/storage", "/api/nothing"):
            assert (await api.get(path)).status == 401, path
        assert (await api.get("/no-such-page")).status == 404
        assert (await api.delete("/api/version")).status == 405
        assert (await api.delete("/api/projects")).status == 401

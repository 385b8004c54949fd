"""JSON bodies the data model cannot take are a 400, never a 500."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.api import Api
from tests.support.app_server import InProcessServer
from tests.support.fixtures_data import create_user_and_project

pytestmark = pytest.mark.integration

JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def owner(server: InProcessServer) -> AsyncIterator[tuple[Api, str]]:
    user_id, project = await create_user_and_project(server.sessionmaker, "owner")
    async with Api(server.http_url, server.token(user_id)) as api:
        yield api, project


@pytest.mark.parametrize(
    "body",
    [
        b'{"title": "\\ud800"}',  # a lone surrogate: valid JSON, not storable text
        b'{"title": "ok", "\\udfff": 1}',
        b'{"title": "x", "extra": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        b'{"title": "x", "extra": ' + b'{"a": ' * 40 + b"1" + b"}" * 40 + b"}",
    ],
    ids=["surrogate_value", "surrogate_key", "nested_50000", "nested_40"],
)
async def test_bodies_that_cannot_be_stored_are_a_400(owner: tuple[Api, str], body: bytes) -> None:
    api, project = owner
    for method, path in (("POST", "/api/projects"), ("PATCH", f"/api/projects/{project}")):
        reply = await api.request(method, path, data=body, headers=JSON)
        assert reply.status == 400 and reply.is_json_error(), (method, reply.status, reply.body)
    # the service is fine and the title untouched
    assert (await api.get(f"/api/projects/{project}")).json["title"] == ""


async def test_moderate_nesting_and_real_unicode_are_fine(owner: tuple[Api, str]) -> None:
    api, _ = owner
    title = b'"R\\u00e9sum\\u00e9 \\ud83d\\ude00"'  # a surrogate pair is one real character
    body = b'{"title": ' + title + b', "extra": ' + b"[" * 30 + b"]" * 30 + b"}"
    created = await api.post("/api/projects", data=body, headers=JSON)
    assert created.status == 201, created.body
    assert created.json["title"] == "Résumé 😀"

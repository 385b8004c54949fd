"""GET /api/projects/{uuid}/yjs-document?format=json: a stock Node client's document as JSON,
live edits included, equal to what that client reads back; `path` selection; a 5 MB document."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from services.embedded import create_app as create_embedded_app
from shared.db.resources import DATABASE
from tests.conftest import make_settings
from tests.support.api import Api, Reply, editor_project
from tests.support.app_server import InProcessServer
from tests.support.node_client import NodeYClient
from tests.support.wait import eventually

pytestmark = pytest.mark.integration

log = logging.getLogger(__name__)


@dataclass
class Editing:
    """A project on a server whose store writes are held back for an hour (edits stay in the
    live room), a synced stock Node client in its room, and an Api client of the same editor."""

    srv: InProcessServer
    project: str
    api: Api
    node: NodeYClient


@pytest.fixture
async def editing(tmp_path: Path) -> AsyncIterator[Editing]:
    settings = make_settings(tmp_path, store_flush_interval=3600.0)
    srv = await InProcessServer(create_embedded_app, settings).start()
    try:
        room, api = await editor_project(srv)
        try:
            async with NodeYClient.start(srv.ws_url, room, srv.token("editor")) as node:
                await node.wait_synced()
                yield Editing(srv, room.removeprefix("project-"), api, node)
        finally:
            await api.close()
    finally:
        await srv.stop()


async def exported_json(api: Api, project: str, **params: str) -> Reply:
    return await api.get(
        f"/api/projects/{project}/yjs-document", params={"format": "json", **params}
    )


async def exported_equals(api: Api, project: str, roots: dict[str, Any]) -> bool:
    reply = await exported_json(api, project)
    return reply.status == 200 and {k: reply.json.get(k) for k in roots} == roots


async def test_json_export_equals_what_the_node_client_reads(editing: Editing) -> None:
    srv, project, api = editing.srv, editing.project, editing.api
    built = await editing.node.typed_roots()
    roots = built["roots"]
    await eventually(lambda: exported_equals(api, project, roots), what="the export")
    store = srv.app[DATABASE].store  # type: ignore[index]
    assert (await store.log_stats(project)).count == 0  # live edits only, none stored
    reply = await exported_json(api, project)
    assert reply.headers["Content-Type"].startswith("application/json")
    assert set(reply.json) == {"meta", "list", "body", "xml"}
    title = await exported_json(api, project, path="meta.title")
    assert title.status == 200 and title.json == "A project"
    order = await exported_json(api, project, path="meta.pages.order.1")
    assert order.status == 200 and order.json == "p2"
    missing = await exported_json(api, project, path="meta.nothing")
    assert missing.status == 404 and missing.json["error"]["code"] == "path_not_found"
    binary = await api.get(
        f"/api/projects/{project}/yjs-document", params={"path": "meta.title"}
    )  # a path is for format=json only
    assert binary.headers["Content-Type"] == "application/octet-stream"


async def test_json_export_of_a_5_mb_document(editing: Editing) -> None:
    project, api = editing.project, editing.api
    built = await editing.node.typed_roots(fill=10_000, pad=500, timeout=60.0)
    assert built["bytes"] > 5_000_000

    async def all_there() -> bool:
        reply = await exported_json(api, project, path="bulk")
        return reply.status == 200 and len(reply.json) == built["bulk"]

    await eventually(all_there, timeout=60.0, what="the 5 MB export")
    started = time.perf_counter()
    reply = await exported_json(api, project)
    elapsed = time.perf_counter() - started
    assert reply.status == 200 and reply.json["meta"] == built["roots"]["meta"]
    log.warning(
        "JSON export of a %d-byte document (%d bytes of JSON): %.2f s",
        built["bytes"],
        len(reply.body),
        elapsed,
    )

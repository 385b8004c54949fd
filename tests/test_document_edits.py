"""PATCH /api/projects/{uuid}/yjs-document: JSON edits of the live document, seen at once by
stock clients on every instance, stored, refused whole when one command fails."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import pytest

from shared.compaction import build_doc
from shared.ydoc_json import update_to_json
from tests.support.api import Api, Reply, editor_project
from tests.support.app_server import InProcessServer
from tests.support.cluster import Cluster
from tests.support.node_client import NodeYClient
from tests.support.wait import eventually

pytestmark = pytest.mark.integration

log = logging.getLogger(__name__)


def doc_path(project: str) -> str:
    return f"/api/projects/{project.removeprefix('project-')}/yjs-document"


async def patch(api: Api, project: str, *ops: dict[str, Any]) -> Reply:
    return await api.patch(doc_path(project), json={"ops": list(ops)})


async def as_json(api: Api, project: str) -> Any:
    reply = await api.get(doc_path(project), params={"format": "json"})
    assert reply.status == 200, reply.body
    return reply.json


SET_TITLE = {"op": "set", "path": "meta", "key": "title", "value": "Edited"}
GOOD = {"op": "set", "path": "meta", "key": "title", "value": "not applied"}  # before a bad one


async def test_a_json_patch_reaches_stock_clients_on_both_instances_and_the_database(
    cluster: Cluster,
) -> None:
    a_srv, b_srv, gateway = await cluster.pair()
    room = await cluster.new_project(1)
    token = cluster.token(1)
    async with (
        Api(gateway.http_url, token) as api,
        NodeYClient.start(a_srv.ws_url, room, token, name="a") as on_a,
        NodeYClient.start(b_srv.ws_url, room, token, name="b") as on_b,
    ):
        await on_a.wait_synced()
        await on_b.wait_synced()
        assert {await on_a.instance(), await on_b.instance()} == {"a", "b"}
        await on_a.append("hello")
        await on_b.wait_text("hello")
        started = time.perf_counter()
        reply = await patch(
            api,
            room,
            SET_TITLE,
            {"op": "set", "path": "meta", "key": "tags", "value": ["x", {"n": 1}]},
            {"op": "insert", "path": "t", "index": 5, "value": " world"},
            {"op": "insert", "path": "pages", "index": 0, "value": ["p1", "p2"]},
        )
        assert reply.status == 200, reply.body
        assert reply.json["applied"] is True and reply.json["bytes"] > 0
        meta = {"title": "Edited", "tags": ["x", {"n": 1}]}
        for client in (on_a, on_b):
            await client.wait_root("meta", "map", meta)
            await client.wait_text("hello world")
            await client.wait_root("pages", "array", ["p1", "p2"])
        log.warning("a PATCH seen by clients on both instances: %.1f ms", elapsed_ms(started))
        expected = {"meta": meta, "t": "hello world", "pages": ["p1", "p2"]}

        async def stored() -> bool:
            updates = await cluster.store.load_updates(room.removeprefix("project-"))
            return update_to_json(build_doc(updates).get_update()) == expected

        await eventually(stored, 15, what="the edits in the database", interval=0.1)
        # a client's later edit and a second patch merge with the first one
        await on_b.append("!")
        await on_a.wait_text("hello world!")
        reply = await patch(api, room, {"op": "delete", "path": "t", "index": 0, "length": 6})
        assert reply.status == 200, reply.body
        await on_a.wait_text("world!")
        await on_b.wait_text("world!")


async def test_a_patch_on_a_5_mb_document_edits_types_a_stock_client_made(
    server: InProcessServer,
) -> None:
    room, api = await editor_project(server)
    try:
        async with NodeYClient.start(server.ws_url, room, api.token) as node:
            await node.wait_synced()
            built = await node.typed_roots(fill=10_000, pad=500, timeout=60.0)
            assert built["bytes"] > 5_000_000

            async def received() -> bool:
                path = {"format": "json", "path": "meta.pages.note"}
                return (await api.get(doc_path(room), params=path)).status == 200

            await eventually(received, 60, what="the client's document on the server")
            started = time.perf_counter()
            reply = await patch(
                api,
                room,
                {"op": "insert", "path": "meta.pages.note", "index": 2, "value": "big "},
                {"op": "insert", "path": "meta.pages.order", "index": 2, "value": ["p3"]},
                {"op": "set", "path": "bulk.entry-9999", "key": "n", "value": -1},
            )
            answered = elapsed_ms(started)
            assert reply.status == 200, reply.body
            meta = built["roots"]["meta"]
            meta["pages"] = {"order": ["p1", "p2", "p3"], "note": "a big nested text"}
            await node.wait_root("meta", "map", meta)
            log.warning(
                "a PATCH on a %d-byte document: answered in %.0f ms, seen by the client in %.0f ms",
                built["bytes"],
                answered,
                elapsed_ms(started),
            )
    finally:
        await api.close()


def elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


@pytest.fixture
async def members(server: InProcessServer) -> tuple[str, str, str]:
    """A project, an editor's and a viewer's token."""
    project = str(uuid.uuid4())
    editor = await server.grant(project, "editor", "editor")
    viewer = await server.grant(project, "viewer", "viewer")
    return project, editor, viewer


async def test_an_editor_patches_and_the_json_export_shows_it(
    server: InProcessServer, members: tuple[str, str, str]
) -> None:
    project, editor, viewer = members
    async with Api(server.http_url, editor) as api:
        first = await patch(api, project, SET_TITLE, {"op": "insert", "path": "body", "index": 0, "value": "héllo"})
        assert first.status == 200 and first.json["applied"] is True, first.body
        second = await patch(
            api,
            project,
            {"op": "set", "path": "meta", "key": "title", "value": None},
            {"op": "delete", "path": "body", "index": 1, "length": 1},
            {"op": "insert", "path": "body", "index": 1, "value": "e"},
        )
        assert second.status == 200, second.body
        assert await as_json(api, project) == {"meta": {"title": None}, "body": "hello"}
        nothing = await patch(api, project, {"op": "insert", "path": "list", "index": 0, "value": []})
        assert nothing.status == 200 and nothing.json["applied"] is False
    async with Api(server.http_url, viewer) as as_viewer:
        refused = await patch(as_viewer, project, SET_TITLE)
        assert refused.status == 403 and refused.is_json_error()


@pytest.mark.parametrize(
    ("ops", "status", "code"),
    [
        ([GOOD, {"op": "set", "path": "meta.nothing", "key": "k", "value": 1}], 404, "path_not_found"),
        ([GOOD, {"op": "delete", "path": "meta", "key": "nothing"}], 404, "path_not_found"),
        ([GOOD, {"op": "insert", "path": "body", "index": 9, "value": "x"}], 400, "index_out_of_range"),
        ([GOOD, {"op": "insert", "path": "body", "index": 0, "value": ["x"]}], 400, "invalid_edit"),
        ([GOOD, {"op": "set", "path": "meta", "key": "n", "value": 2**53}], 400, "invalid_edit"),
        ([GOOD, {"op": "delete", "path": "body", "index": 0}], 400, "bad_request"),
        ([GOOD, {"op": "delete", "path": "meta", "key": "title", "index": 0, "length": 1}], 400, "bad_request"),
        ([GOOD, {"op": "set", "path": "body", "key": "k", "value": 1}], 400, "invalid_edit"),
        ([GOOD, {"op": "move", "path": "meta", "key": "k"}], 400, "bad_request"),
        ([GOOD, {"op": "set", "path": "meta", "key": "k"}], 400, "bad_request"),
        ([GOOD, {"op": "insert", "path": "body", "index": "0", "value": "x"}], 400, "bad_request"),
        ([], 400, "bad_request"),
        ([SET_TITLE] * 101, 400, "bad_request"),
    ],
    ids=[
        "no_path",
        "no_key",
        "past_the_end",
        "list_into_text",
        "unsafe_integer",
        "no_length",
        "key_and_range",
        "set_in_a_text",
        "unknown_op",
        "no_value",
        "index_as_string",
        "no_ops",
        "too_many_ops",
    ],
)
async def test_a_refused_patch_changes_nothing(
    server: InProcessServer,
    members: tuple[str, str, str],
    ops: list[dict[str, Any]],
    status: int,
    code: str,
) -> None:
    project, editor, _ = members
    async with Api(server.http_url, editor) as api:
        body = {"op": "insert", "path": "body", "index": 0, "value": "text"}
        assert (await patch(api, project, SET_TITLE, body)).status == 200
        before = await as_json(api, project)
        reply = await patch(api, project, *ops)
        assert (reply.status, reply.error_code) == (status, code), reply.body
        assert await as_json(api, project) == before

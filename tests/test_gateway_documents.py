"""The document over HTTP: export = what live clients see, import reaches live clients, versions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pycrdt import Array, Doc, Map, Text, XmlElement, XmlFragment, XmlText

from services.embedded import create_app as create_embedded_app
from shared.compaction import build_doc
from shared.db.resources import DATABASE
from shared.restore import restore_update
from tests.conftest import make_settings
from tests.support.api import Api, editor_project
from tests.support.app_server import InProcessServer
from tests.support.node_client import NodeYClient
from tests.support.yclient import YClient

pytestmark = pytest.mark.integration

OCTET = {"Content-Type": "application/octet-stream"}


def text_of(update: bytes) -> str:
    return str(build_doc([update]).get("t", type=Text))


@pytest.fixture
async def lazy_server(tmp_path: Path) -> AsyncIterator[InProcessServer]:
    """Compaction effectively off: every edit stays in the uncompacted log."""
    settings = make_settings(
        tmp_path,
        compact_max_updates=100_000,
        compact_max_bytes=1 << 30,
        compact_idle_seconds=3600.0,
    )
    srv = await InProcessServer(create_embedded_app, settings).start()
    try:
        yield srv
    finally:
        await srv.stop()


async def _setup(srv: InProcessServer) -> tuple[str, str, Api]:
    """A new project with an editor: (room name, uuid, an open Api client as that editor)."""
    room, api = await editor_project(srv)
    return room, room.removeprefix("project-"), api


async def test_export_equals_live_clients_including_uncompacted_edits(
    lazy_server: InProcessServer,
) -> None:
    srv = lazy_server
    room, project, api = await _setup(srv)
    try:
        token = srv.token("editor")
        async with (
            await YClient.connect(srv.ws_url, room, token) as a,
            await YClient.connect(srv.ws_url, room, token) as b,
        ):
            for i in range(30):
                (a if i % 2 else b).append(f"<{i}>")
            await YClient.wait_all([a, b], lambda: a.value == b.value and a.value.count("<") == 30)
            exported = await api.get(f"/api/projects/{project}/yjs-document")
            assert (
                exported.status == 200
                and exported.headers["Content-Type"] == "application/octet-stream"
            )
            assert text_of(exported.body) == a.value
        # the clients left; the edits are in the store's log, not compacted
        store = srv.app[DATABASE].store  # type: ignore[index]
        for _ in range(100):
            if (await store.log_stats(project)).count >= 30:
                break
            await asyncio.sleep(0.05)
        assert (await store.log_stats(project)).count >= 30
        exported_again = await api.get(f"/api/projects/{project}/yjs-document")
        assert text_of(exported_again.body) == a.value
    finally:
        await api.close()


async def test_import_reaches_a_connected_stock_y_websocket_client(server: InProcessServer) -> None:
    room, project, api = await _setup(server)
    try:
        async with NodeYClient.start(
            server.ws_url, room, server.token("editor"), name="browser"
        ) as node:
            await node.wait_synced()
            await node.append("typed in the browser;")
            doc: Doc = Doc()
            current = await api.get(f"/api/projects/{project}/yjs-document")
            for _ in range(50):
                if text_of(current.body) == "typed in the browser;":
                    break
                await asyncio.sleep(0.05)
                current = await api.get(f"/api/projects/{project}/yjs-document")
            doc.apply_update(current.body)
            before = doc.get_state()
            text = doc.get("t", type=Text)
            text.insert(len(text), " imported over HTTP")
            reply = await api.post(
                f"/api/projects/{project}/yjs-document", data=doc.get_update(before), headers=OCTET
            )
            assert reply.status == 200 and reply.json["applied"] is True, reply.body
            await node.wait_text("typed in the browser; imported over HTTP")
        # and it is part of the document for everyone
        assert text_of((await api.get(f"/api/projects/{project}/yjs-document")).body) == (
            "typed in the browser; imported over HTTP"
        )
    finally:
        await api.close()


async def test_import_rejects_bad_updates(server: InProcessServer) -> None:
    room, project, api = await _setup(server)
    try:
        url = f"/api/projects/{project}/yjs-document"
        for body in (b"", b"\xff" * 10, b"\x01\x02\x03", b"not a yjs update at all"):
            reply = await api.post(url, data=body, headers=OCTET)
            assert reply.status == 400 and reply.is_json_error(), (body, reply.body)
        empty = await api.post(url, data=b"\x00\x00", headers=OCTET)
        assert empty.status == 200 and empty.json["applied"] is False
        async with await YClient.connect(server.ws_url, room, server.token("editor")) as c:
            c.append("still fine")
            await asyncio.sleep(0.1)
            assert text_of((await api.get(url)).body) == "still fine"
    finally:
        await api.close()


def _text_update(size: int, fill: str = "x") -> bytes:
    doc: Doc = Doc()
    doc.get("t", type=Text).insert(0, fill * size)
    return doc.get_update()


async def test_import_limits_agree_with_the_websocket(tmp_path: Path) -> None:
    """The body limit is MAX_SYNC_MESSAGE_BYTES (413 too_large); an update growing the
    document past MAX_DOCUMENT_BYTES is 413 document_too_large, counting what the live
    room already holds; the document keeps what it had."""
    srv = await InProcessServer(
        create_embedded_app,
        make_settings(tmp_path, max_message_bytes=1000, max_sync_message_bytes=6000, max_document_bytes=5000),
    ).start()
    try:
        room, project, api = await _setup(srv)
        url = f"/api/projects/{project}/yjs-document"
        reply = await api.post(url, data=_text_update(7000), headers=OCTET)
        assert reply.status == 413 and reply.json["error"]["code"] == "too_large"
        reply = await api.post(url, data=_text_update(5500), headers=OCTET)
        assert reply.status == 413 and reply.json["error"]["code"] == "document_too_large"
        async with await YClient.connect(srv.ws_url, room, srv.token("editor")) as client:
            reply = await api.post(url, data=_text_update(3000, "a"), headers=OCTET)
            assert reply.status == 200, reply.body
            await client.wait_until(lambda: len(client.value) == 3000)
            reply = await api.post(url, data=_text_update(3000, "b"), headers=OCTET)
            assert reply.status == 413 and reply.json["error"]["code"] == "document_too_large"
        assert text_of((await api.get(url)).body) == "a" * 3000
        await api.close()
    finally:
        await srv.stop()


async def test_versions_create_list_fetch_restore(server: InProcessServer) -> None:
    room, project, api = await _setup(server)
    base = f"/api/projects/{project}/versions"
    try:
        async with (
            await YClient.connect(server.ws_url, room, server.token("editor")) as writer,
            await YClient.connect(server.ws_url, room, server.token("editor")) as watcher,
        ):
            writer.append("chapter one.")
            await watcher.wait_text("chapter one.")
            v1 = await api.post(base, json={"label": "first draft"})
            assert (
                v1.status == 201 and v1.json["label"] == "first draft" and v1.json["created_by"] > 0
            )
            writer.append(" chapter two.")
            writer.insert(0, "TITLE ")
            del writer.text[len("TITLE ") : len("TITLE chapter")]  # rewrites part of v1's text
            await watcher.wait_until(lambda: watcher.value == writer.value)
            assert writer.value == "TITLE  one. chapter two."
            v2 = await api.post(base, json={})
            assert v2.status == 201

            listed = await api.get(base)
            assert [v["id"] for v in listed.json["versions"]] == [v2.json["id"], v1.json["id"]]
            fetched = await api.get(f"{base}/{v1.json['id']}")
            assert fetched.status == 200 and text_of(fetched.body) == "chapter one."
            assert (await api.get(f"{base}/999999")).status == 404
            assert (await api.get(f"{base}/abc")).status == 404

            restored = await api.post(f"{base}/{v1.json['id']}/restore")
            assert restored.status == 200, restored.body
            await watcher.wait_text("chapter one.")
            await writer.wait_text("chapter one.")
            # history is not rewritten: both versions remain, v2 still holds the later text
            assert len((await api.get(base)).json["versions"]) == 2
            assert (
                text_of((await api.get(f"{base}/{v2.json['id']}")).body)
                == "TITLE  one. chapter two."
            )
            # editing goes on normally after a restore; restoring v2 brings the later text back
            writer.append(" epilogue")
            await watcher.wait_text("chapter one. epilogue")
            assert (await api.post(f"{base}/{v2.json['id']}/restore")).status == 200
            await watcher.wait_text("TITLE  one. chapter two.")
        assert (
            text_of((await api.get(f"/api/projects/{project}/yjs-document")).body)
            == "TITLE  one. chapter two."
        )
    finally:
        await api.close()


def test_restore_update_handles_every_kind_of_root() -> None:
    doc: Doc = Doc()
    text = doc.get("t", type=Text)
    text += "hello"
    text.format(0, 2, {"bold": True})
    settings = doc.get("m", type=Map)
    settings["a"] = 1
    settings["sub"] = Map({"x": Text("inner"), "l": Array([1, Map({"k": "v"})])})
    items = doc.get("arr", type=Array)
    items.append(1)
    items.append(Array([2, 3]))
    items.append("str")
    xml = doc.get("x", type=XmlFragment)
    xml.children.append(XmlElement("p", {"class": "c"}, [XmlText("hi")]))
    version = doc.get_update()

    text.insert(5, " world")
    del text[0:2]
    settings["a"] = 2
    settings["new"] = "n"
    del settings["sub"]
    items.append(99)
    xml.children[0].attributes["class"] = "d"
    xml.children.append(XmlElement("q"))
    doc.get("other", type=Text).insert(0, "added later")
    current = doc.get_update()

    def view(update_list: list[bytes]) -> dict[str, object]:
        d: Doc = Doc()
        for u in update_list:
            d.apply_update(u)
        return {
            "t": d.get("t", type=Text).diff(),
            "m": d.get("m", type=Map).to_py(),
            "arr": d.get("arr", type=Array).to_py(),
            "x": str(d.get("x", type=XmlFragment)),
            "other": str(d.get("other", type=Text)),
        }

    assert view([current, restore_update(current, version)]) == view([version])
    # a restore is an ordinary update: applying it again changes nothing
    fix = restore_update(current, version)
    assert view([current, fix, fix]) == view([version])

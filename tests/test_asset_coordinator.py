"""eXeLearning's asset coordinator, single-instance mode (the embedded app, real Yjs clients)."""

from __future__ import annotations

import json

import pytest

from shared.asset_catalog import find_asset, never_saved, stored_client_ids
from shared.upload_sessions import verify_upload_session
from tests.support.app_server import InProcessServer
from tests.support.asset_messages import (
    asset_id,
    control,
    messages,
    store_asset,
    text_types,
    wait_message,
)
from tests.support.node_client import NodeYClient
from tests.support.yclient import YClient

pytestmark = pytest.mark.integration


async def _pair(server: InProcessServer, project: str) -> tuple[YClient, YClient]:
    token = await server.grant(project, "alice")
    other = await server.grant(project, "bob")
    return await YClient.connect(server.ws_url, project, token), await YClient.connect(server.ws_url, project, other)


async def test_the_catalog_reads_the_rows_the_gateway_writes(server: InProcessServer, project: str) -> None:
    await server.grant(project)
    uuid = project.removeprefix("project-")
    stored, missing = asset_id(), asset_id()
    await store_asset(server.sessionmaker, project, stored, size=42)
    found = await find_asset(server.sessionmaker, uuid, stored)
    assert found is not None and (found.size, found.mime_type, found.filename) == (42, "image/png", f"{stored}.png")
    assert await find_asset(server.sessionmaker, uuid, missing) is None
    assert await stored_client_ids(server.sessionmaker, uuid, [stored, missing]) == {stored}
    assert await never_saved(server.sessionmaker, uuid)


async def test_control_frames_never_reach_another_client(server: InProcessServer, project: str) -> None:
    a, b = await _pair(server, project)
    async with a, b:
        await a.send_raw(control("awareness-update", {"availableAssets": [asset_id()], "totalAssets": 1}))
        await a.send_raw(control("bulk-upload-progress", {"status": "started", "total": 1, "completed": 0, "failed": 0}))
        await a.send_raw(json.dumps({"type": "awareness-update", "data": {"availableAssets": []}}))  # legacy text
        await a.send_raw(b"\x09an ordinary opaque frame")  # still relayed, after the control frames
        await b.wait_until(lambda: b"\x09an ordinary opaque frame" in b.opaque)
        # b never sent a control frame (a stock Yjs client): it is sent none either
        assert [f for f in b.opaque if f != b"\x09an ordinary opaque frame"] == []
        a.append("edit")
        await b.wait_text("edit")  # nothing reached the document either
        assert b.value == "edit"


async def test_a_request_waits_for_a_holder_then_is_served_once_stored(server: InProcessServer, project: str) -> None:
    a, b = await _pair(server, project)
    wanted = asset_id()
    async with a, b:
        await b.send_raw(control("request-asset", {"assetId": wanted, "priority": "high", "reason": "render"}))
        assert (await wait_message(b, "asset-not-found"))["assetId"] == wanted
        await a.send_raw(control("awareness-update", {"availableAssets": [wanted], "totalAssets": 1}))
        request = await wait_message(a, "upload-request")
        assert request["assetId"] == wanted
        assert request["uploadUrl"] == f"/projects/{project.removeprefix('project-')}/assets?clientId={wanted}"
        # a claimed upload that is not stored is not announced as ready
        await a.send_raw(control("asset-uploaded", {**request, "success": True, "size": 3}))
        await b.wait_until(lambda: len(messages(b, "asset-not-found")) == 2)
        assert messages(b, "asset-ready") == []
        await store_asset(server.sessionmaker, project, wanted)
        await a.send_raw(control("asset-uploaded", {**request, "success": True, "size": 3}))
        ready = await wait_message(b, "asset-ready")
        assert ready == {
            "assetId": wanted,
            "url": f"/projects/{project.removeprefix('project-')}/assets/by-client-id/{wanted}",
            "size": 3,
            "mimeType": "image/png",
            "filename": f"{wanted}.png",
        }
        # stored now: a new request is answered at once
        await a.send_raw(control("request-asset", {"assetId": wanted}))
        assert (await wait_message(a, "asset-ready"))["assetId"] == wanted


async def test_malformed_control_frames_get_an_answer_or_a_close_code(server: InProcessServer, project: str) -> None:
    token = await server.grant(project, "alice")
    cases: list[tuple[bytes | str, int]] = [
        (b"\xff{not json", 1007),
        ('{"no": "type"}', 1007),
        (control("awareness-update", {"availableAssets": [asset_id() for _ in range(5001)]}), 1008),
        (b"\xff" + b" " * (4 * 1024 * 1024 + 1), 1009),
    ]
    async with await YClient.connect(server.ws_url, project, token) as bystander:
        for frame, code in cases:
            async with await YClient.connect(server.ws_url, project, token) as offender:
                await offender.send_raw(frame)
                assert await offender.wait_closed() == code
        async with await YClient.connect(server.ws_url, project, token) as client:
            await client.send_raw(control("asset-ready", {"assetId": "x"}))  # a server's message
            await client.send_raw(control("request-asset", {"assetId": "../../etc/passwd"}))
            await client.send_raw(b'\xff{"type": "request-asset", "data": [1]}')
            await client.wait_until(lambda: len(messages(client, "error")) == 3)
            assert [e["messageType"] for e in messages(client, "error")] == ["asset-ready", "request-asset", None]
            client.append("still here")
            await bystander.wait_text("still here")
            assert client.close_code is None and bystander.close_code is None


async def test_a_second_author_starts_collaboration(server: InProcessServer, project: str) -> None:
    token = await server.grant(project, "alice")
    held = [asset_id(), asset_id(), asset_id()]
    async with await YClient.connect(server.ws_url, project, token) as first:
        await first.send_raw(control("awareness-update", {"availableAssets": held, "totalAssets": 3}))
        await store_asset(server.sessionmaker, project, held[0])  # already on the server: not asked again
        await first.send_raw(control("request-asset", {"assetId": held[0]}))
        await wait_message(first, "asset-ready")  # the announcement is in
        assert text_types(first) == []  # alone: no collaboration yet
        plain = await YClient.connect(server.ws_url, project, token)  # a stock Yjs client: not an author here
        async with plain, await YClient.connect(server.ws_url, project, await server.grant(project, "bob")) as second:
            await second.send_raw(control("awareness-update", {"availableAssets": [], "totalAssets": 0}))
            bulk = await wait_message(first, "bulk-upload-request")
            assert sorted(bulk["assetIds"]) == sorted(held[1:])
            assert bulk["uploadUrl"] == f"/projects/{project.removeprefix('project-')}/assets"
            await first.wait_until(lambda: "request-sync-state" in text_types(first))
            await second.wait_until(lambda: "trigger-resync" in text_types(second))
            assert sorted(text_types(first)) == ["request-sync-state", "trigger-resync"]
            assert text_types(second) == ["trigger-resync"]  # the oldest socket saves, not the newcomer
            await first.send_raw(control("bulk-upload-progress", {"status": "completed", "total": 2, "completed": 2, "failed": 0}))
            done = await wait_message(second, "bulk-upload-complete")
            assert (done["totalAvailable"], done["failedCount"]) == (2, 0)
            assert plain.opaque == []  # never sent a control frame, so never sent one


async def test_upload_sessions_are_for_editors(server: InProcessServer, project: str) -> None:
    editor = await server.grant(project, "alice")
    viewer = await server.grant(project, "vic", "viewer")
    create = control("upload-session-create", {
        "projectId": project.removeprefix("project-"), "totalFiles": 1, "totalBytes": 3,
        "manifest": [{"clientId": asset_id(), "filename": "a.png", "size": 3, "mimeType": "image/png"}],
    })
    async with await YClient.connect(server.ws_url, project, editor) as e, await YClient.connect(
        server.ws_url, project, viewer
    ) as v:
        await e.send_raw(create)
        await v.send_raw(create)
        ready = await wait_message(e, "upload-session-ready")
        session = verify_upload_session(ready["sessionToken"], server.settings.jwt_secret)
        assert session.project_uuid == project.removeprefix("project-")
        assert ready["config"]["endpoints"]["batch"] == f"/api/upload-session/{ready['sessionToken']}/batch"
        assert ready["expiresAt"] == session.expires_at * 1000
        refused = await wait_message(v, "upload-session-ready")
        assert refused["error"] and refused["sessionToken"] == ""
        await e.send_raw(control("upload-session-create", {"projectId": asset_id(), "totalFiles": 0, "totalBytes": 0}))
        await e.wait_until(lambda: len(messages(e, "upload-session-ready")) == 2)
        assert messages(e, "upload-session-ready")[1]["error"]  # another project's session is refused


async def test_a_failed_or_departed_holder_is_replaced_then_the_waiter_told(server: InProcessServer, project: str) -> None:
    token = await server.grant(project, "alice")
    wanted = asset_id()
    holders = [await YClient.connect(server.ws_url, project, token) for _ in range(2)]
    try:
        for holder in holders:
            await holder.send_raw(control("awareness-update", {"availableAssets": [wanted], "totalAssets": 1}))
            await holder.send_raw(control("request-asset", {"assetId": asset_id()}))
            await wait_message(holder, "asset-not-found")  # its announcement is in
        async with await YClient.connect(server.ws_url, project, token) as waiter:
            await waiter.send_raw(control("request-asset", {"assetId": wanted}))
            await YClient.wait_all(holders, lambda: any(messages(h, "upload-request") for h in holders))
            asked = next(h for h in holders if messages(h, "upload-request"))
            other = next(h for h in holders if h is not asked)
            request = messages(asked, "upload-request")[0]
            await asked.send_raw(control("asset-uploaded", {**request, "success": False, "error": "gone"}))
            assert (await wait_message(other, "upload-request"))["assetId"] == wanted
            await other.close()  # leaves without uploading
            assert (await wait_message(waiter, "asset-not-found"))["assetId"] == wanted
    finally:
        for holder in holders:
            await holder.close()


async def test_a_stock_client_beside_coordinating_authors_is_sent_no_control_frame(
    server: InProcessServer, project: str
) -> None:
    """Stock y-websocket decodes every frame as Yjs: a text frame would break it."""
    node_token = await server.grant(project, "node")
    async with NodeYClient.start(server.ws_url, project, node_token, name="node") as node:
        await node.wait_synced()
        a, b = await _pair(server, project)
        async with a, b:
            for client in (a, b):  # what eXeLearning's client sends on connect: collaboration starts
                await client.send_raw(control("awareness-update", {"availableAssets": [asset_id()], "totalAssets": 1}))
            await b.wait_until(lambda: "trigger-resync" in text_types(b))
            await wait_message(a, "bulk-upload-request")
            a.append("after the control frames")
            assert await node.wait_text("after the control frames") == "after the control frames"
            await node.append("!")
            await b.wait_text("after the control frames!")
            info = await node.info()
            assert info["connected"] is True

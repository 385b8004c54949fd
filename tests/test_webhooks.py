"""Webhooks end to end: a real aiohttp receiver on loopback, the embedded app (SQLite)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from services.collab.handler import COLLAB
from services.embedded import create_app as create_embedded_app
from shared.webhooks.signature import verify
from tests.conftest import make_settings
from tests.support.api import Api
from tests.support.app_server import InProcessServer
from tests.support.node_client import NodeYClient
from tests.support.wait import eventually
from tests.support.webhook_receiver import Receiver
from tests.support.yclient import YClient

pytestmark = pytest.mark.integration


async def _server(tmp_path: Path, **overrides: object) -> InProcessServer:
    settings = make_settings(
        tmp_path,
        webhook_allow_private=True,
        webhook_poll_seconds=0.05,
        webhook_debounce_seconds=0.3,
        webhook_max_debounce_seconds=1.0,
        **overrides,
    )
    return await InProcessServer(create_embedded_app, settings).start()


async def test_signed_document_updated_after_edits(tmp_path: Path, receiver: Receiver) -> None:
    srv = await _server(tmp_path)
    try:
        room = "project-" + "1" * 8 + "-1111-1111-1111-" + "1" * 12
        token = await srv.grant(room, "owner", "owner")
        async with Api(srv.http_url, token) as api:
            uuid = room.removeprefix("project-")
            created = await api.post(
                f"/api/projects/{uuid}/webhooks",
                json={"url": receiver.url, "events": ["document.updated", "version.created"]},
            )
            assert created.status == 201, created.json
            secret = created.json["secret"]
            listed = await api.get(f"/api/projects/{uuid}/webhooks")
            assert "secret" not in listed.json["webhooks"][0]
            async with await YClient.connect(srv.ws_url, room, token) as client:
                client.append("hello")
                await eventually(lambda: receiver.events("document.updated"), 10, what="event")
            headers, body = receiver.requests[0]
            assert verify(secret, headers["X-Exe-Signature"], body, now=time.time())
            event = json.loads(body)
            assert event["project"] == uuid and event["data"]["size"] > 0
            assert event["data"]["state_vector"]
            assert (await api.post(f"/api/projects/{uuid}/versions", json={"label": "v"})).status == 201
            await eventually(lambda: receiver.events("version.created"), 10, what="version event")
            assert len(receiver.events("document.updated")) == 1
            deliveries = await api.get(f"/api/projects/{uuid}/webhooks/deliveries")
            assert {d["status"] for d in deliveries.json["deliveries"]} == {"delivered"}
    finally:
        await srv.stop()


async def test_loopback_url_is_refused_without_allow_private(tmp_path: Path) -> None:
    srv = await InProcessServer(create_embedded_app, make_settings(tmp_path)).start()
    try:
        room = "project-" + "2" * 8 + "-2222-2222-2222-" + "2" * 12
        uuid = room.removeprefix("project-")
        owner = await srv.grant(room, "owner", "owner")
        editor = await srv.grant(room, "editor", "editor")
        async with Api(srv.http_url, owner) as api:
            refused = await api.post(
                f"/api/projects/{uuid}/webhooks",
                json={"url": "http://127.0.0.1:9/x", "events": ["member.added"]},
            )
            assert refused.status == 400 and "non-public" in refused.json["error"]["message"]
        async with Api(srv.http_url, editor) as api:
            assert (await api.get(f"/api/projects/{uuid}/webhooks")).status == 403
    finally:
        await srv.stop()


async def test_receiver_down_then_up_gets_the_event_once(tmp_path: Path, receiver: Receiver) -> None:
    srv = await _server(tmp_path, webhook_retry_first_seconds=0.2)
    try:
        room = "project-" + "3" * 8 + "-3333-3333-3333-" + "3" * 12
        uuid = room.removeprefix("project-")
        token = await srv.grant(room, "owner", "owner")
        receiver.status = 503
        async with Api(srv.http_url, token) as api:
            created = await api.post(
                f"/api/projects/{uuid}/webhooks",
                json={"url": receiver.url, "events": ["version.created"]},
            )
            assert created.status == 201
            assert (await api.post(f"/api/projects/{uuid}/versions", json={})).status == 201
            await eventually(lambda: len(receiver.requests) >= 2, 10, what="two failed attempts")
            receiver.status = 200
            count = len(receiver.requests)

            async def delivered() -> bool:
                reply = await api.get(f"/api/projects/{uuid}/webhooks/deliveries")
                return reply.json["deliveries"][0]["status"] == "delivered"

            await eventually(delivered, 15, what="the delivery to succeed")
            assert len(receiver.requests) == count + 1
            ids = {headers["X-Exe-Delivery"] for headers, _ in receiver.requests}
            bodies = {body for _, body in receiver.requests}
            assert len(ids) == 1 and len(bodies) == 1
    finally:
        await srv.stop()


async def test_connection_events_reach_only_their_subscribers(tmp_path: Path, receiver: Receiver) -> None:
    srv = await _server(tmp_path)
    other = await Receiver().start()
    try:
        room = "project-" + "4" * 8 + "-4444-4444-4444-" + "4" * 12
        uuid = room.removeprefix("project-")
        token = await srv.grant(room, "owner", "owner")
        async with Api(srv.http_url, token) as api:
            subscribed = await api.post(
                f"/api/projects/{uuid}/webhooks",
                json={"url": receiver.url, "events": ["connection.opened", "connection.closed"]},
            )
            assert subscribed.status == 201
            unsubscribed = await api.post(
                f"/api/projects/{uuid}/webhooks", json={"url": other.url, "events": ["member.added"]}
            )
            assert unsubscribed.status == 201
            async with NodeYClient.start(srv.ws_url, room, token) as client:
                await client.wait_synced()
                opened = await eventually(lambda: receiver.events("connection.opened"), 10, what="opened")
            closed = await eventually(lambda: receiver.events("connection.closed"), 10, what="closed")
            assert receiver.signed(subscribed.json["secret"])
            assert opened[0]["project"] == uuid and closed[0]["project"] == uuid
            assert srv.app is not None
            assert opened[0]["data"] == {
                "user_id": srv.users["owner"],
                "instance": srv.app[COLLAB].instance_id,
                "connection": closed[0]["data"]["connection"],
            }
            assert closed[0]["data"]["duration_seconds"] > 0 and closed[0]["data"]["close_code"] is not None
            assert len(receiver.requests) == 2
            assert other.requests == []
            deliveries = (await api.get(f"/api/projects/{uuid}/webhooks/deliveries")).json["deliveries"]
            assert sorted(d["event"] for d in deliveries) == ["connection.closed", "connection.opened"]
    finally:
        await other.stop()
        await srv.stop()


async def test_connections_to_a_project_nobody_subscribes_cost_one_lookup(tmp_path: Path) -> None:
    srv = await _server(tmp_path)
    try:
        room = "project-" + "5" * 8 + "-5555-5555-5555-" + "5" * 12
        token = await srv.grant(room, "editor", "editor")
        for _ in range(3):
            async with NodeYClient.start(srv.ws_url, room, token) as client:
                await client.wait_synced()
        assert srv.app is not None
        events = srv.app[COLLAB].connection_events
        assert await events.subscribers(room.removeprefix("project-")) is None
        assert events.lookups == 1  # cached for SUBSCRIBERS_TTL: no query per connection
    finally:
        await srv.stop()


async def test_a_global_webhook_gets_the_connection_events_it_lists(
    tmp_path: Path, receiver: Receiver
) -> None:
    srv = await _server(
        tmp_path, webhook_urls=receiver.url, webhook_secret="global", webhook_events="connection.opened"
    )
    try:
        room = "project-" + "6" * 8 + "-6666-6666-6666-" + "6" * 12
        token = await srv.grant(room, "editor", "editor")
        for _ in range(2):  # the second open is delivered well after the first close was handled
            async with NodeYClient.start(srv.ws_url, room, token) as client:
                await client.wait_synced()
        await eventually(lambda: len(receiver.events("connection.opened")) == 2, 10, what="two opens")
        assert receiver.events("connection.closed") == [] and receiver.signed("global")
    finally:
        await srv.stop()


async def test_a_receiver_that_never_answers_times_out_and_a_huge_answer_is_cut_off(
    tmp_path: Path, receiver: Receiver
) -> None:
    srv = await _server(
        tmp_path,
        webhook_timeout_seconds=0.5,
        webhook_retry_first_seconds=0.2,
        webhook_max_response_bytes=4096,
    )
    try:
        room = "project-" + "5" * 8 + "-5555-4555-8555-" + "5" * 12
        uuid = room.removeprefix("project-")
        token = await srv.grant(room, "owner", "owner")
        receiver.hold = True  # the first attempt is never answered
        async with Api(srv.http_url, token) as api:
            created = await api.post(
                f"/api/projects/{uuid}/webhooks", json={"url": receiver.url, "events": ["version.created"]}
            )
            assert created.status == 201
            assert (await api.post(f"/api/projects/{uuid}/versions", json={})).status == 201

            async def timed_out() -> list[dict[str, object]]:
                reply = await api.get(f"/api/projects/{uuid}/webhooks/deliveries")
                return [d for d in reply.json["deliveries"] if d["last_error"] == "timed out"]

            [first] = await eventually(timed_out, 10, what="the first attempt to time out")
            assert first["status"] == "pending" and first["attempts"] == 1
            # the next attempt is answered with an endless body: the sender reads its cap, no more
            receiver.answer_bytes = 1 << 30
            receiver.release()

            async def delivered() -> list[dict[str, object]]:
                reply = await api.get(f"/api/projects/{uuid}/webhooks/deliveries")
                return [d for d in reply.json["deliveries"] if d["status"] == "delivered"]

            [done] = await eventually(delivered, 15, what="the retry to be delivered")
        attempts = done["attempts"]
        assert isinstance(attempts, int) and attempts >= 2 and done["last_status_code"] == 200
        assert receiver.answered_bytes < 64 << 20  # it stopped reading long before 1 GiB
    finally:
        await srv.stop()

"""Issue 15: eXeLearning's editor works against exe-collab unchanged, on the HA stack.

One stack for the module (nginx in front of 2 gateways and 2 collabs, Redis, PostgreSQL,
the persistence worker). Our own Node client plays eXeLearning's client side
(tests/node/exe_client.mjs: a stock y-websocket provider, `0xFF` JSON control frames on its
socket, `fetch` for uploads, downloads and saves), everything through nginx.

Which instance a client is on: nginx keeps every client of a room on one instance (room
affinity, a consistent hash of the room), so to test the cross-instance paths the first
author connects through nginx and the second straight to the other collab instance's port;
HTTP (uploads, downloads, saves) still goes through nginx. That is asserted, not assumed:
each handshake's answer names its instance (`X-Instance-Id`, reported by the client as an
`instance` event), and the instances' metrics count one connection each.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest

from stack import Stack
from tests.support.api import Api
from tests.support.exe_client import CLIENT_MESSAGES, ExeNodeClient
from tests.support.exe_tokens import exe_token
from tests.support.stack_metrics import (
    collab_by_id,
    connections_per_instance,
    idle,
    other_collab,
)
from tests.support.throttle import UNTHROTTLED

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"
CLOSE_UNAUTHORIZED = 4401


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    # A dead instance's sockets leave the coordination within about a second.
    env = {"LOG_LEVEL": "WARNING", "PRESENCE_TTL": "1.0", "PRESENCE_INTERVAL": "0.3", **UNTHROTTLED}
    running = Stack.start(collab=2, gateway=2, env=env)
    try:
        yield running
    finally:
        running.stop()


@dataclass(frozen=True)
class Author:
    user_id: int
    email: str
    token: str  # our login's access_token, also the `auth` cookie's value


@dataclass(frozen=True)
class Project:
    uuid: str
    owner: Author
    editor: Author

    @property
    def room(self) -> str:
        return f"project-{self.uuid}"


async def sign_up(api: Api, name: str) -> Author:
    email = f"{name}-{uuid.uuid4().hex[:8]}@example.com"
    registered = await api.post(
        "/api/auth/register", json={"email": email, "password": PASSWORD, "name": name}
    )
    assert registered.status == 201, registered.body
    login = await api.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status == 200, login.body
    return Author(int(login.json["user"]["id"]), email, str(login.json["access_token"]))


@pytest.fixture
async def project(stack: Stack) -> AsyncIterator[Project]:
    """A new project of author A with author B as an editor (registered through nginx)."""
    async with Api(stack.url) as api:
        owner, editor = await sign_up(api, "ana"), await sign_up(api, "ben")
        created = await api.post("/api/projects", json={"title": "issue 15"}, token=owner.token)
        assert created.status == 201, created.body
        project_uuid = created.json["uuid"]
        added = await api.put(
            f"/api/projects/{project_uuid}/members/{editor.email}",
            json={"role": "editor"},
            token=owner.token,
        )
        assert added.status in (200, 201), added.body
    await idle(stack)
    yield Project(project_uuid, owner, editor)


def exe_client(
    stack: Stack, room: str, token: str, name: str, ws_url: str | None = None
) -> ExeNodeClient:
    """An eXeLearning client: WebSocket through nginx (or `ws_url`), HTTP through nginx."""
    return ExeNodeClient.start(
        ws_url or stack.ws_url, room, token, name=name, api_url=f"{stack.url}/api",
        max_backoff_ms=250,
    )  # fmt: skip


@contextlib.asynccontextmanager
async def two_authors(
    stack: Stack, project: Project
) -> AsyncIterator[tuple[ExeNodeClient, ExeNodeClient]]:
    """A (the owner, through nginx) and B (the editor, straight to the other collab
    instance: nginx would put it with A), synced, on different instances (A first)."""
    async with exe_client(stack, project.room, project.owner.token, "a") as a:
        await a.wait_synced()
        other = other_collab(stack, await a.instance())
        b_client = exe_client(stack, project.room, project.editor.token, "b", other.ws_url)
        async with b_client as b:
            await b.wait_synced()
            assert await b.instance() == other.instance_id != await a.instance()
            assert await connections_per_instance(stack) == {"collab-1": 1, "collab-2": 1}
            yield a, b


def exe_asset_id(content: bytes) -> str:
    """eXeLearning's asset id: the first 32 hex digits of the file's SHA-256, as a UUID."""
    return str(uuid.UUID(hashlib.sha256(content).hexdigest()[:32]))


async def announced(client: ExeNodeClient) -> None:
    """Wait until the server has handled the client's announcement: a request for an asset
    nobody holds, sent after it on the same socket, is answered."""
    unknown = str(uuid.uuid4())
    await client.request_asset(unknown)
    await client.wait_control("asset-not-found", assetId=unknown)


def no_client_message_relayed(*clients: ExeNodeClient) -> None:
    for client in clients:
        received = {e["type"] for e in client.controls()}
        assert not received & CLIENT_MESSAGES, (client.name, received)


# -- assets --------------------------------------------------------------------------------


async def test_an_asset_held_on_one_instance_reaches_an_author_on_the_other(
    stack: Stack, project: Project
) -> None:
    content = os.urandom(200_000)
    asset = exe_asset_id(content)
    async with two_authors(stack, project) as (a, b):
        await a.hold(asset, content, "photo.png", "image/png")
        await announced(a)
        await b.request_asset(asset)
        request = await a.wait_control("upload-request", assetId=asset)
        assert request["uploadUrl"] == f"/projects/{project.uuid}/assets?clientId={asset}"
        uploaded = await a.wait_event("uploaded", asset=asset)
        assert uploaded["status"] in (200, 201), uploaded
        ready = await b.wait_control("asset-ready", assetId=asset)
        assert ready["url"] == f"/projects/{project.uuid}/assets/by-client-id/{asset}"
        assert ready["size"] == len(content)
        downloaded = await b.wait_event("downloaded", asset=asset)
        assert downloaded["status"] == 200, downloaded
        assert (downloaded["size"], downloaded["sha256"]) == (
            len(content),
            hashlib.sha256(content).hexdigest(),
        )
        headers = downloaded["headers"]
        assert (headers["x-filename"], headers["x-original-mime"]) == ("photo.png", "image/png")
        assert headers["x-file-size"] == str(len(content))
        # on its next connect, B's editor finds the file in the project's asset list
        since = await b.disconnect()
        await b.connect()
        listed = await b.wait_event("assets_listed", since=since)
        assert listed["status"] == 200 and listed["client_ids"] == [asset], listed
        await b.wait_synced(since=since)
        # control frames reach no other client; Yjs frames pass the wrapped socket both ways
        assert b.controls("upload-request") == []
        await a.append("with an image;")
        await b.wait_text("with an image;")
        no_client_message_relayed(a, b)


# -- documents and sign-in ---------------------------------------------------------------


async def test_a_save_reaches_the_other_instance_and_a_fresh_get(
    stack: Stack, project: Project
) -> None:
    async with two_authors(stack, project) as (a, b):
        # B's arrival started the collaboration on a project never saved: A, the oldest,
        # was asked (a text frame) to save its state, and did
        saved = await a.wait_event("saved", reason="request-sync-state")
        assert saved["status"] == 200 and saved["body"]["markedAsSaved"] is True, saved
        await a.append("live;")
        await b.wait_text("live;")
        # offline, A's edit can only reach B through the save
        await a.disconnect()
        await a.append("saved;")
        status, body = await a.save(mark_saved=True)
        assert status == 200 and body["success"] is True and body["markedAsSaved"] is True, body
        await b.wait_text("live;saved;")
        assert await b.load() == (200, "live;saved;")
        since = await a.connect()
        await a.wait_synced(since=since)
        assert await a.text() == "live;saved;"


async def test_a_cookie_only_save_is_accepted_from_this_origin_and_refused_cross_site(
    stack: Stack, project: Project
) -> None:
    """`navigator.sendBeacon` on page unload: the `auth` cookie and what the browser adds
    (Sec-Fetch-Site, Origin), no Authorization header, through nginx."""
    cookie = f"auth={project.owner.token}"
    async with two_authors(stack, project) as (a, b):
        await a.disconnect()
        await a.append("beacon;")
        same_origin = {"Sec-Fetch-Site": "same-origin", "Origin": stack.url}
        assert (await a.save(cookie=cookie, headers=same_origin))[0] == 200
        await b.wait_text("beacon;")
        await a.append("origin only;")  # a browser without fetch metadata: Origin decides
        assert (await a.save(cookie=cookie, headers={"Origin": stack.url}))[0] == 200
        await b.wait_text("beacon;origin only;")
        await a.append("cross;")
        cross_site = {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}
        status, body = await a.save(cookie=cookie, headers=cross_site)
        assert status == 403 and body["error"]["code"] == "cross_site", body
        assert (await a.save(cookie=cookie))[0] == 403  # neither header: refused
        assert await b.load() == (200, "beacon;origin only;")


async def test_an_exelearning_token_joins_the_room_and_a_forged_one_does_not(
    stack: Stack, project: Project
) -> None:
    """A token as eXeLearning's app signs it (integer sub, no roles) with API_JWT_SECRET."""
    own = exe_token(stack.jwt_secret, project.editor.user_id, email=project.editor.email)
    forged = exe_token(
        "not-the-secret-" + "f" * 40, project.editor.user_id, email=project.editor.email
    )
    async with exe_client(stack, project.room, project.owner.token, "a") as a:
        await a.wait_synced()
        async with exe_client(stack, project.room, own, "b") as b:
            await b.wait_synced()
            await b.append("by eXeLearning's token;")
            await a.wait_text("by eXeLearning's token;")
            assert await b.load() == (200, "by eXeLearning's token;")
        async with exe_client(stack, project.room, forged, "forged") as refused:
            closed = await refused.wait_event("closed")
            assert closed["code"] == CLOSE_UNAUTHORIZED
            assert not [e for e in refused.events if e["event"] == "synced" and e["value"]]
            assert await refused.load() == (401, None)


# -- failures (last: an instance stays dead) ---------------------------------------------------


async def test_a_holders_instance_killed_while_an_author_waits_is_never_silence(
    stack: Stack, project: Project
) -> None:
    """The holder's instance is SIGKILLed after it was asked (its upload is slow): the
    waiter hears `asset-not-found`, or gets the upload of the holder back on the other
    instance, within a bounded time; either way it gets the file in the end."""
    content = os.urandom(50_000)
    asset = exe_asset_id(content)
    async with two_authors(stack, project) as (holder, waiter):
        await holder.hold(asset, content, "slow.bin", "application/octet-stream", defer=1)
        await announced(holder)
        victim = collab_by_id(stack, await holder.instance())
        await waiter.request_asset(asset)
        await holder.wait_event("upload_deferred", asset=asset)
        since = waiter.mark()
        await asyncio.to_thread(stack.kill_collab, victim.index - 1)
        heard = await waiter.wait_for(
            lambda e: (
                e["event"] == "control"
                and e["type"] in ("asset-not-found", "asset-ready")
                and e["data"].get("assetId") == asset
            ),
            timeout=15,
            since=since,
        )
        print(f"\nafter the SIGKILL the waiter heard {heard['type']}")
        # the holder is back (through nginx, on the survivor), announces again, is asked, uploads
        downloaded = await waiter.wait_event("downloaded", asset=asset, timeout=20)
        assert downloaded["sha256"] == hashlib.sha256(content).hexdigest()
        assert await holder.instance() == await waiter.instance()
        no_client_message_relayed(holder, waiter)

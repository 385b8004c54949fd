"""Who may do what: the authorization matrix of every gateway route, and the same rule on the WebSocket."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from pycrdt import Doc, Text

from shared.access import Role
from shared.access_db import DatabaseAccess
from shared.auth import Identity
from shared.compaction import build_doc
from shared.db.resources import DATABASE
from tests.support.api import Api, Reply
from tests.support.app_server import InProcessServer
from tests.support.cluster import metric, metrics_of, wait_metric
from tests.support.fixtures_data import create_project, create_user, email_for, make_member
from tests.support.wait import eventually
from tests.support.yclient import YClient

pytestmark = pytest.mark.integration

ROLES = ("anonymous", "outsider", "viewer", "editor", "owner")


def text_update(value: str) -> bytes:
    doc: Doc = Doc()
    doc.get("t", type=Text).insert(0, value)
    return doc.get_update()


def text_of(update: bytes) -> str:
    doc = build_doc([update])
    return str(doc.get("t", type=Text))


@dataclass
class World:
    server: InProcessServer
    api: Api
    project: str  # uuid
    tokens: dict[str, str | None]
    version_id: int = 0

    def as_(self, role: str) -> Api:
        return self.api.with_token(self.tokens[role])


@pytest.fixture
async def world(server: InProcessServer) -> AsyncIterator[World]:
    async with Api(server.http_url) as api:
        sm = server.sessionmaker
        ids = {
            name: await create_user(sm, name)
            for name in ("owner", "editor", "viewer", "outsider", "extra")
        }
        tokens: dict[str, str | None] = {name: server.token(uid) for name, uid in ids.items()}
        tokens["anonymous"] = None
        created = await api.post("/api/projects", json={"title": "matrix"}, token=tokens["owner"])
        assert created.status == 201, created.body
        project = created.json["uuid"]
        for name in ("editor", "viewer"):
            reply = await api.put(
                f"/api/projects/{project}/members/{email_for(name)}",
                json={"role": name},
                token=tokens["owner"],
            )
            assert reply.status == 201, reply.body
        w = World(server, api, project, tokens)
        version = await api.post(
            f"/api/projects/{project}/versions", json={"label": "v"}, token=tokens["owner"]
        )
        w.version_id = version.json["id"]
        for role in ROLES:
            await _upload(api, project, f"{role}.txt", b"to delete", tokens["owner"])
        await _upload(api, project, "shared.txt", b"shared", tokens["owner"])
        yield w


async def _upload(api: Api, project: str, name: str, data: bytes, token: str | None) -> Reply:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=name, content_type="text/plain")
    return await api.post(f"/api/projects/{project}/assets", data=form, token=token)


Call = Callable[[World, str], Any]


def _json(method: str, path: str, body: Any = None) -> Call:
    async def call(w: World, role: str) -> Reply:
        kwargs = {"json": body} if body is not None else {}
        return await w.as_(role).request(
            method, path.format(p=w.project, v=w.version_id, role=role), **kwargs
        )

    return call


def _import() -> Call:
    async def call(w: World, role: str) -> Reply:
        return await w.as_(role).post(
            f"/api/projects/{w.project}/yjs-document",
            data=text_update(f"by {role} "),
            headers={"Content-Type": "application/octet-stream"},
        )

    return call


def _upload_call() -> Call:
    async def call(w: World, role: str) -> Reply:
        return await _upload(w.api, w.project, f"new-by-{role}.txt", b"hello", w.tokens[role])

    return call


def _tus_create() -> Call:
    async def call(w: World, role: str) -> Reply:
        return await w.as_(role).post(
            f"/api/projects/{w.project}/uploads",
            headers={
                "Tus-Resumable": "1.0.0",
                "Upload-Length": "5",
                "Upload-Metadata": "filename aGkudHh0",
            },
        )

    return call


OK = {200, 201, 204}
# expected status per role, in the order of ROLES: anonymous, outsider, viewer, editor, owner
MATRIX: list[tuple[str, Call, tuple[Any, ...]]] = [
    ("list projects", _json("GET", "/api/projects"), (401, 200, 200, 200, 200)),
    ("get project", _json("GET", "/api/projects/{p}"), (401, 403, 200, 200, 200)),
    (
        "rename project",
        _json("PATCH", "/api/projects/{p}", {"title": "new"}),
        (401, 403, 403, 200, 200),
    ),
    ("list members", _json("GET", "/api/projects/{p}/members"), (401, 403, 200, 200, 200)),
    (
        "add member",
        _json("PUT", "/api/projects/{p}/members/" + email_for("extra"), {"role": "viewer"}),
        (401, 403, 403, 403, 201),
    ),
    (
        "change member",
        _json("PUT", "/api/projects/{p}/members/" + email_for("extra"), {"role": "editor"}),
        (401, 403, 403, 403, 200),
    ),
    (
        "remove member",
        _json("DELETE", "/api/projects/{p}/members/" + email_for("extra")),
        (401, 403, 403, 403, 204),
    ),
    ("export document", _json("GET", "/api/projects/{p}/yjs-document"), (401, 403, 200, 200, 200)),
    ("import document", _import(), (401, 403, 403, 200, 200)),
    ("list versions", _json("GET", "/api/projects/{p}/versions"), (401, 403, 200, 200, 200)),
    (
        "create version",
        _json("POST", "/api/projects/{p}/versions", {"label": "x"}),
        (401, 403, 403, 201, 201),
    ),
    ("fetch version", _json("GET", "/api/projects/{p}/versions/{v}"), (401, 403, 200, 200, 200)),
    (
        "restore version",
        _json("POST", "/api/projects/{p}/versions/{v}/restore"),
        (401, 403, 403, 200, 200),
    ),
    ("list assets", _json("GET", "/api/projects/{p}/assets"), (401, 403, 200, 200, 200)),
    ("upload asset", _upload_call(), (401, 403, 403, 201, 201)),
    (
        "download asset",
        _json("GET", "/api/projects/{p}/assets/shared.txt"),
        (401, 403, 200, 200, 200),
    ),
    (
        "delete asset",
        _json("DELETE", "/api/projects/{p}/assets/{role}.txt"),
        (401, 403, 403, 204, 204),
    ),
    ("tus create", _tus_create(), (401, 403, 403, 201, 201)),
    ("tus options", _json("OPTIONS", "/api/projects/{p}/uploads"), (204, 204, 204, 204, 204)),
    ("delete project", _json("DELETE", "/api/projects/{p}"), (401, 403, 403, 403, 204)),
]


async def test_authorization_matrix(world: World) -> None:
    failures = []
    for label, call, expected in MATRIX:
        for role, want in zip(ROLES, expected, strict=True):
            reply: Reply = await call(world, role)
            if reply.status != want:
                failures.append(
                    f"{label} as {role}: {reply.status} (expected {want}) {reply.body[:120]!r}"
                )
            elif reply.status >= 400 and not reply.is_json_error():
                failures.append(f"{label} as {role}: error is not JSON: {reply.body[:120]!r}")
    assert not failures, "\n".join(failures)
    # once deleted, the project is gone for everyone, its owner included
    for role in ("viewer", "editor", "owner"):
        reply = await world.as_(role).get(f"/api/projects/{world.project}")
        assert reply.status == 404 and reply.is_json_error()
    assert world.project not in [
        p["uuid"] for p in (await world.as_("owner").get("/api/projects")).json["projects"]
    ]


async def test_outsider_list_excludes_project_and_unknown_projects_are_404(world: World) -> None:
    listed = await world.as_("outsider").get("/api/projects")
    assert listed.status == 200 and listed.json["projects"] == []
    listed = await world.as_("viewer").get("/api/projects")
    assert [(p["uuid"], p["role"]) for p in listed.json["projects"]] == [(world.project, "viewer")]
    for path in (
        f"/api/projects/{uuid.uuid4()}",
        "/api/projects/not-a-uuid",
        f"/api/projects/{uuid.uuid4()}/assets",
    ):
        reply = await world.as_("owner").get(path)
        assert reply.status == 404 and reply.is_json_error(), (path, reply.body)


async def test_member_rules(world: World) -> None:
    owner = world.as_("owner")
    base = f"/api/projects/{world.project}/members"
    # the last owner can neither leave nor be demoted
    assert (await owner.delete(f"{base}/{email_for('owner')}")).status == 409
    assert (await owner.put(f"{base}/{email_for('owner')}", json={"role": "editor"})).status == 409
    # bad input
    assert (await owner.put(f"{base}/{email_for('extra')}", json={"role": "admin"})).status == 400
    assert (await owner.put(f"{base}/not-an-email", json={"role": "viewer"})).status == 400
    assert (await owner.put(f"{base}/nobody@example.com", json={"role": "viewer"})).status == 404
    # a member may leave on their own; a viewer may not remove others
    assert (await world.as_("viewer").delete(f"{base}/{email_for('editor')}")).status == 403
    assert (await world.as_("viewer").delete(f"{base}/{email_for('viewer')}")).status == 204
    assert (await world.as_("viewer").get(f"/api/projects/{world.project}")).status == 403
    # a second owner makes demoting the first possible
    assert (await owner.put(f"{base}/{email_for('editor')}", json={"role": "owner"})).status == 200
    assert (await owner.put(f"{base}/{email_for('owner')}", json={"role": "editor"})).status == 200
    assert (await owner.put(f"{base}/{email_for('viewer')}", json={"role": "viewer"})).status == 403


# ----------------------------------------------------------------------------------- WebSocket


async def _close_code(server: InProcessServer, project: str, token: str | None) -> int | None:
    params = {"token": token} if token is not None else {}
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{server.ws_url}/project-{project}", params=params) as ws,
    ):
        while True:
            msg = await ws.receive(timeout=10)
            if msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.ERROR,
            ):
                return ws.close_code


async def test_websocket_join_requires_membership(world: World) -> None:
    server = world.server
    assert await _close_code(server, world.project, world.tokens["outsider"]) == 4403
    assert await _close_code(server, world.project, None) == 4401
    assert await _close_code(server, world.project, server.token("not-a-user-id")) == 4403
    assert (
        await _close_code(server, str(uuid.uuid4()), world.tokens["owner"]) == 4403
    )  # unknown project
    for role in ("viewer", "editor", "owner"):
        async with await YClient.connect(
            server.ws_url, f"project-{world.project}", world.tokens[role]
        ) as c:
            assert c.synced.is_set() and c.close_code is None


async def test_viewer_edits_never_reach_others_or_the_store(world: World) -> None:
    server, room = world.server, f"project-{world.project}"
    async with (
        await YClient.connect(server.ws_url, room, world.tokens["editor"]) as editor,
        await YClient.connect(server.ws_url, room, world.tokens["viewer"]) as viewer,
    ):
        viewer.append("vandalism")
        editor.append("ok")
        await viewer.wait_until(lambda: "ok" in viewer.value)
        async with await YClient.connect(server.ws_url, room, world.tokens["owner"]) as fresh:
            await fresh.wait_text("ok")
        assert editor.value == "ok"
        exported = await world.as_("viewer").get(f"/api/projects/{world.project}/yjs-document")
        assert text_of(exported.body) == "ok"
    # once the room has unloaded and flushed, the store has the editor's text only
    store = server.app[DATABASE].store  # type: ignore[index]

    async def stored_text() -> str:
        return str(build_doc(await store.load_updates(world.project)).get("t", type=Text))

    async def unloaded_and_stored() -> bool:
        return not _room_loaded(server, world.project) and await stored_text() == "ok"

    await eventually(unloaded_and_stored, 10, what="the room to unload with the editor's text stored")
    assert not _room_loaded(server, world.project)
    assert await stored_text() == "ok"


def _roles_in_room(server: InProcessServer, project: str) -> list[Role]:
    from services.collab.handler import COLLAB

    room = server.app[COLLAB].rooms.loaded_room(project)  # type: ignore[index]
    roles = [] if room is None else [conn.role for conn in room.connections.values()]
    return sorted(roles, key=lambda role: role.value)


def _room_loaded(server: InProcessServer, project: str) -> bool:
    from services.collab.handler import COLLAB

    return server.app[COLLAB].rooms.loaded_room(project) is not None  # type: ignore[index]


async def test_removing_a_member_disconnects_them(world: World) -> None:
    server, room = world.server, f"project-{world.project}"
    async with (
        await YClient.connect(server.ws_url, room, world.tokens["editor"]) as editor,
        await YClient.connect(server.ws_url, room, world.tokens["owner"]) as owner,
    ):
        reply = await world.as_("owner").delete(
            f"/api/projects/{world.project}/members/{email_for('editor')}"
        )
        assert reply.status == 204
        assert await editor.wait_closed(timeout=8) == 4403
        assert owner.close_code is None
        assert await _close_code(server, world.project, world.tokens["editor"]) == 4403


async def test_demoting_to_viewer_makes_connection_read_only(world: World) -> None:
    server, room = world.server, f"project-{world.project}"
    async with (
        await YClient.connect(server.ws_url, room, world.tokens["editor"]) as editor,
        await YClient.connect(server.ws_url, room, world.tokens["owner"]) as owner,
    ):
        editor.append("before;")
        await owner.wait_text("before;")
        reply = await world.as_("owner").put(
            f"/api/projects/{world.project}/members/{email_for('editor')}", json={"role": "viewer"}
        )
        assert reply.status == 200
        # the next access re-check (every ACCESS_CACHE_TTL = 2 s) makes the connection a viewer's
        await eventually(
            lambda: _roles_in_room(server, world.project) == [Role.OWNER, Role.VIEWER],
            6,
            what="the access re-check to demote the editor's connection",
        )
        dropped = metric(await metrics_of(server.http_url), "collab_readonly_dropped_total")
        editor.append("after")
        owner.append("owner;")
        await editor.wait_until(lambda: "owner;" in editor.value)
        await wait_metric(server.http_url, "collab_readonly_dropped_total", dropped + 1, 10)
        assert "after" not in owner.value


async def test_deleting_a_project_closes_its_rooms(world: World) -> None:
    server, room = world.server, f"project-{world.project}"
    async with await YClient.connect(server.ws_url, room, world.tokens["owner"]) as owner:
        assert (await world.as_("owner").delete(f"/api/projects/{world.project}")).status == 204
        assert await owner.wait_closed(timeout=8) == 4403


# --------------------------------------------------------------------------- DatabaseAccess


async def test_database_access_rule_and_cache(server: InProcessServer) -> None:
    sm = server.sessionmaker
    alice = await create_user(sm, "alice")
    bob = await create_user(sm, "bob")
    project = await create_project(sm, owner_id=alice)
    now = [1000.0]
    access = DatabaseAccess(sm, ttl=2.0, clock=lambda: now[0])
    who = lambda uid: Identity(str(uid))

    assert await access.role_for(who(alice), project) is Role.OWNER
    assert await access.role_for(who(bob), project) is None
    assert (
        await access.role_for(Identity("admin-without-membership", roles=("admin",)), project)
        is None
    )
    assert await access.role_for(who(alice), str(uuid.uuid4())) is None
    lookups = access.lookups
    for _ in range(20):  # cached: no query per message
        assert await access.role_for(who(alice), project) is Role.OWNER
        assert await access.role_for(who(bob), project) is None
    assert access.lookups == lookups

    await make_member(sm, project, bob, Role.VIEWER)
    assert await access.role_for(who(bob), project) is None  # still cached
    now[0] += 2.5
    assert await access.role_for(who(bob), project) is Role.VIEWER  # expired
    await make_member(sm, project, bob, Role.EDITOR)
    access.invalidate(project)
    assert await access.role_for(who(bob), project) is Role.EDITOR  # invalidated
    access.invalidate()
    assert access.lookups == lookups + 2


async def test_roles_for_many_answers_every_pair_in_one_query(server) -> None:  # type: ignore[no-untyped-def]
    from shared.access_db import DatabaseAccess
    from shared.auth import Identity

    first, second = f"project-{uuid.uuid4()}", f"project-{uuid.uuid4()}"
    await server.grant(first, "ann", "owner")
    await server.grant(second, "ann", "viewer")
    await server.grant(second, "ben", "editor")
    ann, ben = server.users["ann"], server.users["ben"]
    access = DatabaseAccess(server.sessionmaker, ttl=60)
    pairs = [
        (Identity(str(ann)), first.removeprefix("project-")),
        (Identity(str(ann)), second.removeprefix("project-")),
        (Identity(str(ben)), second.removeprefix("project-")),
        (Identity(str(ben)), first.removeprefix("project-")),  # not a member
        (Identity("not-a-user-id"), first.removeprefix("project-")),
        (Identity(str(ann)), "not-a-uuid"),
    ]
    roles = await access.roles_for_many(pairs)
    assert [roles[(i.user_id, p)] for i, p in pairs] == [Role.OWNER, Role.VIEWER, Role.EDITOR, None, None, None]
    assert access.lookups == 1
    await access.roles_for_many(pairs)  # all cached now
    assert access.lookups == 1
    assert await access.role_for(pairs[2][0], pairs[2][1]) is Role.EDITOR and access.lookups == 1

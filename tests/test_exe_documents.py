"""eXeLearning's document routes and sign-in, as its editor uses them: saves that reach every
instance, the `auth` cookie (and its cross-site rule), eXeLearning's own tokens."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
from pycrdt import Doc, Text
from sqlalchemy import select

from services.embedded import create_app as create_embedded_app
from shared.compaction import build_doc
from shared.db.engine import create_sessionmaker
from shared.db.models import Project
from shared.db.resources import DATABASE
from tests.conftest import make_settings
from tests.support.api import Api
from tests.support.app_server import InProcessServer
from tests.support.cluster import Cluster, wait_stored
from tests.support.exe_tokens import exe_token
from tests.support.fixtures_data import DEFAULT_PASSWORD, create_user, email_for
from tests.support.node_client import NodeYClient
from tests.support.wait import eventually
from tests.support.yclient import YClient

pytestmark = pytest.mark.integration

OCTET = {"Content-Type": "application/octet-stream"}
CLOSE_UNAUTHORIZED = 4401


def full_state(text: str) -> bytes:
    """What eXeLearning's editor POSTs: `Y.encodeStateAsUpdate` of its whole document."""
    doc: Doc = Doc()
    doc.get("t", type=Text).insert(0, text)
    return doc.get_update()


def text_of(update: bytes) -> str:
    return str(build_doc([update]).get("t", type=Text))


def doc_path(project: str, suffix: str = "yjs-document") -> str:
    return f"/api/projects/uuid/{project.removeprefix('project-')}/{suffix}"


async def project_row(sessionmaker, project: str) -> Project:  # type: ignore[no-untyped-def]
    async with sessionmaker() as session:
        row = await session.scalar(select(Project).where(Project.uuid == uuid.UUID(project.removeprefix("project-"))))
    assert row is not None
    return row


async def test_a_save_reaches_clients_on_both_instances_and_a_fresh_get(cluster: Cluster) -> None:
    a_srv, b_srv, gateway = await cluster.pair()
    room = await cluster.new_project(1)
    token = cluster.token(1)
    async with (
        Api(gateway.http_url, token) as api,
        await YClient.connect(a_srv.ws_url, room, token) as on_a,
        NodeYClient.start(b_srv.ws_url, room, exe_token(cluster.settings().jwt_secret, 1), name="b") as on_b,
    ):
        await on_b.wait_synced()
        on_a.append("live;")
        await on_b.wait_text("live;")
        title = "Título con ñ 🎉"
        saved = await api.post(
            doc_path(room),
            params={"markSaved": "true"},
            data=full_state("saved;"),
            headers={**OCTET, "X-Project-Title": quote(title)},
        )
        assert saved.status == 200, saved.body
        body = saved.json
        assert body["success"] is True and body["markedAsSaved"] is True and body["message"]
        assert abs(int(body["version"]) - time.time() * 1000) < 60_000
        await on_a.wait_until(lambda: "saved;" in on_a.value and "live;" in on_a.value)
        await on_b.wait_text(on_a.value)
        fresh = await api.get(doc_path(room))
        assert fresh.status == 200 and fresh.headers["Content-Type"] == "application/octet-stream"
        assert text_of(fresh.body) == on_a.value
        row = await project_row(create_sessionmaker(cluster.engine), room)
        assert row.title == title and row.saved_at is not None
        await wait_stored(cluster, room, on_a.value)


async def test_an_exelearning_token_joins_the_room_and_a_forged_one_does_not(cluster: Cluster) -> None:
    collab = await cluster.collab("a")
    gateway = await cluster.gateway()
    room = await cluster.new_project(3)
    secret = cluster.settings().jwt_secret
    async with await YClient.connect(collab.ws_url, room, exe_token(secret, 3)) as joined:
        assert joined.close_code is None
        joined.append("by eXeLearning's token")
        async with Api(gateway.http_url, exe_token(secret, 3)) as api:
            # the same token works on HTTP, and the document holds the edit
            async def exported() -> bool:
                return text_of((await api.get(doc_path(room))).body) == "by eXeLearning's token"

            await eventually(exported, what="the edit in the exported document")
    forged = await YClient.connect(collab.ws_url, room, exe_token("another-secret-" + "q" * 40, 3))
    try:
        assert await forged.wait_closed() == CLOSE_UNAUTHORIZED
    finally:
        await forged.close()
    not_a_member = await YClient.connect(collab.ws_url, room, exe_token(secret, 999))
    try:
        assert await not_a_member.wait_closed() == 4403
    finally:
        await not_a_member.close()


# ---------------------------------------------------------------- one embedded process (SQLite)


@pytest.fixture
async def small_server(tmp_path: Path) -> AsyncIterator[InProcessServer]:
    """Documents limited to 4 KiB; nginx-style forwarded headers trusted from loopback."""
    settings = make_settings(tmp_path, max_document_bytes=4096, forwarded_allow_ips="127.0.0.1", app_version="v3.1.0")
    srv = await InProcessServer(create_embedded_app, settings).start()
    try:
        yield srv
    finally:
        await srv.stop()


async def test_load_save_rename_and_their_refusals(small_server: InProcessServer) -> None:
    srv = small_server
    project = str(uuid.uuid4())
    editor = await srv.grant(project, "editor", "editor")
    viewer = await srv.grant(project, "viewer", "viewer")
    async with Api(srv.http_url, editor) as api:
        never_saved = await api.get(doc_path(project))
        assert never_saved.status == 404 and never_saved.error_code == "not_saved"
        plain = await api.post(doc_path(project), data=full_state("one"), headers=OCTET)
        assert plain.status == 200 and plain.json["markedAsSaved"] is False
        row = await project_row(srv.sessionmaker, project)
        assert row.saved_at is None and row.title == ""  # no title header: unchanged
        loaded = await api.get(doc_path(project))
        assert loaded.status == 200 and text_of(loaded.body) == "one"
        # a viewer reads but cannot save
        assert (await api.get(doc_path(project), token=viewer)).status == 200
        refused = await api.post(doc_path(project), data=full_state("viewer"), headers=OCTET, token=viewer)
        assert refused.status == 403
        # MAX_DOCUMENT_BYTES: refused, nothing merged
        big = await api.post(doc_path(project), data=full_state("x" * 8000), headers=OCTET)
        assert big.status == 413 and big.error_code == "document_too_large"
        garbage = await api.post(doc_path(project), data=b"\x01\x02\x03garbage", headers=OCTET)
        assert garbage.status == 400 and garbage.error_code == "invalid_update"
        bad_flag = await api.post(doc_path(project), params={"markSaved": "yes"}, data=full_state("2"), headers=OCTET)
        assert bad_flag.status == 400
        bad_title = await api.post(doc_path(project), data=full_state("2"), headers={**OCTET, "X-Project-Title": "%FF%FE"})
        assert bad_title.status == 400
        assert text_of((await api.get(doc_path(project))).body) == "one"
        # an empty body is a save of nothing (as eXeLearning's server takes it)
        empty = await api.post(doc_path(project), params={"markSaved": "true"}, headers={**OCTET, "X-Project-Title": "  Kept  "})
        assert empty.status == 200 and empty.json["markedAsSaved"] is True
        row = await project_row(srv.sessionmaker, project)
        assert row.title == "Kept" and row.saved_at is not None
        renamed = await api.patch(doc_path(project, "metadata"), json={"title": "Renamed"})
        assert renamed.status == 200 and renamed.json["title"] == "Renamed"
        assert (await project_row(srv.sessionmaker, project)).title == "Renamed"
        assert (await api.patch(doc_path(project, "metadata"), json={"title": 5})).status == 400
        assert (await api.patch(doc_path(project, "metadata"), json={"title": "v"}, token=viewer)).status == 403
        assert (await api.get(doc_path(str(uuid.uuid4())))).status == 404


async def _login(api: Api, name: str, headers: dict[str, str] | None = None) -> tuple[str, str]:
    """(the token, the Set-Cookie header) of a login as `name`."""
    reply = await api.post(
        "/api/auth/login", json={"email": email_for(name), "password": DEFAULT_PASSWORD}, token=None, headers=headers
    )
    assert reply.status == 200, reply.body
    assert reply.json["access_token"] == reply.json["token"] and reply.json["user"]["email"] == email_for(name)
    return reply.json["access_token"], reply.headers["Set-Cookie"]


async def test_login_sets_the_auth_cookie_secure_behind_tls(small_server: InProcessServer) -> None:
    srv = small_server
    await create_user(srv.sessionmaker, "ana")
    async with Api(srv.http_url) as api:
        token, cookie = await _login(api, "ana")
        attributes = [part.strip().lower() for part in cookie.split(";")]
        assert cookie.startswith(f"auth={token}")
        assert {"httponly", "path=/", "samesite=lax"} <= set(attributes)
        assert f"max-age={srv.settings.jwt_ttl_seconds}" in attributes and "secure" not in attributes
        _, behind_tls = await _login(api, "ana", headers={"X-Forwarded-Proto": "https"})
        assert "secure" in [part.strip().lower() for part in behind_tls.split(";")]
        logout = await api.post("/api/auth/logout", token=None, headers={"Cookie": f"auth={token}"})
        assert logout.status == 200
        cleared = logout.headers["Set-Cookie"].lower()
        assert cleared.startswith('auth=""') and "max-age=0" in cleared


async def test_a_cookie_only_save_is_accepted_from_this_origin_only(small_server: InProcessServer) -> None:
    srv = small_server
    project = str(uuid.uuid4())
    await srv.grant(project, "ana", "editor")
    own = srv.http_url
    async with Api(srv.http_url) as api:
        token, _ = await _login(api, "ana")
        jar = {"Cookie": f"auth={token}"}

        async def beacon(text: str, **headers: str) -> int:
            """A save as `navigator.sendBeacon` sends it: the cookie, a Blob body, no query."""
            reply = await api.post(doc_path(project), data=full_state(text), token=None, headers={**jar, **OCTET, **headers})
            return reply.status

        assert await beacon("same-origin;", **{"Sec-Fetch-Site": "same-origin", "Origin": own}) == 200
        assert await beacon("origin-only;", Origin=own) == 200  # a browser without fetch metadata
        assert await beacon("cross;", **{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}) == 403
        assert await beacon("same-site;", **{"Sec-Fetch-Site": "same-site"}) == 403
        assert await beacon("other-origin;", Origin="https://evil.example") == 403
        assert await beacon("no-headers;") == 403
        # behind TLS (X-Forwarded-Proto from the trusted proxy) the origin is https
        assert await beacon("tls;", Origin=own.replace("http:", "https:"), **{"X-Forwarded-Proto": "https"}) == 200
        assert await beacon("tls-http;", Origin=own, **{"X-Forwarded-Proto": "https"}) == 403
        refused = await api.post(doc_path(project), data=full_state("x"), token=None,
                                 headers={**jar, **OCTET, "Sec-Fetch-Site": "cross-site"})
        assert refused.status == 403 and refused.error_code == "cross_site"
        # the cookie reads anywhere (a GET is safe), and Bearer requests are not concerned
        got = await api.get(doc_path(project), token=None, headers={**jar, "Sec-Fetch-Site": "cross-site"})
        assert got.status == 200
        # exactly the accepted saves were merged (each is its own client's text: any order)
        assert sorted(filter(None, text_of(got.body).split(";"))) == ["origin-only", "same-origin", "tls"]
        bearer = await api.post(doc_path(project), data=full_state("bearer;"), token=token,
                                headers={**OCTET, "Sec-Fetch-Site": "cross-site"})
        assert bearer.status == 200
        # an explicit bad token is not rescued by a good cookie
        bad = await api.post(doc_path(project), data=full_state("y"), token="not.a.token",
                             headers={**jar, **OCTET, "Sec-Fetch-Site": "same-origin"})
        assert bad.status == 401
        assert (await api.get("/api/me", token=None, headers={"Cookie": "auth=stale.not.valid"})).status == 401


async def test_version_and_user_storage(small_server: InProcessServer) -> None:
    srv = small_server
    await create_user(srv.sessionmaker, "owner")
    async with Api(srv.http_url) as api:
        version = await api.get("/api/version", token=None)
        assert version.status == 200 and version.json == {"version": "v3.1.0"}
        token, _ = await _login(api, "owner")
        api.token = token
        empty = await api.get("/api/user/storage")
        assert empty.status == 200 and empty.json["data"] == {"quota_mb": None, "used_bytes": 0, "used_mb": 0}
        project = (await api.post("/api/projects", json={"title": "mine"})).json["uuid"]
        for name, size in (("a.bin", 1000), ("b.bin", 2345)):
            form = aiohttp.FormData()
            form.add_field("file", b"z" * size, filename=name, content_type="application/octet-stream")
            assert (await api.post(f"/api/projects/{project}/assets", data=form)).status == 201
        used = await api.get("/api/user/storage")
        assert used.json["data"]["used_bytes"] == 3345
        # by cookie too (the editor sends credentials: 'include')
        by_cookie = await api.get("/api/user/storage", token=None, headers={"Cookie": f"auth={token}"})
        assert by_cookie.status == 200 and by_cookie.json["data"]["used_bytes"] == 3345
        assert (await api.get("/api/user/storage", token=None)).status == 401



async def test_a_save_that_repeats_the_document_adds_only_what_it_lacks(server: InProcessServer) -> None:
    project = str(uuid.uuid4())
    token = await server.grant(project, "editor", "editor")
    store = server.app[DATABASE].store  # type: ignore[index]

    async def stored_bytes() -> int:
        return int((await store.log_stats(project)).bytes)

    async with Api(server.http_url, token) as api, await YClient.connect(server.ws_url, f"project-{project}", token) as live:
        live.append("k" * 20_000)
        await eventually(lambda: _at_least(stored_bytes, 20_000), what="the edit stored")
        before = await stored_bytes()
        # an editor that holds the live document plus an edit of its own saves its whole state
        editor: Doc = Doc()
        editor.apply_update(live.doc.get_update())
        editor.get("t", type=Text).insert(0, "offline;")
        for _ in range(3):
            assert (await api.post(doc_path(project), data=editor.get_update(), headers=OCTET)).status == 200
        await live.wait_until(lambda: live.value.startswith("offline;"))
        await eventually(lambda: _at_least(stored_bytes, before + 1), what="the new edit stored")
        # only the edit was relayed and stored, once, not the 20 KB the save repeats three times
        assert await stored_bytes() - before < 1000


async def _at_least(measure, minimum: int) -> bool:  # type: ignore[no-untyped-def]
    return bool(await measure() >= minimum)

"""eXeLearning's asset routes on two gateway processes sharing one assets volume and one
PostgreSQL: uploads by client id, names, by-client-id downloads and deletes, sync, the
upload-session batch, chunked uploads."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import aiohttp
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.auth import mint_token
from shared.db.engine import create_engine, create_sessionmaker, upgrade
from stack.servers import PostgresServer
from tests.conftest import TEST_SECRET
from tests.support.api import Api, GatewayProcess, Reply
from tests.support.fixtures_data import create_user, create_user_and_project, make_member

pytestmark = pytest.mark.integration

MAX_ASSET_BYTES = 2_000_000
MAX_PROJECT_BYTES = 6_000_000


def payload(size: int, seed: int = 0) -> bytes:
    return hashlib.shake_256(f"exe-{seed}".encode()).digest(size)


def client_id_of(data: bytes) -> str:
    """eXeLearning's asset id: the first 128 bits of the SHA-256, as a UUID."""
    return str(uuid.UUID(hashlib.sha256(data).hexdigest()[:32]))


@dataclass
class Pair:
    """Two gateways (a, b) on one volume and one database, a project and its owner's token."""

    a: GatewayProcess
    b: GatewayProcess
    sessionmaker: async_sessionmaker[AsyncSession]
    project: str
    owner_id: int
    api_a: Api
    api_b: Api

    @property
    def assets(self) -> str:
        return f"/api/projects/{self.project}/assets"


def token_for(user_id: int) -> str:
    return mint_token(TEST_SECRET, user_id, ttl_seconds=3600)[0]


@pytest.fixture
async def pair(tmp_path: Path, postgres: PostgresServer) -> AsyncIterator[Pair]:
    url = postgres.create_database(f"x_{uuid.uuid4().hex[:12]}")
    await upgrade(url)
    env = {
        "DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": url,
        "RUN_MIGRATIONS": "0",
        "API_JWT_SECRET": TEST_SECRET,
        "APP_SECRET": TEST_SECRET,
        "LOG_LEVEL": "WARNING",
        "MAX_ASSET_BYTES": str(MAX_ASSET_BYTES),
        "MAX_PROJECT_BYTES": str(MAX_PROJECT_BYTES),
    }
    a = await asyncio.to_thread(GatewayProcess(env, log_path=tmp_path / "a.log").start)
    b = await asyncio.to_thread(GatewayProcess(env, log_path=tmp_path / "b.log").start)
    engine = create_engine(url)
    try:
        sessionmaker = create_sessionmaker(engine)
        owner_id, project = await create_user_and_project(sessionmaker, "owner")
        token = token_for(owner_id)
        async with Api(a.url, token) as api_a, Api(b.url, token) as api_b:
            yield Pair(a, b, sessionmaker, project, owner_id, api_a, api_b)
        for gw in (a, b):
            assert "Traceback" not in gw.log_text(), gw.log_text()[-4000:]
    finally:
        await engine.dispose()
        await asyncio.to_thread(a.stop)
        await asyncio.to_thread(b.stop)


def file_form(
    data: bytes,
    filename: str | None,
    *,
    fields_first: dict[str, str] | None = None,
    fields_after: dict[str, str] | None = None,
    content_type: str = "image/png",
) -> aiohttp.FormData:
    form = aiohttp.FormData(quote_fields=False)  # UTF-8 names as browsers send them
    for key, value in (fields_first or {}).items():
        form.add_field(key, value)
    form.add_field("file", data, filename=filename, content_type=content_type)
    for key, value in (fields_after or {}).items():
        form.add_field(key, value)
    return form


async def upload(api: Api, pair: Pair, data: bytes, filename: str | None, **kwargs: Any) -> Reply:
    params = kwargs.pop("params", None)
    return await api.post(pair.assets, data=file_form(data, filename, **kwargs), params=params)


# ---------------------------------------------------------------------- upload by client id


async def test_upload_by_client_id_is_idempotent_across_gateways_and_authors(pair: Pair) -> None:
    editor_id = await create_user(pair.sessionmaker, "editor")
    await make_member(pair.sessionmaker, pair.project, editor_id, "editor")
    data = payload(50_000, seed=1)
    cid = client_id_of(data)
    first = await upload(pair.api_a, pair, data, "photo.png", params={"clientId": cid})
    assert first.status == 201, first.body
    body = first.json
    assert body["success"] is True and body["name"] == "photo.png"
    exe = body["data"]
    assert exe["clientId"] == cid and exe["filename"] == "photo.png"
    assert exe["mimeType"] == "image/png" and exe["size"] == len(data)
    assert exe["folderPath"] == "" and isinstance(exe["id"], int)
    assert exe["createdAt"] and exe["updatedAt"]

    # the same file from another author on the other gateway: the same asset, nothing new
    editor = pair.api_b.with_token(token_for(editor_id))
    again = await upload(editor, pair, data, "photo.png", fields_after={"clientId": cid})
    assert again.status == 200, again.body
    assert again.json["data"]["id"] == exe["id"]
    both = await asyncio.gather(
        *(
            upload(api, pair, data, "photo.png", params={"clientId": cid})
            for api in (pair.api_a, editor)
        )
    )
    assert [r.status for r in both] == [200, 200]
    listed = (await pair.api_a.get(pair.assets)).json
    assert [a["clientId"] for a in listed["data"]] == [cid]
    assert listed["success"] is True and [a["name"] for a in listed["assets"]] == ["photo.png"]


async def test_concurrent_first_uploads_store_one_asset(pair: Pair) -> None:
    data = payload(200_000, seed=2)
    cid = client_id_of(data)
    replies = await asyncio.gather(
        *(
            upload(api, pair, data, "same.png", params={"clientId": cid})
            for api in (pair.api_a, pair.api_b, pair.api_a, pair.api_b)
        )
    )
    assert sorted(r.status for r in replies) == [200, 200, 200, 201], [r.body for r in replies]
    assert len({r.json["data"]["id"] for r in replies}) == 1
    assert len((await pair.api_b.get(pair.assets)).json["data"]) == 1


async def test_name_collisions_take_the_client_id(pair: Pair) -> None:
    first, second = (client_id_of(payload(10, seed=s)) for s in (10, 11))
    third = second[:8] + "-0000-0000-0000-000000000000"  # shares the 8 characters `second` took
    names = []
    for seed, cid in ((10, first), (11, second), (12, third)):
        stored = await upload(
            pair.api_a, pair, payload(1000, seed), "pic.png", fields_first={"clientId": cid}
        )
        assert stored.status == 201, stored.body
        names.append(stored.json["name"])
    assert names == ["pic.png", f"pic-{second[:8]}.png", f"{third}.png"]
    # every candidate taken: 409
    fourth = third[:-1] + "1"
    for name in (f"{fourth}.png",):
        assert (await upload(pair.api_b, pair, b"by name", name)).status == 201
    clash = await upload(pair.api_b, pair, b"4", "pic.png", params={"clientId": fourth})
    assert clash.status == 409 and clash.is_json_error(), clash.body
    # without a client id, an upload replaces by name as before (the row keeps its client id)
    replaced = await upload(pair.api_b, pair, b"new", "pic.png")
    assert replaced.status == 200 and replaced.json["size"] == 3
    assert replaced.json["data"]["clientId"] == first


async def test_download_by_client_id_headers(pair: Pair) -> None:
    data = payload(3000, seed=20)
    cid = client_id_of(data)
    stored = await upload(
        pair.api_a,
        pair,
        data,
        "café 100%.png",
        fields_after={"clientId": cid, "folderPath": "/imágenes/../fotos/"},
    )
    assert stored.status == 201, stored.body
    assert stored.json["data"]["folderPath"] == "imágenes/fotos"
    got = await pair.api_b.get(f"{pair.assets}/by-client-id/{cid}")
    assert got.status == 200 and got.body == data
    headers = got.headers
    assert headers["Content-Type"] == "image/png"
    assert headers["X-Original-Mime"] == "image/png"
    assert headers["X-File-Size"] == str(len(data))
    assert unquote(headers["X-Filename"]) == "café 100%.png" and headers["X-Filename"].isascii()
    assert unquote(headers["X-Folder-Path"]) == "imágenes/fotos"
    disposition = headers["Content-Disposition"]
    assert disposition.index("filename=") < disposition.index("filename*=")
    assert disposition.endswith("filename*=UTF-8''caf%C3%A9%20100%25.png")
    assert disposition.isascii()
    # the download route by key: client id, name, numeric id; Range still served
    for key in (cid, "café 100%.png", str(stored.json["data"]["id"])):
        by_key = await pair.api_a.get(f"{pair.assets}/{key}", headers={"Range": "bytes=0-9"})
        assert by_key.status == 206 and by_key.body == data[:10], key
    assert (await pair.api_a.get(f"{pair.assets}/by-client-id/{'f' * 32}")).status == 404
    assert (await pair.api_a.get(f"{pair.assets}/by-client-id/bad.id")).status == 404


async def test_hostile_and_reserved_names(pair: Pair) -> None:
    data = payload(100, seed=30)
    for name in ("../../etc/passwd", "a|b.png", "end.", "con.txt", "bulk", "sync", "by-client-id"):
        bad = await upload(pair.api_a, pair, data, name, params={"clientId": "abc"})
        assert bad.status == 400 and bad.error_code == "invalid_name", (name, bad.body)
    bad_id = await upload(pair.api_a, pair, data, "ok.png", fields_first={"clientId": "../x"})
    assert bad_id.status == 400 and bad_id.error_code == "invalid_client_id"
    assert (await upload(pair.api_a, pair, data, "ok.png", params={"clientId": "a/b"})).status in (
        400,
        404,
    )
    fields_only = aiohttp.FormData(default_to_multipart=True)
    fields_only.add_field("clientId", "abc")
    no_file = await pair.api_a.post(pair.assets, data=fields_only)
    assert no_file.status == 400 and no_file.is_json_error()
    urlencoded = await pair.api_a.post(pair.assets, data={"clientId": "abc"})
    assert urlencoded.status == 415 and urlencoded.is_json_error()
    assert (await pair.api_a.get(pair.assets)).json["data"] == []


async def test_quota_exceeded(pair: Pair) -> None:
    for seed in range(3):
        data = payload(MAX_ASSET_BYTES - 100_000, seed=40 + seed)
        stored = await upload(
            pair.api_a, pair, data, f"big{seed}.bin", params={"clientId": f"big{seed}"}
        )
        assert stored.status == 201, stored.body
    over = await upload(
        pair.api_b, pair, payload(500_000, 49), "more.bin", params={"clientId": "more"}
    )
    assert over.status == 413 and over.is_json_error()
    # a repeat of a stored client id needs no quota
    repeat = await upload(pair.api_b, pair, b"x", "big0.bin", params={"clientId": "big0"})
    assert repeat.status == 200
    too_big = await upload(pair.api_a, pair, payload(MAX_ASSET_BYTES + 1, 50), "huge.bin")
    assert too_big.status == 413

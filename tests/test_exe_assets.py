"""eXeLearning's asset routes on two gateway processes sharing one assets volume and one
PostgreSQL: uploads by client id, names, by-client-id downloads and deletes, sync, the
upload-session batch, chunked uploads."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
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
from shared.upload_sessions import mint_upload_session
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
        assert by_key.headers["X-Filename"] == headers["X-Filename"]
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


async def test_list_shape_and_deletes(pair: Pair) -> None:
    cids = []
    for seed in range(3):
        data = payload(500, seed=60 + seed)
        cids.append(client_id_of(data))
        stored = await upload(pair.api_a, pair, data, f"f{seed}.png", params={"clientId": cids[-1]})
        assert stored.status == 201
    listed = (await pair.api_b.get(pair.assets)).json
    assert set(listed) == {"assets", "success", "data"}
    entry = listed["data"][0]
    assert set(entry) >= {
        "id", "filename", "mimeType", "size", "componentId", "clientId", "folderPath",
        "createdAt", "updatedAt",
    }  # fmt: skip
    gone = await pair.api_b.delete(f"{pair.assets}/by-client-id/{cids[0]}")
    assert gone.status == 200 and gone.json == {"success": True, "deleted": 1}
    again = await pair.api_a.delete(f"{pair.assets}/by-client-id/{cids[0]}")
    assert again.json == {"success": True, "deleted": 0}
    bulk = await pair.api_a.delete(
        f"{pair.assets}/bulk", json={"clientIds": [cids[1], cids[2], cids[2], "unknown"]}
    )
    assert bulk.status == 200 and bulk.json == {"success": True, "deleted": 2}
    assert (await pair.api_a.get(pair.assets)).json["data"] == []
    too_many = await pair.api_a.delete(f"{pair.assets}/bulk", json={"clientIds": ["a"] * 1001})
    assert too_many.status == 400 and too_many.is_json_error()
    viewer_id = await create_user(pair.sessionmaker, "viewer")
    await make_member(pair.sessionmaker, pair.project, viewer_id, "viewer")
    viewer = pair.api_a.with_token(token_for(viewer_id))
    refused = await viewer.delete(f"{pair.assets}/bulk", json={"clientIds": []})
    assert refused.status == 403
    # the route segments are not asset names: other methods are 405s naming theirs
    for segment, allowed in (("bulk", "DELETE"), ("sync", "POST"), ("upload-chunk", "POST")):
        other = await pair.api_a.get(f"{pair.assets}/{segment}")
        assert other.status == 405 and other.headers["Allow"] == allowed, segment
        assert other.is_json_error()


def batch_form(
    files: list[tuple[bytes, str]], metadata: list[dict[str, Any]], *, metadata_first: bool
) -> aiohttp.FormData:
    form = aiohttp.FormData(quote_fields=False)
    if metadata_first:
        form.add_field("metadata", json.dumps(metadata))
    for data, name in files:
        form.add_field("files", data, filename=name, content_type="application/octet-stream")
    if not metadata_first:
        form.add_field("metadata", json.dumps(metadata))
    return form


async def test_sync_reports_each_file(pair: Pair) -> None:
    good = [payload(1000, seed=70 + i) for i in range(3)]
    big = payload(MAX_ASSET_BYTES - 5000, seed=79)
    files = [(good[0], "a.png"), (good[1], "b.txt"), (b"x", "../bad"), (good[2], "c.png")]
    metadata: list[dict[str, Any]] = [
        {"clientId": client_id_of(good[0]), "filename": "a.png", "mimeType": "image/png"},
        {"clientId": client_id_of(good[1]), "filename": "b.txt", "folderPath": "docs"},
        {"clientId": "bad-name", "filename": "../bad", "mimeType": "text/plain"},
        {"clientId": 5, "filename": "c.png"},
    ]
    synced = await pair.api_a.post(
        f"{pair.assets}/sync", data=batch_form(files, metadata, metadata_first=False)
    )
    assert synced.status == 200, synced.body
    body = synced.json
    assert body["success"] is False and body["uploaded"] == 2 and body["failed"] == 2
    results = body["results"]
    assert [r["success"] for r in results] == [True, True, False, False]
    assert results[0]["clientId"] == client_id_of(good[0]) and isinstance(
        results[0]["serverId"], int
    )
    assert "error" in results[2] and "error" in results[3]
    listed = {a["clientId"]: a for a in (await pair.api_b.get(pair.assets)).json["data"]}
    assert listed[client_id_of(good[1])]["folderPath"] == "docs"
    # a file sent again stores nothing new; a body over MAX_ASSET_BYTES is refused whole
    again = await pair.api_b.post(
        f"{pair.assets}/sync",
        data=batch_form([(good[0], "a.png")], [metadata[0]], metadata_first=True),
    )
    assert again.status == 200 and again.json["uploaded"] == 1, again.body
    assert again.json["results"][0]["serverId"] == results[0]["serverId"]
    assert len((await pair.api_b.get(pair.assets)).json["data"]) == 2
    huge = await pair.api_b.post(
        f"{pair.assets}/sync",
        data=batch_form(
            [(big, "h1.bin"), (big, "h2.bin")],
            [{"clientId": "h1"}, {"clientId": "h2"}],
            metadata_first=True,
        ),
    )
    assert huge.status == 413 and huge.is_json_error()
    no_metadata = await pair.api_a.post(
        f"{pair.assets}/sync", data=batch_form([(b"1", "x.bin")], [], metadata_first=True)
    )
    assert no_metadata.status == 200 and no_metadata.json["failed"] == 1
    bad_json = aiohttp.FormData()
    bad_json.add_field("metadata", "{not json")
    bad_json.add_field("files", b"1", filename="x.bin")
    assert (await pair.api_a.post(f"{pair.assets}/sync", data=bad_json)).status == 400


async def test_upload_session_batch(pair: Pair) -> None:
    _, other_project = await create_user_and_project(pair.sessionmaker, "other")
    editor_id = await create_user(pair.sessionmaker, "batcher")
    await make_member(pair.sessionmaker, pair.project, editor_id, "editor")
    token, _ = mint_upload_session(TEST_SECRET, pair.project, str(editor_id))
    url = f"/api/upload-session/{token}/batch"
    data = payload(2000, seed=90)
    cid = client_id_of(data)
    meta = [{"clientId": cid, "filename": "s.png", "mimeType": "image/png", "folderPath": ""}]

    def form() -> aiohttp.FormData:
        return batch_form([(data, "s.png")], meta, metadata_first=True)

    anonymous = pair.api_b.with_token(None)
    done = await anonymous.post(url, data=form(), headers={"X-Upload-Session": token})
    assert done.status == 200, done.body
    assert done.json["uploaded"] == 1 and done.json["failed"] == 0
    assert done.json["results"][0]["clientId"] == cid
    listed = (await pair.api_a.get(pair.assets)).json["data"]
    assert [a["clientId"] for a in listed] == [cid]

    missing = await anonymous.post(url, data=form())
    assert missing.status == 401 and missing.is_json_error()
    mismatched = await anonymous.post(url, data=form(), headers={"X-Upload-Session": token + "x"})
    assert mismatched.status == 401
    forged = f"/api/upload-session/{token}x/batch"
    bad = await anonymous.post(forged, data=form(), headers={"X-Upload-Session": token + "x"})
    assert bad.status == 401
    # a session for a project the user is not a member of
    elsewhere, _ = mint_upload_session(TEST_SECRET, other_project, str(editor_id))
    refused = await anonymous.post(
        f"/api/upload-session/{elsewhere}/batch",
        data=form(),
        headers={"X-Upload-Session": elsewhere},
    )
    assert refused.status == 403 and refused.is_json_error()
    # the role lowered after the session was minted
    await make_member(pair.sessionmaker, pair.project, editor_id, "viewer")
    lowered = await anonymous.post(url, data=form(), headers={"X-Upload-Session": token})
    assert lowered.status == 403 and lowered.is_json_error()
    # an access token is not an upload session
    access = token_for(editor_id)
    wrong_kind = await anonymous.post(
        f"/api/upload-session/{access}/batch", data=form(), headers={"X-Upload-Session": access}
    )
    assert wrong_kind.status == 401


# ---------------------------------------------------------------------------- chunked uploads


def chunk_form(data: bytes, fields: dict[str, str]) -> aiohttp.FormData:
    form = aiohttp.FormData(quote_fields=False)
    form.add_field("file", data, filename="blob", content_type="application/octet-stream")
    for key, value in fields.items():
        form.add_field(key, value)
    return form


async def test_chunks_alternate_between_gateways(pair: Pair) -> None:
    data = payload(1_500_000, seed=100)
    cid = client_id_of(data)
    size = 400_000
    pieces = [data[i : i + size] for i in range(0, len(data), size)]
    fields = {
        "resumableIdentifier": f"{cid}-1700000000000",
        "resumableTotalChunks": str(len(pieces)),
        "resumableFilename": "video.mp4",
        "resumableType": "video/mp4",
        "clientId": cid,
    }
    finalize_body: dict[str, Any] = {**fields, "resumableTotalChunks": len(pieces)}
    finalize = f"{pair.assets}/upload-chunk/finalize"
    apis = (pair.api_a, pair.api_b)
    # the last chunk first, then the others alternately on the two gateways
    order = [len(pieces) - 1, *range(len(pieces) - 1)]
    for step, index in enumerate(order):
        sent = await apis[step % 2].post(
            f"{pair.assets}/upload-chunk",
            data=chunk_form(pieces[index], {**fields, "resumableChunkNumber": str(index + 1)}),
        )
        assert sent.status == 200, sent.body
        assert sent.json == {
            "success": True,
            "chunkNumber": index + 1,
            "allUploaded": step == len(order) - 1,
        }
        if step == 1:
            early = await pair.api_b.post(finalize, json=finalize_body)
            assert early.status == 400 and early.error_code == "chunks_missing", early.body
    done = await pair.api_b.post(finalize, json=finalize_body)
    assert done.status == 200, done.body
    assert done.json["success"] is True and done.json["complete"] is True
    assert done.json["data"]["clientId"] == cid and done.json["data"]["size"] == len(data)
    again = await pair.api_a.post(finalize, json=finalize_body)
    assert again.status == 200 and again.json["data"]["id"] == done.json["data"]["id"]
    got = await pair.api_a.get(f"{pair.assets}/by-client-id/{cid}")
    assert got.body == data and got.headers["Content-Type"] == "video/mp4"


async def test_chunk_bounds(pair: Pair) -> None:
    fields = {
        "resumableIdentifier": "bounded",
        "resumableTotalChunks": "2",
        "resumableFilename": "big.bin",
        "clientId": "bounded",
    }
    url = f"{pair.assets}/upload-chunk"
    first = await pair.api_a.post(
        url,
        data=chunk_form(payload(MAX_ASSET_BYTES - 10, 1), {**fields, "resumableChunkNumber": "1"}),
    )
    assert first.status == 200, first.body
    over = await pair.api_b.post(
        url, data=chunk_form(b"x" * 11, {**fields, "resumableChunkNumber": "2"})
    )
    assert over.status == 413 and over.is_json_error()
    for bad in (
        {"resumableChunkNumber": "3"},
        {"resumableChunkNumber": "0"},
        {"resumableChunkNumber": "x"},
        {"resumableChunkNumber": "1", "resumableTotalChunks": "10001"},
        {"resumableChunkNumber": "1", "resumableFilename": "../x"},
        {"resumableChunkNumber": "1", "resumableTotalChunks": "3"},
    ):
        refused = await pair.api_a.post(url, data=chunk_form(b"x", {**fields, **bad}))
        assert refused.status == 400 and refused.is_json_error(), (bad, refused.body)
    unknown = await pair.api_a.post(
        f"{url}/finalize",
        json={**fields, "resumableIdentifier": "never", "resumableTotalChunks": 2},
    )
    assert unknown.status == 400 and unknown.error_code == "chunks_missing"


async def test_stale_chunk_uploads_are_swept(pair: Pair, tmp_path: Path) -> None:
    fields = {
        "resumableIdentifier": "stale",
        "resumableTotalChunks": "2",
        "resumableFilename": "left.bin",
        "resumableChunkNumber": "1",
    }
    url = f"{pair.assets}/upload-chunk"
    assert (await pair.api_a.post(url, data=chunk_form(b"half", fields))).status == 200
    uploads = tmp_path / "data" / "uploads"
    (stale,) = list(uploads.iterdir())
    two_days_ago = time.time() - 2 * 86400
    for path in (stale, stale / "data"):
        os.utime(path, (two_days_ago, two_days_ago))
    fresh = {**fields, "resumableIdentifier": "fresh"}
    assert (await pair.api_b.post(url, data=chunk_form(b"x", fresh))).status == 200
    assert not stale.exists() and len(list(uploads.iterdir())) == 1

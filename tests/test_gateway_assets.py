"""Assets on the shared volume: round trip, Range, limits, hostile names, tus across instances, crashes."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from services.embedded import create_app as create_embedded_app
from services.gateway.app import create_app as create_gateway_app
from tests.conftest import TEST_SECRET, make_settings
from tests.support.api import Api, GatewayProcess, Reply
from tests.support.app_server import InProcessServer
from tests.support.fixtures_data import create_user_and_project

pytestmark = pytest.mark.integration

TUS = {"Tus-Resumable": "1.0.0"}


def payload(size: int, seed: int = 0) -> bytes:
    return hashlib.shake_256(f"asset-{seed}".encode()).digest(size)


async def upload(
    api: Api, project: str, name: str | None, data: bytes, *, query_name: str | None = None
) -> Reply:
    form = aiohttp.FormData()
    form.add_field(
        "file", data, filename=name or "file.bin", content_type="application/octet-stream"
    )
    path = f"/api/projects/{project}/assets"
    return await api.post(
        path, data=form, params={"name": query_name} if query_name is not None else None
    )


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


class Setup:
    def __init__(self, server: InProcessServer, api: Api, project: str) -> None:
        self.server = server
        self.api = api
        self.project = project

    @property
    def files_dir(self) -> Path:
        return Path(self.server.settings.files_dir).resolve()

    @property
    def asset_dir(self) -> Path:
        return self.files_dir / "assets" / self.project[:2] / self.project


async def _setup(server: InProcessServer) -> Setup:
    user_id, project = await create_user_and_project(server.sessionmaker, "owner")
    api = Api(server.http_url, server.token(user_id))
    await api.__aenter__()
    return Setup(server, api, project)


@pytest.fixture
async def setup(server: InProcessServer) -> AsyncIterator[Setup]:
    s = await _setup(server)
    try:
        yield s
    finally:
        await s.api.close()


@pytest.fixture
async def small(tmp_path: Path) -> AsyncIterator[Setup]:
    """A server with small limits: 100 kB per file, 250 kB per project."""
    settings = make_settings(tmp_path, max_asset_bytes=100_000, max_project_bytes=250_000)
    srv = await InProcessServer(create_embedded_app, settings).start()
    s = await _setup(srv)
    try:
        yield s
    finally:
        await s.api.close()
        await srv.stop()


async def test_upload_download_round_trip(setup: Setup) -> None:
    data = payload(300_000)
    stored = await upload(setup.api, setup.project, "photo.jpg", data)
    assert stored.status == 201, stored.body
    assert stored.json["sha256"] == hashlib.sha256(data).hexdigest()
    assert stored.json["size"] == len(data) and stored.json["name"] == "photo.jpg"
    assert stored.json["content_type"] == "image/jpeg"
    # on the shared volume in the layout of docs/architecture.md; nothing left in the temp area
    assert (setup.asset_dir / "photo.jpg").read_bytes() == data
    assert files_under(setup.files_dir / "tmp") == []

    got = await setup.api.get(f"/api/projects/{setup.project}/assets/photo.jpg")
    assert got.status == 200 and hashlib.sha256(got.body).hexdigest() == stored.json["sha256"]
    assert got.headers["Content-Type"] == "image/jpeg"
    assert got.headers["ETag"] and got.headers["X-Content-Type-Options"] == "nosniff"

    listed = await setup.api.get(f"/api/projects/{setup.project}/assets")
    assert [a["name"] for a in listed.json["assets"]] == ["photo.jpg"]

    # same name again replaces the file
    replacement = payload(1000, seed=2)
    again = await upload(setup.api, setup.project, "photo.jpg", replacement)
    assert again.status == 200 and again.json["sha256"] == hashlib.sha256(replacement).hexdigest()
    assert (
        await setup.api.get(f"/api/projects/{setup.project}/assets/photo.jpg")
    ).body == replacement

    # ?token= works for <img src> style downloads
    assert setup.api.token is not None
    async with aiohttp.ClientSession() as session, session.get(
        f"{setup.server.http_url}/api/projects/{setup.project}/assets/photo.jpg",
        params={"token": setup.api.token},
    ) as resp:
        assert resp.status == 200 and await resp.read() == replacement

    deleted = await setup.api.delete(f"/api/projects/{setup.project}/assets/photo.jpg")
    assert deleted.status == 204
    assert not (setup.asset_dir / "photo.jpg").exists()
    assert (await setup.api.get(f"/api/projects/{setup.project}/assets/photo.jpg")).status == 404
    assert (await setup.api.delete(f"/api/projects/{setup.project}/assets/photo.jpg")).status == 404


async def test_range_and_conditional_requests(setup: Setup) -> None:
    data = payload(10_000)
    await upload(setup.api, setup.project, "doc.pdf", data)
    url = f"/api/projects/{setup.project}/assets/doc.pdf"
    part = await setup.api.get(url, headers={"Range": "bytes=100-199"})
    assert part.status == 206 and part.body == data[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    tail = await setup.api.get(url, headers={"Range": "bytes=-50"})
    assert tail.status == 206 and tail.body == data[-50:]
    open_ended = await setup.api.get(url, headers={"Range": "bytes=9990-"})
    assert open_ended.status == 206 and open_ended.body == data[9990:]
    beyond = await setup.api.get(url, headers={"Range": "bytes=20000-20010"})
    assert beyond.status == 416
    etag = (await setup.api.get(url)).headers["ETag"]
    assert (await setup.api.get(url, headers={"If-None-Match": etag})).status == 304


async def test_if_range_sends_the_whole_file_unless_it_still_matches(setup: Setup) -> None:
    url = f"/api/projects/{setup.project}/assets/doc.bin"
    old = payload(10_000, seed=1)
    await upload(setup.api, setup.project, "doc.bin", old)
    first = await setup.api.get(url)
    etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
    # the validators the client holds still match: the range is served
    for validator in (etag, modified):
        part = await setup.api.get(url, headers={"Range": "bytes=0-99", "If-Range": validator})
        assert part.status == 206 and part.body == old[:100], (validator, part.status)
    # the asset is replaced (another size, a later modification time)
    new = payload(12_000, seed=2)
    await upload(setup.api, setup.project, "doc.bin", new)
    later = time.time() + 10
    os.utime(setup.asset_dir / "doc.bin", (later, later))
    for validator in (etag, modified, "W/" + etag, "not a date"):
        whole = await setup.api.get(url, headers={"Range": "bytes=0-99", "If-Range": validator})
        assert whole.status == 200 and whole.body == new, (validator, whole.status)
        assert "Content-Range" not in whole.headers


async def test_size_limits(small: Setup) -> None:
    s = small
    too_big = await upload(s.api, s.project, "big.bin", payload(100_001))
    assert too_big.status == 413 and too_big.is_json_error()
    for i in range(2):
        assert (await upload(s.api, s.project, f"part{i}.bin", payload(100_000, i))).status == 201
    over_quota = await upload(s.api, s.project, "part2.bin", payload(60_000))
    assert over_quota.status == 413 and over_quota.is_json_error()
    # replacing an asset counts its new size, not both
    assert (await upload(s.api, s.project, "part1.bin", payload(50_000))).status == 200
    assert (await upload(s.api, s.project, "part2.bin", payload(50_000))).status == 201
    listed = (await s.api.get(f"/api/projects/{s.project}/assets")).json["assets"]
    assert sorted(a["name"] for a in listed) == ["part0.bin", "part1.bin", "part2.bin"]
    assert not (s.asset_dir / "big.bin").exists()
    assert files_under(s.files_dir / "tmp") == []
    # tus announces and enforces the same limit
    created = await s.api.post(
        f"/api/projects/{s.project}/uploads",
        headers={
            **TUS,
            "Upload-Length": "100001",
            "Upload-Metadata": "filename " + base64.b64encode(b"x.bin").decode(),
        },
    )
    assert created.status == 413 and created.is_json_error()


HOSTILE_NAMES = [
    "../x",
    "..",
    ".",
    "/etc/passwd",
    "a/b",
    "a\\b",
    "..\\..\\x",
    "x\x00y",
    "bell\x07",
    "line\nbreak",
    "a" * 256,
    "é" * 200,  # 400 bytes of UTF-8
    "CON",
    "nul.txt",
    "com1.png",
    ".htaccess",
    "trailing.",
    "trailing ",
    " leading",
    "c:evil",
    "rtl\u202etxt.exe",
]


async def test_hostile_names_are_rejected(setup: Setup) -> None:
    before = files_under(setup.files_dir)
    for name in HOSTILE_NAMES:
        reply = await upload(setup.api, setup.project, "ok.bin", b"data", query_name=name)
        assert reply.status == 400 and reply.is_json_error(), (name, reply.status, reply.body)
        assert reply.error_code == "invalid_name"
        metadata = "filename " + base64.b64encode(name.encode("utf-8", "surrogatepass")).decode()
        tus = await setup.api.post(
            f"/api/projects/{setup.project}/uploads",
            headers={**TUS, "Upload-Length": "4", "Upload-Metadata": metadata},
        )
        assert tus.status == 400 and tus.is_json_error(), (name, tus.body)
    for name in ("../x", "..%2F..%2Fetc%2Fpasswd", "%2e%2e", "a%00b"):
        got = await setup.api.get(f"/api/projects/{setup.project}/assets/{name}")
        assert got.status in (400, 404) and got.is_json_error(), (name, got.status)
    # nothing was written anywhere on the volume (temporary files included)
    assert files_under(setup.files_dir) == before
    # a name with unicode is fine
    assert (
        await upload(
            setup.api, setup.project, "ok.bin", b"data", query_name="Résumé 2024 (final).pdf"
        )
    ).status == 201


async def test_upload_needs_multipart_with_a_file_part(setup: Setup) -> None:
    url = f"/api/projects/{setup.project}/assets"
    assert (
        await setup.api.post(url, data=b"raw", headers={"Content-Type": "application/octet-stream"})
    ).status == 415
    form = aiohttp.FormData()
    form.add_field("other", "value")
    form.add_field("file2", b"x", filename="x.bin")
    assert (await setup.api.post(url, data=form)).status == 400
    garbage = await setup.api.post(
        url,
        data=b"--xx\r\nnot really\r\n",
        headers={"Content-Type": "multipart/form-data; boundary=yy"},
    )
    assert garbage.status == 400 and garbage.is_json_error()


async def test_client_dropping_mid_upload_leaves_nothing(setup: Setup) -> None:
    """A multipart upload cut off halfway: no asset, no file under the real name, no temp file."""
    boundary = "XBOUNDARYX"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="cut.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    body_size = 4_000_000
    request = (
        f"POST /api/projects/{setup.project}/assets HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {setup.api.token}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(head) + body_size + 100}\r\n\r\n"
    ).encode()
    _reader, writer = await asyncio.open_connection("127.0.0.1", setup.server.settings.port)
    writer.write(request + head + payload(body_size // 2))
    await writer.drain()
    for _ in range(100):  # the server is streaming it to a temporary file
        if files_under(setup.files_dir / "tmp"):
            break
        await asyncio.sleep(0.02)
    writer.transport.abort()
    for _ in range(100):
        if not files_under(setup.files_dir / "tmp"):
            break
        await asyncio.sleep(0.05)
    assert files_under(setup.files_dir / "tmp") == []
    assert not (setup.asset_dir / "cut.bin").exists()
    assert (await setup.api.get(f"/api/projects/{setup.project}/assets")).json["assets"] == []


# --------------------------------------------------------------------------------------- tus


def _tus_upload_half(url: str, token: str, data: bytes, chunk: int) -> str:
    from tusclient import client

    tus = client.TusClient(url, headers={"Authorization": f"Bearer {token}"})
    uploader = tus.uploader(
        file_stream=io.BytesIO(data), chunk_size=chunk, metadata={"filename": "movie.bin"}
    )
    uploader.upload(stop_at=len(data) // 2)
    assert uploader.offset == len(data) // 2
    assert uploader.url is not None
    return uploader.url


def _tus_resume(url: str, upload_url: str, token: str, data: bytes, chunk: int) -> int:
    from tusclient import client

    tus = client.TusClient(url, headers={"Authorization": f"Bearer {token}"})
    uploader = tus.uploader(file_stream=io.BytesIO(data), chunk_size=chunk, url=upload_url)
    resumed_at = uploader.offset  # from HEAD on this instance
    uploader.upload()
    return resumed_at


def _cut_patch(port: int, path: str, token: str, offset: int, data: bytes, send: int) -> None:
    """A PATCH that announces `data` but the connection drops after `send` bytes.

    The bytes go out in two halves with a pause, so the server is reading the
    body when the connection ends (bytes still unread in a socket buffer when a
    connection dies are lost, and the client resends them from HEAD's offset).
    """
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            (
                f"PATCH {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                f"Tus-Resumable: 1.0.0\r\nUpload-Offset: {offset}\r\n"
                f"Content-Type: application/offset+octet-stream\r\nContent-Length: {len(data)}\r\n\r\n"
            ).encode()
        )
        for part in (data[: send // 2], data[send // 2 : send]):
            sock.sendall(part)
            time.sleep(0.4)
        sock.shutdown(
            socket.SHUT_WR
        )  # the client side ends early: the body is shorter than announced
        sock.settimeout(10)
        while sock.recv(65536):  # until the server closes
            pass


async def _head_offset(api: Api, path: str) -> int:
    reply = await api.request("HEAD", path, headers=TUS)
    assert reply.status == 200, reply.status
    return int(reply.headers["Upload-Offset"])


async def test_tus_upload_resumed_on_a_second_instance(tmp_path: Path) -> None:
    """Half the file to instance A, a chunk cut off mid-way, the rest to instance B (same FILES_DIR)."""
    settings = make_settings(tmp_path)
    a = await InProcessServer(create_gateway_app, settings).start()
    b = await InProcessServer(create_gateway_app, settings.with_overrides(port=0)).start()
    try:
        user_id, project = await create_user_and_project(a.sessionmaker, "uploader")
        token = a.token(user_id)
        data = payload(3_000_000, seed=7)
        chunk = 256 * 1024
        upload_url = await asyncio.to_thread(
            _tus_upload_half, f"{a.http_url}/api/projects/{project}/uploads", token, data, chunk
        )
        path = upload_url.split(str(a.settings.port), 1)[1]
        assert path.startswith(f"/api/projects/{project}/uploads/")

        async with Api(a.http_url, token) as api_a, Api(b.http_url, token) as api_b:
            half = len(data) // 2
            assert await _head_offset(api_b, path) == half  # B sees A's state on the shared volume
            # the connection to A drops in the middle of the next chunk
            await asyncio.to_thread(
                _cut_patch, a.settings.port, path, token, half, data[half : half + 500_000], 200_000
            )
            for _ in range(100):
                offset = await _head_offset(api_b, path)
                if offset > half:
                    break
                await asyncio.sleep(0.05)
            assert offset == half + 200_000, offset  # what the server read before the drop is kept
            # a stale offset is refused
            stale = await api_b.patch(
                path,
                data=b"x",
                headers={
                    **TUS,
                    "Upload-Offset": str(half),
                    "Content-Type": "application/offset+octet-stream",
                },
            )
            assert stale.status == 409 and stale.is_json_error()

            resumed_at = await asyncio.to_thread(
                _tus_resume,
                f"{b.http_url}/api/projects/{project}/uploads",
                f"{b.http_url}{path}",
                token,
                data,
                chunk,
            )
            assert resumed_at == offset

            for api in (api_a, api_b):
                got = await api.get(f"/api/projects/{project}/assets/movie.bin")
                assert (
                    got.status == 200
                    and hashlib.sha256(got.body).hexdigest() == hashlib.sha256(data).hexdigest()
                )
            listed = (await api_a.get(f"/api/projects/{project}/assets")).json["assets"]
            assert listed[0]["sha256"] == hashlib.sha256(data).hexdigest()
            # the upload's state is gone once complete
            assert (await api_b.request("HEAD", path, headers=TUS)).status == 404
        files_dir = Path(settings.files_dir).resolve()
        assert files_under(files_dir / "uploads") == [] and files_under(files_dir / "tmp") == []
    finally:
        await a.stop()
        await b.stop()


async def test_tus_protocol_details(setup: Setup) -> None:
    base = f"/api/projects/{setup.project}/uploads"
    options = await setup.api.request("OPTIONS", base, token=None)
    assert options.status == 204
    assert options.headers["Tus-Version"] == "1.0.0" and options.headers["Tus-Resumable"] == "1.0.0"
    assert set(options.headers["Tus-Extension"].split(",")) == {"creation", "termination"}
    assert int(options.headers["Tus-Max-Size"]) == setup.server.settings.max_asset_bytes

    meta = (
        "filename "
        + base64.b64encode(b"notes.txt").decode()
        + ",filetype "
        + base64.b64encode(b"text/plain").decode()
    )
    no_version = await setup.api.post(
        base, headers={"Upload-Length": "10", "Upload-Metadata": meta}
    )
    assert no_version.status == 400 and no_version.is_json_error()
    other_version = await setup.api.post(
        base, headers={"Tus-Resumable": "0.2.2", "Upload-Length": "10", "Upload-Metadata": meta}
    )
    assert other_version.status == 412 and other_version.headers["Tus-Version"] == "1.0.0"
    assert (await setup.api.post(base, headers={**TUS, "Upload-Metadata": meta})).status == 400
    assert (
        await setup.api.post(base, headers={**TUS, "Upload-Length": "-1", "Upload-Metadata": meta})
    ).status == 400
    assert (
        await setup.api.post(
            base, headers={**TUS, "Upload-Length": "10", "Upload-Metadata": "filename ***"}
        )
    ).status == 400

    created = await setup.api.post(
        base, headers={**TUS, "Upload-Length": "10", "Upload-Metadata": meta}
    )
    assert created.status == 201 and created.headers["Tus-Resumable"] == "1.0.0"
    location = created.headers["Location"]
    patch_headers = {**TUS, "Content-Type": "application/offset+octet-stream"}
    wrong_type = await setup.api.patch(
        location, data=b"12345", headers={**TUS, "Upload-Offset": "0"}
    )
    assert wrong_type.status == 415
    too_long = await setup.api.patch(
        location, data=b"x" * 11, headers={**patch_headers, "Upload-Offset": "0"}
    )
    assert too_long.status == 413
    first = await setup.api.patch(
        location, data=b"12345", headers={**patch_headers, "Upload-Offset": "0"}
    )
    assert first.status == 204 and first.headers["Upload-Offset"] == "5"
    conflict = await setup.api.patch(
        location, data=b"67890", headers={**patch_headers, "Upload-Offset": "3"}
    )
    assert conflict.status == 409
    head = await setup.api.request("HEAD", location, headers=TUS)
    assert head.headers["Upload-Offset"] == "5" and head.headers["Upload-Length"] == "10"
    assert head.headers["Cache-Control"] == "no-store"
    # another user (even an owner of another project) cannot touch it
    other_user, _ = await create_user_and_project(setup.server.sessionmaker, "someone-else")
    assert (
        await setup.api.request("HEAD", location, headers=TUS, token=setup.server.token(other_user))
    ).status == 403
    last = await setup.api.patch(
        location, data=b"67890", headers={**patch_headers, "Upload-Offset": "5"}
    )
    assert last.status == 204 and last.headers["Upload-Offset"] == "10"
    got = await setup.api.get(f"/api/projects/{setup.project}/assets/notes.txt")
    assert got.body == b"1234567890" and got.headers["Content-Type"].startswith("text/plain")

    # termination
    created = await setup.api.post(
        base, headers={**TUS, "Upload-Length": "10", "Upload-Metadata": meta}
    )
    location = created.headers["Location"]
    assert (await setup.api.delete(location, headers=TUS)).status == 204
    assert (await setup.api.request("HEAD", location, headers=TUS)).status == 404
    assert (await setup.api.request("HEAD", f"{base}/{'0' * 32}", headers=TUS)).status == 404
    assert (await setup.api.request("HEAD", f"{base}/..%2F..%2Fetc", headers=TUS)).status == 404
    # an empty file completes at creation
    empty = await setup.api.post(
        base,
        headers={
            **TUS,
            "Upload-Length": "0",
            "Upload-Metadata": "filename " + base64.b64encode(b"empty.txt").decode(),
        },
    )
    assert empty.status == 201
    assert (await setup.api.get(f"/api/projects/{setup.project}/assets/empty.txt")).body == b""


# ----------------------------------------------------------------------------------- crashes


async def test_gateway_crash_mid_upload_leaves_no_half_file(tmp_path: Path) -> None:
    """SIGKILL the gateway while it streams a multipart upload and while it receives a tus chunk."""
    env = {
        "DATA_DIR": str(tmp_path / "data"),
        "API_JWT_SECRET": TEST_SECRET,
        "APP_SECRET": TEST_SECRET,
        "LOG_LEVEL": "WARNING",
    }
    files_dir = (tmp_path / "data").resolve()
    gw = await asyncio.to_thread(GatewayProcess(env, log_path=tmp_path / "gw.log").start)
    try:
        async with Api(gw.url) as api:
            assert (
                await api.post(
                    "/api/auth/register", json={"email": "c@example.com", "password": "password1"}
                )
            ).status == 201
            token = (
                await api.post(
                    "/api/auth/login", json={"email": "c@example.com", "password": "password1"}
                )
            ).json["token"]
            api.token = token
            project = (await api.post("/api/projects", json={"title": "crash"})).json["uuid"]
            created = await api.post(
                f"/api/projects/{project}/uploads",
                headers={
                    **TUS,
                    "Upload-Length": "3000000",
                    "Upload-Metadata": "filename " + base64.b64encode(b"tus.bin").decode(),
                },
            )
            tus_path = created.headers["Location"]
        data = payload(3_000_000, seed=3)

        # a multipart upload and a tus PATCH, both half sent, then the process dies
        boundary = "B0UNDARY"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="half.bin"\r\n\r\n'
        ).encode()
        multipart = await asyncio.open_connection("127.0.0.1", gw.port)
        multipart[1].write(
            (
                f"POST /api/projects/{project}/assets HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                f"Content-Length: {len(head) + len(data) + 50}\r\n\r\n"
            ).encode()
            + head
            + data[: len(data) // 2]
        )
        tus = await asyncio.open_connection("127.0.0.1", gw.port)
        tus[1].write(
            (
                f"PATCH {tus_path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nTus-Resumable: 1.0.0\r\n"
                f"Upload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\nContent-Length: {len(data)}\r\n\r\n"
            ).encode()
            + data[: len(data) // 2]
        )
        await multipart[1].drain()
        await tus[1].drain()
        upload_data = files_dir / "uploads" / tus_path.rsplit("/", 1)[1] / "data"
        for _ in range(200):
            if (
                files_under(files_dir / "tmp")
                and upload_data.exists()
                and upload_data.stat().st_size > 0
            ):
                break
            await asyncio.sleep(0.02)
        await asyncio.to_thread(gw.kill)
        for conn in (multipart, tus):
            conn[1].transport.abort()

        # no file under a real name; at most temporary files
        asset_files = files_under(files_dir / "assets")
        assert asset_files == [], asset_files
        assert all(p.name.endswith(".part") for p in files_under(files_dir / "tmp"))

        # after a restart: no asset recorded, and the tus upload resumes from what reached the disk
        gw2 = await asyncio.to_thread(GatewayProcess(env, log_path=tmp_path / "gw2.log").start)
        try:
            async with Api(gw2.url, token) as api:
                assert (await api.get(f"/api/projects/{project}/assets")).json["assets"] == []
                offset = await _head_offset(api, tus_path)
                assert 0 < offset <= len(data) // 2
                done = await api.patch(
                    tus_path,
                    data=data[offset:],
                    headers={
                        **TUS,
                        "Upload-Offset": str(offset),
                        "Content-Type": "application/offset+octet-stream",
                    },
                )
                assert done.status == 204, done.body
                got = await api.get(f"/api/projects/{project}/assets/tus.bin")
                assert got.body == data
        finally:
            await asyncio.to_thread(gw2.stop)
        assert "Traceback" not in gw.log_text()
    finally:
        await asyncio.to_thread(gw.stop)

"""Open uploads reserve their declared bytes against the project quota, across gateway instances."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import func, select, update

from services.gateway.app import create_app as create_gateway_app
from shared.db.models import UploadReservation
from stack.servers import PostgresServer
from tests.conftest import make_settings
from tests.support.api import Api, Reply
from tests.support.app_server import InProcessServer
from tests.support.fixtures_data import create_user, create_user_and_project, make_member

pytestmark = pytest.mark.integration

TUS = {"Tus-Resumable": "1.0.0"}
PATCH = {**TUS, "Content-Type": "application/offset+octet-stream"}
HUNDRED_MB = 104_857_600  # the reporter's Upload-Length, = MAX_ASSET_BYTES by default


def _metadata(name: str) -> str:
    return "filename " + base64.b64encode(name.encode()).decode()


async def create_upload(api: Api, project: str, length: int, name: str = "big.bin") -> Reply:
    return await api.post(
        f"/api/projects/{project}/uploads",
        headers={**TUS, "Upload-Length": str(length), "Upload-Metadata": _metadata(name)},
    )


async def multipart(api: Api, project: str, name: str, data: bytes) -> Reply:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=name, content_type="application/octet-stream")
    return await api.post(f"/api/projects/{project}/assets", data=form)


async def chunked_multipart(api: Api, project: str, name: str, data: bytes) -> Reply:
    """A multipart upload without Content-Length (Transfer-Encoding: chunked)."""
    boundary = "chunkedboundary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n\r\n'
    ).encode() + data + f"\r\n--{boundary}--\r\n".encode()

    async def chunks() -> AsyncIterator[bytes]:
        yield body

    return await api.post(
        f"/api/projects/{project}/assets",
        data=chunks(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )


async def expire_all(server: InProcessServer) -> None:
    """What UPLOAD_EXPIRY_SECONDS without a PATCH does to every open upload."""
    async with server.sessionmaker() as session, session.begin():
        await session.execute(
            update(UploadReservation).values(
                expires_at=datetime.now(UTC) - timedelta(seconds=1)
            )
        )


async def open_reservations(server: InProcessServer) -> int:
    async with server.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(UploadReservation)))


@pytest.fixture
async def two_gateways(
    tmp_path: Path, postgres: PostgresServer
) -> AsyncIterator[tuple[InProcessServer, InProcessServer]]:
    """Two gateway instances sharing one PostgreSQL database and one volume (default limits)."""
    url = postgres.create_database(f"q_{uuid.uuid4().hex[:12]}")
    settings = make_settings(tmp_path, database_url=url)
    a = await InProcessServer(create_gateway_app, settings).start()
    b = await InProcessServer(create_gateway_app, settings.with_overrides(port=0)).start()
    try:
        yield a, b
    finally:
        await a.stop()
        await b.stop()


async def test_declared_uploads_past_the_quota_are_refused_at_creation(
    two_gateways: tuple[InProcessServer, InProcessServer],
) -> None:
    a, b = two_gateways
    assert a.settings.max_project_bytes == 1024 * 1024 * 1024
    user_id, project = await create_user_and_project(a.sessionmaker, "uploader")
    token = a.token(user_id)
    async with Api(a.http_url, token) as api_a, Api(b.http_url, token) as api_b:
        # 11 creations of 100 MB at once, alternating instances: 10 fit in 1 GiB
        replies = await asyncio.gather(
            *(create_upload(api_a if i % 2 else api_b, project, HUNDRED_MB) for i in range(11))
        )
        statuses = sorted(r.status for r in replies)
        assert statuses == [201] * 10 + [413], statuses
        refused = next(r for r in replies if r.status == 413)
        assert refused.is_json_error() and refused.error_code == "too_large"
        # what is left of the quota (24 MiB) is all any upload can still have, on either instance
        assert (await create_upload(api_a, project, 30_000_000)).status == 413
        assert (await multipart(api_b, project, "small.bin", b"x" * 1000)).status == 201
        # a chunked body may be as large as MAX_ASSET_BYTES: that is what it reserves
        chunked = await chunked_multipart(api_a, project, "chunked.bin", b"y" * 1000)
        assert chunked.status == 413 and chunked.is_json_error()

        # abandoning one (tus termination) gives its 100 MB back
        location = next(r for r in replies if r.status == 201).headers["Location"]
        assert (await api_b.delete(location, headers=TUS)).status == 204
        again = await create_upload(api_a, project, HUNDRED_MB)
        assert again.status == 201, again.body

        # once expired, uploads hold nothing: the quota is free again, the uploads are gone
        await expire_all(a)
        expired = again.headers["Location"]
        assert (await api_a.request("HEAD", expired, headers=TUS)).status == 404
        assert not (Path(a.settings.files_dir) / "uploads" / expired.rsplit("/", 1)[1]).exists()
        fresh = await asyncio.gather(
            *(create_upload(api_b, project, HUNDRED_MB) for _ in range(10))
        )
        assert [r.status for r in fresh] == [201] * 10
        # expired reservations were deleted by the creations, not only ignored
        assert await open_reservations(a) == 10


async def test_a_completed_upload_turns_its_reservation_into_usage(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_asset_bytes=100_000, max_project_bytes=250_000)
    srv = await InProcessServer(create_gateway_app, settings).start()
    try:
        user_id, project = await create_user_and_project(srv.sessionmaker, "owner")
        async with Api(srv.http_url, srv.token(user_id)) as api:
            # a multipart upload failing while it streams (past the per-file limit) gives back
            # what it reserved; a chunked one fits in the quota while nothing is stored
            assert (await multipart(api, project, "d.bin", b"d" * 100_001)).status == 413
            assert (await chunked_multipart(api, project, "e.bin", b"e" * 100_001)).status == 413
            assert await open_reservations(srv) == 0
            created = await create_upload(api, project, 100_000, "done.bin")
            assert (await create_upload(api, project, 100_000, "open.bin")).status == 201
            done = await api.patch(
                created.headers["Location"],
                data=b"z" * 100_000,
                headers={**PATCH, "Upload-Offset": "0"},
            )
            assert done.status == 204, done.body
            assert await open_reservations(srv) == 1
            # 100 kB stored + 100 kB reserved: 50 kB are left
            assert (await create_upload(api, project, 50_001, "c.bin")).status == 413
            assert (await create_upload(api, project, 50_000, "c.bin")).status == 201
            assert await open_reservations(srv) == 2
    finally:
        await srv.stop()


async def test_open_uploads_are_capped_per_user_and_per_project(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_open_uploads_per_user=3, max_open_uploads_per_project=5)
    srv = await InProcessServer(create_gateway_app, settings).start()
    try:
        alice, project = await create_user_and_project(srv.sessionmaker, "alice")
        bob = await create_user(srv.sessionmaker, "bob")
        await make_member(srv.sessionmaker, project, bob, "editor")
        _, other_project = await create_user_and_project(srv.sessionmaker, "alice", role="owner")
        async with (
            Api(srv.http_url, srv.token(alice)) as api_a,
            Api(srv.http_url, srv.token(bob)) as api_b,
        ):
            first = await create_upload(api_a, project, 10)
            for _ in range(2):
                assert (await create_upload(api_a, project, 10)).status == 201
            # per user, whatever the project; multipart uploads count as open uploads too
            for attempt in (
                create_upload(api_a, project, 10),
                create_upload(api_a, other_project, 10),
                multipart(api_a, project, "m.bin", b"m"),
            ):
                refused = await attempt
                assert refused.status == 429 and refused.error_code == "too_many_uploads"
            # per project, whoever uploads
            for _ in range(2):
                assert (await create_upload(api_b, project, 10)).status == 201
            refused = await create_upload(api_b, project, 10)
            assert refused.status == 429 and refused.error_code == "too_many_uploads"
            # finishing an upload frees its place
            done = await api_a.patch(
                first.headers["Location"],
                data=b"0123456789",
                headers={**PATCH, "Upload-Offset": "0"},
            )
            assert done.status == 204
            assert (await create_upload(api_a, other_project, 10)).status == 201
    finally:
        await srv.stop()

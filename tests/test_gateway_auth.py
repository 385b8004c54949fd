"""Gateway accounts and tokens: register, login, me; every bad token is a 401 JSON error."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import jwt
import pytest

from services.embedded import create_app as create_embedded_app
from shared.auth import mint_token, verify_token
from shared.config import Settings
from tests.conftest import TEST_SECRET, make_settings
from tests.support.api import ROOT, Api
from tests.support.app_server import InProcessServer

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-password"


@pytest.fixture
async def api(server: InProcessServer) -> AsyncIterator[Api]:
    async with Api(server.http_url) as client:
        yield client


async def register(api: Api, email: str, password: str = PASSWORD, **extra: object):  # type: ignore[no-untyped-def]
    return await api.post(
        "/api/auth/register", json={"email": email, "password": password, **extra}, token=None
    )


async def login(api: Api, email: str, password: str = PASSWORD):  # type: ignore[no-untyped-def]
    return await api.post(
        "/api/auth/login", json={"email": email, "password": password}, token=None
    )


def _b64(obj: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def bad_tokens(secret: str, user_id: str) -> dict[str, str]:
    now = int(time.time())
    claims = {"sub": user_id, "email": "x@example.com", "roles": [], "iat": now, "exp": now + 600}
    none_token = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
    return {
        "expired": mint_token(secret, user_id, ttl_seconds=-120)[0],
        "forged": mint_token("another-secret-" + "y" * 40, user_id)[0],
        "alg_none": none_token,
        "alg_none_signed": none_token + "c2lnbmF0dXJl",
        "hs512_same_secret": jwt.encode(claims, secret, algorithm="HS512"),
        "hs384_same_secret": jwt.encode(claims, secret, algorithm="HS384"),
        "no_exp": jwt.encode(
            {k: v for k, v in claims.items() if k != "exp"}, secret, algorithm="HS256"
        ),
        "no_sub": jwt.encode(
            {k: v for k, v in claims.items() if k != "sub"}, secret, algorithm="HS256"
        ),
        "roles_not_list": jwt.encode({**claims, "roles": "admin"}, secret, algorithm="HS256"),
        "garbage": "garbage",
        "three_dots": "a.b.c",
        "empty_parts": "..",
        "huge": "x" * 6000,
        "non_ascii": "ünïcödé.tøkén.✓",
        "tampered_payload": mint_token(secret, user_id)[0].split(".")[0]
        + "."
        + _b64({**claims, "sub": "999"})
        + "."
        + mint_token(secret, user_id)[0].split(".")[2],
    }


async def test_register_login_me(api: Api, server: InProcessServer) -> None:
    created = await register(api, "Ada@Example.com", name="Ada")
    assert created.status == 201, created.body
    assert created.json["email"] == "ada@example.com" and created.json["name"] == "Ada"
    assert (await register(api, "ada@example.com")).status == 409

    reply = await login(api, "ADA@example.com ")
    assert reply.status == 200, reply.body
    token, expires_at = reply.json["token"], reply.json["expires_at"]
    identity = verify_token(token, server.settings.jwt_secret)
    assert identity.user_id == str(created.json["id"]) and identity.email == "ada@example.com"
    claims = jwt.decode(token, server.settings.jwt_secret, algorithms=["HS256"])
    assert {"sub", "email", "roles", "iat", "exp"} <= claims.keys()
    assert claims["exp"] == expires_at
    assert jwt.get_unverified_header(token)["alg"] == "HS256"

    me = await api.get("/api/me", token=token)
    assert me.status == 200 and me.json["email"] == "ada@example.com"
    # ?token= works too (for <img src> and downloads)
    assert (await api.get(f"/api/me?token={token}", token=None)).status == 200


async def test_register_validates_input(api: Api) -> None:
    for body in (
        {"email": "not-an-email", "password": PASSWORD},
        {"email": "a@example.com", "password": "short"},
        {"email": "a@example.com"},
        {"password": PASSWORD},
        {"email": 5, "password": PASSWORD},
        {"email": "a@example.com", "password": PASSWORD, "name": "x" * 1000},
    ):
        reply = await api.post("/api/auth/register", json=body, token=None)
        assert reply.status == 400 and reply.is_json_error(), (body, reply.body)
    for raw in (b"", b"not json", b"[1,2]", b"\xff\xfe"):
        reply = await api.post(
            "/api/auth/register", data=raw, headers={"Content-Type": "application/json"}, token=None
        )
        assert reply.status == 400 and reply.is_json_error(), (raw, reply.body)
    # nobody promotes themselves
    reply = await register(api, "b@example.com", roles=["admin"])
    assert reply.status == 403 and reply.is_json_error()


async def test_login_failures_do_not_reveal_accounts(api: Api) -> None:
    assert (await register(api, "known@example.com")).status == 201
    wrong_password = await login(api, "known@example.com", "wrong-password")
    unknown_user = await login(api, "unknown@example.com", "wrong-password")
    assert wrong_password.status == unknown_user.status == 401
    assert wrong_password.is_json_error() and unknown_user.is_json_error()
    assert wrong_password.json == unknown_user.json
    assert (await api.post("/api/auth/login", json={"email": "x"}, token=None)).status == 400


async def test_login_rehashes_a_password_hashed_with_weaker_parameters(
    api: Api, server: InProcessServer
) -> None:
    from argon2 import PasswordHasher
    from sqlalchemy import select

    from shared.db.models import User

    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(PASSWORD)
    async with server.sessionmaker() as session, session.begin():
        session.add(User(email="old@example.com", password_hash=weak, display_name="", roles=[]))

    async def stored_hash() -> str:
        async with server.sessionmaker() as session:
            return str(
                await session.scalar(
                    select(User.password_hash).where(User.email == "old@example.com")
                )
            )

    assert (await login(api, "old@example.com", "wrong-password")).status == 401
    assert await stored_hash() == weak  # a failed login changes nothing
    assert (await login(api, "old@example.com")).status == 200
    rehashed = await stored_hash()
    assert rehashed != weak and not PasswordHasher().check_needs_rehash(rehashed)
    assert PasswordHasher().verify(rehashed, PASSWORD)
    assert (await login(api, "old@example.com")).status == 200
    assert await stored_hash() == rehashed  # current parameters: left alone


async def test_every_bad_token_is_a_401_json_error_without_traceback(
    api: Api, server: InProcessServer, caplog: pytest.LogCaptureFixture
) -> None:
    user = await register(api, "victim@example.com")
    user_id = str(user.json["id"])
    caplog.set_level(logging.DEBUG)
    cases = bad_tokens(server.settings.jwt_secret, user_id)
    for name, token in cases.items():
        for how in ("header", "query"):
            if how == "header":
                reply = await api.get("/api/me", headers={"Authorization": f"Bearer {token}"})
            else:
                reply = await api.get("/api/me", params={"token": token}, token=None)
            assert reply.status == 401, (name, how, reply.status, reply.body)
            assert reply.is_json_error(), (name, how, reply.body)
            assert reply.error_code == "unauthorized"
            assert b"Traceback" not in reply.body
    for header in ("Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "Token abc", "bearer"):
        reply = await api.get("/api/projects", headers={"Authorization": header})
        assert reply.status == 401 and reply.is_json_error(), (header, reply.body)
    # no token at all, on a few protected routes and methods
    for method, path in (
        ("GET", "/api/me"),
        ("GET", "/api/projects"),
        ("POST", "/api/projects"),
        ("GET", "/api/projects/00000000-0000-0000-0000-000000000000"),
        ("DELETE", "/api/projects/00000000-0000-0000-0000-000000000000/assets/x"),
        ("GET", "/api/does-not-exist"),
    ):
        reply = await api.request(method, path, token=None)
        assert reply.status == 401 and reply.is_json_error(), (method, path, reply.body)
    assert not [r for r in caplog.records if r.exc_info], "a bad token logged a traceback"
    assert "Traceback" not in caplog.text


async def test_token_of_a_deleted_or_foreign_user_is_refused(
    api: Api, server: InProcessServer
) -> None:
    # signed correctly, but `sub` is not an account of this database
    token = server.token("not-a-number")
    assert (await api.get("/api/me", token=token)).status == 401
    assert (await api.get("/api/me", token=server.token(424242))).status == 401
    assert (await api.post("/api/projects", json={}, token=server.token(424242))).status == 404


async def test_login_is_rate_limited_per_account_and_per_address(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, login_rate_per_account=3, login_rate_per_address=6, login_rate_window=60.0
    )
    srv = await InProcessServer(create_embedded_app, settings).start()
    try:
        async with Api(srv.http_url) as api:
            assert (await register(api, "target@example.com")).status == 201
            statuses = [
                (await login(api, "target@example.com", f"guess-{i}")).status for i in range(4)
            ]
            assert statuses == [401, 401, 401, 429]
            limited = await login(api, "target@example.com")  # even the right password waits
            assert limited.status == 429 and limited.is_json_error()
            assert int(limited.headers["Retry-After"]) >= 1
            # other accounts from the same address: until the per-address limit
            more = [(await login(api, f"other{i}@example.com", "x" * 8)).status for i in range(4)]
            assert more[:1] == [401] and more[-1] == 429
    finally:
        await srv.stop()


async def test_registration_closed_unless_admin(tmp_path: Path) -> None:
    srv = await InProcessServer(
        create_embedded_app, make_settings(tmp_path, auth_create_users=False)
    ).start()
    try:
        from tests.support.fixtures_data import create_user

        admin_id = await create_user(srv.sessionmaker, "root", roles=("admin",))
        plain_id = await create_user(srv.sessionmaker, "plain")
        async with Api(srv.http_url) as api:
            body = {"email": "new@example.com", "password": PASSWORD}
            anonymous = await api.post("/api/auth/register", json=body, token=None)
            assert anonymous.status == 401 and anonymous.is_json_error()
            plain = await api.post("/api/auth/register", json=body, token=srv.token(plain_id))
            assert plain.status == 403 and plain.is_json_error()
            admin_token = srv.token(admin_id, roles=["admin"])
            created = await api.post(
                "/api/auth/register", json={**body, "roles": ["admin"]}, token=admin_token
            )
            assert created.status == 201 and created.json["roles"] == ["admin"]
            assert (await login(api, "new@example.com")).status == 200
    finally:
        await srv.stop()


def _admin(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # the callers check the return code
        [sys.executable, "-m", "services.gateway.admin", *args],
        check=False,
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_admin_cli(server: InProcessServer, api: Api) -> None:
    settings: Settings = server.settings
    env = {
        **os.environ,
        "DATA_DIR": str(settings.data_dir),
        "DATABASE_URL": settings.database_url,
        "API_JWT_SECRET": TEST_SECRET,
        "APP_SECRET": TEST_SECRET,
        "RUN_MIGRATIONS": "0",  # the server migrated this database already
    }
    created = await asyncio.to_thread(
        _admin,
        env,
        "create-user",
        "Op@Example.com",
        "--name",
        "Op",
        "--admin",
        "--password-stdin",
        stdin="first-password\n",
    )
    assert created.returncode == 0, created.stderr
    assert "first-password" not in created.stdout + created.stderr
    again = await asyncio.to_thread(
        _admin, env, "create-user", "op@example.com", "--password-stdin", stdin="x" * 10 + "\n"
    )
    assert again.returncode == 1 and "already exists" in again.stderr
    assert (await login(api, "op@example.com", "first-password")).status == 200

    reset = await asyncio.to_thread(
        _admin,
        env,
        "reset-password",
        "op@example.com",
        "--password-stdin",
        stdin="second-password\n",
    )
    assert reset.returncode == 0, reset.stderr
    assert (await login(api, "op@example.com", "first-password")).status == 401
    assert (await login(api, "op@example.com", "second-password")).status == 200

    minted = await asyncio.to_thread(_admin, env, "mint-token", "op@example.com", "--ttl", "600")
    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.strip()
    identity = verify_token(token, TEST_SECRET)
    assert identity.is_admin and identity.email == "op@example.com"
    assert (await api.get("/api/me", token=token)).json["email"] == "op@example.com"
    missing = await asyncio.to_thread(_admin, env, "mint-token", "nobody@example.com")
    assert missing.returncode == 1

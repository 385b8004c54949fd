"""Accounts over HTTP: register, login (rate-limited), logout, me.

Login answers the token twice, as `token` (ours) and `access_token`
(eXeLearning's name), and sets it as the httpOnly `auth` cookie (SameSite=Lax,
path `/`, for the token's lifetime; `Secure` when the client came over TLS),
which the gateway accepts wherever a Bearer token is. Logout clears the cookie.
"""

from __future__ import annotations

import logging

from aiohttp import web

from services.gateway.accounts import (
    KNOWN_ROLES,
    MAX_NAME,
    EmailTaken,
    create_user,
    find_user_by_email,
    normalize_email,
    rehash_if_outdated,
    user_json,
)
from services.gateway.context import (
    caller_user_id,
    gateway,
    read_json,
    sessionmaker,
    string_field,
)
from services.gateway.errors import ApiError, bad_request, conflict, forbidden, unauthorized
from services.gateway.passwords import MAX_LENGTH, password_problem, verify_password
from services.gateway.security import optional_identity, require_identity
from shared.auth import AUTH_COOKIE, mint_token
from shared.db.models import User
from shared.net import client_address, request_scheme

log = logging.getLogger(__name__)

LOGIN_FAILED = "wrong email or password"


def _rate_limited(wait: float) -> ApiError:
    return ApiError(
        429,
        "too many attempts; try again later",
        code="rate_limited",
        headers={"Retry-After": str(max(1, int(wait + 0.999)))},
    )


async def register(request: web.Request) -> web.Response:
    ctx = gateway(request)
    caller = optional_identity(request, ctx.settings.jwt_secret, ctx.settings.forwarded_allow_ips)
    is_admin = caller is not None and caller.is_admin
    if not ctx.settings.auth_create_users and not is_admin:
        if caller is None:
            raise unauthorized("registration is closed: an administrator must create accounts")
        raise forbidden("registration is closed: only administrators create accounts")
    # Hashing a password costs CPU by design: registrations are throttled per
    # address too (their own bucket, with the login limit).
    bucket = "register|" + client_address(request, ctx.settings.forwarded_allow_ips)
    wait = ctx.login_by_address.retry_after(bucket)
    if wait:
        raise _rate_limited(wait)
    ctx.login_by_address.hit(bucket)
    body = await read_json(request)
    email = normalize_email(body.get("email"))
    if email is None:
        raise bad_request("'email' must be a valid email address")
    password = body.get("password")
    problem = password_problem(password)
    if problem is not None:
        raise bad_request(problem)
    name = string_field(body, "name", required=False, max_length=MAX_NAME)
    roles = body.get("roles", [])
    if not isinstance(roles, list) or not all(
        isinstance(r, str) and r in KNOWN_ROLES for r in roles
    ):
        raise bad_request(f"'roles' must be a list of {', '.join(KNOWN_ROLES)}")
    if roles and not is_admin:
        raise forbidden("only administrators can assign roles")
    try:
        user = await create_user(sessionmaker(request), email, password, name, roles)  # type: ignore[arg-type]
    except EmailTaken:
        raise conflict("an account with this email already exists") from None
    log.info("user registered", extra={"user": user.id, "by_admin": is_admin})
    return web.json_response(user_json(user), status=201)


async def login(request: web.Request) -> web.Response:
    ctx = gateway(request)
    body = await read_json(request)
    raw_email = body.get("email")
    password = body.get("password")
    if not isinstance(raw_email, str) or not isinstance(password, str):
        raise bad_request("'email' and 'password' are required strings")
    if len(password) > MAX_LENGTH or len(raw_email) > 320:
        raise bad_request("'email' or 'password' is too long")
    address = client_address(request, ctx.settings.forwarded_allow_ips)
    account = normalize_email(raw_email) or raw_email.strip().lower()
    wait = max(
        ctx.login_by_address.retry_after(address) or 0.0,
        ctx.login_by_account.retry_after(account) or 0.0,
    )
    if wait > 0:
        ctx.metrics.logins.labels("throttled").inc()
        raise _rate_limited(wait)
    ctx.login_by_address.hit(address)
    ctx.login_by_account.hit(account)
    async with sessionmaker(request)() as session:
        user = await find_user_by_email(session, account)
    ok = await verify_password(user.password_hash if user is not None else None, password)
    if not ok or user is None:
        ctx.metrics.logins.labels("failed").inc()
        log.info("login failed", extra={"remote": address})
        raise unauthorized(LOGIN_FAILED)
    ctx.login_by_account.reset(account)
    try:
        if await rehash_if_outdated(sessionmaker(request), user, password):
            log.info("password rehashed", extra={"user": user.id})
    except Exception:  # the login stands; the old hash still works and is rehashed next time
        log.exception("password rehash failed", extra={"user": user.id})
    ctx.metrics.logins.labels("ok").inc()
    token, expires_at = mint_token(
        ctx.settings.jwt_secret,
        user.id,
        email=user.email,
        roles=list(user.roles or []),
        ttl_seconds=ctx.settings.jwt_ttl_seconds,
    )
    response = web.json_response(
        {"token": token, "access_token": token, "expires_at": expires_at, "user": user_json(user)}
    )
    response.set_cookie(
        AUTH_COOKIE,
        token,
        max_age=ctx.settings.jwt_ttl_seconds,
        path="/",
        httponly=True,
        samesite="Lax",
        secure=request_scheme(request, ctx.settings.forwarded_allow_ips) == "https",
    )
    return response


async def logout(request: web.Request) -> web.Response:
    """Clear the `auth` cookie (a token itself stays valid until its `exp`)."""
    response = web.json_response({"message": "logged out"})
    response.del_cookie(AUTH_COOKIE, path="/")
    return response


async def me(request: web.Request) -> web.Response:
    identity = require_identity(request)
    user_id = caller_user_id(identity)
    async with sessionmaker(request)() as session:
        user = await session.get(User, user_id)
    if user is None:
        raise unauthorized("this token's account no longer exists")
    return web.json_response(user_json(user))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/auth/register", register)
    app.router.add_post("/api/auth/login", login)
    app.router.add_post("/api/auth/logout", logout)
    app.router.add_get("/api/me", me)

"""Accounts over HTTP: register, login (rate-limited), logout, me.

Login answers the token twice, as `token` (ours) and `access_token`
(eXeLearning's name), and sets it as the httpOnly `auth` cookie (SameSite=Lax,
path `/`, for the token's lifetime; `Secure` when the client came over TLS),
which the gateway accepts wherever a Bearer token is. Logout clears the cookie.
"""

from __future__ import annotations

import logging

from aiohttp import web
from pydantic import Field

from services.gateway.accounts import (
    MAX_EMAIL,
    MAX_NAME,
    Email,
    EmailTaken,
    KnownRole,
    create_user,
    find_user_by_email,
    normalize_email,
    rehash_if_outdated,
)
from services.gateway.context import caller_user_id, gateway, sessionmaker
from services.gateway.errors import ApiError, conflict, forbidden, unauthorized
from services.gateway.passwords import MAX_LENGTH, MIN_LENGTH, verify_password
from services.gateway.schema import (
    PUBLIC,
    Body,
    Reply,
    ReplyBody,
    Routes,
    Security,
    Text,
    Timestamp,
    reply,
)
from services.gateway.schema import add_routes as add_declared_routes
from services.gateway.security import optional_identity, require_identity
from shared.auth import AUTH_COOKIE, mint_token
from shared.db.models import User
from shared.net import client_address, request_scheme

log = logging.getLogger(__name__)

LOGIN_FAILED = "wrong email or password"
# Register answers without a token too (open registration) and checks one if sent (admins).
OPTIONAL_AUTH: Security = ({}, {"bearerAuth": []})


class Registration(Body):
    email: Email
    password: str = Field(min_length=MIN_LENGTH, max_length=MAX_LENGTH)
    name: Text = Field("", max_length=MAX_NAME)
    roles: list[KnownRole] = Field([], description="only administrators assign roles")


class Credentials(Body):
    email: str = Field(max_length=MAX_EMAIL)
    password: str = Field(max_length=MAX_LENGTH)


class UserOut(ReplyBody):
    id: int
    email: str
    name: str
    roles: list[str]
    created_at: Timestamp | None

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(
            id=user.id,
            email=user.email,
            name=user.display_name,
            roles=list(user.roles or []),
            created_at=user.created_at,
        )


class LoggedIn(ReplyBody):
    token: str = Field(description="HS256 JWT: sub, email, roles, iat, exp")
    access_token: str = Field(description="the same token (eXeLearning's name)")
    expires_at: int = Field(description="Unix time")
    user: UserOut


class Message(ReplyBody):
    message: str


routes = Routes(tags=["accounts"])


def _rate_limited(wait: float) -> ApiError:
    return ApiError(
        429,
        "too many attempts; try again later",
        code="rate_limited",
        headers={"Retry-After": str(max(1, int(wait + 0.999)))},
    )


@routes.post(
    "/api/auth/register",
    "Create an account (open when AUTH_CREATE_USERS=1, otherwise admins only)",
    body=Registration,
    replies={201: Reply("Created", UserOut)},
    errors=(400, 401, 403, 409, 413, 429),
    security=OPTIONAL_AUTH,
)
async def register(request: web.Request, body: Registration) -> web.Response:
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
    if body.roles and not is_admin:
        raise forbidden("only administrators can assign roles")
    try:
        user = await create_user(
            sessionmaker(request), body.email, body.password, body.name, body.roles
        )
    except EmailTaken:
        raise conflict("an account with this email already exists") from None
    log.info("user registered", extra={"user": user.id, "by_admin": is_admin})
    return reply(UserOut.of(user), status=201)


@routes.post(
    "/api/auth/login",
    "Exchange email and password for a token (rate-limited per address and account)",
    body=Credentials,
    replies={200: Reply("Logged in; also sets the httpOnly `auth` cookie", LoggedIn)},
    errors=(400, 401, 413, 429),
    security=PUBLIC,
)
async def login(request: web.Request, body: Credentials) -> web.Response:
    ctx = gateway(request)
    password = body.password
    address = client_address(request, ctx.settings.forwarded_allow_ips)
    account = normalize_email(body.email) or body.email.strip().lower()
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
    response = reply(
        LoggedIn(token=token, access_token=token, expires_at=expires_at, user=UserOut.of(user))
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


@routes.post(
    "/api/auth/logout",
    "Clear the auth cookie (tokens stay valid until their exp)",
    replies={200: Reply("Logged out", Message)},
    security=PUBLIC,
)
async def logout(request: web.Request) -> web.Response:
    """Clear the `auth` cookie (a token itself stays valid until its `exp`)."""
    response = reply(Message(message="logged out"))
    response.del_cookie(AUTH_COOKIE, path="/")
    return response


@routes.get(
    "/api/me", "The caller's account", replies={200: Reply("The caller", UserOut)}, errors=(401,)
)
async def me(request: web.Request) -> web.Response:
    identity = require_identity(request)
    user_id = caller_user_id(identity)
    async with sessionmaker(request)() as session:
        user = await session.get(User, user_id)
    if user is None:
        raise unauthorized("this token's account no longer exists")
    return reply(UserOut.of(user))


def add_routes(app: web.Application) -> None:
    add_declared_routes(app, routes)

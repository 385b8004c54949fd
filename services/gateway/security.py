"""JWT authentication of HTTP requests (aiohttp-jwt, hardened).

aiohttp-jwt's `JWTMiddleware` does the gatekeeping: every path under `/api/`
needs a token except an anchored whitelist of public routes. It is given
what it needs to work with current PyJWT (`algorithms=["HS256"]`) and a
`token_getter` that accepts `Authorization: Bearer` and `?token=` (browsers
cannot set headers on `<img src>` or a WebSocket). Its own checks are not
enough on their own (it does not require `exp`), so its `is_revoked` hook runs
`shared.auth.verify_token` (algorithm pinned, `sub`/`iat`/`exp` required,
roles well-formed) and stores the resulting `Identity` on the request; a
failure there is a 401 too. Its logger, which prints a traceback for every
bad token, is silenced; rejections are logged here in one line.

Handlers call `require_identity(request)`, which fails closed (401) even if a
route were whitelisted by mistake.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp_jwt import JWTMiddleware

from services.gateway.errors import unauthorized
from shared.auth import ALGORITHM, Identity, TokenError, bearer_token, verify_token

log = logging.getLogger(__name__)

_RequestKey = getattr(web, "RequestKey", None)  # aiohttp >= 3.12
IDENTITY_KEY = _RequestKey("exe_identity", Identity) if _RequestKey else "exe_identity"
_RAW_TOKEN_KEY = _RequestKey("exe_raw_token", str) if _RequestKey else "exe_raw_token"
JWT_PAYLOAD_KEY = "jwt_payload"

# Anchored: a whitelist entry is a regex matched at the start of the path.
# Everything outside /api/ (health, metrics, the collab WebSocket, which
# authenticates itself) plus the public API routes.
PUBLIC_PATHS = (
    r"^(?!/api/)",
    r"^/api/auth/login$",
    r"^/api/auth/register$",
    r"^/api/openapi\.json$",
)


def request_token(request: web.Request) -> str | None:
    """The token of a request: `Authorization: Bearer ...` first, else `?token=`."""
    header = request.headers.get("Authorization")
    if header is not None:
        token = bearer_token(header)
        if token is None:
            raise unauthorized("the Authorization header must be 'Bearer <token>'")
        return token
    token = request.query.get("token")
    return token or None


def jwt_middleware(secret: str):  # type: ignore[no-untyped-def]
    logging.getLogger("aiohttp_jwt").setLevel(logging.CRITICAL)

    def token_getter(request: web.Request) -> str | None:
        token = request_token(request)
        if token is not None:
            request[_RAW_TOKEN_KEY] = token
        return token

    def is_revoked(request: web.Request, payload: dict) -> bool:
        try:
            identity = verify_token(request.get(_RAW_TOKEN_KEY, ""), secret)
        except TokenError as exc:
            log.info(
                "token rejected: %s", exc, extra={"path": request.path, "remote": request.remote}
            )
            raise unauthorized(f"invalid token: {exc}") from None
        request[IDENTITY_KEY] = identity
        return False

    return JWTMiddleware(
        secret,
        request_property=JWT_PAYLOAD_KEY,
        credentials_required=True,
        whitelist=PUBLIC_PATHS,
        token_getter=token_getter,
        is_revoked=is_revoked,
        algorithms=[ALGORITHM],
    )


def require_identity(request: web.Request) -> Identity:
    identity = request.get(IDENTITY_KEY)
    if identity is None:
        raise unauthorized()
    return identity


def optional_identity(request: web.Request, secret: str) -> Identity | None:
    """The caller on a public route: None without a token, 401 with a bad one."""
    identity = request.get(IDENTITY_KEY)
    if identity is not None:
        return identity
    token = request_token(request)
    if token is None:
        return None
    try:
        identity = verify_token(token, secret)
    except TokenError as exc:
        raise unauthorized(f"invalid token: {exc}") from None
    request[IDENTITY_KEY] = identity
    return identity

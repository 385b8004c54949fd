"""JWT authentication of HTTP requests.

Every path under `/api/` needs a token except an anchored whitelist of public
routes (and OPTIONS, the tus capabilities). The token is found and verified by
the same rule as on the WebSocket (`shared/auth.py`: `request_token`, then
`verify_token`, which pins the algorithm, requires `sub`/`iat`/`exp` and
allows no grace past `exp`), so a token is valid for exactly the same time on
both; the resulting `Identity` is stored on the request, and a missing or bad
token is a 401, logged in one line.

Handlers call `require_identity(request)`, which fails closed (401) even if a
route were whitelisted by mistake.
"""

from __future__ import annotations

import logging
import re

from aiohttp import hdrs, web

from services.gateway.errors import unauthorized
from shared.auth import Identity, TokenError, request_token, verify_token

log = logging.getLogger(__name__)

IDENTITY_KEY = web.RequestKey("exe_identity", Identity)

# Everything outside /api/ (health, metrics, the web client, the collab WebSocket,
# which authenticates itself) plus the public API routes.
PUBLIC_PATHS = re.compile(
    r"^(?!/api/)|^/api/auth/login$|^/api/auth/register$|^/api/openapi\.json$"
)


def _verified(request: web.Request, secret: str, token: str | None) -> Identity:
    try:
        identity = verify_token(token or "", secret)
    except TokenError as exc:
        log.info("token rejected: %s", exc, extra={"path": request.path, "remote": request.remote})
        raise (unauthorized(f"invalid token: {exc}") if token else unauthorized()) from None
    request[IDENTITY_KEY] = identity
    return identity


def _token(request: web.Request) -> str | None:
    return request_token(request.headers.get(hdrs.AUTHORIZATION), request.query.get("token"))


def jwt_middleware(secret: str):  # type: ignore[no-untyped-def]
    @web.middleware
    async def middleware(request: web.Request, handler):  # type: ignore[no-untyped-def]
        if request.method != hdrs.METH_OPTIONS and not PUBLIC_PATHS.match(request.path):
            _verified(request, secret, _token(request))
        return await handler(request)

    return middleware


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
    token = _token(request)
    return None if token is None else _verified(request, secret, token)

"""JWT authentication of HTTP requests.

Every path under `/api/` needs a token except an anchored whitelist of public
routes (and OPTIONS, the tus capabilities). The token is found and verified by
the same rule as on the WebSocket (`shared/auth.py`: `request_token`, then
`verify_token`, which pins the algorithm, requires `sub`/`iat`/`exp` and
allows no grace past `exp`), so a token is valid for exactly the same time on
both; the resulting `Identity` is stored on the request, and a missing or bad
token is a 401, logged in one line.

Without a header or `?token=`, the token is the `auth` cookie's (set by
login, for eXeLearning's `navigator.sendBeacon` saves, which carry no
headers); an explicit token always comes first and a bad one is not rescued
by the cookie. A cookie-authenticated unsafe request must pass the cross-site
rule (`services/gateway/csrf.py`), else 403 `cross_site`.

Handlers call `require_identity(request)`, which fails closed (401) even if a
route were whitelisted by mistake.
"""

from __future__ import annotations

import logging
import re

from aiohttp import hdrs, web

from services.gateway.csrf import cross_site_refusal
from services.gateway.errors import ApiError, unauthorized
from shared.auth import AUTH_COOKIE, Identity, TokenError, request_token, verify_token
from shared.net import request_scheme

log = logging.getLogger(__name__)

IDENTITY_KEY = web.RequestKey("exe_identity", Identity)

# Everything outside /api/ (health, metrics, the web client, the collab WebSocket,
# which authenticates itself) plus the public API routes.
# The upload-session batch authenticates with its session token (`exe_sync.py`).
PUBLIC_PATHS = re.compile(
    r"^(?!/api/)|^/api/auth/(login|logout|register)$|^/api/openapi\.json$|^/api/version$"
    r"|^/api/upload-session/[^/]+/batch$"
)


def _verified(
    request: web.Request,
    secret: str,
    forwarded_allow_ips: str,
    token: str | None,
    from_cookie: bool,
) -> Identity:
    try:
        identity = verify_token(token or "", secret)
    except TokenError as exc:
        log.info("token rejected: %s", exc, extra={"path": request.path, "remote": request.remote})
        raise (unauthorized(f"invalid token: {exc}") if token else unauthorized()) from None
    if from_cookie:
        refusal = cross_site_refusal(
            request.method,
            request.headers.get("Sec-Fetch-Site"),
            request.headers.get(hdrs.ORIGIN),
            f"{request_scheme(request, forwarded_allow_ips)}://{request.host}",
        )
        if refusal is not None:
            log.info(
                "cookie refused: %s",
                refusal,
                extra={"path": request.path, "remote": request.remote},
            )
            raise ApiError(403, refusal, code="cross_site")
    request[IDENTITY_KEY] = identity
    return identity


def _token(request: web.Request) -> tuple[str | None, bool]:
    """The request's token, and whether it is the `auth` cookie's (nothing explicit was sent)."""
    token = request_token(request.headers.get(hdrs.AUTHORIZATION), request.query.get("token"))
    if token is not None:
        return token, False
    cookie = request.cookies.get(AUTH_COOKIE) or None
    return cookie, cookie is not None


def jwt_middleware(secret: str, forwarded_allow_ips: str):  # type: ignore[no-untyped-def]
    @web.middleware
    async def middleware(request: web.Request, handler):  # type: ignore[no-untyped-def]
        if request.method != hdrs.METH_OPTIONS and not PUBLIC_PATHS.match(request.path):
            _verified(request, secret, forwarded_allow_ips, *_token(request))
        return await handler(request)

    return middleware


def require_identity(request: web.Request) -> Identity:
    identity = request.get(IDENTITY_KEY)
    if identity is None:
        raise unauthorized()
    return identity


def optional_identity(
    request: web.Request, secret: str, forwarded_allow_ips: str
) -> Identity | None:
    """The caller on a public route: None without a token, 401 with a bad one. A cookie that
    is stale or sent cross-site counts as no token (a public route must work without it)."""
    identity = request.get(IDENTITY_KEY)
    if identity is not None:
        return identity
    token, from_cookie = _token(request)
    if token is None:
        return None
    try:
        return _verified(request, secret, forwarded_allow_ips, token, from_cookie)
    except ApiError:
        if from_cookie:
            return None
        raise

"""JWT authentication of HTTP requests.

A route needs a token unless its declaration allows anonymous callers (`security=PUBLIC`, or
optional auth like register's; services/gateway/schema.py records every declared route's
answer in `ANONYMOUS_ROUTES`). A route nobody declared needs one under `/api/` (an unknown
API path is a 401, not a 404) and not elsewhere (the collab WebSocket authenticates itself,
an unknown page is a 404). OPTIONS never needs one (the tus capabilities; preflights carry
no credentials). The token is found and verified by
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

from aiohttp import hdrs, web

from services.gateway.csrf import cross_site_refusal
from services.gateway.errors import ApiError, unauthorized
from shared.auth import AUTH_COOKIE, Identity, TokenError, request_token, verify_token
from shared.net import request_scheme

log = logging.getLogger(__name__)

IDENTITY_KEY = web.RequestKey("exe_identity", Identity)

# (method, path as the router writes it, e.g. "/api/projects/{uuid}") -> anonymous allowed
ANONYMOUS_ROUTES: web.AppKey[dict[tuple[str, str], bool]] = web.AppKey(
    "anonymous_routes", dict[tuple[str, str], bool]
)


def needs_token(
    method: str, path: str, route: tuple[str, str] | None, anonymous: dict[tuple[str, str], bool]
) -> bool:
    """Whether a request for `route` (None: no route matched, a 404 or 405) must carry a
    valid token."""
    if method == hdrs.METH_OPTIONS:
        return False
    if route is None:  # a 405 on a public path stays a 405
        return path.startswith("/api/") and not any(
            allowed and declared == path for (_, declared), allowed in anonymous.items()
        )
    if route not in anonymous and route[0] == hdrs.METH_HEAD:
        route = (hdrs.METH_GET, route[1])  # the HEAD aiohttp adds to a GET
    if route in anonymous:
        return not anonymous[route]
    return path.startswith("/api/")


def _route(request: web.Request) -> tuple[str, str] | None:
    route = request.match_info.route
    if route.resource is None:  # 404 / 405
        return None
    return route.method, route.resource.canonical


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
        anonymous = request.app.get(ANONYMOUS_ROUTES, {})
        if needs_token(request.method, request.path, _route(request), anonymous):
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

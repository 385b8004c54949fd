"""Prometheus metrics: one registry per app (no global state) and the /metrics route.

With `METRICS_TOKEN` set, `/metrics` answers only `Authorization: Bearer <METRICS_TOKEN>`
(401 otherwise). Without it, `/metrics` is open in development and off (404) with
`APP_ENV=prod`: the service port is reachable from more than Prometheus (an
ingress that routes `/` to the gateway, any pod of the cluster).
"""

from __future__ import annotations

import hmac
import logging

from aiohttp import hdrs, web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from shared.auth import bearer_token
from shared.config import Settings
from shared.http_errors import json_error

log = logging.getLogger(__name__)

METRICS_REGISTRY: web.AppKey[CollectorRegistry] = web.AppKey("metrics_registry", CollectorRegistry)


async def _exposition(request: web.Request) -> web.Response:
    """Prometheus text exposition of the app's registry."""
    body = generate_latest(request.app[METRICS_REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_metrics_route(app: web.Application, settings: Settings) -> None:
    """Register `/metrics` as the settings allow (see the module's docstring)."""
    token = settings.metrics_token
    if not token:
        if settings.is_production:
            log.warning("METRICS_TOKEN is not set: /metrics is off")
        else:
            app.router.add_get("/metrics", _exposition)
        return
    expected = token.encode()

    async def guarded(request: web.Request) -> web.Response:
        given = bearer_token(request.headers.get(hdrs.AUTHORIZATION)) or ""
        if not hmac.compare_digest(given.encode("utf-8", "replace"), expected):
            return json_error(
                401,
                "unauthorized",
                "/metrics needs Authorization: Bearer <METRICS_TOKEN>",
                {"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
        return await _exposition(request)

    app.router.add_get("/metrics", guarded)

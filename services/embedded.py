"""The embedded default (`make run`): gateway and collab in one process."""

from __future__ import annotations

import logging

from aiohttp import web

from services.collab.app import setup_collab
from services.gateway.app import setup_gateway
from shared.config import Settings
from shared.health import add_health_routes
from shared.metrics import metrics_handler

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> web.Application:
    """One app serving the HTTP API and `/yjs/*`, sharing one database."""
    app = web.Application()
    add_health_routes(app)
    app.router.add_get("/metrics", metrics_handler)
    setup_gateway(app, settings)
    setup_collab(app, settings)
    return app

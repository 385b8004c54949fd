"""The embedded default (`make run`): gateway and collab in one process."""

from __future__ import annotations

import logging

from aiohttp import web

from services.collab.app import setup_collab
from services.gateway.app import setup_gateway
from shared.config import Settings
from shared.service_app import service_app

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> web.Application:
    """One app serving the HTTP API and `/yjs/*`, sharing one database."""
    app = service_app(settings)
    setup_gateway(app, settings)
    setup_collab(app, settings)
    return app

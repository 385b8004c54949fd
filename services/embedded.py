"""The embedded default (`make run`): gateway and collab in one process."""

from __future__ import annotations

import logging
import uuid

from aiohttp import web

from services.collab.app import setup_collab
from services.gateway.app import setup_gateway
from shared.config import Settings
from shared.service_app import service_app
from shared.webhooks.dispatcher import setup_dispatcher

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> web.Application:
    """One app serving the HTTP API and `/yjs/*`, sharing one database, and delivering
    webhooks (in multi-instance mode the persistence worker does too)."""
    app = service_app(settings)
    setup_gateway(app, settings)
    setup_collab(app, settings)
    setup_dispatcher(app, settings, settings.instance_id or f"embedded-{uuid.uuid4().hex[:8]}")
    return app

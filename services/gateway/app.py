"""Composition of the gateway service."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry

from shared.config import Settings
from shared.db.resources import database_ready_check, setup_database
from shared.health import READINESS_CHECKS, add_health_routes
from shared.metrics import METRICS_REGISTRY, metrics_handler


def setup_gateway(app: web.Application, settings: Settings) -> None:
    """Add the gateway's routes and resources to `app`."""
    setup_database(app, settings)
    app.setdefault(METRICS_REGISTRY, CollectorRegistry())
    app.setdefault(READINESS_CHECKS, {}).setdefault("database", database_ready_check(app))


def create_app(settings: Settings) -> web.Application:
    """The gateway alone (`python -m services.gateway`)."""
    app = web.Application()
    add_health_routes(app)
    app.router.add_get("/metrics", metrics_handler)
    setup_gateway(app, settings)
    return app

"""Composition of the gateway service: middlewares, resources, routes.

`setup_gateway(app, settings)` works on an app of its own (`create_app`,
`python -m services.gateway`) and on the embedded app shared with collab
(`services/embedded.py`). Middlewares (outermost first): request metrics,
JSON errors, JWT authentication (only `/api/` minus the public routes).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CollectorRegistry

from services.gateway import (
    assets,
    auth_routes,
    document_edits,
    documents,
    exe_assets,
    exe_chunks,
    exe_documents,
    exe_info,
    exe_sync,
    members,
    openapi,
    projects,
    tus,
    versions,
    webhooks,
)
from services.gateway.asset_store import AssetVolume
from services.gateway.assets import ASSET_VOLUME
from services.gateway.context import GATEWAY, GatewayContext
from services.gateway.documents import FALLBACK_DOCUMENTS
from services.gateway.errors import error_middleware
from services.gateway.metrics import GatewayMetrics, metrics_middleware
from services.gateway.security import jwt_middleware
from services.gateway.web import setup_web
from shared.access_db import database_access
from shared.config import Settings
from shared.db.resources import DATABASE, database_ready_check, setup_database
from shared.documents import StoreDocuments
from shared.health import READINESS_CHECKS
from shared.metrics import METRICS_REGISTRY
from shared.ratelimit import RateLimiter
from shared.service_app import service_app

# Bodies read whole (JSON) are small; uploads and imports are streamed with their own limits.
JSON_BODY_LIMIT = 1024 * 1024


def setup_gateway(app: web.Application, settings: Settings) -> None:
    """Add the gateway's routes, middlewares and resources to `app`."""
    setup_database(app, settings)
    registry = app.setdefault(METRICS_REGISTRY, CollectorRegistry())
    metrics = GatewayMetrics(registry)
    app[GATEWAY] = GatewayContext(
        settings=settings,
        metrics=metrics,
        login_by_address=RateLimiter(settings.login_rate_per_address, settings.login_rate_window),
        login_by_account=RateLimiter(settings.login_rate_per_account, settings.login_rate_window),
    )
    volume = AssetVolume(settings.files_dir)
    app[ASSET_VOLUME] = volume
    database_access(app, settings.access_cache_ttl)  # shared with a collab in the same app

    checks = app.setdefault(READINESS_CHECKS, {})
    checks.setdefault("database", database_ready_check(app))

    async def assets_volume_check() -> None:
        await asyncio.to_thread(volume.check_writable)

    checks.setdefault("assets_volume", assets_volume_check)

    app.middlewares.append(metrics_middleware(metrics))
    app.middlewares.append(error_middleware)
    app.middlewares.append(jwt_middleware(settings.jwt_secret, settings.forwarded_allow_ips))

    async def _gateway_ctx(app: web.Application) -> AsyncIterator[None]:
        redis = None
        if settings.multi_instance:
            from shared.envelope import instance_id_bytes
            from shared.redis_documents import RedisDocuments
            from shared.redis_log import create_redis

            redis = create_redis(settings)
            instance = instance_id_bytes(settings.instance_id or uuid.uuid4().hex)
            # multi-instance: imports go through the durable log and the room's channel
            app[FALLBACK_DOCUMENTS] = RedisDocuments(
                redis,
                app[DATABASE].store,
                instance,
                settings.max_document_bytes,
                settings.redis_layout,
            )

            async def redis_check() -> None:
                await redis.ping()

            checks.setdefault("redis", redis_check)
        else:
            app[FALLBACK_DOCUMENTS] = StoreDocuments(
                app[DATABASE].store, settings.max_document_bytes
            )
        yield
        if redis is not None:
            await redis.aclose()

    app.cleanup_ctx.append(_gateway_ctx)

    auth_routes.add_routes(app)
    projects.add_routes(app)
    members.add_routes(app)
    documents.add_routes(app)
    document_edits.add_routes(app)
    exe_documents.add_routes(app)
    exe_info.add_routes(app)
    versions.add_routes(app)
    webhooks.add_routes(app)
    # before assets: /assets/by-client-id/..., /assets/bulk, /assets/sync, /assets/upload-chunk
    # must win over /assets/{name}
    exe_assets.add_routes(app)
    exe_sync.add_routes(app)
    exe_chunks.add_routes(app)
    exe_assets.add_method_fallbacks(app)
    assets.add_routes(app)
    tus.add_routes(app)
    openapi.add_routes(app)
    setup_web(app, settings)  # the browser client at / (web/dist)


def create_app(settings: Settings) -> web.Application:
    """The gateway alone (`python -m services.gateway`)."""
    app = service_app(settings, client_max_size=JSON_BODY_LIMIT)
    setup_gateway(app, settings)
    return app

"""Composition of the collab service: database, backplane, rooms, routes."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CollectorRegistry

from services.collab.access_watch import run_access_watch
from services.collab.assets.coordinator import AssetCoordinator
from services.collab.assets.decisions import CoordinatorLimits
from services.collab.assets.redis_store import RedisStore
from services.collab.assets.store import CoordinatorStore, MemoryStore
from services.collab.backplane import Backplane, LocalBackplane
from services.collab.close_codes import CloseCode
from services.collab.connection_events import ConnectionEvents
from services.collab.handler import COLLAB, CollabContext, websocket_handler
from services.collab.heartbeat import run_heartbeat
from services.collab.limits import ConnectionLimits
from services.collab.metrics import CollabMetrics
from services.collab.redis_backplane import RedisBackplane
from services.collab.rooms import RoomDocuments, RoomManager
from services.collab.store_writer import StoreWriter
from services.collab.throttle import create_throttle
from shared.access import AccessPolicy
from shared.access_db import database_access
from shared.config import Settings
from shared.db.resources import DATABASE, Database, database_ready_check, setup_database
from shared.documents import DOCUMENTS
from shared.envelope import instance_id_bytes
from shared.health import READINESS_CHECKS
from shared.metrics import METRICS_REGISTRY
from shared.redis_log import create_redis
from shared.service_app import service_app
from shared.tasks import TaskOwner

log = logging.getLogger(__name__)


def create_backplane(
    settings: Settings, database: Database, metrics: CollabMetrics, instance_id: str
) -> Backplane:
    """Single-instance mode without Redis, multi-instance mode with it."""
    if settings.multi_instance:
        return RedisBackplane(
            create_redis(settings),
            database.store,
            metrics,
            instance_id_bytes(instance_id),
            backlog_limit=settings.redis_backlog,
            presence_interval=settings.presence_interval,
            presence_ttl=settings.presence_ttl,
            layout=settings.redis_layout,
        )
    writer = StoreWriter(
        database.store,
        settings.compaction_policy,
        metrics,
        interval=settings.store_flush_interval,
        idle_compact_seconds=settings.compact_idle_seconds,
    )
    return LocalBackplane(database.store, writer)


def create_coordinator(
    settings: Settings, database: Database, instance_id: str, tasks: TaskOwner
) -> AssetCoordinator:
    """The asset coordinator, its state in memory (single instance) or in Redis (multi-instance)."""
    limits = CoordinatorLimits()
    store: CoordinatorStore
    if settings.multi_instance:
        store = RedisStore(
            create_redis(settings),
            instance_id_bytes(instance_id).hex(),
            limits,
            tasks,
            settings.redis_layout,
        )
    else:
        store = MemoryStore(limits)
    return AssetCoordinator(
        store,
        database.sessionmaker,
        settings.jwt_secret,
        limits,
        sweep_interval=settings.presence_interval,
    )


def setup_collab(
    app: web.Application, settings: Settings, *, access: AccessPolicy | None = None
) -> None:
    """Add the collab endpoint and its resources to `app`.

    `access` defaults to project membership in the app's database
    (`DatabaseAccess`, shared with a gateway mounted in the same app).
    """
    setup_database(app, settings)
    policy: AccessPolicy = (
        access if access is not None else database_access(app, settings.access_cache_ttl)
    )
    registry = app.setdefault(METRICS_REGISTRY, CollectorRegistry())
    metrics = CollabMetrics(registry)
    instance_id = settings.instance_id or uuid.uuid4().hex
    checks = app.setdefault(READINESS_CHECKS, {})
    checks.setdefault("database", database_ready_check(app))

    async def _collab_ctx(app: web.Application) -> AsyncIterator[None]:
        backplane = create_backplane(settings, app[DATABASE], metrics, instance_id)
        tasks = TaskOwner("collab")
        rooms = RoomManager(
            backplane,
            metrics,
            tasks=tasks,
            unload_grace=settings.room_unload_grace,
            relay_unknown_frames=settings.relay_unknown_frames,
            max_document_bytes=settings.max_document_bytes,
            awareness_limits=settings.awareness_limits,
        )
        checks.update(backplane.readiness_checks())
        await backplane.start(rooms)
        assets = create_coordinator(settings, app[DATABASE], instance_id, tasks)
        await assets.start()
        throttle = create_throttle(settings, metrics)
        app[COLLAB] = CollabContext(
            settings=settings,
            rooms=rooms,
            access=policy,
            metrics=metrics,
            instance_id=instance_id,
            limits=ConnectionLimits(
                settings.max_connections_per_user, settings.max_connections_per_address
            ),
            throttle=throttle,
            tasks=tasks,
            assets=assets,
            connection_events=ConnectionEvents(
                app[DATABASE].sessionmaker,
                settings.global_webhooks,
                instance_id,
                tasks,
                metrics,
            ),
        )
        app[DOCUMENTS] = RoomDocuments(rooms, backplane)
        tasks.spawn_loop(
            run_heartbeat(
                rooms.connections,
                ping_interval=settings.ping_interval,
                pong_timeout=settings.pong_timeout,
            ),
            name="heartbeat",
        )
        tasks.spawn_loop(
            run_access_watch(rooms, policy, interval=max(0.2, settings.access_cache_ttl)),
            name="access-watch",
        )
        tasks.spawn_loop(assets.run_sweeps(), name="asset-sweeps")
        log.info(
            "collab ready",
            extra={
                "instance": instance_id,
                "mode": "multi" if settings.multi_instance else "single",
            },
        )
        yield
        await rooms.close(CloseCode.GOING_AWAY, "server shutting down")
        await backplane.stop()
        await tasks.close()
        await assets.stop()
        await throttle.close()

    async def _close_sockets(app: web.Application) -> None:
        # on_shutdown runs before aiohttp waits for handlers: close sockets first.
        await app[COLLAB].rooms.close(CloseCode.GOING_AWAY, "server shutting down")

    app.cleanup_ctx.append(_collab_ctx)
    app.on_shutdown.append(_close_sockets)
    app.router.add_get("/yjs/{room}", websocket_handler)


def create_app(settings: Settings, *, access: AccessPolicy | None = None) -> web.Application:
    """The collab service alone (`python -m services.collab`)."""
    app = service_app(settings)
    setup_collab(app, settings, access=access)
    return app

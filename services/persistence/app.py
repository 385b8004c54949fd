"""Composition of the persistence worker: the worker loop plus health and metrics routes."""

from __future__ import annotations

import logging
import socket
import uuid
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CollectorRegistry

from services.persistence.metrics import WorkerMetrics
from services.persistence.worker import PersistenceWorker
from shared.config import ConfigError, Settings
from shared.db.resources import DATABASE, database_ready_check, setup_database
from shared.health import READINESS_CHECKS
from shared.metrics import METRICS_REGISTRY
from shared.redis_log import create_redis
from shared.runner import run_service
from shared.service_app import service_app
from shared.webhooks.dispatcher import setup_dispatcher

log = logging.getLogger(__name__)

#: A worker that has not completed a pass for this long is not ready (a pass blocks 1 s at most when idle).
STALLED_SECONDS = 30.0

WORKER: web.AppKey[PersistenceWorker] = web.AppKey("worker", PersistenceWorker)


def create_app(settings: Settings) -> web.Application:
    """The worker as an aiohttp app (its HTTP side is health and metrics only)."""
    if not settings.multi_instance:
        raise ConfigError(
            "the persistence worker needs REDIS_HOST (in single-instance mode the collab "
            "process persists updates itself)"
        )
    app = service_app(settings)
    setup_database(app, settings)
    registry = app.setdefault(METRICS_REGISTRY, CollectorRegistry())
    metrics = WorkerMetrics(registry)
    redis = create_redis(settings)
    consumer = settings.instance_id or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"

    async def redis_check() -> None:
        await redis.ping()

    checks = app.setdefault(READINESS_CHECKS, {})
    checks["database"] = database_ready_check(app)
    checks["redis"] = redis_check

    async def queue_check() -> None:
        stalled = app[WORKER].stalled_for()
        if stalled > STALLED_SECONDS:
            raise RuntimeError(f"no pass over the work queue for {stalled:.0f} s")

    checks["queue"] = queue_check

    async def _worker_ctx(app: web.Application) -> AsyncIterator[None]:
        worker = PersistenceWorker(
            redis,
            app[DATABASE].store,
            settings.compaction_policy,
            metrics,
            consumer,
            idle_compact_seconds=settings.compact_idle_seconds,
            batch_seconds=settings.persist_batch_seconds,
            layout=settings.redis_layout,
        )
        app[WORKER] = worker
        await worker.start()
        log.info("persistence worker ready", extra={"consumer": consumer})
        yield
        await worker.stop()
        await redis.aclose()

    app.cleanup_ctx.append(_worker_ctx)
    setup_dispatcher(app, settings, consumer)
    return app


def run() -> None:
    """`python -m services.persistence`."""
    run_service("persistence", create_app)

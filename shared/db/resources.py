"""The database as an aiohttp resource: engine, session factory and document store."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.config import Settings
from shared.db.checks import database_check
from shared.db.engine import create_engine, create_sessionmaker, upgrade
from shared.health import READINESS_CHECKS
from shared.store import DocumentStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Database:
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    store: DocumentStore


DATABASE: web.AppKey[Database] = web.AppKey("database", Database)


def setup_database(app: web.Application, settings: Settings) -> None:
    """Open the database for the app's lifetime (once, however many services share the app)."""
    if any(getattr(ctx, "__name__", "") == "_database_ctx" for ctx in app.cleanup_ctx):
        return

    async def _database_ctx(app: web.Application) -> AsyncIterator[None]:
        if settings.run_migrations:
            log.info("running migrations")
            await upgrade(settings.database_url)
        engine = create_engine(settings.database_url)
        sessionmaker = create_sessionmaker(engine)
        app[DATABASE] = Database(
            engine, sessionmaker, DocumentStore(sessionmaker, settings.global_webhooks)
        )
        yield
        await engine.dispose()

    app.cleanup_ctx.append(_database_ctx)
    app.setdefault(READINESS_CHECKS, {})


def database_ready_check(app: web.Application):  # type: ignore[no-untyped-def]
    """A readiness check bound to the app's database once it exists."""

    async def check() -> None:
        await database_check(app[DATABASE].engine)()

    return check

"""Running a service process: settings, JSON logs, signals, clear start-up errors."""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import Callable

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from shared.config import ConfigError, Settings
from shared.logs import setup_logging

log = logging.getLogger(__name__)


class AccessLogger(AbstractAccessLogger):
    """One JSON line per request; the query string is left out (it may hold a token)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            "request",
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status,
                "duration_ms": round(time * 1000, 2),
                "remote": request.remote,
            },
        )


def load_settings_or_exit(service: str) -> Settings:
    """Settings from the environment; on a bad configuration, say why and exit 2."""
    setup_logging(service)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        log.critical("bad configuration: %s", exc)
        print(f"{service}: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    logging.getLogger().setLevel(settings.log_level)
    return settings


async def _freeze_startup_objects(_app: web.Application) -> None:
    """Exclude what start-up built (modules, ORM metadata, pools) from the
    cyclic GC's scans: full collections then only walk per-request garbage."""
    gc.collect()
    gc.freeze()


def run_service(service: str, build_app: Callable[[Settings], web.Application]) -> None:
    """Build the app from the environment and serve it until SIGTERM/SIGINT."""
    settings = load_settings_or_exit(service)
    try:
        import uvloop  # optional: faster event loop where installed

        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    try:
        app = build_app(settings)
    except ConfigError as exc:
        log.critical("bad configuration: %s", exc)
        print(f"{service}: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    app.on_startup.append(_freeze_startup_objects)
    log.info("starting %s on %s:%s", service, settings.host, settings.port)
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        access_log_class=AccessLogger,
        print=None,
        shutdown_timeout=10.0,
        handle_signals=True,
        loop=loop_factory() if loop_factory else None,
    )

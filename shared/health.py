"""Liveness and readiness routes shared by every service.

`/healthcheck` answers without touching any dependency. `/health/ready` runs
every registered check (database, Redis, assets volume...) with a timeout and
answers 503 naming the parts that failed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

ReadinessCheck = Callable[[], Awaitable[None]]
READINESS_CHECKS: web.AppKey[dict[str, ReadinessCheck]] = web.AppKey("readiness_checks", dict)

CHECK_TIMEOUT = 3.0


async def healthcheck(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _run_check(check: ReadinessCheck) -> str | None:
    try:
        await asyncio.wait_for(check(), CHECK_TIMEOUT)
    except Exception as exc:  # any failure means "not ready"; the reason is reported  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}"[:300]
    return None


async def readiness(request: web.Request) -> web.Response:
    checks = request.app.get(READINESS_CHECKS, {})
    names = list(checks)
    results = await asyncio.gather(*(_run_check(checks[name]) for name in names))
    failures = {name: error for name, error in zip(names, results) if error is not None}
    body: dict[str, Any] = {
        "status": "ok" if not failures else "unavailable",
        "checks": {name: failures.get(name, "ok") for name in names},
    }
    if failures:
        body["failing"] = sorted(failures)
    return web.json_response(body, status=503 if failures else 200)


def add_health_routes(app: web.Application) -> None:
    """Register /healthcheck and /health/ready; checks go in `app[READINESS_CHECKS]`."""
    app.setdefault(READINESS_CHECKS, {})
    app.router.add_get("/healthcheck", healthcheck)
    app.router.add_get("/health/ready", readiness)

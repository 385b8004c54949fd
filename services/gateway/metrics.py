"""The gateway's Prometheus metrics and the middleware that counts requests."""

from __future__ import annotations

import time

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "gateway_http_requests_total",
            "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "gateway_http_request_seconds",
            "HTTP request duration, by route template",
            ["route"],
            registry=registry,
        )
        self.logins = Counter(
            "gateway_logins_total", "Login attempts, by outcome", ["outcome"], registry=registry
        )
        self.asset_bytes = Counter(
            "gateway_asset_bytes_stored_total", "Bytes of assets stored", registry=registry
        )
        self.imports = Counter(
            "gateway_document_imports_total", "Yjs updates imported over HTTP", registry=registry
        )


def metrics_middleware(metrics: GatewayMetrics):  # type: ignore[no-untyped-def]
    @web.middleware
    async def middleware(request: web.Request, handler):  # type: ignore[no-untyped-def]
        if not request.path.startswith("/api/"):
            return await handler(request)
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            metrics.requests.labels(route, request.method, str(status)).inc()
            metrics.latency.labels(route).observe(time.perf_counter() - started)

    return middleware

"""The aiohttp application every service starts from (`service_app`).

- `/healthcheck`, `/health/ready` (`shared/health.py`) and `/metrics`
  (`shared/metrics.py`, behind `METRICS_TOKEN`).
- `Server: exe-collab` on every response, without aiohttp's and Python's versions.
- Errors aiohttp answers by itself, before any middleware (a request line or
  header it cannot parse, a failure outside every handler), are JSON like
  every other error, quote nothing of the request (aiohttp's own answer, and
  its log line, echoed the offending header: `Authorization: Bearer <token>`
  included) and are logged in one line naming only the error's class.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from shared.config import Settings
from shared.health import add_health_routes
from shared.http_errors import json_error
from shared.metrics import add_metrics_route

log = logging.getLogger(__name__)

SERVER_HEADER = "exe-collab"


def _handle_error(
    handler: RequestHandler,
    request: web.BaseRequest,
    status: int = 500,
    exc: BaseException | None = None,
    message: str | None = None,
) -> web.StreamResponse:
    """`RequestHandler.handle_error`, for every app in the process: aiohttp has no hook for
    the errors it answers itself (aio-libs/aiohttp#3287), and its method signature is stable."""
    if request.writer.output_size > 0:  # as aiohttp does: the answer has begun already
        raise ConnectionError("response already started: cannot send an error")
    if isinstance(exc, HttpProcessingError):
        # its message quotes the raw request line or header: never log or return it
        log.info("malformed request from %s: %s", request.remote, type(exc).__name__)
        response = json_error(
            status, "bad_request", f"malformed HTTP request ({type(exc).__name__})"
        )
    else:
        if exc is not None:
            log.error("unhandled error", exc_info=exc)
        response = json_error(status, "internal_error", "internal server error")
    response.headers[hdrs.SERVER] = SERVER_HEADER  # no on_response_prepare for these
    response.force_close()
    return response


async def _server_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers[hdrs.SERVER] = SERVER_HEADER


def service_app(settings: Settings, **kwargs: Any) -> web.Application:
    """A new app with the routes and behaviour every service shares; `kwargs` go to aiohttp."""
    RequestHandler.handle_error = _handle_error  # type: ignore[method-assign,assignment]
    app = web.Application(**kwargs)
    app.on_response_prepare.append(_server_header)
    add_health_routes(app)
    add_metrics_route(app, settings)
    return app

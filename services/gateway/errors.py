"""Every gateway error is JSON: `{"error": {"code": "...", "message": "..."}}`.

Handlers raise `ApiError` (or one of the helpers below); `error_middleware`
turns it, aiohttp's own HTTP exceptions (404 from the router, 405, 413 from
the body-size limit, the JWT middleware's 401...) and any unexpected
exception into that shape with the right status. Unexpected exceptions are
logged once with their traceback, server-side only; the client gets a
generic 500 and never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from shared.http_errors import json_error

log = logging.getLogger(__name__)

# Paths whose handlers own their error channel (WebSocket close codes).
_PASSTHROUGH_PREFIXES = ("/yjs/",)

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    410: "gone",
    411: "length_required",
    412: "precondition_failed",
    413: "too_large",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    422: "unprocessable",
    423: "locked",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}

_MESSAGES = {
    401: "authentication required: a valid bearer token is missing, invalid or expired",
    404: "not found",
    405: "method not allowed",
    413: "request body too large",
}


class ApiError(Exception):
    """An error answered as JSON with `status`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or _CODES.get(status, "error")
        self.message = message
        self.headers = dict(headers or {})


def bad_request(message: str, code: str = "bad_request") -> ApiError:
    return ApiError(400, message, code=code)


def unauthorized(message: str = _MESSAGES[401]) -> ApiError:
    return ApiError(401, message, headers={"WWW-Authenticate": 'Bearer realm="exe-collab"'})


def forbidden(message: str = "you do not have access to this project") -> ApiError:
    return ApiError(403, message)


def not_found(message: str = "not found") -> ApiError:
    return ApiError(404, message)


def conflict(message: str) -> ApiError:
    return ApiError(409, message)


def too_large(message: str) -> ApiError:
    return ApiError(413, message)


def _from_http_exception(exc: web.HTTPException) -> web.Response:
    status = exc.status
    message = _MESSAGES.get(status) or (exc.reason or "error")
    headers = {
        k: v
        for k, v in exc.headers.items()
        if k.lower() in ("allow", "retry-after", "www-authenticate", "location")
    }
    if status == 401:
        headers.setdefault("WWW-Authenticate", 'Bearer realm="exe-collab"')
    return json_error(status, _CODES.get(status, "error"), message, headers)


@web.middleware
async def error_middleware(request: web.Request, handler):  # type: ignore[no-untyped-def]
    if request.path.startswith(_PASSTHROUGH_PREFIXES):
        return await handler(request)
    try:
        return await handler(request)
    except ApiError as exc:
        return json_error(exc.status, exc.code, exc.message, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects and 2xx/3xx raised as exceptions keep aiohttp's behaviour
        return _from_http_exception(exc)
    except asyncio.CancelledError:
        raise
    except (ConnectionError, HttpProcessingError) as exc:
        # The client went away or sent a broken body (e.g. shorter than its
        # Content-Length): an answer nobody may read, and nothing to log loudly.
        log.info(
            "request body aborted: %s", exc, extra={"method": request.method, "path": request.path}
        )
        return json_error(400, "bad_request", "the request body was incomplete or malformed")
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException:  # Exception, and a Rust panic (pyo3's PanicException) missed elsewhere
        log.exception("unhandled error", extra={"method": request.method, "path": request.path})
        return json_error(500, "internal_error", "internal server error")

"""`GET /api/openapi.json`: the OpenAPI 3.1 description of the gateway's HTTP API, built
from the routes the app declares (services/gateway/schema.py) and checked against the live
gateway by schemathesis in the test suite.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from services.gateway.schema import (
    JSON,
    OPERATIONS,
    PUBLIC,
    Binary,
    Multipart,
    Operation,
    Reply,
    ReplyBody,
    Routes,
)
from services.gateway.schema import (
    add_routes as add_declared_routes,
)

_ERROR_DESCRIPTIONS = {
    400: "Bad input",
    401: "Missing, invalid or expired token",
    403: "No access to this project, or role too low; `cross_site`: the auth cookie on a request from another origin",
    404: "No such project (or it is deleted), or no such item",
    405: "Method not allowed",
    409: "Conflict",
    412: "Unsupported Tus-Resumable version",
    413: "Too large",
    415: "Unsupported media type",
    416: "Range not satisfiable",
    423: "Another request is writing this upload",
    429: "Too many attempts, or too many unfinished uploads",
    503: "A dependency is down",
}


_REF = "#/components/schemas/{model}"


class ErrorDetail(ReplyBody):
    code: str
    message: str


class Error(ReplyBody):
    """Every error answer: `{"error": {"code", "message"}}`."""

    error: ErrorDetail


class Health(ReplyBody):
    status: str
    checks: dict[str, str] | None = None
    failing: list[str] | None = None


def _schema_of(model: type[BaseModel]) -> dict[str, Any]:
    return {"$ref": _REF.format(model=model.__name__)}


def _parameters(model: type[BaseModel], where: str) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=_REF)
    required = set(schema.get("required", ()))
    parameters = []
    for name, prop in schema.get("properties", {}).items():
        prop = {k: v for k, v in prop.items() if k not in ("title", "default")}
        parameter: dict[str, Any] = {
            "name": name,
            "in": where,
            "required": where == "path" or name in required,
        }
        if "description" in prop:
            parameter["description"] = prop.pop("description")
        parameter["schema"] = prop
        parameters.append(parameter)
    return parameters


def _content(reply: Reply) -> dict[str, Any]:
    if reply.model is not None:
        return {JSON: {"schema": _schema_of(reply.model)}}
    kinds = [reply.content] if isinstance(reply.content, str) else list(reply.content or ())
    binary = {"schema": {"type": "string", "format": "binary"}}
    return {
        kind: {}
        if kind.startswith("text/")
        else {"schema": {"type": "object"}}
        if kind == JSON
        else binary
        for kind in kinds
    }


def _response(reply: Reply) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": reply.description}
    content = _content(reply)
    if content:
        answer["content"] = content
    if reply.headers:
        answer["headers"] = {
            name: {"description": text, "schema": {"type": "string"}}
            for name, text in reply.headers.items()
        }
    return answer


def _request_body(body: Any) -> dict[str, Any]:
    if isinstance(body, Binary):
        schema: dict[str, Any] = {"type": "string", "format": "binary"}
        described = {"required": body.required, "content": {body.content_type: {"schema": schema}}}
        if body.description:
            described["description"] = body.description
        return described
    if isinstance(body, Multipart):
        return {
            "required": body.required,
            "content": {"multipart/form-data": {"schema": _schema_of(body.model)}},
        }
    return {"required": True, "content": {JSON: {"schema": _schema_of(body)}}}


def _operation(op: Operation) -> dict[str, Any]:
    described: dict[str, Any] = {"summary": op.summary}
    if op.tags:
        described["tags"] = list(op.tags)
    parameters = list(op.headers)
    if op.path_params is not None:
        parameters = _parameters(op.path_params, "path") + parameters
    if op.query is not None:
        parameters += _parameters(op.query, "query")
    if parameters:
        described["parameters"] = parameters
    if op.body is not None:
        described["requestBody"] = _request_body(op.body)
    responses = {str(status): _response(reply) for status, reply in op.replies.items()}
    error = {"content": {JSON: {"schema": _schema_of(Error)}}}
    for status in op.errors:
        responses.setdefault(str(status), {"description": _ERROR_DESCRIPTIONS[status], **error})
    described["responses"] = responses
    if op.security is not None:
        described["security"] = [dict(requirement) for requirement in op.security]
    return described


def _models(operations: Sequence[Operation]) -> list[tuple[type[BaseModel], JsonSchemaMode]]:
    found: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {(Error, "serialization"): None}
    for op in operations:
        if isinstance(op.body, type):
            found[(op.body, "validation")] = None
        elif isinstance(op.body, Multipart):
            found[(op.body.model, "validation")] = None
        for reply in op.replies.values():
            if reply.model is not None:
                found[(reply.model, "serialization")] = None
    return list(found)


def build_spec(operations: list[Operation]) -> dict[str, Any]:
    """The OpenAPI document of `operations` (what an app records, see `schema.add_routes`)."""
    _, definitions = models_json_schema(_models(operations), ref_template=_REF)
    paths: dict[str, Any] = {}
    for op in operations:
        paths.setdefault(op.document_path, {})[op.method.lower()] = _operation(op)
    schemas = definitions.get("$defs", {})
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "exe-collab gateway",
            "version": "1.0.0",
            "description": (
                "Accounts, projects, membership, Yjs documents, versions and assets. "
                "Errors are JSON {error: {code, message}}. Authenticate with "
                "'Authorization: Bearer <token>' (or '?token=' where headers cannot be set, or the "
                "'auth' cookie login sets; unsafe requests with only the cookie must come from this origin). "
                "Live editing is the y-websocket protocol on /yjs/project-{uuid}."
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}, {"tokenQuery": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "tokenQuery": {"type": "apiKey", "in": "query", "name": "token"},
                "authCookie": {"type": "apiKey", "in": "cookie", "name": "auth"},
            },
        },
    }


SPEC: web.AppKey[dict[str, Any]] = web.AppKey("openapi_spec", dict)

routes = Routes(tags=["operations"])
routes.describe(
    "GET",
    "/healthcheck",
    "Liveness (no dependencies)",
    replies={200: Reply("Alive", Health)},
    security=PUBLIC,
)
routes.describe(
    "GET",
    "/health/ready",
    "Readiness: database, Redis (multi-instance), assets volume",
    replies={
        200: Reply("Ready", Health),
        503: Reply("A dependency is down (named in 'failing')", Health),
    },
    security=PUBLIC,
)
routes.describe(
    "GET",
    "/metrics",
    "Prometheus metrics",
    replies={200: Reply("Prometheus text format", content="text/plain")},
    security=PUBLIC,
)


@routes.get(
    "/api/openapi.json",
    "This document",
    replies={200: Reply("OpenAPI 3.1", content=JSON)},
    security=PUBLIC,
)
async def openapi_json(request: web.Request) -> web.Response:
    spec = request.app[SPEC]
    if not spec:  # built on the first request, when every route is recorded
        spec.update(build_spec(request.app[OPERATIONS]))
    return web.json_response(spec)


def add_routes(app: web.Application) -> None:
    app[SPEC] = {}
    add_declared_routes(app, routes)

"""`GET /api/openapi.json`: the OpenAPI 3.1 description of the gateway's HTTP API, built
from the routes the app declares (services/gateway/schema.py) and checked against the live
gateway by schemathesis in the test suite.

`LEGACY_PATHS` and `LEGACY_SCHEMAS` describe the routes not yet declared on the schema layer;
they are merged in until the last of them moves.
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
from services.gateway.web import OPENAPI_PATHS as WEB_CLIENT_PATHS

BINARY = "application/octet-stream"

_NULLABLE_DATE = {"type": "string", "format": "date-time", "nullable": True}

LEGACY_SCHEMAS: dict[str, Any] = {
    "User": {
        "type": "object",
        "required": ["id", "email", "name", "roles", "created_at"],
        "properties": {
            "id": {"type": "integer"},
            "email": {"type": "string"},
            "name": {"type": "string"},
            "roles": {"type": "array", "items": {"type": "string"}},
            "created_at": _NULLABLE_DATE,
        },
    },
    "Registration": {
        "type": "object",
        "required": ["email", "password"],
        "properties": {
            "email": {"type": "string", "format": "email", "maxLength": 320},
            "password": {"type": "string", "minLength": 8, "maxLength": 1024},
            "name": {"type": "string", "maxLength": 200},
            "roles": {"type": "array", "items": {"type": "string", "enum": ["admin"]}},
        },
    },
    "Credentials": {
        "type": "object",
        "required": ["email", "password"],
        "properties": {
            "email": {"type": "string", "maxLength": 320},
            "password": {"type": "string", "maxLength": 1024},
        },
    },
    "Login": {
        "type": "object",
        "required": ["token", "access_token", "expires_at", "user"],
        "properties": {
            "token": {"type": "string", "description": "HS256 JWT: sub, email, roles, iat, exp"},
            "access_token": {
                "type": "string",
                "description": "the same token (eXeLearning's name)",
            },
            "expires_at": {"type": "integer", "description": "Unix time"},
            "user": {"$ref": "#/components/schemas/User"},
        },
    },
    "Role": {"type": "string", "enum": ["owner", "editor", "viewer"]},
    "Member": {
        "type": "object",
        "required": ["user_id", "email", "name", "role"],
        "properties": {
            "user_id": {"type": "integer"},
            "email": {"type": "string"},
            "name": {"type": "string"},
            "role": {"$ref": "#/components/schemas/Role"},
        },
    },
    "MemberList": {
        "type": "object",
        "required": ["members"],
        "properties": {
            "members": {"type": "array", "items": {"$ref": "#/components/schemas/Member"}}
        },
    },
    "MemberRole": {
        "type": "object",
        "required": ["role"],
        "properties": {"role": {"$ref": "#/components/schemas/Role"}},
    },
    "ImportResult": {
        "type": "object",
        "required": ["applied", "bytes"],
        "properties": {"applied": {"type": "boolean"}, "bytes": {"type": "integer"}},
    },
    "ExeSaveResult": {
        "type": "object",
        "required": ["success", "message", "version", "markedAsSaved"],
        "properties": {
            "success": {"type": "boolean"},
            "message": {"type": "string"},
            "version": {
                "type": "string",
                "description": "the save's time, milliseconds since the epoch",
            },
            "markedAsSaved": {"type": "boolean"},
        },
    },
    "ExeMetadataResult": {
        "type": "object",
        "required": ["success", "projectId", "title", "message"],
        "properties": {
            "success": {"type": "boolean"},
            "projectId": {"type": "string", "format": "uuid"},
            "title": {"type": "string"},
            "message": {"type": "string"},
        },
    },
    "Message": {
        "type": "object",
        "required": ["message"],
        "properties": {"message": {"type": "string"}},
    },
    "Version": {
        "type": "object",
        "required": ["id", "label", "created_by", "created_at", "size"],
        "properties": {
            "id": {"type": "integer"},
            "label": {"type": "string"},
            "created_by": {"type": "integer", "nullable": True},
            "created_at": _NULLABLE_DATE,
            "size": {"type": "integer"},
        },
    },
    "VersionList": {
        "type": "object",
        "required": ["versions"],
        "properties": {
            "versions": {"type": "array", "items": {"$ref": "#/components/schemas/Version"}}
        },
    },
    "NewVersion": {
        "type": "object",
        "properties": {"label": {"type": "string", "maxLength": 200}},
    },
    "RestoreResult": {
        "type": "object",
        "required": ["restored", "update_bytes"],
        "properties": {"restored": {"type": "integer"}, "update_bytes": {"type": "integer"}},
    },
    "Asset": {
        "type": "object",
        "required": ["name", "size", "sha256", "content_type", "created_at"],
        "properties": {
            "name": {"type": "string"},
            "size": {"type": "integer"},
            "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            "content_type": {"type": "string"},
            "created_at": _NULLABLE_DATE,
        },
    },
    "AssetList": {
        "type": "object",
        "required": ["assets", "success", "data"],
        "properties": {
            "assets": {"type": "array", "items": {"$ref": "#/components/schemas/Asset"}},
            "success": {"type": "boolean"},
            # eXeLearning's list (services/gateway/exe_models.py)
            "data": {"type": "array", "items": {"$ref": "#/components/schemas/ExeAsset"}},
        },
    },
}

_MESSAGES = {
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


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(status_description: str, schema: str) -> dict[str, Any]:
    return {"description": status_description, "content": {JSON: {"schema": _ref(schema)}}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(status): _json(_MESSAGES[status], "Error") for status in statuses}


def _binary(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {BINARY: {"schema": {"type": "string", "format": "binary"}}},
    }


def _body(schema: str, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {JSON: {"schema": _ref(schema)}}}


_UUID = {
    "name": "uuid",
    "in": "path",
    "required": True,
    "description": "The project's uuid",
    "schema": {"type": "string", "format": "uuid"},
}
_EMAIL = {
    "name": "email",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "format": "email"},
}
_VERSION = {
    "name": "version_id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1},
}
_ASSET = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}
_UPLOAD = {
    "name": "upload_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
}
_TUS = {
    "name": "Tus-Resumable",
    "in": "header",
    "required": True,
    "schema": {"type": "string", "enum": ["1.0.0"]},
}
_TUS_HEADERS = {
    "Tus-Resumable": {"schema": {"type": "string"}},
}
_PROJECT_ERRORS = (400, 401, 403, 404)


def _op(summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"summary": summary, "responses": responses, **extra}


LEGACY_PATHS: dict[str, Any] = {
    "/api/auth/register": {
        "post": _op(
            "Create an account (open when AUTH_CREATE_USERS=1, otherwise admins only)",
            {"201": _json("Created", "User"), **_errors(400, 401, 403, 409, 413, 429)},
            requestBody=_body("Registration"),
            security=[{}, {"bearerAuth": []}],
            tags=["accounts"],
        )
    },
    "/api/auth/login": {
        "post": _op(
            "Exchange email and password for a token (rate-limited per address and account)",
            {"200": _json("Logged in", "Login"), **_errors(400, 401, 413, 429)},
            requestBody=_body("Credentials"),
            security=PUBLIC,
            tags=["accounts"],
        )
    },
    "/api/auth/logout": {
        "post": _op(
            "Clear the auth cookie (tokens stay valid until their exp)",
            {"200": _json("Logged out", "Message")},
            security=PUBLIC,
            tags=["accounts"],
        )
    },
    "/api/projects/uuid/{uuid}/yjs-document": {
        "parameters": [_UUID],
        "get": _op(
            "eXeLearning's load (viewer+): the whole live document as one Yjs update; 404 `not_saved` "
            "while it is empty",
            {"200": _binary("A Yjs v1 update"), **_errors(*_PROJECT_ERRORS)},
            tags=["exelearning"],
        ),
        "post": _op(
            "eXeLearning's save (editor+): a full-state Yjs update merged into the live document like an "
            "import; X-Project-Title renames, markSaved=true sets saved_at. With only the auth cookie "
            "(sendBeacon), accepted from this origin only (403 `cross_site`)",
            {"200": _json("Saved", "ExeSaveResult"), **_errors(*_PROJECT_ERRORS, 413)},
            parameters=[
                {
                    "name": "markSaved",
                    "in": "query",
                    "schema": {"type": "string", "enum": ["true", "false"]},
                },
                {
                    "name": "X-Project-Title",
                    "in": "header",
                    "description": "the new title, URI-encoded UTF-8",
                    "schema": {"type": "string", "maxLength": 1500},
                },
            ],
            requestBody={
                "required": False,
                "content": {BINARY: {"schema": {"type": "string", "format": "binary"}}},
            },
            security=[{"bearerAuth": []}, {"tokenQuery": []}, {"authCookie": []}],
            tags=["exelearning"],
        ),
    },
    "/api/projects/uuid/{uuid}/metadata": {
        "parameters": [_UUID],
        "patch": _op(
            "eXeLearning's rename (editor+)",
            {"200": _json("Renamed", "ExeMetadataResult"), **_errors(*_PROJECT_ERRORS, 413)},
            requestBody=_body("ProjectChange"),
            tags=["exelearning"],
        ),
    },
    "/api/me": {
        "get": _op(
            "The caller's account",
            {"200": _json("The caller", "User"), **_errors(401)},
            tags=["accounts"],
        )
    },
    "/api/projects/{uuid}/members": {
        "parameters": [_UUID],
        "get": _op(
            "Members and roles (viewer+)",
            {"200": _json("Members", "MemberList"), **_errors(*_PROJECT_ERRORS)},
            tags=["members"],
        ),
    },
    "/api/projects/{uuid}/members/{email}": {
        "parameters": [_UUID, _EMAIL],
        "put": _op(
            "Add a member or change their role (owner)",
            {
                "200": _json("Role changed", "Member"),
                "201": _json("Member added", "Member"),
                **_errors(*_PROJECT_ERRORS, 409, 413),
            },
            requestBody=_body("MemberRole"),
            tags=["members"],
        ),
        "delete": _op(
            "Remove a member (owner; any member may remove themselves); their connections close",
            {"204": {"description": "Removed"}, **_errors(*_PROJECT_ERRORS, 409)},
            tags=["members"],
        ),
    },
    "/api/projects/{uuid}/yjs-document": {
        "parameters": [_UUID],
        "get": _op(
            "The whole current document as one Yjs update (viewer+), including edits not yet stored",
            {"200": _binary("A Yjs v1 update"), **_errors(*_PROJECT_ERRORS)},
            tags=["documents"],
        ),
        "post": _op(
            "Import a Yjs update (editor+), applied to the live document; connected clients receive it. "
            "400 `invalid_update` when it cannot be applied to the current document",
            {"200": _json("Applied", "ImportResult"), **_errors(*_PROJECT_ERRORS, 413)},
            requestBody={
                "required": True,
                "content": {BINARY: {"schema": {"type": "string", "format": "binary"}}},
            },
            tags=["documents"],
        ),
    },
    "/api/projects/{uuid}/versions": {
        "parameters": [_UUID],
        "get": _op(
            "Version history (viewer+)",
            {"200": _json("Versions", "VersionList"), **_errors(*_PROJECT_ERRORS)},
            tags=["versions"],
        ),
        "post": _op(
            "Snapshot the current document as a named version (editor+)",
            {"201": _json("Created", "Version"), **_errors(*_PROJECT_ERRORS, 413)},
            requestBody=_body("NewVersion"),
            tags=["versions"],
        ),
    },
    "/api/projects/{uuid}/versions/{version_id}": {
        "parameters": [_UUID, _VERSION],
        "get": _op(
            "A version's content as one Yjs update (viewer+)",
            {"200": _binary("A Yjs v1 update"), **_errors(*_PROJECT_ERRORS)},
            tags=["versions"],
        ),
    },
    "/api/projects/{uuid}/versions/{version_id}/restore": {
        "parameters": [_UUID, _VERSION],
        "post": _op(
            "Restore a version (editor+): one new update makes the document equal to it",
            {"200": _json("Restored", "RestoreResult"), **_errors(*_PROJECT_ERRORS)},
            tags=["versions"],
        ),
    },
    "/api/projects/{uuid}/assets": {
        "parameters": [_UUID],
        "get": _op(
            "The project's assets (viewer+)",
            {"200": _json("Assets", "AssetList"), **_errors(*_PROJECT_ERRORS)},
            tags=["assets"],
        ),
    },
    "/api/projects/{uuid}/assets/{name}": {
        "parameters": [_UUID, _ASSET],
        "get": _op(
            "Download (viewer+); supports Range, If-Range, ETag and conditional requests",
            {
                "200": {
                    "description": "The file, with its stored content type",
                    "headers": {"ETag": {"schema": {"type": "string"}}},
                    "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
                },
                "206": {
                    "description": "The requested range",
                    "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
                },
                "304": {"description": "Not modified"},
                "412": {"description": "If-Match failed"},
                "416": {"description": "Range not satisfiable"},
                **_errors(*_PROJECT_ERRORS),
            },
            tags=["assets"],
        ),
        "delete": _op(
            "Delete (editor+)",
            {"204": {"description": "Deleted"}, **_errors(*_PROJECT_ERRORS)},
            tags=["assets"],
        ),
    },
    "/api/projects/{uuid}/uploads": {
        "parameters": [_UUID],
        "options": _op(
            "tus capabilities (Tus-Version, Tus-Extension: creation,termination, Tus-Max-Size)",
            {"204": {"description": "Capabilities", "headers": _TUS_HEADERS}},
            security=PUBLIC,
            tags=["assets"],
        ),
        "post": _op(
            "tus creation (editor+): Upload-Length and Upload-Metadata 'filename'; Location is"
            " the upload. Upload-Length is reserved against the project quota until it completes",
            {
                "201": {
                    "description": "Created",
                    "headers": {**_TUS_HEADERS, "Location": {"schema": {"type": "string"}}},
                },
                **_errors(*_PROJECT_ERRORS, 412, 413, 429),
            },
            parameters=[
                _TUS,
                {
                    "name": "Upload-Length",
                    "in": "header",
                    "required": True,
                    "schema": {"type": "integer", "minimum": 0},
                },
                {
                    "name": "Upload-Metadata",
                    "in": "header",
                    "required": True,
                    "schema": {"type": "string"},
                },
            ],
            tags=["assets"],
        ),
    },
    "/api/projects/{uuid}/uploads/{upload_id}": {
        "parameters": [_UUID, _UPLOAD],
        "head": _op(
            "tus: the upload's current Upload-Offset",
            {
                "200": {
                    "description": "Upload-Offset and Upload-Length headers",
                    "headers": _TUS_HEADERS,
                },
                **_errors(*_PROJECT_ERRORS, 412),
            },
            parameters=[_TUS],
            tags=["assets"],
        ),
        "patch": _op(
            "tus: append bytes at Upload-Offset; the last byte stores the asset",
            {
                "204": {"description": "Accepted; new Upload-Offset", "headers": _TUS_HEADERS},
                **_errors(*_PROJECT_ERRORS, 409, 412, 413, 415, 423),
            },
            parameters=[
                _TUS,
                {
                    "name": "Upload-Offset",
                    "in": "header",
                    "required": True,
                    "schema": {"type": "integer", "minimum": 0},
                },
            ],
            requestBody={
                "required": True,
                "content": {
                    "application/offset+octet-stream": {
                        "schema": {"type": "string", "format": "binary"}
                    }
                },
            },
            tags=["assets"],
        ),
        "delete": _op(
            "tus termination: abandon the upload",
            {
                "204": {"description": "Terminated", "headers": _TUS_HEADERS},
                **_errors(*_PROJECT_ERRORS, 412, 423),
            },
            parameters=[_TUS],
            tags=["assets"],
        ),
    },
    **WEB_CLIENT_PATHS,  # the browser client (services/gateway/web.py)
}


_ERROR_DESCRIPTIONS = _MESSAGES
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
        return {"required": body.required, "content": {body.content_type: {"schema": schema}}}
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


def _nullable_to_31(schema: Any) -> Any:
    """OpenAPI 3.0's `nullable` in the legacy schemas as 3.1's `type: [T, "null"]`."""
    if isinstance(schema, list | tuple):
        return [_nullable_to_31(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    converted = {key: _nullable_to_31(value) for key, value in schema.items() if key != "nullable"}
    if schema.get("nullable") and "type" in schema:
        converted["type"] = [schema["type"], "null"]
    return converted


def build_spec(operations: list[Operation]) -> dict[str, Any]:
    """The OpenAPI document of `operations` (what an app records, see `schema.add_routes`)."""
    _, definitions = models_json_schema(_models(operations), ref_template=_REF)
    paths: dict[str, Any] = _nullable_to_31({**LEGACY_PATHS, **WEB_CLIENT_PATHS})
    for op in operations:
        paths.setdefault(op.document_path, {})[op.method.lower()] = _operation(op)
    schemas = {**_nullable_to_31(LEGACY_SCHEMAS), **definitions.get("$defs", {})}
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

"""`GET /api/openapi.json`: the OpenAPI 3 description of the gateway's HTTP API.

Written by hand next to the handlers (one entry per route below), and checked
against the live gateway by schemathesis in the test suite: every status a
route can answer is listed with its body schema.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from services.gateway.web import OPENAPI_PATHS as WEB_CLIENT_PATHS

JSON = "application/json"
BINARY = "application/octet-stream"

_NULLABLE_DATE = {"type": "string", "format": "date-time", "nullable": True}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            }
        },
    },
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
            "access_token": {"type": "string", "description": "the same token (eXeLearning's name)"},
            "expires_at": {"type": "integer", "description": "Unix time"},
            "user": {"$ref": "#/components/schemas/User"},
        },
    },
    "Role": {"type": "string", "enum": ["owner", "editor", "viewer"]},
    "Project": {
        "type": "object",
        "required": ["uuid", "title", "role", "owner_id", "created_at", "updated_at"],
        "properties": {
            "uuid": {"type": "string", "format": "uuid"},
            "title": {"type": "string"},
            "role": {"$ref": "#/components/schemas/Role"},
            "owner_id": {"type": "integer", "nullable": True},
            "created_at": _NULLABLE_DATE,
            "updated_at": _NULLABLE_DATE,
        },
    },
    "ProjectList": {
        "type": "object",
        "required": ["projects"],
        "properties": {
            "projects": {"type": "array", "items": {"$ref": "#/components/schemas/Project"}}
        },
    },
    "NewProject": {
        "type": "object",
        "properties": {"title": {"type": "string", "maxLength": 500}},
    },
    "ProjectChange": {
        "type": "object",
        "required": ["title"],
        "properties": {"title": {"type": "string", "maxLength": 500}},
    },
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
            "version": {"type": "string", "description": "the save's time, milliseconds since the epoch"},
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
    "AppVersion": {
        "type": "object",
        "required": ["version"],
        "properties": {"version": {"type": "string"}},
    },
    "UserStorage": {
        "type": "object",
        "required": ["success", "data"],
        "properties": {
            "success": {"type": "boolean"},
            "data": {
                "type": "object",
                "required": ["quota_mb", "used_bytes", "used_mb"],
                "properties": {
                    "quota_mb": {"type": "integer", "nullable": True, "description": "null: no per-user quota"},
                    "used_bytes": {"type": "integer", "description": "assets of the live projects the caller owns"},
                    "used_mb": {"type": "integer"},
                },
            },
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
        "required": ["assets"],
        "properties": {
            "assets": {"type": "array", "items": {"$ref": "#/components/schemas/Asset"}}
        },
    },
    "AssetUpload": {
        "type": "object",
        "required": ["file"],
        "properties": {"file": {"type": "string", "format": "binary"}},
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {"type": "string"},
            "checks": {"type": "object", "additionalProperties": {"type": "string"}},
            "failing": {"type": "array", "items": {"type": "string"}},
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


PUBLIC: list[dict[str, Any]] = []

PATHS: dict[str, Any] = {
    "/healthcheck": {
        "get": _op(
            "Liveness (no dependencies)",
            {"200": _json("Alive", "Health")},
            security=PUBLIC,
            tags=["operations"],
        )
    },
    "/health/ready": {
        "get": _op(
            "Readiness: database, Redis (multi-instance), assets volume",
            {
                "200": _json("Ready", "Health"),
                "503": _json("A dependency is down (named in 'failing')", "Health"),
            },
            security=PUBLIC,
            tags=["operations"],
        )
    },
    "/metrics": {
        "get": _op(
            "Prometheus metrics",
            {
                "200": {
                    "description": "Prometheus text format",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
            security=PUBLIC,
            tags=["operations"],
        )
    },
    "/api/openapi.json": {
        "get": _op(
            "This document",
            {
                "200": {
                    "description": "OpenAPI 3",
                    "content": {JSON: {"schema": {"type": "object"}}},
                }
            },
            security=PUBLIC,
            tags=["operations"],
        )
    },
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
    "/api/version": {
        "get": _op(
            "The application version (APP_VERSION), for eXeLearning's editor",
            {"200": _json("Version", "AppVersion")},
            security=PUBLIC,
            tags=["exelearning"],
        )
    },
    "/api/user/storage": {
        "get": _op(
            "The caller's asset storage, as eXeLearning's editor reads it",
            {"200": _json("Storage", "UserStorage"), **_errors(401)},
            tags=["exelearning"],
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
                {"name": "markSaved", "in": "query", "schema": {"type": "string", "enum": ["true", "false"]}},
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
    "/api/projects": {
        "post": _op(
            "Create a project; the caller becomes its owner",
            {"201": _json("Created", "Project"), **_errors(400, 401, 404, 413)},
            requestBody=_body("NewProject"),
            tags=["projects"],
        ),
        "get": _op(
            "The caller's projects (where they are a member)",
            {"200": _json("Projects", "ProjectList"), **_errors(400, 401)},
            parameters=[
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 500},
                },
                {
                    "name": "offset",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 0, "maximum": 2147483648},
                },
            ],
            tags=["projects"],
        ),
    },
    "/api/projects/{uuid}": {
        "parameters": [_UUID],
        "get": _op(
            "One project (viewer+)",
            {"200": _json("The project", "Project"), **_errors(*_PROJECT_ERRORS)},
            tags=["projects"],
        ),
        "patch": _op(
            "Rename (editor+)",
            {"200": _json("Renamed", "Project"), **_errors(*_PROJECT_ERRORS, 413)},
            requestBody=_body("ProjectChange"),
            tags=["projects"],
        ),
        "delete": _op(
            "Soft-delete (owner); open rooms are closed",
            {"204": {"description": "Deleted"}, **_errors(*_PROJECT_ERRORS)},
            tags=["projects"],
        ),
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
        "post": _op(
            "Upload an asset as multipart/form-data, part 'file' (editor+); replaces one of the same name",
            {
                "200": _json("Replaced", "Asset"),
                "201": _json("Stored", "Asset"),
                **_errors(*_PROJECT_ERRORS, 413, 415, 429),
            },
            parameters=[
                {
                    "name": "name",
                    "in": "query",
                    "description": "The asset name (default: the part's filename)",
                    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                }
            ],
            requestBody={
                "required": True,
                "content": {"multipart/form-data": {"schema": _ref("AssetUpload")}},
            },
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


def build_spec() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
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
        "paths": PATHS,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "tokenQuery": {"type": "apiKey", "in": "query", "name": "token"},
                "authCookie": {"type": "apiKey", "in": "cookie", "name": "auth"},
            },
        },
    }


_SPEC = build_spec()


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(_SPEC)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/openapi.json", openapi_json)

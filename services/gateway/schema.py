"""Schema-first HTTP: a route is declared once, with pydantic models for what it takes and
answers, and its validation, its error messages and its OpenAPI entry all come from that.

A module declares its routes on a `Routes` table:

    routes = Routes(tags=["projects"])

    @routes.post(
        "/api/projects",
        "Create a project; the caller becomes its owner",
        body=NewProject,
        replies={201: Reply("Created", ProjectOut)},
        errors=(400, 401, 404, 413),
    )
    async def create_project(request: web.Request, body: NewProject) -> web.Response:
        ...
        return reply(ProjectOut(...), status=201)

- `body`: a `Body` model (a JSON object, validated strictly: no type coercion), `Binary` (the
  handler reads the bytes) or `Multipart` (the handler streams the parts; the model only
  describes them). A JSON body reaches the handler as `body=`.
- `query`: a `Query` model, validated from the query string (strings coerced to the declared
  types); it reaches the handler as `query=`.
- `path_params`: a `Path` model; a path that does not validate names nothing, so it is a 404.
- `replies` and `errors`: what the route answers, for the document; `reply()` serialises a
  reply model.

`add_routes(app, routes)` registers the handlers and records their operations on the app, and
`services/gateway/openapi.py` builds the document from what the app records, so a route that
is served is described, and one that is described is served. It also records which routes
let anonymous callers in (`security=PUBLIC`, or `[{}, ...]` for optional auth): the JWT
middleware (services/gateway/security.py) asks nothing else.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from aiohttp import web
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
)
from pydantic_core import ErrorDetails

from services.gateway.context import read_json
from services.gateway.errors import ApiError, bad_request, not_found
from services.gateway.security import ANONYMOUS_ROUTES
from services.gateway.timefmt import iso

JSON = "application/json"
BINARY = "application/octet-stream"

M = TypeVar("M", bound=BaseModel)
Handler = Callable[..., Awaitable[web.StreamResponse]]
Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


class Body(BaseModel):
    """A JSON object body. Types are strict (`"5"` is not an integer); unknown fields are ignored."""

    model_config = ConfigDict(strict=True, extra="ignore")


class Query(BaseModel):
    """Query-string parameters (each arrives as a string and is coerced to its declared type)."""

    model_config = ConfigDict(extra="ignore")


class Path(BaseModel):
    """Path parameters; when they do not validate, the path names nothing: `no_match()`."""

    model_config = ConfigDict(extra="ignore")

    @classmethod
    def no_match(cls, errors: Sequence[ErrorDetails]) -> ApiError:
        """The error a path that does not validate (`errors`) answers: a 404, unless overridden."""
        return not_found()


class ReplyBody(BaseModel):
    """Base of reply models (what a route answers): every field it has is declared."""

    model_config = ConfigDict(extra="forbid")


# ---- field types -------------------------------------------------------------------------

# Printable text: no C0 control character but tab, no DEL. JSON can carry them, but they are
# never part of a title, a name or a label, and logs and terminals would interpret them.
PRINTABLE_PATTERN = r"^[^\x00-\x08\x0a-\x1f\x7f]*$"
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _printable(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value


# Printable text; give its length with the field: `title: Text = Field("", max_length=500)`.
Text = Annotated[
    str, Field(json_schema_extra={"pattern": PRINTABLE_PATTERN}), AfterValidator(_printable)
]


def _decimal(value: Any) -> Any:
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise ValueError("must be written in decimal digits")
    return value


# An integer parameter written in decimal digits only (no sign, spaces, `_` nor `.0`).
Digits = Annotated[int, BeforeValidator(_decimal)]

# RFC 3339 in UTC with a `Z`, whether the database gave an aware or (SQLite) a naive datetime.
Timestamp = Annotated[datetime, PlainSerializer(iso, return_type=str)]


# ---- declarations ------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One answer of a route: its description, and its body model or content type."""

    description: str
    model: type[BaseModel] | None = None
    content: str | Sequence[str] | None = None  # default: JSON with a model, else no body
    headers: Mapping[str, str] = field(default_factory=dict)  # name -> description


@dataclass(frozen=True)
class Binary:
    """A body of raw bytes the handler reads itself."""

    content_type: str = BINARY
    required: bool = True
    description: str | None = None


@dataclass(frozen=True)
class Multipart:
    """A multipart/form-data body the handler streams; `model` describes its parts."""

    model: type[BaseModel]
    required: bool = True


@dataclass(frozen=True)
class Operation:
    """A route as declared: everything the router, the validation and the document need."""

    method: Method
    path: str  # aiohttp's form, e.g. "/api/projects/{uuid}" or "/{file:<regex>}"
    summary: str
    handler: Handler | None  # None: served by code outside the gateway, described here
    tags: tuple[str, ...] = ()
    body: type[Body] | Binary | Multipart | None = None
    query: type[Query] | None = None
    path_params: type[Path] | None = None
    replies: Mapping[int, Reply] = field(default_factory=dict)
    errors: tuple[int, ...] = ()
    security: Sequence[Mapping[str, Sequence[str]]] | None = None  # None: the document's default
    headers: Sequence[Mapping[str, Any]] = ()  # header parameters, as OpenAPI objects

    @property
    def public(self) -> bool:
        return self.security is not None and len(self.security) == 0

    @property
    def anonymous(self) -> bool:
        """Callers without a token are let in (public, or optional auth like `[{}, ...]`)."""
        return self.security is not None and (self.public or any(not r for r in self.security))

    @property
    def document_path(self) -> str:
        """The path as OpenAPI writes it (`{file}` for aiohttp's `{file:<regex>}`)."""
        return re.sub(r"\{(\w+):[^}]*\}", r"{\1}", self.path)


Security = tuple[Mapping[str, Sequence[str]], ...]
PUBLIC: Security = ()  # no authentication


class Routes:
    """A module's table of declared routes."""

    def __init__(self, *, tags: Sequence[str] = ()) -> None:
        self.tags = tuple(tags)
        self.operations: list[Operation] = []

    def route(
        self, method: Method, path: str, summary: str, **declared: Any
    ) -> Callable[[Handler], Handler]:
        """Declare `handler` as `method path`; keyword arguments are `Operation`'s fields."""

        def register(handler: Handler) -> Handler:
            self.operations.append(
                Operation(method, path, summary, handler, **{"tags": self.tags, **declared})
            )
            return handler

        return register

    def get(self, path: str, summary: str, **declared: Any) -> Callable[[Handler], Handler]:
        return self.route("GET", path, summary, **declared)

    def post(self, path: str, summary: str, **declared: Any) -> Callable[[Handler], Handler]:
        return self.route("POST", path, summary, **declared)

    def put(self, path: str, summary: str, **declared: Any) -> Callable[[Handler], Handler]:
        return self.route("PUT", path, summary, **declared)

    def patch(self, path: str, summary: str, **declared: Any) -> Callable[[Handler], Handler]:
        return self.route("PATCH", path, summary, **declared)

    def delete(self, path: str, summary: str, **declared: Any) -> Callable[[Handler], Handler]:
        return self.route("DELETE", path, summary, **declared)

    def describe(self, method: Method, path: str, summary: str, **declared: Any) -> None:
        """Describe a route some other code serves (e.g. `/metrics`, from shared/)."""
        self.operations.append(
            Operation(method, path, summary, None, **{"tags": self.tags, **declared})
        )


OPERATIONS: web.AppKey[list[Operation]] = web.AppKey("operations", list[Operation])


def add_routes(app: web.Application, routes: Routes) -> None:
    """Register `routes`' handlers on `app` and record their operations for the document."""
    recorded = app.setdefault(OPERATIONS, [])
    anonymous = app.setdefault(ANONYMOUS_ROUTES, {})
    for operation in routes.operations:
        recorded.append(operation)
        anonymous[(operation.method, operation.document_path)] = operation.anonymous
        if operation.handler is None:
            continue
        if operation.method == "GET":  # and HEAD, as aiohttp's add_get does
            app.router.add_get(operation.path, _validating(operation))
        else:
            app.router.add_route(operation.method, operation.path, _validating(operation))


# ---- validation --------------------------------------------------------------------------


def _validating(operation: Operation) -> Handler:
    """The handler, called with the validated `body=` and `query=` its declaration names."""
    handler = operation.handler
    if handler is None:
        raise ValueError(f"{operation.method} {operation.path} has no handler")
    body_model = operation.body if isinstance(operation.body, type) else None
    query_model, path_model = operation.query, operation.path_params

    async def validated(request: web.Request) -> web.StreamResponse:
        inputs: dict[str, Any] = {}
        if path_model is not None:
            try:
                path_model.model_validate(dict(request.match_info))
            except ValidationError as exc:
                raise path_model.no_match(exc.errors()) from None
        if query_model is not None:
            inputs["query"] = validate(query_model, dict(request.query.items()))
        if body_model is not None:
            inputs["body"] = validate(body_model, await read_json(request))
        return await handler(request, **inputs)

    validated.__name__ = handler.__name__
    validated.__doc__ = handler.__doc__
    return validated


def validate(model: type[M], data: Mapping[str, Any]) -> M:
    """`data` as a `model`, or a 400 naming the first thing wrong with it. A `Body` is
    validated as the JSON it came as: strictly, but enums, uuids and dates from their strings."""
    try:
        if issubclass(model, Body):
            return model.model_validate_json(json.dumps(data))
        return model.model_validate(data)
    except ValidationError as exc:
        raise bad_request(error_message(exc.errors()[0])) from None


def error_message(error: ErrorDetails) -> str:
    """One pydantic error in this API's words: `'title' must be at most 500 characters`."""
    name = ".".join(str(part) for part in error["loc"]) or "the body"
    ctx = error.get("ctx") or {}
    kind = error["type"]
    phrases = {
        "missing": "is required",
        "string_type": "must be a string",
        "int_type": "must be an integer",
        "int_parsing": "must be an integer",
        "int_from_float": "must be an integer",
        "bool_type": "must be true or false",
        "bool_parsing": "must be true or false",
        "list_type": "must be a list",
        "dict_type": "must be an object",
        "model_type": "must be an object",
        "string_too_long": f"must be at most {ctx.get('max_length')} characters",
        "string_too_short": f"must be at least {ctx.get('min_length')} characters",
        "too_long": f"must have at most {ctx.get('max_length')} items",
        "too_short": f"must have at least {ctx.get('min_length')} items",
        "greater_than_equal": f"must be >= {ctx.get('ge')}",
        "less_than_equal": f"must be <= {ctx.get('le')}",
        "literal_error": f"must be one of {ctx.get('expected')}",
        "enum": f"must be one of {ctx.get('expected')}",
        "string_pattern_mismatch": "has an invalid format",
    }
    if kind == "value_error":
        return f"'{name}' {ctx.get('error', error['msg'])}"
    return f"'{name}' {phrases.get(kind, error['msg'].lower())}"


def reply(
    model: BaseModel, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A reply model as a JSON response."""
    return web.json_response(
        model.model_dump(mode="json", by_alias=True), status=status, headers=headers
    )

"""`PATCH /api/projects/{uuid}/yjs-document`: JSON edits of the live document (editors, owners).

The edits (shared/ydoc_edit.py) are made on a copy of the current document in one transaction,
and the update they make is merged like an import (`documents.merge_update`): into the live
room on whichever instance holds it, so connected clients see it at once. The update is
computed against a snapshot, and needs no lock: a client's concurrent edits merge with it as
Yjs edits always do (a CRDT), indices meaning what they meant in the snapshot.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import ConfigDict, Discriminator, Field, JsonValue, Tag

from services.gateway.context import Need, authorize, gateway
from services.gateway.documents import Imported, document_service, merge_update
from services.gateway.errors import ApiError, bad_request, too_large
from services.gateway.projects import PROJECT_ERRORS, ProjectPath
from services.gateway.schema import Body, Reply, Routes, reply
from services.gateway.schema import add_routes as add_declared_routes
from shared.documents import export_document
from shared.ydoc import RejectedUpdate
from shared.ydoc_edit import Edit, EditError, edit_update

MAX_EDITS = 100

EditPath = Annotated[
    str,
    Field(
        min_length=1,
        max_length=1000,
        description="A root, then keys and array indices, dot-separated (`meta`, `pages.0.blocks`)",
    ),
]
Index = Annotated[int, Field(ge=0, le=2**31, description="Items of an array, characters of a text")]


class SetOp(Body):
    """Set `key` of the Map at `path` to `value` (null included)."""

    op: Literal["set"]
    path: EditPath
    key: str = Field(max_length=1000)
    value: JsonValue


class InsertOp(Body):
    """Insert a string into the Text, or a list's items into the Array, at `path` before `index`."""

    op: Literal["insert"]
    path: EditPath
    index: Index
    value: str | list[JsonValue]


class DeleteKeyOp(Body):
    """Delete `key` of the Map at `path`."""

    model_config = ConfigDict(extra="forbid")  # so that no body is both kinds of delete

    op: Literal["delete"]
    path: EditPath
    key: str = Field(max_length=1000)


class DeleteRangeOp(Body):
    """Delete `length` items of the Array, or characters of the Text, at `path` from `index`."""

    model_config = ConfigDict(extra="forbid")

    op: Literal["delete"]
    path: EditPath
    index: Index
    length: Annotated[int, Field(ge=1, le=2**31)]


def _kind(op: Any) -> str | None:
    """Which model an op is: its `op`, a delete with a `key` told apart from one by index."""
    fields = op if isinstance(op, dict) else getattr(op, "__dict__", {})  # a model when dumped
    name = fields.get("op")
    if name == "delete" and "key" in fields:
        return "delete_key"
    return name if isinstance(name, str) else None


Op = Annotated[
    Annotated[SetOp, Tag("set")]
    | Annotated[InsertOp, Tag("insert")]
    | Annotated[DeleteKeyOp, Tag("delete_key")]
    | Annotated[DeleteRangeOp, Tag("delete")],
    Discriminator(
        _kind, custom_error_type="op", custom_error_message="must be an op: set, insert or delete"
    ),
]


class Edits(Body):
    ops: list[Op] = Field(
        min_length=1, max_length=MAX_EDITS, description="Made in order, in one transaction"
    )


routes = Routes(tags=["documents"])


@routes.patch(
    "/api/projects/{uuid}/yjs-document",
    "Edit the live document with JSON commands (editor+), all in one Yjs transaction; connected "
    "clients receive it. 400 `invalid_edit` or `index_out_of_range`, 404 `path_not_found`; "
    "nothing is applied when any command fails",
    path_params=ProjectPath,
    body=Edits,
    replies={200: Reply("Applied (`bytes`: the size of the Yjs update the edits made)", Imported)},
    errors=(*PROJECT_ERRORS, 413),
)
async def edit_document(request: web.Request, body: Edits) -> web.Response:
    auth = await authorize(request, Need.EDIT)
    edits = [Edit(**op.model_dump()) for op in body.ops]
    current = await export_document(document_service(request), auth.project_uuid)
    try:
        update = await asyncio.to_thread(edit_update, current, edits)
    except EditError as exc:
        raise ApiError(404 if exc.code == "path_not_found" else 400, str(exc), code=exc.code) from None
    except RejectedUpdate as exc:
        raise bad_request(str(exc), code="invalid_edit") from None
    limit = gateway(request).settings.max_sync_message_bytes
    if len(update) > limit:
        raise too_large(f"the edits make an update of {len(update)} bytes, over the limit of {limit}")
    applied = await merge_update(request, auth, update)
    return reply(Imported(applied=applied, bytes=len(update)))


def add_routes(app: web.Application) -> None:
    add_declared_routes(app, routes)

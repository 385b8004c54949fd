"""What every gateway handler shares: settings, limiters, metrics, JSON bodies, project access."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.gateway.errors import ApiError, bad_request, forbidden, not_found
from services.gateway.metrics import GatewayMetrics
from services.gateway.security import require_identity
from shared.access import Role
from shared.access_db import ACCESS, resolve_access, user_id_of
from shared.auth import Identity
from shared.config import Settings
from shared.db.models import Project
from shared.db.resources import DATABASE
from shared.ratelimit import RateLimiter


@dataclass
class GatewayContext:
    settings: Settings
    metrics: GatewayMetrics
    login_by_address: RateLimiter
    login_by_account: RateLimiter


GATEWAY: web.AppKey[GatewayContext] = web.AppKey("gateway", GatewayContext)


def gateway(request: web.Request) -> GatewayContext:
    return request.app[GATEWAY]


def sessionmaker(request: web.Request) -> async_sessionmaker[AsyncSession]:
    return request.app[DATABASE].sessionmaker


def invalidate_access(request: web.Request, project_uuid: str) -> None:
    """Drop this instance's cached access answers for a project (others expire by TTL)."""
    access = request.app.get(ACCESS)
    if access is not None:
        access.invalidate(project_uuid)


MAX_JSON_DEPTH = 32


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request's JSON object body; 400 when absent, malformed, not an object, nested
    deeper than MAX_JSON_DEPTH or holding text that is not Unicode (a lone surrogate)."""
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        raise bad_request("the body must be a JSON object") from None
    except RecursionError:  # the decoder's own limit, far past ours
        raise bad_request(f"the body is nested deeper than {MAX_JSON_DEPTH} levels") from None
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    _check_json(body)
    return body


def _check_json(body: dict[str, Any]) -> None:
    """What JSON can carry but nothing downstream can: deep nesting, and "\\ud800"-style
    escapes of lone surrogates, which no database (nor UTF-8) can store."""
    pending: list[tuple[Any, int]] = [(body, 1)]
    while pending:
        value, depth = pending.pop()
        if depth > MAX_JSON_DEPTH:
            raise bad_request(f"the body is nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(value, dict):
            pending += [(key, depth) for key in value]
            pending += [(item, depth + 1) for item in value.values()]
        elif isinstance(value, list):
            pending += [(item, depth + 1) for item in value]
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise bad_request("the body holds text that is not valid Unicode") from None


class Need(IntEnum):
    """What an operation requires, in increasing order."""

    VIEW = 1  # viewer, editor or owner
    EDIT = 2  # editor or owner
    MANAGE = 3  # owner


_LEVEL = {Role.VIEWER: Need.VIEW, Role.EDITOR: Need.EDIT, Role.OWNER: Need.MANAGE}


@dataclass(frozen=True)
class Authorized:
    identity: Identity
    user_id: int
    project: Project
    role: Role

    @property
    def project_uuid(self) -> str:
        return str(self.project.uuid)


def caller_user_id(identity: Identity) -> int:
    user_id = user_id_of(identity)
    if user_id is None:
        raise ApiError(401, "this token does not belong to a user account", code="unauthorized")
    return user_id


async def authorize(request: web.Request, need: Need) -> Authorized:
    """The caller, the project of `{uuid}` and their role; 401/404/403 otherwise.

    404 when the project does not exist or is deleted, 403 when the caller is
    not a member or their role is too low for `need`.
    """
    return await authorize_as(request, require_identity(request), request.match_info["uuid"], need)


async def authorize_as(
    request: web.Request, identity: Identity, project_uuid: str, need: Need
) -> Authorized:
    """`authorize` for `identity` on `project_uuid` (its current role, from the database)."""
    user_id = caller_user_id(identity)
    async with sessionmaker(request)() as session:
        project, role = await resolve_access(session, identity, project_uuid)
    if project is None:
        raise not_found("no such project")
    if role is None:
        raise forbidden("you are not a member of this project")
    if _LEVEL[role] < need:
        raise forbidden(f"your role ({role.value}) does not allow this")
    return Authorized(identity, user_id, project, role)

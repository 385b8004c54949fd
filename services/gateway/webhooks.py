"""A project's webhooks (owner only): register, list, delete, and their recent deliveries.

The secret is answered once, at registration (as Stripe does): a listing never shows it,
so a leaked listing cannot forge events. The URL is checked against the address policy
(`shared/webhooks/urls.py`) here and again at every delivery.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

from aiohttp import web
from pydantic import Field
from pydantic_core import ErrorDetails
from sqlalchemy import delete, func, select

from services.gateway.context import Need, authorize, gateway, sessionmaker
from services.gateway.errors import ApiError, bad_request, conflict, not_found
from services.gateway.projects import PROJECT_ERRORS, ProjectPath
from services.gateway.schema import (
    Body,
    Digits,
    Query,
    Reply,
    ReplyBody,
    Routes,
    Timestamp,
    reply,
)
from services.gateway.schema import add_routes as add_declared_routes
from shared.db.models import Webhook, WebhookDelivery
from shared.webhooks.events import new_secret
from shared.webhooks.urls import MAX_URL_LENGTH, UrlRefused, check_target

log = logging.getLogger(__name__)

MAX_DELIVERIES = 200

EventName = Literal[
    "document.updated",
    "member.added",
    "member.removed",
    "connection.opened",
    "connection.closed",
    "version.created",
]


class WebhookPath(ProjectPath):
    webhook_id: Digits = Field(ge=1, le=2**63 - 1)

    @classmethod
    def no_match(cls, errors: Sequence[ErrorDetails]) -> ApiError:
        return not_found("no such webhook")


class NewWebhook(Body):
    url: str = Field(max_length=MAX_URL_LENGTH, description="http(s) URL with a public address")
    events: list[EventName] = Field(min_length=1, max_length=6)


class WebhookOut(ReplyBody):
    id: int
    url: str
    events: list[str]
    created_at: Timestamp | None

    @classmethod
    def of(cls, hook: Webhook) -> WebhookOut:
        return cls(id=hook.id, url=hook.url, events=hook.events, created_at=hook.created_at)


class WebhookCreated(WebhookOut):
    secret: str = Field(description="HMAC-SHA256 key of X-Exe-Signature; shown only here")


class WebhookList(ReplyBody):
    webhooks: list[WebhookOut]


class DeliveryQuery(Query):
    limit: int = Field(50, ge=1, le=MAX_DELIVERIES)


class DeliveryOut(ReplyBody):
    id: int
    webhook_id: int | None
    event: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    last_status_code: int | None
    last_error: str | None
    created_at: Timestamp | None
    delivered_at: Timestamp | None
    next_attempt_at: Timestamp | None


class DeliveryList(ReplyBody):
    deliveries: list[DeliveryOut]


routes = Routes(tags=["webhooks"])


@routes.post(
    "/api/projects/{uuid}/webhooks",
    "Register a webhook (owner); its secret is answered only here",
    path_params=ProjectPath,
    body=NewWebhook,
    replies={201: Reply("Registered", WebhookCreated)},
    errors=(*PROJECT_ERRORS, 409, 413),
)
async def create_webhook(request: web.Request, body: NewWebhook) -> web.Response:
    auth = await authorize(request, Need.MANAGE)
    settings = gateway(request).settings
    try:
        await check_target(body.url, settings.webhook_allow_private)
    except UrlRefused as exc:
        raise bad_request(str(exc), code="invalid_url") from None
    async with sessionmaker(request)() as session, session.begin():
        count = await session.scalar(
            select(func.count()).select_from(Webhook).where(Webhook.project_id == auth.project.id)
        )
        if (count or 0) >= settings.webhook_max_per_project:
            raise conflict(f"a project has at most {settings.webhook_max_per_project} webhooks")
        hook = Webhook(
            project_id=auth.project.id,
            url=body.url,
            events=list(dict.fromkeys(body.events)),
            secret=new_secret(),
            created_by=auth.user_id,
        )
        session.add(hook)
        await session.flush()
        await session.refresh(hook)
    log.info("webhook registered", extra={"project": auth.project_uuid, "webhook": hook.id})
    return reply(
        WebhookCreated(**WebhookOut.of(hook).model_dump(), secret=hook.secret), status=201
    )


@routes.get(
    "/api/projects/{uuid}/webhooks",
    "The project's webhooks (owner), without their secrets",
    path_params=ProjectPath,
    replies={200: Reply("Webhooks", WebhookList)},
    errors=PROJECT_ERRORS,
)
async def list_webhooks(request: web.Request) -> web.Response:
    auth = await authorize(request, Need.MANAGE)
    async with sessionmaker(request)() as session:
        hooks = (
            await session.scalars(
                select(Webhook).where(Webhook.project_id == auth.project.id).order_by(Webhook.id)
            )
        ).all()
    return reply(WebhookList(webhooks=[WebhookOut.of(hook) for hook in hooks]))


@routes.delete(
    "/api/projects/{uuid}/webhooks/{webhook_id:[0-9]+}",  # not .../deliveries
    "Delete a webhook (owner) and its deliveries",
    path_params=WebhookPath,
    replies={204: Reply("Deleted")},
    errors=PROJECT_ERRORS,
)
async def delete_webhook(request: web.Request) -> web.Response:
    auth = await authorize(request, Need.MANAGE)
    webhook_id = int(request.match_info["webhook_id"])
    async with sessionmaker(request)() as session, session.begin():
        await session.execute(delete(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id))
        deleted = await session.execute(
            delete(Webhook).where(Webhook.id == webhook_id, Webhook.project_id == auth.project.id)
        )
        if not getattr(deleted, "rowcount", 0):
            raise not_found("no such webhook")
    log.info("webhook deleted", extra={"project": auth.project_uuid, "webhook": webhook_id})
    return web.Response(status=204)


@routes.get(
    "/api/projects/{uuid}/webhooks/deliveries",
    "Recent deliveries of the project's webhooks, newest first (owner)",
    path_params=ProjectPath,
    query=DeliveryQuery,
    replies={200: Reply("Deliveries", DeliveryList)},
    errors=PROJECT_ERRORS,
)
async def list_deliveries(request: web.Request, query: DeliveryQuery) -> web.Response:
    auth = await authorize(request, Need.MANAGE)
    async with sessionmaker(request)() as session:
        rows = (
            await session.scalars(
                select(WebhookDelivery)
                .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
                .where(Webhook.project_id == auth.project.id)
                .order_by(WebhookDelivery.id.desc())
                .limit(query.limit)
            )
        ).all()
    return reply(
        DeliveryList(
            deliveries=[
                DeliveryOut(
                    id=row.id,
                    webhook_id=row.webhook_id,
                    event=row.event,
                    status=row.status,  # type: ignore[arg-type]
                    attempts=row.attempts,
                    last_status_code=row.last_status_code,
                    last_error=row.last_error,
                    created_at=row.created_at,
                    delivered_at=row.delivered_at,
                    next_attempt_at=None if row.status != "pending" else row.next_attempt_at,
                )
                for row in rows
            ]
        )
    )


def add_routes(app: web.Application) -> None:
    add_declared_routes(app, routes)

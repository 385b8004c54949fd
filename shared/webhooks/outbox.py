"""The webhook outbox in the database: delivery rows written in the transaction that caused
the event, pending document changes (the debounce), and the dispatcher's claims (leases).

The same statements run on PostgreSQL and SQLite: a claim is a compare-and-set UPDATE
whose row count says whether this dispatcher won it.
"""

from __future__ import annotations

import typing
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    CursorResult,
    DateTime,
    String,
    Table,
    and_,
    cast,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from shared.db.engine import upsert_insert
from shared.db.models import Project, Webhook, WebhookDelivery, WebhookDocumentChange
from shared.webhooks.events import DOCUMENT_UPDATED, GlobalWebhooks, payload

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"

_DELIVERIES = typing.cast(Table, WebhookDelivery.__table__)
_CHANGES = typing.cast(Table, WebhookDocumentChange.__table__)

def utcnow() -> datetime:
    return datetime.now(UTC)

def aware(value: datetime) -> datetime:
    """SQLite hands datetimes back naive (they are UTC)."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)

def _rowcount(result: Any) -> int:
    return int(typing.cast(CursorResult[Any], result).rowcount)

def subscribes(event: str) -> ColumnElement[bool]:
    """A webhook row listing `event` (the JSON list's text holds the quoted name: portable
    across PostgreSQL's JSON and SQLite's text, and no event name contains another quoted)."""
    return cast(Webhook.events, String).contains(f'"{event}"')

async def enqueue(
    session: AsyncSession,
    event: str,
    project_id: int,
    project_uuid: str,
    data: Mapping[str, Any],
    hooks: GlobalWebhooks,
    *,
    now: datetime | None = None,
) -> int:
    """Insert one pending delivery of `event` per subscribed webhook (the project's and the
    global ones), in the caller's transaction; returns how many."""
    now = now or utcnow()
    ids = (
        await session.scalars(
            select(Webhook.id).where(Webhook.project_id == project_id, subscribes(event))
        )
    ).all()
    targets: list[dict[str, Any]] = [{"webhook_id": i, "global_url": None} for i in ids]
    targets += [{"webhook_id": None, "global_url": url} for url in hooks.subscribed(event)]
    if not targets:
        return 0
    body = payload(event, project_uuid, data, now)
    await session.execute(
        insert(_DELIVERIES),
        [
            {
                **target,
                "event": event,
                "project_uuid": project_uuid,
                "payload": body,
                "status": PENDING,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
            for target in targets
        ],
    )
    return len(targets)

async def record_document_changes(
    session: AsyncSession, project_ids: Collection[int], hooks: GlobalWebhooks
) -> None:
    """Note, in the caller's transaction (the one committing the updates), that these
    projects' documents changed: only those with a subscriber to document.updated. The
    first change of a pending row is kept, the last one moves."""
    if not project_ids:
        return
    now = utcnow()
    when = literal(now, DateTime(timezone=True))
    subscribed: ColumnElement[bool] = (
        true()
        if hooks.subscribed(DOCUMENT_UPDATED)
        else select(Webhook.id)
        .where(Webhook.project_id == Project.id, subscribes(DOCUMENT_UPDATED))
        .exists()
    )
    statement = upsert_insert(session)(_CHANGES).from_select(
        ["project_id", "first_change_at", "last_change_at"],
        select(Project.id, when, when).where(Project.id.in_(sorted(project_ids)), subscribed),
    )
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["project_id"],
            set_={"last_change_at": statement.excluded.last_change_at},
        )
    )

@dataclass(frozen=True, slots=True)
class PendingChange:
    project_id: int
    project_uuid: str
    first_change_at: datetime
    last_change_at: datetime

async def due_changes(
    session: AsyncSession, now: datetime, debounce: float, max_debounce: float, limit: int
) -> list[PendingChange]:
    """Pending document changes that are due (`schedule.change_due`), oldest first."""
    rows = await session.execute(
        select(
            _CHANGES.c.project_id,
            Project.uuid,
            _CHANGES.c.first_change_at,
            _CHANGES.c.last_change_at,
        )
        .join(Project, Project.id == _CHANGES.c.project_id)
        .where(
            or_(
                _CHANGES.c.last_change_at <= now - timedelta(seconds=debounce),
                _CHANGES.c.first_change_at <= now - timedelta(seconds=max_debounce),
            )
        )
        .order_by(_CHANGES.c.first_change_at)
        .limit(limit)
    )
    return [
        PendingChange(row[0], str(row[1]), aware(row[2]), aware(row[3])) for row in rows.all()
    ]

async def take_change(session: AsyncSession, change: PendingChange) -> bool:
    """Remove a pending change this dispatcher read (in its transaction); False when another
    dispatcher took it first. If a newer change arrived meanwhile (its last moved), that one
    stays pending, as a fresh row: the event about to be sent may predate it."""
    exact = await session.execute(
        delete(_CHANGES).where(
            _CHANGES.c.project_id == change.project_id,
            _CHANGES.c.first_change_at == change.first_change_at,
            _CHANGES.c.last_change_at == change.last_change_at,
        )
    )
    if _rowcount(exact):
        return True
    moved = await session.execute(
        delete(_CHANGES).where(
            _CHANGES.c.project_id == change.project_id,
            _CHANGES.c.first_change_at == change.first_change_at,
        )
    )
    if not _rowcount(moved):
        return False
    now = utcnow()
    statement = upsert_insert(session)(_CHANGES).values(
        project_id=change.project_id, first_change_at=now, last_change_at=now
    )
    await session.execute(statement.on_conflict_do_nothing(index_elements=["project_id"]))
    return True

@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery this dispatcher holds the lease of, with where it goes."""

    id: int
    event: str
    payload: str
    attempts: int
    created_at: datetime
    url: str | None  # None: a global webhook no longer configured
    secret: str

async def claim(
    session: AsyncSession,
    owner: str,
    now: datetime,
    lease_seconds: float,
    limit: int,
    hooks: GlobalWebhooks,
) -> list[Claimed]:
    """Take the leases of up to `limit` due deliveries (in the caller's transaction).

    A lease is taken by a compare-and-set UPDATE: only a delivery whose lease is free or
    expired is taken, so two dispatchers never hold one at once, and a killed dispatcher's
    deliveries are taken over once its lease expires.
    """
    free = or_(_DELIVERIES.c.lease_until.is_(None), _DELIVERIES.c.lease_until < now)
    due = and_(_DELIVERIES.c.status == PENDING, _DELIVERIES.c.next_attempt_at <= now, free)
    candidates = (
        await session.scalars(
            select(_DELIVERIES.c.id).where(due).order_by(_DELIVERIES.c.next_attempt_at).limit(limit)
        )
    ).all()
    won = []
    until = now + timedelta(seconds=lease_seconds)
    for delivery_id in candidates:
        taken = await session.execute(
            update(_DELIVERIES)
            .where(_DELIVERIES.c.id == delivery_id, due)
            .values(lease_until=until, lease_owner=owner)
        )
        if _rowcount(taken):
            won.append(delivery_id)
    if not won:
        return []
    rows = await session.execute(
        select(
            _DELIVERIES.c.id,
            _DELIVERIES.c.event,
            _DELIVERIES.c.payload,
            _DELIVERIES.c.attempts,
            _DELIVERIES.c.created_at,
            _DELIVERIES.c.global_url,
            Webhook.url,
            Webhook.secret,
        )
        .outerjoin(Webhook, Webhook.id == _DELIVERIES.c.webhook_id)
        .where(_DELIVERIES.c.id.in_(won))
    )
    claimed = []
    for row in rows.all():
        if row.global_url is not None:
            url = row.global_url if row.global_url in hooks.urls else None
            secret = hooks.secret
        else:
            url, secret = row.url, row.secret or ""
        claimed.append(
            Claimed(row.id, row.event, row.payload, row.attempts, aware(row.created_at), url, secret)
        )
    return claimed

async def finish(
    session: AsyncSession,
    delivery_id: int,
    owner: str,
    *,
    status: str,
    attempts: int,
    status_code: int | None,
    error: str | None,
    next_attempt_at: datetime | None = None,
) -> bool:
    """Record an attempt's outcome and free the lease; False when the lease was lost
    (another dispatcher took the delivery over: its outcome counts, not this one)."""
    now = utcnow()
    values: dict[str, Any] = {
        "status": status,
        "attempts": attempts,
        "last_status_code": status_code,
        "last_error": error[:300] if error else None,
        "lease_until": None,
        "lease_owner": None,
    }
    if status == DELIVERED:
        values["delivered_at"] = now
    if next_attempt_at is not None:
        values["next_attempt_at"] = next_attempt_at
    result = await session.execute(
        update(_DELIVERIES)
        .where(_DELIVERIES.c.id == delivery_id, _DELIVERIES.c.lease_owner == owner)
        .values(**values)
    )
    return bool(_rowcount(result))

async def pending_count(session: AsyncSession) -> int:
    return int(
        await session.scalar(
            select(func.count()).select_from(_DELIVERIES).where(_DELIVERIES.c.status == PENDING)
        )
        or 0
    )

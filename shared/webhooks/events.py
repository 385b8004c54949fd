"""Webhook event names, payload bodies and the global webhooks of the configuration."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

DOCUMENT_UPDATED = "document.updated"
MEMBER_ADDED = "member.added"
MEMBER_REMOVED = "member.removed"
CONNECTION_OPENED = "connection.opened"
CONNECTION_CLOSED = "connection.closed"
VERSION_CREATED = "version.created"

EVENTS = (
    DOCUMENT_UPDATED,
    MEMBER_ADDED,
    MEMBER_REMOVED,
    CONNECTION_OPENED,
    CONNECTION_CLOSED,
    VERSION_CREATED,
)
DEFAULT_GLOBAL_EVENTS = (DOCUMENT_UPDATED, MEMBER_ADDED, MEMBER_REMOVED, VERSION_CREATED)


def new_secret() -> str:
    """A webhook's signing secret: 32 random bytes, hex."""
    return secrets.token_hex(32)


def payload(event: str, project_uuid: str, data: Mapping[str, Any], now: datetime) -> str:
    """The exact body of an event: `{id, event, project, time, data}` as compact JSON.

    `id` is the event's own id (one per event, the same for every webhook it goes to).
    """
    body = {
        "id": uuid.uuid4().hex,
        "event": event,
        "project": project_uuid,
        "time": now.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "data": dict(data),
    }
    return json.dumps(body, separators=(",", ":"), sort_keys=True)


def parse_events(raw: str, *, name: str) -> tuple[str, ...]:
    """A comma-separated list of event names; ValueError naming `name` for an unknown one."""
    events = tuple(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))
    unknown = [event for event in events if event not in EVENTS]
    if unknown:
        raise ValueError(f"{name}: unknown event {unknown[0]!r} (known: {', '.join(EVENTS)})")
    return events


@dataclass(frozen=True)
class GlobalWebhooks:
    """The webhooks of the configuration (`WEBHOOK_URLS`), receiving every project's events."""

    urls: tuple[str, ...] = ()
    secret: str = ""
    events: tuple[str, ...] = DEFAULT_GLOBAL_EVENTS

    def subscribed(self, event: str) -> Sequence[str]:
        """The global URLs that receive `event`."""
        return self.urls if event in self.events else ()

"""eXeLearning's asset-coordination messages, as its client sends and reads them, for tests."""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.db.models import Asset, Project
from tests.support.yclient import YClient


def control(message_type: str, data: dict[str, Any]) -> bytes:
    """A control frame as the client's `_sendMessage` builds it: 0xFF + JSON."""
    return b"\xff" + json.dumps({"type": message_type, "data": data}).encode()


def messages(client: YClient, message_type: str) -> list[dict[str, Any]]:
    """The control messages of a type the client received, decoded as its handler does:
    binary 0xFF frames carry `{type, data}` (their data is returned), text frames the
    fields themselves."""
    found = []
    for frame in client.opaque:
        if isinstance(frame, bytes) and frame[:1] == b"\xff":
            parsed = json.loads(frame[1:])
            if parsed.get("type") == message_type:
                found.append(parsed["data"])
        elif isinstance(frame, str) and frame.startswith("{"):
            parsed = json.loads(frame)
            if parsed.get("type") == message_type:
                found.append(parsed)
    return found


def text_types(client: YClient) -> list[str]:
    """The types of the text control frames a client received (in order)."""
    return [json.loads(f)["type"] for f in client.opaque if isinstance(f, str) and f.startswith("{")]


async def wait_message(client: YClient, message_type: str, timeout: float = 10.0) -> dict[str, Any]:
    """The first message of that type, waiting for it."""
    await client.wait_until(lambda: bool(messages(client, message_type)), timeout)
    return messages(client, message_type)[0]


def asset_id() -> str:
    """An id shaped like eXeLearning's (a content hash laid out as a UUID)."""
    return str(uuid.uuid4())


async def store_asset(
    sessionmaker: async_sessionmaker[AsyncSession], room: str, client_id: str, *, size: int = 3
) -> None:
    """The row the gateway writes when a file with this client id is uploaded."""
    async with sessionmaker() as session, session.begin():
        project_id = await session.scalar(select(Project.id).where(Project.uuid == uuid.UUID(room.removeprefix("project-"))))
        session.add(Asset(
            project_id=project_id, name=f"{client_id}.png", path=f"x/{client_id}", size=size,
            sha256="0" * 64, content_type="image/png", client_id=client_id, folder_path="",
        ))

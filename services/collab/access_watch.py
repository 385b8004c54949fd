"""Re-checking every live connection's access, so revocations take effect.

Joining checks access once; this loop asks the access policy again every
`interval` seconds about every (user, project) pair with open connections,
in one batch (`roles_for_many`: one query for all of them). A
removed member, a deleted project or an unknown user is closed with 4403; a
changed role (editor <-> viewer) applies to the next frame. Every instance
does this on its own, so no cross-instance message is needed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

from services.collab.close_codes import CloseCode
from services.collab.connection import Connection
from services.collab.rooms import RoomManager
from shared.access import AccessPolicy

log = logging.getLogger(__name__)


async def recheck_access(rooms: RoomManager, access: AccessPolicy) -> int:
    """One pass; returns how many connections were closed."""
    groups: dict[tuple[str, str], list[Connection]] = defaultdict(list)
    for room in rooms.rooms():
        for conn in room.connections.values():
            groups[(room.project_uuid, conn.identity.user_id)].append(conn)
    if not groups:
        return 0
    try:
        roles = await access.roles_for_many(
            (conns[0].identity, project_uuid) for (project_uuid, _), conns in groups.items()
        )
    except Exception as exc:  # database down: keep serving, check again later  # noqa: BLE001
        log.warning("access re-check failed: %s", exc)
        return 0
    closed = 0
    for (project_uuid, user_id), conns in groups.items():
        role = roles.get((user_id, project_uuid))
        for conn in conns:
            if role is None:
                log.info(
                    "access revoked; closing",
                    extra={"project": project_uuid, "connection": conn.id},
                )
                conn.close_soon(CloseCode.FORBIDDEN, "forbidden")
                closed += 1
            else:
                conn.role = role
    return closed


async def run_access_watch(rooms: RoomManager, access: AccessPolicy, *, interval: float) -> None:
    """Forever: re-check access every `interval` seconds."""
    while True:
        await asyncio.sleep(interval)
        await recheck_access(rooms, access)

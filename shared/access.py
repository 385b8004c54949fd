"""Who may do what on a project: roles and the access-policy interface.

Collab and gateway ask one question, `role_for(identity, project_uuid)`, and
act on the answer; what answers it is plugged in at start-up.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from typing import Protocol

from shared.auth import Identity


class Role(str, Enum):
    OWNER = "owner"
    EDITOR = "editor"
    VIEWER = "viewer"

    @property
    def can_edit(self) -> bool:
        return self is not Role.VIEWER


class AccessPolicy(Protocol):
    async def role_for(self, identity: Identity, project_uuid: str) -> Role | None:
        """The caller's role on the project, or None when they have no access."""
        ...

    async def roles_for_many(
        self, requests: Iterable[tuple[Identity, str]]
    ) -> dict[tuple[str, str], Role | None]:
        """Roles keyed by (user id, project uuid): the periodic re-check of every open connection."""
        ...


class PolicyBase:
    """`roles_for_many` by asking `role_for` once per pair; a policy may do it in one query."""

    async def role_for(self, identity: Identity, project_uuid: str) -> Role | None:
        raise NotImplementedError

    async def roles_for_many(
        self, requests: Iterable[tuple[Identity, str]]
    ) -> dict[tuple[str, str], Role | None]:
        return {
            (identity.user_id, project_uuid): await self.role_for(identity, project_uuid)
            for identity, project_uuid in requests
        }

"""Who may do what on a project: roles and the access-policy interface.

Collab and gateway ask one question, `role_for(identity, project_uuid)`, and
act on the answer; what answers it is plugged in at start-up.
"""

from __future__ import annotations

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

    @property
    def can_manage(self) -> bool:
        return self is Role.OWNER


class AccessPolicy(Protocol):
    async def role_for(self, identity: Identity, project_uuid: str) -> Role | None:
        """The caller's role on the project, or None when they have no access."""
        ...


class OpenAccess:
    """Any valid token may edit any project: the policy until membership exists."""

    def __init__(self, role: Role = Role.EDITOR) -> None:
        self.role = role

    async def role_for(self, identity: Identity, project_uuid: str) -> Role | None:
        return self.role

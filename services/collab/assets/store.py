"""Who holds which asset, who waits for which, who is in a project: the coordinator's
shared state, and the way to reach a socket wherever it is.

`MemoryStore` (single-instance mode) keeps it in process; `RedisStore`
(`redis_store.py`, multi-instance mode) keeps it in Redis so that every
instance sees it. The coordinator never asks which one it holds.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import count
from typing import Protocol

from services.collab.assets.decisions import CoordinatorLimits, split_member

Deliver = Callable[[int, bytes | str], None]  # (connection id on this instance, frame)


@dataclass(frozen=True, slots=True)
class Announced:
    """The result of an awareness-update: ids kept, ids ignored over the project's
    bound, and the kept ids some socket waits for."""

    kept: int
    dropped: int
    waited: list[str]


class CoordinatorStore(Protocol):
    instance: str  # this instance's part of member keys

    async def start(self, deliver: Deliver) -> None:
        """From now on, frames for this instance's sockets are handed to `deliver`."""

    async def stop(self) -> None: ...

    async def join(self, project: str, member: str) -> list[str]:
        """Add a socket to the project; the live members, oldest first."""

    async def leave(self, project: str, member: str) -> None:
        """Remove a socket: its membership, what it holds and what it waits for."""

    async def announce(self, project: str, member: str, ids: list[str]) -> Announced:
        """Replace what `member` holds (bounded by the project's distinct ids)."""

    async def holders(self, project: str, asset: str) -> list[str]:
        """The live sockets holding `asset`."""

    async def holder_counts(self, project: str) -> dict[str, int]:
        """How many assets each live holder holds."""

    async def held_by(self, project: str, member: str) -> list[str]: ...

    async def members(self, project: str) -> list[str]:
        """The project's live members, oldest first."""

    async def waiters(self, project: str, asset: str) -> list[str]:
        """The sockets waiting for `asset` (they keep waiting)."""

    async def wait(self, project: str, asset: str, member: str) -> bool:
        """`member` waits for `asset`; False when the project's pending bound is reached."""

    async def take_waiters(self, project: str, asset: str) -> list[str]:
        """Every socket waiting for `asset`, no longer waiting."""

    async def holding(self, checks: list[tuple[str, str, str]]) -> list[bool]:
        """For each (project, holder, asset): is that holder alive and still holding it."""

    def send(self, member: str, frame: bytes | str) -> None:
        """Deliver a frame to a socket, on whichever instance it is (dropped if it is gone)."""


@dataclass(slots=True)
class _Project:
    members: dict[str, int] = field(default_factory=dict)  # member -> join order
    held: dict[str, set[str]] = field(default_factory=dict)  # member -> asset ids
    holders: defaultdict[str, set[str]] = field(
        default_factory=lambda: defaultdict(set)
    )  # asset -> members
    waiting: defaultdict[str, set[str]] = field(
        default_factory=lambda: defaultdict(set)
    )  # asset -> members
    pending: int = 0

    @property
    def empty(self) -> bool:
        return not (self.members or self.held or self.waiting)


class MemoryStore:
    """Single-instance mode: everything in this process."""

    instance = "local"

    def __init__(self, limits: CoordinatorLimits) -> None:
        self._limits = limits
        self._projects: dict[str, _Project] = {}
        self._order = count()
        self._deliver: Deliver | None = None

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver

    async def stop(self) -> None:
        self._deliver = None

    def _project(self, project: str) -> _Project:
        return self._projects.setdefault(project, _Project())

    async def join(self, project: str, member: str) -> list[str]:
        state = self._project(project)
        state.members.setdefault(member, next(self._order))
        return await self.members(project)

    async def members(self, project: str) -> list[str]:
        state = self._projects.get(project)
        return sorted(state.members, key=state.members.__getitem__) if state else []

    async def waiters(self, project: str, asset: str) -> list[str]:
        state = self._projects.get(project)
        return sorted(state.waiting.get(asset, ())) if state else []

    async def leave(self, project: str, member: str) -> None:
        state = self._projects.get(project)
        if state is None:
            return
        state.members.pop(member, None)
        self._drop_holdings(state, member)
        for asset, waiters in list(state.waiting.items()):
            if member in waiters:
                waiters.discard(member)
                state.pending -= 1
                if not waiters:
                    del state.waiting[asset]
        if state.empty:
            del self._projects[project]

    def _drop_holdings(self, state: _Project, member: str) -> None:
        for asset in state.held.pop(member, set()):
            holders = state.holders[asset]
            holders.discard(member)
            if not holders:
                del state.holders[asset]

    async def announce(self, project: str, member: str, ids: list[str]) -> Announced:
        state = self._project(project)
        self._drop_holdings(state, member)
        kept: set[str] = set()
        dropped = 0
        for asset in ids:
            if asset not in state.holders and len(state.holders) >= self._limits.ids_per_project:
                dropped += 1
                continue
            kept.add(asset)
            state.holders[asset].add(member)
        if kept:
            state.held[member] = kept
        return Announced(len(kept), dropped, [a for a in ids if a in kept and state.waiting.get(a)])

    async def holders(self, project: str, asset: str) -> list[str]:
        state = self._projects.get(project)
        return sorted(state.holders.get(asset, ())) if state else []

    async def holder_counts(self, project: str) -> dict[str, int]:
        state = self._projects.get(project)
        return {member: len(ids) for member, ids in state.held.items()} if state else {}

    async def held_by(self, project: str, member: str) -> list[str]:
        state = self._projects.get(project)
        return sorted(state.held.get(member, ())) if state else []

    async def wait(self, project: str, asset: str, member: str) -> bool:
        state = self._project(project)
        if member in state.waiting.get(asset, ()):
            return True
        if state.pending >= self._limits.pending_per_project:
            return False
        state.waiting[asset].add(member)
        state.pending += 1
        return True

    async def take_waiters(self, project: str, asset: str) -> list[str]:
        state = self._projects.get(project)
        if state is None:
            return []
        waiters = state.waiting.pop(asset, set())
        state.pending -= len(waiters)
        return sorted(waiters)

    async def holding(self, checks: list[tuple[str, str, str]]) -> list[bool]:
        result = []
        for project, holder, asset in checks:
            state = self._projects.get(project)
            result.append(state is not None and asset in state.held.get(holder, ()))
        return result

    def send(self, member: str, frame: bytes | str) -> None:
        instance, connection_id = split_member(member)
        if instance == self.instance and self._deliver is not None:
            self._deliver(connection_id, frame)

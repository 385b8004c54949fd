"""The coordinator's pure choices: who is asked for a file, what waits, the limits."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class CoordinatorLimits:
    """Bounds on what clients may make the coordinator hold."""

    ids_per_message: int = (
        5_000  # asset ids in one awareness-update / navigation-hint (1008 beyond)
    )
    ids_per_project: int = 50_000  # distinct held asset ids per project (further ids are ignored)
    pending_per_project: int = (
        10_000  # (asset, waiting socket) pairs per project (asset-not-found beyond)
    )
    asks_per_instance: int = 10_000  # upload requests this instance follows up at once
    message_bytes: int = 4 * 1024 * 1024  # one control frame (1009 beyond)
    manifest_entries: int = 50_000  # files in one upload-session-create (1008 beyond)


def member_key(instance: str, connection_id: int) -> str:
    """A socket's name across instances: `{instance hex}/{connection id}`."""
    return f"{instance}/{connection_id}"


def split_member(key: str) -> tuple[str, int]:
    """(instance hex, connection id) of a member key; ValueError when malformed."""
    instance, _, connection = key.partition("/")
    if not instance or not connection.isdigit():
        raise ValueError(f"not a member key: {key!r}")
    return instance, int(connection)


def pick_holder(holders: Iterable[str], exclude: Iterable[str] = ()) -> str | None:
    """The socket to ask for an upload: a holder other than the excluded (the
    requester, holders that failed or died); the same one for the same inputs."""
    excluded = set(exclude)
    candidates = sorted(h for h in holders if h not in excluded)
    return candidates[0] if candidates else None


def pick_bulk_holder(counts: Mapping[str, int]) -> str | None:
    """The holder of the most assets (ties: the smallest key), None when nobody holds any."""
    best = [(-count, key) for key, count in counts.items() if count > 0]
    return min(best)[1] if best else None


@dataclass(slots=True)
class Ask:
    """An upload asked of `holder` (`tried`: holders asked before, `at`: when, monotonic)."""

    holder: str
    at: float
    tried: set[str] = field(default_factory=set)


class Asks:
    """The upload requests this instance sent and follows up (bounded): when the asked
    holder goes away, or does not deliver within `timeout`, before the file is stored,
    the waiters are served again (another holder, or asset-not-found)."""

    def __init__(self, limit: int, timeout: float) -> None:
        self._limit = limit
        self._timeout = timeout
        self._asks: dict[tuple[str, str], Ask] = {}

    def __len__(self) -> int:
        return len(self._asks)

    def get(self, project: str, asset: str) -> Ask | None:
        return self._asks.get((project, asset))

    def record(self, project: str, asset: str, holder: str, now: float) -> bool:
        """Follow up an upload of `asset` asked of `holder`; False when full."""
        ask = self._asks.get((project, asset))
        if ask is None:
            if len(self._asks) >= self._limit:
                return False
            self._asks[(project, asset)] = Ask(holder, now)
            return True
        if ask.holder != holder:
            ask.tried.add(ask.holder)
            ask.holder = holder
        ask.at = now
        return True

    def resolve(self, project: str, asset: str) -> Ask | None:
        """Stop following an upload up (the file is stored, nobody waits, nobody holds it)."""
        return self._asks.pop((project, asset), None)

    def pending(self) -> list[tuple[str, str, Ask]]:
        """(project, asset, ask) for every followed-up upload."""
        return [(project, asset, ask) for (project, asset), ask in self._asks.items()]

    def overdue(self, ask: Ask, now: float) -> bool:
        """Asked longer ago than the timeout: the holder is alive but did not deliver."""
        return now - ask.at >= self._timeout

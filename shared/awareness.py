"""Awareness updates (y-protocols/awareness) decoded and tracked, without I/O.

The server never interprets awareness *states*; it only needs each entry's
client id and clock, to hand the current states to a joining client and to
announce the removal of a departed connection's clients (state `null`, clock+1),
exactly as y-protocols' `removeAwarenessStates` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Hashable, Iterable

from shared.protocol import ProtocolError, read_var_bytes, read_var_uint, write_var_uint

NULL_STATE = b"null"


@dataclass(frozen=True, slots=True)
class AwarenessEntry:
    client_id: int
    clock: int
    state: bytes  # the JSON text, as sent; b"null" means "removed"

    @property
    def removed(self) -> bool:
        return self.state == NULL_STATE


def decode_awareness_update(data: bytes) -> list[AwarenessEntry]:
    """Decode an encoded awareness update; raise ProtocolError when malformed."""
    count, pos = read_var_uint(data, 0)
    entries = []
    for _ in range(count):
        client_id, pos = read_var_uint(data, pos)
        clock, pos = read_var_uint(data, pos)
        state, pos = read_var_bytes(data, pos)
        entries.append(AwarenessEntry(client_id, clock, state))
    return entries


def encode_awareness_update(entries: Iterable[AwarenessEntry]) -> bytes:
    """Encode entries as an awareness update (the inverse of decode)."""
    entries = list(entries)
    parts = [write_var_uint(len(entries))]
    for entry in entries:
        parts += [
            write_var_uint(entry.client_id),
            write_var_uint(entry.clock),
            write_var_uint(len(entry.state)),
            entry.state,
        ]
    return b"".join(parts)


class AwarenessRegistry:
    """The latest awareness entry per client id in one room, and who owns it.

    An owner is any hashable key: a local connection, or a remote instance id.
    """

    def __init__(self) -> None:
        self._entries: dict[int, AwarenessEntry] = {}
        self._owners: dict[int, Hashable] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def apply(self, owner: Hashable, entries: Iterable[AwarenessEntry]) -> None:
        """Record entries announced by `owner` (newer clocks win, as in y-protocols)."""
        for entry in entries:
            current = self._entries.get(entry.client_id)
            if current is not None and entry.clock < current.clock:
                continue
            if current is not None and entry.clock == current.clock and not entry.removed:
                # Same state re-announced (e.g. after a reconnect elsewhere): the
                # announcer owns it now, so the old owner's departure won't remove it.
                self._owners[entry.client_id] = owner
                continue
            if entry.removed:
                self._entries.pop(entry.client_id, None)
                self._owners.pop(entry.client_id, None)
            else:
                self._entries[entry.client_id] = entry
                self._owners[entry.client_id] = owner

    def snapshot(self, owned_by: Callable[[Hashable], bool] | None = None) -> bytes | None:
        """Current states (of the owners `owned_by` accepts, default all) as one
        awareness update, or None when there are none."""
        entries = [
            entry
            for client_id, entry in self._entries.items()
            if owned_by is None or owned_by(self._owners[client_id])
        ]
        return encode_awareness_update(entries) if entries else None

    def owners(self) -> set[Hashable]:
        return set(self._owners.values())

    def remove_owner(self, owner: Hashable) -> bytes | None:
        """Forget every client owned by `owner`; return the removal update to broadcast."""
        removed = [
            AwarenessEntry(cid, self._entries[cid].clock + 1, NULL_STATE)
            for cid, who in list(self._owners.items())
            if who == owner
        ]
        for entry in removed:
            del self._entries[entry.client_id]
            del self._owners[entry.client_id]
        return encode_awareness_update(removed) if removed else None

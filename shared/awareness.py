"""Awareness updates (y-protocols/awareness) decoded and tracked, without I/O.

The server never interprets awareness *states*; it only needs each entry's
client id and clock, to hand the current states to a joining client and to
announce the removal of a departed connection's clients (state `null`, clock+1),
exactly as y-protocols' `removeAwarenessStates` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Hashable, Iterable

from shared.protocol import read_var_bytes, read_var_uint, write_var_uint

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
        self._removed: dict[int, int] = {}  # clock of each removed client id

    def __len__(self) -> int:
        return len(self._entries)

    def apply(self, owner: Hashable, entries: Iterable[AwarenessEntry]) -> None:
        """Record entries announced by `owner` (newer clocks win, as in y-protocols).

        Only a client advances its own clock, so the owner of a client id is
        whoever last announced a newer clock for it. A same-clock
        re-announcement changes nothing: the stock y-websocket client echoes
        every peer state it receives back to the server, and such an echo must
        not take the state over (else the peer's departure would leave a
        ghost). A client that reconnected takes its state back with its next
        renewal. Removed ids keep their clock, so a late echo cannot revive them.
        """
        for entry in entries:
            cid = entry.client_id
            current = self._entries.get(cid)
            known = current.clock if current is not None else self._removed.get(cid)
            if known is not None and (
                entry.clock < known
                or (entry.clock == known and not (entry.removed and current is not None))
            ):
                continue
            if entry.removed:
                self._entries.pop(cid, None)
                self._owners.pop(cid, None)
                self._removed[cid] = entry.clock
            else:
                self._entries[cid] = entry
                self._owners[cid] = owner
                self._removed.pop(cid, None)

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
            self._removed[entry.client_id] = entry.clock
        return encode_awareness_update(removed) if removed else None

"""Awareness updates (y-protocols/awareness) decoded, bounded and owned, without I/O.

The server never interprets awareness *states*; it only needs each entry's
client id and clock, to hand the current states to a joining client and to
announce the removal of a departed connection's clients (state `null`, clock+1),
exactly as y-protocols' `removeAwarenessStates` does.

Bounds (`AwarenessLimits`): entries per frame and bytes per state are checked
while scanning, before anything is copied (a frame announcing a million
entries is refused on its first varint); client ids per owner and encoded
bytes per room are enforced by the registry. Ownership: a client id belongs to
the owner that first announced it (an `AwarenessOwner`: a connection of this
instance, or a connection of another instance) until that owner removes it or
goes away; entries for it from anyone else are dropped.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from shared.protocol import ProtocolError, read_var_uint, write_var_uint

NULL_STATE = b"null"
#: Removed client ids remembered per room (their clock stops a late echo reviving them).
MAX_TOMBSTONES = 4096


@dataclass(frozen=True, slots=True)
class AwarenessLimits:
    """What one awareness frame, one connection and one room may hold (README "Configuration")."""

    max_entries: int = 100  # entries per frame
    max_state_bytes: int = 64 * 1024  # bytes of one state (its JSON text)
    max_client_ids: int = 16  # client ids one connection may own in a room
    max_room_bytes: int = 4 * 1024 * 1024  # encoded bytes of every state of a room


class AwarenessLimitExceeded(ProtocolError):
    """A frame over a per-frame or per-connection awareness limit.

    `reason` names the limit; `too_big` is set when the frame was too large
    (close 1009) rather than too many (close 1008)."""

    def __init__(self, reason: str, message: str, *, too_big: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.too_big = too_big


@dataclass(frozen=True, slots=True)
class AwarenessOwner:
    """Who announced an awareness entry: connection `connection_id` of this instance
    (`instance_id` None) or of the instance `instance_id` (its 16-byte id)."""

    connection_id: int
    instance_id: bytes | None = None

    @classmethod
    def local(cls, connection_id: int) -> AwarenessOwner:
        return cls(connection_id)

    @classmethod
    def remote(cls, instance_id: bytes, connection_id: int) -> AwarenessOwner:
        return cls(connection_id, instance_id)

    @property
    def is_local(self) -> bool:
        return self.instance_id is None


@dataclass(frozen=True, slots=True)
class AwarenessEntry:
    client_id: int
    clock: int
    state: bytes  # the JSON text, as sent; b"null" means "removed"

    @property
    def removed(self) -> bool:
        return self.state == NULL_STATE

    @property
    def encoded_size(self) -> int:
        """Bytes this entry takes in an encoded awareness update."""
        return (
            len(write_var_uint(self.client_id))
            + len(write_var_uint(self.clock))
            + len(write_var_uint(len(self.state)))
            + len(self.state)
        )


def decode_awareness_update(
    data: bytes, limits: AwarenessLimits | None = None
) -> list[AwarenessEntry]:
    """Decode an encoded awareness update; raise ProtocolError when malformed and
    AwarenessLimitExceeded when over `limits` (checked before the entries are read)."""
    count, pos = read_var_uint(data, 0)
    if count * 3 > len(data) - pos:  # every entry takes at least three bytes
        raise ProtocolError(f"{count} awareness entries announced in {len(data)} bytes")
    if limits is not None and count > limits.max_entries:
        raise AwarenessLimitExceeded(
            "entries", f"{count} awareness entries in one frame (at most {limits.max_entries})"
        )
    max_state = limits.max_state_bytes if limits is not None else len(data)
    entries = []
    for _ in range(count):
        client_id, pos = read_var_uint(data, pos)
        clock, pos = read_var_uint(data, pos)
        length, pos = read_var_uint(data, pos)
        if length > max_state:
            raise AwarenessLimitExceeded(
                "state_bytes",
                f"an awareness state of {length} bytes (at most {max_state})",
                too_big=True,
            )
        end = pos + length
        if end > len(data):
            raise ProtocolError(
                f"truncated awareness state: {length} bytes announced, {len(data) - pos} present"
            )
        entries.append(AwarenessEntry(client_id, clock, data[pos:end]))
        pos = end
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


def encode_in_chunks(entries: Sequence[AwarenessEntry], size: int) -> list[bytes]:
    """Entries as awareness updates of at most `size` entries each (none for no entries).

    Whatever the server sends stays within the per-frame limit, so a stock
    client's echo of it (y-websocket re-sends every state it receives) does too."""
    size = max(1, size)
    return [encode_awareness_update(entries[i : i + size]) for i in range(0, len(entries), size)]


@dataclass(slots=True)
class Applied:
    """What `AwarenessRegistry.apply` kept (to relay) and dropped (by reason)."""

    accepted: list[AwarenessEntry] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)


class AwarenessRegistry:
    """The latest awareness entry per client id in one room, who owns it (`AwarenessOwner`),
    and its bytes."""

    def __init__(self, limits: AwarenessLimits | None = None) -> None:
        self.limits = limits or AwarenessLimits()
        self._entries: dict[int, AwarenessEntry] = {}
        self._owners: dict[int, AwarenessOwner] = {}
        self._owned: dict[AwarenessOwner, set[int]] = {}
        self._removed: OrderedDict[int, int] = OrderedDict()  # clock of each removed client id
        self.bytes = 0  # encoded size of every current entry

    def __len__(self) -> int:
        return len(self._entries)

    def apply(self, owner: AwarenessOwner, entries: Iterable[AwarenessEntry]) -> Applied:
        """Record entries announced by `owner`; return those accepted and the drops.

        Newer clocks win, as in y-protocols, but only from the id's owner: the
        first to announce it, until it removes it or leaves. A same-clock
        re-announcement changes nothing: the stock y-websocket client echoes
        every peer state it receives back to the server (`stale`). Entries for
        another owner's id (`foreign`), beyond the owner's `max_client_ids`
        (`client_ids`) or past the room's `max_room_bytes` (`room_bytes`) are
        dropped. Removed ids keep their clock, so a late echo cannot revive them.
        """
        result = Applied()
        for entry in entries:
            reason = self._admit(owner, entry)
            if reason is None:
                result.accepted.append(entry)
            else:
                result.dropped[reason] += 1
        return result

    def _admit(self, owner: AwarenessOwner, entry: AwarenessEntry) -> str | None:
        cid = entry.client_id
        current = self._entries.get(cid)
        known = current.clock if current is not None else self._removed.get(cid)
        if known is not None and (
            entry.clock < known
            or (entry.clock == known and not (entry.removed and current is not None))
        ):
            return "stale"
        holder = self._owners.get(cid)
        if holder is not None and holder != owner:
            return "foreign"
        if entry.removed:
            if current is None:
                return "stale"  # nothing to remove
            self._forget(cid)
            self._tombstone(cid, entry.clock)
            return None
        owned = self._owned.get(owner)
        if holder is None and owned is not None and len(owned) >= self.limits.max_client_ids:
            return "client_ids"
        grown = entry.encoded_size - (current.encoded_size if current is not None else 0)
        if self.bytes + grown > self.limits.max_room_bytes:
            return "room_bytes"
        self._entries[cid] = entry
        self.bytes += grown
        if holder is None:
            self._owners[cid] = owner
            self._owned.setdefault(owner, set()).add(cid)
        self._removed.pop(cid, None)
        return None

    def _forget(self, cid: int) -> AwarenessEntry:
        entry = self._entries.pop(cid)
        self.bytes -= entry.encoded_size
        owner = self._owners.pop(cid)
        owned = self._owned[owner]
        owned.discard(cid)
        if not owned:
            del self._owned[owner]
        return entry

    def _tombstone(self, cid: int, clock: int) -> None:
        self._removed[cid] = clock
        self._removed.move_to_end(cid)
        while len(self._removed) > MAX_TOMBSTONES:
            self._removed.popitem(last=False)

    def states(self) -> list[AwarenessEntry]:
        """Every current entry."""
        return list(self._entries.values())

    def local_states(self) -> dict[int, list[AwarenessEntry]]:
        """Current entries of this instance's connections, by connection id."""
        return {
            owner.connection_id: [self._entries[cid] for cid in ids]
            for owner, ids in self._owned.items()
            if owner.is_local
        }

    def remote_instances(self) -> set[bytes]:
        """The other instances whose connections own entries here."""
        return {owner.instance_id for owner in self._owned if owner.instance_id is not None}

    def remove_owner(self, owner: AwarenessOwner) -> list[AwarenessEntry]:
        """Forget every client owned by `owner`; return the removal entries to broadcast."""
        removed = []
        for cid in list(self._owned.get(owner, ())):
            entry = self._forget(cid)
            self._tombstone(cid, entry.clock + 1)
            removed.append(AwarenessEntry(cid, entry.clock + 1, NULL_STATE))
        return removed

    def remove_instance(self, instance_id: bytes) -> list[AwarenessEntry]:
        """`remove_owner` for every connection of another instance (one that went away)."""
        owners = [owner for owner in self._owned if owner.instance_id == instance_id]
        return [entry for owner in owners for entry in self.remove_owner(owner)]

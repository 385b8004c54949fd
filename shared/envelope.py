"""The Redis fan-out envelope: `instance id (16 bytes) | kind (1 byte) | body`.

Pure encoding, no I/O. Every instance drops envelopes carrying its own id.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import IntEnum

from shared.protocol import read_var_uint, write_var_uint

INSTANCE_ID_BYTES = 16
HEADER_BYTES = INSTANCE_ID_BYTES + 1


class Kind(IntEnum):
    UPDATE = 0  # body: a Yjs update accepted by the sender
    AWARENESS = 1  # body: varUint connection id + an awareness update of that connection's states
    OPAQUE = 2  # body: a binary frame relayed as-is
    OPAQUE_TEXT = 3  # body: a UTF-8 text frame relayed as-is
    SYNC_REQUEST = (
        4  # body: flags (1 byte) + the sender's state vector; peers answer with SYNC_REPLY
    )
    SYNC_REPLY = 5  # body: target instance id (16 bytes) + the update it misses
    STORED = 6  # body: the Redis key holding a large envelope (see shared/redis_contract.py)


class EnvelopeError(ValueError):
    """Bytes on a channel that are not a valid envelope."""


@dataclass(frozen=True, slots=True)
class Envelope:
    sender: bytes
    kind: Kind
    body: bytes


_KINDS = {int(k): k for k in Kind}


def encode_envelope(sender: bytes, kind: Kind, body: bytes) -> bytes:
    return sender + bytes((kind,)) + body


def decode_envelope(data: bytes) -> Envelope:
    """Split an envelope; raise EnvelopeError when it is malformed."""
    if len(data) < HEADER_BYTES:
        raise EnvelopeError(f"envelope too short ({len(data)} bytes)")
    kind = _KINDS.get(data[INSTANCE_ID_BYTES])
    if kind is None:
        raise EnvelopeError(f"unknown envelope kind {data[INSTANCE_ID_BYTES]}")
    body = data[HEADER_BYTES:]
    if kind is Kind.SYNC_REPLY and len(body) < INSTANCE_ID_BYTES:
        raise EnvelopeError("sync reply without a target")
    return Envelope(data[:INSTANCE_ID_BYTES], kind, body)


#: SYNC_REQUEST flag: "and send me your state vector too" (set after a reconnect,
#: so that whichever of two instances reconnects second starts a full exchange).
ASK_BACK = 0x01


def sync_request_body(state_vector: bytes, *, ask_back: bool) -> bytes:
    return bytes((ASK_BACK if ask_back else 0,)) + state_vector


def split_sync_request(body: bytes) -> tuple[bool, bytes]:
    """(ask back?, state vector) of a SYNC_REQUEST body."""
    if not body:
        raise EnvelopeError("sync request without flags")
    return bool(body[0] & ASK_BACK), body[1:]


def sync_reply_body(target: bytes, update: bytes) -> bytes:
    """The body of a SYNC_REPLY addressed to instance `target`."""
    return target + update


def split_sync_reply(body: bytes) -> tuple[bytes, bytes]:
    """(target instance id, update) of a SYNC_REPLY body."""
    return body[:INSTANCE_ID_BYTES], body[INSTANCE_ID_BYTES:]


def awareness_body(connection_id: int, awareness_update: bytes) -> bytes:
    """The body of an AWARENESS envelope: the sender's connection that owns the states, then them."""
    return write_var_uint(connection_id) + awareness_update


def split_awareness(body: bytes) -> tuple[int, bytes]:
    """(connection id, awareness update) of an AWARENESS body; ProtocolError when truncated."""
    connection_id, pos = read_var_uint(body, 0)
    return connection_id, body[pos:]


def instance_id_bytes(name: str) -> bytes:
    """The 16-byte envelope id of an instance name (a 32-hex id is used as is)."""
    try:
        raw = bytes.fromhex(name)
    except ValueError:
        raw = b""
    return (
        raw
        if len(raw) == INSTANCE_ID_BYTES
        else hashlib.blake2b(name.encode(), digest_size=16).digest()
    )

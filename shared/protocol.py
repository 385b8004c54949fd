"""The y-websocket wire protocol: parse incoming frames, build outgoing ones.

Pure functions, no I/O. Message types follow y-protocols: 0 sync (sub-types
step1, step2, update), 1 awareness, 2 auth, 3 query awareness. Anything else is
OPAQUE: relayed as-is, never interpreted. Building messages reuses pycrdt's
helpers; parsing is done here because pycrdt's decoder does not report
truncated input as an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from pycrdt import create_awareness_message, create_update_message, write_message, write_var_uint

__all__ = [
    "EMPTY_STATE_VECTOR",
    "EMPTY_UPDATE",
    "Frame",
    "FrameKind",
    "ProtocolError",
    "carries_update",
    "encode_awareness",
    "encode_permission_denied",
    "encode_query_awareness",
    "encode_sync_step1",
    "encode_sync_step2",
    "encode_sync_update",
    "parse_frame",
    "read_var_bytes",
    "read_var_uint",
    "sync_step2_head",
    "write_var_uint",
]

MESSAGE_SYNC = 0
MESSAGE_AWARENESS = 1
MESSAGE_AUTH = 2
MESSAGE_QUERY_AWARENESS = 3

SYNC_STEP1 = 0
SYNC_STEP2 = 1
SYNC_UPDATE = 2

AUTH_PERMISSION_DENIED = 0

#: The encoding of a Yjs update that changes nothing (no structs, no deletes).
EMPTY_UPDATE = b"\x00\x00"

#: The state vector of a client that has nothing yet (a fresh join).
EMPTY_STATE_VECTOR = b"\x00"


class ProtocolError(ValueError):
    """A frame of a known message type that does not parse."""


class FrameKind(Enum):
    SYNC_STEP1 = "sync_step1"
    SYNC_STEP2 = "sync_step2"
    SYNC_UPDATE = "sync_update"
    AWARENESS = "awareness"
    AUTH = "auth"
    QUERY_AWARENESS = "query_awareness"
    OPAQUE = "opaque"


@dataclass(frozen=True, slots=True)
class Frame:
    """A parsed frame. `payload` is the state vector (step1), the Yjs update
    (step2/update), the awareness update, the auth reason, b"" for query
    awareness, or the whole frame for OPAQUE."""

    kind: FrameKind
    payload: bytes


_SYNC_KINDS = {
    SYNC_STEP1: FrameKind.SYNC_STEP1,
    SYNC_STEP2: FrameKind.SYNC_STEP2,
    SYNC_UPDATE: FrameKind.SYNC_UPDATE,
}


def read_var_uint(data: bytes, pos: int) -> tuple[int, int]:
    """Decode a lib0 varUint at `pos`; return (value, next position)."""
    value = 0
    shift = 0
    end = len(data)
    while True:
        if pos >= end:
            raise ProtocolError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ProtocolError("varint too long")


def read_var_bytes(data: bytes, pos: int) -> tuple[bytes, int]:
    """Decode a lib0 varUint8Array (length-prefixed bytes) at `pos`."""
    length, pos = read_var_uint(data, pos)
    end = pos + length
    if end > len(data):
        raise ProtocolError(
            f"truncated payload: {length} bytes announced, {len(data) - pos} present"
        )
    return data[pos:end], end


def carries_update(data: bytes) -> bool:
    """True for a sync step 2 or update frame: the only kind that may hold a whole document."""
    return len(data) >= 2 and data[0] == MESSAGE_SYNC and data[1] in (SYNC_STEP2, SYNC_UPDATE)


def parse_frame(data: bytes) -> Frame:
    """Classify and decode one WebSocket binary frame.

    Raises ProtocolError when the frame claims a known message type but does
    not parse; unknown message types come back as OPAQUE.
    """
    if not data:
        raise ProtocolError("empty frame")
    message_type, pos = read_var_uint(data, 0)
    if message_type == MESSAGE_SYNC:
        sync_type, pos = read_var_uint(data, pos)
        kind = _SYNC_KINDS.get(sync_type)
        if kind is None:
            raise ProtocolError(f"unknown sync message type {sync_type}")
        payload, _ = read_var_bytes(data, pos)
        return Frame(kind, payload)
    if message_type == MESSAGE_AWARENESS:
        payload, _ = read_var_bytes(data, pos)
        return Frame(FrameKind.AWARENESS, payload)
    if message_type == MESSAGE_AUTH:
        auth_type, pos = read_var_uint(data, pos)
        if auth_type != AUTH_PERMISSION_DENIED:
            raise ProtocolError(f"unknown auth message type {auth_type}")
        reason, _ = read_var_bytes(data, pos)
        return Frame(FrameKind.AUTH, reason)
    if message_type == MESSAGE_QUERY_AWARENESS:
        return Frame(FrameKind.QUERY_AWARENESS, b"")
    return Frame(FrameKind.OPAQUE, data)


def encode_sync_step1(state_vector: bytes) -> bytes:
    """SyncStep1: 'here is my state vector, send me what I miss'."""
    return bytes((MESSAGE_SYNC, SYNC_STEP1)) + write_message(state_vector)


def encode_sync_step2(update: bytes) -> bytes:
    """SyncStep2: the answer to a SyncStep1."""
    return sync_step2_head(len(update)) + update


def sync_step2_head(length: int) -> bytes:
    """What precedes an update of `length` bytes in a SyncStep2 (for joining the two once)."""
    return bytes((MESSAGE_SYNC, SYNC_STEP2)) + write_var_uint(length)


def encode_sync_update(update: bytes) -> bytes:
    """A sync Update message carrying one Yjs update."""
    return create_update_message(update)


def encode_awareness(awareness_update: bytes) -> bytes:
    """An awareness message carrying an encoded awareness update."""
    return create_awareness_message(awareness_update)


def encode_permission_denied(reason: str) -> bytes:
    """y-protocols/auth permission-denied message."""
    raw = reason.encode()
    return bytes([MESSAGE_AUTH, AUTH_PERMISSION_DENIED]) + write_var_uint(len(raw)) + raw


def encode_query_awareness() -> bytes:
    """A query-awareness message (the peer answers with its awareness states)."""
    return bytes([MESSAGE_QUERY_AWARENESS])

"""WebSocket frames built once and written to many sockets (RFC 6455 §5.2).

A room broadcasts the same bytes to every connection, so the frame (header +
payload) is encoded once per broadcast instead of once per socket. Server
frames are never masked, and this service does not negotiate compression.
Control frames (close, ping, pong) are built here too: the collab socket
(`frame_socket.py`) writes every frame itself.
"""

from __future__ import annotations

import struct

OPCODE_TEXT = 0x1
OPCODE_BINARY = 0x2
OPCODE_CLOSE = 0x8
OPCODE_PING = 0x9
OPCODE_PONG = 0xA
#: A control frame's payload is at most 125 bytes (RFC 6455 §5.5); a close frame's holds the code.
MAX_CLOSE_REASON = 123
_FIN = 0x80


def encode_frame(payload: bytes | memoryview | str) -> bytes:
    """A final, unmasked, uncompressed data frame: binary for bytes, text for str."""
    if isinstance(payload, str):
        return frame_header(len(data := payload.encode()), OPCODE_TEXT) + data
    return frame_header(len(payload)) + payload


def frame_header(length: int, opcode: int = OPCODE_BINARY) -> bytes:
    """The header of a final, unmasked data frame whose payload is `length` bytes long."""
    if length < 126:
        return struct.pack("!BB", _FIN | opcode, length)
    if length < 65536:
        return struct.pack("!BBH", _FIN | opcode, 126, length)
    return struct.pack("!BBQ", _FIN | opcode, 127, length)


def control_frame(opcode: int, payload: bytes = b"") -> bytes:
    """A ping, pong or close frame (`payload` cut to the 125 bytes a control frame may carry)."""
    return frame_header(len(payload := payload[:125]), opcode) + payload


def close_frame(code: int, reason: bytes = b"") -> bytes:
    """A close frame with `code` and `reason` (cut to what fits)."""
    return control_frame(OPCODE_CLOSE, struct.pack("!H", code) + reason[:MAX_CLOSE_REASON])

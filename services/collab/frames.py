"""WebSocket frames built once and written to many sockets (RFC 6455 §5.2).

A room broadcasts the same bytes to every connection, so the frame (header +
payload) is encoded once per broadcast instead of once per socket. Server
frames are never masked, and this service does not negotiate compression.
"""

from __future__ import annotations

import struct

OPCODE_TEXT = 0x1
OPCODE_BINARY = 0x2
_FIN = 0x80


def encode_frame(payload: bytes | str) -> bytes:
    """A final, unmasked, uncompressed data frame: binary for bytes, text for str."""
    if isinstance(payload, str):
        data, opcode = payload.encode(), OPCODE_TEXT
    else:
        data, opcode = payload, OPCODE_BINARY
    length = len(data)
    if length < 126:
        header = struct.pack("!BB", _FIN | opcode, length)
    elif length < 65536:
        header = struct.pack("!BBH", _FIN | opcode, 126, length)
    else:
        header = struct.pack("!BBQ", _FIN | opcode, 127, length)
    return header + data

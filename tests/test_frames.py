"""WebSocket frames encoded once per broadcast (services/collab/frames.py)."""

from __future__ import annotations

import struct

import pytest

from services.collab.frames import encode_frame

pytestmark = pytest.mark.unit


def parse(frame: bytes) -> tuple[int, bytes]:
    """(opcode, payload) of an unmasked final frame, per RFC 6455 §5.2."""
    assert frame[0] & 0x80 and not frame[1] & 0x80  # FIN set, no mask
    length, offset = frame[1] & 0x7F, 2
    if length == 126:
        (length,), offset = struct.unpack("!H", frame[2:4]), 4
    elif length == 127:
        (length,), offset = struct.unpack("!Q", frame[2:10]), 10
    payload = frame[offset:]
    assert len(payload) == length
    return frame[0] & 0x0F, payload


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 300_000])
def test_binary_frames_of_every_length_class(size: int) -> None:
    payload = bytes(i % 251 for i in range(size))
    assert parse(encode_frame(payload)) == (0x2, payload)


def test_text_frames_are_utf8() -> None:
    assert parse(encode_frame("héllo 🌍")) == (0x1, "héllo 🌍".encode())

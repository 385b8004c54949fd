"""Control frames: a binary frame `0xFF` + UTF-8 JSON `{type, data}`, or a legacy JSON text frame.

They are for the server: interpreted, never relayed, never applied to the
document. Which frames the server sends as text and which as `0xFF` binary
follows eXeLearning's client: it reads `trigger-resync` and `request-sync-state`
only from text frames, everything else only from binary ones.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from services.collab.close_codes import CloseCode

PREFIX = 0xFF
ASSET_ID = re.compile(r"^[0-9A-Za-z_-]{1,64}$")  # eXeLearning's ids are UUID-shaped content hashes
TEXT_MESSAGES = frozenset({"trigger-resync", "request-sync-state"})


class ControlRefused(Exception):
    """A control frame the connection is closed for (`code`, `reason`)."""

    def __init__(self, code: CloseCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class BadControl(ValueError):
    """A well-formed control frame whose content is refused; answered with an `error` message."""


@dataclass(frozen=True, slots=True)
class ControlMessage:
    type: str
    data: dict[str, Any]


def is_control(frame: bytes | str) -> bool:
    """A `0xFF` binary frame, or a text frame holding a JSON object."""
    if isinstance(frame, str):
        return frame.lstrip().startswith("{")
    return bool(frame) and frame[0] == PREFIX


def decode_control(frame: bytes | str, max_bytes: int) -> ControlMessage:
    """The message of a control frame; ControlRefused when it is too large (1009) or not
    a JSON object with a string `type` (1007)."""
    size = len(frame) if isinstance(frame, bytes) else len(frame.encode())
    if size > max_bytes:
        raise ControlRefused(CloseCode.MESSAGE_TOO_BIG, "control message too big")
    try:
        parsed = json.loads(frame[1:] if isinstance(frame, bytes) else frame)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ControlRefused(CloseCode.INVALID_DATA, "control message is not JSON") from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("type"), str):
        raise ControlRefused(CloseCode.INVALID_DATA, "control message without a type")
    data = parsed.get("data")
    if data is None:  # trigger-style messages carry their fields at the top level
        data = {k: v for k, v in parsed.items() if k != "type"}
    if not isinstance(data, dict):
        raise BadControl("data must be an object")
    return ControlMessage(parsed["type"], data)


def asset_id(value: Any) -> str:
    """An asset id from a message, or BadControl."""
    if not isinstance(value, str) or not ASSET_ID.match(value):
        raise BadControl("assetId must be 1-64 letters, digits, '-' or '_'")
    return value


def asset_ids(value: Any, limit: int) -> list[str]:
    """A list of asset ids (duplicates dropped); ControlRefused (1008) past `limit`."""
    if not isinstance(value, list):
        raise BadControl("asset ids must be a list")
    if len(value) > limit:
        raise ControlRefused(
            CloseCode.POLICY_VIOLATION, f"more than {limit} asset ids in one message"
        )
    return list(dict.fromkeys(asset_id(item) for item in value))


def encode(message_type: str, data: dict[str, Any]) -> bytes | str:
    """An outgoing message as eXeLearning's client reads it: text for TEXT_MESSAGES
    (their fields at the top level), else `0xFF` + JSON `{type, data}`."""
    if message_type in TEXT_MESSAGES:
        return json.dumps({"type": message_type, **data}, separators=(",", ":"))
    body = json.dumps({"type": message_type, "data": data}, separators=(",", ":")).encode()
    return bytes([PREFIX]) + body

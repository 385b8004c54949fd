"""The WebSocket close codes of the collab service, in one place (see README "Wire protocol").

The stock y-websocket client stops reconnecting only for 4400-4499, so
permanent refusals use that range; everything else is transient.
"""

from __future__ import annotations

from enum import IntEnum


class CloseCode(IntEnum):
    GOING_AWAY = 1001  # server shutting down
    INVALID_DATA = 1007  # a frame of a known type that does not parse
    POLICY_VIOLATION = 1008  # flooding
    MESSAGE_TOO_BIG = 1009  # a frame other than a document update over MAX_MESSAGE_BYTES
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013  # instance full, dependency down, client too slow
    HEARTBEAT_TIMEOUT = 4008
    BAD_ROOM = 4400
    UNAUTHORIZED = 4401
    FORBIDDEN = 4403
    # permanent: the document would grow past MAX_DOCUMENT_BYTES, or a frame is
    # over MAX_SYNC_MESSAGE_BYTES (no frame that large is ever accepted)
    TOO_LARGE = 4413
    # permanent: refused again and again for what it sends (1007, 1009 repeated)
    REFUSED_REPEATEDLY = 4429

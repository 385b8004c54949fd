"""Every test connects from 127.0.0.1: its servers throttle handshakes only where a test asks."""

from __future__ import annotations

UNTHROTTLED = {"WS_CONNECT_RATE_PER_ADDRESS": "100000"}

"""Refusals that would loop: the same client refused for what it sends, again and again.

A client refused for the content it sends (an update that does not apply,
1007; an oversized frame, 1009) resends the same content when it reconnects:
the stock y-websocket client resets its backoff whenever it syncs, so it
would reconnect every few hundred milliseconds forever. The first refusals
keep their documented transient codes (the cause may be passing: a bug fixed
by a reload); once the same user has been refused the same way in the same
room `limit` times within `window` seconds, the refusal becomes permanent
(4429), a code the stock client stops on, and for `window` seconds that user's
new sockets to that room are refused with 4429 at once, before they are read
(a client that ignores 4429 and reconnects costs a handshake, not its frames).
"""

from __future__ import annotations

from collections import deque


class RefusalHistory:
    """Per (user, room, code): when the recent refusals happened. Pure, bounded bookkeeping."""

    def __init__(self, limit: int = 3, window: float = 60.0, max_keys: int = 10_000) -> None:
        self._limit = limit
        self._window = window
        self._max_keys = max_keys
        self._seen: dict[tuple[str, str, int], deque[float]] = {}
        self._blocked: dict[tuple[str, str], float] = {}  # (user, room) -> when it escalated

    def repeated(self, user: str, room: str, code: int, now: float) -> bool:
        """Record a refusal; True when it is the `limit`-th within the window."""
        key = (user, room, code)
        times = self._seen.pop(key, None) or deque(maxlen=self._limit)
        while times and now - times[0] > self._window:
            times.popleft()
        times.append(now)
        self._seen[key] = times  # most recent last: the oldest keys go first below
        while len(self._seen) > self._max_keys:
            del self._seen[next(iter(self._seen))]
        if len(times) < self._limit:
            return False
        self._blocked.pop((user, room), None)
        self._blocked[(user, room)] = now
        while len(self._blocked) > self._max_keys:
            del self._blocked[next(iter(self._blocked))]
        return True

    def blocked(self, user: str, room: str, now: float) -> bool:
        """Was this user refused for good in this room within the window?"""
        since = self._blocked.get((user, room))
        if since is None:
            return False
        if now - since > self._window:
            del self._blocked[(user, room)]
            return False
        return True

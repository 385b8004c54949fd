"""Caps on one user's and one client address's open sockets on this collab instance.

Each instance counts its own sockets (like `MAX_CONNECTIONS`): behind a
balancer that spreads sockets over N instances, a user can hold up to N times
the cap. The address is the client's (`shared/net.py`: X-Forwarded-For from
FORWARDED_ALLOW_IPS), not the proxy's.
"""

from __future__ import annotations

from collections import Counter


class ConnectionLimits:
    """`admit` a socket before it joins, `release` it when it ends; 0 = no cap."""

    def __init__(self, per_user: int, per_address: int) -> None:
        self._per_user = per_user
        self._per_address = per_address
        self._users: Counter[str] = Counter()
        self._addresses: Counter[str] = Counter()

    def admit(self, user: str, address: str) -> bool:
        """Count the socket in, unless its user or address is at its cap."""
        if self._per_user and self._users[user] >= self._per_user:
            return False
        if self._per_address and self._addresses[address] >= self._per_address:
            return False
        self._users[user] += 1
        self._addresses[address] += 1
        return True

    def release(self, user: str, address: str) -> None:
        for counter, key in ((self._users, user), (self._addresses, address)):
            counter[key] -= 1
            if counter[key] <= 0:
                del counter[key]

"""When to retry a delivery, and when a document's changes are due as an event (pure)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retries of a failed delivery: `WEBHOOK_RETRY_HOURS`, `WEBHOOK_RETRY_FIRST_SECONDS`,
    `WEBHOOK_RETRY_MAX_SECONDS`."""

    hours: float = 24.0  # the retry window, from the event's creation
    first_seconds: float = 5.0  # before the first retry
    max_seconds: float = 3600.0  # retries are at most this far apart

    def delay(self, attempts: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after the `attempts`-th failed attempt: exponential, with jitter
        (between half and all of first_seconds × 2^(attempts-1), capped at max_seconds)."""
        base = min(self.max_seconds, self.first_seconds * 2 ** max(0, attempts - 1))
        return base * (0.5 + 0.5 * (rng or random).random())

    def next_attempt(
        self,
        created_at: datetime,
        attempts: int,
        now: datetime,
        rng: random.Random | None = None,
    ) -> datetime | None:
        """When to try again after `attempts` failures, or None: give up (the retry window
        has passed or would pass before the next attempt)."""
        deadline = created_at + timedelta(hours=self.hours)
        at = now + timedelta(seconds=self.delay(attempts, rng))
        return at if at <= deadline else None


def change_due(
    first_change: datetime,
    last_change: datetime,
    now: datetime,
    debounce: float,
    max_debounce: float,
) -> bool:
    """A document's pending change becomes an event once it has been quiet for `debounce`
    seconds, or once `max_debounce` seconds have passed since its first change."""
    return now >= last_change + timedelta(seconds=debounce) or now >= first_change + timedelta(
        seconds=max_debounce
    )

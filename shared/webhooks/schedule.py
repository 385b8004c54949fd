"""When to retry a delivery, and when a document's changes are due as an event (pure)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

FIRST_DELAY = 5.0  # seconds before the first retry
MAX_DELAY = 3600.0  # retries are at most an hour apart


def retry_delay(attempts: int, rng: random.Random | None = None) -> float:
    """Seconds to wait after the `attempts`-th failed attempt: exponential, with jitter
    (between half and all of FIRST_DELAY × 2^(attempts-1), capped at MAX_DELAY)."""
    base = min(MAX_DELAY, FIRST_DELAY * 2 ** max(0, attempts - 1))
    return base * (0.5 + 0.5 * (rng or random).random())


def next_attempt(
    created_at: datetime,
    attempts: int,
    now: datetime,
    retry_hours: float,
    rng: random.Random | None = None,
) -> datetime | None:
    """When to try again after `attempts` failures, or None: give up (the retry window,
    `retry_hours` after creation, has passed or would pass before the next attempt)."""
    deadline = created_at + timedelta(hours=retry_hours)
    at = now + timedelta(seconds=retry_delay(attempts, rng))
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

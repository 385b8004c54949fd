"""Signed webhooks: events recorded in the database (a transactional outbox), delivered by a dispatcher.

Pure parts: `events` (names, the global configuration), `signature`, `schedule` (backoff,
debounce), `urls` (the address policy). I/O: `outbox` (the rows), `dispatcher` (delivery).
"""

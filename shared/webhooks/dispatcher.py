"""The webhook dispatcher: turns due document changes into events, and delivers events.

It runs in the persistence worker(s) and in the embedded single-instance process; any
number may run at once. A pending change becomes one `document.updated` per subscriber
in the transaction that removes it (one dispatcher wins it); a delivery is sent by the
dispatcher holding its lease (`outbox.claim`), long enough for one attempt, so a killed
dispatcher's delivery is taken over when the lease expires, and never sent by two at
once. An attempt is one POST: redirects are not followed, the answer is read up to
`WEBHOOK_MAX_RESPONSE_BYTES` and dropped, 2xx means delivered; anything else is retried
with backoff (`schedule.RetryPolicy`) until `WEBHOOK_RETRY_HOURS` after the event, then
the delivery is failed (listed by the API, counted in the metrics).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.compaction import build_snapshot
from shared.config import Settings
from shared.db.resources import DATABASE
from shared.metrics import METRICS_REGISTRY
from shared.store import DocumentStore
from shared.tasks import TaskOwner
from shared.webhooks import outbox
from shared.webhooks.events import DOCUMENT_UPDATED
from shared.webhooks.metrics import WebhookMetrics
from shared.webhooks.signature import HEADER, sign
from shared.webhooks.urls import CheckedResolver, UrlRefused, check_target

log = logging.getLogger(__name__)

BATCH = 20  # deliveries claimed (and sent concurrently) per pass
USER_AGENT = "exe-collab-webhooks"


class WebhookDispatcher:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        store: DocumentStore,
        settings: Settings,
        metrics: WebhookMetrics,
        owner: str,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._store = store
        self._settings = settings
        self._hooks = settings.global_webhooks
        self._metrics = metrics
        self._owner = owner[:64]
        self._lease = settings.webhook_lease
        self._retry = settings.webhook_retry_policy
        self._http: aiohttp.ClientSession | None = None

    async def run(self) -> None:
        """Pass after pass, every `WEBHOOK_POLL_SECONDS` when idle; failures are retried."""
        connector = aiohttp.TCPConnector(
            resolver=CheckedResolver(self._settings.webhook_allow_private),
            use_dns_cache=False,
            limit=BATCH,
        )
        timeout = aiohttp.ClientTimeout(total=self._settings.webhook_timeout_seconds)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            self._http = http
            while True:
                busy = False
                try:
                    await self._promote_changes()
                    busy = await self._deliver_due()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    self._metrics.errors.labels("database").inc()
                    log.exception("webhook dispatcher pass failed")
                if not busy:
                    await asyncio.sleep(self._settings.webhook_poll_seconds)

    async def _promote_changes(self) -> None:
        settings = self._settings
        async with self._sessionmaker() as session:
            changes = await outbox.due_changes(
                session,
                outbox.utcnow(),
                settings.webhook_debounce_seconds,
                settings.webhook_max_debounce_seconds,
                BATCH,
            )
        for change in changes:
            # the state is read after the change row: it holds at least what that row stands for
            updates = await self._store.load_updates(change.project_uuid)
            snapshot = await asyncio.to_thread(build_snapshot, updates)
            data = {
                "state_vector": base64.b64encode(snapshot.state_vector).decode(),
                "size": len(snapshot.update),
            }
            async with self._sessionmaker() as session, session.begin():
                if not await outbox.take_change(session, change):
                    continue
                count = await outbox.enqueue(
                    session,
                    DOCUMENT_UPDATED,
                    change.project_id,
                    change.project_uuid,
                    data,
                    self._hooks,
                )
            self._metrics.events.labels(DOCUMENT_UPDATED).inc(count)

    async def _deliver_due(self) -> bool:
        """One batch of due deliveries; True when there may be more right away."""
        async with self._sessionmaker() as session, session.begin():
            claimed = await outbox.claim(
                session, self._owner, outbox.utcnow(), self._lease, BATCH, self._hooks
            )
        async with self._sessionmaker() as session:
            self._metrics.pending.set(await outbox.pending_count(session))
        if claimed:
            await asyncio.gather(*(self._deliver(delivery) for delivery in claimed))
        return len(claimed) == BATCH

    async def _deliver(self, delivery: outbox.Claimed) -> None:
        status, error = await self._attempt(delivery)
        attempts = delivery.attempts + 1
        now = outbox.utcnow()
        if status is not None and 200 <= status < 300:
            outcome, retry_at = outbox.DELIVERED, None
        else:
            retry_at = (
                None
                if delivery.url is None
                else self._retry.next_attempt(delivery.created_at, attempts, now)
            )
            outcome = outbox.PENDING if retry_at is not None else outbox.FAILED
        async with self._sessionmaker() as session, session.begin():
            recorded = await outbox.finish(
                session,
                delivery.id,
                self._owner,
                status=outcome,
                attempts=attempts,
                status_code=status,
                error=error,
                next_attempt_at=retry_at,
            )
        if not recorded:
            return
        label = {outbox.DELIVERED: "delivered", outbox.PENDING: "retried"}.get(outcome, "failed")
        self._metrics.deliveries.labels(label).inc()
        if outcome == outbox.DELIVERED:
            self._metrics.latency.observe((now - delivery.created_at).total_seconds())
        elif outcome == outbox.FAILED:
            log.warning(
                "webhook delivery failed for good",
                extra={"delivery": delivery.id, "attempts": attempts, "error": error},
            )

    async def _attempt(self, delivery: outbox.Claimed) -> tuple[int | None, str | None]:
        """POST the delivery once: (status code or None, a short error or None)."""
        if delivery.url is None:
            return None, "the global webhook is no longer configured"
        assert self._http is not None
        body = delivery.payload.encode()
        try:
            # the literal-address rule; names are checked by the connector's resolver
            await check_target(delivery.url, self._settings.webhook_allow_private, resolve=False)
            headers = {
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
                HEADER: sign(delivery.secret, int(time.time()), body),
                "X-Exe-Event": delivery.event,
                "X-Exe-Delivery": str(delivery.id),
            }
            async with self._http.post(
                delivery.url, data=body, headers=headers, allow_redirects=False
            ) as response:
                await response.content.read(self._settings.webhook_max_response_bytes)
                if 200 <= response.status < 300:
                    return response.status, None
                return response.status, f"HTTP {response.status}"
        except UrlRefused as exc:
            return None, str(exc)
        except TimeoutError:
            return None, "timed out"
        except aiohttp.ClientError as exc:
            return None, f"{type(exc).__name__}: {str(exc)[:200]}"
        except OSError as exc:
            return None, f"{type(exc).__name__}: {exc.strerror or exc}"


def setup_dispatcher(app: web.Application, settings: Settings, owner: str) -> None:
    """Run a dispatcher for the app's lifetime (after its database is open)."""
    registry = app.setdefault(METRICS_REGISTRY, CollectorRegistry())
    metrics = WebhookMetrics(registry)

    async def _dispatcher_ctx(app: web.Application) -> AsyncIterator[None]:
        database = app[DATABASE]
        dispatcher = WebhookDispatcher(
            database.sessionmaker, database.store, settings, metrics, owner
        )
        tasks = TaskOwner("webhooks")
        tasks.spawn_loop(dispatcher.run(), name="webhook-dispatcher")
        yield
        await tasks.close()

    app.cleanup_ctx.append(_dispatcher_ctx)

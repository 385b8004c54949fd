"""The webhook dispatcher's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class WebhookMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.deliveries = Counter(
            "webhook_deliveries_total",
            "Delivery attempts by outcome (delivered, retried, failed)",
            ["outcome"],
            registry=registry,
        )
        self.pending = Gauge(
            "webhook_pending_deliveries", "Deliveries not yet delivered nor failed", registry=registry
        )
        self.latency = Histogram(
            "webhook_delivery_seconds",
            "From an event's creation to its successful delivery",
            registry=registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400),
        )
        self.events = Counter(
            "webhook_events_total", "Events recorded, by event", ["event"], registry=registry
        )
        self.errors = Counter(
            "webhook_errors_total", "Dispatcher or recording failures (retried), by stage",
            ["stage"], registry=registry,
        )

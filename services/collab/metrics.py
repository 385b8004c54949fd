"""The collab service's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Labelled(dict):  # type: ignore[type-arg]
    """`metric.labels(value)` resolved once per value (the lookup is costly per frame)."""

    def __init__(self, metric: Counter) -> None:
        super().__init__()
        self.metric = metric

    def __missing__(self, value: str) -> Counter:
        child = self[value] = self.metric.labels(value)
        return child


class CollabMetrics:
    """Counters and gauges of one collab instance, in its own registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.connections = Gauge(
            "collab_connections", "Open WebSocket connections", registry=registry
        )
        self.rooms = Gauge("collab_rooms", "Rooms loaded in memory", registry=registry)
        self.frames_in = Counter(
            "collab_frames_in_total", "Frames received from clients", ["kind"], registry=registry
        )
        self.frames_out = Counter(
            "collab_frames_out_total", "Frames sent to clients", ["kind"], registry=registry
        )
        self.bytes_in = Counter(
            "collab_bytes_in_total", "Bytes received from clients", registry=registry
        )
        self.bytes_out = Counter(
            "collab_bytes_out_total", "Bytes sent to clients", registry=registry
        )
        self.errors = Counter(
            "collab_errors_total",
            "Connections closed for bad input, by kind",
            ["kind"],
            registry=registry,
        )
        self.readonly_dropped = Counter(
            "collab_readonly_dropped_total",
            "Document updates from read-only members, dropped",
            registry=registry,
        )
        self.rejected = Counter(
            "collab_rejected_total",
            "Refused WebSocket handshakes, by close code",
            ["code"],
            registry=registry,
        )
        self.throttled = Counter(
            "collab_handshakes_throttled_total",
            "Handshakes refused (1013) because their address passed WS_CONNECT_RATE_PER_ADDRESS",
            registry=registry,
        )
        self.throttle_unavailable = Counter(
            "collab_throttle_unavailable_total",
            "Handshakes admitted unchecked because Redis did not answer the throttle",
            registry=registry,
        )
        self.store_flushes = Counter(
            "collab_store_flushes_total", "Batches written to the document store", registry=registry
        )
        self.store_updates = Counter(
            "collab_store_updates_total", "Updates written to the document store", registry=registry
        )
        self.store_errors = Counter(
            "collab_store_errors_total", "Failed store writes (retried)", registry=registry
        )
        self.store_pending = Gauge(
            "collab_store_pending_updates",
            "Accepted updates not yet in the store",
            registry=registry,
        )
        self.compactions = Counter(
            "collab_compactions_total", "Compactions run by this process", registry=registry
        )
        self.redis_connected = Gauge(
            "collab_redis_connected",
            "1 while the Redis fan-out connection is up",
            registry=registry,
        )
        self.envelopes_in = Counter(
            "collab_envelopes_in_total",
            "Envelopes received from other instances",
            ["kind"],
            registry=registry,
        )
        self.envelopes_out = Counter(
            "collab_envelopes_out_total", "Envelopes published", ["kind"], registry=registry
        )
        self.envelopes_invalid = Counter(
            "collab_envelopes_invalid_total", "Malformed envelopes dropped", registry=registry
        )
        self.log_backlog = Gauge(
            "collab_log_backlog_updates",
            "Accepted updates waiting for Redis to come back before entering the durable log",
            registry=registry,
        )
        self.log_spilled = Counter(
            "collab_log_spilled_updates_total",
            "Backlogged updates written straight to the database because the backlog was full",
            registry=registry,
        )
        self.handovers = Counter(
            "collab_room_handovers_total",
            "Unloaded rooms written to the database because their log was not persisted in time",
            registry=registry,
        )
        self.reasserted = Counter(
            "collab_reasserted_updates_total",
            "Updates a room put back into the Redis log because Redis had lost them",
            registry=registry,
        )
        self.resyncs = Counter(
            "collab_resync_requests_total",
            "State-vector resync requests published",
            registry=registry,
        )
        self.awareness_dropped = Counter(
            "collab_awareness_dropped_total",
            "Awareness entries dropped or frames refused, by reason: stale (an echo), foreign (another "
            "connection's client id), client_ids, room_bytes, entries, state_bytes",
            ["reason"],
            registry=registry,
        )
        self.awareness_dropped_by = Labelled(self.awareness_dropped)
        self.rebuilds = Counter(
            "collab_document_rebuilds_total",
            "Room documents rebuilt from the durable state after pycrdt panicked applying an update",
            registry=registry,
        )
        self.quarantined = Counter(
            "yjs_quarantined_updates_total",
            "Stored updates pycrdt refused at load or compaction, moved to yjs_quarantine",
            registry=registry,
        )
        self.frames_in_by = Labelled(self.frames_in)
        self.frames_out_by = Labelled(self.frames_out)
        self.envelopes_in_by = Labelled(self.envelopes_in)
        self.envelopes_out_by = Labelled(self.envelopes_out)
        self.room_load_seconds = Histogram(
            "collab_room_load_seconds",
            "Time to load a room's document",
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )

"""The persistence worker's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class WorkerMetrics:
    """The worker's counters, gauges and histogram, registered in `registry`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.updates_persisted = Counter(
            "persistence_updates_total", "Log entries written to the database", registry=registry
        )
        self.update_bytes = Counter(
            "persistence_update_bytes_total",
            "Bytes of Yjs updates written to the database",
            registry=registry,
        )
        self.db_bytes_written = Counter(
            "persistence_db_bytes_written_total",
            "Bytes written to the database (update rows and snapshots)",
            registry=registry,
        )
        # The two counters' totals, kept here: prometheus_client offers no public read of a value.
        self._update_bytes_total = 0
        self._db_bytes_total = 0
        self.write_amplification = Gauge(
            "persistence_write_amplification",
            "Bytes written to the database per byte of Yjs update (since start)",
            registry=registry,
        )
        self.lag = Histogram(
            "persistence_lag_seconds",
            "From an update entering the Redis log to its commit in the database",
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.batches = Counter(
            "persistence_batches_total", "Database transactions of log entries", registry=registry
        )
        self.compactions = Counter(
            "persistence_compactions_total", "Compactions run", registry=registry
        )
        self.quarantined = Counter(
            "yjs_quarantined_updates_total",
            "Stored updates pycrdt refused at compaction, moved to yjs_quarantine",
            registry=registry,
        )
        self.errors = Counter(
            "persistence_errors_total", "Failed attempts (retried)", ["stage"], registry=registry
        )
        self.redis_connected = Gauge(
            "persistence_redis_connected", "1 while Redis answers", registry=registry
        )
        self.consume_lag = Gauge(
            "persistence_consume_lag_seconds",
            "Seconds since the worker last completed a pass over its queue (grows while it cannot consume)",
            registry=registry,
        )

    def record_written(self, update_bytes: int, db_bytes: int) -> None:
        """Count bytes written and refresh the write amplification from this process's totals."""
        self.update_bytes.inc(update_bytes)
        self.db_bytes_written.inc(db_bytes)
        self._update_bytes_total += update_bytes
        self._db_bytes_total += db_bytes
        if self._update_bytes_total:
            self.write_amplification.set(self._db_bytes_total / self._update_bytes_total)

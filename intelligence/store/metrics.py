"""Prometheus metrics of the request-log recorder (registered once, at import)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

QUEUE_DEPTH = Gauge("llmproxy_recorder_queue_depth", "Exchange records waiting in memory for the database writer")
SPOOL_DEPTH = Gauge("llmproxy_recorder_spool_depth", "Exchange records waiting in the on-disk spool")
DB_OK = Gauge("llmproxy_recorder_db_ok", "1 when the last database write or replay succeeded, else 0")
WRITTEN = Counter("llmproxy_recorder_written", "Exchange records written to the database from memory")
SPOOLED = Counter("llmproxy_recorder_spooled", "Exchange records written to the on-disk spool")
REPLAYED = Counter("llmproxy_recorder_replayed", "Exchange records replayed from the spool into the database")
REJECTED = Counter("llmproxy_recorder_rejected", "Exchange records the database refused (kept in rejected.jsonl)")
DROPPED = Counter("llmproxy_recorder_dropped", "Exchange records lost because neither database nor disk took them")
HELD = Gauge("llmproxy_recorder_memory_held", "Exchange records held in memory because the spool's disk refused them")
WRITE_LAG = Histogram(
    "llmproxy_recorder_write_lag_seconds",
    "From the end of an exchange to its record committed in the database",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0),
)

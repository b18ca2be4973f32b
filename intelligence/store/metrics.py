"""Prometheus metrics of the request-log recorder (registered once, at import)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

QUEUE_DEPTH = Gauge("llmproxy_recorder_queue_depth", "Exchange records waiting in memory for the database writer")
SPOOL_DEPTH = Gauge("llmproxy_recorder_spool_depth", "Exchange records waiting in the on-disk spool")
DB_OK = Gauge("llmproxy_recorder_db_ok", "1 when the last database write or replay succeeded, else 0")
WRITTEN = Counter("llmproxy_recorder_written", "Exchange records written to the database from memory")
SPOOLED = Counter("llmproxy_recorder_spooled", "Exchange records written to the on-disk spool")
REPLAYED = Counter("llmproxy_recorder_replayed", "Exchange records replayed from the spool into the database")
REJECTED = Counter("llmproxy_recorder_rejected", "Exchange records the database refused (kept in rejected.jsonl)")
DROPPED = Counter("llmproxy_recorder_dropped", "Exchange records lost because neither database nor disk took them")

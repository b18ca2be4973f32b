"""The Security page's reads: blocked and redacted exchanges, detector hit rates, anomaly verdicts, the audit tail.

Every query is bounded by time (``started_at >= since``, served by ``ix_exchanges_started_at`` or, for the
blocked and redacted ones, the partial index ``ix_exchanges_enforced``) or by a LIMIT on an indexed order.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

# Served by the partial index ix_exchanges_enforced (migration 0008), whose predicate is this text verbatim.
ENFORCED_WHERE = (
    "flags -> 'policy' -> 'block' IS NOT NULL OR flags -> 'redacted_strings' IS NOT NULL "
    "OR flags -> 'policy' -> 'redact' IS NOT NULL"
)
VERDICT_COLUMNS = (
    "id",
    "at",
    "verdict",
    "confidence",
    "status",
    "reasoning",
    "detectors",
    "client_key_fp",
    "request_id",
    "source",
    "action",
    "confirmed",
    "confirmed_by",
)
DETECTOR_COLUMNS = ("bucket", "requests", "pii", "secrets", "injection", "blocked")
AUDIT_COLUMNS = ("id", "ts", "actor", "kind", "subject")


async def _rows(conn: AsyncConnection | AsyncSession, sql: str, **params: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in (await conn.execute(text(sql), params)).mappings().all()]


class SecurityRepository:
    def __init__(self, conn: AsyncConnection | AsyncSession) -> None:
        self._conn = conn

    async def enforced(self, since: datetime, limit: int = 500) -> list[dict[str, Any]]:
        """Exchanges started since ``since`` that the policy blocked or redacted, newest first (flags parts only)."""
        return await _rows(
            self._conn,
            "SELECT request_id, started_at, client_key_fp, client_addr, model, status, flags -> 'policy' AS policy, "
            "flags -> 'detections' AS detections, (flags ->> 'redacted_strings')::int AS redacted FROM exchanges "
            f"WHERE started_at >= :since AND ({ENFORCED_WHERE}) ORDER BY started_at DESC LIMIT :limit",
            since=since,
            limit=int(limit),
        )

    async def detector_rates(self, since: datetime, injection_threshold: float) -> list[dict[str, Any]]:
        """Per hour since ``since``: requests, and how many had PII, secrets, an injection score at or above
        ``injection_threshold``, a block (from ``flags.detections`` and ``flags.policy``). Hours without
        traffic are absent."""
        return await _rows(
            self._conn,
            "SELECT date_trunc('hour', started_at) AS bucket, count(*) AS requests, "
            "count(*) FILTER (WHERE flags -> 'detections' -> 'pii' <> '{}'::jsonb) AS pii, "
            "count(*) FILTER (WHERE flags -> 'detections' -> 'secrets' <> '{}'::jsonb) AS secrets, "
            "count(*) FILTER (WHERE (flags -> 'detections' ->> 'injection_score')::float8 >= :threshold) AS injection, "
            "count(*) FILTER (WHERE flags -> 'policy' -> 'block' IS NOT NULL) AS blocked "
            "FROM exchanges WHERE started_at >= :since GROUP BY 1 ORDER BY 1",
            since=since,
            threshold=float(injection_threshold),
        )

    async def verdicts(self, limit: int = 200) -> list[dict[str, Any]]:
        """Anomaly verdicts newest first, as dicts with :data:`VERDICT_COLUMNS`."""
        return await _rows(
            self._conn,
            f"SELECT {', '.join(VERDICT_COLUMNS)} FROM anomaly_verdicts ORDER BY at DESC, id DESC LIMIT :limit",
            limit=int(limit),
        )

    async def audit_recent(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest audit-log entries (id, ts, actor, kind, subject)."""
        return await _rows(
            self._conn, f"SELECT {', '.join(AUDIT_COLUMNS)} FROM audit_log ORDER BY id DESC LIMIT :limit", limit=int(limit)
        )

"""Enhancements and experiments as the dashboard lists them (the actions live in intelligence.enhance.manage)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

ENHANCEMENT_COLUMNS = (
    "id",
    "pattern_id",
    "pattern",
    "version",
    "kind",
    "status",
    "source",
    "rationale",
    "spec",
    "created_at",
    "claude_model",
)
HISTORY_COLUMNS = ("experiment_id", "at", "action", "actor", "detail")
LIVE_STATUSES = ("running", "paused")


async def _rows(conn: AsyncConnection | AsyncSession, sql: str, **params: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in (await conn.execute(text(sql), params)).mappings().all()]


class ExperimentRepository:
    def __init__(self, conn: AsyncConnection | AsyncSession) -> None:
        self._conn = conn

    async def enhancements(self, status: str | None = None, limit: int = 500) -> list[dict[str, Any]]:
        """Enhancements newest first with their pattern label and the Claude model that proposed them."""
        where = "WHERE h.status = :status" if status else ""
        params: dict[str, Any] = {"limit": int(limit)}
        if status:
            params["status"] = status
        return await _rows(
            self._conn,
            "SELECT h.id, h.pattern_id, p.label AS pattern, h.version, h.kind, h.status, h.source, h.rationale, h.spec, "
            "h.created_at, c.model AS claude_model FROM enhancements h LEFT JOIN patterns p ON p.id = h.pattern_id "
            f"LEFT JOIN claude_calls c ON c.id = h.claude_call_id {where} ORDER BY h.id DESC LIMIT :limit",
            **params,
        )

    async def experiments(self, limit: int = 200) -> list[dict[str, Any]]:
        """Experiments newest first with their enhancement, stats document and ``exposures`` (running and
        paused ones: exchanges recorded with the experiment, kept per experiment by triggers, migration 0008;
        0 for the others)."""
        rows = await _rows(
            self._conn,
            "SELECT e.id, e.enhancement_id, e.pattern_id, p.label AS pattern, h.kind, h.rationale, h.spec, e.status, "
            "e.control_weight, e.assign_by, e.alpha, e.min_effect, e.decision_reason, e.created_by, e.started_at, "
            "e.updated_at, e.decided_at, e.stats FROM experiments e JOIN enhancements h ON h.id = e.enhancement_id "
            "LEFT JOIN patterns p ON p.id = e.pattern_id ORDER BY e.id DESC LIMIT :limit",
            limit=int(limit),
        )
        live = [int(r["id"]) for r in rows if r["status"] in LIVE_STATUSES]
        exposures: dict[int, int] = {}
        if live:
            for r in await _rows(
                self._conn,
                "SELECT experiment_id AS id, n FROM experiment_exposures WHERE experiment_id = ANY(CAST(:ids AS bigint[])) AND n > 0",
                ids=live,
            ):
                exposures[int(r["id"])] = int(r["n"])
        for r in rows:
            r["exposures"] = exposures.get(int(r["id"]), 0)
        return rows

    async def history(self, experiment_id: int | None = None, limit: int = 300) -> list[dict[str, Any]]:
        """What happened to one experiment (or all), newest first."""
        where = "WHERE experiment_id = :id" if experiment_id is not None else ""
        params: dict[str, Any] = {"limit": int(limit)}
        if experiment_id is not None:
            params["id"] = int(experiment_id)
        return await _rows(
            self._conn,
            f"SELECT {', '.join(HISTORY_COLUMNS)} FROM experiment_events {where} ORDER BY at DESC, id DESC LIMIT :limit",
            **params,
        )

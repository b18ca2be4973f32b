"""Builders shared by the anomaly tests (no tests here): recorded exchanges with a crafted history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from intelligence.anomaly.job import AnomalyJob, write_cursor
from intelligence.records import Usage
from intelligence.store.repositories import ExchangeRepository

from .factories import make_record

T0 = datetime(2026, 1, 5, 0, 0, tzinfo=UTC)


def exchange(
    client: str,
    at: datetime,
    *,
    tokens: int = 100,
    status: int = 200,
    model: str = "gpt-4o-mini",
    tools: tuple[str, ...] = ("get_weather",),
    prompt: str | None = None,
    flags: dict | None = None,
    **extra: Any,
):
    usage = Usage(input_tokens=tokens - 10, output_tokens=10, total_tokens=tokens, cached_tokens=0, reasoning_tokens=None)
    fields: dict[str, Any] = dict(
        client_key_fp=client,
        started_at=at,
        finished_at=at + timedelta(milliseconds=500),
        usage=usage,
        status=status,
        model=model,
        tool_names=tools,
        flags=flags or {},
        error="upstream failed" if status >= 400 else None,
    )
    if prompt is not None:
        fields["prompt_user"] = prompt
    fields.update(extra)
    return make_record(**fields)


async def insert(engine: AsyncEngine, records: list) -> None:
    async with engine.begin() as conn:
        await ExchangeRepository(conn).insert_batch(records)


def steady_history(client: str, end: datetime, *, hours: float = 25, every: timedelta = timedelta(minutes=2)) -> list:
    """One request every ``every`` up to ``end``, tokens 90..110, all successful."""
    out, at, i = [], end - timedelta(hours=hours), 0
    while at < end:
        out.append(exchange(client, at, tokens=90 + (i * 7) % 21))
        at += every
        i += 1
    return out


async def skip_to_end(engine: AsyncEngine) -> None:
    """Move the job's cursor past everything recorded so far (the history was seen by an earlier run)."""
    async with engine.begin() as conn:
        row = (
            await conn.execute(
                text("SELECT inserted_at, request_id FROM exchanges ORDER BY inserted_at DESC, request_id DESC LIMIT 1")
            )
        ).one()
        await write_cursor(conn, row[0], row[1])


async def suspicions(engine: AsyncEngine) -> list[dict]:
    async with engine.connect() as conn:
        rows = (
            (
                await conn.execute(
                    text(
                        "SELECT id, request_id, client_key_fp, detectors, suspicion, status, verdict, confidence, reasoning, source, "
                        "claude_call_id, memory_id, action, confirmed, confirmed_by FROM anomaly_verdicts "
                        "WHERE status <> 'skipped' ORDER BY id"
                    )
                )
            )
            .mappings()
            .all()
        )
    return [dict(r) for r in rows]


def detect_only_job(engine: AsyncEngine, **kw: Any) -> AnomalyJob:
    return AnomalyJob(engine, None, kw.pop("embedder_factory", None), settle_s=0.0, **kw)

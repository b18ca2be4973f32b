"""What the intelligence's Claude calls have cost, summed from ``claude_calls``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from .models import ClaudeCall

_TOKENS = ClaudeCall.input_tokens + ClaudeCall.output_tokens + ClaudeCall.cache_read_tokens + ClaudeCall.cache_write_tokens


def utc_midnight(now: datetime | None = None) -> datetime:
    now = now or datetime.now(UTC)
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


async def spent_since(conn: AsyncConnection, since: datetime) -> tuple[float, int]:
    """(USD, tokens) of every call since ``since``; tokens count input, output and cache reads/writes."""
    row = (
        await conn.execute(
            select(func.coalesce(func.sum(ClaudeCall.cost_usd), 0.0), func.coalesce(func.sum(_TOKENS), 0)).where(
                ClaudeCall.at >= since
            )
        )
    ).one()
    return float(row[0]), int(row[1])


async def spend_summary(conn: AsyncConnection, *, since: datetime) -> dict[str, Any]:
    """Calls, tokens and cost since ``since``, in total and by purpose and outcome."""
    rows = (
        await conn.execute(
            select(
                ClaudeCall.purpose,
                ClaudeCall.outcome,
                func.count(),
                func.coalesce(func.sum(ClaudeCall.input_tokens), 0),
                func.coalesce(func.sum(ClaudeCall.output_tokens), 0),
                func.coalesce(func.sum(ClaudeCall.cache_read_tokens), 0),
                func.coalesce(func.sum(ClaudeCall.cache_write_tokens), 0),
                func.coalesce(func.sum(ClaudeCall.cost_usd), 0.0),
            )
            .where(ClaudeCall.at >= since)
            .group_by(ClaudeCall.purpose, ClaudeCall.outcome)
        )
    ).all()
    tokens = {"input": 0, "output": 0, "cache_read": 0, "cache_write": 0}
    by_purpose: dict[str, dict[str, Any]] = {}
    by_outcome: dict[str, int] = {}
    calls, cost = 0, 0.0
    for purpose, outcome, n, inp, out, cread, cwrite, usd in rows:
        n, usd = int(n), float(usd)
        row_tokens = int(inp) + int(out) + int(cread) + int(cwrite)
        calls += n
        cost += usd
        for key, value in zip(tokens, (inp, out, cread, cwrite)):
            tokens[key] += int(value)
        entry = by_purpose.setdefault(purpose, {"calls": 0, "tokens": 0, "cost_usd": 0.0})
        entry["calls"] += n
        entry["tokens"] += row_tokens
        entry["cost_usd"] += usd
        by_outcome[outcome] = by_outcome.get(outcome, 0) + n
    tokens["total"] = sum(tokens.values())
    return {
        "since": since.isoformat(),
        "calls": calls,
        "tokens": tokens,
        "cost_usd": cost,
        "by_purpose": by_purpose,
        "by_outcome": by_outcome,
    }

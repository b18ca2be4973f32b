"""Is Claude usable right now? Today's spend against the budget and the outcomes of the latest calls.

`llmproxy status` shows the answer next to the configured mode: a stack set up for Claude whose calls
fail (network, 5xx, overloaded, rate limits) or whose daily budget is spent runs local-only meanwhile
(patterns, statistics and local detectors go on; `claude_verdict` rules apply their declared fail mode),
and the status says which and since when.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

FAILED = ("error", "timeout", "overloaded", "rate_limited", "parse_error")
UNAVAILABLE_AFTER = 3  # consecutive failed calls (none succeeded since) before Claude counts as unavailable


async def claude_state(url: str, described: dict[str, Any], *, window_s: float = 900.0, timeout: float = 3.0) -> dict[str, Any]:
    """``described`` is ``ClaudeSettings.describe()`` (mode, budgets, summary) of the running stack."""
    import asyncio

    import asyncpg

    from intelligence.store.engine import asyncpg_dsn

    mode = described.get("mode") or "local-only"
    out: dict[str, Any] = {"mode": mode, "available": None, "summary": described.get("summary") or mode}
    if mode == "local-only":
        out["available"] = False
        return out
    now = datetime.now(UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    try:
        conn = await asyncio.wait_for(asyncpg.connect(asyncpg_dsn(url), timeout=timeout), timeout + 0.5)
    except (TimeoutError, OSError, asyncpg.PostgresError):
        out["summary"] += "; spend and recent calls unknown (database unavailable)"
        return out
    try:
        spent = await conn.fetchrow(
            "select coalesce(sum(cost_usd), 0) as usd, coalesce(sum(input_tokens + output_tokens + cache_read_tokens"
            " + cache_write_tokens), 0) as tokens from claude_calls where at >= $1",
            midnight,
        )
        recent = await conn.fetch(
            "select at, outcome, error from claude_calls where at >= $1 order by at desc limit 50",
            now - timedelta(seconds=window_s),
        )
    except (OSError, asyncpg.PostgresError):
        out["summary"] += "; spend and recent calls unknown (claude_calls unreadable)"
        return out
    finally:
        await conn.close()
    usd, tokens = float(spent["usd"]), int(spent["tokens"])
    budget_usd = described.get("daily_budget_usd")
    budget_tokens = described.get("daily_token_budget")
    out.update(spent_usd_today=usd, tokens_today=tokens, recent_calls=len(recent))
    streak: list[Any] = []
    for row in recent:  # newest first
        if row["outcome"] in FAILED:
            streak.append(row)
        else:
            break
    outcomes: dict[str, int] = {}
    for row in streak:
        outcomes[row["outcome"]] = outcomes.get(row["outcome"], 0) + 1
    exhausted = (budget_usd is not None and usd >= float(budget_usd)) or (
        budget_tokens is not None and tokens >= int(budget_tokens)
    )
    if recent and recent[0]["outcome"] == "budget_exhausted":
        exhausted = True
    if exhausted:
        out["available"] = False
        out["problem"] = "budget_exhausted"
        out["summary"] = (
            f"{mode}: Claude paused, daily budget exhausted (${usd:.4f} of ${float(budget_usd or 0):g}, {tokens:,} of "
            f"{int(budget_tokens or 0):,} tokens since 00:00 UTC); running local-only until midnight UTC"
        )
    elif len(streak) >= UNAVAILABLE_AFTER:
        kinds = ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items()))
        out["available"] = False
        out["problem"] = "unavailable"
        out["summary"] = (
            f"{mode}: Claude unavailable, the last {len(streak)} calls failed ({kinds}; latest "
            f"{streak[0]['at'].astimezone(UTC):%H:%M:%S} UTC); running local-only until a call succeeds"
        )
    else:
        out["available"] = True
        out["summary"] = f"{described.get('summary') or mode}; spent today ${usd:.4f}"
    return out


__all__ = ["claude_state"]

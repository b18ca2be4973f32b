"""Row builders shared by the test_enhance_* tests (no tests here): patterns, exchanges with their
pattern-memory traces (embedding row, outcome signals, feedback), written straight into the tables."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from intelligence.memory.models import ExchangeEmbedding, Feedback, OutcomeSignal, Pattern
from intelligence.store.models import Exchange

NOW = datetime.now(UTC)
_seq = itertools.count()


async def make_pattern(conn: AsyncConnection, label: str = "summarise tickets") -> int:
    result = await conn.execute(
        insert(Pattern.__table__)
        .values(label=label, first_seen=NOW - timedelta(days=3), last_seen=NOW)
        .returning(Pattern.__table__.c.id)
    )
    return int(result.scalar_one())


@dataclass
class Ex:
    """One exchange to write, and how it went."""

    pattern_id: int | None
    ok: bool = True
    experiment: int | None = None
    arm: str | None = None
    enhancement: int | None = None
    processed: bool = True  # the pattern worker saw it (exchange_embeddings row)
    status: int = 200
    error: str | None = None
    failing_signal: str | None = None  # status | finish | tool_args | retry
    feedback: tuple[str | None, float | None] | None = None  # (thumbs, score)
    total_tokens: int = 100
    input_tokens: int = 80
    output_tokens: int = 20
    latency_ms: float = 500.0
    model: str = "gpt-4o-mini"
    api: str = "chat"
    provider: str = "openai"
    at: datetime | None = None
    prompt_user: str = "summarise this ticket"
    prompt_system: str = "You are a support assistant."
    finish_reason: str = "stop"
    tools: tuple[str, ...] = ()
    session: str | None = None  # default: a session of its own
    client: str = "fp-test"  # client_key_fp: a gateway key id or a credential fingerprint


async def write(conn: AsyncConnection, items: list[Ex]) -> list[str]:
    """Insert every exchange with its traces; an ``ok=False`` item without another failure gets a
    failing ``finish`` signal. Returns the request ids."""
    exchanges, embeddings, signals, feedback, ids = [], [], [], [], []
    for item in items:
        n = next(_seq)
        rid = f"req-enh-{n}"
        ids.append(rid)
        at = item.at or (NOW - timedelta(minutes=30) + timedelta(milliseconds=n))
        flags: dict[str, Any] = {}
        if item.arm is not None:
            flags["enhancement"] = {"experiment": item.experiment, "enhancement": item.enhancement, "arm": item.arm}
        exchanges.append(
            dict(
                request_id=rid,
                started_at=at,
                finished_at=at + timedelta(milliseconds=item.latency_ms),
                method="POST",
                path="/openai/v1/chat/completions",
                provider=item.provider,
                model=item.model,
                api=item.api,
                status=item.status,
                error=item.error,
                latency_ms=item.latency_ms,
                input_tokens=item.input_tokens,
                output_tokens=item.output_tokens,
                total_tokens=item.total_tokens,
                prompt_user=f"{item.prompt_user} #{n}",
                prompt_system=item.prompt_system,
                finish_reason=item.finish_reason,
                flags=flags,
                tool_names=list(item.tools),
                session_id=item.session or f"sess-{n}",
                client_key_fp=item.client,
            )
        )
        if item.processed:
            embeddings.append(
                dict(
                    request_id=rid,
                    canonical_hash=f"h{n}",
                    pattern_id=item.pattern_id,
                    created_at=at,
                    model=item.model,
                    client_key_fp=item.client,
                )
            )
        failing = item.failing_signal
        if not item.ok and failing is None and item.feedback is None and item.status < 400 and item.error is None:
            failing = "finish"
        for kind in ("status", "finish"):
            signals.append(dict(request_id=rid, kind=kind, ok=kind != failing, value=None))
        if failing in ("tool_args", "retry"):
            signals.append(dict(request_id=rid, kind=failing, ok=False, value=None))
        if item.feedback is not None:
            thumbs, score = item.feedback
            feedback.append(dict(request_id=rid, thumbs=thumbs, score=score))
            signals.append(
                dict(
                    request_id=rid,
                    kind="feedback",
                    ok=thumbs != "down" and (score is None or score >= 0.5),
                    value=thumbs or str(score),
                )
            )
    await conn.execute(insert(Exchange.__table__), exchanges)
    if embeddings:
        await conn.execute(insert(ExchangeEmbedding.__table__), embeddings)
    if signals:
        await conn.execute(insert(OutcomeSignal.__table__), signals)
    if feedback:
        await conn.execute(insert(Feedback.__table__), feedback)
    return ids


def arm_rows(
    pattern_id: int, experiment: int, enhancement: int, arm: str, n: int, successes: int, *, per_session: int = 1, **kw: Any
) -> list[Ex]:
    """``n`` exposures of one arm, the first ``successes`` of them successful; consecutive groups of
    ``per_session`` share a session (so with per_session > 1 whole sessions succeed or fail together)."""
    tag = next(_seq)
    return [
        Ex(
            pattern_id,
            ok=i < successes,
            experiment=experiment,
            arm=arm,
            enhancement=enhancement,
            session=f"s{tag}-{experiment}-{arm}-{i // per_session}",
            **kw,
        )
        for i in range(n)
    ]

"""Rows whose client-controlled strings (model, path, session id, error, tool names) and Claude-written
labels (a pattern label, verdict reasoning) and alert titles carry Markdown links, images and HTML: the
dashboard must show them as text everywhere (tests/ui/test_dashboard_security.py, tests/browser)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from sqlalchemy import text

from intelligence.memory.models import EMBEDDING_DIM
from intelligence.memory.repository import EmbeddingRow, PatternRepository
from intelligence.records import Body, ExchangeRecord, Usage
from intelligence.store.engine import make_engine
from intelligence.store.repositories import ExchangeRepository

EVIL_HOST = "evil.example"
# what a hostile client (or a prompt-injected Claude) would put in a string the dashboard shows
EVIL = f"[click me](http://{EVIL_HOST}/phish) ![pixel](http://{EVIL_HOST}/track.png) <img src=x onerror=alert(1)> **loud**"


@dataclass
class EvilRows:
    marker: str
    request_id: str
    session_id: str
    pattern_id: int
    verdict_id: int
    event_id: int
    model: str
    tool: str


async def seed_evil_rows(url: str) -> EvilRows:
    marker = f"evil{uuid.uuid4().hex[:6]}"
    now = datetime.now(UTC)
    session = f"{marker} {EVIL}"
    model = f"gpt-{marker} {EVIL}"
    tool = f"{marker}.{EVIL}"
    ids = [f"{marker}-a", f"{marker}-b"]

    def rec(i: int, **kw) -> ExchangeRecord:
        started = now - timedelta(minutes=2 - i)
        base = dict(
            request_id=ids[i],
            started_at=started,
            finished_at=started + timedelta(milliseconds=90),
            method="POST",
            path=f"/openai/v1/chat/completions?x={EVIL}",
            provider="openai",
            api="chat",
            route="prefix",
            session_id=session,
            client_key_fp=f"fp-{marker}",
            model=model,
            status=500 if i == 0 else 200,
            error=f"upstream said {EVIL}" if i == 0 else None,
            latency_ms=90.0,
            usage=Usage(input_tokens=5, output_tokens=5, total_tokens=10),
            request_client=Body(json={"model": model, "messages": [{"role": "user", "content": EVIL}]}, size=100),
            request_forwarded=Body(json={"model": model, "messages": [{"role": "user", "content": EVIL}]}, size=100),
            response_client=Body(json={"choices": [{"message": {"content": EVIL}}]}, size=60),
            tool_names=(tool,),
            tool_calls=({"name": tool, "upstream_name": f"{marker}_alias", "arguments": json.dumps({"q": EVIL})},),
            response_text=f"reply {EVIL}",
            finish_reason=f"odd {EVIL}",
            prompt_user=f"{marker} {EVIL}",
            flags={"policy": {"fired": [{"policy": "p", "rule": f"r {EVIL}", "mode": "monitor", "actions": ["alert"]}]}},
        )
        base.update(kw)
        return ExchangeRecord(**base)

    records = [rec(0), rec(1)]
    engine = make_engine(url)
    rng = np.random.default_rng(11)
    centre = rng.normal(size=EMBEDDING_DIM).astype(np.float32)
    centre /= np.linalg.norm(centre)
    try:
        async with engine.begin() as conn:
            await ExchangeRepository(conn).insert_batch(records)
            for r in records:  # the response summary (migration 0013), as the gateway records it
                await conn.execute(
                    text("UPDATE exchanges SET response_text = :t, tool_calls = CAST(:c AS jsonb) WHERE request_id = :id"),
                    {"t": r.response_text, "c": json.dumps(list(r.tool_calls)), "id": r.request_id},
                )
            memory = PatternRepository(conn)
            pid = await memory.create_pattern(
                centre, seen_at=now, label=f"{marker} {EVIL}", examples=[{"request_id": ids[0], "text": EVIL, "similarity": 1.0}]
            )
            await memory.insert_embeddings(
                [
                    EmbeddingRow(
                        request_id=r.request_id,
                        embedding=centre,
                        canonical_hash=r.request_id,
                        pattern_id=pid,
                        similarity=1.0,
                        client_key_fp=r.client_key_fp,
                        model=r.model,
                        created_at=r.started_at,
                    )
                    for r in records
                ]
            )
            verdict_id = (
                await conn.execute(
                    text(
                        "INSERT INTO anomaly_verdicts (at, client_key_fp, detectors, suspicion, status, verdict, confidence, "
                        "reasoning, source, action) VALUES (now(), :client, ARRAY['volume'], '{}'::jsonb, 'judged', "
                        "'malicious', 0.9, :reasoning, 'claude', 'alert') RETURNING id"
                    ),
                    {"client": f"fp-{marker}", "reasoning": f"{marker} Claude says {EVIL}"},
                )
            ).scalar_one()
            event_id = (
                await conn.execute(
                    text("INSERT INTO events (kind, severity, title, subject) VALUES ('alert', 'critical', :t, :s) RETURNING id"),
                    {"t": f"{marker} {EVIL}", "s": ids[0]},
                )
            ).scalar_one()
    finally:
        await engine.dispose()
    return EvilRows(
        marker=marker,
        request_id=ids[0],
        session_id=session,
        pattern_id=int(pid),
        verdict_id=int(verdict_id),
        event_id=int(event_id),
        model=model,
        tool=tool,
    )

"""A dashboard database of its own, seeded with a few exchanges whose numbers the tests know exactly."""

from __future__ import annotations

import html
import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import numpy as np
import pytest
from sqlalchemy import text

from intelligence.memory.models import EMBEDDING_DIM
from intelligence.memory.repository import EmbeddingRow, PatternRepository, Signal, day_bucket, hour_bucket
from intelligence.records import Body, ExchangeRecord, Usage
from intelligence.store.engine import asyncpg_dsn, make_engine
from intelligence.store.migrate import upgrade_async
from intelligence.store.repositories import ExchangeRepository
from tests.conftest import database_url

APP = str(Path(__file__).resolve().parents[2] / "ui" / "dashboard.py")


def plain(markdown: str) -> str:
    """What a Markdown string shows once rendered (CommonMark, tags stripped): escapes undone, markup gone."""
    return shown_text(markdown).replace("\u2060", "").strip()  # the word joiner (ui.fmt.md) is invisible


def shown_text(markdown: str) -> str:
    """The text nodes of a Markdown string once parsed (entities decoded, tags dropped), nothing removed."""
    from markdown_it import MarkdownIt

    rendered = MarkdownIt("commonmark").render(markdown)
    return html.unescape(re.sub(r"<[^>]+>", "", rendered))


def table_frames(at: object) -> list:
    """The page's static tables (ui/tables.py: st.table, every cell escaped Markdown) as they read on the
    page: headers and cells through plain(). In page order; interactive grids stay in ``at.dataframe``."""
    return [
        t.value.map(lambda v: plain(v) if isinstance(v, str) else v).rename(columns=plain)
        for t in at.table  # type: ignore[attr-defined]
    ]


def numeric(frame):  # type: ignore[no-untyped-def]
    """``frame`` with each column whose shown cells are all whole numbers (or all decimals) as numbers again,
    so a test compares ids and counts as numbers. Empty cells become None."""
    import pandas as pd

    out = frame.copy()
    for col in out.columns:
        cells = [v for v in out[col] if v != ""]
        if not cells or not all(isinstance(v, str) and re.fullmatch(r"-?\d+(\.\d+)?(e[-+]?\d+)?", v) for v in cells):
            continue
        whole = all(re.fullmatch(r"-?\d+", v) for v in cells)
        out[col] = [None if v == "" else int(v) if whole else float(v) for v in out[col]]
    return out if isinstance(out, pd.DataFrame) else frame


SECRET = "sk-proj-UItestSecretValue1234567890abcdef"


@dataclass
class SeededUi:
    url: str
    now: datetime
    ids: dict[str, str]
    pattern_id: int
    pattern_label: str
    session_id: str
    alias: str
    expected_cost: float  # hand-computed from intelligence/prices.yaml
    cost_by_id: dict[str, float]
    started: dict[str, datetime]
    models: dict[str, int] = field(default_factory=dict)  # model -> exchanges


def _chat(model: str, text: str, tool: str | None = None) -> dict:
    d: dict = {"model": model, "messages": [{"role": "user", "content": text}]}
    if tool:
        d["tools"] = [{"type": "function", "function": {"name": tool, "parameters": {"type": "object"}}}]
    return d


def _chat_response(text: str | None, tool: str | None = None) -> dict:
    msg: dict = {"role": "assistant", "content": text}
    if tool:
        msg["tool_calls"] = [{"id": "call_1", "type": "function", "function": {"name": tool, "arguments": '{"q": "bugs"}'}}]
    return {
        "id": "chatcmpl-ui",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": msg, "finish_reason": "tool_calls" if tool else "stop"}],
    }


def build_records(now: datetime, marker: str) -> tuple[list[ExchangeRecord], dict[str, str], str, str]:
    """Eight exchanges over the last ten minutes: two clients, four models, one session, errors, tools."""
    original, alias = "github.search_issues", "github_search_issues_5f1e"
    session = f"sess-{marker}"
    ids = {k: f"{marker}-{k}" for k in ("tools", "claude", "err500", "err429", "unpriced", "extra1", "extra2", "extra3")}

    def rec(key: str, minutes_ago: float, **kw) -> ExchangeRecord:
        started = now - timedelta(minutes=minutes_ago)
        latency = kw.pop("latency_ms", 100.0)
        base = dict(
            request_id=ids[key],
            started_at=started,
            finished_at=started + timedelta(milliseconds=latency),
            method="POST",
            path="/openai/v1/chat/completions",
            provider="openai",
            api="chat",
            route="prefix",
            client_key_fp=f"fp-{marker}-alpha",
            client_addr="127.0.0.1",
            status=200,
            latency_ms=latency,
            upstream_ms=latency - 2,
            request_headers={"content-type": "application/json"},
        )
        base.update(kw)
        return ExchangeRecord(**base)

    records = [
        rec(
            "tools",
            9,
            session_id=session,
            model="gpt-4o",
            streamed=True,
            ttft_ms=40.0,
            latency_ms=120.0,
            usage=Usage(input_tokens=1000, output_tokens=500, total_tokens=1500, cached_tokens=200),
            request_client=Body(json=_chat("gpt-4o", f"{marker} summarise the open bugs", original), size=200),
            request_forwarded=Body(json=_chat("gpt-4o", f"{marker} summarise the open bugs", alias), size=200),
            response_upstream=Body(json=_chat_response(None, alias), size=200),
            response_client=Body(json=_chat_response(None, original), size=200),
            tool_names=(original,),
            tool_aliases={alias: original},
            tool_calls=({"name": original, "upstream_name": alias, "arguments": '{"q": "bugs"}'},),
            finish_reason="tool_calls",
            prompt_user=f"{marker} summarise the open bugs",
            request_headers={"content-type": "application/json", "x-custom-auth": SECRET, "user-agent": "ui-test"},
        ),
        rec(
            "claude",
            8,
            session_id=session,
            model="claude-sonnet-4-5",
            provider="anthropic",
            api="messages",
            path="/anthropic/v1/messages",
            latency_ms=300.0,
            usage=Usage(input_tokens=2000, output_tokens=100, total_tokens=2100, cached_tokens=1000),
            request_client=Body(
                json={
                    "model": "claude-sonnet-4-5",
                    "max_tokens": 100,
                    "messages": [{"role": "user", "content": f"{marker} and the closed ones?"}],
                },
                size=90,
            ),
            request_forwarded=Body(
                json={
                    "model": "claude-sonnet-4-5",
                    "max_tokens": 100,
                    "messages": [{"role": "user", "content": f"{marker} and the closed ones?"}],
                },
                size=90,
            ),
            response_client=Body(
                json={
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "text", "text": f"{marker} twelve closed bugs"}],
                    "stop_reason": "end_turn",
                },
                size=80,
            ),
            response_text=f"{marker} twelve closed bugs",
            finish_reason="end_turn",
            prompt_user=f"{marker} and the closed ones?",
        ),
        rec(
            "err500",
            7,
            client_key_fp=f"fp-{marker}-beta",
            model="gpt-4o-mini",
            status=500,
            error="upstream 500",
            latency_ms=50.0,
            prompt_user=f"{marker} failing request",
        ),
        rec(
            "err429",
            6,
            client_key_fp=f"fp-{marker}-beta",
            model="gpt-4o-mini",
            status=429,
            latency_ms=30.0,
            prompt_user=f"{marker} rate limited",
        ),
        rec(
            "unpriced",
            5,
            model="acme/unknown-model",
            provider="openrouter",
            latency_ms=200.0,
            usage=Usage(input_tokens=10, output_tokens=10, total_tokens=20),
            prompt_user=f"{marker} unpriced",
        ),
        *(
            rec(
                f"extra{i}",
                4 - i,
                model="gpt-4o-mini",
                latency_ms=80.0 + i,
                usage=Usage(input_tokens=100, output_tokens=0, total_tokens=100),
                prompt_user=f"{marker} summarise the open bugs again {i}",
            )
            for i in (1, 2, 3)
        ),
    ]
    return records, ids, session, alias


async def store_summaries(conn, records: list[ExchangeRecord]) -> None:
    """Write the response summaries (``response_text``, ``tool_calls``, migration 0013) of ``records``.

    The gateway records them with each exchange; ``ExchangeRepository.insert_batch`` does not write these
    two columns yet (docs/dashboard.md, "Response summaries"), so the fixtures store them here.
    """
    rows = [r for r in records if r.response_text is not None or r.tool_calls]
    for r in rows:
        await conn.execute(
            text("UPDATE exchanges SET response_text = :t, tool_calls = CAST(:c AS jsonb) WHERE request_id = :id"),
            {"t": r.response_text, "c": json.dumps(list(r.tool_calls)), "id": r.request_id},
        )


# hand-computed costs (USD per 1e6 tokens) of the priced exchanges:
COSTS = {"tools": 7250, "claude": 7800, "extra1": 15, "extra2": 15, "extra3": 15}
# gpt-4o: 800 uncached * 2.50 + 200 cached * 1.25 + 500 out * 10.00 = 7250 per 1e6
# claude-sonnet-4-5 (cache reads on top): 2000 * 3.00 + 1000 * 0.30 + 100 * 15.00 = 7800 per 1e6
# gpt-4o-mini extras: 3 * 100 * 0.15 = 45 per 1e6; errors carry no tokens; acme/unknown-model is unpriced
EXPECTED_COST = sum(COSTS.values()) / 1e6


@pytest.fixture(scope="session")
async def ui_db(pg_server_url: str) -> AsyncIterator[SeededUi]:
    name = f"ui_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(asyncpg_dsn(pg_server_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = database_url(pg_server_url, name)
    await upgrade_async(url)
    marker = f"uit{uuid.uuid4().hex[:6]}"
    now = datetime.now(UTC)
    records, ids, session, alias = build_records(now, marker)
    engine = make_engine(url)
    rng = np.random.default_rng(3)
    centre = rng.normal(size=EMBEDDING_DIM).astype(np.float32)
    label = f"{marker} bug summaries"
    try:
        async with engine.begin() as conn:
            await ExchangeRepository(conn).insert_batch(records)
            await store_summaries(conn, records)
        async with engine.begin() as conn:
            memory = PatternRepository(conn)
            pid = await memory.create_pattern(
                centre / np.linalg.norm(centre),
                seen_at=now,
                label=label,
                examples=[{"request_id": ids["tools"], "text": f"{marker} summarise the open bugs", "similarity": 1.0}],
            )
            members = [
                r
                for r in records
                if r.request_id in {ids[k] for k in ("tools", "claude", "err500", "extra1", "extra2", "extra3")}
            ]
            rows = []
            for r in members:
                v = centre + 0.3 * rng.normal(size=EMBEDDING_DIM).astype(np.float32)
                rows.append(
                    EmbeddingRow(
                        request_id=r.request_id,
                        embedding=v / np.linalg.norm(v),
                        canonical_hash=r.request_id,
                        pattern_id=pid,
                        similarity=0.9,
                        client_key_fp=r.client_key_fp,
                        model=r.model,
                        created_at=r.started_at,
                    )
                )
            await memory.insert_embeddings(rows)
            counts: dict = {}
            for r in members:
                for gran, bucket in (("hour", hour_bucket(r.started_at)), ("day", day_bucket(r.started_at))):
                    counts[(pid, gran, bucket)] = counts.get((pid, gran, bucket), 0) + 1
            await memory.add_counts(counts)
            await memory.update_pattern(
                pid,
                centroid=centre / np.linalg.norm(centre),
                member_count=len(members),
                examples=[{"request_id": ids["tools"], "text": f"{marker} summarise the open bugs", "similarity": 1.0}],
                spread=0.1,
                radius=0.2,
                seen_at=now,
            )
            await memory.add_signals([Signal(ids["err500"], "status", False, value="500", detail="upstream 500")])
    finally:
        await engine.dispose()
    models: dict[str, int] = {}
    for r in records:
        models[r.model] = models.get(r.model, 0) + 1
    yield SeededUi(
        url=url,
        now=now,
        ids=ids,
        pattern_id=pid,
        pattern_label=label,
        session_id=session,
        alias=alias,
        expected_cost=EXPECTED_COST,
        cost_by_id={ids[k]: c / 1e6 for k, c in COSTS.items()},
        started={r.request_id: r.started_at for r in records},
        models=models,
    )
    admin = await asyncpg.connect(asyncpg_dsn(pg_server_url))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


# ---------------------------------------------------------------------------------------------
# every AppTest here runs as if `llmproxy up` had launched it: bound to loopback, no SECRET_KEY
# unless a test sets one (AppTest leaves server.address unset, which Streamlit serves on all interfaces)


@pytest.fixture(autouse=True)
def loopback_dashboard(monkeypatch: pytest.MonkeyPatch):
    from streamlit import config

    before = config.get_option("server.address")
    config.set_option("server.address", "127.0.0.1")
    monkeypatch.delenv("SECRET_KEY", raising=False)
    yield
    config.set_option("server.address", before)

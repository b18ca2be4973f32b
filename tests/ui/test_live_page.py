"""The minimal live page renders against a seeded real Postgres and hands the seeded exchange to its component."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from streamlit.testing.v1 import AppTest

from intelligence.records import Body, ExchangeRecord, Usage
from intelligence.store.repositories import ExchangeRepository

APP = str(Path(__file__).resolve().parents[2] / "ui" / "dashboard.py")


async def test_live_page_shows_recent_exchanges(db_engine, pg_url, monkeypatch) -> None:
    now = datetime.now(UTC)
    rec = ExchangeRecord(
        request_id="ui-live-seed-1",
        started_at=now,
        finished_at=now,
        method="POST",
        path="/openai/v1/chat/completions",
        provider="openai",
        model="gpt-ui-seed",
        status=200,
        latency_ms=12.5,
        usage=Usage(input_tokens=3, output_tokens=4),
        request_client=Body(json={"model": "gpt-ui-seed"}, size=10),
    )
    async with db_engine.begin() as conn:
        await ExchangeRepository(conn).insert_batch([rec])
    monkeypatch.setenv("DATABASE_URL", pg_url)
    at = AppTest.from_file(APP, default_timeout=30)
    at.run()
    assert not at.exception
    assert at.title[0].value == "Live traffic"
    view = json.loads(next(e for e in at.get("bidi_component") if e.proto.component_name == "llmproxy_live").proto.json)
    assert "gpt-ui-seed" in {r["model"] for r in view["rows"]}

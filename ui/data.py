"""The dashboard's one data layer: cached reads through the intelligence repositories.

Pages only lay out. Streamlit runs scripts in threads without an event loop, so each read runs the
async repository code to completion on a private loop, with a short TTL cache in front.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pandas as pd
import streamlit as st


def database_url() -> str | None:
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    from extproc.cli.stack import StackState

    state = StackState.load(Path(os.environ.get("LLMPROXY_DATA_DIR", ".llmproxy")))
    return state.database_url if state else None


def _run(coro_fn):
    from sqlalchemy.pool import NullPool

    from intelligence.store.engine import make_engine

    url = database_url()
    if not url:
        raise RuntimeError("no database configured (DATABASE_URL or a running `llmproxy up`)")

    async def _go():
        engine = make_engine(url, poolclass=NullPool)
        try:
            async with engine.connect() as conn:
                return await coro_fn(conn)
        finally:
            await engine.dispose()

    return asyncio.run(_go())


COLUMNS = ["time", "client", "provider", "model", "status", "latency_ms", "ttft_ms", "tokens_in", "tokens_out",
           "streamed", "error", "request_id"]


@st.cache_data(ttl=0.5, show_spinner=False)
def recent_exchanges(limit: int = 200) -> pd.DataFrame:
    from intelligence.store.repositories import ExchangeRepository

    async def q(conn):
        return await ExchangeRepository(conn).recent(limit)

    rows = [
        {"time": r.started_at, "client": r.client_key_fp or r.client_addr, "provider": r.provider, "model": r.model,
         "status": r.status, "latency_ms": r.latency_ms, "ttft_ms": r.ttft_ms, "tokens_in": r.usage.input_tokens,
         "tokens_out": r.usage.output_tokens, "streamed": r.streamed, "error": r.error, "request_id": r.request_id}
        for r in _run(q)
    ]
    df = pd.DataFrame(rows, columns=COLUMNS)
    # Arrow cannot hold arbitrary Python ints (a provider may report absurd token counts): show floats.
    for col in ("status", "latency_ms", "ttft_ms", "tokens_in", "tokens_out"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    return df

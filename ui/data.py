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


COLUMNS = ["started_at", "client_key_fp", "provider", "model", "status", "latency_ms", "ttft_ms",
           "input_tokens", "output_tokens", "streamed", "error", "request_id"]


@st.cache_data(ttl=0.5, show_spinner=False)
def recent_exchanges(limit: int = 200) -> pd.DataFrame:
    from intelligence.store.repositories import ExchangeRepository

    async def q(conn):
        return await ExchangeRepository(conn).recent(limit)

    rows = _run(q)
    data = [{c: (r.get(c) if isinstance(r, dict) else getattr(r, c, None)) for c in COLUMNS} for r in rows]
    return pd.DataFrame(data, columns=COLUMNS)

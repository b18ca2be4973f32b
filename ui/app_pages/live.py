"""Live: the newest exchanges, refreshed in place every second."""

import streamlit as st

from ui import data

st.title("Live traffic")


@st.fragment(run_every=1.0)
def live_table() -> None:
    try:
        df = data.recent_exchanges(200)
    except Exception as exc:  # the database may be restarting; say so instead of a traceback
        st.warning(f"Waiting for the database: {exc}")
        return
    c1, c2, c3 = st.columns(3)
    c1.metric("Exchanges shown", len(df))
    c2.metric("Errors", int((df["status"].fillna(0) >= 400).sum()) if len(df) else 0)
    c3.metric("p50 latency (ms)", f"{df['latency_ms'].median():.0f}" if len(df) else "-")
    st.dataframe(df, hide_index=True, width="stretch")


live_table()

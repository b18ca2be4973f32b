"""Live: KPI tiles with sparklines and the newest exchanges, refreshed in place (fragments, no full reruns)."""

from __future__ import annotations

import streamlit as st

from ui import alerts, data, fmt

st.title("Live traffic")

WINDOW_MINUTES = 15


@st.fragment(run_every=5.0)  # slow-moving tiles; a busier timer here delays the table (docs/dashboard.md)
def kpi_tiles() -> None:
    alerts.show_alerts()
    try:
        kpis = data.live_kpis(WINDOW_MINUTES, 60)
        spend = data.spend_today()
        feed = data.feed_status()
    except Exception as exc:  # noqa: BLE001 - the database may be restarting: say so instead of a traceback
        st.warning(f"Waiting for the database: {exc}")
        return
    s = kpis.series
    tiles = st.columns(5)
    tiles[0].metric(
        "Requests / s",
        f"{kpis.req_per_s:.2f}",
        chart_data=list(s["req_per_s"]),
        chart_type="bar",
        border=True,
        help=f"Average over the last {WINDOW_MINUTES} minutes; sparkline per minute.",
    )
    tiles[1].metric(
        "Error rate",
        fmt.percent(kpis.error_rate),
        chart_data=list(s["error_rate"]),
        border=True,
        help="Share of exchanges with status >= 400 or a transport error.",
    )
    tiles[2].metric("p50 latency", fmt.ms(kpis.p50_ms), chart_data=list(s["p50_ms"].fillna(0)), border=True)
    tiles[3].metric("p95 latency", fmt.ms(kpis.p95_ms), chart_data=list(s["p95_ms"].fillna(0)), border=True)
    tiles[4].metric(
        "Spend today",
        fmt.usd(spend.total_usd),
        chart_data=list(spend.hourly["cost_usd"]),
        chart_type="bar",
        border=True,
        help="Since 00:00 UTC, per-model prices from intelligence/prices.yaml; sparkline per hour."
        + (f" {spend.unpriced_requests} exchanges of unpriced models are not included." if spend.unpriced_requests else ""),
    )
    source = "LISTEN/NOTIFY" if feed.get("connected") else "polling every second (LISTEN unavailable)"
    st.caption(f"{kpis.requests} exchanges in the last {WINDOW_MINUTES} min · updates via {source}")


@st.fragment(run_every=0.25)
def live_table() -> None:
    try:
        df = data.recent_exchanges(200)
    except Exception as exc:  # noqa: BLE001 - shown on the page instead of a traceback
        st.warning(f"Waiting for the database: {exc}")
        return
    if df.empty:
        st.info("No exchanges yet. Point an SDK at the gateway and they appear here as they finish.")
        return
    shown = df.assign(open="explorer?request_id=" + df["request_id"])
    st.dataframe(
        shown,
        hide_index=True,
        width="stretch",
        height=620,
        column_order=[
            "time",
            "client",
            "model",
            "status",
            "latency_ms",
            "ttft_ms",
            "tokens_in",
            "tokens_out",
            "cost_usd",
            "flags",
            "open",
            "provider",
            "request_id",
        ],
        column_config=fmt.exchange_columns(),
    )


kpi_tiles()
live_table()

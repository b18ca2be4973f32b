"""Analytics: volume, latency, TTFT, tokens, cost and errors over time, grouped; export and report."""

from __future__ import annotations

import io
from datetime import UTC, datetime, time, timedelta

import pandas as pd
import streamlit as st

from ui import charts, data, fmt, tables
from ui.report import build_report

st.title("Analytics")

GROUP_LABELS = {"none": "Total", "model": "Model", "provider": "Provider", "client": "Client", "pattern": "Pattern"}
CUSTOM = "Custom range"

c = st.columns([1.3, 2.6, 1.4])
period = c[0].selectbox("Period", [*data.PERIODS, CUSTOM], index=1)
group_by = c[1].segmented_control("Group by", list(GROUP_LABELS), format_func=GROUP_LABELS.get, default="model") or "none"
metric = c[2].selectbox("Chart", list(charts.METRIC_LABELS), format_func=charts.METRIC_LABELS.get)

if period == CUSTOM:
    today = datetime.now(UTC).date()
    picked = st.date_input("Dates (UTC)", value=(today - timedelta(days=6), today), max_value=today)
    if not isinstance(picked, tuple) or len(picked) != 2:
        st.info("Pick a start and an end date.")
        st.stop()
    since = datetime.combine(picked[0], time.min, tzinfo=UTC)
    until = datetime.combine(picked[1], time.min, tzinfo=UTC) + timedelta(days=1)
else:
    since, until = data.period_bounds(data.PERIODS[period])

try:
    view = data.analytics(since, until, group_by)
except Exception as exc:  # noqa: BLE001 - no database configured, or it is restarting
    st.warning(f"Analytics unavailable: {fmt.md(exc)}")
    st.stop()

key = {"none": None, "pattern": "pattern"}.get(group_by, group_by)
t = view.totals.iloc[0] if len(view.totals) else None
k = st.columns(6)
n = int(t["requests"]) if t is not None else 0
k[0].metric("Requests", fmt.count(n))
k[1].metric("Error rate", fmt.stat(t["error_rate"] if t is not None else None, fmt.percent, n))
k[2].metric("Latency p50", fmt.stat(t["latency_p50_ms"] if t is not None else None, fmt.ms, n))
k[3].metric("Latency p95", fmt.stat(t["latency_p95_ms"] if t is not None else None, fmt.ms, n))
k[4].metric(
    "Tokens in / out",
    f"{fmt.compact(t['input_tokens'])} / {fmt.compact(t['output_tokens'])}" if t is not None else "0 / 0",
    help=f"{fmt.count(t['input_tokens'])} in, {fmt.count(t['output_tokens'])} out, "
    f"{fmt.count(t['cached_tokens'])} cached, {fmt.count(t['reasoning_tokens'])} reasoning"
    if t is not None
    else None,
)
k[5].metric(
    "Cost",
    fmt.usd(t["cost_usd"]) if t is not None else fmt.usd(0.0),
    help=f"Prices as of {data.prices().as_of} (intelligence/prices.yaml)"
    + (
        f"; {int(t['unpriced_requests']):,} exchanges of unpriced models count as $0"
        if t is not None and t["unpriced_requests"]
        else ""
    ),
)

st.caption(
    f"{since:%Y-%m-%d %H:%M} – {until:%Y-%m-%d %H:%M} UTC · {view.granularity}ly buckets from the rollup tables"
    + (" · pattern rollups count exchanges pattern memory has assigned" if group_by == "pattern" else "")
)

if view.series.empty:
    st.info("No traffic in this period.")
else:
    st.altair_chart(charts.time_series(view.series, metric, key, view.granularity), width="stretch")

if key:
    st.subheader(f"By {GROUP_LABELS[group_by].lower()}")
    if not view.summary.empty:
        st.altair_chart(
            charts.bars(view.summary.head(15), key, metric if metric in view.summary else "requests"), width="stretch"
        )
shown = view.summary.drop(columns=["pattern_id"], errors="ignore")
tables.show(shown, hide_index=True, width="stretch", column_config=fmt.summary_columns())


def _parquet(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


stem = f"llmproxy-{group_by}-{since:%Y%m%d%H}-{until:%Y%m%d%H}"
with st.expander("Export and report", expanded=False):
    # the files are made when a button is pressed (deferred), not on every run of the page
    e = st.columns(4)
    e[0].download_button("Summary (CSV)", lambda: shown.to_csv(index=False), f"{stem}-summary.csv", "text/csv", on_click="ignore")
    e[1].download_button(
        "Summary (Parquet)", lambda: _parquet(shown), f"{stem}-summary.parquet", "application/octet-stream", on_click="ignore"
    )
    series = view.series.drop(columns=["pattern_id"], errors="ignore")
    e[2].download_button(
        "Time series (CSV)", lambda: series.to_csv(index=False), f"{stem}-series.csv", "text/csv", on_click="ignore"
    )
    e[3].download_button(
        "Time series (Parquet)", lambda: _parquet(series), f"{stem}-series.parquet", "application/octet-stream", on_click="ignore"
    )
    if st.button("Build HTML report for this period", key="build_report"):
        sections = []
        for g, title in (("model", "By model"), ("provider", "By provider"), ("client", "By client"), ("pattern", "By pattern")):
            v = data.analytics(since, until, g, top_n=20)
            sections.append((title, "pattern" if g == "pattern" else g, v.summary.head(20)))
        overall = data.analytics(since, until, "none")
        fmt_bucket = "%Y-%m-%d %H:00" if overall.granularity == "hour" else "%Y-%m-%d"
        over_time = overall.series.assign(period=pd.to_datetime(overall.series["bucket"]).dt.strftime(fmt_bucket))
        st.session_state["report_html"] = build_report(since, until, overall.totals, sections, over_time, data.prices())
    if "report_html" in st.session_state:
        st.download_button(
            "Download report (HTML)",
            st.session_state["report_html"],
            f"{stem}-report.html",
            "text/html",
            on_click="ignore",
            type="primary",
        )

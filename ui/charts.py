"""Altair charts used by several pages. Colours come from Streamlit's theme (light and dark)."""

from __future__ import annotations

import altair as alt
import pandas as pd

METRIC_LABELS = {
    "requests": "Requests",
    "error_rate": "Error rate",
    "latency_p50_ms": "Latency p50 (ms)",
    "latency_p95_ms": "Latency p95 (ms)",
    "latency_p99_ms": "Latency p99 (ms)",
    "ttft_p50_ms": "TTFT p50 (ms)",
    "ttft_p95_ms": "TTFT p95 (ms)",
    "input_tokens": "Input tokens",
    "output_tokens": "Output tokens",
    "cost_usd": "Cost (USD)",
}


def _format(metric: str) -> str:
    if metric == "error_rate":
        return ".1%"
    if metric == "cost_usd":
        return "$,.2f"
    return ",.0f"


def time_series(series: pd.DataFrame, metric: str, color: str | None, granularity: str) -> alt.Chart:
    """``metric`` over ``bucket``, one line (or stacked area for additive metrics) per ``color`` value."""
    additive = metric in ("requests", "input_tokens", "output_tokens", "cost_usd")
    x = alt.X("bucket:T", title=None, timeUnit="utcyearmonthdatehours" if granularity == "hour" else "utcyearmonthdate")
    y = alt.Y(
        f"{metric}:Q",
        title=METRIC_LABELS.get(metric, metric),
        stack="zero" if additive else None,
        axis=alt.Axis(format=_format(metric)),
    )
    tooltip = [
        alt.Tooltip("bucket:T", title="time", format="%Y-%m-%d %H:%M"),
        alt.Tooltip(f"{metric}:Q", title=METRIC_LABELS.get(metric, metric), format=_format(metric)),
    ]
    base = alt.Chart(series)
    mark = base.mark_area(opacity=0.85) if additive and color else base.mark_line(point=len(series) < 60)
    enc: dict = {"x": x, "y": y, "tooltip": tooltip}
    if color:
        enc["color"] = alt.Color(f"{color}:N", title=color, legend=alt.Legend(orient="bottom", columns=4, labelLimit=220))
        enc["tooltip"] = [alt.Tooltip(f"{color}:N"), *tooltip]
    return mark.encode(**enc).properties(height=280)


def bars(df: pd.DataFrame, category: str, metric: str) -> alt.Chart:
    return (
        alt.Chart(df)
        .mark_bar()
        .encode(
            y=alt.Y(f"{category}:N", sort="-x", title=None, axis=alt.Axis(labelLimit=260, labelOverlap=False)),
            x=alt.X(f"{metric}:Q", title=METRIC_LABELS.get(metric, metric), axis=alt.Axis(format=_format(metric))),
            tooltip=[alt.Tooltip(f"{category}:N"), alt.Tooltip(f"{metric}:Q", format=_format(metric))],
        )
        .properties(height=max(120, 26 * len(df)))
    )


def session_timeline(turns: pd.DataFrame) -> alt.Chart:
    """One bar per exchange from start to finish, coloured by outcome."""
    return (
        alt.Chart(turns)
        .mark_bar(cornerRadius=3)
        .encode(
            x=alt.X("started_at:T", title=None),
            x2="finished_at:T",
            y=alt.Y("turn:O", title="turn"),
            color=alt.Color(
                "outcome:N",
                scale=alt.Scale(domain=["ok", "error"], range=["#2e9d5b", "#d64545"]),
                legend=alt.Legend(orient="bottom"),
            ),
            tooltip=["turn:O", "model:N", "status:Q", alt.Tooltip("latency_ms:Q", format=",.0f"), "request_id:N"],
        )
        .properties(height=max(120, 22 * len(turns)))
    )


def scatter_map(points: pd.DataFrame, color: str) -> alt.Chart:
    enc_color = (
        alt.Color("outcome:N", scale=alt.Scale(domain=["ok", "failed"], range=["#2e9d5b", "#d64545"]))
        if color == "outcome"
        else alt.Color("pattern:N", legend=alt.Legend(orient="bottom", columns=3, labelLimit=220))
    )
    return (
        alt.Chart(points)
        .mark_circle(size=28, opacity=0.7)
        .encode(
            x=alt.X("x:Q", title="PC 1", axis=alt.Axis(labels=False, ticks=False)),
            y=alt.Y("y:Q", title="PC 2", axis=alt.Axis(labels=False, ticks=False)),
            color=enc_color,
            tooltip=["pattern:N", "outcome:N", "prompt:N", "request_id:N"],
        )
        .properties(height=460)
        .interactive()
    )

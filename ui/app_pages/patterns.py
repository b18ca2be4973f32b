"""Patterns: what pattern memory learned: top patterns with trends, one pattern, a map, similar prompts."""

from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from ui import charts, data, fmt, tables

st.title("Patterns")
st.caption(
    "Similar prompts grouped by pattern memory (embeddings in pgvector). Failure = the exchange carried a "
    "failing outcome signal: error status, truncation/refusal, invalid tool arguments, retry or negative feedback."
)

c = st.columns([1, 3])
days = c[0].selectbox("Period", [7, 30, 90], index=0, format_func=lambda d: f"last {d} days")

try:
    top = data.top_patterns(days=days, limit=10)
except Exception as exc:  # noqa: BLE001 - no database, or pattern memory not migrated
    st.warning(f"Pattern memory unavailable: {fmt.md(exc)}")
    st.stop()

trend = st.column_config.LineChartColumn("trend (per day)", width="medium")
label = st.column_config.TextColumn("pattern", width="large")
tabs = st.tabs(["By volume", "By failure rate", "By growth (24 h)"])
with tabs[0]:
    if top.volume.empty:
        st.info("No patterns yet: the pattern-memory worker assigns exchanges as they arrive.")
    tables.show(
        top.volume,
        hide_index=True,
        width="stretch",
        column_config={"trend": trend, "label": label, "exchanges": st.column_config.NumberColumn(format="%d")},
    )
with tabs[1]:
    tables.show(
        top.failure,
        hide_index=True,
        width="stretch",
        column_config={
            "trend": trend,
            "label": label,
            "failure_rate": st.column_config.ProgressColumn("failure rate", min_value=0, max_value=1, format="percent"),
        },
    )
with tabs[2]:
    tables.show(
        top.growth,
        hide_index=True,
        width="stretch",
        column_config={
            "trend": trend,
            "label": label,
            "growth": st.column_config.NumberColumn("growth ×", format="%.2f", help="(last 24 h + 1) / (previous 24 h + 1)"),
        },
    )

st.subheader("One pattern")
known = pd.concat(
    [top.volume[["pattern_id", "label"]], top.failure[["pattern_id", "label"]], top.growth[["pattern_id", "label"]]]
).drop_duplicates("pattern_id")
choices = {int(r.pattern_id): f"#{int(r.pattern_id)} {r.label}" for r in known.itertuples()}
wanted = st.query_params.get("pattern")
if wanted and wanted.isdigit() and int(wanted) not in choices:
    choices[int(wanted)] = f"#{wanted}"
if choices:
    ids = list(choices)
    default = ids.index(int(wanted)) if wanted and wanted.isdigit() and int(wanted) in ids else 0
    pid = st.selectbox("Pattern", ids, index=default, format_func=choices.get)
    detail = data.pattern_detail(pid, days=days)
    if detail is None:
        st.warning(f"Pattern #{pid} does not exist.")
    else:
        p = detail.pattern
        st.markdown(
            f"**#{p.id} {fmt.md(p.label or '(unlabelled)')}** · label by {fmt.md(p.label_source)} · "
            f"first seen {p.first_seen:%Y-%m-%d}, last seen {p.last_seen:%Y-%m-%d} · "
            f"[its exchanges](explorer?pattern={p.id})"
        )
        m = st.columns(4)
        m[0].metric("Exchanges (all time)", fmt.count(p.member_count))
        m[1].metric(
            f"Success rate ({days} d)",
            fmt.stat(detail.success_rate, fmt.percent, detail.total),
            help=f"{detail.failed:,} of {detail.total:,} exchanges carried a failing signal",
        )
        m[2].metric(
            "Spread",
            fmt.stat(p.spread, lambda v: f"{v:.3f}", p.member_count),
            help="mean cosine distance of members to the centroid",
        )
        m[3].metric(
            "Failing signals",
            (", ".join(f"{k} {v}" for k, v in detail.failed_by_kind.items()) or "none") if detail.total else fmt.NO_DATA,
        )
        left, right = st.columns([2, 1])
        with left:
            if not detail.daily.empty:
                st.altair_chart(
                    charts.time_series(detail.daily.rename(columns={"exchanges": "requests"}), "requests", None, "day"),
                    width="stretch",
                )
        with right:
            st.markdown("**Models**")
            tables.show(pd.DataFrame(detail.models, columns=["model", "exchanges"]), hide_index=True, width="stretch")
            st.markdown("**Clients**")
            tables.show(pd.DataFrame(detail.clients, columns=["client", "exchanges"]), hide_index=True, width="stretch")
        if p.examples:
            with st.expander("Example prompts"):
                from ui.redact import mask_secrets

                for ex in p.examples[:5]:
                    st.text(mask_secrets(str(ex.get("text") or ex.get("prompt") or ex)))

st.subheader("Map of the embedding space")
job = data.map_job()


@st.fragment(run_every=2.0 if job.frame is None else None)
def embedding_map() -> None:
    points = job.frame
    if points is None:
        st.info(
            "Computing the map in the background" + (f" (last attempt failed: {fmt.md(job.error)})" if job.error else "") + "..."
        )
        return
    if points.empty:
        st.info("Not enough embedded prompts to draw a map yet.")
        return
    color = st.radio("Colour by", ["pattern", "outcome"], horizontal=True)
    top_ids = set(points["pattern"].value_counts().head(12).index)
    shown = points.assign(pattern=points["pattern"].where(points["pattern"].isin(top_ids), "other"))
    st.altair_chart(charts.scatter_map(shown, color), width="stretch")
    age = time.time() - (job.computed_at or time.time())
    st.caption(
        f"PCA of the {len(points):,} newest embedded prompts, computed {age / 60:.0f} min ago in the background "
        f"(refreshed every {data.MAP_MAX_AGE_S / 60:.0f} min)."
    )


embedding_map()

st.subheader("Search similar prompts")
with st.form("similar"):
    query = st.text_input("Prompt", placeholder="e.g. summarise this support ticket")
    submitted = st.form_submit_button("Search")
if submitted and query.strip():
    try:
        hits = data.similar_prompts(query, k=10)
    except Exception as exc:  # noqa: BLE001 - the embedding model is optional at run time
        st.warning(f"Similarity search needs the local embedding model: {fmt.md(exc)}")
    else:
        tables.show(
            hits.assign(open="explorer?request_id=" + hits["request_id"]),
            hide_index=True,
            width="stretch",
            column_config={
                "similarity": st.column_config.ProgressColumn("similarity", min_value=0, max_value=1, format="%.2f"),
                "time": st.column_config.DatetimeColumn("time", format="YYYY-MM-DD HH:mm"),
                "open": st.column_config.LinkColumn("details", display_text="open"),
            },
        )

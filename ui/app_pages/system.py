"""System: health of every part, versions, queues and spool, Claude mode and flags, and what the intelligence spends."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import streamlit as st

from ui import data, fmt, tables

st.title("System")

# plain symbols: emoji need a colour font that servers and kiosk browsers often lack
ICONS = {"ok": "✓ ok", "down": "✗ DOWN", "off": "– off", "unknown": "? unknown"}


@st.fragment(run_every=5.0)
def system() -> None:
    status = data.system_status()
    st.subheader("Components")
    tables.show(
        pd.DataFrame(
            [{"component": c.name, "state": ICONS.get(c.state, c.state), "detail": c.detail} for c in status.components]
        ),
        hide_index=True,
        width="stretch",
        column_config={"detail": st.column_config.TextColumn(width="large")},
    )
    st.caption(
        f"Data dir {fmt.md(status.data_dir)}"
        + (f" · stack started {fmt.md(status.stack_started)}" if status.stack_started else "")
    )

    st.subheader("Queues")
    q = st.columns(4)
    q[0].metric(
        "Spool (records waiting)",
        fmt.count(status.spool.records),
        help=f"{status.spool.segments} segment file(s) in the data dir's spool/: records written while the "
        "database was unreachable, replayed in order when it is back",
    )
    q[1].metric(
        "Rejected records", fmt.count(status.spool.rejected), help="refused by the database; kept in spool/rejected.jsonl"
    )
    q[2].metric(
        "Pattern-memory backlog (24 h)",
        fmt.count(status.worker_backlog),
        help="exchanges of the last 24 hours not yet embedded and assigned by the worker",
    )
    feed = status.feed
    if feed.get("connected"):
        last = feed.get("last_event")
        ago = f"last event {datetime.now(UTC).timestamp() - last:.0f} s ago" if last else "no event yet"
        q[3].metric("Live feed", "LISTEN", help=f"llmproxy_exchanges NOTIFY channel · {ago}")
    else:
        q[3].metric("Live feed", "polling", help=fmt.md(feed.get("error") or "LISTEN connection not established"))

    try:
        claude_section()
    except Exception as exc:  # noqa: BLE001 - the rest of the page is still useful
        st.warning(f"Claude spend unavailable: {fmt.md(exc)}")

    left, right = st.columns(2)
    with left:
        st.subheader("Versions")
        tables.show(
            pd.DataFrame(sorted(status.versions.items()), columns=["component", "version"]), hide_index=True, width="stretch"
        )
    with right:
        st.subheader("Database")
        db = status.database
        if not db:
            st.warning("Database unreachable.")
        else:
            current, code = db["schema_revision"], db["code_revision"]
            st.metric("Exchanges (estimate)", fmt.count(db["estimated_exchanges"]))
            if current == code:
                st.caption(f"Schema at {current} (the code's head).")
            else:
                st.warning(f"Schema at {current}, code expects {code}: run `llmproxy up` (it migrates) to upgrade.")
            sizes = pd.DataFrame(sorted(db["table_bytes"].items(), key=lambda kv: -kv[1]), columns=["table", "bytes"])
            sizes["size"] = sizes["bytes"].map(lambda b: f"{b / 1e6:,.1f} MB")
            tables.show(sizes[["table", "size"]], hide_index=True, width="stretch")


MODES = {
    "local-only": "local only (no Claude calls: no API key configured)",
    "anthropic": "Anthropic API",
    "openrouter": "OpenRouter",
}


def claude_section() -> None:
    st.subheader("Intelligence: Claude")
    claude = data.claude_status()
    c = st.columns(2)
    if claude.mode is None:
        c[0].metric("Claude mode", "unknown", help=fmt.md(claude.error))
    else:
        c[0].metric("Claude mode", claude.mode, help=MODES.get(claude.mode, claude.mode))
    c[1].metric("Model", claude.model or "–")
    if claude.summary:
        st.caption(fmt.md(claude.summary))
    if claude.flags:
        tables.show(
            pd.DataFrame([{"flag": k, "state": "on" if v else "off"} for k, v in claude.flags.items()]),
            hide_index=True,
            width="stretch",
            key="sys_claude_flags",
        )
    spend = data.claude_spend()
    m = st.columns(2)
    m[0].metric(
        "Claude spend today",
        fmt.usd(spend.today_usd),
        # the 7 days as text, not a sparkline: one chart costs a fresh browser the charting library (docs/dashboard.md)
        help=f"{spend.today_calls} calls since 00:00 UTC · last 7 days: "
        + ", ".join(fmt.usd(v) for v in spend.daily["cost_usd"]),
        border=True,
    )
    m[1].metric(
        "Claude spend, 7 days",
        fmt.usd(spend.week_usd),
        border=True,
        help=f"{spend.week_calls} calls" + (f"; daily budget {fmt.usd(claude.budget_usd)}" if claude.budget_usd else ""),
    )
    if spend.by_purpose.empty:
        st.caption("The intelligence has made no Claude calls in the last 7 days.")
    else:
        tables.show(
            spend.by_purpose,
            hide_index=True,
            width="stretch",
            key="sys_claude_purposes",
            column_config={"cost_usd": st.column_config.NumberColumn("cost (USD)", format="$%.4f")},
        )
        failed = {k: v for k, v in spend.by_outcome.items() if k != "ok"}
        if failed:
            st.caption("Calls that did not succeed (7 days): " + ", ".join(f"{fmt.md(k)} {v}" for k, v in sorted(failed.items())))


try:
    system()
except Exception as exc:  # noqa: BLE001 - shown on the page instead of a traceback
    st.warning(f"System status unavailable: {fmt.md(exc)}")

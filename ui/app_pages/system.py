"""System: health of every part, versions, queues and spool, and what the intelligence spends."""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd
import streamlit as st

from ui import data, fmt

st.title("System")

# plain symbols: emoji need a colour font that servers and kiosk browsers often lack
ICONS = {"ok": "✓ ok", "down": "✗ DOWN", "off": "– off", "unknown": "? unknown"}


@st.fragment(run_every=5.0)
def system() -> None:
    status = data.system_status()
    st.subheader("Components")
    st.dataframe(
        pd.DataFrame([{"component": c.name, "state": ICONS.get(c.state, c.state), "detail": c.detail}
                      for c in status.components]),
        hide_index=True, width="stretch",
        column_config={"detail": st.column_config.TextColumn(width="large")},
    )
    st.caption(f"Data dir {status.data_dir}" + (f" · stack started {status.stack_started}" if status.stack_started else ""))

    st.subheader("Queues")
    q = st.columns(4)
    q[0].metric("Spool (records waiting)", fmt.count(status.spool.records),
                help=f"{status.spool.segments} segment file(s) in the data dir's spool/: records written while the "
                     "database was unreachable, replayed in order when it is back")
    q[1].metric("Rejected records", fmt.count(status.spool.rejected), help="refused by the database; kept in spool/rejected.jsonl")
    q[2].metric("Pattern-memory backlog (24 h)", fmt.count(status.worker_backlog),
                help="exchanges of the last 24 hours not yet embedded and assigned by the worker")
    feed = status.feed
    if feed.get("connected"):
        last = feed.get("last_event")
        ago = f"last event {datetime.now(timezone.utc).timestamp() - last:.0f} s ago" if last else "no event yet"
        q[3].metric("Live feed", "LISTEN", help=f"llmproxy_exchanges NOTIFY channel · {ago}")
    else:
        q[3].metric("Live feed", "polling", help=feed.get("error") or "LISTEN connection not established")

    st.subheader("Intelligence spend")
    st.info("Not enabled: the intelligence does not call Claude yet, so it has spent nothing.")

    left, right = st.columns(2)
    with left:
        st.subheader("Versions")
        st.dataframe(pd.DataFrame(sorted(status.versions.items()), columns=["component", "version"]),
                     hide_index=True, width="stretch")
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
            st.dataframe(sizes[["table", "size"]], hide_index=True, width="stretch")


try:
    system()
except Exception as exc:
    st.warning(f"System status unavailable: {exc}")

"""Live: KPI tiles with sparklines, the newest exchanges and alert toasts, pushed to the browser as they happen.

The page renders once (a snapshot from the database); the component then subscribes to the dashboard's
live feed (websocket ``/llmproxy/live``, ui/live/server.py) and updates the table, the tiles and the
toasts itself: no Streamlit rerun, no polling (docs/dashboard.md, Live latency).
"""

from __future__ import annotations

import streamlit as st

from ui import auth, data
from ui.live.component import live_view

st.title("Live traffic")

try:
    snapshot = data.live_snapshot()
except Exception as exc:  # noqa: BLE001 - the database may be restarting: say so instead of a traceback
    st.warning(f"Waiting for the database: {exc}")
    snapshot = None

if snapshot is not None:
    if not snapshot["live"]:
        st.warning(
            "Live updates are off: this dashboard was started without its live feed (run it with "
            "`llmproxy up`, `python -m ui` or `streamlit run ui/streamlit_app.py`). The table shows the state at page load."
        )
    live_view({**snapshot, "token": auth.stream_token()})

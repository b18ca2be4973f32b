"""Live alerts on every page: a toast per new warning/critical event and a banner of the open ones.

A fragment polls every few seconds with the cheapest query there is (events with an id above the
last one this session has seen: a primary-key range scan, cached for all sessions per 2 s). A new
session starts at the newest id, so it toasts what happens from now on; what is older and still
unacknowledged is what the banner is for.
"""

from __future__ import annotations

import streamlit as st

from ui import data, fmt

LAST_SEEN_KEY = "llmproxy_last_event_id"
POLL_SECONDS = 3.0
ICONS = {"critical": ":material/error:", "warning": ":material/warning:"}


def new_alerts() -> list[dict]:
    """Alerts this session has not been shown yet (and remember that it now has)."""
    if LAST_SEEN_KEY not in st.session_state:
        st.session_state[LAST_SEEN_KEY] = data.latest_event_id()
        return []
    fresh = data.alerts_after(st.session_state[LAST_SEEN_KEY])
    if fresh:
        st.session_state[LAST_SEEN_KEY] = max(a["id"] for a in fresh)
    return fresh


def show_alerts() -> None:
    """Toast what is new, then the banner. Called inside a fragment that refreshes anyway."""
    try:
        fresh = new_alerts()
        banner = data.banner()
    except Exception:  # noqa: BLE001 - no database (yet): the pages say so themselves
        return
    for alert in fresh:
        st.toast(f"**{alert['severity'].upper()}** · {fmt.md(alert['title'])}", icon=ICONS.get(alert["severity"]))
    if banner.open_alerts:
        newest = banner.newest[0]
        text = (
            f"{banner.open_alerts} open alert(s) in the last 24 h"
            + (f", {banner.critical} critical" if banner.critical else "")
            + f" · newest: {fmt.md(newest['title'])}"
        )
        (st.error if banner.critical else st.warning)(text, icon=ICONS["critical" if banner.critical else "warning"])
        st.page_link("app_pages/security.py", label="Review and acknowledge on the Security page", icon=":material/shield:")


# Every page but Live: the Live page's toasts and banner come with its live feed (ui/live), pushed.
live_alerts = st.fragment(run_every=POLL_SECONDS)(show_alerts)

"""The dashboard's pages (the Streamlit script). Served by the app in ``ui/streamlit_app.py``, which adds the
live feed and the Host allowlist; run directly (``streamlit run ui/dashboard.py``, AppTest) it works
without the live feed."""

import sys
from pathlib import Path

# Streamlit executes this file as a script; make the project importable as packages.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streamlit as st

st.set_page_config(page_title="llmproxy", page_icon=":material/hub:", layout="wide")

from ui import alerts, auth  # noqa: E402

# Refuses to serve beyond loopback without SECRET_KEY or to a host name not allowed (DNS rebinding), and
# asks for a token when SECRET_KEY is set.
principal = auth.gate()
pages = [
    st.Page("app_pages/live.py", title="Live", icon=":material/bolt:", default=True),
    st.Page("app_pages/explorer.py", title="Explorer", icon=":material/search:", url_path="explorer"),
    st.Page("app_pages/analytics.py", title="Analytics", icon=":material/monitoring:", url_path="analytics"),
    st.Page("app_pages/patterns.py", title="Patterns", icon=":material/scatter_plot:", url_path="patterns"),
    st.Page("app_pages/security.py", title="Security", icon=":material/shield:", url_path="security"),
    st.Page("app_pages/experiments.py", title="Experiments", icon=":material/science:", url_path="experiments"),
    st.Page("app_pages/system.py", title="System", icon=":material/dns:", url_path="system"),
]
try:
    from ui import data

    data.start_background_jobs()
except Exception:  # noqa: BLE001 - no database yet: each page says so itself
    pass
page = st.navigation(pages)
auth.sidebar(principal)
if page.title != "Live":  # the Live page's toasts and banner arrive with its live feed
    alerts.live_alerts()
page.run()

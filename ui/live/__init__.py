"""The dashboard's live feed: exchanges and alerts pushed to the open browser, no Streamlit rerun.

* :mod:`.feed`: the hub. One LISTEN connection per dashboard process (``llmproxy_exchanges``,
  ``llmproxy_events``), rows read once per batch of notifications and fanned out to every subscriber;
  the live KPIs kept in memory (:mod:`.kpis`).
* :mod:`.server`: the websocket endpoint ``/llmproxy/live`` and the Host allowlist, mounted beside
  Streamlit's own routes in the same server (``ui/streamlit_app.py`` is an ``st.App``).
* :mod:`.component`: the Streamlit component (plain HTML/CSS/JS, no build step) that renders the KPI
  tiles, the table and the alert toasts and keeps them up to date from the websocket.
* :mod:`.rows`: what one row looks like on the wire (masked like the pages).
"""

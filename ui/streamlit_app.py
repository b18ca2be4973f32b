"""Dashboard server: ``streamlit run ui/streamlit_app.py`` (what ``llmproxy up`` and ``python -m ui`` start).

An ``st.App``: Streamlit serves the pages of ``dashboard.py`` on Starlette/uvicorn, and this adds, in the
same server and on the same port:

* ``/llmproxy/live``, the websocket the Live page's component follows (ui/live/server.py): exchanges and
  alerts pushed as the gateway commits them;
* a Host allowlist in front of every route (pages, assets, Streamlit's websocket, the live feed):
  protection against DNS rebinding (ui/hosts.py).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streamlit as st

from ui.live import server

server.mark_serving()
app = st.App("dashboard.py", routes=server.routes(), middleware=server.middleware(), lifespan=server.lifespan)

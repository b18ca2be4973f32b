"""Dashboard entrypoint: `streamlit run ui/streamlit_app.py` (started by `llmproxy up`)."""

import sys
from pathlib import Path

# `streamlit run` executes this file as a script; make the project importable as packages.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streamlit as st  # noqa: E402

st.set_page_config(page_title="llmproxy", layout="wide")
pages = [st.Page("app_pages/live.py", title="Live", icon=":material/bolt:", default=True)]
st.navigation(pages).run()

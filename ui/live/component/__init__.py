"""The live view as a Streamlit component (``st.components.v2``: mounted in the page, no iframe, no build step).

:func:`live_view` mounts it with the page's first snapshot; from then on the browser keeps itself up to
date over the websocket (``live.js``). Passing new data on a rerun only updates the settings (the token,
after signing in again); the rows on screen stay.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import streamlit as st

HERE = Path(__file__).resolve().parent
NAME = "llmproxy_live"


@cache
def _component() -> Any:
    return st.components.v2.component(
        NAME,
        html=(HERE / "live.html").read_text(),
        css=(HERE / "live.css").read_text(),
        js=(HERE / "live.js").read_text(),
    )


def live_view(config: dict[str, Any], *, key: str = "llmproxy_live") -> Any:
    """Mount the live view; ``config``: path, token, live (bool), rows, kpis, spend, banner, last_event_id."""
    return _component()(key=key, data=config, height="content")

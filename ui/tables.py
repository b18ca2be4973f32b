"""Read-only tables as ``st.table`` (static HTML), not ``st.dataframe`` (the interactive grid).

Why: in a fresh browser, the first ``st.dataframe`` on a page costs its JavaScript (the grid and Arrow
formatting, about 1.3 MB to compile) and a canvas render per table: 0.4-1.0 s of a page load on two cores
(docs/dashboard.md, "Full page loads"). Most of the pages' tables are small, bounded summaries and lists, so
they render as HTML; ``st.dataframe`` stays where a table is interactive (row selection in the Explorer) and
takes over past MAX_CELLS cells, where rendering every cell as HTML costs more than the grid.

``st.table`` renders every cell as Markdown, so cells are escaped like any client-chosen text (fmt.md):
a model name, a prompt or a pattern label shows as text, never as a link or an image. ``show`` takes the
arguments of ``st.dataframe`` that the pages use (``column_order``, ``column_config`` with labels and
number/date/link/progress formats, ``height``, ``hide_index``) so a page reads the same either way.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any
from urllib.parse import quote

import pandas as pd
import streamlit as st

from ui import fmt

MAX_CELLS = 500  # a bigger table goes to the interactive grid: every static cell is rendered Markdown (~0.4 ms each)
TEXT_MAX = 400  # characters of one cell: a table is a summary; the full text is one click away
SCROLL_ROWS = 15  # more rows than this scroll inside the table (sticky header) instead of lengthening the page
SCROLL_HEIGHT = 460  # pixels

# moment.js tokens (st.column_config.DatetimeColumn's format) -> strftime
_MOMENT = [("YYYY", "%Y"), ("MM", "%m"), ("DD", "%d"), ("HH", "%H"), ("mm", "%M"), ("ss", "%S")]
_BLOCKS = "▁▂▃▄▅▆▇█"
_PRINTF = re.compile(r"%[-+ 0#]*\d*(?:\.\d+)?[dfeEgGs%]")


def show(
    data: Any,
    *,
    column_order: Sequence[str] | None = None,
    column_config: Mapping[str, Any] | None = None,
    height: int | None = None,
    hide_index: bool = True,
    **_interactive: Any,  # key, width, ...: the grid's options, which a static table has no use for
) -> None:
    """Render ``data`` (a DataFrame, or what ``pd.DataFrame`` takes) as a static, escaped table; past MAX_CELLS
    cells, as the interactive grid (it draws only the rows in view on a canvas, so its cost does not grow)."""
    df = data if isinstance(data, pd.DataFrame) else pd.DataFrame(data)
    shown_columns = [c for c in (column_order or df.columns) if c in df.columns]
    if len(df) * len(shown_columns) > MAX_CELLS:  # decided before formatting thousands of cells for nothing
        st.dataframe(
            data,
            column_order=column_order,
            column_config=column_config,
            height=height if height is not None else "auto",
            hide_index=hide_index,
            **{k: v for k, v in _interactive.items() if k in ("key", "width")},
        )
        return
    frame = to_frame(df, column_order=column_order, column_config=column_config)
    if height is None and len(frame) > SCROLL_ROWS:
        height = SCROLL_HEIGHT
    st.table(frame, hide_index=hide_index, height=height if height is not None else "content")


def to_frame(
    data: Any, *, column_order: Sequence[str] | None = None, column_config: Mapping[str, Any] | None = None
) -> pd.DataFrame:
    """The table ``show`` renders: columns ordered and labelled, every value formatted and escaped."""
    df = data if isinstance(data, pd.DataFrame) else pd.DataFrame(data)
    config = dict(column_config or {})
    columns = [c for c in (column_order or df.columns) if c in df.columns]
    out: dict[str, list[Any]] = {}
    for col in columns:
        if col in config and config[col] is None:  # column_config={"x": None} hides a column, as in st.dataframe
            continue
        spec = config.get(col) or {}
        label = spec.get("label") if isinstance(spec, Mapping) else None
        type_config = (spec.get("type_config") or {}) if isinstance(spec, Mapping) else {}
        out[fmt.md(label or col)] = [cell(v, type_config) for v in df[col].tolist()]
    return pd.DataFrame(out, index=df.index if len(out) else None)


def cell(value: Any, type_config: Mapping[str, Any] | None = None) -> str:
    """One value as escaped Markdown text, in the column's format."""
    tc = type_config or {}
    if _missing(value):
        return ""
    kind = tc.get("type")
    if kind == "link":
        url = quote(str(value), safe="/?=&%")  # no scheme survives (":" is encoded): a relative link only
        return f"[{fmt.md(tc.get('display_text') or 'open')}]({url})"
    if kind in ("line_chart", "bar_chart", "area_chart"):
        return sparkline(value)
    if kind == "datetime" or isinstance(value, datetime | date | pd.Timestamp):
        return fmt.md(_datetime(value, tc.get("format")))
    if kind in ("number", "progress") and isinstance(value, int | float) and not isinstance(value, bool):
        return fmt.md(number(value, tc.get("format")))
    if isinstance(value, float):
        return fmt.md(f"{value:.6g}")
    if isinstance(value, dict | list | tuple):
        value = json.dumps(value, default=str, ensure_ascii=False)
    text = str(value)
    if len(text) > TEXT_MAX:
        text = text[: TEXT_MAX - 1] + "…"
    return fmt.md(text)


def sparkline(values: Any) -> str:
    """A series (a LineChartColumn cell) as eight-level block characters, scaled to its own range."""
    try:
        points = [float(v) for v in values if not _missing(v)]
    except (TypeError, ValueError):
        return ""
    if not points:
        return ""
    low, high = min(points), max(points)
    span = (high - low) or 1.0
    return "".join(_BLOCKS[min(7, int((p - low) / span * 7 + 0.5))] if high > low else _BLOCKS[0] for p in points[-60:])


def number(value: float, spec: str | None) -> str:
    """A number in a ``NumberColumn`` format: printf (``%d``, ``$%.4f``, ``%.0f ms``) or a named one."""
    if spec in (None, "", "plain", "localized", "accounting"):
        return f"{int(value):,}" if float(value).is_integer() else f"{value:,.4g}"
    if spec == "percent":
        return f"{value * 100:.2f}%"
    if spec == "dollar":
        return fmt.usd(value)  # as the pages' metrics show money
    if spec == "compact":
        return fmt.compact(value)
    if spec in ("scientific", "engineering"):
        return f"{value:.3e}"
    m = _PRINTF.search(spec)
    if not m:
        return str(value)
    token = m.group(0)
    try:
        shown = token % (int(value) if token.endswith("d") else value)
    except (TypeError, ValueError):
        shown = str(value)
    return spec[: m.start()] + shown + spec[m.end() :]


def _datetime(value: Any, spec: str | None) -> str:
    ts = pd.Timestamp(value)
    pattern = spec or "YYYY-MM-DD HH:mm:ss"
    for moment, strf in _MOMENT:
        pattern = pattern.replace(moment, strf)
    return ts.strftime(pattern)


def _missing(value: Any) -> bool:
    if value is None or value is pd.NaT:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    try:
        return bool(pd.isna(value)) if not isinstance(value, list | dict | tuple | str) else False
    except (TypeError, ValueError):
        return False

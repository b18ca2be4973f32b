"""ui/tables.py: read-only tables as st.table. Every cell is Markdown there, so what a client or Claude wrote
must come out as text; the dataframe formats the pages use (dates, printf, percent, links) still apply."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from tests.ui.conftest import plain, shown_text
from ui import tables

HOSTILE = "[click](http://evil.example) ![x](http://evil.example/i.png) **bold** <b>tag</b> $x^2$ :red[alarm] www.evil.example"


def test_hostile_text_is_escaped_and_reads_as_written() -> None:
    frame = tables.to_frame(pd.DataFrame({"prompt": [HOSTILE], "model": ["gpt-4o\nmini"]}))
    cell = frame.iloc[0]["prompt"]
    for syntax in ("[", "]", "(", ")", "*", "<", ">", "$", ":"):
        assert syntax not in cell  # every one is a character reference
    assert "<a " not in shown_text(cell) and "<img" not in shown_text(cell)
    assert plain(cell) == HOSTILE
    assert plain(frame.iloc[0]["model"]) == "gpt-4o mini"  # no new paragraph inside a cell


def test_the_dataframe_formats_and_labels_carry_over() -> None:
    df = pd.DataFrame(
        {
            "at": [pd.Timestamp("2026-12-07 01:02:03", tz="UTC")],
            "n": [3.0],
            "rate": [0.1234],
            "cost": [0.00725],
            "latency": [812.4],
            "hidden": ["x"],
        }
    )
    cc = st.column_config
    frame = tables.to_frame(
        df,
        column_order=["at", "n", "rate", "cost", "latency"],
        column_config={
            "at": cc.DatetimeColumn("time", format="YYYY-MM-DD HH:mm"),
            "n": cc.NumberColumn(format="%d"),
            "rate": cc.NumberColumn("success rate", format="percent"),
            "cost": cc.NumberColumn(format="dollar"),
            "latency": cc.NumberColumn(format="%.0f ms"),
        },
    )
    assert list(frame.columns) == ["time", "n", "success rate", "cost", "latency"]  # column_order drops "hidden"
    assert [plain(v) for v in frame.iloc[0]] == ["2026-12-07 01:02", "3", "12.34%", "$0.0073", "812 ms"]


def test_links_stay_relative_and_missing_values_are_blank() -> None:
    cc = st.column_config
    frame = tables.to_frame(
        pd.DataFrame({"open": ["explorer?request_id=a b)", "javascript:alert(1)", None]}),
        column_config={"open": cc.LinkColumn("details", display_text="open")},
    )
    first, hostile, missing = frame["details"]
    assert first == "[open](explorer?request_id=a%20b%29)"
    assert hostile.startswith("[open](javascript%3Aalert") and "javascript:" not in hostile  # no scheme survives
    assert missing == ""


def test_long_text_is_cut_and_series_become_sparklines() -> None:
    cc = st.column_config
    frame = tables.to_frame(
        pd.DataFrame({"text": ["a" * 5000], "trend": [[0, 1, 2, 3, 4, 5, 6, 7]]}),
        column_config={"trend": cc.LineChartColumn("trend")},
    )
    assert len(plain(frame.iloc[0]["text"])) == tables.TEXT_MAX and plain(frame.iloc[0]["text"]).endswith("…")
    assert frame.iloc[0]["trend"] == "▁▂▃▄▅▆▇█"


def test_a_table_past_max_cells_goes_to_the_grid() -> None:
    from streamlit.testing.v1 import AppTest

    def app() -> None:
        import pandas as pd

        from ui import tables

        tables.show(pd.DataFrame({"a": range(tables.MAX_CELLS + 1)}))  # rendering each cell would cost more
        tables.show(pd.DataFrame({"a": range(10)}))

    at = AppTest.from_function(app)
    at.run()
    assert not at.exception
    assert len(at.dataframe) == 1 and len(at.dataframe[0].value) == tables.MAX_CELLS + 1
    assert len(at.table) == 1 and len(at.table[0].value) == 10

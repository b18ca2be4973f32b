"""Every page renders against a seeded real Postgres (AppTest) and shows the seeded numbers."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.ui.conftest import APP, SECRET, SeededUi, plain, table_frames
from ui import fmt

PAGES = "app_pages/{}.py"


def open_page(monkeypatch: pytest.MonkeyPatch, db: SeededUi, page: str | None, **params: str) -> AppTest:
    monkeypatch.setenv("DATABASE_URL", db.url)
    at = AppTest.from_file(APP, default_timeout=60)
    for k, v in params.items():
        at.query_params[k] = v
    at.run()
    if page is not None:
        at.switch_page(PAGES.format(page))
        for k, v in params.items():
            at.query_params[k] = v
        at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def results(at: AppTest):
    """The Explorer's list of matching exchanges."""
    return next(d.value for d in at.dataframe if {"request_id", "flags"} <= set(d.value.columns))


def metric(at: AppTest, label: str) -> str:
    for m in at.metric:
        if m.label == label:
            return m.value
    raise AssertionError(f"no metric {label!r}; have {[m.label for m in at.metric]}")


def live_view(at: AppTest) -> dict:
    """The data the Live page handed its component (rows, tiles, spend, banner: what the browser shows first)."""
    import json

    mounted = [e for e in at.get("bidi_component") if e.proto.component_name == "llmproxy_live"]
    assert len(mounted) == 1, [type(e).__name__ for e in at.main]
    return json.loads(mounted[0].proto.json)


def test_live_page_shows_kpis_and_newest_first(ui_db: SeededUi, monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_page(monkeypatch, ui_db, None)
    assert at.title[0].value == "Live traffic"
    view = live_view(at)
    rows = view["rows"]
    assert [r["id"] for r in rows][:8] == [
        ui_db.ids[k] for k in ("extra3", "extra2", "extra1", "unpriced", "err429", "err500", "claude", "tools")
    ]
    row = {r["id"]: r for r in rows}[ui_db.ids["tools"]]
    assert row["model"] == "gpt-4o" and row["latency_ms"] == 120.0 and row["ttft_ms"] == 40.0
    assert row["cost_usd"] == pytest.approx(0.00725)
    assert "stream" in row["flags"] and "tools:1" in row["flags"]
    assert {r["id"]: r for r in rows}[ui_db.ids["unpriced"]]["cost_usd"] is None
    assert {r["id"]: r for r in rows}[ui_db.ids["err500"]]["failed"] is True
    # 8 exchanges in the 15-minute window, 2 of them errors
    kpis = view["kpis"]
    assert kpis["requests"] == 8 and kpis["req_per_s"] == pytest.approx(8 / 900)
    assert kpis["error_rate"] == pytest.approx(2 / 8)
    # latencies 30, 50, 81, 82, 83, 120, 200, 300 ms: exact percentiles with interpolation (percentile_cont)
    assert kpis["p50_ms"] == pytest.approx(82.5) and kpis["p95_ms"] == pytest.approx(265.0)
    today = ui_db.now.date()
    spend = sum(c for rid, c in ui_db.cost_by_id.items() if ui_db.started[rid].date() == today)
    assert view["spend"]["total_usd"] == pytest.approx(spend)
    assert view["path"] == "/llmproxy/live" and view["token"]  # the process's local key (no SECRET_KEY)
    # AppTest runs the pages without the dashboard server: no live feed, and the page says so
    assert view["live"] is False and any("Live updates are off" in w.value for w in at.warning)


def test_explorer_opens_one_exchange_with_diff_tools_and_masked_headers(ui_db: SeededUi, monkeypatch) -> None:
    at = open_page(monkeypatch, ui_db, "explorer", request_id=ui_db.ids["tools"])
    assert set(ui_db.ids.values()) <= set(results(at)["request_id"])
    assert plain(at.subheader[0].value) == "gpt-4o · 200"  # the linked exchange comes first
    diff = "\n".join(c.value for c in at.code if c.language == "diff")
    removed = [line for line in diff.splitlines() if line.startswith("-") and not line.startswith("---")]
    added = [line for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
    assert [line.split(":", 1)[1].strip() for line in removed] == ['"github.search_issues",']
    assert [line.split(":", 1)[1].strip() for line in added] == [f'"{ui_db.alias}",']
    frames = table_frames(at)
    calls = next(f for f in frames if "name (client)" in f.columns)
    assert calls.iloc[0]["name (client)"] == "github.search_issues"
    assert calls.iloc[0]["name (upstream)"] == ui_db.alias
    aliases = next(f for f in frames if "alias (upstream)" in f.columns)
    assert aliases.iloc[0].to_dict() == {"original": "github.search_issues", "alias (upstream)": ui_db.alias}
    headers = at.json[0].value
    assert SECRET not in str(headers) and "[redacted]" in str(headers)
    assert all(SECRET not in c.value for c in at.code)
    assert metric(at, "Cost") == fmt.usd(0.00725)
    assert metric(at, "Latency") == "120 ms"


def test_explorer_filters_by_client_status_and_text(ui_db: SeededUi, monkeypatch) -> None:
    at = open_page(monkeypatch, ui_db, "explorer")
    client = next(s for s in at.selectbox if s.label == "Client")
    client.set_value(next(o for o in client.options if o.endswith("-beta"))).run()
    assert set(results(at)["request_id"]) == {ui_db.ids["err500"], ui_db.ids["err429"]}
    client = next(s for s in at.selectbox if s.label == "Client")
    client.set_value("any").run()
    status = next(s for s in at.selectbox if s.label == "Status")
    status.set_value("5xx").run()
    assert set(results(at)["request_id"]) >= {ui_db.ids["err500"]}
    assert ui_db.ids["err429"] not in set(results(at)["request_id"])
    status = next(s for s in at.selectbox if s.label == "Status")
    status.set_value("any").run()
    marker = ui_db.ids["tools"].rsplit("-", 1)[0]
    next(t for t in at.text_input if t.label == "Free text").set_value(f"{marker} summarise the open").run()
    assert set(results(at)["request_id"]) == {ui_db.ids[k] for k in ("tools", "extra1", "extra2", "extra3")}
    next(t for t in at.text_input if t.label == "Open by request id").set_value(ui_db.ids["claude"]).run()
    assert at.query_params["request_id"] == [ui_db.ids["claude"]] or at.query_params["request_id"] == ui_db.ids["claude"]
    assert plain(at.subheader[0].value) == "claude-sonnet-4-5 · 200"


def test_explorer_session_timeline(ui_db: SeededUi, monkeypatch) -> None:
    at = open_page(monkeypatch, ui_db, "explorer", session=ui_db.session_id)
    assert any(f"Session `{ui_db.session_id}` · 2 exchanges" in s.value for s in at.subheader)
    assert len(at.chat_message) == 4  # user + assistant per turn
    texts = [t.value for t in at.text]
    marker = ui_db.ids["tools"].rsplit("-", 1)[0]
    assert f"{marker} and the closed ones?" in texts and f"{marker} twelve closed bugs" in texts
    assert "→ calls github.search_issues" in texts  # a tool-call reply shows the tool the client saw


def test_analytics_groups_by_model_with_exact_counts_and_cost(ui_db: SeededUi, monkeypatch) -> None:
    at = open_page(monkeypatch, ui_db, "analytics")
    at.selectbox[0].set_value("Last 24 hours").run()
    assert not at.exception
    summary = table_frames(at)[0].set_index("model")
    for model, n in ui_db.models.items():
        assert summary.loc[model, "requests"] == str(n)
    assert summary.loc["gpt-4o-mini", "errors"] == "2" and summary.loc["gpt-4o-mini", "429s"] == "1"
    costs = [float(c.lstrip("$").replace(",", "")) for c in summary["cost"] if c]  # fmt.usd: 4 decimals under $1
    assert sum(costs) == pytest.approx(ui_db.expected_cost, abs=0.00005 * len(costs))
    assert summary.loc["acme/unknown-model", "unpriced"] == "1"
    assert metric(at, "Requests") == "8"
    assert metric(at, "Cost") == fmt.usd(ui_db.expected_cost)
    labels = [b.label for b in at.get("download_button")]
    assert {"Summary (CSV)", "Summary (Parquet)", "Time series (CSV)", "Time series (Parquet)"} <= set(labels)


def test_analytics_by_pattern_and_html_report(ui_db: SeededUi, monkeypatch) -> None:
    at = open_page(monkeypatch, ui_db, "analytics")
    at.selectbox[0].set_value("Last 24 hours").run()
    at.segmented_control[0].set_value("pattern").run()
    summary = table_frames(at)[0]
    row = summary[summary["pattern"].str.contains(ui_db.pattern_label, regex=False)].iloc[0]
    assert row["requests"] == "6" and row["errors"] == "1"
    at.button(key="build_report").click().run()
    assert not at.exception
    html = at.session_state["report_html"]
    assert "<table>" in html and ui_db.pattern_label in html and "gpt-4o-mini" in html
    assert fmt.usd(ui_db.expected_cost).replace("$", "") in html or f"${ui_db.expected_cost:,.2f}" in html


def test_patterns_page_lists_pattern_with_counts_and_failure(ui_db: SeededUi, monkeypatch) -> None:
    from ui import data

    monkeypatch.setenv("DATABASE_URL", ui_db.url)
    assert data.map_job().wait(30)  # the map is computed in the background; wait for its first result
    at = open_page(monkeypatch, ui_db, "patterns", pattern=str(ui_db.pattern_id))
    volume = table_frames(at)[0]
    mine = volume[volume["pattern_id"] == str(ui_db.pattern_id)].iloc[0]
    assert mine["pattern"] == ui_db.pattern_label and mine["exchanges"] == "6"
    assert mine["trend (per day)"] and set(mine["trend (per day)"]) <= set("▁▂▃▄▅▆▇█")  # a text sparkline
    assert sum(data.top_patterns(days=7, limit=10).volume.set_index("pattern_id").loc[ui_db.pattern_id, "trend"]) == 6
    failure = table_frames(at)[1]
    assert failure[failure["pattern_id"] == str(ui_db.pattern_id)].iloc[0]["failed"] == "1"
    assert metric(at, "Exchanges (all time)") == "6"
    assert metric(at, "Success rate (7 d)") == fmt.percent(5 / 6)
    assert any("PCA of the" in c.value for c in at.caption)


def test_system_page_reports_health_spool_and_spend(ui_db: SeededUi, monkeypatch, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "segment-000000000001.jsonl").write_text('{"a":1}\n{"a":2}\n')
    (spool / "segment-000000000002.jsonl").write_text('{"a":3}\n')
    (spool / "rejected.jsonl").write_text('{"bad":1}\n')
    monkeypatch.setenv("LLMPROXY_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    at = open_page(monkeypatch, ui_db, "system")
    components = table_frames(at)[0].set_index("component")
    assert components.loc["database", "state"].endswith("ok")
    assert "no running stack" in components.loc["envoy", "detail"]
    assert components.loc["claude", "detail"].startswith("local-only")
    assert metric(at, "Spool (records waiting)") == "3"
    assert metric(at, "Rejected records") == "1"
    assert metric(at, "Claude spend today") == fmt.usd(0)  # this database has no Claude calls
    assert any(m.label == "Claude mode" for m in at.metric)
    versions = next(f for f in table_frames(at) if list(f.columns) == ["component", "version"]).set_index("component")
    assert "streamlit" in versions.index and "postgresql" in versions.index


def test_pages_degrade_without_a_database(monkeypatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("LLMPROXY_DATA_DIR", "/nonexistent-llmproxy-dir")
    for page in (None, "explorer", "analytics", "patterns", "security", "experiments", "system"):
        at = AppTest.from_file(APP, default_timeout=30)
        at.run()
        if page:
            at.switch_page(PAGES.format(page)).run()
        assert not at.exception, (page, [e.message for e in at.exception])
        assert at.warning, page

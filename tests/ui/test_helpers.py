"""The dashboard's helpers: masking, body views, aggregation, the HTML report, the LISTEN runner."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from intelligence.analytics import MEASURES, RollupRow, hist_bin
from intelligence.analytics_models import HIST_BINS
from intelligence.pricing import load_prices
from intelligence.records import Body
from tests.intelligence.factories import make_record
from tests.ui.conftest import SeededUi, plain
from ui import aggregate, bodies
from ui.redact import MASK, mask_secrets, safe_headers
from ui.report import build_report
from ui.runner import DbRunner


@pytest.mark.parametrize(
    "secret",
    [
        "sk-proj-abcdefghijklmnopqrstuvwx1234",
        "sk-ant-api03-abcdefghijklmnopqrstu",
        "AKIAABCDEFGHIJKLMNOP",
        "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.abcdefghijklmnop",
        "xoxb-123456789012-abcdefghij",
    ],
)
def test_known_credential_shapes_are_masked(secret: str) -> None:
    out = mask_secrets(f"please use {secret} for this")
    assert secret not in out and MASK in out and out.startswith("please use")


def test_secret_assignments_and_bearer_tokens_are_masked_but_prose_is_not() -> None:
    assert mask_secrets('{"api_key": "hunter2hunter2"}') == '{"api_key": "' + MASK + '"}'
    assert "abc.def-123456" not in mask_secrets("Authorization: Bearer abc.def-123456")
    prose = "The key insight is that tokens are cheap; see ticket 12345."
    assert mask_secrets(prose) == prose


def test_headers_mask_credential_names_and_opaque_values() -> None:
    shown = safe_headers(
        {
            "content-type": "application/json",
            "x-custom-auth": "whatever",
            "x-trace": "a1b2c3d4e5f6g7h8i9j0k1l2m3",
            "user-agent": "OpenAI/Python 1.99.2",
            "x-api-key": "short",
        }
    )
    assert shown == {
        "content-type": "application/json",
        "x-custom-auth": MASK,
        "x-trace": MASK,
        "user-agent": "OpenAI/Python 1.99.2",
        "x-api-key": MASK,
    }


def test_body_views_show_the_recorded_summary_and_never_parse_provider_json() -> None:
    sent = Body(json={"model": "m", "tools": [{"type": "function", "function": {"name": "a.b"}}]})
    forwarded = Body(json={"model": "m", "tools": [{"type": "function", "function": {"name": "a_b_x1"}}]})
    diff = bodies.body_diff(sent, forwarded)
    assert '-        "name": "a.b"' in diff and '+        "name": "a_b_x1"' in diff
    assert bodies.body_diff(sent, sent) == ""
    calls = ({"name": "a.b", "upstream_name": "a_b_x1", "arguments": '{"key": "sk-proj-abcdefghijklmnopqrstuv12"}'},)
    assert bodies.assistant_text("hello sk-proj-abcdefghijklmnopqrstuv12") == f"hello {MASK}"
    views = bodies.tool_calls(calls)
    assert [(c.client_name, c.upstream_name) for c in views] == [("a.b", "a_b_x1")]
    assert MASK in views[0].arguments and "sk-proj" not in views[0].arguments
    assert bodies.tool_calls([{"name": "x", "arguments": {"q": 1}}])[0].arguments == '{"q": 1}'  # an object: as JSON text
    assert bodies.summarised("hi", ()) and bodies.summarised(None, calls) and not bodies.summarised(None, ())
    # a conversation turn: the text and the tools it called; without a summary (older rows) the raw body
    assert bodies.reply_preview("done", calls, None) == "done\n→ calls a.b"
    raw = Body(json={"choices": [{"message": {"content": "old reply sk-proj-abcdefghijklmnopqrstuv12"}}]})
    shown = bodies.reply_preview(None, (), raw)
    assert '"content": "old reply ' + MASK in shown and "sk-proj" not in shown
    assert bodies.reply_preview(None, (), None) == ""
    assert bodies.body_text(Body(text="x" * 300_000)).endswith("more characters not shown)")
    import ui.bodies

    assert "extproc" not in Path(ui.bodies.__file__).read_text()  # the layering: ui never imports the sidecar


def test_markdown_escaping_renders_client_strings_as_text() -> None:
    from markdown_it import MarkdownIt

    from ui import fmt

    md = MarkdownIt("commonmark", {"linkify": False}).enable("table")
    payloads = [
        "[click me](http://evil.example/phish)",
        "![pixel](http://evil.example/track.png)",
        "<img src=x onerror=alert(1)><script>alert(2)</script>",
        "**bold** _it_ `code` # heading\n- item $x^2$ :red[red] | a | b |",
        "<http://evil.example/auto>",
    ]
    for p in payloads:
        html_out = md.render(f"prefix {fmt.md(p)} suffix")
        assert "<a " not in html_out and "<img" not in html_out and "<script" not in html_out, html_out
        assert "<strong>" not in html_out and "<em>" not in html_out and "<code>" not in html_out and "<h1>" not in html_out
        assert plain(f"prefix {fmt.md(p)} suffix") == "prefix " + p.replace("\n", " ") + " suffix"
        code_out = md.render(fmt.code(p))
        assert "<a " not in code_out and "<img" not in code_out and "<code>" in code_out
        assert plain(fmt.code(p)) == p.replace("\n", " ")
    assert fmt.md(None) == "" and fmt.code("a`b") == "``a`b``"
    assert fmt.stat(None, fmt.percent, 10) == fmt.NO_DATA == fmt.stat(0.5, fmt.percent, 0)
    assert fmt.stat(0.5, fmt.percent, 2) == "50.0%"


def _row(bucket: datetime, model: str, api: str, n: int, latencies: list[float], **m: float) -> RollupRow:
    hist = np.zeros(HIST_BINS, dtype=np.int64)
    for v in latencies:
        hist[hist_bin(v)] += 1
    measures = {k: 0.0 for k in MEASURES}
    measures.update(n=n, latency_n=len(latencies), latency_sum=sum(latencies), **m)
    return RollupRow(
        bucket=bucket,
        model=model,
        api=api,
        provider="openai",
        client="c",
        pattern_id=None,
        measures=measures,
        latency_hist=hist,
        ttft_hist=np.zeros(HIST_BINS, dtype=np.int64),
    )


def test_summaries_add_histograms_and_price_each_row_on_its_day() -> None:
    day1 = datetime(2025, 5, 1, tzinfo=UTC)
    day2 = datetime(2025, 7, 1, tzinfo=UTC)  # o3 got cheaper on 2025-06-10
    rows = [
        _row(day1, "o3", "responses", 2, [100.0, 200.0], input_tokens=1000, errors=1),
        _row(day2, "o3", "responses", 3, [1000.0, 1000.0, 1000.0], input_tokens=1000),
        _row(day2, "mystery", "chat", 5, [50.0] * 5, input_tokens=10),
    ]
    frame = aggregate.rollup_frame(rows, load_prices())
    by_model = aggregate.summarize(frame, ["model"]).set_index("model")
    assert by_model.loc["o3", "requests"] == 5 and by_model.loc["o3", "errors"] == 1
    assert by_model.loc["o3", "error_rate"] == pytest.approx(0.2)
    assert by_model.loc["o3", "cost_usd"] == pytest.approx(1000 * 10.0 / 1e6 + 1000 * 2.0 / 1e6)
    assert by_model.loc["mystery", "unpriced_requests"] == 5 and by_model.loc["mystery", "cost_usd"] == 0
    assert by_model.loc["o3", "latency_p50_ms"] == pytest.approx(1000.0, rel=0.12)
    assert by_model.loc["o3", "latency_mean_ms"] == pytest.approx(3300.0 / 5)
    assert list(by_model.index) == ["o3", "mystery"] or list(by_model.index) == ["mystery", "o3"]
    per_day = aggregate.summarize(frame, ["bucket"])
    assert sorted(per_day["requests"]) == [2, 8]
    total = aggregate.summarize(frame, [])
    assert total.iloc[0]["requests"] == 10
    top = aggregate.summarize(aggregate.keep_top(frame, "model", ["o3"]), ["model"]).set_index("model")
    assert top.loc["other", "requests"] == 5
    empty = aggregate.summarize(aggregate.rollup_frame([], load_prices()), ["model"])
    assert empty.empty and "requests" in empty.columns


def test_report_is_self_contained_html_with_the_numbers() -> None:
    summary = pd.DataFrame(
        [
            {
                "model": "gpt-4o <b>",
                "requests": 12,
                "error_rate": 0.25,
                "latency_p50_ms": 100.0,
                "latency_p95_ms": float("nan"),
                "ttft_p50_ms": None,
                "input_tokens": 1000,
                "output_tokens": 50,
                "cost_usd": 1.5,
            }
        ]
    )
    totals = summary.assign(unpriced_requests=0)
    page = build_report(
        datetime(2025, 5, 1, tzinfo=UTC),
        datetime(2025, 5, 2, tzinfo=UTC),
        totals,
        [("By model", "model", summary)],
        summary.assign(period="2025-05-01"),
        load_prices(),
    )
    assert page.startswith("<!doctype html>") and "<script" not in page and "http" not in page.split("</style>")[1]
    assert "gpt-4o &lt;b&gt;" in page and "25.00%" in page and "$1.50" in page and "100 ms" in page
    assert "prices as of" in page


async def test_runner_runs_queries_and_hears_new_exchanges(ui_db: SeededUi) -> None:
    import asyncio

    from intelligence.store.engine import make_engine
    from intelligence.store.repositories import ExchangeRepository

    runner = DbRunner(ui_db.url)
    try:
        for _ in range(100):
            if runner.feed.connected:
                break
            await asyncio.sleep(0.05)
        assert runner.change_token()[0] == "notify"
        before = runner.feed.version
        count = await asyncio.to_thread(runner.run, lambda conn: ExchangeRepository(conn).count())
        assert count >= 8
        rec = make_record(started_at=datetime.now(UTC) - timedelta(days=400))
        engine = make_engine(ui_db.url)
        try:
            async with engine.begin() as conn:
                await ExchangeRepository(conn).insert_batch([rec])
        finally:
            await engine.dispose()
        deadline = time.monotonic() + 5
        while runner.feed.version == before and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert runner.feed.version > before and runner.feed.last_payload == rec.request_id
    finally:
        await asyncio.to_thread(runner.close)

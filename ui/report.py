"""A self-contained HTML report of a period (no scripts, no network: it opens anywhere, prints well)."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from datetime import UTC, datetime

import pandas as pd

from intelligence.pricing import PriceTable

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;padding:0 1rem;
color:#1f2430;background:#fff}
h1{margin-bottom:.2rem}h2{margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.3rem}
.sub{color:#667;margin-top:0}
.kpis{display:flex;flex-wrap:wrap;gap:.8rem}.kpi{border:1px solid #ddd;border-radius:.5rem;padding:.6rem 1rem;min-width:9rem}
.kpi b{display:block;font-size:1.4rem}
table{border-collapse:collapse;width:100%;font-size:.85rem}th,td{padding:.3rem .5rem;border-bottom:1px solid #eee;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f5f6f8}
.bar{display:inline-block;height:.7rem;background:#4a7bd0;border-radius:2px;vertical-align:middle}
@media (prefers-color-scheme: dark){body{background:#14161b;color:#e6e6e6}th{background:#22252c}
td,th{border-color:#2c2f36}.kpi{border-color:#333}}
"""

# summary column -> (heading, formatter)
_COLUMNS: dict[str, tuple[str, object]] = {
    "requests": ("requests", lambda v: f"{int(v):,}"),
    "error_rate": ("error rate", lambda v: f"{v:.2%}"),
    "latency_p50_ms": ("p50", lambda v: f"{v:,.0f} ms"),
    "latency_p95_ms": ("p95", lambda v: f"{v:,.0f} ms"),
    "ttft_p50_ms": ("TTFT p50", lambda v: f"{v:,.0f} ms"),
    "input_tokens": ("input tok", lambda v: f"{int(v):,}"),
    "output_tokens": ("output tok", lambda v: f"{int(v):,}"),
    "cost_usd": ("cost", lambda v: f"${v:,.2f}"),
}


def _cell(value: object, fmt) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return html.escape(fmt(value))


def _stat(value: object, fmt) -> str:
    """A headline statistic, or "no data yet" when it rests on no samples (plain text: kpi() escapes it)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "no data yet"
    return str(fmt(value))


def _table(df: pd.DataFrame, key: str, title: str, bar_metric: str = "requests") -> str:
    if df.empty:
        return f"<h2>{html.escape(title)}</h2><p>No traffic.</p>"
    peak = float(df[bar_metric].max() or 1)
    head = "".join(f"<th>{html.escape(h)}</th>" for h, _ in _COLUMNS.values())
    rows = []
    for _, r in df.iterrows():
        width = 0 if peak <= 0 else max(1, int(120 * float(r[bar_metric]) / peak))
        cells = "".join(f"<td>{_cell(r[c], f)}</td>" for c, (_, f) in _COLUMNS.items())
        rows.append(
            f"<tr><td>{html.escape(str(r[key]))}</td><td style='text-align:left'>"
            f"<span class='bar' style='width:{width}px'></span></td>{cells}</tr>"
        )
    return (
        f"<h2>{html.escape(title)}</h2><table><thead><tr><th>{html.escape(key)}</th><th></th>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def build_report(
    since: datetime,
    until: datetime,
    totals: pd.DataFrame,
    sections: Sequence[tuple[str, str, pd.DataFrame]],
    over_time: pd.DataFrame,
    prices: PriceTable,
) -> str:
    """The report: headline numbers, traffic per bucket (``over_time`` has a "period" label column), then one
    table per (title, key column, summary)."""
    t = totals.iloc[0] if len(totals) else None

    def kpi(label: str, value: str) -> str:
        return f"<div class='kpi'>{html.escape(label)}<b>{html.escape(value)}</b></div>"

    if t is not None:
        kpis = "".join(
            [
                kpi("Requests", f"{int(t['requests']):,}"),
                kpi("Error rate", f"{t['error_rate']:.2%}"),
                kpi("Latency p50", _stat(t["latency_p50_ms"], lambda v: f"{v:,.0f} ms")),
                kpi("Latency p95", _stat(t["latency_p95_ms"], lambda v: f"{v:,.0f} ms")),
                kpi("Tokens in / out", f"{int(t['input_tokens']):,} / {int(t['output_tokens']):,}"),
                kpi("Cost", f"${t['cost_usd']:,.2f}"),
            ]
        )
    else:
        kpis = "<p>No traffic in this period.</p>"
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>llmproxy report {since:%Y-%m-%d} – {until:%Y-%m-%d}</title><style>{_CSS}</style></head><body>",
        "<h1>llmproxy traffic report</h1>",
        f"<p class='sub'>{since:%Y-%m-%d %H:%M} – {until:%Y-%m-%d %H:%M} UTC · generated "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · prices as of {prices.as_of.isoformat()}</p>",
        f"<div class='kpis'>{kpis}</div>",
    ]
    if len(over_time):
        parts.append(_table(over_time, "period", "Over time"))
    for title, key, df in sections:
        parts.append(_table(df, key, title))
    parts.append(
        "<p class='sub'>Latency percentiles come from hourly/daily histograms (within ~12%). Costs use the "
        "per-model price table in force on each day; exchanges of unpriced models count as $0.</p>"
    )
    parts.append("</body></html>")
    return "".join(parts)

"""Number formats and table column settings shared by the pages."""

from __future__ import annotations

import math
import re
from typing import Any

import streamlit as st

NO_DATA = "no data yet"  # what a statistic of zero samples shows (a rate, a percentile, a mean)

# ASCII punctuation Streamlit's Markdown gives a meaning to: emphasis, code, links and images ([...](...),
# ![...]), headings, lists, tables, HTML (<...>), LaTeX ($), colour and icon directives (:red[...],
# :material/...:), entities (&...;), and what GitHub-flavoured Markdown turns into links by itself (bare
# http://..., www. and e-mail addresses: ":", "." and "@"). Each becomes a numeric character reference:
# CommonMark shows it as the character but never reads it as syntax (a backslash escape does not stop
# GFM's autolinks: "http\://evil.example" is still linked).
_MD_SPECIAL = re.compile(r"[\\`*_{}\[\]()#+\-.!|<>~$:&=^\"'@/]")
_NEWLINES = re.compile(r"[\r\n]+")
# GitHub-flavoured Markdown also links bare URLs and e-mail addresses, and Streamlit does it on the text
# after parsing, so no escape stops it: an invisible word joiner (U+2060) inside "://", "www." and after
# "@" does (the text looks the same; a copy of it carries the invisible character).
WORD_JOINER = "\u2060"
_AUTOLINK = re.compile(r"(?i)(?<=[a-z])(:)(?=//)|(?<![\w.])(www)(?=\.)|(@)")


def md(value: Any) -> str:
    """``value`` as literal text inside Markdown (st.markdown, captions, titles, alerts, toasts, labels).

    Client-controlled strings (model, path, session id, error, tool names, URL parameters) and what Claude
    wrote (pattern labels, verdict reasoning) must render as text: a ``[link](http://...)``, an image, HTML
    or a directive in them would otherwise become one. Newlines become spaces (no new paragraphs).
    """
    if value is None:
        return ""
    text = _AUTOLINK.sub(lambda m: (m.group(1) or m.group(2) or m.group(3)) + WORD_JOINER, _NEWLINES.sub(" ", str(value)))
    return _MD_SPECIAL.sub(lambda m: f"&#{ord(m.group(0))};", text)


def code(value: Any) -> str:
    """``value`` as inline code in Markdown, whatever backticks it contains (a code span cannot be escaped)."""
    text = _NEWLINES.sub(" ", "" if value is None else str(value))
    ticks = max((len(m) for m in re.findall(r"`+", text)), default=0) + 1
    fence = "`" * ticks
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def stat(value: Any, formatter: Any, samples: float | int | None) -> str:
    """A statistic formatted, or "no data yet" when it rests on no samples (or is missing)."""
    if not samples or _missing(value):
        return NO_DATA
    return str(formatter(value))


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def ms(v: float | None) -> str:
    if _missing(v):
        return "–"
    return f"{v / 1000:.2f} s" if v >= 10_000 else f"{v:,.0f} ms"


def percent(v: float | None) -> str:
    return "–" if _missing(v) else f"{v:.1%}"


def usd(v: float | None) -> str:
    if _missing(v):
        return "–"
    return f"${v:,.4f}" if abs(v) < 1 else f"${v:,.2f}"


def count(v: float | int | None) -> str:
    return "–" if _missing(v) else f"{int(v):,}"


def compact(v: float | int | None) -> str:
    """1234 -> 1.2k, 3566210 -> 3.6M: for tiles where full digits do not fit."""
    if _missing(v):
        return "–"
    for limit, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= limit:
            return f"{v / limit:.1f}{suffix}"
    return f"{int(v)}"


def exchange_columns() -> dict[str, Any]:
    cc = st.column_config
    return {
        "time": cc.DatetimeColumn("time (UTC)", format="MM-DD HH:mm:ss", width="small"),
        "client": cc.TextColumn("client", help="API-key fingerprint, or source address", width="small"),
        "status": cc.NumberColumn("status", format="%d", width="small"),
        "latency_ms": cc.NumberColumn("latency", format="%.0f ms", width="small"),
        "ttft_ms": cc.NumberColumn("TTFT", format="%.0f ms", width="small", help="time to first token (streams)"),
        "tokens_in": cc.NumberColumn("tokens in", format="%d", width="small"),
        "tokens_out": cc.NumberColumn("tokens out", format="%d", width="small"),
        "cost_usd": cc.NumberColumn("cost", format="$%.5f", width="small"),
        "flags": cc.TextColumn("flags", width="medium"),
        "open": cc.LinkColumn("details", display_text="open", width="small"),
        "pattern_id": cc.NumberColumn("pattern", format="%d", width="small"),
        "prompt": cc.TextColumn("last user turn", width="large"),
    }


def summary_columns() -> dict[str, Any]:
    cc = st.column_config
    return {
        "requests": cc.NumberColumn("requests", format="%d"),
        "errors": cc.NumberColumn("errors", format="%d"),
        "error_rate": cc.NumberColumn("error rate", format="percent"),
        "rate_limited": cc.NumberColumn("429s", format="%d"),
        "latency_p50_ms": cc.NumberColumn("p50", format="%.0f ms", help="from the rollup histogram (within ~12%)"),
        "latency_p95_ms": cc.NumberColumn("p95", format="%.0f ms"),
        "latency_p99_ms": cc.NumberColumn("p99", format="%.0f ms"),
        "latency_mean_ms": cc.NumberColumn("mean", format="%.0f ms"),
        "ttft_p50_ms": cc.NumberColumn("TTFT p50", format="%.0f ms"),
        "ttft_p95_ms": cc.NumberColumn("TTFT p95", format="%.0f ms"),
        "input_tokens": cc.NumberColumn("input tok", format="compact"),
        "output_tokens": cc.NumberColumn("output tok", format="compact"),
        "cached_tokens": cc.NumberColumn("cached tok", format="compact"),
        "reasoning_tokens": cc.NumberColumn("reasoning tok", format="compact"),
        "cost_usd": cc.NumberColumn("cost", format="dollar"),
        "unpriced_requests": cc.NumberColumn("unpriced", format="%d", help="exchanges of models missing from the price table"),
    }

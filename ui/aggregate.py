"""Rollup rows -> the tables and series the Analytics and Patterns pages show (pure pandas/numpy)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from intelligence.analytics import MEASURES, RollupRow, hist_quantile
from intelligence.analytics_models import HIST_BINS
from intelligence.pricing import PriceTable, costs

# Group-by choice -> rollup column.
GROUPS = {"none": None, "model": "model", "provider": "provider", "client": "client", "pattern": "pattern_id"}

# What a summary shows, in order.
SUMMARY_COLUMNS = [
    "requests",
    "errors",
    "error_rate",
    "rate_limited",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "latency_mean_ms",
    "ttft_p50_ms",
    "ttft_p95_ms",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost_usd",
    "unpriced_requests",
]


@dataclass
class RollupFrame:
    rows: pd.DataFrame  # one line per rollup row, measures plus cost_usd
    latency_hist: np.ndarray  # (rows, HIST_BINS)
    ttft_hist: np.ndarray


def rollup_frame(rows: Sequence[RollupRow], prices: PriceTable) -> RollupFrame:
    """Rollup rows as a frame, each priced at the price in force on its bucket's day."""
    if not rows:
        empty = pd.DataFrame(
            columns=["bucket", "model", "api", "provider", "client", "pattern_id", *MEASURES, "cost_usd", "priced"]
        )
        return RollupFrame(empty, np.zeros((0, HIST_BINS), np.int64), np.zeros((0, HIST_BINS), np.int64))
    df = pd.DataFrame(
        {
            "bucket": pd.to_datetime([r.bucket for r in rows], utc=True),
            "model": [r.model for r in rows],
            "api": [r.api for r in rows],
            "provider": [r.provider for r in rows],
            "client": [r.client for r in rows],
            "pattern_id": pd.array([r.pattern_id for r in rows], dtype="Int64"),
        }
    )
    for m in MEASURES:
        df[m] = np.fromiter((r.measures[m] for r in rows), dtype=np.float64, count=len(rows))
    priced = costs(
        prices,
        (
            (
                r.model or None,
                r.api or None,
                r.bucket,
                int(r.measures["input_tokens"]),
                int(r.measures["output_tokens"]),
                int(r.measures["cached_tokens"]),
                int(r.measures["reasoning_tokens"]),
            )
            for r in rows
        ),
    )
    df["priced"] = [c is not None for c in priced]
    df["cost_usd"] = [c if c is not None else 0.0 for c in priced]
    return RollupFrame(df, np.stack([r.latency_hist for r in rows]), np.stack([r.ttft_hist for r in rows]))


def summarize(frame: RollupFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Sums and histogram percentiles per combination of ``keys`` (no keys: one line for everything)."""
    df = frame.rows
    if df.empty:
        return pd.DataFrame(columns=[*keys, *SUMMARY_COLUMNS])
    if keys:
        codes = df.groupby(list(keys), sort=False, dropna=False).ngroup().to_numpy()
        _, first = np.unique(codes, return_index=True)  # the first row of each group, in code order
        groups = df[list(keys)].iloc[first].reset_index(drop=True)
    else:
        codes = np.zeros(len(df), dtype=np.int64)
        groups = pd.DataFrame(index=[0])
    n_groups = len(groups)
    lat = np.zeros((n_groups, HIST_BINS), dtype=np.int64)
    ttft = np.zeros((n_groups, HIST_BINS), dtype=np.int64)
    np.add.at(lat, codes, frame.latency_hist)
    np.add.at(ttft, codes, frame.ttft_hist)

    def total(col: str) -> np.ndarray:
        return np.bincount(codes, weights=df[col].to_numpy(dtype=np.float64), minlength=n_groups)

    requests = total("n")
    errors = total("errors")
    latency_n, latency_sum = total("latency_n"), total("latency_sum")
    unpriced = np.bincount(
        codes, weights=(~df["priced"].to_numpy(dtype=bool)) * df["n"].to_numpy(dtype=np.float64), minlength=n_groups
    )
    out = groups.copy()
    out["requests"] = requests.astype(np.int64)
    out["errors"] = errors.astype(np.int64)
    out["error_rate"] = np.divide(errors, requests, out=np.zeros(n_groups), where=requests > 0)
    out["rate_limited"] = total("rate_limited").astype(np.int64)
    out["latency_p50_ms"] = [hist_quantile(h, 0.50) for h in lat]
    out["latency_p95_ms"] = [hist_quantile(h, 0.95) for h in lat]
    out["latency_p99_ms"] = [hist_quantile(h, 0.99) for h in lat]
    out["latency_mean_ms"] = np.divide(latency_sum, latency_n, out=np.full(n_groups, np.nan), where=latency_n > 0)
    out["ttft_p50_ms"] = [hist_quantile(h, 0.50) for h in ttft]
    out["ttft_p95_ms"] = [hist_quantile(h, 0.95) for h in ttft]
    for col in ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens"):
        out[col] = total(col).astype(np.int64)
    out["cost_usd"] = total("cost_usd")
    out["unpriced_requests"] = unpriced.astype(np.int64)
    for col in ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "ttft_p50_ms", "ttft_p95_ms"):
        out[col] = pd.to_numeric(out[col], errors="coerce").astype("float64")
    return out.sort_values("requests", ascending=False, kind="stable").reset_index(drop=True)


def keep_top(frame: RollupFrame, key: str, top: Sequence[object], other: object = "other") -> RollupFrame:
    """``frame`` with every ``key`` value outside ``top`` relabelled ``other``, so charts stay readable."""
    rows = frame.rows.copy()
    column = rows[key].astype(object)
    rows[key] = column.where(column.isin(list(top)), other)
    return RollupFrame(rows, frame.latency_hist, frame.ttft_hist)


@dataclass
class Spend:
    total_usd: float
    unpriced_requests: int
    hourly: pd.DataFrame  # bucket, cost_usd (every hour of the day up to now)


def spend_today(rows: Sequence[RollupRow], prices: PriceTable, day_start: pd.Timestamp | object, now: object) -> Spend:
    """Spend since ``day_start`` (00:00 UTC) from hourly rollup rows, priced per model and day."""
    start = pd.Timestamp(day_start)
    frame = rollup_frame(rows, prices)
    hourly = summarize(frame, ["bucket"]).sort_values("bucket")
    index = pd.DataFrame({"bucket": pd.date_range(start, periods=24, freq="h", tz="UTC")})
    hourly = index.merge(
        hourly[["bucket", "cost_usd"]] if len(hourly) else pd.DataFrame(columns=["bucket", "cost_usd"]), on="bucket", how="left"
    )
    hourly["cost_usd"] = pd.to_numeric(hourly["cost_usd"], errors="coerce").fillna(0.0)
    hourly = hourly[hourly["bucket"] <= pd.Timestamp(now)].reset_index(drop=True)
    unpriced = int((frame.rows["n"] * (~frame.rows["priced"].astype(bool))).sum()) if len(frame.rows) else 0
    return Spend(total_usd=float(hourly["cost_usd"].sum()), unpriced_requests=unpriced, hourly=hourly)


def spend_payload(spend: Spend) -> dict[str, object]:
    """The spend tile's values as the live view's JSON."""
    return {
        "total_usd": spend.total_usd,
        "unpriced_requests": spend.unpriced_requests,
        "hourly": [float(v) for v in spend.hourly["cost_usd"]],
    }

"""Local detectors: cheap checks over the request log that raise suspicions for the judge.

Four families (see docs/anomalies.md for thresholds and why):

* security: what the sidecar's detectors already wrote into ``exchanges.flags`` -- an injection
  score in the uncertain band, or a monitor-mode policy rule that would have acted;
* novelty: the prompt is far from every pattern the client used before (cosine similarity of its
  embedding to those patterns' centroids below ``novelty_threshold``), given enough history;
* rates: the client's volume, tokens per request or error rate in the current window against its
  own baseline (Poisson tail, robust z-score, binomial tail), each with a minimum count;
* newness: a tool or model the client never used before, given enough history.

Every detector returns :class:`Finding` values; the job groups them into suspicions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from intelligence.anomaly import stats
from intelligence.anomaly.kinds import (
    ERROR_SPIKE,
    INJECTION_UNCERTAIN,
    NEW_MODEL,
    NEW_TOOL,
    NOVEL_PROMPT,
    POLICY_MONITOR,
    TOKEN_SPIKE,
    VOLUME_SPIKE,
)
from intelligence.memory.repository import vec_arg

_CLIENT_MATCH = "(client_key_fp = :client OR (client_key_fp IS NULL AND client_addr = :client))"
_IS_ERROR = "(status IS NULL OR status >= 400 OR error IS NOT NULL)"
_WOULD_ACT = frozenset({"block", "quarantine", "redact", "throttle", "alert"})


@dataclass(frozen=True)
class DetectorConfig:
    # The injection scorer's default operating threshold is 0.5 (intelligence/detectors/injection.py):
    # scores just below it passed unnoticed, scores just above it may have passed under a lenient
    # policy. Both sides of the line are where a second opinion is worth its cost.
    injection_band: tuple[float, float] = (0.35, 0.75)
    # Patterns join at similarity 0.50 (intelligence/memory/assign.py); a prompt below 0.30 to all of
    # the client's patterns is clearly none of them, not a borderline member.
    novelty_threshold: float = 0.30
    novelty_min_history: int = 20  # embedded past exchanges of the client
    history_lookback: timedelta = timedelta(days=30)  # for novelty and new tool/model
    new_min_history: int = 20  # past exchanges before "never used" means anything
    window: timedelta = timedelta(minutes=10)
    baseline: timedelta = timedelta(hours=24)  # immediately before the window
    min_baseline_span: timedelta = timedelta(hours=1)
    min_baseline_count: int = 20
    alpha: float = 1e-3  # tail probability below which a change is called sudden
    volume_min_count: int = 10
    volume_min_ratio: float = 2.0  # and at least this many times the expected count
    token_min_count: int = 5
    token_z: float = 3.5  # the usual cut-off for a modified z-score (Iglewicz & Hoaglin)
    token_min_ratio: float = 2.0
    error_min_count: int = 10
    error_min_errors: int = 5
    error_min_increase: float = 0.10  # absolute rise of the error rate over the baseline


@dataclass(frozen=True)
class Finding:
    detector: str
    strength: float  # 0..1, how strongly the detector alone points at trouble (used by local verdicts)
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExchangeView:
    """The columns of one exchange the detectors read."""

    request_id: str
    client: str | None
    client_key_fp: str | None
    started_at: datetime
    inserted_at: datetime
    model: str | None
    tool_names: tuple[str, ...]
    flags: dict[str, Any]
    prompt_user: str | None
    prompt_system: str | None


def window_key(at: datetime, window: timedelta) -> str:
    """The fixed window ``at`` falls in (its start, ISO-8601): the unit of de-duplication."""
    seconds = window.total_seconds()
    start = datetime.fromtimestamp((at.timestamp() // seconds) * seconds, tz=UTC)
    return start.isoformat()


# ------------------------------------------------------------------------------------- security


def security_findings(flags: dict[str, Any], cfg: DetectorConfig) -> list[Finding]:
    out: list[Finding] = []
    detections = flags.get("detections") or {}
    policy = flags.get("policy") or {}
    blocked = "block" in policy
    score = detections.get("injection_score")
    low, high = cfg.injection_band
    # a Claude verdict taken inline (policy action claude_verdict) already settled the uncertainty
    judged_inline = isinstance(flags.get("claude_verdict"), dict) and flags["claude_verdict"].get("verdict") is not None
    if isinstance(score, (int, float)) and low <= float(score) < high and not judged_inline:
        out.append(
            Finding(
                INJECTION_UNCERTAIN,
                float(score),
                {
                    "injection_score": float(score),
                    "injection_layer": detections.get("injection_layer"),
                    "normaliser_flags": detections.get("flags") or [],
                    "band": [low, high],
                    "blocked": blocked,
                },
            )
        )
    monitor = [r for r in policy.get("fired") or [] if isinstance(r, dict) and r.get("mode") == "monitor"]
    if monitor:
        would_act = sorted({a for r in monitor for a in r.get("actions") or [] if a in _WOULD_ACT})
        strength = 0.6 if {"block", "quarantine"} & set(would_act) else 0.4
        out.append(
            Finding(
                POLICY_MONITOR,
                strength,
                {
                    "rules": [f"{r.get('policy')}/{r.get('rule')}" for r in monitor],
                    "would": would_act,
                    "blocked": blocked,
                    "pii": detections.get("pii") or {},
                    "secrets": detections.get("secrets") or {},
                },
            )
        )
    return out


# -------------------------------------------------------------------------------------- novelty


async def novelty_history(conn: AsyncConnection, x: ExchangeView, cfg: DetectorConfig) -> int:
    """How many embedded exchanges of the client precede this one (novelty needs enough of them)."""
    if x.client_key_fp is None:
        return 0
    return int(
        (
            await conn.execute(
                text(
                    "SELECT count(*) FROM exchange_embeddings WHERE client_key_fp = :client AND created_at < :t "
                    "AND created_at >= :since AND request_id <> :rid AND embedding IS NOT NULL"
                ),
                {"client": x.client_key_fp, "t": x.started_at, "since": x.started_at - cfg.history_lookback, "rid": x.request_id},
            )
        ).scalar_one()
    )


async def novelty_finding(
    conn: AsyncConnection, x: ExchangeView, vector: np.ndarray, history: int, cfg: DetectorConfig
) -> Finding | None:
    # Patterns merged away keep their row with redirect_to set and no centroid: follow the redirect.
    row = (
        (
            await conn.execute(
                text(
                    "WITH used AS (SELECT DISTINCT pattern_id FROM exchange_embeddings WHERE client_key_fp = :client "
                    "  AND created_at < :t AND created_at >= :since AND request_id <> :rid AND pattern_id IS NOT NULL), "
                    "centroids AS (SELECT DISTINCT coalesce(p.redirect_to, p.id) AS id FROM used JOIN patterns p ON p.id = used.pattern_id) "
                    "SELECT count(*) AS patterns, max(1 - (p.centroid <=> CAST(:v AS real[])::vector)) AS best, "
                    "  (array_agg(p.id ORDER BY p.centroid <=> CAST(:v AS real[])::vector))[1] AS nearest "
                    "FROM centroids c JOIN patterns p ON p.id = c.id WHERE p.centroid IS NOT NULL"
                ),
                {
                    "client": x.client_key_fp,
                    "t": x.started_at,
                    "since": x.started_at - cfg.history_lookback,
                    "rid": x.request_id,
                    "v": vec_arg(vector),
                },
            )
        )
        .mappings()
        .one()
    )
    if not row["patterns"] or row["best"] is None:
        return None
    best = float(row["best"])
    if best >= cfg.novelty_threshold:
        return None
    return Finding(
        NOVEL_PROMPT,
        min(1.0, 1.0 - best),
        {
            "max_similarity": round(best, 4),
            "threshold": cfg.novelty_threshold,
            "nearest_pattern": row["nearest"],
            "client_patterns": int(row["patterns"]),
            "history": history,
        },
    )


# -------------------------------------------------------------------------------------- newness


async def newness_findings(conn: AsyncConnection, x: ExchangeView, cfg: DetectorConfig) -> list[Finding]:
    if x.client is None or (x.model is None and not x.tool_names):
        return []
    params = {
        "client": x.client,
        "t": x.started_at,
        "since": x.started_at - cfg.history_lookback,
        "rid": x.request_id,
        "model": x.model,
        "tools": list(x.tool_names),
    }
    prior = f"FROM exchanges WHERE {_CLIENT_MATCH} AND started_at < :t AND started_at >= :since AND request_id <> :rid"
    row = (
        (await conn.execute(text(f"SELECT count(*) AS n, bool_or(model = :model) AS model_seen {prior}"), params))
        .mappings()
        .one()
    )
    history = int(row["n"])
    if history < cfg.new_min_history:
        return []
    out: list[Finding] = []
    if x.model is not None and not row["model_seen"]:
        out.append(Finding(NEW_MODEL, 0.3, {"model": x.model, "history": history}))
    if x.tool_names:
        seen = set(
            (
                await conn.execute(
                    text(f"SELECT DISTINCT t FROM (SELECT unnest(tool_names) AS t {prior}) s WHERE t = ANY(:tools)"), params
                )
            )
            .scalars()
            .all()
        )
        new = sorted(set(x.tool_names) - seen)
        if new:
            out.append(Finding(NEW_TOOL, 0.5, {"tools": new, "history": history}))
    return out


# ----------------------------------------------------------------------------------------- rates


@dataclass(frozen=True)
class RateSample:
    """One client's counts in the current window and in the baseline right before it."""

    n_cur: int
    n_base: int
    e_cur: int
    e_base: int
    span_s: float  # how much of the baseline the client was active for (its first request onwards)
    tok_cur_n: int
    tok_base_n: int
    tok_cur_median: float | None
    tok_base_median: float | None
    tok_base_mad: float | None


async def rate_sample(conn: AsyncConnection, client: str, anchor: datetime, cfg: DetectorConfig) -> RateSample:
    window_start = anchor - cfg.window
    base_start = window_start - cfg.baseline
    params = {"client": client, "anchor": anchor, "ws": window_start, "bs": base_start}
    source = (
        f"SELECT started_at, {_IS_ERROR} AS err, coalesce(total_tokens, input_tokens + output_tokens) AS tok "
        f"FROM exchanges WHERE {_CLIENT_MATCH} AND started_at > :bs AND started_at <= :anchor"
    )
    row = (
        (
            await conn.execute(
                text(
                    f"SELECT count(*) FILTER (WHERE started_at > :ws) AS n_cur, count(*) FILTER (WHERE started_at <= :ws) AS n_base, "
                    "count(*) FILTER (WHERE started_at > :ws AND err) AS e_cur, count(*) FILTER (WHERE started_at <= :ws AND err) AS e_base, "
                    "min(started_at) FILTER (WHERE started_at <= :ws) AS first_base, "
                    "count(tok) FILTER (WHERE started_at > :ws) AS tok_cur_n, count(tok) FILTER (WHERE started_at <= :ws) AS tok_base_n, "
                    "percentile_cont(0.5) WITHIN GROUP (ORDER BY tok) FILTER (WHERE started_at > :ws) AS tok_cur_median, "
                    "percentile_cont(0.5) WITHIN GROUP (ORDER BY tok) FILTER (WHERE started_at <= :ws) AS tok_base_median "
                    f"FROM ({source}) s"
                ),
                params,
            )
        )
        .mappings()
        .one()
    )
    mad = None
    if row["tok_base_median"] is not None:
        mad = (
            await conn.execute(
                text(
                    f"SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY abs(tok - :median)) FROM ({source}) s "
                    "WHERE started_at <= :ws AND tok IS NOT NULL"
                ),
                {**params, "median": float(row["tok_base_median"])},
            )
        ).scalar_one()
    first = row["first_base"]
    span = (window_start - max(base_start, first)).total_seconds() if first is not None else 0.0
    return RateSample(
        n_cur=int(row["n_cur"]),
        n_base=int(row["n_base"]),
        e_cur=int(row["e_cur"]),
        e_base=int(row["e_base"]),
        span_s=span,
        tok_cur_n=int(row["tok_cur_n"]),
        tok_base_n=int(row["tok_base_n"]),
        tok_cur_median=None if row["tok_cur_median"] is None else float(row["tok_cur_median"]),
        tok_base_median=None if row["tok_base_median"] is None else float(row["tok_base_median"]),
        tok_base_mad=None if mad is None else float(mad),
    )


def rate_findings(s: RateSample, cfg: DetectorConfig) -> list[Finding]:
    """Each test needs an established baseline: enough requests over at least ``min_baseline_span``."""
    if s.n_base < cfg.min_baseline_count or s.span_s < cfg.min_baseline_span.total_seconds():
        return []
    out: list[Finding] = []
    expected = s.n_base * cfg.window.total_seconds() / s.span_s
    if s.n_cur >= cfg.volume_min_count and s.n_cur >= cfg.volume_min_ratio * expected:
        p = stats.poisson_sf(s.n_cur, expected)
        if p < cfg.alpha:
            out.append(
                Finding(
                    VOLUME_SPIKE,
                    1.0 - p,
                    {
                        "count": s.n_cur,
                        "expected": round(expected, 3),
                        "ratio": round(s.n_cur / expected, 2),
                        "p_value": p,
                        "test": "poisson_upper_tail",
                        "baseline_count": s.n_base,
                        "baseline_span_s": round(s.span_s),
                        "window_s": cfg.window.total_seconds(),
                    },
                )
            )
    if (
        s.tok_cur_n >= cfg.token_min_count
        and s.tok_base_n >= cfg.min_baseline_count
        and s.tok_cur_median is not None
        and s.tok_base_median is not None
    ):
        floor = max(1.0, 0.05 * s.tok_base_median)
        z = stats.robust_z(s.tok_cur_median, s.tok_base_median, s.tok_base_mad or 0.0, floor=floor)
        ratio = s.tok_cur_median / max(s.tok_base_median, 1.0)
        if z >= cfg.token_z and ratio >= cfg.token_min_ratio:
            out.append(
                Finding(
                    TOKEN_SPIKE,
                    min(1.0, 1.0 - 1.0 / z),
                    {
                        "median_tokens": s.tok_cur_median,
                        "baseline_median": s.tok_base_median,
                        "baseline_mad": s.tok_base_mad,
                        "robust_z": round(z, 2),
                        "ratio": round(ratio, 2),
                        "count": s.tok_cur_n,
                        "test": "robust_z_of_window_median",
                    },
                )
            )
    if s.n_cur >= cfg.error_min_count and s.e_cur >= cfg.error_min_errors:
        base_rate = (s.e_base + 1) / (s.n_base + 2)  # Laplace: an error-free baseline is not "never fails"
        rate = s.e_cur / s.n_cur
        if rate >= max(2 * base_rate, base_rate + cfg.error_min_increase):
            p = stats.binom_sf(s.e_cur, s.n_cur, base_rate)
            if p < cfg.alpha:
                out.append(
                    Finding(
                        ERROR_SPIKE,
                        1.0 - p,
                        {
                            "errors": s.e_cur,
                            "count": s.n_cur,
                            "rate": round(rate, 4),
                            "baseline_rate": round(base_rate, 4),
                            "baseline_errors": s.e_base,
                            "baseline_count": s.n_base,
                            "p_value": p,
                            "test": "binomial_upper_tail",
                        },
                    )
                )
    return out

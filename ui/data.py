"""The dashboard's one data layer: cached reads through the intelligence repositories.

Pages only lay out; every query and every number a page shows comes from here.

* ``st.cache_resource`` holds one :class:`ui.runner.DbRunner` per database URL: an event-loop
  thread with a pooled engine (Streamlit script threads have no loop of their own) that also
  LISTENs for new exchanges.
* ``st.cache_data`` with a TTL fronts every query. Queries about recent traffic take the
  runner's change token as an argument, so they re-run exactly when a NOTIFY arrived (or once a
  second when LISTEN is unavailable), not on every fragment tick.
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from intelligence.analytics import AnalyticsRepository, ExchangeFilter, ExchangeRow, policy_action_where
from intelligence.pricing import PriceTable, load_prices
from ui import aggregate, health
from ui.runner import DbRunner

# ---------------------------------------------------------------------------------------------
# connection


def database_url() -> str | None:
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    state = health.stack_state(health.data_dir())
    return state.database_url if state else None


@st.cache_resource(show_spinner=False)
def _runner(url: str) -> DbRunner:
    return DbRunner(url)


def runner() -> DbRunner:
    url = database_url()
    if not url:
        raise RuntimeError("no database configured: set DATABASE_URL or start the stack with `llmproxy up`")
    return _runner(url)


def _run(fn):
    return runner().run(fn)


def change_token() -> tuple[str, int]:
    return runner().change_token()


def feed_status() -> dict[str, Any]:
    feed = runner().feed
    return {"connected": feed.connected, "version": feed.version, "last_event": feed.last_event, "error": feed.error}


def prices() -> PriceTable:
    return load_prices()


def _now() -> datetime:
    return datetime.now(UTC)


def _minute() -> int:
    """Cache key part that turns over once a minute (for windows ending "now")."""
    return int(time.time() // 60)


# ---------------------------------------------------------------------------------------------
# exchange lists

LIST_COLUMNS = [
    "time",
    "client",
    "provider",
    "model",
    "status",
    "latency_ms",
    "ttft_ms",
    "tokens_in",
    "tokens_out",
    "cost_usd",
    "flags",
    "pattern_id",
    "session_id",
    "prompt",
    "request_id",
]


def flags_of(row: ExchangeRow) -> str:
    """Short tags for what is notable about an exchange."""
    tags = []
    if row.error:
        tags.append("error")
    if row.streamed:
        tags.append("stream")
    if row.tool_names:
        tags.append(f"tools:{len(row.tool_names)}")
    if row.tool_args_invalid:
        tags.append("bad-tool-args")
    if row.finish_reason and row.finish_reason not in ("stop", "end_turn", "tool_calls", "tool_use", "completed"):
        tags.append(row.finish_reason)
    tags += sorted(str(k) for k, v in row.flags.items() if v)
    return " · ".join(tags)


def exchange_frame(rows: list[ExchangeRow], table: PriceTable) -> pd.DataFrame:
    from intelligence.pricing import costs
    from ui.redact import mask_secrets

    cost = costs(
        table,
        ((r.model, r.api, r.started_at, r.input_tokens, r.output_tokens, r.cached_tokens, r.reasoning_tokens) for r in rows),
    )
    df = pd.DataFrame(
        {
            "time": pd.to_datetime([r.started_at for r in rows], utc=True),
            "client": [r.client_key_fp or r.client_addr for r in rows],
            "provider": [r.provider for r in rows],
            "model": [r.model for r in rows],
            "status": [r.status for r in rows],
            "latency_ms": [r.latency_ms for r in rows],
            "ttft_ms": [r.ttft_ms for r in rows],
            "tokens_in": [r.input_tokens for r in rows],
            "tokens_out": [r.output_tokens for r in rows],
            "cost_usd": cost,
            "flags": [flags_of(r) for r in rows],
            "pattern_id": [r.pattern_id for r in rows],
            "session_id": [r.session_id for r in rows],
            "prompt": [mask_secrets(r.prompt_preview or "") for r in rows],
            "request_id": [r.request_id for r in rows],
        },
        columns=LIST_COLUMNS,
    )
    # Arrow cannot hold arbitrary Python ints (a provider may report absurd token counts): floats.
    for col in ("status", "latency_ms", "ttft_ms", "tokens_in", "tokens_out", "cost_usd", "pattern_id"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    return df


@st.cache_data(ttl=60, max_entries=8, show_spinner=False)
def _recent(url: str, limit: int, token: tuple[str, int]) -> pd.DataFrame:
    rows = _run(lambda conn: AnalyticsRepository(conn).recent(limit))
    return exchange_frame(rows, prices())


def recent_exchanges(limit: int = 200) -> pd.DataFrame:
    """The newest exchanges (no bodies), re-read only when new ones were committed."""
    return _recent(database_url(), limit, change_token())


@st.cache_data(ttl=10, max_entries=32, show_spinner=False)
def _search(url: str, f: dict[str, Any], limit: int, policy_actions: tuple[str, ...] = ()) -> pd.DataFrame:
    flt = ExchangeFilter(**f, policy_actions=policy_actions)
    rows = _run(lambda conn: AnalyticsRepository(conn).search(flt, limit))
    return exchange_frame(rows, prices())


def search_exchanges(
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    client: str | None = None,
    session_id: str | None = None,
    models: tuple[str, ...] = (),
    providers: tuple[str, ...] = (),
    status_class: str | None = None,
    pattern_id: int | None = None,
    text: str | None = None,
    policy_actions: tuple[str, ...] = (),
    limit: int = 200,
) -> pd.DataFrame:
    """Exchanges matching every filter, newest first. ``policy_actions`` (names in POLICY_ACTIONS): any of them."""
    f = dict(
        since=since,
        until=until,
        client=client or None,
        session_id=session_id or None,
        models=tuple(models),
        providers=tuple(providers),
        status_class=status_class,
        pattern_id=pattern_id,
        text=text or None,
    )
    actions = tuple(sorted(set(policy_actions)))
    if actions:
        policy_action_where(actions)  # unknown names fail here, before the cache
    return _search(database_url(), f, limit, actions)


@st.cache_data(ttl=300, show_spinner=False)
def _dimension_values(url: str, days: int, minute: int) -> dict[str, list[str]]:
    since = _now() - timedelta(days=days)
    return _run(lambda conn: AnalyticsRepository(conn).dimension_values(since))


def filter_options(days: int = 90) -> dict[str, list[str]]:
    """Providers, models and clients seen in the last ``days`` days, busiest first."""
    return _dimension_values(database_url(), days, _minute() // 5)


# ---------------------------------------------------------------------------------------------
# live KPIs


@dataclass
class LiveKpis:
    window_minutes: int
    requests: int
    req_per_s: float
    error_rate: float | None
    p50_ms: float | None
    p95_ms: float | None
    series: pd.DataFrame  # bucket, requests, req_per_s, error_rate, p50_ms, p95_ms (every bucket, zeros filled)


@st.cache_data(ttl=2, max_entries=8, show_spinner=False)
def _live_kpis(url: str, window_minutes: int, bucket_seconds: int, token: tuple[str, int], second: int) -> LiveKpis:
    now = _now()
    since = now - timedelta(minutes=window_minutes)
    buckets = _run(lambda conn: AnalyticsRepository(conn).live_buckets(since, bucket_seconds))
    whole = buckets[0] if buckets and buckets[0].bucket is None else None
    per = [b for b in buckets if b.bucket is not None]
    start = math.floor(since.timestamp() / bucket_seconds) * bucket_seconds
    index = pd.to_datetime(np.arange(start, now.timestamp(), bucket_seconds), unit="s", utc=True)
    series = pd.DataFrame({"bucket": index})
    got = pd.DataFrame(
        {
            "bucket": pd.to_datetime([b.bucket for b in per], utc=True),
            "requests": [b.n for b in per],
            "errors": [b.errors for b in per],
            "p50_ms": [b.p50_ms for b in per],
            "p95_ms": [b.p95_ms for b in per],
        }
    )
    series = series.merge(got, on="bucket", how="left")
    series["requests"] = series["requests"].fillna(0).astype(np.int64)
    series["errors"] = series["errors"].fillna(0).astype(np.int64)
    series["req_per_s"] = series["requests"] / bucket_seconds
    series["error_rate"] = np.where(series["requests"] > 0, series["errors"] / series["requests"].clip(lower=1), 0.0)
    for col in ("p50_ms", "p95_ms"):
        series[col] = pd.to_numeric(series[col], errors="coerce").astype("float64")
    n = whole.n if whole else 0
    return LiveKpis(
        window_minutes=window_minutes,
        requests=n,
        req_per_s=n / (window_minutes * 60),
        error_rate=(whole.errors / n) if whole and n else None,
        p50_ms=whole.p50_ms if whole else None,
        p95_ms=whole.p95_ms if whole else None,
        series=series,
    )


def live_kpis(window_minutes: int = 15, bucket_seconds: int = 60) -> LiveKpis:
    # the window slides with time even without traffic: a key part that turns every 2 seconds
    return _live_kpis(database_url(), window_minutes, bucket_seconds, change_token(), int(time.time() // 2))


@dataclass
class Spend:
    total_usd: float
    unpriced_requests: int
    hourly: pd.DataFrame  # bucket, cost_usd


@st.cache_data(ttl=10, max_entries=8, show_spinner=False)
def _spend_today(url: str, day: date, token: tuple[str, int]) -> Spend:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    rows = _run(lambda conn: AnalyticsRepository(conn).rollup("hour", start))
    frame = aggregate.rollup_frame(rows, prices())
    hourly = aggregate.summarize(frame, ["bucket"]).sort_values("bucket")
    index = pd.DataFrame({"bucket": pd.date_range(start, periods=24, freq="h", tz="UTC")})
    hourly = index.merge(
        hourly[["bucket", "cost_usd"]] if len(hourly) else pd.DataFrame(columns=["bucket", "cost_usd"]), on="bucket", how="left"
    )
    hourly["cost_usd"] = pd.to_numeric(hourly["cost_usd"], errors="coerce").fillna(0.0)
    hourly = hourly[hourly["bucket"] <= pd.Timestamp(_now())]
    unpriced = int((frame.rows["n"] * (~frame.rows["priced"].astype(bool))).sum()) if len(frame.rows) else 0
    return Spend(total_usd=float(hourly["cost_usd"].sum()), unpriced_requests=unpriced, hourly=hourly)


def spend_today() -> Spend:
    """Spend since 00:00 UTC from the hourly rollup, priced per model and day."""
    return _spend_today(database_url(), _now().date(), change_token())


# ---------------------------------------------------------------------------------------------
# one exchange, sessions


@dataclass
class ExchangeDetail:
    record: Any  # intelligence.records.ExchangeRecord
    cost_usd: float | None
    pattern: Any | None  # intelligence.memory.repository.PatternSummary
    similar: list[Any] = field(default_factory=list)  # SimilarPrompt
    signals: list[Any] = field(default_factory=list)  # Signal


@st.cache_data(ttl=30, max_entries=16, show_spinner=False)
def _exchange_detail(url: str, request_id: str) -> ExchangeDetail | None:
    from intelligence.memory.repository import PatternRepository
    from intelligence.store.repositories import ExchangeRepository

    async def q(conn):
        record = await ExchangeRepository(conn).get(request_id)
        if record is None:
            return None
        memory = PatternRepository(conn)
        pattern = await memory.pattern_for_request(request_id)
        similar = await memory.similar_to_request(request_id, k=5)
        signals = await memory.signals_for_request(request_id)
        return record, pattern, similar, signals

    got = _run(q)
    if got is None:
        return None
    record, pattern, similar, signals = got
    u = record.usage
    cost = prices().cost(
        record.model,
        record.api,
        input_tokens=u.input_tokens,
        output_tokens=u.output_tokens,
        cached_tokens=u.cached_tokens,
        reasoning_tokens=u.reasoning_tokens,
        on=record.started_at,
    )
    return ExchangeDetail(record=record, cost_usd=cost, pattern=pattern, similar=similar, signals=signals)


def exchange_detail(request_id: str) -> ExchangeDetail | None:
    return _exchange_detail(database_url(), request_id.strip())


@st.cache_data(ttl=5, max_entries=8, show_spinner=False)
def _recent_sessions(url: str, limit: int, token: tuple[str, int]) -> pd.DataFrame:
    from intelligence.store.repositories import SessionRepository

    rows = _run(lambda conn: SessionRepository(conn).recent(limit))
    return pd.DataFrame(
        {
            "session_id": [s.session_id for s in rows],
            "client": [s.client_key_fp for s in rows],
            "first_seen": pd.to_datetime([s.first_seen for s in rows], utc=True),
            "last_seen": pd.to_datetime([s.last_seen for s in rows], utc=True),
            "requests": [float(s.request_count) for s in rows],
            "errors": [float(s.error_count) for s in rows],
            "tokens": [float(s.total_tokens) for s in rows],
        }
    )


def recent_sessions(limit: int = 100) -> pd.DataFrame:
    return _recent_sessions(database_url(), limit, change_token())


@dataclass
class Turn:
    request_id: str
    started_at: datetime
    finished_at: datetime
    model: str | None
    status: int | None
    latency_ms: float | None
    tokens_in: int | None
    tokens_out: int | None
    error: str | None
    prompt: str
    reply: str


@st.cache_data(ttl=5, max_entries=16, show_spinner=False)
def _session_turns(url: str, session_id: str, token: tuple[str, int]) -> list[Turn]:
    from intelligence.records import Body
    from ui.bodies import assistant_text, tool_calls
    from ui.redact import mask_secrets

    def reply(path: str, document: Any) -> str:
        body = Body(json=document)
        text = assistant_text(path, body)
        calls = [c.client_name for c in tool_calls(path, body, None) if c.client_name]
        return "\n".join(filter(None, [text, ("→ calls " + ", ".join(calls)) if calls else ""]))

    api_paths = {
        "chat": "/v1/chat/completions",
        "responses": "/v1/responses",
        "messages": "/v1/messages",
        "completions": "/v1/completions",
        "embeddings": "/v1/embeddings",
    }
    rows = _run(lambda conn: AnalyticsRepository(conn).session_turns(session_id))
    return [
        Turn(
            request_id=t.request_id,
            started_at=t.started_at,
            finished_at=t.finished_at,
            model=t.model,
            status=t.status,
            latency_ms=t.latency_ms,
            tokens_in=t.input_tokens,
            tokens_out=t.output_tokens,
            error=t.error,
            prompt=mask_secrets(t.prompt_user or ""),
            reply=reply(api_paths.get(t.api or "", "/v1/chat/completions"), t.response),
        )
        for t in rows
    ]


def session_turns(session_id: str) -> list[Turn]:
    return _session_turns(database_url(), session_id.strip(), change_token())


# ---------------------------------------------------------------------------------------------
# analytics

PERIODS = {"Last 24 hours": 24, "Last 7 days": 24 * 7, "Last 30 days": 24 * 30, "Last 90 days": 24 * 90}


def granularity_for(since: datetime, until: datetime) -> str:
    """Hourly buckets up to three days, daily beyond: a few hundred points at most."""
    return "hour" if until - since <= timedelta(days=3) else "day"


@dataclass
class AnalyticsView:
    since: datetime
    until: datetime
    granularity: str
    group_by: str
    summary: pd.DataFrame  # one line per group (SUMMARY_COLUMNS)
    series: pd.DataFrame  # one line per bucket and group (top groups, the rest as "other")
    totals: pd.DataFrame  # one line: the whole period


@st.cache_data(ttl=60, max_entries=32, show_spinner=False)
def _analytics(url: str, since: datetime, until: datetime, group_by: str, top_n: int) -> AnalyticsView:
    granularity = granularity_for(since, until)
    key = aggregate.GROUPS[group_by]
    by_pattern = group_by == "pattern"
    rows = _run(lambda conn: AnalyticsRepository(conn).rollup(granularity, since, until, by_pattern=by_pattern))
    frame = aggregate.rollup_frame(rows, prices())
    keys = [key] if key else []
    summary = aggregate.summarize(frame, keys)
    totals = aggregate.summarize(frame, [])
    if key and len(summary):
        top = list(summary[key].head(top_n))
        series_frame = aggregate.keep_top(frame, key, top, other=-1 if by_pattern else "other")
    else:
        series_frame = frame
    series = aggregate.summarize(series_frame, ["bucket", *keys]).sort_values("bucket").reset_index(drop=True)
    if by_pattern:
        ids = [int(p) for p in summary["pattern_id"].dropna().unique()] if len(summary) else []
        labels = _run(lambda conn: AnalyticsRepository(conn).pattern_labels(ids))
        summary.insert(1, "pattern", [_pattern_name(p, labels) for p in summary["pattern_id"]])
        series.insert(1, "pattern", [_pattern_name(p, labels) for p in series["pattern_id"]])
    return AnalyticsView(
        since=since, until=until, granularity=granularity, group_by=group_by, summary=summary, series=series, totals=totals
    )


def _pattern_name(pid: Any, labels: dict[int, str]) -> str:
    if pid is None or pid == "" or (isinstance(pid, float) and math.isnan(pid)):
        return "unknown"
    pid = int(pid)
    if pid == -1:
        return "other"
    return f"#{pid} {labels.get(pid, '')}".strip()


def analytics(since: datetime, until: datetime, group_by: str = "none", top_n: int = 8) -> AnalyticsView:
    """Traffic between ``since`` and ``until`` from the rollups, grouped by none/model/provider/client/pattern."""
    if group_by not in aggregate.GROUPS:
        raise ValueError(f"group_by must be one of {list(aggregate.GROUPS)}")
    return _analytics(database_url(), since, until, group_by, top_n)


def period_bounds(hours: int) -> tuple[datetime, datetime]:
    """[since, until) covering the last ``hours`` hours in whole hours (stable cache keys within an hour)."""
    until = _now().replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return until - timedelta(hours=hours), until


# ---------------------------------------------------------------------------------------------
# patterns


@dataclass
class TopPatterns:
    volume: pd.DataFrame
    failure: pd.DataFrame
    growth: pd.DataFrame


@st.cache_data(ttl=60, max_entries=8, show_spinner=False)
def _top_patterns(url: str, days: int, limit: int, minute: int) -> TopPatterns:
    from intelligence.memory.repository import PatternRepository

    since = _now() - timedelta(days=days)

    async def ranked(conn):
        memory = PatternRepository(conn)
        volume = await memory.top_by_volume(since=since, limit=limit)
        growth = await memory.top_by_growth(timedelta(hours=24), limit=limit, min_recent=5)
        return volume, growth

    async def failing(conn):  # the slow one (joins outcome signals): on a connection of its own
        return await PatternRepository(conn).top_by_failure_rate(since=since, limit=limit, min_count=5)

    (volume, growth), failure = runner().gather(ranked, failing)
    ids = sorted({s.pattern_id for s in (*volume, *failure, *growth)})
    trends = _run(lambda conn: AnalyticsRepository(conn).pattern_buckets(ids, "day", since))
    days_index = pd.date_range((since.replace(hour=0, minute=0, second=0, microsecond=0)), _now(), freq="D", tz="UTC")
    by_pattern: dict[int, dict[pd.Timestamp, int]] = {}
    for t in trends:
        by_pattern.setdefault(t.pattern_id, {})[pd.Timestamp(t.bucket)] = t.n

    def trend(pid: int) -> list[int]:
        counts = by_pattern.get(pid, {})
        return [int(counts.get(d, 0)) for d in days_index]

    def frame(stats, extra: dict[str, Any]) -> pd.DataFrame:
        df = pd.DataFrame(
            {
                "pattern_id": [s.pattern_id for s in stats],
                "label": [s.label for s in stats],
                **{name: [fn(s) for s in stats] for name, fn in extra.items()},
                "trend": [trend(s.pattern_id) for s in stats],
            }
        )
        return df

    return TopPatterns(
        volume=frame(volume, {"exchanges": lambda s: s.total}),
        failure=frame(failure, {"exchanges": lambda s: s.total, "failed": lambda s: s.failed, "failure_rate": lambda s: s.score}),
        growth=frame(growth, {"last_24h": lambda s: s.recent, "previous_24h": lambda s: s.previous, "growth": lambda s: s.score}),
    )


def top_patterns(days: int = 7, limit: int = 10) -> TopPatterns:
    return _top_patterns(database_url(), days, limit, _minute())


@dataclass
class PatternDetail:
    pattern: Any  # PatternSummary
    success_rate: float | None
    total: int
    failed: int
    failed_by_kind: dict[str, int]
    models: list[tuple[str, int]]
    clients: list[tuple[str, int]]
    daily: pd.DataFrame  # bucket, n, errors


@st.cache_data(ttl=60, max_entries=16, show_spinner=False)
def _pattern_detail(url: str, pattern_id: int, days: int, minute: int) -> PatternDetail | None:
    from intelligence.memory.repository import PatternRepository

    since = _now() - timedelta(days=days)

    pattern = _run(lambda conn: PatternRepository(conn).get_pattern(pattern_id))
    if pattern is None:
        return None
    rate, usage, daily = runner().gather(
        lambda conn: PatternRepository(conn).success_rate(pattern.id, since=since),
        lambda conn: PatternRepository(conn).pattern_usage(pattern.id),
        lambda conn: AnalyticsRepository(conn).pattern_buckets([pattern.id], "day", since),
    )
    return PatternDetail(
        pattern=pattern,
        success_rate=rate.rate,
        total=rate.total,
        failed=rate.failed,
        failed_by_kind={k: v.failed for k, v in rate.by_kind.items() if v.failed},
        models=usage.models,
        clients=usage.clients,
        daily=pd.DataFrame(
            {
                "bucket": pd.to_datetime([d.bucket for d in daily], utc=True),
                "exchanges": [d.n for d in daily],
                "errors": [d.errors for d in daily],
            }
        ),
    )


def pattern_detail(pattern_id: int, days: int = 30) -> PatternDetail | None:
    return _pattern_detail(database_url(), int(pattern_id), days, _minute())


MAP_SAMPLE = 2000  # points: enough to see the clusters, light enough for the browser to draw
MAP_MAX_AGE_S = 600.0


def compute_pattern_map(url: str, sample: int) -> pd.DataFrame:
    """A PCA projection of the newest ``sample`` prompt embeddings, one point per exchange."""
    from ui.redact import mask_secrets

    runner = _runner(url)
    rows = runner.run(lambda conn: AnalyticsRepository(conn).embedding_sample(sample))
    columns = ["x", "y", "pattern_id", "pattern", "outcome", "prompt", "request_id"]
    if len(rows) < 3:
        return pd.DataFrame(columns=columns)
    coords = pca_2d(np.stack([r.embedding for r in rows]).astype(np.float64))
    ids = sorted({r.pattern_id for r in rows if r.pattern_id is not None})
    labels = runner.run(lambda conn: AnalyticsRepository(conn).pattern_labels(ids))
    return pd.DataFrame(
        {
            "x": coords[:, 0],
            "y": coords[:, 1],
            "pattern_id": [float(r.pattern_id) if r.pattern_id is not None else np.nan for r in rows],
            "pattern": [_pattern_name(r.pattern_id, labels) for r in rows],
            "outcome": ["failed" if r.failed else "ok" for r in rows],
            "prompt": [mask_secrets((r.prompt_preview or "")[:80]) for r in rows],  # tooltips; keeps the chart spec small
            "request_id": [r.request_id for r in rows],
        },
        columns=columns,
    )


def pca_2d(vectors: np.ndarray) -> np.ndarray:
    """The first two principal components (SVD of the centred matrix)."""
    centred = vectors - vectors.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T


class BackgroundMap:
    """The embedding map, recomputed in a background thread when older than MAP_MAX_AGE_S.

    Page loads only read the last result, so a PCA over thousands of vectors never sits in a
    page's render time; the first request after start-up starts the job.
    """

    def __init__(self, url: str, sample: int) -> None:
        self.url, self.sample = url, sample
        self._lock = threading.Lock()
        self.frame: pd.DataFrame | None = None
        self.computed_at: float | None = None
        self.error: str | None = None
        self._running = False

    def refresh_if_stale(self, delay: float = 0.0) -> None:
        """Start a recomputation unless the result is fresh or one is running; ``delay`` lets a page render first."""
        with self._lock:
            fresh = self.computed_at is not None and time.time() - self.computed_at < MAP_MAX_AGE_S
            if fresh or self._running:
                return
            self._running = True
        threading.Thread(target=self._compute, args=(delay,), name="llmproxy-ui-map", daemon=True).start()

    def _compute(self, delay: float) -> None:
        try:
            time.sleep(delay)
            frame = compute_pattern_map(self.url, self.sample)
            with self._lock:
                self.frame, self.computed_at, self.error = frame, time.time(), None
        except Exception as exc:  # noqa: BLE001 - shown on the page; retried on the next look
            with self._lock:
                self.error = f"{type(exc).__name__}: {exc}"
        finally:
            with self._lock:
                self._running = False

    def wait(self, timeout: float) -> bool:
        """Block until a first result exists (tests, warm-up); True if there is one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self.frame is not None:
                    return True
            time.sleep(0.05)
        return False


@st.cache_resource(show_spinner=False)
def _map_job(url: str, sample: int) -> BackgroundMap:
    return BackgroundMap(url, sample)


def map_job(sample: int = MAP_SAMPLE, delay: float = 0.0) -> BackgroundMap:
    job = _map_job(database_url(), sample)
    job.refresh_if_stale(delay)
    return job


@st.cache_resource(show_spinner=False)
def _warm_imports() -> threading.Thread:
    """Import what the Security and System pages need in the background: the Claude SDK (via
    intelligence.claude) and the injection detector's threshold take about 2 s to import on a busy
    2-core machine, which should not land in someone's first page view."""

    def go() -> None:
        try:
            import intelligence.claude  # noqa: F401
            from intelligence.policy.conditions import injection_threshold

            injection_threshold()
        except Exception:  # noqa: BLE001 - the page that needs it reports the problem
            pass

    thread = threading.Thread(target=go, name="llmproxy-ui-warm", daemon=True)
    thread.start()
    return thread


def start_background_jobs() -> None:
    """Warm what is slow to compute soon after anyone opens the dashboard (not during their first page)."""
    _warm_imports()
    if database_url():
        map_job(delay=5.0)


@st.cache_resource(show_spinner="Loading the embedding model...")
def _embedder():
    from intelligence.embeddings import shared_embedder

    return shared_embedder()


@st.cache_data(ttl=300, max_entries=32, show_spinner=False)
def _similar_prompts(url: str, query: str, k: int) -> pd.DataFrame:
    from intelligence.memory.repository import PatternRepository
    from ui.redact import mask_secrets

    vector = _embedder().encode([query])[0]
    hits = _run(lambda conn: PatternRepository(conn).similar_to_vector(vector, k=k, ef_search=max(40, 2 * k)))
    return pd.DataFrame(
        {
            "similarity": [h.similarity for h in hits],
            "pattern_id": [float(h.pattern_id) if h.pattern_id is not None else np.nan for h in hits],
            "prompt": [mask_secrets(h.text or "") for h in hits],
            "model": [h.model for h in hits],
            "time": pd.to_datetime([h.created_at for h in hits], utc=True),
            "request_id": [h.request_id for h in hits],
        }
    )


def similar_prompts(query: str, k: int = 10) -> pd.DataFrame:
    """Stored prompts nearest ``query`` (embeds it with the pattern-memory model, loaded once)."""
    return _similar_prompts(database_url(), query.strip(), k)


# ---------------------------------------------------------------------------------------------
# system


@dataclass
class SystemStatus:
    components: list[health.Component]
    versions: dict[str, str]
    database: dict[str, Any]
    spool: health.SpoolDepth
    worker_backlog: int | None
    feed: dict[str, Any]
    data_dir: str
    stack_started: str | None


@st.cache_data(ttl=3, max_entries=2, show_spinner=False)
def _system_status(url: str | None, second: int) -> SystemStatus:
    from intelligence.store.migrate import head

    directory = health.data_dir()
    state = health.stack_state(directory)
    database: dict[str, Any] = {}
    backlog = None
    ok, detail = False, "no database configured"
    if url:
        try:

            async def q(conn):
                repo = AnalyticsRepository(conn)
                return await repo.overview(), await repo.worker_backlog(_now() - timedelta(hours=24))

            overview, backlog = _run(q)
            ok = True
            detail = f"PostgreSQL {overview.server_version}"
            database = {
                "server_version": overview.server_version,
                "extensions": overview.extensions,
                "schema_revision": overview.schema_revision,
                "code_revision": head(),
                "estimated_exchanges": overview.estimated_exchanges,
                "table_bytes": overview.table_bytes,
            }
        except Exception as exc:  # noqa: BLE001 - the page reports it
            detail = f"{type(exc).__name__}: {exc}"
    versions = health.package_versions()
    envoy = health.envoy_version(state)
    if envoy:
        versions["envoy (running)"] = envoy
    if database:
        versions["postgresql"] = database["server_version"]
        for ext in ("vector", "pg_trgm"):
            if ext in database["extensions"]:
                versions[ext] = database["extensions"][ext]
    return SystemStatus(
        components=health.components(state, ok, detail),
        versions=versions,
        database=database,
        spool=health.spool_depth(directory),
        worker_backlog=backlog,
        feed=feed_status() if url and ok else {"connected": False},
        data_dir=str(Path(directory).resolve()),
        stack_started=state.started_at if state else None,
    )


def system_status() -> SystemStatus:
    return _system_status(database_url(), int(time.time() // 3))

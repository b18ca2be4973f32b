"""The dashboard's one data layer: cached reads through the intelligence repositories.

Pages only lay out; every query and every number a page shows comes from here, and every SQL statement
lives in a repository in ``intelligence/`` (``intelligence.analytics`` for traffic, ``intelligence.dashboard``
for alerts, security, experiments, Claude spend and the live feed, the owning packages for the rest).

* ``st.cache_resource`` holds one :class:`ui.runner.DbRunner` per database URL: an event-loop
  thread with a pooled engine (Streamlit script threads have no loop of their own) that also
  LISTENs for new exchanges.
* ``st.cache_data`` with a TTL fronts every query. Queries about recent traffic take the
  runner's change token as an argument, so they re-run exactly when a NOTIFY arrived (or once a
  second when LISTEN is unavailable), not on every run. Views of what admins change (alerts, keys,
  policies, experiments) take the write revision, which every action bumps (:func:`bump_revision`).
* The Live page renders once from :func:`live_snapshot`; the browser then follows the live feed
  (``ui.live``), not this module.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from intelligence import analytics as _analytics
from intelligence.analytics import AnalyticsRepository, ExchangeFilter, ExchangeRow, policy_action_where
from intelligence.dashboard.alerts import EVENT_COLUMNS, AlertRepository
from intelligence.dashboard.experiments import ENHANCEMENT_COLUMNS, HISTORY_COLUMNS, ExperimentRepository
from intelligence.dashboard.security import AUDIT_COLUMNS, DETECTOR_COLUMNS, ENFORCED_WHERE, VERDICT_COLUMNS, SecurityRepository
from intelligence.dashboard.spend import ClaudeSpendRepository
from intelligence.pricing import PriceTable, load_prices
from ui import aggregate, health
from ui.live.rows import flags_of
from ui.runner import DbRunner

POLICY_ACTIONS = _analytics.POLICY_ACTIONS  # the Explorer's "Policy action" choices
__all__ = ["ENFORCED_WHERE", "POLICY_ACTIONS", "flags_of"]

# ---------------------------------------------------------------------------------------------
# connection


def database_url() -> str | None:
    return health.database_url()


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


def _tick(seconds: float) -> int:
    return int(time.time() // seconds)


# ---------------------------------------------------------------------------------------------
# write revision: admin actions bump it, the views of what they change take it as a key part


@st.cache_resource(show_spinner=False)
def _revision_box() -> dict[str, int]:
    return {"n": 0}


def revision() -> int:
    return _revision_box()["n"]


def bump_revision() -> None:
    _revision_box()["n"] += 1


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


@st.cache_data(ttl=2, max_entries=8, show_spinner=False)
def _live_kpis(url: str, window_minutes: int, bucket_seconds: int, token: tuple[str, int], second: int) -> dict[str, Any]:
    from ui.live.kpis import kpis_from_buckets

    now = _now()
    since = now - timedelta(minutes=window_minutes)
    buckets = _run(lambda conn: AnalyticsRepository(conn).live_buckets(since, bucket_seconds))
    return kpis_from_buckets(window_minutes, bucket_seconds, buckets, now.timestamp())


def live_kpis(window_minutes: int = 15, bucket_seconds: int = 60) -> dict[str, Any]:
    """Requests/s, error rate, p50/p95 latency over the last ``window_minutes`` and per bucket (statistics of
    an empty window are None: "no data yet"). The same numbers the live feed keeps (ui.live.kpis)."""
    # the window slides with time even without traffic: a key part that turns every 2 seconds
    return _live_kpis(database_url(), window_minutes, bucket_seconds, change_token(), int(time.time() // 2))


@st.cache_data(ttl=2, max_entries=4, show_spinner=False)
def _live_rows(url: str, limit: int, token: tuple[str, int]) -> list[dict[str, Any]]:
    from ui.live.rows import row_payload

    table = prices()
    return [row_payload(r, table) for r in _run(lambda conn: AnalyticsRepository(conn).recent(limit))]


def live_snapshot(window_minutes: int = 15) -> dict[str, Any]:
    """What the Live page renders before its live feed connects: the newest 200 exchanges (the feed's wire
    format), the KPI tiles, spend today, the open-alerts banner and the newest event id (toasts start after it)."""
    from ui.live import server
    from ui.live.feed import TABLE_ROWS, banner_payload

    url = database_url()
    if not url:
        raise RuntimeError("no database configured: set DATABASE_URL or start the stack with `llmproxy up`")
    return {
        "path": server.LIVE_PATH,
        "live": server.serving(),
        "rows": _live_rows(url, TABLE_ROWS, change_token()),
        "kpis": live_kpis(window_minutes),
        "spend": aggregate.spend_payload(spend_today()),
        "banner": banner_payload(open_alerts()),
        "last_event_id": latest_event_id(),
    }


Spend = aggregate.Spend


@st.cache_data(ttl=10, max_entries=8, show_spinner=False)
def _spend_today(url: str, day: date, token: tuple[str, int]) -> Spend:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    rows = _run(lambda conn: AnalyticsRepository(conn).rollup("hour", start))
    return aggregate.spend_today(rows, prices(), start, _now())


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

    async def q(conn):
        record = await AnalyticsRepository(conn).exchange(request_id)
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
    from ui.bodies import reply_preview
    from ui.redact import mask_secrets

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
            reply=reply_preview(t.response_text, t.tool_calls, Body(json=t.response) if t.response is not None else None),
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


# ---------------------------------------------------------------------------------------------
# events: the alert list, the banner, and the toasts' cheap "anything new?" query


@st.cache_data(ttl=3, max_entries=16, show_spinner=False)
def _events(url: str, limit: int, unacknowledged_only: bool, rev: int, tick: int) -> pd.DataFrame:
    rows = _run(lambda conn: AlertRepository(conn).events(limit, unacknowledged_only=unacknowledged_only))
    df = pd.DataFrame(rows, columns=list(EVENT_COLUMNS))
    for col in ("at", "acknowledged_at"):
        df[col] = pd.to_datetime(df[col], utc=True)
    return df


def events(limit: int = 200, unacknowledged_only: bool = False) -> pd.DataFrame:
    """Events newest first (alerts, blocks, verdicts, experiment decisions, quarantines ...)."""
    return _events(database_url(), limit, unacknowledged_only, revision(), _tick(3))


@st.cache_data(ttl=2, max_entries=64, show_spinner=False)
def _alerts_after(url: str, last_id: int, tick: int) -> list[dict[str, Any]]:
    return _run(lambda conn: AlertRepository(conn).alerts_after(last_id, limit=20))


def alerts_after(last_id: int) -> list[dict[str, Any]]:
    """Warning and critical events with an id above ``last_id``, oldest first (at most 20)."""
    return _alerts_after(database_url(), int(last_id), _tick(2))


def latest_event_id() -> int:
    return int(_run(lambda conn: AlertRepository(conn).latest_event_id()))


@dataclass
class Banner:
    open_alerts: int  # unacknowledged warning/critical events of the last 24 hours
    critical: int
    newest: list[dict[str, Any]]  # up to three, newest first


@st.cache_data(ttl=3, max_entries=8, show_spinner=False)
def _open_alerts(url: str, rev: int, tick: int) -> list[dict[str, Any]]:
    return _run(lambda conn: AlertRepository(conn).open_alerts(24))


def open_alerts() -> list[dict[str, Any]]:
    """Unacknowledged warning/critical events of the last 24 hours, newest first."""
    return _open_alerts(database_url(), revision(), _tick(3))


def banner() -> Banner:
    rows = open_alerts()
    return Banner(open_alerts=len(rows), critical=sum(r["severity"] == "critical" for r in rows), newest=rows[:3])


# ---------------------------------------------------------------------------------------------
# blocked and redacted requests, detector hit rates, verdicts, learned attacks

ENFORCED_COLUMNS = ["time", "action", "rule", "detail", "client", "model", "status", "detections", "request_id"]


def detection_summary(det: dict[str, Any] | None) -> str:
    """``EMAIL_ADDRESS×2 · AWS_ACCESS_KEY · injection 0.93 (heuristic) · zero_width`` from flags["detections"]."""
    if not det:
        return ""
    parts = [f"{k}×{v}" if v and v > 1 else k for group in ("pii", "secrets") for k, v in sorted((det.get(group) or {}).items())]
    score = det.get("injection_score")
    if score is not None and score >= _injection_threshold():
        layer = det.get("injection_layer")
        parts.append(f"injection {score:.2f}" + (f" ({layer})" if layer else ""))
    parts += list(det.get("flags") or [])
    return " · ".join(parts)


def _injection_threshold() -> float:
    from intelligence.policy.conditions import injection_threshold

    return injection_threshold()


def enforced_row(row: dict[str, Any]) -> dict[str, Any]:
    """One blocked or redacted exchange as the page lists it."""
    policy = row.get("policy") or {}
    block = policy.get("block")
    if block:
        action, rule = "blocked", block.get("rule", "")
        detail = f"{block.get('status', '')} {block.get('code', '')}: {block.get('message', '')}".strip()
    else:
        action = "redacted"
        fired = [
            f"{f.get('policy')}/{f.get('rule')}" for f in policy.get("fired", []) if "redact" in " ".join(f.get("actions", []))
        ]
        rule = ", ".join(fired)
        n = row.get("redacted")
        detail = f"{n} string(s) redacted" if n else "redaction planned"
    return {
        "time": row["started_at"],
        "action": action,
        "rule": rule,
        "detail": detail,
        "client": row.get("client_key_fp") or row.get("client_addr"),
        "model": row.get("model"),
        "status": row.get("status"),
        "detections": detection_summary(row.get("detections")),
        "request_id": row["request_id"],
    }


@st.cache_data(ttl=5, max_entries=8, show_spinner=False)
def _enforced(url: str, hours: int, limit: int, token: tuple[str, int]) -> pd.DataFrame:
    since = _now() - timedelta(hours=hours)
    rows = _run(lambda conn: SecurityRepository(conn).enforced(since, limit))
    df = pd.DataFrame([enforced_row(r) for r in rows], columns=ENFORCED_COLUMNS)
    df["time"] = pd.to_datetime(df["time"], utc=True)
    df["status"] = pd.to_numeric(df["status"], errors="coerce").astype("float64")
    return df


def enforced_requests(hours: int = 24, limit: int = 500) -> pd.DataFrame:
    """Exchanges the policy blocked or redacted in the last ``hours`` hours, newest first."""
    return _enforced(database_url(), hours, limit, change_token())


@st.cache_data(ttl=30, max_entries=8, show_spinner=False)
def _detector_rates(url: str, hours: int, minute: int) -> pd.DataFrame:
    since = _now() - timedelta(hours=hours)
    threshold = _injection_threshold()
    rows = _run(lambda conn: SecurityRepository(conn).detector_rates(since, threshold))
    df = pd.DataFrame(rows, columns=list(DETECTOR_COLUMNS))
    df["bucket"] = pd.to_datetime(df["bucket"], utc=True)
    for col in ("pii", "secrets", "injection", "blocked"):
        df[f"{col}_rate"] = (df[col] / df["requests"].clip(lower=1)).astype("float64")
    return df


def detector_rates(hours: int = 24) -> pd.DataFrame:
    """Per hour: requests and the share in which each detector found something (and blocks)."""
    return _detector_rates(database_url(), hours, _minute())


@st.cache_data(ttl=5, max_entries=8, show_spinner=False)
def _verdicts(url: str, limit: int, rev: int, tick: int) -> pd.DataFrame:
    rows = _run(lambda conn: SecurityRepository(conn).verdicts(limit))
    df = pd.DataFrame(rows, columns=list(VERDICT_COLUMNS))
    df["at"] = pd.to_datetime(df["at"], utc=True)
    df["detectors"] = df["detectors"].map(lambda d: ", ".join(d or []))
    df["confidence"] = pd.to_numeric(df["confidence"], errors="coerce").astype("float64")
    return df


def verdicts(limit: int = 200) -> pd.DataFrame:
    """Claude's (or the verdict memory's) judgements of suspicious traffic, newest first."""
    return _verdicts(database_url(), limit, revision(), _tick(5))


ATTACK_COLUMNS = ["id", "created_at", "status", "family", "source", "added_by", "text", "disabled_at", "disabled_by"]


@st.cache_data(ttl=5, max_entries=4, show_spinner=False)
def _learned_attacks(url: str, limit: int, rev: int, tick: int) -> pd.DataFrame:
    from intelligence.attacks.store import list_attacks

    records = _run(lambda conn: list_attacks(conn, limit=limit))
    df = pd.DataFrame(
        [
            {
                "id": r.id,
                "created_at": r.created_at,
                "status": "disabled" if r.disabled_at else "active",
                "family": r.family,
                "source": r.source,
                "added_by": r.added_by,
                "text": r.text if len(r.text) <= 200 else r.text[:199] + "…",
                "disabled_at": r.disabled_at,
                "disabled_by": r.disabled_by,
            }
            for r in records
        ],
        columns=ATTACK_COLUMNS,
    )
    for col in ("created_at", "disabled_at"):
        df[col] = pd.to_datetime(df[col], utc=True)
    return df


def learned_attacks(limit: int = 500) -> pd.DataFrame:
    """The injection detector's learned attack memory (stored redacted), newest first."""
    return _learned_attacks(database_url(), limit, revision(), _tick(5))


# ---------------------------------------------------------------------------------------------
# gateway keys, audit chain, policies

KEY_COLUMNS = [
    "id",
    "name",
    "prefix",
    "status",
    "models",
    "providers",
    "created_at",
    "created_by",
    "expires_at",
    "quarantined_at",
    "quarantine_reason",
    "revoked_at",
    "revoked_by",
]


@st.cache_data(ttl=5, max_entries=4, show_spinner=False)
def _keys(url: str, rev: int, tick: int) -> pd.DataFrame:
    from intelligence.keys.store import list_keys

    now = _now()
    records = _run(list_keys)
    df = pd.DataFrame(
        [
            {
                **r.to_public_dict(now),
                "models": ", ".join(r.models),
                "providers": ", ".join(r.providers),
                "created_at": r.created_at,
                "expires_at": r.expires_at,
                "quarantined_at": r.quarantined_at,
                "revoked_at": r.revoked_at,
            }
            for r in records
        ],
        columns=KEY_COLUMNS,
    )
    for col in ("created_at", "expires_at", "quarantined_at", "revoked_at"):
        df[col] = pd.to_datetime(df[col], utc=True)
    return df.iloc[::-1].reset_index(drop=True)  # newest first


def gateway_keys() -> pd.DataFrame:
    """Every gateway key (never the key or its hash), newest first, with its status now."""
    return _keys(database_url(), revision(), _tick(5))


@dataclass
class AuditStatus:
    ok: bool
    checked: int
    head_id: int | None
    reason: str | None
    first_broken_id: int | None
    detail: str | None
    recent: pd.DataFrame  # id, ts, actor, kind, subject


@st.cache_data(ttl=60, max_entries=4, show_spinner=False)
def _audit_status(url: str, rev: int, minute: int) -> AuditStatus:
    from intelligence.audit import AuditLog

    async def q(conn):
        return await AuditLog().verify(conn), await SecurityRepository(conn).audit_recent(50)

    result, recent = _run(q)
    df = pd.DataFrame(recent, columns=list(AUDIT_COLUMNS))
    df["ts"] = pd.to_datetime(df["ts"], utc=True)
    return AuditStatus(
        ok=result.ok,
        checked=result.checked,
        head_id=result.head_id,
        reason=result.reason,
        first_broken_id=result.first_broken_id,
        detail=result.detail,
        recent=df,
    )


def audit_status() -> AuditStatus:
    """The whole hash chain verified from genesis (re-checked at most once a minute) and its newest entries."""
    return _audit_status(database_url(), revision(), _minute())


@st.cache_data(ttl=5, max_entries=4, show_spinner=False)
def _policies(url: str, rev: int, tick: int) -> list[dict[str, Any]]:
    from intelligence.policy.store import list_policies

    return [p.to_public_dict(with_source=True) for p in _run(list_policies)]


def policies() -> list[dict[str, Any]]:
    """Database policies (name, enabled, version, sha256, source, who changed them last)."""
    return _policies(database_url(), revision(), _tick(5))


# ---------------------------------------------------------------------------------------------
# enhancements and experiments


@dataclass
class Arm:
    name: str
    n: int | None
    successes: int | None
    rate: float | None
    ci_low: float | None
    ci_high: float | None


@dataclass
class ExperimentStats:
    arms: list[Arm] = field(default_factory=list)
    effect: float | None = None
    effect_ci: tuple[float, float] | None = None
    p_value: float | None = None
    probability: float | None = None  # P(variant better than control)
    decision: str | None = None
    other: dict[str, Any] = field(default_factory=dict)  # any further measures (error/cost deltas ...)


def _num(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _pair(value: Any) -> tuple[float, float] | None:
    if isinstance(value, dict):
        value = [value.get("low", value.get("lo")), value.get("high", value.get("hi"))]
    if isinstance(value, (list, tuple)) and len(value) == 2:
        lo, hi = _num(value[0]), _num(value[1])
        if lo is not None and hi is not None:
            return lo, hi
    return None


def parse_stats(stats: dict[str, Any] | None) -> ExperimentStats:
    """Read the evaluator's ``experiments.stats`` document tolerantly (arms as a mapping or a list)."""
    stats = dict(stats or {})
    arms_doc = stats.pop("arms", {}) or {}
    items = arms_doc.items() if isinstance(arms_doc, dict) else ((a.get("arm") or a.get("name"), a) for a in arms_doc)
    arms = []
    for name, a in items:
        ci = _pair(a.get("ci") or a.get("rate_ci") or [a.get("ci_low"), a.get("ci_high")])
        n, s = _num(a.get("n")), _num(a.get("successes"))
        rate = _num(a.get("rate"))
        if rate is None and n:
            rate = (s or 0) / n
        arms.append(
            Arm(
                name=str(name),
                n=int(n) if n is not None else None,
                successes=int(s) if s is not None else None,
                rate=rate,
                ci_low=ci[0] if ci else None,
                ci_high=ci[1] if ci else None,
            )
        )
    effect = stats.pop("effect", None)
    effect_ci = stats.pop("effect_ci", None) or stats.pop("ci", None)
    if isinstance(effect, dict):  # {"value"/"diff": x, "ci": [lo, hi]}
        effect_ci = effect_ci or effect.get("ci")
        effect = effect.get("value", effect.get("diff"))
    p_value = stats.pop("p_value", None)
    probability = stats.pop("probability", None) or stats.pop("prob_better", None)
    decision = stats.pop("decision", None)
    return ExperimentStats(
        arms=arms,
        effect=_num(effect),
        effect_ci=_pair(effect_ci),
        p_value=_num(p_value),
        probability=_num(probability),
        decision=str(decision) if decision is not None else None,
        other=stats,
    )


@st.cache_data(ttl=5, max_entries=8, show_spinner=False)
def _enhancements(url: str, status: str | None, rev: int, tick: int) -> pd.DataFrame:
    rows = _run(lambda conn: ExperimentRepository(conn).enhancements(status))
    df = pd.DataFrame(rows, columns=list(ENHANCEMENT_COLUMNS))
    df["created_at"] = pd.to_datetime(df["created_at"], utc=True)
    return df


def enhancements(status: str | None = None) -> pd.DataFrame:
    """Enhancements (newest first) with Claude's rationale; ``status`` filters (candidate, active ...)."""
    return _enhancements(database_url(), status, revision(), _tick(5))


@dataclass
class ExperimentView:
    id: int
    enhancement_id: int
    pattern_id: int | None
    pattern: str | None
    kind: str
    rationale: str
    spec: dict[str, Any]
    status: str
    control_weight: float
    assign_by: str
    alpha: float
    min_effect: float
    decision_reason: str
    created_by: str
    started_at: datetime
    updated_at: datetime
    decided_at: datetime | None
    stats: ExperimentStats
    exposures: int  # exchanges recorded with this experiment in flags["enhancement"]


@st.cache_data(ttl=5, max_entries=8, show_spinner=False)
def _experiments(url: str, rev: int, tick: int) -> list[ExperimentView]:
    rows = _run(lambda conn: ExperimentRepository(conn).experiments())
    return [ExperimentView(**{k: v for k, v in r.items() if k != "stats"}, stats=parse_stats(r["stats"])) for r in rows]


def experiments() -> list[ExperimentView]:
    """Experiments newest first with their parsed statistics."""
    return _experiments(database_url(), revision(), _tick(5))


@st.cache_data(ttl=5, max_entries=8, show_spinner=False)
def _experiment_history(url: str, experiment_id: int | None, rev: int, tick: int) -> pd.DataFrame:
    rows = _run(lambda conn: ExperimentRepository(conn).history(experiment_id))
    df = pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))
    df["at"] = pd.to_datetime(df["at"], utc=True)
    df["detail"] = df["detail"].map(lambda d: ", ".join(f"{k}={v}" for k, v in (d or {}).items()))
    return df


def experiment_history(experiment_id: int | None = None) -> pd.DataFrame:
    """What happened to one experiment (or all), newest first."""
    return _experiment_history(database_url(), experiment_id, revision(), _tick(5))


@dataclass
class Effectiveness:
    """One enhancement's effectiveness (intelligence/enhance/effectiveness.py) shaped for the page."""

    doc: dict[str, Any]  # the whole result, as returned
    series: pd.DataFrame  # one row per arm and bucket: bucket (UTC), arm, n, successes, rate, ci_low, ci_high, means
    arms: pd.DataFrame  # one row per arm: totals
    deltas: pd.DataFrame  # one row per comparison and metric: baseline, treatment, change, relative


SERIES_COLUMNS = [
    "bucket",
    "arm",
    "n",
    "pending",
    "successes",
    "rate",
    "ci_low",
    "ci_high",
    "errors",
    "mean_tokens",
    "mean_cost_usd",
    "mean_latency_ms",
    "p50_latency_ms",
]
EFFECT_ARM_COLUMNS = [
    "arm",
    "n",
    "pending",
    "successes",
    "success rate",
    "CI low",
    "CI high",
    "mean tokens",
    "mean cost (USD)",
    "mean latency (ms)",
    "p50 latency (ms)",
]
DELTA_COLUMNS = ["comparison", "metric", "baseline", "treatment", "change", "relative"]
DELTA_METRICS = (
    ("success_rate", "success rate"),
    ("error_rate", "error rate"),
    ("tokens", "tokens (mean)"),
    ("cost_usd", "cost USD (mean)"),
    ("latency_ms", "latency ms (mean)"),
    ("p50_latency_ms", "latency ms (p50)"),
)


def effectiveness_frames(doc: dict[str, Any]) -> Effectiveness:
    series = pd.DataFrame(doc.get("series") or [], columns=SERIES_COLUMNS)
    series["bucket"] = pd.to_datetime(series["bucket"], utc=True)
    arms = pd.DataFrame(
        [
            [
                name,
                a["n"],
                a["pending"],
                a["successes"],
                a["rate"],
                a["ci_low"],
                a["ci_high"],
                a["mean_tokens"],
                a["mean_cost_usd"],
                a["mean_latency_ms"],
                a["p50_latency_ms"],
            ]
            for name, a in (doc.get("arms") or {}).items()
        ],
        columns=EFFECT_ARM_COLUMNS,
    )
    rows = []
    for d in (doc.get("deltas") or {}).values():
        if not d:
            continue
        for key, label in DELTA_METRICS:
            change = d.get(key)
            if change:  # None: not measurable (an arm unpriced, no latency ...)
                rows.append(
                    [
                        f"{d['treatment']} vs {d['baseline']}",
                        label,
                        change["baseline"],
                        change["treatment"],
                        change["absolute"],
                        change["relative"],
                    ]
                )
    return Effectiveness(doc=doc, series=series, arms=arms, deltas=pd.DataFrame(rows, columns=DELTA_COLUMNS))


@st.cache_data(ttl=30, max_entries=16, show_spinner=False)
def _effectiveness(url: str, enhancement_id: int, bucket: str, rev: int, tick: int) -> Effectiveness:
    from intelligence.enhance.effectiveness import enhancement_effectiveness

    return effectiveness_frames(_run(lambda conn: enhancement_effectiveness(conn, enhancement_id, bucket=bucket)))


def effectiveness(enhancement_id: int, bucket: str = "day") -> Effectiveness:
    """Success rate by arm over time with Wilson intervals, and the deltas against control (30 s cache:
    one aggregate over the enhancement's exposures)."""
    return _effectiveness(database_url(), int(enhancement_id), bucket, revision(), _tick(30))


# ---------------------------------------------------------------------------------------------
# Claude: mode, flags and the intelligence's own spend


@dataclass
class ClaudeStatus:
    mode: str | None  # local-only | anthropic | openrouter; None when the settings could not be read
    model: str | None
    summary: str
    flags: dict[str, bool]
    budget_usd: float | None = None
    error: str | None = None


def claude_status() -> ClaudeStatus:
    """Which Claude the intelligence would call (from the environment; never the key) and its feature flags."""
    try:
        from intelligence.claude import IntelligenceFlags

        info = IntelligenceFlags.from_env().describe()
        return ClaudeStatus(
            mode=info.get("mode"),
            model=info.get("model"),
            summary=str(info.get("summary") or ""),
            flags=dict(info.get("flags") or {}),
            budget_usd=info.get("daily_budget_usd"),
        )
    except Exception as exc:  # noqa: BLE001 - misconfigured: the page says so
        return ClaudeStatus(mode=None, model=None, summary="", flags={}, error=f"{type(exc).__name__}: {exc}")


@dataclass
class ClaudeSpend:
    today_usd: float
    today_calls: int
    week_usd: float
    week_calls: int
    by_purpose: pd.DataFrame  # purpose, calls, tokens, cost_usd (last 7 days)
    by_outcome: dict[str, int]  # ok, error, budget_exhausted ... (last 7 days)
    daily: pd.DataFrame  # day, calls, cost_usd (7 days, every day)


@st.cache_data(ttl=10, max_entries=4, show_spinner=False)
def _claude_spend(url: str, minute: int) -> ClaudeSpend:
    from intelligence.claude.spend import spend_summary, utc_midnight

    midnight = utc_midnight()
    week = midnight - timedelta(days=6)

    async def q(conn):
        today = await spend_summary(conn, since=midnight)
        seven = await spend_summary(conn, since=week)
        days = await ClaudeSpendRepository(conn).daily(week)
        return today, seven, days

    today, seven, days = _run(q)
    by_purpose = pd.DataFrame(
        [{"purpose": k, **v} for k, v in seven["by_purpose"].items()], columns=["purpose", "calls", "tokens", "cost_usd"]
    )
    by_purpose = by_purpose.sort_values("cost_usd", ascending=False).reset_index(drop=True)
    index = pd.DataFrame({"day": pd.date_range(week, periods=7, freq="D", tz="UTC")})
    got = pd.DataFrame(days, columns=["day", "calls", "cost_usd"])
    got["day"] = pd.to_datetime(got["day"]).dt.tz_localize("UTC") if len(got) else pd.to_datetime(got["day"], utc=True)
    daily = index.merge(got, on="day", how="left")
    daily["cost_usd"] = pd.to_numeric(daily["cost_usd"], errors="coerce").fillna(0.0)
    daily["calls"] = pd.to_numeric(daily["calls"], errors="coerce").fillna(0).astype("int64")
    return ClaudeSpend(
        today_usd=float(today["cost_usd"]),
        today_calls=int(today["calls"]),
        week_usd=float(seven["cost_usd"]),
        week_calls=int(seven["calls"]),
        by_purpose=by_purpose,
        by_outcome=dict(seven["by_outcome"]),
        daily=daily[["day", "calls", "cost_usd"]],
    )


def claude_spend() -> ClaudeSpend:
    """What the intelligence's own Claude calls cost: today (UTC), the last 7 days, by purpose (spend_summary)."""
    return _claude_spend(database_url(), _minute())

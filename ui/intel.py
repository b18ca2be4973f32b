"""Reads for the Security, Experiments and System pages and the alert banner (pages only lay out).

Views read the tables of migration 0006 (events, anomaly_verdicts, enhancements, experiments,
experiment_events, claude_calls) and the exchanges' ``flags`` directly; actions live in
:mod:`ui.actions`. Every read is fronted by ``st.cache_data`` keyed on the database URL and the
dashboard's own write revision (:func:`revision`), so a query runs at most once per TTL for all
sessions, and a session sees its own change on the very next run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import streamlit as st
from sqlalchemy import text

from ui import data

ALERT_SEVERITIES = ("warning", "critical")


# ---------------------------------------------------------------------------------------------
# write revision: actions bump it, every cached view takes it as a key part


@st.cache_resource(show_spinner=False)
def _revision_box() -> dict[str, int]:
    return {"n": 0}


def revision() -> int:
    return _revision_box()["n"]


def bump_revision() -> None:
    _revision_box()["n"] += 1


def _now() -> datetime:
    return datetime.now(UTC)


async def _rows(conn, sql: str, **params: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in (await conn.execute(text(sql), params)).mappings().all()]


# ---------------------------------------------------------------------------------------------
# events: the alert list, the banner, and the toasts' cheap "anything new?" query


EVENT_COLUMNS = ["id", "at", "severity", "kind", "title", "subject", "source", "acknowledged_at", "acknowledged_by"]


@st.cache_data(ttl=3, max_entries=16, show_spinner=False)
def _events(url: str, limit: int, unacknowledged_only: bool, rev: int, tick: int) -> pd.DataFrame:
    where = "WHERE acknowledged_at IS NULL" if unacknowledged_only else ""
    rows = data._run(
        lambda conn: _rows(
            conn, f"SELECT {', '.join(EVENT_COLUMNS)} FROM events {where} ORDER BY at DESC, id DESC LIMIT :limit", limit=limit
        )
    )
    df = pd.DataFrame(rows, columns=EVENT_COLUMNS)
    for col in ("at", "acknowledged_at"):
        df[col] = pd.to_datetime(df[col], utc=True)
    return df


def events(limit: int = 200, unacknowledged_only: bool = False) -> pd.DataFrame:
    """Events newest first (alerts, blocks, verdicts, experiment decisions, quarantines ...)."""
    return _events(data.database_url(), limit, unacknowledged_only, revision(), _tick(3))


def _tick(seconds: float) -> int:
    import time

    return int(time.time() // seconds)


@st.cache_data(ttl=2, max_entries=64, show_spinner=False)
def _alerts_after(url: str, last_id: int, tick: int) -> list[dict[str, Any]]:
    # a primary-key range scan: cheap however long the table grows
    return data._run(
        lambda conn: _rows(
            conn,
            "SELECT id, at, severity, kind, title, subject FROM events WHERE id > :last "
            "AND severity IN ('warning', 'critical') ORDER BY id LIMIT 20",
            last=last_id,
        )
    )


def alerts_after(last_id: int) -> list[dict[str, Any]]:
    """Warning and critical events with an id above ``last_id``, oldest first (at most 20)."""
    return _alerts_after(data.database_url(), int(last_id), _tick(2))


def latest_event_id() -> int:
    return int(data._run(lambda conn: _scalar(conn, "SELECT coalesce(max(id), 0) FROM events")))


async def _scalar(conn, sql: str, **params: Any) -> Any:
    return (await conn.execute(text(sql), params)).scalar_one()


@dataclass
class Banner:
    open_alerts: int  # unacknowledged warning/critical events of the last 24 hours
    critical: int
    newest: list[dict[str, Any]]  # up to three, newest first


@st.cache_data(ttl=3, max_entries=8, show_spinner=False)
def _banner(url: str, rev: int, tick: int) -> Banner:
    rows = data._run(
        lambda conn: _rows(
            conn,
            "SELECT id, at, severity, title FROM events WHERE at > now() - interval '24 hours' "
            "AND severity IN ('warning', 'critical') AND acknowledged_at IS NULL ORDER BY at DESC, id DESC LIMIT 200",
        )
    )
    return Banner(open_alerts=len(rows), critical=sum(r["severity"] == "critical" for r in rows), newest=rows[:3])


def banner() -> Banner:
    return _banner(data.database_url(), revision(), _tick(3))


# ---------------------------------------------------------------------------------------------
# blocked and redacted requests, detector hit rates

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


# served by the partial index ix_exchanges_enforced (migration 0008), whose predicate is this text
ENFORCED_WHERE = (
    "flags -> 'policy' -> 'block' IS NOT NULL OR flags -> 'redacted_strings' IS NOT NULL "
    "OR flags -> 'policy' -> 'redact' IS NOT NULL"
)


@st.cache_data(ttl=5, max_entries=8, show_spinner=False)
def _enforced(url: str, hours: int, limit: int, token: tuple[str, int]) -> pd.DataFrame:
    since = _now() - timedelta(hours=hours)
    rows = data._run(
        lambda conn: _rows(
            conn,
            "SELECT request_id, started_at, client_key_fp, client_addr, model, status, flags -> 'policy' AS policy, "
            "flags -> 'detections' AS detections, (flags ->> 'redacted_strings')::int AS redacted FROM exchanges "
            f"WHERE started_at >= :since AND ({ENFORCED_WHERE}) ORDER BY started_at DESC LIMIT :limit",
            since=since,
            limit=limit,
        )
    )
    df = pd.DataFrame([enforced_row(r) for r in rows], columns=ENFORCED_COLUMNS)
    df["time"] = pd.to_datetime(df["time"], utc=True)
    df["status"] = pd.to_numeric(df["status"], errors="coerce").astype("float64")
    return df


def enforced_requests(hours: int = 24, limit: int = 500) -> pd.DataFrame:
    """Exchanges the policy blocked or redacted in the last ``hours`` hours, newest first."""
    return _enforced(data.database_url(), hours, limit, data.change_token())


@st.cache_data(ttl=30, max_entries=8, show_spinner=False)
def _detector_rates(url: str, hours: int, minute: int) -> pd.DataFrame:
    from intelligence.policy.conditions import injection_threshold

    since = _now() - timedelta(hours=hours)
    rows = data._run(
        lambda conn: _rows(
            conn,
            "SELECT date_trunc('hour', started_at) AS bucket, count(*) AS requests, "
            "count(*) FILTER (WHERE flags -> 'detections' -> 'pii' <> '{}'::jsonb) AS pii, "
            "count(*) FILTER (WHERE flags -> 'detections' -> 'secrets' <> '{}'::jsonb) AS secrets, "
            "count(*) FILTER (WHERE (flags -> 'detections' ->> 'injection_score')::float8 >= :threshold) AS injection, "
            "count(*) FILTER (WHERE flags -> 'policy' -> 'block' IS NOT NULL) AS blocked "
            "FROM exchanges WHERE started_at >= :since GROUP BY 1 ORDER BY 1",
            since=since,
            threshold=injection_threshold(),
        )
    )
    df = pd.DataFrame(rows, columns=["bucket", "requests", "pii", "secrets", "injection", "blocked"])
    df["bucket"] = pd.to_datetime(df["bucket"], utc=True)
    for col in ("pii", "secrets", "injection", "blocked"):
        df[f"{col}_rate"] = (df[col] / df["requests"].clip(lower=1)).astype("float64")
    return df


def detector_rates(hours: int = 24) -> pd.DataFrame:
    """Per hour: requests and the share in which each detector found something (and blocks)."""
    return _detector_rates(data.database_url(), hours, data._minute())


# ---------------------------------------------------------------------------------------------
# anomaly verdicts

VERDICT_COLUMNS = [
    "id",
    "at",
    "verdict",
    "confidence",
    "status",
    "reasoning",
    "detectors",
    "client_key_fp",
    "request_id",
    "source",
    "action",
    "confirmed",
    "confirmed_by",
]


@st.cache_data(ttl=5, max_entries=8, show_spinner=False)
def _verdicts(url: str, limit: int, rev: int, tick: int) -> pd.DataFrame:
    rows = data._run(
        lambda conn: _rows(
            conn, f"SELECT {', '.join(VERDICT_COLUMNS)} FROM anomaly_verdicts ORDER BY at DESC, id DESC LIMIT :limit", limit=limit
        )
    )
    df = pd.DataFrame(rows, columns=VERDICT_COLUMNS)
    df["at"] = pd.to_datetime(df["at"], utc=True)
    df["detectors"] = df["detectors"].map(lambda d: ", ".join(d or []))
    df["confidence"] = pd.to_numeric(df["confidence"], errors="coerce").astype("float64")
    return df


def verdicts(limit: int = 200) -> pd.DataFrame:
    """Claude's (or the verdict memory's) judgements of suspicious traffic, newest first."""
    return _verdicts(data.database_url(), limit, revision(), _tick(5))


ATTACK_COLUMNS = ["id", "created_at", "status", "family", "source", "added_by", "text", "disabled_at", "disabled_by"]


@st.cache_data(ttl=5, max_entries=4, show_spinner=False)
def _learned_attacks(url: str, limit: int, rev: int, tick: int) -> pd.DataFrame:
    from intelligence.attacks.store import list_attacks

    records = data._run(lambda conn: list_attacks(conn, limit=limit))
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
    return _learned_attacks(data.database_url(), limit, revision(), _tick(5))


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
    records = data._run(list_keys)
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
    return _keys(data.database_url(), revision(), _tick(5))


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
        result = await AuditLog().verify(conn)
        recent = await _rows(conn, "SELECT id, ts, actor, kind, subject FROM audit_log ORDER BY id DESC LIMIT 50")
        return result, recent

    result, recent = data._run(q)
    df = pd.DataFrame(recent, columns=["id", "ts", "actor", "kind", "subject"])
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
    return _audit_status(data.database_url(), revision(), data._minute())


@st.cache_data(ttl=5, max_entries=4, show_spinner=False)
def _policies(url: str, rev: int, tick: int) -> list[dict[str, Any]]:
    from intelligence.policy.store import list_policies

    return [p.to_public_dict(with_source=True) for p in data._run(list_policies)]


def policies() -> list[dict[str, Any]]:
    """Database policies (name, enabled, version, sha256, source, who changed them last)."""
    return _policies(data.database_url(), revision(), _tick(5))


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


ENHANCEMENT_COLUMNS = [
    "id",
    "pattern_id",
    "pattern",
    "version",
    "kind",
    "status",
    "source",
    "rationale",
    "spec",
    "created_at",
    "claude_model",
]


@st.cache_data(ttl=5, max_entries=8, show_spinner=False)
def _enhancements(url: str, status: str | None, rev: int, tick: int) -> pd.DataFrame:
    where = "WHERE h.status = :status" if status else ""
    rows = data._run(
        lambda conn: _rows(
            conn,
            "SELECT h.id, h.pattern_id, p.label AS pattern, h.version, h.kind, h.status, h.source, h.rationale, h.spec, "
            "h.created_at, c.model AS claude_model FROM enhancements h LEFT JOIN patterns p ON p.id = h.pattern_id "
            f"LEFT JOIN claude_calls c ON c.id = h.claude_call_id {where} ORDER BY h.id DESC LIMIT 500",
            **({"status": status} if status else {}),
        )
    )
    df = pd.DataFrame(rows, columns=ENHANCEMENT_COLUMNS)
    df["created_at"] = pd.to_datetime(df["created_at"], utc=True)
    return df


def enhancements(status: str | None = None) -> pd.DataFrame:
    """Enhancements (newest first) with Claude's rationale; ``status`` filters (candidate, active ...)."""
    return _enhancements(data.database_url(), status, revision(), _tick(5))


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
    async def q(conn):
        rows = await _rows(
            conn,
            "SELECT e.id, e.enhancement_id, e.pattern_id, p.label AS pattern, h.kind, h.rationale, h.spec, e.status, "
            "e.control_weight, e.assign_by, e.alpha, e.min_effect, e.decision_reason, e.created_by, e.started_at, "
            "e.updated_at, e.decided_at, e.stats FROM experiments e JOIN enhancements h ON h.id = e.enhancement_id "
            "LEFT JOIN patterns p ON p.id = e.pattern_id ORDER BY e.id DESC LIMIT 200",
        )
        running = [r["id"] for r in rows if r["status"] in ("running", "paused")]
        exposures: dict[int, int] = {}
        if running:
            # kept per experiment by triggers on exchanges (migration 0008): counting from the request
            # log read tens of thousands of scattered rows on every run
            for r in await _rows(
                conn,
                "SELECT experiment_id AS id, n FROM experiment_exposures WHERE experiment_id = ANY(:ids) AND n > 0",
                ids=running,
            ):
                exposures[int(r["id"])] = int(r["n"])
        return rows, exposures

    rows, exposures = data._run(q)
    return [
        ExperimentView(
            **{k: v for k, v in r.items() if k != "stats"}, stats=parse_stats(r["stats"]), exposures=exposures.get(r["id"], 0)
        )
        for r in rows
    ]


def experiments() -> list[ExperimentView]:
    """Experiments newest first with their parsed statistics."""
    return _experiments(data.database_url(), revision(), _tick(5))


@st.cache_data(ttl=5, max_entries=8, show_spinner=False)
def _experiment_history(url: str, experiment_id: int | None, rev: int, tick: int) -> pd.DataFrame:
    where = "WHERE experiment_id = :id" if experiment_id is not None else ""
    rows = data._run(
        lambda conn: _rows(
            conn,
            f"SELECT experiment_id, at, action, actor, detail FROM experiment_events {where} ORDER BY at DESC, id DESC LIMIT 300",
            **({"id": experiment_id} if experiment_id is not None else {}),
        )
    )
    df = pd.DataFrame(rows, columns=["experiment_id", "at", "action", "actor", "detail"])
    df["at"] = pd.to_datetime(df["at"], utc=True)
    df["detail"] = df["detail"].map(lambda d: ", ".join(f"{k}={v}" for k, v in (d or {}).items()))
    return df


def experiment_history(experiment_id: int | None = None) -> pd.DataFrame:
    """What happened to one experiment (or all), newest first."""
    return _experiment_history(data.database_url(), experiment_id, revision(), _tick(5))


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

    return effectiveness_frames(data._run(lambda conn: enhancement_effectiveness(conn, enhancement_id, bucket=bucket)))


def effectiveness(enhancement_id: int, bucket: str = "day") -> Effectiveness:
    """Success rate by arm over time with Wilson intervals, and the deltas against control (30 s cache:
    one aggregate over the enhancement's exposures)."""
    return _effectiveness(data.database_url(), int(enhancement_id), bucket, revision(), _tick(30))


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
        days = await _rows(
            conn,
            "SELECT date_trunc('day', at AT TIME ZONE 'UTC') AS day, count(*) AS calls, "
            "sum(cost_usd) AS cost_usd FROM claude_calls WHERE at >= :week GROUP BY 1",
            week=week,
        )
        return today, seven, days

    today, seven, days = data._run(q)
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
    return _claude_spend(data.database_url(), data._minute())

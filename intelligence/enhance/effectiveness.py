"""How well one enhancement works: success rate by arm and over time, and what it costs.

An enhancement is measured over two periods:

* its experiment(s): exposures tagged ``flags.enhancement.experiment`` with one of its experiments,
  arm ``control`` (the request unchanged) or ``variant`` (the enhancement applied);
* after promotion, its *active* period: exposures tagged arm ``active`` with this enhancement at their
  head (``flags.enhancement.enhancement``) or stacked under another (``also_active``), from the first
  promotion on (or from the enhancement's creation when it was made active without an experiment).

"Success", "pending" and the means are exactly those of :mod:`intelligence.enhance.outcomes` (the
same SQL fragment, :func:`~intelligence.enhance.outcomes.exposures_sql`, and the same pricing per
model, API and day). Per arm there are totals and a time series by day or hour, each with the
success rate and its Wilson interval; then deltas of the variant (and the active period) against
control: the success-rate difference with Newcombe's hybrid score interval (built from the two
Wilson intervals, fixed-n and for display; the evaluator's always-valid figures are in
``experiments.stats``), tokens, cost and latency, absolute and relative.

Active against control is a before/after comparison, not a randomised one: traffic can drift
between the experiment and the active period, so read it as monitoring, not as proof.

Two statements: the enhancement with its experiments, then one aggregate over the exposures with
grouping sets -- fine groups (experiment, arm, bucket, model, API, day) for counts and costs, and
(arm, bucket) and (arm) groups for the median latency, which cannot be added up from finer groups.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from intelligence.pricing import PriceTable, load_prices

from .outcomes import DEFAULT_PENDING_GRACE_S, EXPOSURE_AGGREGATES, NEGATIVE_SCORE, ArmTotals, exposures_sql
from .stats import wilson_interval

Bucket = Literal["day", "hour"]
BUCKETS: tuple[str, ...] = ("day", "hour")
ARMS = ("control", "variant", "active")

_META_SQL = text("""
SELECT h.id, h.status, h.kind, h.pattern_id, h.created_at,
       x.id AS experiment_id, x.status AS experiment_status, x.started_at, x.decided_at, x.alpha
FROM enhancements h
LEFT JOIN experiments x ON x.enhancement_id = h.id
WHERE h.id = :enhancement
ORDER BY x.id
""")

_EXPERIMENT_ARMS = (
    "e.flags ? 'enhancement' "
    "AND (e.flags -> 'enhancement' ->> 'experiment')::bigint = ANY(CAST(:experiments AS bigint[])) "
    "AND e.flags -> 'enhancement' ->> 'arm' IN ('control', 'variant')"
)
_ACTIVE_ARM = (
    "e.flags ? 'enhancement' AND e.started_at >= :active_from "
    "AND e.flags -> 'enhancement' ->> 'arm' = 'active' "
    "AND ((e.flags -> 'enhancement' ->> 'enhancement')::bigint = :enhancement "
    "OR e.flags -> 'enhancement' -> 'also_active' @> to_jsonb(CAST(:enhancement AS bigint)))"
)


def _exposures_query(*, active: bool, since: bool) -> Any:
    extra = (
        "\n           (e.flags -> 'enhancement' ->> 'experiment')::bigint AS experiment,"
        "\n           date_trunc(:bucket, e.started_at AT TIME ZONE 'UTC') AS bucket,"
    )
    bound = " AND e.started_at >= :since" if since else ""
    # two disjoint branches (arms control/variant vs active), each served by its own index: the
    # experiment expression index, and the start-time index from the promotion on
    body = exposures_sql(_EXPERIMENT_ARMS + bound, extra_columns=extra)
    if active:
        body += "\n    UNION ALL" + exposures_sql(_ACTIVE_ARM + bound, extra_columns=extra)
    # level 0: a fine group (counts, sums, costs); 2: one arm in one bucket; 3: one arm (medians only)
    return text(f"""
WITH x AS ({body}
)
SELECT experiment, arm, bucket, model, api, day, GROUPING(model, bucket) AS level,{EXPOSURE_AGGREGATES},
       percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) AS p50_latency_ms
FROM x
GROUP BY GROUPING SETS ((experiment, arm, bucket, model, api, day), (arm, bucket), (arm))
""")


_QUERIES = {(a, s): _exposures_query(active=a, since=s) for a in (False, True) for s in (False, True)}


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # the buckets are truncated UTC wall-clock times
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


def _num(value: Any) -> float | None:
    return None if value is None else float(value)


def _summary(t: ArmTotals, p50: float | None, alpha: float) -> dict[str, Any]:
    o = t.outcome()
    lo, hi = wilson_interval(o.successes, o.n, alpha) if o.n else (None, None)
    return {
        "n": o.n,
        "pending": t.pending,
        "successes": o.successes,
        "rate": o.rate,
        "ci_low": lo,
        "ci_high": hi,
        "errors": o.errors,
        "error_rate": o.error_rate,
        "mean_tokens": o.mean_tokens,
        "mean_cost_usd": o.mean_cost_usd,
        "mean_latency_ms": o.mean_latency_ms,
        "p50_latency_ms": p50,
    }


def _change(baseline: float | None, treatment: float | None) -> dict[str, float | None] | None:
    if baseline is None or treatment is None:
        return None
    return {
        "baseline": baseline,
        "treatment": treatment,
        "absolute": treatment - baseline,
        "relative": (treatment - baseline) / baseline if baseline else None,
    }


def newcombe_interval(s_b: int, n_b: int, s_t: int, n_t: int, alpha: float = 0.05) -> tuple[float, float]:
    """Newcombe's hybrid score interval (1998, method 10) for p_t - p_b, from the two Wilson intervals."""
    p_b, p_t = s_b / n_b, s_t / n_t
    l_b, u_b = wilson_interval(s_b, n_b, alpha)
    l_t, u_t = wilson_interval(s_t, n_t, alpha)
    d = p_t - p_b
    return (
        max(-1.0, d - math.sqrt((p_t - l_t) ** 2 + (u_b - p_b) ** 2)),
        min(1.0, d + math.sqrt((u_t - p_t) ** 2 + (p_b - l_b) ** 2)),
    )


def _deltas(arms: Mapping[str, dict[str, Any]], baseline: str, treatment: str, alpha: float) -> dict[str, Any] | None:
    b, t = arms.get(baseline), arms.get(treatment)
    if not b or not t or not b["n"] or not t["n"]:
        return None
    rate: dict[str, Any] | None = _change(b["rate"], t["rate"])
    assert rate is not None  # both arms have n > 0
    rate["ci"] = list(newcombe_interval(b["successes"], b["n"], t["successes"], t["n"], alpha))
    return {
        "baseline": baseline,
        "treatment": treatment,
        "success_rate": rate,
        "error_rate": _change(b["error_rate"], t["error_rate"]),
        "tokens": _change(b["mean_tokens"], t["mean_tokens"]),
        "cost_usd": _change(b["mean_cost_usd"], t["mean_cost_usd"]),  # None unless both arms are fully priced
        "latency_ms": _change(b["mean_latency_ms"], t["mean_latency_ms"]),
        "p50_latency_ms": _change(b["p50_latency_ms"], t["p50_latency_ms"]),
    }


@dataclass
class _Scope:
    """Which exposures belong to the enhancement."""

    experiments: list[dict[str, Any]]
    active_from: datetime | None  # None: never active, so no active period
    alpha: float


def _scope(rows: Sequence[Mapping[Any, Any]]) -> _Scope:
    head = rows[0]
    experiments = [
        {
            "id": int(r["experiment_id"]),
            "status": r["experiment_status"],
            "started_at": r["started_at"],
            "decided_at": r["decided_at"],
        }
        for r in rows
        if r["experiment_id"] is not None
    ]
    promoted = [e["decided_at"] for e in experiments if e["status"] == "promoted" and e["decided_at"] is not None]
    if promoted:
        active_from = min(promoted)
    elif head["status"] in ("active", "retired"):
        active_from = head["created_at"]  # made active without an experiment
    else:
        active_from = None
    alphas = [float(r["alpha"]) for r in rows if r["alpha"] is not None]
    return _Scope(experiments=experiments, active_from=active_from, alpha=alphas[-1] if alphas else 0.05)


async def enhancement_effectiveness(
    conn: AsyncConnection,
    enhancement_id: int,
    *,
    bucket: Bucket = "day",
    since: datetime | None = None,
    prices: PriceTable | None = None,
    pending_grace_s: float = DEFAULT_PENDING_GRACE_S,
) -> dict[str, Any]:
    """Success rate (Wilson CI) per arm, in total and per ``bucket``, and the variant's (and the active
    period's) deltas against control; see the module docstring. Unknown enhancement: LookupError.

    Intervals use the alpha of the enhancement's latest experiment (0.05 without one); times are ISO
    8601 strings in UTC so the result can be stored or sent as JSON as it is.
    """
    if bucket not in BUCKETS:
        raise ValueError(f"bucket must be one of {BUCKETS}, not {bucket!r}")
    meta = (await conn.execute(_META_SQL, {"enhancement": enhancement_id})).mappings().all()
    if not meta:
        raise LookupError(f"enhancement {enhancement_id} not found")
    scope = _scope(meta)
    prices = prices or load_prices()
    params: dict[str, Any] = {
        "enhancement": enhancement_id,
        "experiments": [e["id"] for e in scope.experiments],
        "bucket": bucket,
        "grace": float(pending_grace_s),
        "negative": NEGATIVE_SCORE,
    }
    if scope.active_from is not None:
        params["active_from"] = scope.active_from
    if since is not None:
        params["since"] = since
    query = _QUERIES[(scope.active_from is not None, since is not None)]
    rows = (await conn.execute(query, params)).mappings().all()

    by_arm: dict[str, ArmTotals] = {}
    by_bucket: dict[tuple[str, datetime], ArmTotals] = {}
    by_experiment: dict[tuple[int, str], ArmTotals] = {}
    p50_arm: dict[str, float | None] = {}
    p50_bucket: dict[tuple[str, datetime], float | None] = {}
    for r in rows:
        arm = r["arm"]
        if r["level"] == 3:
            p50_arm[arm] = _num(r["p50_latency_ms"])
        elif r["level"] == 2:
            p50_bucket[(arm, r["bucket"])] = _num(r["p50_latency_ms"])
        else:
            by_arm.setdefault(arm, ArmTotals()).add(r, prices)
            by_bucket.setdefault((arm, r["bucket"]), ArmTotals()).add(r, prices)
            if r["experiment"] is not None:
                by_experiment.setdefault((int(r["experiment"]), arm), ArmTotals()).add(r, prices)

    alpha = scope.alpha
    order = {a: i for i, a in enumerate(ARMS)}
    arms = {arm: _summary(t, p50_arm.get(arm), alpha) for arm, t in sorted(by_arm.items(), key=lambda kv: order[kv[0]])}
    series = [
        {"arm": arm, "bucket": _iso(at), **_summary(t, p50_bucket.get((arm, at)), alpha)}
        for (arm, at), t in sorted(by_bucket.items(), key=lambda kv: (kv[0][1], order[kv[0][0]]))
    ]
    experiments = [
        {
            "id": e["id"],
            "status": e["status"],
            "started_at": _iso(e["started_at"]),
            "decided_at": _iso(e["decided_at"]),
            "arms": {arm: _summary(t, None, alpha) for (eid, arm), t in sorted(by_experiment.items()) if eid == e["id"]},
        }
        for e in scope.experiments
    ]
    head = meta[0]
    return {
        "enhancement_id": enhancement_id,
        "status": head["status"],
        "kind": head["kind"],
        "pattern_id": head["pattern_id"],
        "bucket": bucket,
        "since": _iso(since),
        "alpha": alpha,
        "active_from": _iso(scope.active_from),
        "experiments": experiments,
        "arms": arms,
        "series": series,
        "deltas": {
            "variant_vs_control": _deltas(arms, "control", "variant", alpha),
            "active_vs_control": _deltas(arms, "control", "active", alpha),
        },
    }


__all__ = ["BUCKETS", "Bucket", "enhancement_effectiveness", "newcombe_interval"]

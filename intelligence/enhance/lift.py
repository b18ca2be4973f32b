"""What the promoted enhancements achieved: relative lift with confidence intervals, per pattern and overall.

The loop cannot promise a lift of any size (that depends on whether Claude's proposals work); what
it promises is error control -- a promotion is a false decision with probability <= alpha under the
stated assumptions (docs/experiments.md) -- and a measurement of every promoted change:

* per promoted enhancement: the relative lift of the success rate, (p_variant - p_control) /
  p_control, from its experiment at the decision, with the always-valid interval the evaluator
  computed (``experiments.stats.relative_lift``: Fieller's interval with the always-valid critical
  value of the decision test, on the cluster-robust variances; its upper end is None while the
  control rate could still be 0);
* per pattern (and scope): the enhancement active now;
* overall: the requests-weighted mean of the active ones' lifts, each weighted by its pattern's
  requests over the last ``weight_days`` (``exchange_embeddings``; a global enhancement counts the
  pattern's whole traffic, a scoped one only its key's), with a normal-approximation interval from
  the same variances (descriptive: the experiments are independent, but the estimates were taken
  at data-dependent stopping times, which biases them upward -- the per-enhancement intervals are
  the ones with a guarantee).

A target such as "+30% success" is then *checked*, not promised: met when the overall interval lies
above it, missed when below, undetermined otherwise.

Experiments decided before the unit-level statistics (no ``relative_lift`` in their stats) get the
lift from their per-arm counts with a per-request (binomial) variance, marked ``legacy``.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from statistics import NormalDist
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from .stats import relative_lift_interval

DEFAULT_TARGET = 0.30
_PROMOTED_SQL = text("""
SELECT x.id AS experiment_id, x.enhancement_id, x.pattern_id, x.scope, x.stats, x.decided_at, x.alpha,
       h.status AS enhancement_status, h.kind, h.version, p.label AS pattern
FROM experiments x
JOIN enhancements h ON h.id = x.enhancement_id
LEFT JOIN patterns p ON p.id = x.pattern_id
WHERE x.status = 'promoted'
ORDER BY x.decided_at DESC NULLS LAST, x.id DESC
LIMIT :limit
""")
_WEIGHTS_SQL = text("""
SELECT m.pattern_id, (SELECT k.id FROM gateway_keys k WHERE k.id = m.client_key_fp) AS scope, count(*) AS n
FROM exchange_embeddings m
WHERE m.pattern_id = ANY(:ids) AND m.created_at >= :since
GROUP BY 1, 2
""")


def _num(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def experiment_lift(stats: dict[str, Any] | None, alpha: float = 0.05) -> dict[str, Any]:
    """The relative lift of one experiment's stats: estimate, ci, variance, method; {} without data."""
    stats = stats or {}
    arms = stats.get("arms") or {}
    c, v = arms.get("control") or {}, arms.get("variant") or {}
    n_c, n_v = int(c.get("n") or 0), int(v.get("n") or 0)
    if not n_c or not n_v:
        return {}
    out: dict[str, Any] = {
        "control_rate": _num(c.get("rate")),
        "variant_rate": _num(v.get("rate")),
        "exposures": n_c + n_v,
        "units": int(c.get("units") or 0) + int(v.get("units") or 0),
    }
    rel = stats.get("relative_lift") or {}
    estimate, variance, ci = _num(rel.get("estimate")), _num(rel.get("variance")), rel.get("ci")
    if estimate is not None and variance is not None and isinstance(ci, list) and len(ci) == 2:
        bounds = [float(ci[0]), None if ci[1] is None else float(ci[1])]
        return {**out, "lift": estimate, "ci": bounds, "variance": variance, "method": "unit"}
    pc, pv = out["control_rate"], out["variant_rate"]
    if pc is None or pv is None or pc <= 0:
        return {}
    var_c, var_v = (_binomial_var(pc, n_c), _binomial_var(pv, n_v))
    rel = relative_lift_interval(pc, var_c, n_c, pv, var_v, n_v, alpha)
    return {**out, "lift": rel["estimate"], "ci": rel["ci"], "variance": rel["variance"], "method": "legacy"}


def _binomial_var(p: float, n: int) -> float:
    shrunk = (p * n + 0.5) / (n + 1)
    return shrunk * (1 - shrunk) / n


async def lift_report(
    conn: AsyncConnection,
    *,
    weight_days: float = 7.0,
    target: float = DEFAULT_TARGET,
    now: datetime | None = None,
    limit: int = 500,
) -> dict[str, Any]:
    """Promoted enhancements with their lifts, the per-pattern view and the requests-weighted overall
    lift (JSON-ready). Two statements."""
    now = now or datetime.now(UTC)
    rows = (await conn.execute(_PROMOTED_SQL, {"limit": max(1, min(int(limit), 10_000))})).mappings().all()
    pattern_ids = sorted({int(r["pattern_id"]) for r in rows if r["pattern_id"] is not None})
    requests: dict[tuple[int, str | None], int] = {}
    if pattern_ids:
        for w in (await conn.execute(_WEIGHTS_SQL, {"ids": pattern_ids, "since": now - timedelta(days=weight_days)})).mappings():
            requests[(int(w["pattern_id"]), w["scope"])] = int(w["n"])

    items: list[dict[str, Any]] = []
    for r in rows:
        lift = experiment_lift(r["stats"], float(r["alpha"] or 0.05))
        pid, scope = r["pattern_id"], r["scope"]
        if pid is None:
            weight = 0
        elif scope is None:
            weight = sum(n for (p, _), n in requests.items() if p == pid)
        else:
            weight = requests.get((int(pid), scope), 0)
        items.append(
            {
                "experiment_id": int(r["experiment_id"]),
                "enhancement_id": int(r["enhancement_id"]),
                "pattern_id": pid,
                "pattern": r["pattern"],
                "scope": scope,
                "kind": r["kind"],
                "version": r["version"],
                "enhancement_status": r["enhancement_status"],
                "active": r["enhancement_status"] == "active",
                "decided_at": r["decided_at"].isoformat() if r["decided_at"] is not None else None,
                "requests": weight,
                **({"lift": None, "ci": None, "variance": None, "method": None} | lift),
            }
        )
    per_pattern: dict[tuple[Any, Any], dict[str, Any]] = {}
    for item in items:  # newest first: the first active one per (pattern, scope) is the current one
        key = (item["pattern_id"], item["scope"])
        if item["active"] and key not in per_pattern:
            per_pattern[key] = item
    current = list(per_pattern.values())
    return {
        "promoted": items,
        "per_pattern": current,
        "overall": overall_lift(current, target=target),
        "weight_days": weight_days,
        "computed_at": now.isoformat(),
    }


def overall_lift(items: list[dict[str, Any]], *, target: float = DEFAULT_TARGET, alpha: float = 0.05) -> dict[str, Any]:
    """Requests-weighted mean of the items' lifts with a normal-approximation (1 - alpha) interval;
    items without traffic in the window fall back to their experiment's exposures as weight."""
    usable = [i for i in items if i.get("lift") is not None and i.get("variance") is not None]
    weights = [float(i.get("requests") or 0) for i in usable]
    basis = "requests"
    if usable and sum(weights) <= 0:
        weights = [float(i.get("exposures") or 0) for i in usable]
        basis = "exposures"
    total = sum(weights)
    if not usable or total <= 0:
        return {"lift": None, "ci": None, "enhancements": 0, "requests": 0, "target": target, "target_status": "no data yet"}
    lift = sum(w * i["lift"] for w, i in zip(weights, usable)) / total
    se = math.sqrt(sum(w * w * i["variance"] for w, i in zip(weights, usable))) / total
    z = NormalDist().inv_cdf(1 - alpha / 2)
    lo, hi = lift - z * se, lift + z * se
    status = "met" if lo >= target else "missed" if hi < target else "undetermined"
    return {
        "lift": lift,
        "ci": [lo, hi],
        "enhancements": len(usable),
        "requests": int(total),
        "weights": basis,
        "target": target,
        "target_status": status,
    }


__all__ = ["DEFAULT_TARGET", "experiment_lift", "lift_report", "overall_lift"]

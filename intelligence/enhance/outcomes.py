"""Per-arm outcomes of an experiment, from the pattern-memory success signals.

An *exposure* is an exchange the sidecar tagged ``flags.enhancement.experiment = <id>`` (served by
the expression index ``ix_exchanges_experiment``). It is a *success* when

* the pattern worker processed it (an ``exchange_embeddings`` row exists), so its signals are in;
* none of its ``outcome_signals`` of kind status / finish / tool_args / retry failed; and
* it got no negative feedback (thumbs down, or a score below 0.5).

An exposure the worker has not processed yet is *pending* for ``pending_grace_s`` after it started
and left out of both counts: the worker lags by seconds, and counting those as failures would only
dilute both arms. Past the grace period an unprocessed exposure counts as a failure (the worker
skipped it), as the definition above says.

Besides successes, per arm: errors (HTTP status >= 400 or a recorded error), mean total tokens,
mean cost in USD when every exposure's model is priced (intelligence/prices.yaml), mean latency
(these three over every exposure, pending ones included: they do not depend on the worker).

**Units.** The statistics analyse the unit the sidecar randomised (intelligence/enhance/stats.py):
the session (``exchanges.session_id``, the id the sidecar assigned the arm by) or, for an experiment
with ``assign_by = 'client'``, the client (``client_key_fp``: the gateway key id or the credential's
fingerprint, else ``client_addr``) -- the same fallbacks as :func:`intelligence.enhance.live.assign_arm`.
Per arm the result carries the unit moments (:class:`~intelligence.enhance.stats.Moments`) of
successes, errors, cost and tokens over the counted (not pending) exposures.

One SQL statement per experiment, grouped by arm, unit, model, API and day (the price can change by
day); the second level (units to arms) is summed here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from intelligence.pricing import PriceTable, load_prices

from .stats import ArmOutcome, Moments

FAILING_SIGNAL_KINDS = ("status", "finish", "tool_args", "retry")
NEGATIVE_SCORE = 0.5
DEFAULT_PENDING_GRACE_S = 600.0
_FAILING_KINDS_SQL = ", ".join(f"'{k}'" for k in FAILING_SIGNAL_KINDS)


def failed_sql(request_id: str) -> str:
    """True when the exchange ``request_id`` (an SQL expression) has a failing outcome signal."""
    return (
        f"EXISTS (SELECT 1 FROM outcome_signals s WHERE s.request_id = {request_id} AND NOT s.ok "
        f"AND s.kind IN ({_FAILING_KINDS_SQL}))"
    )


def negative_sql(request_id: str, negative: str = ":negative") -> str:
    """True when the exchange got negative feedback (thumbs down, or a score under ``negative``)."""
    return f"EXISTS (SELECT 1 FROM feedback f WHERE f.request_id = {request_id} AND (f.thumbs = 'down' OR f.score < {negative}))"


def exposures_sql(where: str, *, extra_columns: str = "") -> str:
    """One row per exposure matching ``where`` (a condition on ``exchanges e``) with the pieces of the
    success definition above: ``processed``, ``recent`` (still in the grace period), ``failed`` and
    ``negative``; binds ``:grace`` and ``:negative``. Shared by every view of experiment outcomes so
    "success" means one thing (intelligence/enhance/effectiveness.py uses it too)."""
    return f"""
    SELECT e.flags -> 'enhancement' ->> 'arm' AS arm, e.model, e.api, (e.started_at AT TIME ZONE 'UTC')::date AS day,
           e.status, e.error, e.total_tokens, e.input_tokens, e.output_tokens, e.cached_tokens, e.reasoning_tokens,
           e.latency_ms,{extra_columns}
           m.request_id IS NOT NULL AS processed,
           e.started_at > now() - make_interval(secs => :grace) AS recent,
           {failed_sql("e.request_id")} AS failed,
           {negative_sql("e.request_id")} AS negative
    FROM exchanges e
    LEFT JOIN exchange_embeddings m ON m.request_id = e.request_id
    WHERE {where}"""


# per group of exposures (rows of exposures_sql): the counts and sums ArmTotals.add reads
EXPOSURE_AGGREGATES = """
       count(*) FILTER (WHERE NOT (recent AND NOT processed)) AS n,
       count(*) FILTER (WHERE recent AND NOT processed) AS pending,
       count(*) FILTER (WHERE processed AND NOT failed AND NOT negative) AS successes,
       count(*) FILTER (WHERE NOT (recent AND NOT processed) AND (status >= 400 OR error IS NOT NULL)) AS errors,
       count(total_tokens) AS token_rows, coalesce(sum(total_tokens), 0) AS total_tokens,
       coalesce(sum(input_tokens), 0) AS input_tokens, coalesce(sum(output_tokens), 0) AS output_tokens,
       coalesce(sum(cached_tokens), 0) AS cached_tokens, coalesce(sum(reasoning_tokens), 0) AS reasoning_tokens,
       count(latency_ms) AS latency_rows, coalesce(sum(latency_ms), 0) AS latency_sum"""

_ONE_EXPERIMENT = "e.flags ? 'enhancement' AND (e.flags -> 'enhancement' ->> 'experiment')::bigint = :experiment"
# the unit the sidecar assigned the arm by (intelligence/enhance/live.py assign_arm), else the request itself
UNIT_SQL = (
    "coalesce(CASE WHEN (SELECT assign_by FROM experiments WHERE id = :experiment) = 'client' "
    "THEN coalesce(e.client_key_fp, e.client_addr, e.session_id) "
    "ELSE coalesce(e.session_id, e.client_key_fp, e.client_addr) END, e.request_id)"
)
_COUNTED = "NOT (recent AND NOT processed)"
_OUTCOMES_SQL = text(f"""
WITH x AS ({exposures_sql(_ONE_EXPERIMENT, extra_columns=f" {UNIT_SQL} AS unit,")}
)
SELECT arm, unit, model, api, day,{EXPOSURE_AGGREGATES},
       coalesce(sum(total_tokens) FILTER (WHERE {_COUNTED}), 0) AS counted_total_tokens,
       coalesce(sum(input_tokens) FILTER (WHERE {_COUNTED}), 0) AS counted_input_tokens,
       coalesce(sum(output_tokens) FILTER (WHERE {_COUNTED}), 0) AS counted_output_tokens,
       coalesce(sum(cached_tokens) FILTER (WHERE {_COUNTED}), 0) AS counted_cached_tokens,
       coalesce(sum(reasoning_tokens) FILTER (WHERE {_COUNTED}), 0) AS counted_reasoning_tokens
FROM x
GROUP BY arm, unit, model, api, day
""")


@dataclass
class ArmTotals:
    """Running totals of one arm (or one arm in one time bucket) over rows of EXPOSURE_AGGREGATES
    grouped by at least model, API and day, so each group can be priced."""

    n: int = 0
    pending: int = 0
    successes: int = 0
    errors: int = 0
    token_rows: int = 0
    tokens: int = 0
    cost: float = 0.0
    cost_rows: int = 0
    priced: bool = True
    latency_rows: int = 0
    latency_sum: float = 0.0

    def add(self, r: Mapping[Any, Any], prices: PriceTable) -> None:
        """Add one aggregate row (arm, model, API and day at least) and price it."""
        self.n += r["n"]
        self.pending += r["pending"]
        self.successes += r["successes"]
        self.errors += r["errors"]
        self.token_rows += r["token_rows"]
        self.tokens += int(r["total_tokens"])
        self.latency_rows += r["latency_rows"]
        self.latency_sum += float(r["latency_sum"])
        # cost does not depend on the worker: it is averaged over every exposure, pending ones too
        self.cost_rows += r["n"] + r["pending"]
        cost = prices.cost(
            r["model"],
            r["api"],
            input_tokens=int(r["input_tokens"]),
            output_tokens=int(r["output_tokens"]),
            cached_tokens=int(r["cached_tokens"]),
            reasoning_tokens=int(r["reasoning_tokens"]),
            on=r["day"],
        )
        if cost is None:
            self.priced = False
        else:
            self.cost += cost

    def outcome(self) -> ArmOutcome:
        return ArmOutcome(
            n=self.n,
            successes=self.successes,
            errors=self.errors,
            mean_tokens=self.tokens / self.token_rows if self.token_rows else None,
            mean_cost_usd=self.cost / self.cost_rows if self.priced and self.cost_rows else None,
            mean_latency_ms=self.latency_sum / self.latency_rows if self.latency_rows else None,
        )


@dataclass
class _Unit:
    n: int = 0
    successes: int = 0
    errors: int = 0
    tokens: float = 0.0
    cost: float = 0.0


@dataclass(frozen=True)
class _ArmMoments:
    success: Moments
    errors: Moments
    tokens: Moments
    cost: Moments | None  # None when any exposure's model is unpriced


@dataclass
class _UnitArm:
    """The second level: one arm's units (counted exposures only)."""

    units: dict[str, _Unit] = field(default_factory=dict)
    priced: bool = True

    def add(self, r: Mapping[Any, Any], prices: PriceTable) -> None:
        u = self.units.setdefault(str(r["unit"]), _Unit())
        u.n += r["n"]
        u.successes += r["successes"]
        u.errors += r["errors"]
        u.tokens += float(r["counted_total_tokens"])
        cost = prices.cost(
            r["model"],
            r["api"],
            input_tokens=int(r["counted_input_tokens"]),
            output_tokens=int(r["counted_output_tokens"]),
            cached_tokens=int(r["counted_cached_tokens"]),
            reasoning_tokens=int(r["counted_reasoning_tokens"]),
            on=r["day"],
        )
        if cost is None:
            self.priced = False
        else:
            u.cost += cost

    def moments(self) -> _ArmMoments:
        units = [u for u in self.units.values() if u.n > 0]
        return _ArmMoments(
            success=Moments.from_units((u.successes, u.n) for u in units),
            errors=Moments.from_units((u.errors, u.n) for u in units),
            tokens=Moments.from_units((u.tokens, u.n) for u in units),
            cost=Moments.from_units((u.cost, u.n) for u in units) if self.priced else None,
        )


@dataclass(frozen=True)
class ExperimentOutcomes:
    control: ArmOutcome
    variant: ArmOutcome
    pending: dict[str, int] = field(default_factory=dict)  # exposures awaiting the pattern worker, per arm
    other: dict[str, ArmOutcome] = field(default_factory=dict)  # exposures tagged with another arm name


async def experiment_outcomes(
    conn: AsyncConnection,
    experiment_id: int,
    *,
    prices: PriceTable | None = None,
    pending_grace_s: float = DEFAULT_PENDING_GRACE_S,
) -> ExperimentOutcomes:
    prices = prices or load_prices()
    rows = (
        (
            await conn.execute(
                _OUTCOMES_SQL, {"experiment": experiment_id, "grace": float(pending_grace_s), "negative": NEGATIVE_SCORE}
            )
        )
        .mappings()
        .all()
    )
    acc: dict[str, ArmTotals] = {}
    by_unit: dict[str, _UnitArm] = {}
    for r in rows:
        arm = r["arm"] or ""
        acc.setdefault(arm, ArmTotals()).add(r, prices)
        by_unit.setdefault(arm, _UnitArm()).add(r, prices)

    def outcome(arm: str) -> ArmOutcome:
        totals = acc.get(arm, ArmTotals()).outcome()
        units = by_unit.get(arm)
        if units is None:
            return replace(totals, units=0)
        m = units.moments()
        return replace(
            totals,
            units=int(m.success.units),
            success_m=m.success,
            error_m=m.errors,
            tokens_m=m.tokens,
            cost_m=m.cost,
        )

    return ExperimentOutcomes(
        control=outcome("control"),
        variant=outcome("variant"),
        pending={arm: a.pending for arm, a in acc.items() if a.pending},
        other={arm: outcome(arm) for arm in acc if arm not in ("control", "variant")},
    )


def outcomes_dict(o: ExperimentOutcomes) -> dict[str, Any]:
    return {"pending": dict(o.pending), "other_arms": {k: v.n for k, v in o.other.items()}}


__all__ = [
    "UNIT_SQL",
    "ArmTotals",
    "EXPOSURE_AGGREGATES",
    "ExperimentOutcomes",
    "FAILING_SIGNAL_KINDS",
    "experiment_outcomes",
    "exposures_sql",
    "failed_sql",
    "negative_sql",
    "outcomes_dict",
]

"""The experiment evaluator: recomputes every running experiment's statistics and acts on them.

Each tick, per running experiment, in one transaction: lock it (so an operator's pause or rollback
in between is seen), read per-arm outcomes (intelligence/enhance/outcomes.py), compute the
always-valid statistics and decision (intelligence/enhance/stats.py), store them in
``experiments.stats``, and promote or roll back when the decision says so (actor ``evaluator``, the
figures in the reason). The always-valid p-values are running minima, carried between ticks in the
stored stats, which is what makes checking every ``interval_s`` seconds free of peeking bias.

Paused experiments keep their last figures and are not decided automatically: a pause is an
operator's hold.

Approvals (intelligence/enhance/approval.py): a roll-back is carried out at once. A promotion is
carried out at once only in automatic mode (recorded as an approval with mode ``auto``); by default
the experiment is marked awaiting an admin's approval (``manage.request_promotion``) and keeps
running -- its figures keep updating, and a guard rail can still roll it back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from intelligence.pricing import PriceTable, load_prices

from . import manage
from .approval import auto_approval
from .outcomes import DEFAULT_PENDING_GRACE_S, experiment_outcomes
from .stats import DEFAULT_TAU, METHOD_TEXT, Carry, Thresholds, decide

log = logging.getLogger(__name__)
ACTOR = "evaluator"


class ExperimentEvaluator:
    def __init__(
        self,
        engine: AsyncEngine,
        client: Any = None,
        *,
        min_samples: int = 30,
        interval_s: float = 30.0,
        tau: float = DEFAULT_TAU,
        pending_grace_s: float = DEFAULT_PENDING_GRACE_S,
        prices: PriceTable | None = None,
        auto_decide: bool = True,
        auto_approve: bool | None = None,
        method: str = "session",
    ):
        # client is unused: the contract gives every background job the same constructor shape
        self.engine = engine
        self.min_samples = min_samples
        self.interval_s = interval_s
        self.tau = tau
        self.pending_grace_s = pending_grace_s
        self.prices = prices or load_prices()
        self.auto_decide = auto_decide
        self._auto_approve = auto_approve  # None: the policy flag, read at every decision
        self.method = method

    @property
    def auto_approve(self) -> bool:
        return auto_approval() if self._auto_approve is None else self._auto_approve

    async def tick(self) -> dict[str, Any]:
        started = time.perf_counter()
        async with self.engine.connect() as conn:
            ids = [
                int(i)
                for i in (
                    await conn.execute(select(manage.EXP.c.id).where(manage.EXP.c.status == "running").order_by(manage.EXP.c.id))
                ).scalars()
            ]
        summary: dict[str, Any] = {
            "checked": 0,
            "promoted": [],
            "rolled_back": [],
            "awaiting_approval": [],
            "continuing": [],
            "errors": 0,
        }
        for experiment_id in ids:
            try:
                decision = await self.evaluate(experiment_id)
            except Exception:
                log.exception("evaluating experiment %s failed", experiment_id)
                summary["errors"] += 1
                continue
            if decision is None:
                continue
            summary["checked"] += 1
            key = {"promote": "promoted", "rollback": "rolled_back", "await": "awaiting_approval"}.get(decision, "continuing")
            summary[key].append(experiment_id)
        summary["elapsed_ms"] = round((time.perf_counter() - started) * 1000, 1)
        return summary

    async def evaluate(self, experiment_id: int) -> str | None:
        """Recompute one experiment; returns the decision acted on (``await`` when a promotion now waits
        for an admin), or None if it is no longer running."""
        async with self.engine.begin() as conn:
            exp = await manage.lock_experiment(conn, experiment_id)
            if exp.status != "running":
                return None
            thresholds = Thresholds(
                alpha=exp.alpha,
                min_effect=exp.min_effect,
                max_error_increase=exp.max_error_increase,
                max_cost_increase=exp.max_cost_increase,
                min_samples=self.min_samples,
                tau=self.tau,
                method=self.method,
            )
            previous = exp.stats or {}
            outcomes = await experiment_outcomes(conn, experiment_id, prices=self.prices, pending_grace_s=self.pending_grace_s)
            evaluation = decide(
                outcomes.control, outcomes.variant, thresholds, carry=Carry.from_stats(previous, thresholds.method)
            )
            decision = evaluation.decision if self.auto_decide else "continue"
            auto = self.auto_approve
            stats = {
                **evaluation.to_dict(),
                "decision": decision,
                "pending": outcomes.pending,
                "thresholds": {
                    "alpha": thresholds.alpha,
                    "min_effect": thresholds.min_effect,
                    "max_error_increase": thresholds.max_error_increase,
                    "max_cost_increase": thresholds.max_cost_increase,
                    "min_samples": thresholds.min_samples,
                    "tau": thresholds.tau,
                    "cost_tau": thresholds.cost_tau,
                },
                "method": METHOD_TEXT[thresholds.method],
                "approval": "auto" if auto else "admin",
                "computed_at": datetime.now(UTC).isoformat(),
            }
            await manage.save_stats(conn, experiment_id, stats)
            if decision == "promote":
                if auto:
                    await manage.request_promotion(conn, experiment_id, actor=ACTOR, reason=evaluation.reason)
                    await manage.approve_experiment(conn, experiment_id, actor=ACTOR, reason="automatic mode", mode="auto")
                else:
                    await manage.request_promotion(conn, experiment_id, actor=ACTOR, reason=evaluation.reason)
                    return "await"
            elif decision == "rollback":
                await manage.rollback_experiment(conn, experiment_id, actor=ACTOR, reason=evaluation.reason)
            return decision

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                summary = await self.tick()
                if summary["promoted"] or summary["rolled_back"]:
                    log.info("experiment evaluator: %s", summary)
            except Exception:
                log.exception("experiment evaluator tick failed")
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.interval_s)
            except TimeoutError:
                pass


__all__ = ["ACTOR", "ExperimentEvaluator"]

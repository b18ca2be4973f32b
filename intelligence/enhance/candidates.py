"""The candidate job: finds patterns that do worse than they should and asks Claude how to fix them.

Each tick:

1. **Pick patterns** (one query over the pattern memory), per *scope*: when gateway keys are in
   use, each key's traffic of a pattern is its own scope (``exchange_embeddings.client_key_fp`` is
   the key id), and everything else (passthrough traffic) is the global scope. A (pattern, scope)
   needs enough traffic in the window (``min_volume`` exchanges in ``window_hours``), and a success
   rate below the fleet's rate in the same window, or below its own rate over the ``history_days``
   before it, by ``margin``. Ones with an open experiment or an untested candidate (same scope, or
   a global one) are skipped, so the job never queues work faster than it can be tested. Worst
   first (most failed exchanges), ``max_per_tick`` of them.
2. **Gather evidence**: recent failing and succeeding exchanges of the pattern *in that scope only*
   (a key's examples never inform another key's enhancement) -- system prompt, last user turn,
   finish reason, error, which signals failed -- the failure breakdown, the tools used, and what was
   tried before in that scope. The request log is already redacted by the security policy; the
   texts pass through the secret redactor again anyway (cheap, and Claude is a third party).
3. **Ask Claude** (``client.structured``, purpose ``enhancement``, subject ``pattern:<id>``) for up
   to five candidates {kind, spec, rationale}, best first.
4. **Validate, screen and store**: every candidate is checked by
   :func:`~intelligence.enhance.spec.parse_spec` (plus: a tool description must name a tool the
   pattern's requests declare; the same change must not have been stored for the pattern before);
   invalid ones are dropped and counted. Valid ones are screened by the injection and secret
   detectors (intelligence/enhance/screening.py) and stored with
   :func:`~intelligence.enhance.manage.create_enhancement` (source ``claude``, the scope): those the
   detectors flag are stored ``rejected`` with the reason and counted in ``screened_out``.
5. With ``auto_start`` the first accepted candidate is proposed for an experiment
   (:func:`~intelligence.enhance.manage.propose_experiment`): ``pending`` until an admin approves,
   or started at once in automatic mode (intelligence/enhance/approval.py).

A local-only client (no API key) makes the job a no-op: ``{"skipped": "local-only"}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from . import manage
from .outcomes import FAILING_SIGNAL_KINDS, NEGATIVE_SCORE, failed_sql, negative_sql
from .screening import screen_spec
from .spec import CANDIDATES_SCHEMA, SpecError, ToolDescriptionSpec, parse_spec

log = logging.getLogger(__name__)

PURPOSE = "enhancement"
ACTOR = "candidate-job"
TOOL_NAME = "propose_enhancements"
TOOL_DESCRIPTION = "Propose up to five enhancements of the requests of one prompt pattern, best first."
SYSTEM_PROMPT = """You improve the success rate of a family of similar LLM requests ("a pattern") that pass \
through an LLM gateway. The gateway can change these requests before they reach the model, in four ways:
- system_prompt: add text to the system prompt (append or prepend);
- instruction_rewrite: edit the last user turn ({find, replace}) or append an instruction to it ({text});
- parameters: set temperature, max_tokens or top_p;
- tool_description: replace the description of one tool the requests declare.
A request counts as failed when the model's answer was cut off or refused (finish reason), the tool \
arguments were invalid, the client retried, the status was an error, or the user gave negative feedback.
Study the failing and succeeding examples, find what distinguishes them, and propose small, general \
changes that would turn failures into successes for the whole pattern without hurting the successes. \
Each change is A/B-tested on live traffic and rolled back automatically if it does not help, so be \
specific and conservative; never include secrets, personal data or text specific to one example. \
Order the candidates by expected impact, best first. Call the tool once."""

# one exchange's success: the definition experiments use (intelligence/enhance/outcomes.py)
_OK_SQL = f"NOT {failed_sql('m.request_id')} AND NOT {negative_sql('m.request_id', str(NEGATIVE_SCORE))}"

# the scope of an exchange: its gateway key when it was made with one, else global (NULL)
_SCOPE_SQL = "(SELECT k.id FROM gateway_keys k WHERE k.id = m.client_key_fp)"

_RATES_SQL = text(f"""
WITH m AS (
    SELECT m.pattern_id, {_SCOPE_SQL} AS scope, m.created_at >= :since AS recent, {_OK_SQL} AS ok
    FROM exchange_embeddings m
    WHERE m.created_at >= :past_since AND m.created_at < :until AND m.pattern_id IS NOT NULL
)
SELECT pattern_id, scope,
       count(*) FILTER (WHERE recent) AS n, count(*) FILTER (WHERE recent AND ok) AS ok,
       count(*) FILTER (WHERE NOT recent) AS past_n, count(*) FILTER (WHERE NOT recent AND ok) AS past_ok
FROM m GROUP BY pattern_id, scope
""")

# (pattern, scope) pairs with work in progress; a NULL scope blocks the whole pattern
_BUSY_SQL = text("""
SELECT pattern_id, scope FROM experiments WHERE status IN ('pending', 'running', 'paused') AND pattern_id IS NOT NULL
UNION
SELECT pattern_id, scope FROM enhancements WHERE status IN ('candidate', 'testing') AND pattern_id IS NOT NULL
""")
_MERGED_SQL = text("SELECT id FROM patterns WHERE redirect_to IS NOT NULL")

_EXAMPLES_SQL = text(f"""
SELECT x.request_id, x.prompt_system, x.prompt_user, x.finish_reason, x.error, x.status, x.model, x.tool_names,
       ARRAY(SELECT DISTINCT s.kind FROM outcome_signals s WHERE s.request_id = x.request_id AND NOT s.ok
             AND s.kind = ANY(:failing_kinds)) AS failed_kinds,
       {negative_sql("x.request_id", str(NEGATIVE_SCORE))} AS negative
FROM exchange_embeddings m JOIN exchanges x ON x.request_id = m.request_id
WHERE m.pattern_id = :pattern AND m.created_at >= :since
  AND {_SCOPE_SQL} IS NOT DISTINCT FROM CAST(:scope AS text)
ORDER BY m.created_at DESC
LIMIT :scan
""")


@dataclass(frozen=True)
class PatternPick:
    pattern_id: int
    label: str
    n: int
    successes: int
    past_n: int
    past_successes: int
    fleet_rate: float
    why: str
    scope: str | None = None  # the gateway key id whose traffic this is; None: global (passthrough)

    @property
    def rate(self) -> float:
        return self.successes / self.n if self.n else 0.0

    @property
    def past_rate(self) -> float | None:
        return self.past_successes / self.past_n if self.past_n else None


@dataclass
class Evidence:
    failing: list[dict[str, Any]] = field(default_factory=list)
    succeeding: list[dict[str, Any]] = field(default_factory=list)
    failure_kinds: dict[str, int] = field(default_factory=dict)
    tools: set[str] = field(default_factory=set)
    models: dict[str, int] = field(default_factory=dict)
    tried: list[dict[str, Any]] = field(default_factory=list)


class CandidateJob:
    def __init__(
        self,
        engine: AsyncEngine,
        client: Any,
        *,
        min_volume: int = 50,
        window_hours: float = 24,
        max_per_tick: int = 3,
        margin: float = 0.05,
        history_days: float = 7,
        examples: int = 5,
        max_text_chars: int = 1200,
        auto_start: bool = True,
        control_weight: float = 0.5,
        interval_s: float = 900,
        redact: bool = True,
        auto_approve: bool | None = None,
    ):
        self.engine = engine
        self.client = client
        self.min_volume = min_volume
        self.window = timedelta(hours=window_hours)
        self.history = timedelta(days=history_days)
        self.max_per_tick = max_per_tick
        self.margin = margin
        self.examples = examples
        self.max_text_chars = max_text_chars
        self.auto_start = auto_start
        self.control_weight = control_weight
        self.interval_s = interval_s
        self.redact = redact
        self.auto_approve = auto_approve  # None: the policy flag (intelligence/enhance/approval.py)

    # ------------------------------------------------------------------------------------ the tick
    async def tick(self) -> dict[str, Any]:
        if self.client is None or getattr(self.client, "local_only", False):
            return {"skipped": "local-only"}
        async with self.engine.connect() as conn:
            picks = await self.pick_patterns(conn)
        summary: dict[str, Any] = {
            "patterns": [p.pattern_id for p in picks],
            "proposed": 0,
            "stored": [],
            "invalid": 0,
            "invalid_reasons": [],
            "started": [],
            "awaiting_approval": [],
            "screened_out": 0,
            "screened_reasons": [],
            "claude_failures": 0,
        }
        for pick in picks:
            try:
                await self._improve(pick, summary)
            except Exception:
                log.exception("candidate job: pattern %s failed", pick.pattern_id)
                summary["claude_failures"] += 1
        return summary

    async def propose(self, pattern_id: int, scope: str | None = None) -> dict[str, Any]:
        """Ask Claude about one pattern (and scope) now, whatever its rates: an operator's request, and
        the simulation's. Same evidence, validation, screening and proposal as a tick."""
        summary: dict[str, Any] = {
            "patterns": [pattern_id],
            "proposed": 0,
            "stored": [],
            "invalid": 0,
            "invalid_reasons": [],
            "started": [],
            "awaiting_approval": [],
            "screened_out": 0,
            "screened_reasons": [],
            "claude_failures": 0,
        }
        if self.client is None or getattr(self.client, "local_only", False):
            return {"skipped": "local-only"}
        async with self.engine.connect() as conn:
            picks = await self.pick_patterns(conn, only=(pattern_id, scope))
        if not picks:
            summary["patterns"] = []
            return summary
        await self._improve(picks[0], summary)
        return summary

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                summary = await self.tick()
                if summary.get("stored"):
                    log.info("candidate job: %s", summary)
            except Exception:
                log.exception("candidate job tick failed")
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.interval_s)
            except TimeoutError:
                pass

    async def _improve(self, pick: PatternPick, summary: dict[str, Any]) -> None:
        async with self.engine.connect() as conn:
            evidence = await self.gather(conn, pick)
        result = await self.client.structured(
            purpose=PURPOSE,
            subject=f"pattern:{pick.pattern_id}",
            system=SYSTEM_PROMPT,
            prompt=self.prompt(pick, evidence),
            tool_name=TOOL_NAME,
            tool_description=TOOL_DESCRIPTION,
            schema=CANDIDATES_SCHEMA,
            max_tokens=2048,
        )
        if not result.ok or not isinstance(result.data, dict):
            summary["claude_failures"] += 1
            log.info("candidate job: pattern %s: claude %s (%s)", pick.pattern_id, result.outcome, result.error)
            return
        raw = result.data.get("candidates")
        candidates = raw if isinstance(raw, list) else []
        summary["proposed"] += len(candidates)
        seen = {(t["kind"], json.dumps(t["spec"], sort_keys=True)) for t in evidence.tried}
        async with self.engine.begin() as conn:
            stored: list[int] = []
            for candidate in candidates:
                problem, kind, spec = self._check(candidate, evidence, seen)
                if problem is not None:
                    summary["invalid"] += 1
                    summary["invalid_reasons"].append(f"pattern {pick.pattern_id}: {problem}")
                    continue
                seen.add((kind, json.dumps(spec, sort_keys=True)))
                rationale = str(candidate.get("rationale") or "")[:4000]
                screening = screen_spec(kind, spec)
                enhancement_id = await manage.create_enhancement(
                    conn,
                    pick.pattern_id,
                    kind,
                    spec,
                    rationale,
                    "claude",
                    result.call_id,
                    actor=ACTOR,
                    scope=pick.scope,
                    screening=screening,
                )
                if not screening.ok:
                    summary["screened_out"] += 1
                    summary["screened_reasons"].append(f"enhancement {enhancement_id}: {screening.reason}")
                    continue
                stored.append(enhancement_id)
            summary["stored"].extend(stored)
            if self.auto_start and stored:
                try:
                    async with conn.begin_nested():
                        experiment_id = await manage.propose_experiment(
                            conn,
                            stored[0],
                            actor=ACTOR,
                            reason=f"pattern {pick.pattern_id}: {pick.why}",
                            control_weight=self.control_weight,
                            auto=self.auto_approve,
                        )
                        status = (await manage.get_experiment(conn, experiment_id))["status"]
                    summary["started" if status == "running" else "awaiting_approval"].append(experiment_id)
                except ValueError as exc:  # e.g. an operator opened an experiment meanwhile
                    log.info("candidate job: not proposing enhancement %s: %s", stored[0], exc)

    @staticmethod
    def _check(candidate: Any, evidence: Evidence, seen: set[tuple[str, str]]) -> tuple[str | None, str, dict[str, Any]]:
        if not isinstance(candidate, dict):
            return "not an object", "", {}
        kind = str(candidate.get("kind"))
        try:
            parsed = parse_spec(kind, candidate.get("spec"))
        except SpecError as exc:
            return str(exc), kind, {}
        spec = parsed.to_dict()
        if isinstance(parsed, ToolDescriptionSpec) and parsed.tool not in evidence.tools:
            return f"tool_description: the pattern's requests declare no tool {parsed.tool!r}", kind, spec
        if (kind, json.dumps(spec, sort_keys=True)) in seen:
            return f"{kind}: the same change was already proposed for this pattern", kind, spec
        return None, kind, spec

    # ---------------------------------------------------------------------------- picking patterns
    async def pick_patterns(
        self, conn: AsyncConnection, now: datetime | None = None, *, only: tuple[int, str | None] | None = None
    ) -> list[PatternPick]:
        """The (pattern, scope) pairs to improve, worst first; ``only`` picks that one pair regardless of
        its rates (still not when it is busy)."""
        now = now or datetime.now(UTC)
        since = now - self.window
        params = {
            "since": since,
            "past_since": since - self.history,
            "until": now + timedelta(minutes=5),
        }
        rows = (await conn.execute(_RATES_SQL, params)).mappings().all()
        busy = {(r.pattern_id, r.scope) for r in (await conn.execute(_BUSY_SQL)).all()}
        busy_patterns = {p for p, _ in busy}
        merged = set((await conn.execute(_MERGED_SQL)).scalars())
        total_n = sum(r["n"] for r in rows)
        fleet = sum(r["ok"] for r in rows) / total_n if total_n else 1.0
        picks: list[PatternPick] = []
        for r in rows:
            pattern_id, scope = r["pattern_id"], r["scope"]
            if pattern_id in merged or (pattern_id, scope) in busy or (pattern_id, None) in busy:
                continue
            if scope is None and pattern_id in busy_patterns:  # a global change would overlap a scoped one
                continue
            if only is not None:
                if (pattern_id, scope) != only or not r["n"]:
                    continue
            elif r["n"] < self.min_volume:
                continue
            rate = r["ok"] / r["n"]
            reasons = []
            if rate < fleet - self.margin:
                reasons.append(f"success {rate:.2f} below the fleet's {fleet:.2f}")
            if r["past_n"] >= self.min_volume and rate < r["past_ok"] / r["past_n"] - self.margin:
                reasons.append(f"success {rate:.2f} below its own past {r['past_ok'] / r['past_n']:.2f}")
            if only is not None and not reasons:
                reasons.append(f"asked for (success {rate:.2f}, fleet {fleet:.2f})")
            if reasons:
                picks.append(
                    PatternPick(
                        pattern_id=int(pattern_id),
                        label="",
                        n=int(r["n"]),
                        successes=int(r["ok"]),
                        past_n=int(r["past_n"]),
                        past_successes=int(r["past_ok"]),
                        fleet_rate=fleet,
                        why="; ".join(reasons),
                        scope=scope,
                    )
                )
        picks.sort(key=lambda p: (-(p.n - p.successes), p.pattern_id, p.scope or ""))
        picks = picks[: self.max_per_tick]
        if picks:
            labels: dict[int, str] = dict(
                (
                    await conn.execute(
                        text("SELECT id, label FROM patterns WHERE id = ANY(:ids)"), {"ids": [p.pattern_id for p in picks]}
                    )
                ).all()
            )
            picks = [PatternPick(**{**p.__dict__, "label": labels.get(p.pattern_id) or ""}) for p in picks]
        return picks

    # ---------------------------------------------------------------------------------- evidence
    async def gather(self, conn: AsyncConnection, pick: PatternPick, now: datetime | None = None) -> Evidence:
        now = now or datetime.now(UTC)
        rows = (
            (
                await conn.execute(
                    _EXAMPLES_SQL,
                    {
                        "pattern": pick.pattern_id,
                        "scope": pick.scope,
                        "since": now - self.window,
                        "scan": max(200, self.examples * 20),
                        "failing_kinds": list(FAILING_SIGNAL_KINDS),
                    },
                )
            )
            .mappings()
            .all()
        )
        ev = Evidence()
        for r in rows:
            failed = list(r["failed_kinds"] or []) + (["feedback"] if r["negative"] else [])
            for kind in failed:
                ev.failure_kinds[kind] = ev.failure_kinds.get(kind, 0) + 1
            ev.tools.update(r["tool_names"] or [])
            if r["model"]:
                ev.models[r["model"]] = ev.models.get(r["model"], 0) + 1
            bucket = ev.failing if failed else ev.succeeding
            if len(bucket) < self.examples:
                bucket.append(
                    {
                        "system": self._clean(r["prompt_system"]),
                        "user": self._clean(r["prompt_user"]),
                        "finish_reason": r["finish_reason"],
                        "status": r["status"],
                        "error": self._clean(r["error"], 300),
                        "failed": failed,
                    }
                )
        ev.tried = [
            {"kind": e["kind"], "spec": e["spec"], "status": e["status"]}
            for e in await manage.list_enhancements(conn, pattern_id=pick.pattern_id, scope=pick.scope, limit=20)
        ]
        return ev

    def _clean(self, value: str | None, limit: int | None = None) -> str | None:
        if not value:
            return value
        limit = limit or self.max_text_chars
        if self.redact:
            value = _redact(value)
        return value if len(value) <= limit else value[:limit] + f" ...[{len(value) - limit} more chars]"

    def prompt(self, pick: PatternPick, ev: Evidence) -> str:
        past = f"{pick.past_rate:.2f} over the {self.history.days} days before" if pick.past_rate is not None else "n/a"
        doc = {
            "pattern": {
                "id": pick.pattern_id,
                "label": pick.label,
                "scope": "one gateway key's traffic" if pick.scope else "all traffic without a gateway key",
                "exchanges_in_window": pick.n,
                "success_rate": round(pick.rate, 3),
                "fleet_success_rate": round(pick.fleet_rate, 3),
                "own_past_success_rate": past,
                "why_selected": pick.why,
            },
            "failures_by_signal": ev.failure_kinds,
            "models": ev.models,
            "declared_tools": sorted(ev.tools),
            "failing_examples": ev.failing,
            "succeeding_examples": ev.succeeding,
            "already_tried": ev.tried,
        }
        return (
            "Evidence about one pattern, as JSON. Propose enhancements with the propose_enhancements tool; "
            "do not repeat anything in already_tried.\n\n" + json.dumps(doc, ensure_ascii=False, indent=1)
        )


def _redact(value: str) -> str:
    try:
        from intelligence.detectors.secrets import redact_secrets
    except ImportError:  # the sidecar package is optional for the intelligence workers
        return value
    return redact_secrets(value)


__all__ = ["ACTOR", "CandidateJob", "Evidence", "PURPOSE", "PatternPick", "SYSTEM_PROMPT", "TOOL_NAME"]

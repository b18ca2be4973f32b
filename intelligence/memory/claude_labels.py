"""Claude-written pattern labels: a short noun phrase in place of the heuristic's three keywords.

Each tick of :class:`PatternLabelJob`:

1. **Pick patterns** (one query): live patterns (not merged away) with at least ``min_members``
   members whose label is still ``heuristic``; then Claude-labelled patterns whose membership has
   grown ``relabel_growth`` times since their last successful label call (the call's time comes from
   ``claude_calls``; members then = ``member_count`` now minus the members whose
   ``exchange_embeddings.created_at`` is later, a range scan of the new rows only), so a label
   written when the pattern had 5 prompts is revisited at 10. Heuristic first, biggest first, at
   most ``max_per_tick``. A pattern whose last label call failed (any outcome but ok and
   budget_exhausted) within ``retry_after_s`` is skipped, so a pattern Claude cannot label does not
   cost a call every tick. Claude labels without a ``claude_calls`` record (written by hand) are
   never relabelled.
2. **Ask Claude** (``client.structured``, purpose ``pattern_label``, subject ``pattern:<id>``) with
   the pattern's stored examples (at most 5 prompts of at most 300 chars each, from the request log,
   which the security policy already redacted; the secret redactor runs over them again anyway).
3. **Store** the answer's label with :meth:`PatternRepository.set_label` (source ``claude``), unless
   the pattern was merged away meanwhile. The answer's description is returned in the summary and
   logged only: ``patterns`` has no column for it and this job adds no migration.

A local-only client or ``pattern_learning`` switched off makes a tick a no-op that says why.
An invalid answer (schema violation, or a label that is empty once cleaned) leaves the pattern
untouched and is counted in ``parse_errors``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from intelligence.claude import IntelligenceFlags
from intelligence.memory.repository import PatternRepository

log = logging.getLogger(__name__)

PURPOSE = "pattern_label"
TOOL_NAME = "name_pattern"
TOOL_DESCRIPTION = "Name one family of similar LLM requests with a short label and a one-sentence description."
MAX_LABEL_CHARS = 60
MAX_DESCRIPTION_CHARS = 300
MAX_EXAMPLES = 5

LABEL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "label": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_LABEL_CHARS,
            "pattern": r"\S",
            "description": "A short noun phrase naming what these requests ask for, e.g. 'invoice summaries'.",
        },
        "description": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_DESCRIPTION_CHARS,
            "description": "One sentence saying what the requests of this family want.",
        },
    },
    "required": ["label", "description"],
    "additionalProperties": False,
}

SYSTEM_PROMPT = """You name families of similar requests ("patterns") that an LLM gateway has grouped by \
meaning. You see a few example prompts of one family. Give it a label an operator can scan in a list: a short \
noun phrase (at most 60 characters, no trailing period, no quotes) naming what the requests ask for, general \
enough to cover every example; and one sentence describing the family. Never copy names, numbers, secrets or \
other details specific to one example into the label or description. Call the tool once."""

_PICK_SQL = text("""
WITH label_calls AS (
    SELECT subject,
           max(at) FILTER (WHERE outcome = 'ok') AS last_ok,
           max(at) FILTER (WHERE outcome NOT IN ('ok', 'budget_exhausted')) AS last_failure
    FROM claude_calls WHERE purpose = :purpose GROUP BY subject
)
SELECT p.id, p.label, p.label_source, p.member_count, p.examples
FROM patterns p LEFT JOIN label_calls c ON c.subject = 'pattern:' || p.id
WHERE p.centroid IS NOT NULL AND p.redirect_to IS NULL AND p.member_count >= :min_members
  AND (c.last_failure IS NULL OR c.last_failure < :retry_before)
  AND (p.label_source = 'heuristic'
       OR (CAST(:growth AS double precision) > 0 AND c.last_ok IS NOT NULL
           AND p.member_count >= CAST(:growth AS double precision) * greatest(1, p.member_count - (
               SELECT count(*) FROM exchange_embeddings e
               WHERE e.pattern_id = p.id AND e.created_at > c.last_ok))))
ORDER BY (p.label_source = 'heuristic') DESC, p.member_count DESC, p.id
LIMIT :limit
""")

_QUOTES = "\"'`\u201c\u201d\u2018\u2019"


@dataclass(frozen=True, slots=True)
class LabelPick:
    pattern_id: int
    label: str
    label_source: str
    member_count: int
    examples: list[str]


def clean_label(value: str) -> str:
    """One line, no surrounding quotes or trailing period, at most MAX_LABEL_CHARS; may be empty."""
    value = re.sub(r"\s+", " ", value).strip().strip(_QUOTES).strip().rstrip(".").strip()
    return value[:MAX_LABEL_CHARS].rstrip()


def _redact(value: str) -> str:
    try:
        from intelligence.detectors.secrets import redact_secrets
    except ImportError:  # the sidecar package is optional for the intelligence workers
        return value
    return redact_secrets(value)


class PatternLabelJob:
    def __init__(
        self,
        engine: AsyncEngine,
        client: Any,
        *,
        min_members: int = 5,
        max_per_tick: int = 10,
        interval_s: float = 300,
        relabel_growth: float = 2.0,
        retry_after_s: float = 3600,
        flags: IntelligenceFlags | None = None,
        redact: bool = True,
    ) -> None:
        self.engine = engine
        self.client = client
        self.min_members = min_members
        self.max_per_tick = max_per_tick
        self.interval_s = interval_s
        self.relabel_growth = relabel_growth  # 0 turns relabelling off
        self.retry_after_s = retry_after_s
        self.flags = flags if flags is not None else IntelligenceFlags.from_env()
        self.redact = redact
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        # Back-off for answers rejected after a successful call (claude_calls says "ok" for them).
        self._rejected_at: dict[int, float] = {}

    def disabled_reason(self) -> str | None:
        if not self.flags.pattern_learning:
            return "pattern_learning off"
        if self.client is None or getattr(self.client, "local_only", False):
            return "local-only"
        return None

    # ------------------------------------------------------------------------------------ the tick
    async def tick(self) -> dict[str, Any]:
        reason = self.disabled_reason()
        if reason is not None:
            return {"skipped": reason}
        picks = await self.pick_patterns()
        summary: dict[str, Any] = {
            "skipped": None,
            "patterns": [p.pattern_id for p in picks],
            "labelled": [],
            "parse_errors": 0,
            "failures": 0,
            "moved": 0,
            "stopped": None,
        }
        for pick in picks:
            if not await self._label(pick, summary):
                break
        return summary

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                summary = await self.tick()
                if summary.get("labelled") or summary.get("parse_errors") or summary.get("failures"):
                    log.info("pattern labels: %s", summary)
            except Exception:
                log.exception("pattern label tick failed")
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.interval_s)
            except TimeoutError:
                pass

    async def pick_patterns(self) -> list[LabelPick]:
        retry_before = datetime.now(UTC) - timedelta(seconds=self.retry_after_s)
        # The in-process back-off needs a few more rows than max_per_tick to still fill the tick.
        limit = self.max_per_tick + len(self._rejected_at)
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    _PICK_SQL,
                    {
                        "purpose": PURPOSE,
                        "min_members": self.min_members,
                        "retry_before": retry_before,
                        "growth": float(self.relabel_growth),
                        "limit": limit,
                    },
                )
            ).all()
        now = time.monotonic()
        self._rejected_at = {pid: at for pid, at in self._rejected_at.items() if now - at < self.retry_after_s}
        picks = [
            LabelPick(
                pattern_id=r.id,
                label=r.label,
                label_source=r.label_source,
                member_count=r.member_count,
                examples=[str(e["text"]) for e in (r.examples or []) if isinstance(e, dict) and e.get("text")],
            )
            for r in rows
            if r.id not in self._rejected_at
        ]
        return [p for p in picks if p.examples][: self.max_per_tick]

    def prompt(self, pick: LabelPick) -> str:
        examples = [_redact(t) if self.redact else t for t in pick.examples[:MAX_EXAMPLES]]
        doc = {"members": pick.member_count, "keyword_label": pick.label, "example_prompts": examples}
        return "One family of similar requests, as JSON. Name it with the name_pattern tool.\n\n" + json.dumps(
            doc, ensure_ascii=False, indent=1
        )

    async def _label(self, pick: LabelPick, summary: dict[str, Any]) -> bool:
        """Label one pattern; False when the tick should stop (budget exhausted)."""
        result = await self.client.structured(
            purpose=PURPOSE,
            subject=f"pattern:{pick.pattern_id}",
            system=SYSTEM_PROMPT,
            prompt=self.prompt(pick),
            tool_name=TOOL_NAME,
            tool_description=TOOL_DESCRIPTION,
            schema=LABEL_SCHEMA,
            max_tokens=256,
        )
        if result.outcome == "budget_exhausted":
            summary["stopped"] = "budget_exhausted"
            return False
        if not result.ok or not isinstance(result.data, dict):
            key = "parse_errors" if result.outcome == "parse_error" else "failures"
            summary[key] += 1
            log.info("pattern labels: pattern %s: claude %s (%s)", pick.pattern_id, result.outcome, result.error)
            return True
        label = clean_label(str(result.data.get("label", "")))
        description = re.sub(r"\s+", " ", str(result.data.get("description", ""))).strip()
        if not label:
            summary["parse_errors"] += 1
            self._rejected_at[pick.pattern_id] = time.monotonic()
            log.info("pattern labels: pattern %s: empty label in %r", pick.pattern_id, result.data)
            return True
        async with self._sessions() as session, session.begin():
            repo = PatternRepository(session)
            if await repo.resolve(pick.pattern_id) != pick.pattern_id:  # merged away while Claude thought
                summary["moved"] += 1
                return True
            await repo.set_label(pick.pattern_id, label, source="claude")
        summary["labelled"].append(
            {"pattern": pick.pattern_id, "label": label, "previous": pick.label, "description": description}
        )
        log.info("pattern labels: pattern %s %r -> %r (%s)", pick.pattern_id, pick.label, label, description)
        return True


__all__ = ["LABEL_SCHEMA", "LabelPick", "PURPOSE", "PatternLabelJob", "SYSTEM_PROMPT", "TOOL_NAME", "clean_label"]

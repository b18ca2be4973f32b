"""What a verdict sets in motion: an event, an audit entry, and possibly a key quarantine.

All of it runs in the caller's transaction together with the verdict itself, so an event is never
announced (nor a key suspended) for a verdict that was not stored.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from intelligence.anomaly.kinds import ACTOR
from intelligence.anomaly.store import AUDIT_KIND_VERDICT
from intelligence.audit import AuditLog
from intelligence.events import publish
from intelligence.keys import quarantine_key

SEVERITY = {"malicious": "critical", "suspicious": "warning", "benign": "info"}
_OFF = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True)
class ResponseConfig:
    quarantine_on_malicious: bool = True  # LLMPROXY_QUARANTINE_ON_MALICIOUS
    quarantine_min_confidence: float = 0.8  # LLMPROXY_QUARANTINE_MIN_CONFIDENCE

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ResponseConfig:
        env = os.environ if env is None else env
        raw = env.get("LLMPROXY_QUARANTINE_ON_MALICIOUS", "").strip().lower()
        conf = env.get("LLMPROXY_QUARANTINE_MIN_CONFIDENCE", "").strip()
        return cls(
            quarantine_on_malicious=raw not in _OFF,
            quarantine_min_confidence=float(conf) if conf else cls.quarantine_min_confidence,
        )


@dataclass(frozen=True)
class Decision:
    verdict: str  # benign | suspicious | malicious
    confidence: float
    reasoning: str
    source: str  # claude | memory | local
    claude_call_id: int | None = None
    memory_id: int | None = None


async def is_gateway_key(conn: AsyncConnection, client: str | None) -> bool:
    if not client:
        return False
    return (await conn.execute(text("SELECT 1 FROM gateway_keys WHERE id = :id"), {"id": client})).first() is not None


async def respond(
    conn: AsyncConnection,
    verdict_id: int,
    decision: Decision,
    *,
    request_id: str | None,
    client: str | None,
    detectors: list[str],
    config: ResponseConfig,
) -> str | None:
    """Apply the automated response; returns what was done (stored in anomaly_verdicts.action)."""
    action = await _quarantine(conn, verdict_id, decision, client, config)
    if action is not None:
        await conn.execute(text("UPDATE anomaly_verdicts SET action = :a WHERE id = :id"), {"a": action, "id": verdict_id})
    detail: dict[str, Any] = {
        "verdict_id": verdict_id,
        "verdict": decision.verdict,
        "confidence": round(decision.confidence, 4),
        "source": decision.source,
        "detectors": detectors,
        "client": client,
        "request_id": request_id,
        "action": action,
        "reasoning": decision.reasoning[:1000],
        "claude_call_id": decision.claude_call_id,
        "memory_id": decision.memory_id,
    }
    marked = " [local rules, no Claude]" if decision.source == "local" else ""
    await publish(
        conn,
        kind="verdict",
        severity=SEVERITY[decision.verdict],
        subject=f"request:{request_id}",
        source=ACTOR,
        detail=detail,
        title=f"{decision.verdict} ({decision.confidence:.2f}, {decision.source}){marked}: "
        f"{', '.join(detectors)} from {client or 'unknown client'}",
    )
    await AuditLog().append(conn, AUDIT_KIND_VERDICT, f"verdict:{verdict_id}", detail, ACTOR)
    return action


async def _quarantine(
    conn: AsyncConnection, verdict_id: int, decision: Decision, client: str | None, config: ResponseConfig
) -> str | None:
    if decision.verdict != "malicious" or decision.confidence < config.quarantine_min_confidence:
        return None
    if not config.quarantine_on_malicious:
        return "none: quarantine disabled (LLMPROXY_QUARANTINE_ON_MALICIOUS)"
    if not await is_gateway_key(conn, client):
        return "none: client is not a gateway key"
    assert client is not None
    reason = f"anomaly verdict {verdict_id}: malicious ({decision.confidence:.2f}, {decision.source})"
    _, changed = await quarantine_key(conn, client, actor=ACTOR, reason=reason)
    return f"quarantined {client}" if changed else f"already quarantined {client}"

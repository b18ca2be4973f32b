"""Growing the attack memory from confirmed verdicts.

A verdict confirmed as ``attack`` whose suspicion is about what a prompt says adds the exchange's
last user turn (as the request log stores it: redacted) to ``attack_memory``; the sidecar's detector
then flags its near-duplicates inline. Relabelled ``false_positive``, the rows it added are disabled.
Suspicions about volumes, tokens, errors, tools or models never add anything: a prompt that
happened to arrive during a spike is not an attack. Monitor-mode policy matches do not either: such
a rule may be about PII or secrets leaving, which the injection memory must not learn to block.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text as sql

from intelligence.anomaly.kinds import INJECTION_UNCERTAIN, NOVEL_PROMPT

from .store import Embed, Executor, add_attack, disable_attack

# injection scored in the doubtful band; a prompt far from everything the client sent before
ATTACK_DETECTORS = frozenset({INJECTION_UNCERTAIN, NOVEL_PROMPT})
LEARNED_FAMILY = "confirmed_attack"


def learns_from(detectors: list[str] | tuple[str, ...]) -> bool:
    return any(d in ATTACK_DETECTORS for d in detectors)


async def scanned_prompt(conn: Executor, request_id: str) -> str | None:
    """The user turn the inline detector scanned, in its stored (redacted) form."""
    value = (
        await conn.execute(sql("SELECT prompt_user FROM exchanges WHERE request_id = :rid"), {"rid": request_id})
    ).scalar_one_or_none()
    return value if value and value.strip() else None


async def learn_from_confirmation(
    conn: Executor, verdict: dict[str, Any], label: str, actor: str, *, embed: Embed | None = None
) -> dict[str, Any] | None:
    """Apply one confirmation to the attack memory; returns what changed (for the confirmation's
    audit entry, which records it) or None when nothing did."""
    verdict_id = int(verdict["id"])
    if label == "false_positive":
        ids = (
            (
                await conn.execute(
                    sql("SELECT id FROM attack_memory WHERE verdict_id = :vid AND disabled_at IS NULL ORDER BY id"),
                    {"vid": verdict_id},
                )
            )
            .scalars()
            .all()
        )
        for attack_id in ids:
            await disable_attack(
                conn, attack_id, actor=actor, reason=f"verdict {verdict_id} relabelled false_positive", audit=False
            )
        return {"action": "disable", "ids": list(ids)} if ids else None
    if label != "attack" or not verdict.get("request_id") or not learns_from(verdict.get("detectors") or ()):
        return None
    prompt = await scanned_prompt(conn, verdict["request_id"])
    if prompt is None:
        return None
    record, changed = await add_attack(
        conn,
        prompt,
        LEARNED_FAMILY,
        source=f"verdict:{verdict_id}",
        added_by=actor,
        verdict_id=verdict_id,
        embed=embed,
        audit=False,
    )
    return {"action": "add" if changed else "known", "id": record.id, "text_hash": record.text_hash}

"""Reading and confirming anomaly verdicts, and the verdict memory (confirmed cases as embeddings).

Every function takes the caller's connection (or session) and never commits: a confirmation, its
memory entry, its audit entry and its event commit together. Dictionaries returned are JSON-ready
(timestamps as ISO-8601 strings).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from intelligence.anomaly.kinds import LABELS, PROMPT_DETECTORS, VERDICT_OF_LABEL
from intelligence.audit import AuditLog
from intelligence.events import publish
from intelligence.memory.canonical import CanonicalPrompt, canonical_prompt
from intelligence.memory.repository import as_vector, vec_arg
from intelligence.memory.worker import TextEncoder

Executor = AsyncConnection | AsyncSession

AUDIT_KIND_VERDICT = "anomaly_verdict"
AUDIT_KIND_CONFIRM = "anomaly_confirm"

_VERDICT_COLUMNS = (
    "v.id, v.at, v.request_id, v.client_key_fp, v.detectors, v.suspicion, v.status, v.verdict, v.confidence, "
    "v.reasoning, v.source, v.claude_call_id, v.memory_id, v.action, v.confirmed, v.confirmed_by, v.judged_at, "
    "x.model, x.started_at, left(x.prompt_user, 300) AS prompt_preview"
)


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _verdict_dict(row: Any) -> dict[str, Any]:
    doc = {k: _jsonable(v) for k, v in dict(row).items()}
    doc["detectors"] = list(doc.get("detectors") or [])
    return doc


async def list_verdicts(conn: Executor, *, limit: int = 100, verdict: str | None = None, status: str | None = None) -> list[dict]:
    """Newest first; ``verdict`` / ``status`` filter exactly (None: any)."""
    where = ["true"]
    params: dict[str, Any] = {"limit": max(1, min(int(limit), 1000))}
    if verdict is not None:
        where.append("v.verdict = :verdict")
        params["verdict"] = verdict
    if status is not None:
        where.append("v.status = :status")
        params["status"] = status
    rows = (
        (
            await conn.execute(
                text(
                    f"SELECT {_VERDICT_COLUMNS} FROM anomaly_verdicts v LEFT JOIN exchanges x ON x.request_id = v.request_id "
                    f"WHERE {' AND '.join(where)} ORDER BY v.at DESC, v.id DESC LIMIT :limit"
                ),
                params,
            )
        )
        .mappings()
        .all()
    )
    return [_verdict_dict(r) for r in rows]


async def get_verdict(conn: Executor, verdict_id: int) -> dict[str, Any]:
    row = (
        (
            await conn.execute(
                text(
                    f"SELECT {_VERDICT_COLUMNS} FROM anomaly_verdicts v LEFT JOIN exchanges x ON x.request_id = v.request_id "
                    "WHERE v.id = :id"
                ),
                {"id": verdict_id},
            )
        )
        .mappings()
        .one_or_none()
    )
    if row is None:
        raise LookupError(f"no anomaly verdict {verdict_id}")
    return _verdict_dict(row)


async def memory_hit_rate(conn: Executor, *, since_hours: float = 24 * 7) -> dict:
    """Share of verdicts judged in the period that the memory answered (no Claude call)."""
    row = (
        (
            await conn.execute(
                text(
                    "SELECT count(*) AS judged, count(*) FILTER (WHERE source = 'memory') AS from_memory FROM anomaly_verdicts "
                    "WHERE status = 'judged' AND judged_at >= now() - make_interval(secs => :secs)"
                ),
                {"secs": float(since_hours) * 3600.0},
            )
        )
        .mappings()
        .one()
    )
    judged, from_memory = int(row["judged"]), int(row["from_memory"])
    return {
        "judged": judged,
        "from_memory": from_memory,
        "hit_rate": from_memory / judged if judged else 0.0,
        "since_hours": since_hours,
    }


# ----------------------------------------------------------------------------- the verdict memory


@dataclass(frozen=True, slots=True)
class MemoryMatch:
    id: int
    label: str
    similarity: float
    reasoning: str
    verdict_id: int | None


async def exchange_prompt(conn: Executor, request_id: str) -> CanonicalPrompt | None:
    """The request's canonical prompt (what pattern memory embeds); None when it has nothing to embed."""
    row = (
        (
            await conn.execute(
                text("SELECT prompt_user, prompt_system, tool_names FROM exchanges WHERE request_id = :rid"), {"rid": request_id}
            )
        )
        .mappings()
        .one_or_none()
    )
    if row is None:
        return None
    prompt = canonical_prompt(row["prompt_user"], row["prompt_system"], row["tool_names"] or ())
    return None if prompt.empty else prompt


async def stored_embedding(conn: Executor, request_id: str, prompt: CanonicalPrompt) -> np.ndarray | None:
    """The pattern worker's embedding of the same text, if it already made one (saves a model call)."""
    value = (
        await conn.execute(
            text(
                "SELECT embedding::text FROM exchange_embeddings WHERE request_id = :rid AND canonical_hash = :h "
                "AND embedding IS NOT NULL"
            ),
            {"rid": request_id, "h": prompt.hash},
        )
    ).scalar_one_or_none()
    return None if value is None else as_vector(value)


async def embed_prompt(conn: Executor, request_id: str, prompt: CanonicalPrompt, embedder: TextEncoder | None) -> np.ndarray:
    vector = await stored_embedding(conn, request_id, prompt)
    if vector is not None:
        return vector
    if embedder is None:  # an operator's confirmation outside the job: load the shared model once
        from intelligence.embeddings import shared_embedder

        embedder = await asyncio.to_thread(shared_embedder)
    matrix = await asyncio.to_thread(embedder.encode, [prompt.text])
    return np.asarray(matrix[0], dtype=np.float32)


async def nearest_memory(conn: Executor, vector: np.ndarray) -> MemoryMatch | None:
    row = (
        (
            await conn.execute(
                text(
                    "SELECT id, label, reasoning, verdict_id, 1 - (embedding <=> CAST(:v AS real[])::vector) AS similarity "
                    "FROM verdict_memory ORDER BY embedding <=> CAST(:v AS real[])::vector LIMIT 1"
                ),
                {"v": vec_arg(vector)},
            )
        )
        .mappings()
        .one_or_none()
    )
    if row is None:
        return None
    return MemoryMatch(
        id=int(row["id"]),
        label=row["label"],
        similarity=float(row["similarity"]),
        reasoning=row["reasoning"] or "",
        verdict_id=row["verdict_id"],
    )


async def count_memory_hit(conn: Executor, memory_id: int) -> None:
    await conn.execute(text("UPDATE verdict_memory SET hits = hits + 1 WHERE id = :id"), {"id": memory_id})


async def remember(
    conn: Executor, *, label: str, prompt: CanonicalPrompt, vector: np.ndarray, reasoning: str, verdict_id: int | None
) -> int:
    """Add (or relabel: the latest confirmation wins) a confirmed case; returns the memory id."""
    if label not in LABELS:
        raise ValueError(f"label must be one of {LABELS}, not {label!r}")
    return int(
        (
            await conn.execute(
                text(
                    "INSERT INTO verdict_memory (embedding, label, text_hash, reasoning, verdict_id) "
                    "VALUES (CAST(:v AS real[])::vector, :label, :h, :reasoning, :vid) "
                    "ON CONFLICT (text_hash) DO UPDATE SET label = EXCLUDED.label, reasoning = EXCLUDED.reasoning, "
                    "verdict_id = EXCLUDED.verdict_id RETURNING id"
                ),
                {"v": vec_arg(vector), "label": label, "h": prompt.hash, "reasoning": reasoning[:4000], "vid": verdict_id},
            )
        ).scalar_one()
    )


def memory_eligible(detectors: list[str] | tuple[str, ...]) -> bool:
    return any(d in PROMPT_DETECTORS for d in detectors)


async def confirm_verdict(
    conn: Executor, verdict_id: int, label: str, *, actor: str, embedder: TextEncoder | None = None
) -> None:
    """An operator's ruling: ``attack`` or ``false_positive``.

    A suspicion about a prompt (injection, monitor-mode rule, novel prompt) also enters the verdict
    memory, so its near-duplicates are judged without Claude; a purely statistical one (volume,
    tokens, errors, new tool/model) is only marked. ``embedder`` is used when the pattern worker has
    not embedded the request yet (default: the shared all-MiniLM-L6-v2). An injection-type attack's
    prompt also enters the inline detector's attack memory, and a false positive leaves it
    (intelligence/attacks/growth.py).
    Unknown id -> LookupError; bad label -> ValueError.
    """
    if label not in LABELS:
        raise ValueError(f"label must be one of {LABELS}, not {label!r}")
    if not actor:
        raise ValueError("a confirmation needs an actor")
    current = await get_verdict(conn, verdict_id)
    await conn.execute(
        text("UPDATE anomaly_verdicts SET confirmed = :label, confirmed_by = :actor WHERE id = :id"),
        {"label": label, "actor": actor, "id": verdict_id},
    )
    memory_id: int | None = None
    prompt = await exchange_prompt(conn, current["request_id"]) if current["request_id"] else None
    if prompt is not None and memory_eligible(current["detectors"]):
        vector = await embed_prompt(conn, current["request_id"], prompt, embedder)
        reasoning = f"confirmed {label} by {actor}" + (f": {current['reasoning']}" if current["reasoning"] else "")
        memory_id = await remember(conn, label=label, prompt=prompt, vector=vector, reasoning=reasoning, verdict_id=verdict_id)
    detail = {
        "verdict_id": verdict_id,
        "label": label,
        "memory_id": memory_id,
        "request_id": current["request_id"],
        "client": current["client_key_fp"],
        "verdict": current["verdict"],
    }
    # The inline detector's attack memory (an injection-type attack's prompt in; a false positive's out);
    # imported here: intelligence.attacks imports the anomaly models, whose package imports this module.
    from intelligence.attacks.growth import learn_from_confirmation

    attack_change = await learn_from_confirmation(conn, current, label, actor)
    if attack_change is not None:
        detail["attack_memory"] = attack_change
    await AuditLog().append(conn, AUDIT_KIND_CONFIRM, f"verdict:{verdict_id}", detail, actor)
    await publish(
        conn,
        kind="verdict",
        severity="info",
        subject=f"verdict:{verdict_id}",
        source=actor,
        title=f"verdict {verdict_id} confirmed as {label} ({VERDICT_OF_LABEL[label]})",
        detail=detail,
    )


async def insert_inline_verdict(
    conn: Executor,
    *,
    request_id: str,
    client: str | None,
    detector: str,
    suspicion: dict[str, Any],
    status: str,
    verdict: str | None,
    confidence: float | None,
    reasoning: str,
    judged_by_claude: bool,
    claude_call_id: int | None,
    action: str,
) -> None:
    """One row for a verdict the sidecar asked for inline (a ``claude_verdict`` policy rule)."""
    from sqlalchemy import func, insert

    from .models import AnomalyVerdict

    await conn.execute(
        insert(AnomalyVerdict).values(
            request_id=request_id,
            client_key_fp=client,
            detectors=[detector],
            suspicion=suspicion,
            status=status,
            verdict=verdict,
            confidence=confidence,
            reasoning=reasoning[:8000],
            source="claude" if judged_by_claude else None,
            claude_call_id=claude_call_id,
            action=action,
            judged_at=func.now(),
        )
    )

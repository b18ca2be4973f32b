"""Enhancements and their experiments: creation, the experiment life cycle, and its history.

Every function takes an :class:`AsyncConnection` inside the caller's transaction (``engine.begin()``)
and never commits, so a change, its history row (``experiment_events``), its audit entry and its
event-feed row commit or roll back together. Unknown ids raise :class:`LookupError`; a change the
current state does not allow raises :class:`ValueError`.

Life cycle::

    enhancement candidate --start--> testing --promote--> active (the pattern's previous active one: retired)
                                            \\--rollback--> rolled_back
    experiment running <--pause/resume--> paused;  running|paused --promote--> promoted
                                                   running|paused|promoted --rollback--> rolled_back

At most one running or paused experiment per pattern: two concurrent changes of the same pattern
would make both experiments' outcomes meaningless. Changes of one pattern are serialised by a
transaction-scoped advisory lock, so the check holds across replicas of the control plane.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from intelligence.audit.log import AuditLog
from intelligence.events import publish

from .models import ENHANCEMENT_STATUSES, EXPERIMENT_STATUSES, Enhancement, Experiment, ExperimentEvent
from .spec import parse_spec

ENH = Enhancement.__table__
EXP = Experiment.__table__
EVT = ExperimentEvent.__table__

SOURCES = ("claude", "operator", "simulation")
ASSIGN_BY = ("session", "client")
OPEN_STATUSES = ("running", "paused")
AUDIT_KIND = "experiment"
EVENT_KIND = "experiment"
EVENT_SOURCE = "enhance"
# a constant first key keeps these advisory locks apart from any other user of pg_advisory_xact_lock
_LOCK_NAMESPACE = 0x656E68  # "enh"

_audit = AuditLog()


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _enhancement_dict(row: Any) -> dict[str, Any]:
    m = row._mapping
    return {
        "id": m["id"],
        "pattern_id": m["pattern_id"],
        "version": m["version"],
        "kind": m["kind"],
        "spec": m["spec"],
        "rationale": m["rationale"],
        "source": m["source"],
        "status": m["status"],
        "claude_call_id": m["claude_call_id"],
        "created_at": _iso(m["created_at"]),
        "updated_at": _iso(m["updated_at"]),
    }


_EXPERIMENT_COLUMNS = [
    EXP.c.id,
    EXP.c.enhancement_id,
    EXP.c.pattern_id,
    EXP.c.status,
    EXP.c.control_weight,
    EXP.c.assign_by,
    EXP.c.alpha,
    EXP.c.min_effect,
    EXP.c.max_error_increase,
    EXP.c.max_cost_increase,
    EXP.c.stats,
    EXP.c.decision_reason,
    EXP.c.created_by,
    EXP.c.started_at,
    EXP.c.updated_at,
    EXP.c.decided_at,
    ENH.c.kind.label("kind"),
    ENH.c.spec.label("spec"),
    ENH.c.version.label("version"),
    ENH.c.rationale.label("rationale"),
    ENH.c.status.label("enhancement_status"),
    ENH.c.source.label("source"),
]


def _experiment_dict(row: Any) -> dict[str, Any]:
    m = dict(row._mapping)
    for key in ("started_at", "updated_at", "decided_at"):
        m[key] = _iso(m[key])
    m["stats"] = m["stats"] or {}
    m["enhancement"] = {
        "id": m["enhancement_id"],
        "kind": m.pop("kind"),
        "spec": m.pop("spec"),
        "version": m.pop("version"),
        "rationale": m.pop("rationale"),
        "status": m.pop("enhancement_status"),
        "source": m.pop("source"),
    }
    return m


async def _lock_pattern(conn: AsyncConnection, pattern_id: int | None) -> None:
    if pattern_id is not None:
        await conn.execute(
            text("SELECT pg_advisory_xact_lock(:ns, :key)"), {"ns": _LOCK_NAMESPACE, "key": int(pattern_id) % 2_147_483_647}
        )


async def _record(
    conn: AsyncConnection,
    *,
    experiment_id: int | None,
    action: str,
    actor: str,
    subject: str,
    title: str,
    detail: dict[str, Any],
    severity: str = "info",
) -> None:
    """The three traces of a change: history row, audit entry, event-feed row."""
    if experiment_id is not None:
        await conn.execute(insert(EVT).values(experiment_id=experiment_id, action=action, actor=actor, detail=detail))
    await _audit.append(conn, AUDIT_KIND, subject, {"action": action, **detail}, actor)
    await publish(
        conn,
        kind=EVENT_KIND,
        title=title,
        severity=severity,
        subject=subject,
        detail={"action": action, "actor": actor, **detail},
        source=EVENT_SOURCE,
    )


# ------------------------------------------------------------------------------------ enhancements
async def create_enhancement(
    conn: AsyncConnection,
    pattern_id: int | None,
    kind: str,
    spec: dict[str, Any],
    rationale: str,
    source: str,
    claude_call_id: int | None = None,
    *,
    actor: str | None = None,
) -> int:
    """Store a validated candidate as the pattern's next version; returns its id.

    Raises ValueError (a :class:`~intelligence.enhance.spec.SpecError`) for an invalid spec.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, not {source!r}")
    canonical = parse_spec(kind, spec).to_dict()
    await _lock_pattern(conn, pattern_id)
    version_query = select(func.coalesce(func.max(ENH.c.version), 0) + 1)
    version_query = version_query.where(ENH.c.pattern_id == pattern_id if pattern_id is not None else ENH.c.pattern_id.is_(None))
    version = int((await conn.execute(version_query)).scalar_one())
    enhancement_id = int(
        (
            await conn.execute(
                insert(ENH)
                .values(
                    pattern_id=pattern_id,
                    version=version,
                    kind=kind,
                    spec=canonical,
                    rationale=rationale or "",
                    source=source,
                    status="candidate",
                    claude_call_id=claude_call_id,
                )
                .returning(ENH.c.id)
            )
        ).scalar_one()
    )
    detail = {"enhancement_id": enhancement_id, "pattern_id": pattern_id, "version": version, "kind": kind, "source": source}
    await _record(
        conn,
        experiment_id=None,
        action="enhancement_created",
        actor=actor or source,
        subject=f"enhancement:{enhancement_id}",
        title=f"New {kind} candidate v{version} for pattern {pattern_id}",
        detail=detail,
    )
    return enhancement_id


async def get_enhancement(conn: AsyncConnection, enhancement_id: int) -> dict[str, Any]:
    row = (await conn.execute(select(ENH).where(ENH.c.id == enhancement_id))).one_or_none()
    if row is None:
        raise LookupError(f"no enhancement {enhancement_id}")
    return _enhancement_dict(row)


async def list_enhancements(
    conn: AsyncConnection, *, status: str | None = None, pattern_id: int | None = None, limit: int = 200
) -> list[dict[str, Any]]:
    if status is not None and status not in ENHANCEMENT_STATUSES:
        raise ValueError(f"status must be one of {ENHANCEMENT_STATUSES}")
    query = select(ENH).order_by(ENH.c.id.desc()).limit(max(1, min(int(limit), 10_000)))
    if status is not None:
        query = query.where(ENH.c.status == status)
    if pattern_id is not None:
        query = query.where(ENH.c.pattern_id == pattern_id)
    return [_enhancement_dict(r) for r in (await conn.execute(query)).all()]


async def reject_enhancement(conn: AsyncConnection, enhancement_id: int, *, actor: str, reason: str = "") -> None:
    """Turn a candidate down without testing it (it stops blocking new candidates for its pattern)."""
    row = (
        await conn.execute(select(ENH.c.status, ENH.c.pattern_id).where(ENH.c.id == enhancement_id).with_for_update())
    ).one_or_none()
    if row is None:
        raise LookupError(f"no enhancement {enhancement_id}")
    if row.status != "candidate":
        raise ValueError(f"enhancement {enhancement_id} is {row.status}; only a candidate can be rejected")
    await conn.execute(update(ENH).where(ENH.c.id == enhancement_id).values(status="rejected", updated_at=func.now()))
    await _record(
        conn,
        experiment_id=None,
        action="enhancement_rejected",
        actor=actor,
        subject=f"enhancement:{enhancement_id}",
        title=f"Enhancement {enhancement_id} rejected",
        detail={"enhancement_id": enhancement_id, "pattern_id": row.pattern_id, "reason": reason},
    )


# ------------------------------------------------------------------------------------- experiments
async def list_experiments(conn: AsyncConnection, *, status: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """Experiments newest first, each with its enhancement and last computed ``stats``."""
    if status is not None and status not in EXPERIMENT_STATUSES:
        raise ValueError(f"status must be one of {EXPERIMENT_STATUSES}")
    query = (
        select(*_EXPERIMENT_COLUMNS)
        .select_from(EXP.join(ENH, ENH.c.id == EXP.c.enhancement_id))
        .order_by(EXP.c.id.desc())
        .limit(max(1, min(int(limit), 10_000)))
    )
    if status is not None:
        query = query.where(EXP.c.status == status)
    return [_experiment_dict(r) for r in (await conn.execute(query)).all()]


async def get_experiment(conn: AsyncConnection, experiment_id: int) -> dict[str, Any]:
    row = (
        await conn.execute(
            select(*_EXPERIMENT_COLUMNS)
            .select_from(EXP.join(ENH, ENH.c.id == EXP.c.enhancement_id))
            .where(EXP.c.id == experiment_id)
        )
    ).one_or_none()
    if row is None:
        raise LookupError(f"no experiment {experiment_id}")
    return _experiment_dict(row)


async def start_experiment(
    conn: AsyncConnection,
    enhancement_id: int,
    *,
    actor: str,
    control_weight: float = 0.5,
    assign_by: str = "session",
    alpha: float | None = None,
    min_effect: float | None = None,
    max_error_increase: float | None = None,
    max_cost_increase: float | None = None,
) -> int:
    """Start A/B-testing a candidate; returns the experiment id. Unset thresholds take the schema defaults."""
    if not 0.0 < control_weight < 1.0:
        raise ValueError("control_weight must be strictly between 0 and 1")
    if assign_by not in ASSIGN_BY:
        raise ValueError(f"assign_by must be one of {ASSIGN_BY}")
    if alpha is not None and not 0.0 < alpha < 1.0:
        raise ValueError("alpha must be strictly between 0 and 1")
    peek = (await conn.execute(select(ENH.c.pattern_id).where(ENH.c.id == enhancement_id))).one_or_none()
    if peek is None:
        raise LookupError(f"no enhancement {enhancement_id}")
    await _lock_pattern(conn, peek.pattern_id)
    enh = (await conn.execute(select(ENH).where(ENH.c.id == enhancement_id).with_for_update())).one()
    if enh.status != "candidate":
        raise ValueError(f"enhancement {enhancement_id} is {enh.status}; only a candidate can be tested")
    if enh.pattern_id is not None:
        open_id = (
            await conn.execute(
                select(EXP.c.id).where(and_(EXP.c.pattern_id == enh.pattern_id, EXP.c.status.in_(OPEN_STATUSES))).limit(1)
            )
        ).scalar_one_or_none()
        if open_id is not None:
            raise ValueError(f"pattern {enh.pattern_id} already has experiment {open_id} open")
    values: dict[str, Any] = {
        "enhancement_id": enhancement_id,
        "pattern_id": enh.pattern_id,
        "status": "running",
        "control_weight": control_weight,
        "assign_by": assign_by,
        "created_by": actor,
    }
    for key, value in (
        ("alpha", alpha),
        ("min_effect", min_effect),
        ("max_error_increase", max_error_increase),
        ("max_cost_increase", max_cost_increase),
    ):
        if value is not None:
            values[key] = value
    experiment_id = int((await conn.execute(insert(EXP).values(**values).returning(EXP.c.id))).scalar_one())
    await conn.execute(update(ENH).where(ENH.c.id == enhancement_id).values(status="testing", updated_at=func.now()))
    detail = {
        "experiment_id": experiment_id,
        "enhancement_id": enhancement_id,
        "pattern_id": enh.pattern_id,
        "kind": enh.kind,
        "version": enh.version,
        "control_weight": control_weight,
        "assign_by": assign_by,
    }
    await _record(
        conn,
        experiment_id=experiment_id,
        action="started",
        actor=actor,
        subject=f"experiment:{experiment_id}",
        title=f"Experiment {experiment_id} started: {enh.kind} v{enh.version} on pattern {enh.pattern_id}",
        detail=detail,
    )
    return experiment_id


async def lock_experiment(conn: AsyncConnection, experiment_id: int) -> Any:
    """The experiment's row, locked for the transaction (pattern lock first: the order every change uses)."""
    peek = (await conn.execute(select(EXP.c.pattern_id).where(EXP.c.id == experiment_id))).one_or_none()
    if peek is None:
        raise LookupError(f"no experiment {experiment_id}")
    await _lock_pattern(conn, peek.pattern_id)
    return (await conn.execute(select(EXP).where(EXP.c.id == experiment_id).with_for_update())).one()


def _require(exp: Any, allowed: tuple[str, ...], action: str) -> None:
    if exp.status not in allowed:
        raise ValueError(f"experiment {exp.id} is {exp.status}; cannot {action} (needs {' or '.join(allowed)})")


async def pause_experiment(conn: AsyncConnection, experiment_id: int, *, actor: str, reason: str = "") -> None:
    """Stop assigning the variant (every request gets control) while keeping the experiment open."""
    exp = await lock_experiment(conn, experiment_id)
    _require(exp, ("running",), "pause")
    await conn.execute(update(EXP).where(EXP.c.id == experiment_id).values(status="paused", updated_at=func.now()))
    await _record(
        conn,
        experiment_id=experiment_id,
        action="paused",
        actor=actor,
        subject=f"experiment:{experiment_id}",
        title=f"Experiment {experiment_id} paused",
        detail={"experiment_id": experiment_id, "pattern_id": exp.pattern_id, "reason": reason},
    )


async def resume_experiment(conn: AsyncConnection, experiment_id: int, *, actor: str) -> None:
    exp = await lock_experiment(conn, experiment_id)
    _require(exp, ("paused",), "resume")
    await conn.execute(update(EXP).where(EXP.c.id == experiment_id).values(status="running", updated_at=func.now()))
    await _record(
        conn,
        experiment_id=experiment_id,
        action="resumed",
        actor=actor,
        subject=f"experiment:{experiment_id}",
        title=f"Experiment {experiment_id} resumed",
        detail={"experiment_id": experiment_id, "pattern_id": exp.pattern_id},
    )


async def promote_experiment(conn: AsyncConnection, experiment_id: int, *, actor: str, reason: str = "") -> None:
    """Make the variant the pattern's active enhancement (applied to every request)."""
    exp = await lock_experiment(conn, experiment_id)
    _require(exp, OPEN_STATUSES, "promote")
    retired: list[int] = []
    if exp.pattern_id is not None:
        retired = [
            int(r)
            for r in (
                await conn.execute(
                    update(ENH)
                    .where(and_(ENH.c.pattern_id == exp.pattern_id, ENH.c.status == "active", ENH.c.id != exp.enhancement_id))
                    .values(status="retired", updated_at=func.now())
                    .returning(ENH.c.id)
                )
            ).scalars()
        ]
    await conn.execute(update(ENH).where(ENH.c.id == exp.enhancement_id).values(status="active", updated_at=func.now()))
    await conn.execute(
        update(EXP)
        .where(EXP.c.id == experiment_id)
        .values(status="promoted", decision_reason=reason, decided_at=func.now(), updated_at=func.now())
    )
    await _record(
        conn,
        experiment_id=experiment_id,
        action="promoted",
        actor=actor,
        subject=f"experiment:{experiment_id}",
        title=f"Experiment {experiment_id} promoted: enhancement {exp.enhancement_id} active on pattern {exp.pattern_id}",
        detail={
            "experiment_id": experiment_id,
            "enhancement_id": exp.enhancement_id,
            "pattern_id": exp.pattern_id,
            "retired": retired,
            "reason": reason,
        },
    )


async def rollback_experiment(conn: AsyncConnection, experiment_id: int, *, actor: str, reason: str = "") -> None:
    """Withdraw the variant. Also undoes a promotion whose enhancement is still the active one."""
    exp = await lock_experiment(conn, experiment_id)
    _require(exp, (*OPEN_STATUSES, "promoted"), "roll back")
    enh_status = (await conn.execute(select(ENH.c.status).where(ENH.c.id == exp.enhancement_id))).scalar_one()
    if exp.status == "promoted" and enh_status != "active":
        raise ValueError(f"experiment {experiment_id}'s enhancement is {enh_status}, no longer active")
    await conn.execute(update(ENH).where(ENH.c.id == exp.enhancement_id).values(status="rolled_back", updated_at=func.now()))
    await conn.execute(
        update(EXP)
        .where(EXP.c.id == experiment_id)
        .values(status="rolled_back", decision_reason=reason, decided_at=func.now(), updated_at=func.now())
    )
    await _record(
        conn,
        experiment_id=experiment_id,
        action="rolled_back",
        actor=actor,
        subject=f"experiment:{experiment_id}",
        severity="warning",
        title=f"Experiment {experiment_id} rolled back on pattern {exp.pattern_id}",
        detail={
            "experiment_id": experiment_id,
            "enhancement_id": exp.enhancement_id,
            "pattern_id": exp.pattern_id,
            "was": exp.status,
            "reason": reason,
        },
    )


async def experiment_history(conn: AsyncConnection, experiment_id: int) -> list[dict[str, Any]]:
    """The experiment's history rows, oldest first."""
    exists = (await conn.execute(select(EXP.c.id).where(EXP.c.id == experiment_id))).scalar_one_or_none()
    if exists is None:
        raise LookupError(f"no experiment {experiment_id}")
    rows = (await conn.execute(select(EVT).where(EVT.c.experiment_id == experiment_id).order_by(EVT.c.at, EVT.c.id))).all()
    return [
        {"id": r.id, "experiment_id": r.experiment_id, "at": _iso(r.at), "action": r.action, "actor": r.actor, "detail": r.detail}
        for r in rows
    ]


async def save_stats(conn: AsyncConnection, experiment_id: int, stats: dict[str, Any]) -> None:
    """Store the evaluator's latest figures (no history row: they change every tick)."""
    await conn.execute(update(EXP).where(EXP.c.id == experiment_id).values(stats=stats, updated_at=func.now()))


__all__ = [
    "create_enhancement",
    "experiment_history",
    "get_enhancement",
    "get_experiment",
    "list_enhancements",
    "list_experiments",
    "lock_experiment",
    "pause_experiment",
    "promote_experiment",
    "reject_enhancement",
    "resume_experiment",
    "rollback_experiment",
    "save_stats",
    "start_experiment",
]

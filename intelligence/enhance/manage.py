"""Enhancements and their experiments: creation, the experiment life cycle, and its history.

Every function takes an :class:`AsyncConnection` inside the caller's transaction (``engine.begin()``)
and never commits, so a change, its history row (``experiment_events``), its audit entry and its
event-feed row commit or roll back together. Unknown ids raise :class:`LookupError`; a change the
current state does not allow raises :class:`ValueError`.

Life cycle::

    enhancement candidate --start--> testing --promote--> active (the previous active one of its pattern and scope: retired)
               \\--reject / screening--> rejected     \\--rollback--> rolled_back
    experiment pending --approve--> running <--pause/resume--> paused;  pending --rollback--> stopped (declined)
               running|paused --promote (or approve a requested promotion)--> promoted
               running|paused|promoted --rollback--> rolled_back

Approvals (intelligence/enhance/approval.py): machine actors call :func:`propose_experiment` and
:func:`request_promotion`; an admin calls :func:`approve_experiment` (or :func:`start_experiment` /
:func:`promote_experiment` directly, which is their decision). In automatic mode the proposal is
approved at once, recorded with mode ``auto``.

Scope: an enhancement (and its experiment) has a ``scope``, the gateway key id whose traffic it was
learned from and applies to, or None for every request. At most one pending, running or paused
experiment per pattern and scope, and a global one excludes scoped ones of the same pattern: two
concurrent changes of the same traffic would make both outcomes meaningless. Changes of one pattern
are serialised by a transaction-scoped advisory lock, so the check holds across replicas.

Every candidate's text is screened (intelligence/enhance/screening.py) before it is stored; one that
trips the injection or secret detector is stored ``rejected`` with the reason.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, and_, func, insert, or_, select, text, true, update
from sqlalchemy.ext.asyncio import AsyncConnection

from intelligence.audit.log import AuditLog
from intelligence.events import publish

from .approval import auto_approval
from .models import ENHANCEMENT_STATUSES, EXPERIMENT_STATUSES, Enhancement, Experiment, ExperimentEvent
from .screening import Screening, screen_spec
from .spec import parse_spec

ENH = cast(Table, Enhancement.__table__)
EXP = cast(Table, Experiment.__table__)
EVT = cast(Table, ExperimentEvent.__table__)

SOURCES = ("claude", "operator", "simulation")
ASSIGN_BY = ("session", "client")
OPEN_STATUSES = ("running", "paused")
BLOCKING_STATUSES = ("pending", "running", "paused")  # one of these per pattern and scope at a time
ANY_SCOPE: Any = object()  # list filters: do not filter by scope
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
        "scope": m["scope"],
        "screening": m["screening"] or {},
        "status_reason": m["status_reason"],
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
    EXP.c.scope,
    EXP.c.awaiting,
    EXP.c.awaiting_reason,
    EXP.c.awaiting_since,
    ENH.c.kind.label("kind"),
    ENH.c.spec.label("spec"),
    ENH.c.version.label("version"),
    ENH.c.rationale.label("rationale"),
    ENH.c.status.label("enhancement_status"),
    ENH.c.source.label("source"),
]


def _experiment_dict(row: Any) -> dict[str, Any]:
    m = dict(row._mapping)
    for key in ("started_at", "updated_at", "decided_at", "awaiting_since"):
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
    scope: str | None = None,
    screening: Screening | None = None,
) -> int:
    """Store a validated candidate as the pattern's next version; returns its id.

    The spec's text is screened first (``screening`` when the caller already ran
    :func:`~intelligence.enhance.screening.screen_spec`): a candidate that trips a detector is stored
    with status ``rejected`` and the reason, so it can never be started. Raises ValueError (a
    :class:`~intelligence.enhance.spec.SpecError`) for an invalid spec.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, not {source!r}")
    canonical = parse_spec(kind, spec).to_dict()
    screening = screening if screening is not None else screen_spec(kind, canonical)
    status = "candidate" if screening.ok else "rejected"
    status_reason = "" if screening.ok else f"screening: {screening.reason}"[:4000]
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
                    status=status,
                    status_reason=status_reason,
                    screening=screening.to_dict(),
                    scope=scope,
                    claude_call_id=claude_call_id,
                )
                .returning(ENH.c.id)
            )
        ).scalar_one()
    )
    detail = {
        "enhancement_id": enhancement_id,
        "pattern_id": pattern_id,
        "version": version,
        "kind": kind,
        "source": source,
        "scope": scope,
    }
    await _record(
        conn,
        experiment_id=None,
        action="enhancement_created",
        actor=actor or source,
        subject=f"enhancement:{enhancement_id}",
        title=f"New {kind} candidate v{version} for pattern {pattern_id}",
        detail=detail,
    )
    if not screening.ok:
        await _record(
            conn,
            experiment_id=None,
            action="enhancement_rejected",
            actor="screening",
            subject=f"enhancement:{enhancement_id}",
            severity="warning",
            title=f"Enhancement {enhancement_id} rejected by screening",
            detail={**detail, "reason": status_reason, "screening": screening.to_dict()},
        )
    return enhancement_id


async def get_enhancement(conn: AsyncConnection, enhancement_id: int) -> dict[str, Any]:
    row = (await conn.execute(select(ENH).where(ENH.c.id == enhancement_id))).one_or_none()
    if row is None:
        raise LookupError(f"no enhancement {enhancement_id}")
    return _enhancement_dict(row)


async def list_enhancements(
    conn: AsyncConnection,
    *,
    status: str | None = None,
    pattern_id: int | None = None,
    limit: int = 200,
    scope: Any = ANY_SCOPE,
) -> list[dict[str, Any]]:
    """Newest first; ``scope`` (a key id, or None for global ones) filters when given."""
    if status is not None and status not in ENHANCEMENT_STATUSES:
        raise ValueError(f"status must be one of {ENHANCEMENT_STATUSES}")
    query = select(ENH).order_by(ENH.c.id.desc()).limit(max(1, min(int(limit), 10_000)))
    if status is not None:
        query = query.where(ENH.c.status == status)
    if pattern_id is not None:
        query = query.where(ENH.c.pattern_id == pattern_id)
    if scope is not ANY_SCOPE:
        query = query.where(ENH.c.scope.is_(None) if scope is None else ENH.c.scope == scope)
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
    await conn.execute(
        update(ENH)
        .where(ENH.c.id == enhancement_id)
        .values(status="rejected", status_reason=f"rejected by {actor}: {reason}"[:4000], updated_at=func.now())
    )
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


async def _open_conflict(conn: AsyncConnection, pattern_id: int | None, scope: str | None) -> int | None:
    """An experiment that blocks a new one on this pattern and scope (same scope, or either global)."""
    if pattern_id is None:
        return None
    # a global experiment overlaps every scope; a scoped one overlaps global ones and its own scope
    overlaps = true() if scope is None else or_(EXP.c.scope.is_(None), EXP.c.scope == scope)
    return (
        await conn.execute(
            select(EXP.c.id).where(and_(EXP.c.pattern_id == pattern_id, EXP.c.status.in_(BLOCKING_STATUSES), overlaps)).limit(1)
        )
    ).scalar_one_or_none()


async def _create_experiment(
    conn: AsyncConnection,
    enhancement_id: int,
    *,
    actor: str,
    status: str,
    control_weight: float,
    assign_by: str,
    alpha: float | None,
    min_effect: float | None,
    max_error_increase: float | None,
    max_cost_increase: float | None,
    reason: str = "",
) -> tuple[int, Any]:
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
        why = f" ({enh.status_reason})" if enh.status_reason else ""
        raise ValueError(f"enhancement {enhancement_id} is {enh.status}{why}; only a candidate can be tested")
    open_id = await _open_conflict(conn, enh.pattern_id, enh.scope)
    if open_id is not None:
        raise ValueError(f"pattern {enh.pattern_id} already has experiment {open_id} open")
    values: dict[str, Any] = {
        "enhancement_id": enhancement_id,
        "pattern_id": enh.pattern_id,
        "scope": enh.scope,
        "status": status,
        "control_weight": control_weight,
        "assign_by": assign_by,
        "created_by": actor,
    }
    if status == "pending":
        values.update(awaiting="start", awaiting_reason=reason, awaiting_since=func.now())
    for key, value in (
        ("alpha", alpha),
        ("min_effect", min_effect),
        ("max_error_increase", max_error_increase),
        ("max_cost_increase", max_cost_increase),
    ):
        if value is not None:
            values[key] = value
    experiment_id = int((await conn.execute(insert(EXP).values(**values).returning(EXP.c.id))).scalar_one())
    return experiment_id, enh


def _started_detail(experiment_id: int, enh: Any, control_weight: float, assign_by: str, approval: str) -> dict[str, Any]:
    return {
        "experiment_id": experiment_id,
        "enhancement_id": enh.id,
        "pattern_id": enh.pattern_id,
        "scope": enh.scope,
        "kind": enh.kind,
        "version": enh.version,
        "control_weight": control_weight,
        "assign_by": assign_by,
        "approval": approval,
    }


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
    """An admin starts A/B-testing a candidate now (their decision is the approval); returns the
    experiment id. Callers check that ``actor`` is an admin (control API, dashboard). Machine actors
    use :func:`propose_experiment`. Unset thresholds take the schema defaults."""
    experiment_id, enh = await _create_experiment(
        conn,
        enhancement_id,
        actor=actor,
        status="running",
        control_weight=control_weight,
        assign_by=assign_by,
        alpha=alpha,
        min_effect=min_effect,
        max_error_increase=max_error_increase,
        max_cost_increase=max_cost_increase,
    )
    await conn.execute(update(ENH).where(ENH.c.id == enhancement_id).values(status="testing", updated_at=func.now()))
    await _record(
        conn,
        experiment_id=experiment_id,
        action="started",
        actor=actor,
        subject=f"experiment:{experiment_id}",
        title=f"Experiment {experiment_id} started: {enh.kind} v{enh.version} on pattern {enh.pattern_id}",
        detail=_started_detail(experiment_id, enh, control_weight, assign_by, "admin"),
    )
    return experiment_id


async def propose_experiment(
    conn: AsyncConnection,
    enhancement_id: int,
    *,
    actor: str,
    reason: str = "",
    auto: bool | None = None,
    control_weight: float = 0.5,
    assign_by: str = "session",
    alpha: float | None = None,
    min_effect: float | None = None,
    max_error_increase: float | None = None,
    max_cost_increase: float | None = None,
) -> int:
    """A machine actor (the candidate job) asks to test a candidate: the experiment is created
    ``pending``, awaiting an admin's approval to start. In automatic mode (``auto``, default the
    policy flag of intelligence/enhance/approval.py) it is approved and started at once."""
    experiment_id, enh = await _create_experiment(
        conn,
        enhancement_id,
        actor=actor,
        status="pending",
        control_weight=control_weight,
        assign_by=assign_by,
        alpha=alpha,
        min_effect=min_effect,
        max_error_increase=max_error_increase,
        max_cost_increase=max_cost_increase,
        reason=reason,
    )
    await _record(
        conn,
        experiment_id=experiment_id,
        action="proposed",
        actor=actor,
        subject=f"experiment:{experiment_id}",
        title=f"Experiment {experiment_id} awaits approval to start: {enh.kind} v{enh.version} on pattern {enh.pattern_id}",
        detail={**_started_detail(experiment_id, enh, control_weight, assign_by, "pending"), "reason": reason},
    )
    if auto_approval() if auto is None else auto:
        await approve_experiment(conn, experiment_id, actor=actor, reason="automatic mode", mode="auto")
    return experiment_id


async def request_promotion(conn: AsyncConnection, experiment_id: int, *, actor: str, reason: str = "") -> bool:
    """The evaluator's promote decision in manual mode: the experiment keeps running and awaits an
    admin's approval. False when it was already awaiting it (nothing recorded twice)."""
    exp = await lock_experiment(conn, experiment_id)
    _require(exp, OPEN_STATUSES, "request a promotion")
    if exp.awaiting == "promote":
        await conn.execute(update(EXP).where(EXP.c.id == experiment_id).values(awaiting_reason=reason))
        return False
    await conn.execute(
        update(EXP)
        .where(EXP.c.id == experiment_id)
        .values(awaiting="promote", awaiting_reason=reason, awaiting_since=func.now(), updated_at=func.now())
    )
    await _record(
        conn,
        experiment_id=experiment_id,
        action="promotion_requested",
        actor=actor,
        subject=f"experiment:{experiment_id}",
        title=f"Experiment {experiment_id} awaits approval to promote enhancement {exp.enhancement_id}",
        detail={
            "experiment_id": experiment_id,
            "enhancement_id": exp.enhancement_id,
            "pattern_id": exp.pattern_id,
            "reason": reason,
        },
    )
    return True


async def approve_experiment(
    conn: AsyncConnection, experiment_id: int, *, actor: str, reason: str = "", mode: str = "admin"
) -> str:
    """Approve what the experiment awaits: ``start`` (pending -> running) or ``promote`` (a promotion
    the evaluator requested). Returns which. Callers check that ``actor`` is an admin (or ``mode``
    is ``auto``, the policy flag). Raises ValueError when nothing awaits approval."""
    if mode not in ("admin", "auto"):
        raise ValueError("mode must be admin or auto")
    exp = await lock_experiment(conn, experiment_id)
    what = exp.awaiting if exp.status in BLOCKING_STATUSES else None
    if what == "start" and exp.status != "pending":
        what = None
    if what == "promote" and exp.status not in OPEN_STATUSES:
        what = None
    if what is None:
        raise ValueError(f"experiment {experiment_id} is {exp.status} and awaits no approval")
    detail = {
        "experiment_id": experiment_id,
        "enhancement_id": exp.enhancement_id,
        "pattern_id": exp.pattern_id,
        "scope": exp.scope,
        "approved": what,
        "mode": mode,
        "request": exp.awaiting_reason,
        "reason": reason,
    }
    await _record(
        conn,
        experiment_id=experiment_id,
        action="approved",
        actor=actor,
        subject=f"experiment:{experiment_id}",
        title=f"Experiment {experiment_id}: {what} approved by {actor} ({mode})",
        detail=detail,
    )
    if what == "promote":
        await promote_experiment(conn, experiment_id, actor=actor, reason=exp.awaiting_reason or reason, approval=mode)
        return what
    enh = (await conn.execute(select(ENH).where(ENH.c.id == exp.enhancement_id).with_for_update())).one()
    if enh.status != "candidate":
        raise ValueError(f"enhancement {enh.id} is {enh.status}; only a candidate can be tested")
    await conn.execute(
        update(EXP)
        .where(EXP.c.id == experiment_id)
        .values(status="running", awaiting=None, awaiting_since=None, started_at=func.now(), updated_at=func.now())
    )
    await conn.execute(update(ENH).where(ENH.c.id == enh.id).values(status="testing", updated_at=func.now()))
    await _record(
        conn,
        experiment_id=experiment_id,
        action="started",
        actor=actor,
        subject=f"experiment:{experiment_id}",
        title=f"Experiment {experiment_id} started: {enh.kind} v{enh.version} on pattern {enh.pattern_id}",
        detail=_started_detail(experiment_id, enh, exp.control_weight, exp.assign_by, mode),
    )
    return what


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


async def promote_experiment(
    conn: AsyncConnection, experiment_id: int, *, actor: str, reason: str = "", approval: str = "admin"
) -> None:
    """Make the variant the active enhancement of its pattern and scope (applied to every request of
    them). Called by an admin directly, or through :func:`approve_experiment`."""
    exp = await lock_experiment(conn, experiment_id)
    _require(exp, OPEN_STATUSES, "promote")
    retired: list[int] = []
    if exp.pattern_id is not None:
        same_scope = ENH.c.scope.is_(None) if exp.scope is None else ENH.c.scope == exp.scope
        retired = [
            int(r)
            for r in (
                await conn.execute(
                    update(ENH)
                    .where(
                        and_(
                            ENH.c.pattern_id == exp.pattern_id,
                            same_scope,
                            ENH.c.status == "active",
                            ENH.c.id != exp.enhancement_id,
                        )
                    )
                    .values(status="retired", updated_at=func.now())
                    .returning(ENH.c.id)
                )
            ).scalars()
        ]
    await conn.execute(update(ENH).where(ENH.c.id == exp.enhancement_id).values(status="active", updated_at=func.now()))
    await conn.execute(
        update(EXP)
        .where(EXP.c.id == experiment_id)
        .values(
            status="promoted",
            decision_reason=reason,
            decided_at=func.now(),
            updated_at=func.now(),
            awaiting=None,
            awaiting_since=None,
        )
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
            "scope": exp.scope,
            "retired": retired,
            "reason": reason,
            "approval": approval,
        },
    )


async def rollback_experiment(conn: AsyncConnection, experiment_id: int, *, actor: str, reason: str = "") -> None:
    """Withdraw the variant. Also undoes a promotion whose enhancement is still the active one, and
    declines a pending experiment (it becomes ``stopped``, its candidate ``rejected``)."""
    exp = await lock_experiment(conn, experiment_id)
    _require(exp, (*BLOCKING_STATUSES, "promoted"), "roll back")
    enh_status = (await conn.execute(select(ENH.c.status).where(ENH.c.id == exp.enhancement_id))).scalar_one()
    if exp.status == "promoted" and enh_status != "active":
        raise ValueError(f"experiment {experiment_id}'s enhancement is {enh_status}, no longer active")
    declined = exp.status == "pending"
    await conn.execute(
        update(ENH)
        .where(ENH.c.id == exp.enhancement_id)
        .values(
            status="rejected" if declined else "rolled_back",
            status_reason=(f"declined by {actor}: {reason}" if declined else f"rolled back by {actor}: {reason}")[:4000],
            updated_at=func.now(),
        )
    )
    await conn.execute(
        update(EXP)
        .where(EXP.c.id == experiment_id)
        .values(
            status="stopped" if declined else "rolled_back",
            decision_reason=reason,
            decided_at=func.now(),
            updated_at=func.now(),
            awaiting=None,
            awaiting_since=None,
        )
    )
    await _record(
        conn,
        experiment_id=experiment_id,
        action="declined" if declined else "rolled_back",
        actor=actor,
        subject=f"experiment:{experiment_id}",
        severity="info" if declined else "warning",
        title=f"Experiment {experiment_id} {'declined' if declined else 'rolled back'} on pattern {exp.pattern_id}",
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
    "ANY_SCOPE",
    "approve_experiment",
    "create_enhancement",
    "experiment_history",
    "get_enhancement",
    "get_experiment",
    "list_enhancements",
    "list_experiments",
    "lock_experiment",
    "pause_experiment",
    "promote_experiment",
    "propose_experiment",
    "reject_enhancement",
    "request_promotion",
    "resume_experiment",
    "rollback_experiment",
    "save_stats",
    "start_experiment",
]

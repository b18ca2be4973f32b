"""ORM mapping of enhancements and experiments (migration 0006_intelligence owns the schema).

An enhancement is one versioned change to the requests of one pattern; an experiment A/B-tests it.
Triggers NOTIFY ``llmproxy_experiments`` on every change to either table, so each sidecar reloads
the set of changes it applies at once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    Identity,
    Index,
    Integer,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

import intelligence.claude.models
import intelligence.memory.models  # noqa: F401  (patterns)
from intelligence.store.models import Base

NOTIFY_CHANNEL = "llmproxy_experiments"
KINDS = ("system_prompt", "instruction_rewrite", "parameters", "tool_description")
ENHANCEMENT_STATUSES = ("candidate", "testing", "active", "rolled_back", "rejected", "retired")
EXPERIMENT_STATUSES = ("pending", "running", "paused", "promoted", "rolled_back", "stopped")
AWAITING = ("start", "promote")  # what an experiment waits for an admin to approve


class Enhancement(Base):
    __tablename__ = "enhancements"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    pattern_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("patterns.id", ondelete="SET NULL"))
    version: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    kind: Mapped[str] = mapped_column(Text)
    spec: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    rationale: Mapped[str] = mapped_column(Text, server_default=text("''"))
    source: Mapped[str] = mapped_column(Text, server_default=text("'claude'"))  # claude | operator | simulation
    status: Mapped[str] = mapped_column(Text, server_default=text("'candidate'"))
    claude_call_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("claude_calls.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # migration 0014_learning_loop: the gateway key whose traffic it applies to (NULL: every request),
    # what the detectors found in its text, and why it has its status (e.g. rejected by screening)
    scope: Mapped[str | None] = mapped_column(Text)
    screening: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    status_reason: Mapped[str] = mapped_column(Text, server_default=text("''"))

    __table_args__ = (
        CheckConstraint(
            "kind IN ('system_prompt', 'instruction_rewrite', 'parameters', 'tool_description')", name="ck_enhancements_kind"
        ),
        CheckConstraint(
            "status IN ('candidate', 'testing', 'active', 'rolled_back', 'rejected', 'retired')", name="ck_enhancements_status"
        ),
        UniqueConstraint("pattern_id", "version", name="uq_enhancements_pattern_version"),
        Index("ix_enhancements_status", "status"),
        Index("ix_enhancements_pattern_scope", "pattern_id", "scope"),
    )


class Experiment(Base):
    __tablename__ = "experiments"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    enhancement_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("enhancements.id", ondelete="CASCADE"))
    pattern_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("patterns.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(Text, server_default=text("'running'"))
    control_weight: Mapped[float] = mapped_column(Double, server_default=text("0.5"))
    assign_by: Mapped[str] = mapped_column(Text, server_default=text("'session'"))
    alpha: Mapped[float] = mapped_column(Double, server_default=text("0.05"))
    min_effect: Mapped[float] = mapped_column(Double, server_default=text("0.05"))
    max_error_increase: Mapped[float] = mapped_column(Double, server_default=text("0.05"))
    max_cost_increase: Mapped[float] = mapped_column(Double, server_default=text("0.5"))
    stats: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    decision_reason: Mapped[str] = mapped_column(Text, server_default=text("''"))
    created_by: Mapped[str] = mapped_column(Text, server_default=text("''"))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # migration 0014_learning_loop
    scope: Mapped[str | None] = mapped_column(Text)
    awaiting: Mapped[str | None] = mapped_column(Text)  # start | promote: waiting for an admin's approval
    awaiting_reason: Mapped[str] = mapped_column(Text, server_default=text("''"))
    awaiting_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint(
            "status IN ('pending', 'running', 'paused', 'promoted', 'rolled_back', 'stopped')", name="ck_experiments_status"
        ),
        CheckConstraint("awaiting IS NULL OR awaiting IN ('start', 'promote')", name="ck_experiments_awaiting"),
        CheckConstraint("assign_by IN ('session', 'client')", name="ck_experiments_assign_by"),
        CheckConstraint("control_weight > 0 AND control_weight < 1", name="ck_experiments_control_weight"),
        Index("ix_experiments_status", "status"),
    )


class ExperimentEvent(Base):
    """The history of an experiment: started, paused, resumed, promoted, rolled_back, checked ..."""

    __tablename__ = "experiment_events"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    experiment_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("experiments.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    action: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(Text)
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))

    __table_args__ = (Index("ix_experiment_events_experiment_at", "experiment_id", "at"),)

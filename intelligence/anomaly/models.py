"""ORM mapping of anomaly verdicts and the verdict memory (migration 0006_intelligence owns the schema).

A verdict row starts ``pending`` when a local detector raises a suspicion; the judge fills in
verdict, confidence, reasoning and source (claude, memory: a near-duplicate of a confirmed case, or
local: no Claude configured). ``verdict_memory`` holds confirmed cases as embeddings, so that
near-duplicates are judged without calling Claude again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    Identity,
    Index,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

import intelligence.claude.models  # noqa: F401  (claude_calls: the foreign key below resolves in one metadata)
from intelligence.memory.models import EMBEDDING_DIM
from intelligence.store.models import Base

VERDICTS = ("benign", "suspicious", "malicious")


class AnomalyVerdict(Base):
    __tablename__ = "anomaly_verdicts"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    request_id: Mapped[str | None] = mapped_column(Text)
    client_key_fp: Mapped[str | None] = mapped_column(Text)
    detectors: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=text("'{}'::text[]"))
    suspicion: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    status: Mapped[str] = mapped_column(Text, server_default=text("'pending'"))
    verdict: Mapped[str | None] = mapped_column(Text)
    confidence: Mapped[float | None] = mapped_column(Double)
    reasoning: Mapped[str] = mapped_column(Text, server_default=text("''"))
    source: Mapped[str | None] = mapped_column(Text)
    claude_call_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("claude_calls.id", ondelete="SET NULL"))
    memory_id: Mapped[int | None] = mapped_column(BigInteger)
    action: Mapped[str | None] = mapped_column(Text)  # the automated response taken, if any
    confirmed: Mapped[str | None] = mapped_column(Text)  # attack | false_positive, by an operator or a confident verdict
    confirmed_by: Mapped[str | None] = mapped_column(Text)
    judged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint("status IN ('pending', 'judged', 'error', 'skipped')", name="ck_anomaly_verdicts_status"),
        CheckConstraint(
            "verdict IS NULL OR verdict IN ('benign', 'suspicious', 'malicious')", name="ck_anomaly_verdicts_verdict"
        ),
        CheckConstraint("source IS NULL OR source IN ('claude', 'memory', 'local')", name="ck_anomaly_verdicts_source"),
        CheckConstraint("confirmed IS NULL OR confirmed IN ('attack', 'false_positive')", name="ck_anomaly_verdicts_confirmed"),
        Index("ix_anomaly_verdicts_at", "at"),
        Index("ix_anomaly_verdicts_status", "status"),
        Index("ix_anomaly_verdicts_client_at", "client_key_fp", "at"),
        Index("ix_anomaly_verdicts_request", "request_id"),
    )


class VerdictMemory(Base):
    __tablename__ = "verdict_memory"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    embedding: Mapped[Any] = mapped_column(Vector(EMBEDDING_DIM))
    label: Mapped[str] = mapped_column(Text)  # attack | false_positive
    text_hash: Mapped[str] = mapped_column(Text)
    reasoning: Mapped[str] = mapped_column(Text, server_default=text("''"))
    verdict_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("anomaly_verdicts.id", ondelete="SET NULL"))
    hits: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        CheckConstraint("label IN ('attack', 'false_positive')", name="ck_verdict_memory_label"),
        UniqueConstraint("text_hash", name="uq_verdict_memory_text_hash"),
        Index("ix_verdict_memory_hnsw", "embedding", postgresql_using="hnsw", postgresql_ops={"embedding": "vector_cosine_ops"}),
    )

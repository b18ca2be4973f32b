"""ORM mapping of the pattern-memory tables (migration 0002_pattern_memory owns the schema).

The tables join the request log's :class:`~intelligence.store.models.Base`, so one metadata
describes the database; tests/intelligence/test_memory_schema.py compares the two.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    Identity,
    Index,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from intelligence.store.models import Base

# all-MiniLM-L6-v2 gives 384 dimensions. Another model needs the same number here and in the
# database; the migration reads this variable too, so set it before the first migration.
EMBEDDING_DIM = int(os.environ.get("LLMPROXY_EMBEDDING_DIM", "384"))

SIGNAL_KINDS = ("status", "finish", "tool_args", "retry", "feedback")
LABEL_SOURCES = ("heuristic", "claude")


class ExchangeEmbedding(Base):
    """The canonical prompt of one exchange, its embedding and the pattern it joined.

    ``embedding`` is NULL when the exchange carried nothing to embed (no user turn, system prompt
    or tools); the row still marks the exchange as processed.
    """

    __tablename__ = "exchange_embeddings"

    request_id: Mapped[str] = mapped_column(Text, ForeignKey("exchanges.request_id", ondelete="CASCADE"), primary_key=True)
    embedding: Mapped[Any | None] = mapped_column(Vector(EMBEDDING_DIM))
    canonical_hash: Mapped[str] = mapped_column(Text)
    pattern_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("patterns.id", ondelete="SET NULL"))
    similarity: Mapped[float | None] = mapped_column(Double)  # to the pattern centroid when it joined
    client_key_fp: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # the exchange's started_at
    embedded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        Index(
            "ix_exchange_embeddings_hnsw",
            "embedding",
            postgresql_using="hnsw",
            postgresql_ops={"embedding": "vector_cosine_ops"},
        ),
        Index("ix_exchange_embeddings_hash", "canonical_hash"),
        Index("ix_exchange_embeddings_pattern_created", "pattern_id", "created_at"),
        Index("ix_exchange_embeddings_client_created", "client_key_fp", "created_at"),
        Index("ix_exchange_embeddings_created", "created_at"),
    )


class Pattern(Base):
    """A group of similar prompts. A merged-away pattern keeps its row with ``redirect_to`` set."""

    __tablename__ = "patterns"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    centroid: Mapped[Any | None] = mapped_column(Vector(EMBEDDING_DIM))  # mean of members; NULL once redirected
    label: Mapped[str] = mapped_column(Text, server_default=text("''"))
    label_source: Mapped[str] = mapped_column(Text, server_default=text("'heuristic'"))
    examples: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    member_count: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    redirect_to: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("patterns.id", ondelete="SET NULL"))
    spread: Mapped[float] = mapped_column(Double, server_default=text("0"))  # mean cosine distance to centroid
    radius: Mapped[float] = mapped_column(Double, server_default=text("0"))  # max cosine distance to centroid
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        CheckConstraint("label_source IN ('heuristic', 'claude')", name="ck_patterns_label_source"),
        Index("ix_patterns_centroid_hnsw", "centroid", postgresql_using="hnsw", postgresql_ops={"centroid": "vector_cosine_ops"}),
        Index("ix_patterns_last_seen", "last_seen"),
    )


class PatternCount(Base):
    """Exchanges per pattern per hour and per day (a rollup kept by the worker)."""

    __tablename__ = "pattern_counts"

    pattern_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("patterns.id", ondelete="CASCADE"), primary_key=True)
    granularity: Mapped[str] = mapped_column(Text, primary_key=True)
    bucket: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))

    __table_args__ = (
        CheckConstraint("granularity IN ('hour', 'day')", name="ck_pattern_counts_granularity"),
        Index("ix_pattern_counts_granularity_bucket", "granularity", "bucket"),
    )


class PatternUsage(Base):
    """Which models and clients use a pattern, and how often."""

    __tablename__ = "pattern_usage"

    pattern_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("patterns.id", ondelete="CASCADE"), primary_key=True)
    dimension: Mapped[str] = mapped_column(Text, primary_key=True)  # model | client
    value: Mapped[str] = mapped_column(Text, primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (CheckConstraint("dimension IN ('model', 'client')", name="ck_pattern_usage_dimension"),)


class OutcomeSignal(Base):
    """One piece of evidence about how an exchange went. Stored per kind, so a rate can be explained.

    No foreign key on request_id: feedback may arrive before the exchange row is written.
    """

    __tablename__ = "outcome_signals"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    request_id: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text)
    ok: Mapped[bool] = mapped_column(Boolean)
    value: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        CheckConstraint("kind IN ('status', 'finish', 'tool_args', 'retry', 'feedback')", name="ck_outcome_signals_kind"),
        Index("ix_outcome_signals_request", "request_id"),
        Index("ix_outcome_signals_kind_created", "kind", "created_at"),
        # the worker may see an exchange twice (restart mid-batch): one signal per kind, except feedback
        Index("uq_outcome_signals_request_kind", "request_id", "kind", unique=True, postgresql_where=text("kind <> 'feedback'")),
    )


class Feedback(Base):
    """Explicit client feedback on a request (POST /v1/feedback), as posted."""

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    request_id: Mapped[str] = mapped_column(Text)
    score: Mapped[float | None] = mapped_column(Double)  # 0..1
    thumbs: Mapped[str | None] = mapped_column(Text)  # up | down
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        CheckConstraint("score IS NOT NULL OR thumbs IS NOT NULL", name="ck_feedback_has_value"),
        CheckConstraint("thumbs IS NULL OR thumbs IN ('up', 'down')", name="ck_feedback_thumbs"),
        CheckConstraint("score IS NULL OR (score >= 0 AND score <= 1)", name="ck_feedback_score_range"),
        Index("ix_feedback_request", "request_id"),
    )

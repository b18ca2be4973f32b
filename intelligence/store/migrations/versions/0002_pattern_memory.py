"""pattern memory: exchange embeddings, patterns, rollups, outcome signals, feedback

Revision ID: 0002_pattern_memory
Revises: 0001_request_log
Create Date: 2025-01-02
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects import postgresql as pg

revision: str = "0002_pattern_memory"
down_revision: str | Sequence[str] | None = "0001_request_log"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# 384 = all-MiniLM-L6-v2. Kept in step with intelligence.memory.models.EMBEDDING_DIM; read here
# rather than imported so this revision never changes when the models do.
DIM = int(os.environ.get("LLMPROXY_EMBEDDING_DIM", "384"))


def _ts(name: str, **kw: object) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), **kw)  # type: ignore[arg-type]


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")

    op.create_table(
        "patterns",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("centroid", Vector(DIM)),
        sa.Column("label", sa.Text(), nullable=False, server_default=sa.text("''")),
        sa.Column("label_source", sa.Text(), nullable=False, server_default=sa.text("'heuristic'")),
        sa.Column("examples", pg.JSONB(), nullable=False, server_default=sa.text("'[]'::jsonb")),
        sa.Column("member_count", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        _ts("first_seen", nullable=False),
        _ts("last_seen", nullable=False),
        sa.Column("redirect_to", sa.BigInteger(), sa.ForeignKey("patterns.id", ondelete="SET NULL")),
        sa.Column("spread", sa.Double(), nullable=False, server_default=sa.text("0")),
        sa.Column("radius", sa.Double(), nullable=False, server_default=sa.text("0")),
        _ts("created_at", nullable=False, server_default=sa.func.now()),
        _ts("updated_at", nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("label_source IN ('heuristic', 'claude')", name="ck_patterns_label_source"),
    )
    op.create_index(
        "ix_patterns_centroid_hnsw",
        "patterns",
        ["centroid"],
        postgresql_using="hnsw",
        postgresql_ops={"centroid": "vector_cosine_ops"},
    )
    op.create_index("ix_patterns_last_seen", "patterns", ["last_seen"])

    op.create_table(
        "exchange_embeddings",
        sa.Column("request_id", sa.Text(), sa.ForeignKey("exchanges.request_id", ondelete="CASCADE"), primary_key=True),
        sa.Column("embedding", Vector(DIM)),
        sa.Column("canonical_hash", sa.Text(), nullable=False),
        sa.Column("pattern_id", sa.BigInteger(), sa.ForeignKey("patterns.id", ondelete="SET NULL")),
        sa.Column("similarity", sa.Double()),
        sa.Column("client_key_fp", sa.Text()),
        sa.Column("model", sa.Text()),
        _ts("created_at", nullable=False),
        _ts("embedded_at", nullable=False, server_default=sa.func.now()),
    )
    op.create_index(
        "ix_exchange_embeddings_hnsw",
        "exchange_embeddings",
        ["embedding"],
        postgresql_using="hnsw",
        postgresql_ops={"embedding": "vector_cosine_ops"},
    )
    op.create_index("ix_exchange_embeddings_hash", "exchange_embeddings", ["canonical_hash"])
    op.create_index("ix_exchange_embeddings_pattern_created", "exchange_embeddings", ["pattern_id", "created_at"])
    op.create_index("ix_exchange_embeddings_client_created", "exchange_embeddings", ["client_key_fp", "created_at"])
    op.create_index("ix_exchange_embeddings_created", "exchange_embeddings", ["created_at"])

    op.create_table(
        "pattern_counts",
        sa.Column("pattern_id", sa.BigInteger(), sa.ForeignKey("patterns.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("granularity", sa.Text(), primary_key=True),
        _ts("bucket", primary_key=True),
        sa.Column("n", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.CheckConstraint("granularity IN ('hour', 'day')", name="ck_pattern_counts_granularity"),
    )
    op.create_index("ix_pattern_counts_granularity_bucket", "pattern_counts", ["granularity", "bucket"])

    op.create_table(
        "pattern_usage",
        sa.Column("pattern_id", sa.BigInteger(), sa.ForeignKey("patterns.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("dimension", sa.Text(), primary_key=True),
        sa.Column("value", sa.Text(), primary_key=True),
        sa.Column("n", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        _ts("last_seen", nullable=False),
        sa.CheckConstraint("dimension IN ('model', 'client')", name="ck_pattern_usage_dimension"),
    )

    op.create_table(
        "outcome_signals",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("request_id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("value", sa.Text()),
        sa.Column("detail", sa.Text()),
        _ts("created_at", nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("kind IN ('status', 'finish', 'tool_args', 'retry', 'feedback')", name="ck_outcome_signals_kind"),
    )
    op.create_index("ix_outcome_signals_request", "outcome_signals", ["request_id"])
    op.create_index("ix_outcome_signals_kind_created", "outcome_signals", ["kind", "created_at"])
    op.create_index(
        "uq_outcome_signals_request_kind",
        "outcome_signals",
        ["request_id", "kind"],
        unique=True,
        postgresql_where=sa.text("kind <> 'feedback'"),
    )

    op.create_table(
        "feedback",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("request_id", sa.Text(), nullable=False),
        sa.Column("score", sa.Double()),
        sa.Column("thumbs", sa.Text()),
        sa.Column("comment", sa.Text()),
        _ts("created_at", nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("score IS NOT NULL OR thumbs IS NOT NULL", name="ck_feedback_has_value"),
        sa.CheckConstraint("thumbs IS NULL OR thumbs IN ('up', 'down')", name="ck_feedback_thumbs"),
        sa.CheckConstraint("score IS NULL OR (score >= 0 AND score <= 1)", name="ck_feedback_score_range"),
    )
    op.create_index("ix_feedback_request", "feedback", ["request_id"])


def downgrade() -> None:
    op.drop_table("feedback")
    op.drop_table("outcome_signals")
    op.drop_table("pattern_usage")
    op.drop_table("pattern_counts")
    op.drop_table("exchange_embeddings")
    op.drop_table("patterns")

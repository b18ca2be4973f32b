"""intelligence: Claude call records, enhancements and experiments, anomaly verdicts and their
memory, and the event feed (alerts, decisions) with a NOTIFY trigger for live consumers

Revision ID: 0006_intelligence
Revises: 0005_policy_store
Create Date: 2026-11-27

See docs/intelligence.md.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0006_intelligence"
down_revision: str | Sequence[str] | None = "0005_policy_store"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DIM = int(os.environ.get("LLMPROXY_EMBEDDING_DIM", "384"))
_now = sa.func.now()

_NOTIFY = (
    """
CREATE FUNCTION llmproxy_events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('llmproxy_events', NEW.id::text);
    RETURN NULL;
END $$
""",
    """
CREATE TRIGGER events_notify AFTER INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION llmproxy_events_notify()
""",
    """
CREATE FUNCTION llmproxy_experiments_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('llmproxy_experiments', COALESCE(NEW.id, OLD.id)::text);
    RETURN NULL;
END $$
""",
    """
CREATE TRIGGER experiments_notify AFTER INSERT OR UPDATE OR DELETE ON experiments
    FOR EACH ROW EXECUTE FUNCTION llmproxy_experiments_notify()
""",
    """
CREATE TRIGGER enhancements_notify AFTER INSERT OR UPDATE OR DELETE ON enhancements
    FOR EACH ROW EXECUTE FUNCTION llmproxy_experiments_notify()
""",
)


def upgrade() -> None:
    op.create_table(
        "claude_calls",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
        sa.Column("purpose", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False, server_default=sa.text("''")),
        sa.Column("mode", sa.Text(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.Column("cache_read_tokens", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.Column("cache_write_tokens", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.Column("cost_usd", sa.Double(), nullable=False, server_default=sa.text("0")),
        sa.Column("latency_ms", sa.Double(), nullable=False, server_default=sa.text("0")),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("1")),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("error", sa.Text()),
        sa.CheckConstraint(
            "outcome IN ('ok', 'error', 'parse_error', 'timeout', 'overloaded', 'rate_limited', 'budget_exhausted')",
            name="ck_claude_calls_outcome",
        ),
    )
    op.create_index("ix_claude_calls_at", "claude_calls", ["at"])
    op.create_index("ix_claude_calls_purpose_at", "claude_calls", ["purpose", "at"])

    op.create_table(
        "enhancements",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("pattern_id", sa.BigInteger(), sa.ForeignKey("patterns.id", ondelete="SET NULL")),
        sa.Column("version", sa.Integer(), nullable=False, server_default=sa.text("1")),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("spec", JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("rationale", sa.Text(), nullable=False, server_default=sa.text("''")),
        sa.Column("source", sa.Text(), nullable=False, server_default=sa.text("'claude'")),
        sa.Column("status", sa.Text(), nullable=False, server_default=sa.text("'candidate'")),
        sa.Column("claude_call_id", sa.BigInteger(), sa.ForeignKey("claude_calls.id", ondelete="SET NULL")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
        sa.CheckConstraint(
            "kind IN ('system_prompt', 'instruction_rewrite', 'parameters', 'tool_description')", name="ck_enhancements_kind"
        ),
        sa.CheckConstraint(
            "status IN ('candidate', 'testing', 'active', 'rolled_back', 'rejected', 'retired')", name="ck_enhancements_status"
        ),
        sa.UniqueConstraint("pattern_id", "version", name="uq_enhancements_pattern_version"),
    )
    op.create_index("ix_enhancements_status", "enhancements", ["status"])

    op.create_table(
        "experiments",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("enhancement_id", sa.BigInteger(), sa.ForeignKey("enhancements.id", ondelete="CASCADE"), nullable=False),
        sa.Column("pattern_id", sa.BigInteger(), sa.ForeignKey("patterns.id", ondelete="SET NULL")),
        sa.Column("status", sa.Text(), nullable=False, server_default=sa.text("'running'")),
        sa.Column("control_weight", sa.Double(), nullable=False, server_default=sa.text("0.5")),
        sa.Column("assign_by", sa.Text(), nullable=False, server_default=sa.text("'session'")),
        sa.Column("alpha", sa.Double(), nullable=False, server_default=sa.text("0.05")),
        sa.Column("min_effect", sa.Double(), nullable=False, server_default=sa.text("0.05")),
        sa.Column("max_error_increase", sa.Double(), nullable=False, server_default=sa.text("0.05")),
        sa.Column("max_cost_increase", sa.Double(), nullable=False, server_default=sa.text("0.5")),
        sa.Column("stats", JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("decision_reason", sa.Text(), nullable=False, server_default=sa.text("''")),
        sa.Column("created_by", sa.Text(), nullable=False, server_default=sa.text("''")),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
        sa.Column("decided_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("status IN ('running', 'paused', 'promoted', 'rolled_back', 'stopped')", name="ck_experiments_status"),
        sa.CheckConstraint("assign_by IN ('session', 'client')", name="ck_experiments_assign_by"),
        sa.CheckConstraint("control_weight > 0 AND control_weight < 1", name="ck_experiments_control_weight"),
    )
    op.create_index("ix_experiments_status", "experiments", ["status"])
    op.create_table(
        "experiment_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("experiment_id", sa.BigInteger(), sa.ForeignKey("experiments.id", ondelete="CASCADE"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("detail", JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
    )
    op.create_index("ix_experiment_events_experiment_at", "experiment_events", ["experiment_id", "at"])
    # outcomes by arm: the sidecar records {"experiment": id, "enhancement": id, "arm": ...} in exchanges.flags
    op.execute(
        "CREATE INDEX ix_exchanges_experiment ON exchanges (((flags -> 'enhancement' ->> 'experiment')::bigint)) "
        "WHERE flags ? 'enhancement'"
    )

    op.create_table(
        "anomaly_verdicts",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
        sa.Column("request_id", sa.Text()),
        sa.Column("client_key_fp", sa.Text()),
        sa.Column("detectors", sa.ARRAY(sa.Text()), nullable=False, server_default=sa.text("'{}'::text[]")),
        sa.Column("suspicion", JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("status", sa.Text(), nullable=False, server_default=sa.text("'pending'")),
        sa.Column("verdict", sa.Text()),
        sa.Column("confidence", sa.Double()),
        sa.Column("reasoning", sa.Text(), nullable=False, server_default=sa.text("''")),
        sa.Column("source", sa.Text()),
        sa.Column("claude_call_id", sa.BigInteger(), sa.ForeignKey("claude_calls.id", ondelete="SET NULL")),
        sa.Column("memory_id", sa.BigInteger()),
        sa.Column("action", sa.Text()),
        sa.Column("confirmed", sa.Text()),
        sa.Column("confirmed_by", sa.Text()),
        sa.Column("judged_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("status IN ('pending', 'judged', 'error', 'skipped')", name="ck_anomaly_verdicts_status"),
        sa.CheckConstraint(
            "verdict IS NULL OR verdict IN ('benign', 'suspicious', 'malicious')", name="ck_anomaly_verdicts_verdict"
        ),
        sa.CheckConstraint("source IS NULL OR source IN ('claude', 'memory', 'local')", name="ck_anomaly_verdicts_source"),
        sa.CheckConstraint(
            "confirmed IS NULL OR confirmed IN ('attack', 'false_positive')", name="ck_anomaly_verdicts_confirmed"
        ),
    )
    op.create_index("ix_anomaly_verdicts_at", "anomaly_verdicts", ["at"])
    op.create_index("ix_anomaly_verdicts_status", "anomaly_verdicts", ["status"])
    op.create_index("ix_anomaly_verdicts_client_at", "anomaly_verdicts", ["client_key_fp", "at"])
    op.create_index("ix_anomaly_verdicts_request", "anomaly_verdicts", ["request_id"])
    op.create_table(
        "verdict_memory",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("embedding", Vector(DIM), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("text_hash", sa.Text(), nullable=False),
        sa.Column("reasoning", sa.Text(), nullable=False, server_default=sa.text("''")),
        sa.Column("verdict_id", sa.BigInteger(), sa.ForeignKey("anomaly_verdicts.id", ondelete="SET NULL")),
        sa.Column("hits", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
        sa.CheckConstraint("label IN ('attack', 'false_positive')", name="ck_verdict_memory_label"),
        sa.UniqueConstraint("text_hash", name="uq_verdict_memory_text_hash"),
    )
    op.create_index(
        "ix_verdict_memory_hnsw",
        "verdict_memory",
        ["embedding"],
        postgresql_using="hnsw",
        postgresql_ops={"embedding": "vector_cosine_ops"},
    )

    op.create_table(
        "events",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("severity", sa.Text(), nullable=False, server_default=sa.text("'info'")),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False, server_default=sa.text("''")),
        sa.Column("detail", JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("source", sa.Text(), nullable=False, server_default=sa.text("''")),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True)),
        sa.Column("acknowledged_by", sa.Text()),
        sa.Column("delivered_at", sa.DateTime(timezone=True)),
        sa.Column("delivery_attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.CheckConstraint("severity IN ('info', 'warning', 'critical')", name="ck_events_severity"),
    )
    op.create_index("ix_events_at", "events", [sa.text("at DESC")])
    op.create_index("ix_events_kind_at", "events", ["kind", "at"])
    for statement in _NOTIFY:
        op.execute(statement)


def downgrade() -> None:
    for table in (
        "events",
        "verdict_memory",
        "anomaly_verdicts",
        "experiment_events",
        "experiments",
        "enhancements",
        "claude_calls",
    ):
        op.drop_table(table)
    op.execute("DROP INDEX IF EXISTS ix_exchanges_experiment")
    op.execute("DROP FUNCTION IF EXISTS llmproxy_events_notify()")
    op.execute("DROP FUNCTION IF EXISTS llmproxy_experiments_notify()")

"""attack memory: known prompt attacks learned from confirmed verdicts, for the inline detector

Revision ID: 0009_attack_memory
Revises: 0008_dashboard_indexes
Create Date: 2026-11-27

The inline injection detector compares every scanned segment with a memory of known attacks. Its
seed ships with the code (intelligence/detectors/data/memory.yaml); this table holds what the gateway
learns afterwards: the prompts of verdicts an operator (or a confident Claude verdict) confirmed as
attacks, and attacks an operator adds by hand. Vectors are the detector's own embedding (the static
distillation of all-MiniLM-L6-v2, 384 dimensions), not the pattern memory's transformer vectors.
The sidecar keeps an in-process copy (no database on the request path) and reloads it when the
``llmproxy_attack_memory`` notification fires.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import Vector

revision: str = "0009_attack_memory"
down_revision: str | Sequence[str] | None = "0008_dashboard_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DIM = 384  # the static embedding's dimension, whatever LLMPROXY_EMBEDDING_DIM says for patterns

_NOTIFY = (
    """
CREATE FUNCTION llmproxy_attack_memory_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('llmproxy_attack_memory', '');
    RETURN NULL;
END $$
""",
    """
CREATE TRIGGER attack_memory_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON attack_memory
    FOR EACH STATEMENT EXECUTE FUNCTION llmproxy_attack_memory_notify()
""",
)


def upgrade() -> None:
    op.create_table(
        "attack_memory",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("text", sa.Text(), nullable=False),  # the redacted segment, as the request log stores it
        sa.Column("text_hash", sa.Text(), nullable=False),  # sha256 of the normalised text
        sa.Column("family", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),  # verdict:<id> | operator:<who>
        sa.Column("model", sa.Text(), nullable=False),  # embedding the vector was made with
        sa.Column("embedding", Vector(DIM), nullable=False),
        sa.Column("verdict_id", sa.BigInteger(), sa.ForeignKey("anomaly_verdicts.id", ondelete="SET NULL")),
        sa.Column("added_by", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("disabled_at", sa.DateTime(timezone=True)),
        sa.Column("disabled_by", sa.Text()),
        sa.UniqueConstraint("text_hash", name="uq_attack_memory_text_hash"),
    )
    op.create_index(
        "ix_attack_memory_hnsw",
        "attack_memory",
        ["embedding"],
        postgresql_using="hnsw",
        postgresql_ops={"embedding": "vector_cosine_ops"},
    )
    for statement in _NOTIFY:
        op.execute(statement)


def downgrade() -> None:
    op.drop_table("attack_memory")
    op.execute("DROP FUNCTION IF EXISTS llmproxy_attack_memory_notify()")

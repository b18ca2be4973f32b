"""request log: exchanges and sessions (and the pgvector extension later revisions rely on)

Revision ID: 0001_request_log
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0001_request_log"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")

    op.create_table(
        "exchanges",
        sa.Column("request_id", sa.Text(), primary_key=True),
        sa.Column("session_id", sa.Text()),
        sa.Column("client_key_fp", sa.Text()),
        sa.Column("client_addr", sa.Text()),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("method", sa.Text(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("provider", sa.Text()),
        sa.Column("model", sa.Text()),
        sa.Column("api", sa.Text()),
        sa.Column("route", sa.Text()),
        sa.Column("status", sa.Integer()),
        sa.Column("streamed", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        sa.Column("latency_ms", sa.Double()),
        sa.Column("ttft_ms", sa.Double()),
        sa.Column("upstream_ms", sa.Double()),
        sa.Column("input_tokens", sa.BigInteger()),
        sa.Column("output_tokens", sa.BigInteger()),
        sa.Column("total_tokens", sa.BigInteger()),
        sa.Column("cached_tokens", sa.BigInteger()),
        sa.Column("reasoning_tokens", sa.BigInteger()),
        sa.Column("usage", pg.JSONB()),
        sa.Column("request_client", pg.JSONB()),
        sa.Column("request_forwarded", pg.JSONB()),
        sa.Column("response_upstream", pg.JSONB()),
        sa.Column("response_client", pg.JSONB()),
        sa.Column("tool_names", pg.ARRAY(sa.Text()), nullable=False, server_default=sa.text("'{}'::text[]")),
        sa.Column("prompt_system", sa.Text()),
        sa.Column("prompt_user", sa.Text()),
        sa.Column("tool_args_invalid", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("tool_aliases", pg.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("finish_reason", sa.Text()),
        sa.Column("error", sa.Text()),
        sa.Column("request_headers", pg.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("flags", pg.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("inserted_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_exchanges_started_at", "exchanges", [sa.text("started_at DESC")])
    op.create_index("ix_exchanges_session_started", "exchanges", ["session_id", "started_at"])
    op.create_index("ix_exchanges_model_started", "exchanges", ["model", "started_at"])
    op.create_index("ix_exchanges_provider_started", "exchanges", ["provider", "started_at"])
    op.create_index("ix_exchanges_status", "exchanges", ["status"])

    op.create_table(
        "sessions",
        sa.Column("session_id", sa.Text(), primary_key=True),
        sa.Column("client_key_fp", sa.Text()),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_count", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.Column("total_tokens", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.Column("error_count", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
    )
    op.create_index("ix_sessions_last_seen", "sessions", [sa.text("last_seen DESC")])


def downgrade() -> None:
    op.drop_table("sessions")
    op.drop_table("exchanges")
    # the vector extension stays: other schemas in the database may use it

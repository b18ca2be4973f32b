"""learning loop: scopes, approvals and screening of enhancements and experiments

Revision ID: 0014_learning_loop
Revises: 0013_response_summary
Create Date: 2026-11-28

* ``scope`` on ``enhancements`` and ``experiments``: the gateway key (its id) whose traffic an
  enhancement was learned from and applies to; NULL applies to every request (traffic without
  gateway keys, or an operator's global change). The sidecar's snapshot filters by the request's key.
* ``screening`` (JSONB) and ``status_reason`` on ``enhancements``: what the injection and secret
  detectors found in the candidate's text, and why it was rejected (or other status notes).
* ``awaiting``/``awaiting_reason``/``awaiting_since`` on ``experiments``: a start or a promotion
  waiting for an admin's approval; and a new experiment status ``pending`` (created, not started).

Adding nullable columns or columns with constant defaults rewrites nothing (catalogue changes only).
Downgrade: pending experiments become ``stopped`` (the old schema has no pending state), then the
columns and the new constraint go.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0014_learning_loop"
down_revision: str | Sequence[str] | None = "0013_response_summary"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_STATUSES = "status IN ('running', 'paused', 'promoted', 'rolled_back', 'stopped')"
NEW_STATUSES = "status IN ('pending', 'running', 'paused', 'promoted', 'rolled_back', 'stopped')"
AWAITING = "awaiting IS NULL OR awaiting IN ('start', 'promote')"


def upgrade() -> None:
    op.add_column("enhancements", sa.Column("scope", sa.Text(), nullable=True))
    op.add_column("enhancements", sa.Column("screening", JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")))
    op.add_column("enhancements", sa.Column("status_reason", sa.Text(), nullable=False, server_default=sa.text("''")))
    op.create_index("ix_enhancements_pattern_scope", "enhancements", ["pattern_id", "scope"])

    op.add_column("experiments", sa.Column("scope", sa.Text(), nullable=True))
    op.add_column("experiments", sa.Column("awaiting", sa.Text(), nullable=True))
    op.add_column("experiments", sa.Column("awaiting_reason", sa.Text(), nullable=False, server_default=sa.text("''")))
    op.add_column("experiments", sa.Column("awaiting_since", sa.DateTime(timezone=True), nullable=True))
    op.create_check_constraint("ck_experiments_awaiting", "experiments", AWAITING)
    op.drop_constraint("ck_experiments_status", "experiments", type_="check")
    op.create_check_constraint("ck_experiments_status", "experiments", NEW_STATUSES)


def downgrade() -> None:
    op.execute("UPDATE experiments SET status = 'stopped', awaiting = NULL WHERE status = 'pending'")
    op.drop_constraint("ck_experiments_status", "experiments", type_="check")
    op.create_check_constraint("ck_experiments_status", "experiments", OLD_STATUSES)
    op.drop_constraint("ck_experiments_awaiting", "experiments", type_="check")
    op.drop_column("experiments", "awaiting_since")
    op.drop_column("experiments", "awaiting_reason")
    op.drop_column("experiments", "awaiting")
    op.drop_column("experiments", "scope")
    op.drop_index("ix_enhancements_pattern_scope", table_name="enhancements")
    op.drop_column("enhancements", "status_reason")
    op.drop_column("enhancements", "screening")
    op.drop_column("enhancements", "scope")

"""replica heartbeats: which gateway replicas are live, for fair shares of shared budgets

Revision ID: 0011_replica_heartbeats
Revises: 0010_policy_throttle
Create Date: 2026-11-27

Every sidecar's flushers (policy throttle counts, gateway-key usage) upsert one row per process
(random id per start) about once a second and count the rows seen in the last ~10 s: that number N
lets each replica spend only its share of what is left of a shared budget between two reads
(intelligence/store/replicas.py). Rows of replicas gone for an hour are deleted by the flushers.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_replica_heartbeats"
down_revision: str | Sequence[str] | None = "0010_policy_throttle"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "replica_heartbeats",
        sa.Column("replica_id", sa.Text(), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("replica_id", name="pk_replica_heartbeats"),
    )


def downgrade() -> None:
    op.drop_table("replica_heartbeats")

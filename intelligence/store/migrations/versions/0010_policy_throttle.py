"""policy throttle counts: requests per (rule, subject, minute) shared by every gateway replica

Revision ID: 0010_policy_throttle
Revises: 0009_attack_memory
Create Date: 2026-11-27

Policy ``throttle`` actions keep a token bucket in each sidecar (the fast burst check) and a fixed
one-minute window count shared through this table: each replica adds its local admissions about
once a second and reads every replica's totals back (intelligence/throttle/shared.py). ``subject``
is a gateway key id, a credential fingerprint or a client address, never a raw key. Rows older than
a couple of minutes are useless and the flushers delete them (hence the window_start index).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_policy_throttle"
down_revision: str | Sequence[str] | None = "0009_attack_memory"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "policy_throttle_counts",
        sa.Column("rule", sa.Text(), nullable=False),  # qualified rule id: <policy>/<rule>
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),  # UTC minute
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("rule", "subject", "window_start", name="pk_policy_throttle_counts"),
    )
    op.create_index("ix_policy_throttle_counts_window", "policy_throttle_counts", ["window_start"])


def downgrade() -> None:
    op.drop_table("policy_throttle_counts")

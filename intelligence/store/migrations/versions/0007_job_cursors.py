"""job_cursors: where each background job stopped reading, so a restart resumes there

Revision ID: 0007_job_cursors
Revises: 0006_intelligence
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0007_job_cursors"
down_revision: str | Sequence[str] | None = "0006_intelligence"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job_cursors",
        sa.Column("name", sa.Text(), primary_key=True),
        sa.Column("position", JSONB(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )


def downgrade() -> None:
    op.drop_table("job_cursors")

"""policy: database-managed policies (the dashboard's), with a NOTIFY trigger for hot reload

Revision ID: 0005_policy_store
Revises: 0003_analytics_rollups
Create Date: 2025-01-05

The YAML policy file in the repository (GitOps) and these rows compile into one snapshot in every
sidecar (extproc/policy). Changes are audited (audit_log kind policy_change, with a unified diff) by
the code that makes them, in the same transaction. See docs/policy.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_policy_store"
down_revision: str | Sequence[str] | None = "0003_analytics_rollups"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NOTIFY = (
    """
CREATE FUNCTION llmproxy_policies_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('llmproxy_policies', COALESCE(NEW.name, OLD.name));
    RETURN NULL;
END $$
""",
    """
CREATE TRIGGER policies_notify AFTER INSERT OR UPDATE OR DELETE ON policies
    FOR EACH ROW EXECUTE FUNCTION llmproxy_policies_notify()
""",
)


def upgrade() -> None:
    op.create_table(
        "policies",
        sa.Column("name", sa.Text(), primary_key=True),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("sha256", sa.Text(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.text("true")),
        sa.Column("version", sa.Integer(), nullable=False, server_default=sa.text("1")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("created_by", sa.Text(), nullable=False, server_default=sa.text("''")),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_by", sa.Text(), nullable=False, server_default=sa.text("''")),
        sa.CheckConstraint("name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$'", name="ck_policies_name"),
    )
    for statement in _NOTIFY:
        op.execute(statement)


def downgrade() -> None:
    op.drop_table("policies")
    op.execute("DROP FUNCTION IF EXISTS llmproxy_policies_notify()")

"""dashboard: a partial index for the Explorer's "policy action" filter

Revision ID: 0012_policy_action_index
Revises: 0011_replica_heartbeats
Create Date: 2026-11-27

The Explorer filters exchanges by what the policy did to them (blocked, redacted, alerted, monitor
hits, edited, enhanced, Claude verdict: intelligence/analytics.py ``POLICY_ACTIONS``). Those
conditions read the ``flags`` JSON of every row in the time window; a rare action over a long
window walked the whole window of a large log. ``ix_exchanges_policy_action`` holds only the rows
where any of them holds. Its predicate is the OR of every action's condition, verbatim: each
action's condition (or an OR of several) implies it, which is what lets Postgres use the index.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0012_policy_action_index"
down_revision: str | Sequence[str] | None = "0011_replica_heartbeats"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# keep identical to " OR ".join(POLICY_ACTIONS.values()) without the "x." alias (a test checks it)
ANY_POLICY_ACTION = (
    "(flags -> 'policy' -> 'block' IS NOT NULL OR flags -> 'response_policy' -> 'block' IS NOT NULL) "
    "OR (flags -> 'redacted_strings' IS NOT NULL OR flags -> 'policy' -> 'redact' IS NOT NULL "
    "OR flags -> 'response_policy' -> 'redact' IS NOT NULL OR flags -> 'response_policy' -> 'masked' IS NOT NULL) "
    "OR (flags -> 'policy' -> 'alerts' IS NOT NULL OR flags -> 'response_policy' -> 'alerts' IS NOT NULL) "
    "OR (flags -> 'policy' -> 'fired' @> '[{\"mode\": \"monitor\"}]' "
    "OR flags -> 'response_policy' -> 'fired' @> '[{\"mode\": \"monitor\"}]') "
    "OR (flags -> 'edits' IS NOT NULL OR flags -> 'response_policy' -> 'edits' IS NOT NULL) "
    "OR flags -> 'enhancement' IS NOT NULL "
    "OR (flags -> 'claude_verdict' IS NOT NULL OR flags -> 'policy' -> 'claude_verdict' IS NOT NULL)"
)


def upgrade() -> None:
    op.execute(f"CREATE INDEX IF NOT EXISTS ix_exchanges_policy_action ON exchanges (started_at DESC) WHERE {ANY_POLICY_ACTION}")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_exchanges_policy_action")

"""request log: a provider-neutral summary of each response (reply text and tool calls)

Revision ID: 0013_response_summary
Revises: 0012_policy_action_index
Create Date: 2026-11-28

The dashboard showed a reply and its tool calls by folding the stored provider JSON through the
sidecar's provider adapters (extproc.providers), which made the dashboard import the sidecar. The
sidecar now records what the adapters already reassemble: ``response_text`` (the reply as the client
got it) and ``tool_calls`` (a JSON array of ``{"name", "upstream_name", "arguments"}``: the name the
client saw, the name the provider used, the arguments as JSON text). Both are nullable and have no
default, so adding them rewrites nothing (a catalogue change only, instant on a large table); rows
written before carry NULL and the dashboard falls back to the raw body.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0013_response_summary"
down_revision: str | Sequence[str] | None = "0012_policy_action_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("exchanges", sa.Column("response_text", sa.Text(), nullable=True))
    op.add_column("exchanges", sa.Column("tool_calls", JSONB(), nullable=True))


def downgrade() -> None:
    op.drop_column("exchanges", "tool_calls")
    op.drop_column("exchanges", "response_text")

"""dashboard: a partial index for blocked and redacted requests, and exposures per experiment kept by triggers

Revision ID: 0008_dashboard_indexes
Revises: 0007_job_cursors
Create Date: 2026-11-27

Two reads of the Security and Experiments pages grew with the request log (measured with a
million exchanges, docs/dashboard.md):

* the blocked and redacted requests of the last hour / 24 h / 7 days (ui/intel.py ``_enforced``)
  walked ``ix_exchanges_started_at`` and read every row's flags, a fraction of a percent of which
  match. ``ix_exchanges_enforced`` holds only the matching rows; its predicate is the query's
  condition verbatim, which is what lets Postgres prove it applies.
* the exchanges exposed to each running experiment were counted from the heap (~70,000 scattered
  rows for three experiments). ``experiment_exposures`` keeps that count per experiment, maintained
  by statement-level triggers with transition tables on exchanges (insert, delete, update; truncate
  empties it), so it always equals the count over the table.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_dashboard_indexes"
down_revision: str | Sequence[str] | None = "0007_job_cursors"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# keep identical to the WHERE clause in ui/intel.py (_enforced)
ENFORCED_PREDICATE = (
    "flags -> 'policy' -> 'block' IS NOT NULL OR flags -> 'redacted_strings' IS NOT NULL "
    "OR flags -> 'policy' -> 'redact' IS NOT NULL"
)

# the same cast ix_exchanges_experiment (0006) already evaluates for every row carrying an enhancement
_EXPERIMENT = "(flags -> 'enhancement' ->> 'experiment')::bigint"


def _add(rows: str, sign: str) -> str:
    return (
        f"INSERT INTO experiment_exposures (experiment_id, n) "
        f"SELECT {_EXPERIMENT}, {sign} count(*) FROM {rows} "
        f"WHERE flags ? 'enhancement' AND flags -> 'enhancement' ->> 'experiment' IS NOT NULL GROUP BY 1 "
        f"ON CONFLICT (experiment_id) DO UPDATE SET n = experiment_exposures.n + excluded.n"
    )


_FUNCTIONS = {
    "llmproxy_exposures_insert": _add("new_rows", ""),
    "llmproxy_exposures_delete": _add("old_rows", "-"),
    "llmproxy_exposures_update": f"{_add('old_rows', '-')};\n{_add('new_rows', '')}",
    "llmproxy_exposures_truncate": "DELETE FROM experiment_exposures",
}
_TRIGGERS = {
    "trg_exchanges_exposures_insert": ("AFTER INSERT", "REFERENCING NEW TABLE AS new_rows", "llmproxy_exposures_insert"),
    "trg_exchanges_exposures_delete": ("AFTER DELETE", "REFERENCING OLD TABLE AS old_rows", "llmproxy_exposures_delete"),
    "trg_exchanges_exposures_update": (
        "AFTER UPDATE",
        "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
        "llmproxy_exposures_update",
    ),
    "trg_exchanges_exposures_truncate": ("AFTER TRUNCATE", "", "llmproxy_exposures_truncate"),
}


def upgrade() -> None:
    op.execute(f"CREATE INDEX IF NOT EXISTS ix_exchanges_enforced ON exchanges (started_at DESC) WHERE {ENFORCED_PREDICATE}")
    op.create_table(
        "experiment_exposures",
        sa.Column("experiment_id", sa.BigInteger(), primary_key=True),
        sa.Column("n", sa.BigInteger(), nullable=False),
    )
    for name, body in _FUNCTIONS.items():
        op.execute(f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $fn$\nBEGIN\n{body};\nRETURN NULL;\nEND $fn$")
    # lock out writers between the backfill and the triggers so no exchange is counted twice or missed
    op.execute("LOCK TABLE exchanges IN SHARE ROW EXCLUSIVE MODE")
    op.execute(
        f"INSERT INTO experiment_exposures (experiment_id, n) SELECT {_EXPERIMENT}, count(*) FROM exchanges "
        "WHERE flags ? 'enhancement' AND flags -> 'enhancement' ->> 'experiment' IS NOT NULL GROUP BY 1"
    )
    for name, (when, referencing, fn) in _TRIGGERS.items():
        op.execute(f"CREATE TRIGGER {name} {when} ON exchanges {referencing} FOR EACH STATEMENT EXECUTE FUNCTION {fn}()")


def downgrade() -> None:
    for name in _TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON exchanges")
    for name in _FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS {name}()")
    op.drop_table("experiment_exposures")
    op.execute("DROP INDEX IF EXISTS ix_exchanges_enforced")

"""audit hardening: an insert-only writer role, a definer-rights head lock; access token revocations

Revision ID: 0015_audit_hardening
Revises: 0014_learning_loop
Create Date: 2026-11-28

* ``llmproxy_audit_writer``: a NOLOGIN role with SELECT and INSERT on ``audit_log``, SELECT on
  ``audit_head`` and EXECUTE on ``llmproxy_audit_lock_head()``, and no UPDATE, DELETE or TRUNCATE on
  either table. The application switches to it (``SET LOCAL ROLE``) for its audit inserts when the
  session may (intelligence/audit/log.py). Roles belong to the cluster, not the database: the role is
  created once (if the migrating role may create roles; otherwise a NOTICE, and audit inserts run
  as the connecting role) and granted to the migrating role so that an application connecting as
  the owner can assume it. In production run the application as a non-owner role that is a member
  of ``llmproxy_audit_writer`` (docs/keys-and-audit.md).
* ``llmproxy_audit_lock_head()``: locks the head row (SELECT ... FOR UPDATE) and returns it with
  ``clock_timestamp()``, with the owner's rights, so a writer needs no UPDATE on ``audit_head``.
  The chain trigger ``llmproxy_audit_chain()`` becomes SECURITY DEFINER for the same reason (it
  moves the head). Both pin ``search_path`` to the schema they were created in.
* ``access_token_revocations``: revoked access token ids (jti), with a NOTIFY trigger on channel
  ``llmproxy_token_revocations`` so verifiers reload at once.

Downgrade restores the invoker-rights trigger, drops the lock function, the table, its trigger and
function, revokes the role's privileges here and drops the role unless another database still
grants it something.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015_audit_hardening"
down_revision: str | Sequence[str] | None = "0014_learning_loop"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLE = "llmproxy_audit_writer"

_CREATE_ROLE = f"""
DO $$
BEGIN
    IF to_regrole('{ROLE}') IS NULL THEN
        BEGIN
            CREATE ROLE {ROLE} NOLOGIN;
        EXCEPTION
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'cannot create role {ROLE} (needs CREATEROLE): audit inserts run as the connecting role';
            WHEN duplicate_object OR unique_violation THEN
                NULL;  -- created meanwhile by a migration of another database on this server
        END;
    END IF;
END $$
"""

_LOCK_FUNCTION = """
CREATE FUNCTION llmproxy_audit_lock_head(OUT last_id bigint, OUT hash text, OUT at_ts timestamptz)
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    SELECT h.last_id, h.hash INTO last_id, hash FROM audit_head h WHERE h.id = 1 FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'audit_head row is missing';
    END IF;
    at_ts := clock_timestamp();
END $$
"""

_GRANTS = f"""
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION llmproxy_audit_lock_head() SET search_path = pg_catalog, %I, pg_temp', current_schema());
    EXECUTE format('ALTER FUNCTION llmproxy_audit_chain() SET search_path = pg_catalog, %I, pg_temp', current_schema());
    REVOKE ALL ON FUNCTION llmproxy_audit_lock_head() FROM PUBLIC;
    IF to_regrole('{ROLE}') IS NULL THEN
        RETURN;
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO {ROLE}', current_schema());
    REVOKE ALL ON audit_log, audit_head FROM {ROLE};
    GRANT SELECT, INSERT ON audit_log TO {ROLE};
    GRANT SELECT ON audit_head TO {ROLE};
    GRANT EXECUTE ON FUNCTION llmproxy_audit_lock_head() TO {ROLE};
    BEGIN
        -- the owner (often also the application) may then SET ROLE to it for its inserts
        EXECUTE format('GRANT {ROLE} TO %I', current_user);
    EXCEPTION WHEN insufficient_privilege OR invalid_grant_operation THEN
        RAISE NOTICE 'cannot grant {ROLE} to %: grant it to the application role yourself', current_user;
    END;
END $$
"""

_REVOKE_AND_DROP_ROLE = f"""
DO $$
BEGIN
    IF to_regrole('{ROLE}') IS NULL THEN
        RETURN;
    END IF;
    REVOKE ALL ON audit_log, audit_head FROM {ROLE};
    EXECUTE format('REVOKE USAGE ON SCHEMA %I FROM {ROLE}', current_schema());
    BEGIN
        DROP ROLE {ROLE};
    EXCEPTION WHEN dependent_objects_still_exist OR insufficient_privilege THEN
        NULL;  -- other databases on this server still use it; their downgrades drop it
    END;
END $$
"""

_TOKEN_NOTIFY = """
CREATE FUNCTION llmproxy_token_revocations_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('llmproxy_token_revocations', COALESCE(NEW.jti, OLD.jti));
    RETURN NULL;
END $$
"""


def upgrade() -> None:
    op.execute(_CREATE_ROLE)
    op.execute(_LOCK_FUNCTION)
    op.execute("ALTER FUNCTION llmproxy_audit_chain() SECURITY DEFINER")
    op.execute(_GRANTS)

    op.create_table(
        "access_token_revocations",
        sa.Column("jti", sa.Text(), primary_key=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.Column("revoked_by", sa.Text(), nullable=False, server_default=sa.text("''")),
        sa.Column("reason", sa.Text()),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_access_token_revocations_expires_at", "access_token_revocations", ["expires_at"])
    op.execute(_TOKEN_NOTIFY)
    op.execute(
        "CREATE TRIGGER access_token_revocations_notify AFTER INSERT OR UPDATE OR DELETE ON access_token_revocations "
        "FOR EACH ROW EXECUTE FUNCTION llmproxy_token_revocations_notify()"
    )


def downgrade() -> None:
    op.drop_table("access_token_revocations")
    op.execute("DROP FUNCTION IF EXISTS llmproxy_token_revocations_notify()")
    op.execute("DROP FUNCTION IF EXISTS llmproxy_audit_lock_head()")  # before the role: it holds EXECUTE on it
    op.execute(_REVOKE_AND_DROP_ROLE)
    op.execute("ALTER FUNCTION llmproxy_audit_chain() SECURITY INVOKER")
    op.execute("ALTER FUNCTION llmproxy_audit_chain() RESET search_path")

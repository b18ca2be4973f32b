"""security: gateway keys, shared key usage counters, tamper-evident audit log

Revision ID: 0004_security_keys_audit
Revises: 0002_pattern_memory
Create Date: 2025-01-04

Besides the tables this installs triggers (plpgsql) that make the audit log append-only and keep its
hash chain linear, and that NOTIFY gateway replicas when a key changes. See docs/keys-and-audit.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0004_security_keys_audit"
down_revision: str | Sequence[str] | None = "0002_pattern_memory"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GENESIS_HASH = "0" * 64

_AUDIT_FUNCTIONS = (
    """
CREATE FUNCTION llmproxy_audit_chain() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    head_id bigint;
    head_hash text;
BEGIN
    SELECT last_id, hash INTO head_id, head_hash FROM audit_head WHERE id = 1 FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'audit_head row is missing';
    END IF;
    IF NEW.id <> head_id + 1 OR NEW.prev_hash <> head_hash THEN
        RAISE EXCEPTION 'audit chain fork refused: entry % does not extend head entry %', NEW.id, head_id
            USING ERRCODE = '40001';
    END IF;
    UPDATE audit_head SET last_id = NEW.id, hash = NEW.hash WHERE id = 1;
    RETURN NEW;
END $$
""",
    """
CREATE FUNCTION llmproxy_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP USING ERRCODE = '42501';
END $$
""",
    """
CREATE FUNCTION llmproxy_audit_head_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- only the chain trigger (one trigger level down) may move the head
    IF TG_OP = 'UPDATE' AND pg_trigger_depth() > 1 THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit_head moves only with audit_log inserts: % refused', TG_OP USING ERRCODE = '42501';
END $$
""",
    """
CREATE TRIGGER audit_log_chain BEFORE INSERT ON audit_log
    FOR EACH ROW EXECUTE FUNCTION llmproxy_audit_chain()
""",
    """
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION llmproxy_audit_append_only()
""",
    """
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION llmproxy_audit_append_only()
""",
    """
CREATE TRIGGER audit_head_guard BEFORE UPDATE OR DELETE ON audit_head
    FOR EACH ROW EXECUTE FUNCTION llmproxy_audit_head_guard()
""",
    """
CREATE TRIGGER audit_head_no_truncate BEFORE TRUNCATE ON audit_head
    FOR EACH STATEMENT EXECUTE FUNCTION llmproxy_audit_append_only()
""",
)

_KEY_FUNCTIONS = (
    """
CREATE FUNCTION llmproxy_keys_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.revoked_at IS NOT NULL AND NEW.revoked_at IS NULL THEN
        RAISE EXCEPTION 'gateway key % is revoked; revocation is final', OLD.id USING ERRCODE = '42501';
    END IF;
    IF NEW.key_hash <> OLD.key_hash THEN
        RAISE EXCEPTION 'gateway key % hash cannot change; create a new key', OLD.id USING ERRCODE = '42501';
    END IF;
    RETURN NEW;
END $$
""",
    """
CREATE FUNCTION llmproxy_keys_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('llmproxy_keys', COALESCE(NEW.id, OLD.id));
    RETURN NULL;
END $$
""",
    """
CREATE TRIGGER gateway_keys_guard BEFORE UPDATE ON gateway_keys
    FOR EACH ROW EXECUTE FUNCTION llmproxy_keys_guard()
""",
    """
CREATE TRIGGER gateway_keys_notify AFTER INSERT OR UPDATE OR DELETE ON gateway_keys
    FOR EACH ROW EXECUTE FUNCTION llmproxy_keys_notify()
""",
)


def _ts(name: str, **kw: object) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), **kw)  # type: ignore[arg-type]


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=False),
        _ts("ts", nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False, server_default=sa.text("''")),
        sa.Column("payload", pg.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("prev_hash", sa.Text(), nullable=False),
        sa.Column("hash", sa.Text(), nullable=False),
    )
    op.create_index("ix_audit_log_ts", "audit_log", ["ts"])
    op.create_index("ix_audit_log_kind_ts", "audit_log", ["kind", "ts"])
    op.create_index("ix_audit_log_subject", "audit_log", ["subject"])
    op.create_table(
        "audit_head",
        sa.Column("id", sa.SmallInteger(), primary_key=True, autoincrement=False),
        sa.Column("last_id", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.Text(), nullable=False),
        sa.CheckConstraint("id = 1", name="ck_audit_head_single_row"),
    )
    op.execute(f"INSERT INTO audit_head (id, last_id, hash) VALUES (1, 0, '{GENESIS_HASH}')")
    for statement in _AUDIT_FUNCTIONS:
        op.execute(statement)

    op.create_table(
        "gateway_keys",
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("prefix", sa.Text(), nullable=False),
        sa.Column("key_hash", sa.Text(), nullable=False, unique=True),
        sa.Column("models", pg.ARRAY(sa.Text()), nullable=False, server_default=sa.text("'{}'::text[]")),
        sa.Column("providers", pg.ARRAY(sa.Text()), nullable=False, server_default=sa.text("'{}'::text[]")),
        sa.Column("rpm", sa.BigInteger()),
        sa.Column("rpd", sa.BigInteger()),
        sa.Column("tpm", sa.BigInteger()),
        sa.Column("tpd", sa.BigInteger()),
        _ts("created_at", nullable=False, server_default=sa.func.now()),
        sa.Column("created_by", sa.Text(), nullable=False, server_default=sa.text("''")),
        _ts("expires_at"),
        _ts("revoked_at"),
        sa.Column("revoked_by", sa.Text()),
        sa.Column("revoke_reason", sa.Text()),
        _ts("quarantined_at"),
        sa.Column("quarantine_reason", sa.Text()),
        _ts("updated_at", nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint(
            "(rpm IS NULL OR rpm > 0) AND (rpd IS NULL OR rpd > 0) AND (tpm IS NULL OR tpm > 0) AND (tpd IS NULL OR tpd > 0)",
            name="ck_gateway_keys_budgets_positive",
        ),
    )
    op.create_index("ix_gateway_keys_prefix", "gateway_keys", ["prefix"])
    op.create_table(
        "gateway_key_usage",
        sa.Column("key_id", sa.Text(), sa.ForeignKey("gateway_keys.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("granularity", sa.Text(), primary_key=True),
        _ts("bucket", primary_key=True),
        sa.Column("requests", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.Column("tokens", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.CheckConstraint("granularity IN ('minute', 'day')", name="ck_gateway_key_usage_granularity"),
    )
    op.create_index("ix_gateway_key_usage_granularity_bucket", "gateway_key_usage", ["granularity", "bucket"])
    for statement in _KEY_FUNCTIONS:
        op.execute(statement)


def downgrade() -> None:
    op.drop_table("gateway_key_usage")
    op.drop_table("gateway_keys")
    op.drop_table("audit_head")
    op.drop_table("audit_log")
    for fn in (
        "llmproxy_keys_notify",
        "llmproxy_keys_guard",
        "llmproxy_audit_head_guard",
        "llmproxy_audit_append_only",
        "llmproxy_audit_chain",
    ):
        op.execute(f"DROP FUNCTION IF EXISTS {fn}()")

"""ORM mapping of the gateway-key tables (migration 0004_security_keys_audit owns schema and triggers).

``gateway_keys`` holds only the SHA-256 of each key and a short display prefix. A trigger NOTIFYs
channel ``llmproxy_keys`` on every change so gateway replicas refresh their snapshot at once, and
refuses to un-revoke a key or change its hash. ``gateway_key_usage`` holds the shared per-key request
and token counters, one row per key, granularity (minute | day) and bucket start (UTC).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, DateTime, ForeignKey, Index, Text, func, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from intelligence.store.models import Base

KEY_TABLES = ("gateway_keys", "gateway_key_usage")
NOTIFY_CHANNEL = "llmproxy_keys"


class GatewayKey(Base):
    __tablename__ = "gateway_keys"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    prefix: Mapped[str] = mapped_column(Text)
    key_hash: Mapped[str] = mapped_column(Text, unique=True)
    models: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=text("'{}'::text[]"))
    providers: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=text("'{}'::text[]"))
    rpm: Mapped[int | None] = mapped_column(BigInteger)
    rpd: Mapped[int | None] = mapped_column(BigInteger)
    tpm: Mapped[int | None] = mapped_column(BigInteger)
    tpd: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    created_by: Mapped[str] = mapped_column(Text, server_default=text("''"))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_by: Mapped[str | None] = mapped_column(Text)
    revoke_reason: Mapped[str | None] = mapped_column(Text)
    quarantined_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    quarantine_reason: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        Index("ix_gateway_keys_prefix", "prefix"),
        CheckConstraint(
            "(rpm IS NULL OR rpm > 0) AND (rpd IS NULL OR rpd > 0) AND (tpm IS NULL OR tpm > 0) AND (tpd IS NULL OR tpd > 0)",
            name="ck_gateway_keys_budgets_positive",
        ),
    )


class GatewayKeyUsage(Base):
    __tablename__ = "gateway_key_usage"

    key_id: Mapped[str] = mapped_column(Text, ForeignKey("gateway_keys.id", ondelete="CASCADE"), primary_key=True)
    granularity: Mapped[str] = mapped_column(Text, primary_key=True)
    bucket: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    tokens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))

    __table_args__ = (
        Index("ix_gateway_key_usage_granularity_bucket", "granularity", "bucket"),
        CheckConstraint("granularity IN ('minute', 'day')", name="ck_gateway_key_usage_granularity"),
    )

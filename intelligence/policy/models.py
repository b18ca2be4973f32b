"""ORM mapping of the database-managed policies (migration 0005_policy_store owns schema and trigger).

One row per policy: its YAML source (validated before it is stored), whether it is in force, and a
version that counts changes. A trigger NOTIFYs channel ``llmproxy_policies`` on every change so
every gateway replica reloads within milliseconds (a poll catches lost notifications).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, DateTime, Integer, Text, func, text
from sqlalchemy.orm import Mapped, mapped_column

from intelligence.store.models import Base

POLICY_TABLES = ("policies",)
NOTIFY_CHANNEL = "llmproxy_policies"
NAME_CHECK = "name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$'"


class PolicyRow(Base):
    __tablename__ = "policies"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    source: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    version: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    created_by: Mapped[str] = mapped_column(Text, server_default=text("''"))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_by: Mapped[str] = mapped_column(Text, server_default=text("''"))

    __table_args__ = (CheckConstraint(NAME_CHECK, name="ck_policies_name"),)

"""ORM mapping of the audit tables (migration 0004_security_keys_audit owns the schema and triggers).

``audit_log`` ids are assigned by the chain (last id + 1 under the head lock), not by a sequence: a
sequence leaves gaps on rollback, and then a gap could not tell a deleted row from an aborted append.
``audit_head`` is one row, the chain's tip; it serialises appends (SELECT ... FOR UPDATE) and anchors
the tail, so cutting the newest rows off is detected too.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, DateTime, Index, SmallInteger, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from intelligence.store.models import Base

AUDIT_TABLES = ("audit_log", "audit_head")


class AuditLogRow(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(Text, server_default=text("''"))
    payload: Mapped[Any] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    prev_hash: Mapped[str] = mapped_column(Text)
    hash: Mapped[str] = mapped_column(Text)

    __table_args__ = (
        Index("ix_audit_log_ts", "ts"),
        Index("ix_audit_log_kind_ts", "kind", "ts"),
        Index("ix_audit_log_subject", "subject"),
    )


class AuditHeadRow(Base):
    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    last_id: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(Text)

    __table_args__ = (CheckConstraint("id = 1", name="ck_audit_head_single_row"),)

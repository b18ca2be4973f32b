"""ORM mapping of ``events``: the live feed of alerts and decisions (migration 0006_intelligence).

Every insert NOTIFYs ``llmproxy_events`` with the row id; the control API's WatchEvents, the
dashboard's alert toasts and the webhook dispatcher all read from here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, DateTime, Identity, Index, Integer, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from intelligence.store.models import Base

NOTIFY_CHANNEL = "llmproxy_events"
SEVERITIES = ("info", "warning", "critical")


class Event(Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    kind: Mapped[str] = mapped_column(Text)  # alert | block | verdict | experiment | spike | quarantine | ...
    severity: Mapped[str] = mapped_column(Text, server_default=text("'info'"))
    title: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(Text, server_default=text("''"))  # key id, pattern:12, experiment:3 ...
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    source: Mapped[str] = mapped_column(Text, server_default=text("''"))  # sidecar | intelligence | dashboard | cli
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    acknowledged_by: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # webhook delivery
    delivery_attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))

    __table_args__ = (
        CheckConstraint("severity IN ('info', 'warning', 'critical')", name="ck_events_severity"),
        Index("ix_events_at", text("at DESC")),
        Index("ix_events_kind_at", "kind", "at"),
    )

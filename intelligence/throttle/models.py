"""ORM mapping of ``policy_throttle_counts`` (migration 0010_policy_throttle owns the schema).

One row per policy throttle rule, subject (gateway key id, credential fingerprint or client
address) and UTC minute: the requests every gateway replica admitted under that rule in that minute.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Index, PrimaryKeyConstraint, Text
from sqlalchemy.orm import Mapped, mapped_column

from intelligence.store.models import Base


class PolicyThrottleCount(Base):
    __tablename__ = "policy_throttle_counts"

    rule: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(Text)
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    requests: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        PrimaryKeyConstraint("rule", "subject", "window_start", name="pk_policy_throttle_counts"),
        Index("ix_policy_throttle_counts_window", "window_start"),
    )

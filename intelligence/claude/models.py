"""ORM mapping of ``claude_calls`` (migration 0006_intelligence owns the schema): one row per call the
intelligence makes to Claude, whatever its outcome, so the dashboard can show what it costs."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, DateTime, Double, Identity, Index, Integer, Text, func, text
from sqlalchemy.orm import Mapped, mapped_column

from intelligence.store.models import Base

OUTCOMES = ("ok", "error", "parse_error", "timeout", "overloaded", "rate_limited", "budget_exhausted")


class ClaudeCall(Base):
    __tablename__ = "claude_calls"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    purpose: Mapped[str] = mapped_column(Text)  # enhancement | anomaly_verdict | pattern_label | ...
    subject: Mapped[str] = mapped_column(Text, server_default=text("''"))  # pattern:12, request:<id>, ...
    mode: Mapped[str] = mapped_column(Text)  # anthropic | openrouter
    model: Mapped[str] = mapped_column(Text)
    input_tokens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    output_tokens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    cache_read_tokens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    cache_write_tokens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    cost_usd: Mapped[float] = mapped_column(Double, server_default=text("0"))
    latency_ms: Mapped[float] = mapped_column(Double, server_default=text("0"))
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    outcome: Mapped[str] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        CheckConstraint(
            "outcome IN ('ok', 'error', 'parse_error', 'timeout', 'overloaded', 'rate_limited', 'budget_exhausted')",
            name="ck_claude_calls_outcome",
        ),
        Index("ix_claude_calls_at", "at"),
        Index("ix_claude_calls_purpose_at", "purpose", "at"),
    )

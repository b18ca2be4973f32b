"""ORM mapping of the request log. The schema itself is owned by the Alembic migrations;
these classes must match them (tests/intelligence/test_migrations.py compares the two).

Other stores add their tables to the same :class:`Base` so there is one metadata.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, DateTime, Double, Index, Integer, Text, func, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Exchange(Base):
    """One request/response exchange (an :class:`intelligence.records.ExchangeRecord`)."""

    __tablename__ = "exchanges"

    request_id: Mapped[str] = mapped_column(Text, primary_key=True)
    session_id: Mapped[str | None] = mapped_column(Text)
    client_key_fp: Mapped[str | None] = mapped_column(Text)
    client_addr: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    method: Mapped[str] = mapped_column(Text)
    path: Mapped[str] = mapped_column(Text)
    provider: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(Text)
    api: Mapped[str | None] = mapped_column(Text)
    route: Mapped[str | None] = mapped_column(Text)
    status: Mapped[int | None] = mapped_column(Integer)
    streamed: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    latency_ms: Mapped[float | None] = mapped_column(Double)
    ttft_ms: Mapped[float | None] = mapped_column(Double)
    upstream_ms: Mapped[float | None] = mapped_column(Double)
    input_tokens: Mapped[int | None] = mapped_column(BigInteger)
    output_tokens: Mapped[int | None] = mapped_column(BigInteger)
    total_tokens: Mapped[int | None] = mapped_column(BigInteger)
    cached_tokens: Mapped[int | None] = mapped_column(BigInteger)
    reasoning_tokens: Mapped[int | None] = mapped_column(BigInteger)
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    request_client: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    request_forwarded: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    response_upstream: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    response_client: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    tool_names: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=text("'{}'::text[]"))
    prompt_system: Mapped[str | None] = mapped_column(Text)
    prompt_user: Mapped[str | None] = mapped_column(Text)
    tool_args_invalid: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    tool_aliases: Mapped[dict[str, str]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    finish_reason: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    request_headers: Mapped[dict[str, str]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    flags: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    inserted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # provider-neutral summary of the response (migration 0013): the reply text and the tool calls
    response_text: Mapped[str | None] = mapped_column(Text)
    tool_calls: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)

    __table_args__ = (
        Index("ix_exchanges_started_at", started_at.desc()),
        Index("ix_exchanges_session_started", "session_id", "started_at"),
        Index("ix_exchanges_model_started", "model", "started_at"),
        Index("ix_exchanges_provider_started", "provider", "started_at"),
        Index("ix_exchanges_status", "status"),
    )


class ClientSession(Base):
    """Running totals per client session (table ``sessions``), kept by ExchangeRepository."""

    __tablename__ = "sessions"

    session_id: Mapped[str] = mapped_column(Text, primary_key=True)
    client_key_fp: Mapped[str | None] = mapped_column(Text)
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    request_count: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    input_tokens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    output_tokens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    total_tokens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    error_count: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))

    __table_args__ = (Index("ix_sessions_last_seen", last_seen.desc()),)

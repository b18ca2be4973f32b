"""ORM mapping of the analytics rollups (migration 0003_analytics_rollups owns the schema and the
triggers that keep them). Importing this module also declares that revision's two indexes on
``exchanges`` on the shared metadata, so model-vs-migration comparisons see them.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, DateTime, Double, Index, Text, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from intelligence.store.models import Base, Exchange

# The latency histogram: bin i holds values in [FACTOR**i, FACTOR**(i+1)) ms, bin 0 also
# everything under 1 ms, the last bin everything above. Mirrored (not imported) by the migration.
HIST_BINS = 64
HIST_FACTOR = 1.25

_EMPTY_HIST = text(f"array_fill(0::bigint, ARRAY[{HIST_BINS}])")
_ZERO = text("0")


class _Measures:
    """The sums every rollup row carries (see the migration for how each is counted)."""

    n: Mapped[int] = mapped_column(BigInteger, server_default=_ZERO)
    errors: Mapped[int] = mapped_column(BigInteger, server_default=_ZERO)  # status >= 400 or a transport error
    client_errors: Mapped[int] = mapped_column(BigInteger, server_default=_ZERO)  # 4xx
    server_errors: Mapped[int] = mapped_column(BigInteger, server_default=_ZERO)  # 5xx, or no status and an error
    rate_limited: Mapped[int] = mapped_column(BigInteger, server_default=_ZERO)  # 429
    streamed: Mapped[int] = mapped_column(BigInteger, server_default=_ZERO)
    latency_n: Mapped[int] = mapped_column(BigInteger, server_default=_ZERO)
    latency_sum: Mapped[float] = mapped_column(Double, server_default=_ZERO)
    ttft_n: Mapped[int] = mapped_column(BigInteger, server_default=_ZERO)
    ttft_sum: Mapped[float] = mapped_column(Double, server_default=_ZERO)
    upstream_n: Mapped[int] = mapped_column(BigInteger, server_default=_ZERO)
    upstream_sum: Mapped[float] = mapped_column(Double, server_default=_ZERO)
    input_tokens: Mapped[int] = mapped_column(BigInteger, server_default=_ZERO)
    output_tokens: Mapped[int] = mapped_column(BigInteger, server_default=_ZERO)
    cached_tokens: Mapped[int] = mapped_column(BigInteger, server_default=_ZERO)
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger, server_default=_ZERO)
    latency_hist: Mapped[list[int]] = mapped_column(ARRAY(BigInteger), server_default=_EMPTY_HIST)
    ttft_hist: Mapped[list[int]] = mapped_column(ARRAY(BigInteger), server_default=_EMPTY_HIST)

    @declared_attr.directive
    def __table_args__(cls) -> tuple:
        return (
            CheckConstraint("granularity IN ('hour', 'day')", name=f"ck_{cls.__tablename__}_granularity"),
            *getattr(cls, "_extra_table_args", ()),
        )


class ExchangeRollup(_Measures, Base):
    """Exchanges per hour and per day, by provider, model, client and API ('' stands for unknown).

    ``client`` is the key fingerprint, else the source address. ``api`` is kept because it
    decides how cached tokens relate to input tokens when pricing (see intelligence.pricing).
    """

    __tablename__ = "exchange_rollups"

    granularity: Mapped[str] = mapped_column(Text, primary_key=True)
    bucket: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    provider: Mapped[str] = mapped_column(Text, primary_key=True)
    model: Mapped[str] = mapped_column(Text, primary_key=True)
    client: Mapped[str] = mapped_column(Text, primary_key=True)
    api: Mapped[str] = mapped_column(Text, primary_key=True)


class PatternRollup(_Measures, Base):
    """The same sums for the exchanges assigned to each pattern (moved along when members move)."""

    __tablename__ = "pattern_rollups"

    granularity: Mapped[str] = mapped_column(Text, primary_key=True)
    bucket: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    pattern_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    model: Mapped[str] = mapped_column(Text, primary_key=True)
    api: Mapped[str] = mapped_column(Text, primary_key=True)

    _extra_table_args = (Index("ix_pattern_rollups_pattern", "pattern_id", "granularity", "bucket"),)


EXCHANGE_SEARCH_INDEXES = ("ix_exchanges_client_started", "ix_exchanges_prompt_user_trgm")


def _declare_exchange_indexes() -> None:
    table = Exchange.__table__
    present = {ix.name for ix in table.indexes}
    # idempotent: the request log's own models may come to declare these too
    if "ix_exchanges_client_started" not in present:
        Index("ix_exchanges_client_started", table.c.client_key_fp, table.c.started_at)
    if "ix_exchanges_prompt_user_trgm" not in present:
        Index(
            "ix_exchanges_prompt_user_trgm",
            table.c.prompt_user,
            postgresql_using="gin",
            postgresql_ops={"prompt_user": "gin_trgm_ops"},
        )


_declare_exchange_indexes()

"""ORM mapping of ``attack_memory`` (migration 0009_attack_memory owns the schema).

Known prompt attacks the gateway learned after it shipped: prompts of verdicts confirmed as attacks
and attacks an operator added. Vectors are the inline detector's static embedding (384 dimensions),
so the sidecar loads them as they are, without embedding anything.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pgvector.sqlalchemy import Vector
from sqlalchemy import BigInteger, DateTime, ForeignKey, Identity, Index, Text, UniqueConstraint, func
from sqlalchemy.orm import Mapped, mapped_column

import intelligence.anomaly.models  # noqa: F401  (anomaly_verdicts: the foreign key resolves in one metadata)
from intelligence.store.models import Base

ATTACK_DIM = 384  # the static embedding's dimension (intelligence/detectors/static_embed.py)
NOTIFY_CHANNEL = "llmproxy_attack_memory"  # fired by a statement trigger on every change


class AttackMemoryRow(Base):
    __tablename__ = "attack_memory"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    text: Mapped[str] = mapped_column(Text, nullable=False)  # redacted, as the request log stores it
    text_hash: Mapped[str] = mapped_column(Text, nullable=False)
    family: Mapped[str] = mapped_column(Text, nullable=False)
    source: Mapped[str] = mapped_column(Text, nullable=False)  # verdict:<id> | operator:<who>
    model: Mapped[str] = mapped_column(Text, nullable=False)
    embedding: Mapped[Any] = mapped_column(Vector(ATTACK_DIM), nullable=False)
    verdict_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("anomaly_verdicts.id", ondelete="SET NULL"))
    added_by: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    disabled_by: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("text_hash", name="uq_attack_memory_text_hash"),
        Index("ix_attack_memory_hnsw", "embedding", postgresql_using="hnsw", postgresql_ops={"embedding": "vector_cosine_ops"}),
    )

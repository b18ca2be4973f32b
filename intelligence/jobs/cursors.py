"""Resume points of background jobs (table ``job_cursors``, migration 0007_job_cursors).

A job moves its cursor in the same transaction as the work it did, so after a crash it neither skips
nor repeats a batch.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Text, func, select
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import Mapped, mapped_column

from intelligence.store.models import Base


class JobCursor(Base):
    __tablename__ = "job_cursors"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    position: Mapped[dict[str, Any]] = mapped_column(JSONB)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


async def read_position(conn: AsyncConnection, name: str) -> dict[str, Any] | None:
    return (await conn.execute(select(JobCursor.position).where(JobCursor.name == name))).scalar_one_or_none()


async def write_position(conn: AsyncConnection, name: str, position: dict[str, Any]) -> None:
    stmt = insert(JobCursor).values(name=name, position=position)
    await conn.execute(
        stmt.on_conflict_do_update(index_elements=[JobCursor.name], set_={"position": position, "updated_at": func.now()})
    )

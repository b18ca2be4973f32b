"""All SQL of the request log. Repositories never commit: the caller owns the transaction.

A repository works on an ``AsyncSession`` or a plain ``AsyncConnection`` (both only ``execute``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Text, bindparam, func, select, text, tuple_
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from intelligence.records import Body, ExchangeRecord, Usage
from intelligence.store.models import ClientSession, Exchange
from intelligence.store.sanitize import clean_bigint, clean_json, clean_optional_text, clean_text

NOTIFY_CHANNEL = "llmproxy_exchanges"

Executor = AsyncSession | AsyncConnection

_EXCHANGES = Exchange.__table__
_SESSIONS = ClientSession.__table__
_BODY_FIELDS = ("request_client", "request_forwarded", "response_upstream", "response_client")
_USAGE_FIELDS = ("input_tokens", "output_tokens", "total_tokens", "cached_tokens", "reasoning_tokens")
_NOTIFY = text(f"SELECT pg_notify('{NOTIFY_CHANNEL}', rid) FROM unnest(:ids) AS rid").bindparams(
    bindparam("ids", type_=ARRAY(Text))
)


@dataclass(frozen=True, slots=True)
class SessionSummary:
    session_id: str
    client_key_fp: str | None
    first_seen: datetime
    last_seen: datetime
    request_count: int
    input_tokens: int
    output_tokens: int
    total_tokens: int
    error_count: int


class ExchangeRepository:
    def __init__(self, session: Executor) -> None:
        self._session = session

    async def insert_batch(self, records: Sequence[ExchangeRecord]) -> list[str]:
        """Insert the records not already stored; returns their request_ids in input order.

        Session totals grow only by the rows actually inserted, so replaying a batch that was
        (partly) committed before never double-counts. Each inserted row is announced with
        ``NOTIFY llmproxy_exchanges, '<request_id>'``, delivered when the caller commits.
        """
        by_id: dict[str, dict[str, Any]] = {}
        for record in records:
            row = exchange_row(record)
            by_id.setdefault(row["request_id"], row)  # a repeated id within the batch: first wins
        if not by_id:
            return []
        rows = list(by_id.values())
        stmt = pg_insert(_EXCHANGES).on_conflict_do_nothing(index_elements=["request_id"]).returning(_EXCHANGES.c.request_id)
        result = await self._session.execute(stmt, rows)
        inserted_ids = set(result.scalars().all())
        inserted = [row for row in rows if row["request_id"] in inserted_ids]
        if not inserted:
            return []
        await self._add_to_sessions(inserted)
        ordered_ids = [row["request_id"] for row in inserted]
        await self._session.execute(_NOTIFY, {"ids": ordered_ids})
        return ordered_ids

    async def _add_to_sessions(self, rows: Iterable[dict[str, Any]]) -> None:
        totals: dict[str, dict[str, Any]] = {}
        for row in rows:
            sid = row["session_id"]
            if sid is None:
                continue
            t = totals.setdefault(
                sid,
                {
                    "session_id": sid,
                    "client_key_fp": None,
                    "first_seen": row["started_at"],
                    "last_seen": row["finished_at"],
                    "request_count": 0,
                    "input_tokens": 0,
                    "output_tokens": 0,
                    "total_tokens": 0,
                    "error_count": 0,
                },
            )
            t["client_key_fp"] = t["client_key_fp"] or row["client_key_fp"]
            t["first_seen"] = min(t["first_seen"], row["started_at"])
            t["last_seen"] = max(t["last_seen"], row["finished_at"])
            t["request_count"] += 1
            for k in ("input_tokens", "output_tokens", "total_tokens"):
                t[k] += row[k] or 0
            t["error_count"] += int(_is_error(row["status"], row["error"]))
        if not totals:
            return
        ins = pg_insert(_SESSIONS)
        s, new = _SESSIONS.c, ins.excluded
        stmt = ins.on_conflict_do_update(
            index_elements=["session_id"],
            set_={
                "client_key_fp": func.coalesce(s.client_key_fp, new.client_key_fp),
                "first_seen": func.least(s.first_seen, new.first_seen),
                "last_seen": func.greatest(s.last_seen, new.last_seen),
                "request_count": s.request_count + new.request_count,
                "input_tokens": s.input_tokens + new.input_tokens,
                "output_tokens": s.output_tokens + new.output_tokens,
                "total_tokens": s.total_tokens + new.total_tokens,
                "error_count": s.error_count + new.error_count,
            },
        )
        # a fixed order keeps concurrent writers from deadlocking on each other's session rows
        await self._session.execute(stmt, [totals[k] for k in sorted(totals)])

    async def get(self, request_id: str) -> ExchangeRecord | None:
        row = (await self._session.execute(select(_EXCHANGES).where(_EXCHANGES.c.request_id == request_id))).first()
        return None if row is None else record_from_row(row)

    async def recent(self, limit: int = 50, before: datetime | None = None) -> list[ExchangeRecord]:
        """Newest first; ``before`` pages back (exclusive)."""
        stmt = select(_EXCHANGES).order_by(_EXCHANGES.c.started_at.desc(), _EXCHANGES.c.request_id.desc())
        if before is not None:
            stmt = stmt.where(_EXCHANGES.c.started_at < before)
        rows = (await self._session.execute(stmt.limit(limit))).all()
        return [record_from_row(r) for r in rows]

    async def iter_since(self, since: datetime | None, batch: int = 1000) -> AsyncIterator[ExchangeRecord]:
        """Every exchange started at or after ``since`` (all if None), oldest first, fetched in pages."""
        c = _EXCHANGES.c
        cursor: tuple[datetime, str] | None = None
        while True:
            stmt = select(_EXCHANGES).order_by(c.started_at, c.request_id).limit(batch)
            if since is not None:
                stmt = stmt.where(c.started_at >= since)
            if cursor is not None:  # keyset paging: stable and cheap however deep the export goes
                stmt = stmt.where(tuple_(c.started_at, c.request_id) > tuple_(*cursor))
            rows = (await self._session.execute(stmt)).all()
            for row in rows:
                yield record_from_row(row)
            if len(rows) < batch:
                return
            cursor = (rows[-1].started_at, rows[-1].request_id)

    async def count(self) -> int:
        return int((await self._session.execute(select(func.count()).select_from(_EXCHANGES))).scalar_one())


class SessionRepository:
    def __init__(self, session: Executor) -> None:
        self._session = session

    async def get(self, session_id: str) -> SessionSummary | None:
        row = (await self._session.execute(select(_SESSIONS).where(_SESSIONS.c.session_id == session_id))).first()
        return None if row is None else SessionSummary(**row._asdict())

    async def recent(self, limit: int = 50) -> list[SessionSummary]:
        """Most recently active first."""
        stmt = select(_SESSIONS).order_by(_SESSIONS.c.last_seen.desc(), _SESSIONS.c.session_id).limit(limit)
        return [SessionSummary(**r._asdict()) for r in (await self._session.execute(stmt)).all()]


def _is_error(status: int | None, error: str | None) -> bool:
    return error is not None or (status is not None and status >= 400)


def _utc(dt: datetime) -> datetime:
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def exchange_row(r: ExchangeRecord) -> dict[str, Any]:
    """The ``exchanges`` row for a record, with every string made storable."""
    usage = r.usage.to_dict()
    row: dict[str, Any] = {
        "request_id": clean_text(r.request_id),
        "session_id": clean_optional_text(r.session_id),
        "client_key_fp": clean_optional_text(r.client_key_fp),
        "client_addr": clean_optional_text(r.client_addr),
        "started_at": _utc(r.started_at),
        "finished_at": _utc(r.finished_at),
        "method": clean_optional_text(r.method),
        "path": clean_optional_text(r.path),
        "provider": clean_optional_text(r.provider),
        "model": clean_optional_text(r.model),
        "api": clean_optional_text(r.api),
        "route": clean_optional_text(r.route),
        "status": r.status,
        "streamed": bool(r.streamed),
        "latency_ms": r.latency_ms,
        "ttft_ms": r.ttft_ms,
        "upstream_ms": r.upstream_ms,
        "usage": clean_json(usage),
        "tool_names": [clean_text(str(n)) for n in r.tool_names],
        "prompt_system": clean_optional_text(r.prompt_system),
        "prompt_user": clean_optional_text(r.prompt_user),
        "tool_args_invalid": int(r.tool_args_invalid or 0),
        "tool_aliases": clean_json(dict(r.tool_aliases)),
        "finish_reason": clean_optional_text(r.finish_reason),
        "error": clean_optional_text(r.error),
        "request_headers": clean_json(dict(r.request_headers)),
        "flags": clean_json(dict(r.flags)),
    }
    for k in _USAGE_FIELDS:
        row[k] = clean_bigint(usage[k])
    for k in _BODY_FIELDS:
        body: Body | None = getattr(r, k)
        row[k] = None if body is None else clean_json(body.to_dict())
    return row


def record_from_row(row: Row[Any]) -> ExchangeRecord:
    m = row._mapping
    usage = m["usage"] or {k: m[k] for k in _USAGE_FIELDS}
    return ExchangeRecord(
        request_id=m["request_id"],
        started_at=m["started_at"],
        finished_at=m["finished_at"],
        method=m["method"],
        path=m["path"],
        session_id=m["session_id"],
        client_key_fp=m["client_key_fp"],
        client_addr=m["client_addr"],
        provider=m["provider"],
        model=m["model"],
        api=m["api"],
        route=m["route"],
        status=m["status"],
        streamed=m["streamed"],
        latency_ms=m["latency_ms"],
        ttft_ms=m["ttft_ms"],
        upstream_ms=m["upstream_ms"],
        usage=Usage(**{k: usage.get(k) for k in _USAGE_FIELDS}),
        request_client=Body.from_dict(m["request_client"]),
        request_forwarded=Body.from_dict(m["request_forwarded"]),
        response_upstream=Body.from_dict(m["response_upstream"]),
        response_client=Body.from_dict(m["response_client"]),
        tool_names=tuple(m["tool_names"] or ()),
        prompt_system=m["prompt_system"],
        prompt_user=m["prompt_user"],
        tool_args_invalid=m["tool_args_invalid"],
        tool_aliases=dict(m["tool_aliases"] or {}),
        finish_reason=m["finish_reason"],
        error=m["error"],
        request_headers=dict(m["request_headers"] or {}),
        flags=dict(m["flags"] or {}),
    )

"""All SQL of the request log. Repositories never commit: the caller owns the transaction.

A repository works on an ``AsyncSession`` or a plain ``AsyncConnection`` (both only ``execute``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
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

        The rows travel by binary COPY into a per-connection staging table, then one statement moves
        the new ones into ``exchanges``, adds them to their sessions and notifies: one round trip,
        and the encoding happens in the driver's C code (this runs in the sidecar's process).
        """
        by_id: dict[str, dict[str, Any]] = {}
        for record in records:
            row = exchange_row(record)
            by_id.setdefault(row["request_id"], row)  # a repeated id within the batch: first wins
        if not by_id:
            return []
        rows = list(by_id.values())
        driver = await _driver_connection(self._session)
        columns = tuple(rows[0])
        await driver.execute(_STAGING_DDL)
        await driver.copy_records_to_table(
            "exchanges_in", records=[(*(row[c] for c in columns), i) for i, row in enumerate(rows)], columns=(*columns, "ord")
        )
        inserted = await driver.fetchval(_move_statement(columns))
        return list(inserted or ())

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


# The staging table the COPY fills: the exchanges' columns plus the batch order. Emptied at commit.
_STAGING_DDL = (
    "CREATE TEMP TABLE IF NOT EXISTS exchanges_in ON COMMIT DELETE ROWS AS SELECT *, 0::int AS ord FROM exchanges WITH NO DATA"
)
_SESSION_TOTALS = ("input_tokens", "output_tokens", "total_tokens")
_MOVES: dict[tuple[str, ...], str] = {}


def _move_statement(columns: tuple[str, ...]) -> str:
    """Insert the staged rows that are new, add them to their sessions, notify; returns the new ids in order."""
    known = _MOVES.get(columns)
    if known is not None:
        return known
    cols = ", ".join(columns)
    sums = ", ".join(f"coalesce(sum({c}), 0)" for c in _SESSION_TOTALS)
    statement = f"""
WITH ins AS (
    INSERT INTO exchanges ({cols}) SELECT {cols} FROM exchanges_in ORDER BY ord
    ON CONFLICT (request_id) DO NOTHING
    RETURNING request_id, session_id, client_key_fp, started_at, finished_at, {", ".join(_SESSION_TOTALS)}, status, error
), ordered AS (
    SELECT ins.*, s.ord FROM ins JOIN exchanges_in s USING (request_id)
), ses AS (
    -- a fixed order keeps concurrent writers from deadlocking on each other's session rows
    INSERT INTO sessions (session_id, client_key_fp, first_seen, last_seen, request_count, {", ".join(_SESSION_TOTALS)}, error_count)
    SELECT session_id, (array_agg(client_key_fp ORDER BY ord) FILTER (WHERE client_key_fp IS NOT NULL))[1],
           min(started_at), max(finished_at), count(*), {sums},
           count(*) FILTER (WHERE error IS NOT NULL OR status >= 400)
    FROM ordered WHERE session_id IS NOT NULL GROUP BY session_id ORDER BY session_id
    ON CONFLICT (session_id) DO UPDATE SET
        client_key_fp = coalesce(sessions.client_key_fp, excluded.client_key_fp),
        first_seen = least(sessions.first_seen, excluded.first_seen),
        last_seen = greatest(sessions.last_seen, excluded.last_seen),
        request_count = sessions.request_count + excluded.request_count,
        input_tokens = sessions.input_tokens + excluded.input_tokens,
        output_tokens = sessions.output_tokens + excluded.output_tokens,
        total_tokens = sessions.total_tokens + excluded.total_tokens,
        error_count = sessions.error_count + excluded.error_count
    RETURNING 1
), notified AS (
    SELECT pg_notify('{NOTIFY_CHANNEL}', request_id) FROM ordered
)
SELECT array_agg(request_id ORDER BY ord) FROM ordered WHERE (SELECT count(*) FROM notified) >= 0
    AND (SELECT count(*) FROM ses) >= 0
"""
    _MOVES[columns] = statement
    return statement


async def _driver_connection(executor: Executor) -> Any:
    """The asyncpg connection under a SQLAlchemy session or connection, inside the caller's transaction
    (SQLAlchemy sends BEGIN lazily: a first statement through it makes sure the transaction is open)."""
    conn = await executor.connection() if isinstance(executor, AsyncSession) else executor
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    if not driver.is_in_transaction():
        await conn.execute(text("SELECT 1"))
    return driver


def json_param(value: Any) -> str:
    """A jsonb value as text: orjson (fast), through the cleaning walk only when jsonb would refuse it
    (NUL escapes, lone surrogates, integers past 64 bits)."""
    try:
        text = orjson.dumps(value).decode()
    except (TypeError, orjson.JSONEncodeError):
        text = "\\u0000"  # what orjson cannot render, the stdlib renders after cleaning
    if "\\u0000" in text:
        return json.dumps(clean_json(value), ensure_ascii=False, allow_nan=False)
    return text


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
        "usage": json_param(usage),
        "tool_names": [clean_text(str(n)) for n in r.tool_names],
        "prompt_system": clean_optional_text(r.prompt_system),
        "prompt_user": clean_optional_text(r.prompt_user),
        "tool_args_invalid": int(r.tool_args_invalid or 0),
        "tool_aliases": json_param(dict(r.tool_aliases)),
        "finish_reason": clean_optional_text(r.finish_reason),
        "error": clean_optional_text(r.error),
        "request_headers": json_param(dict(r.request_headers)),
        "flags": json_param(dict(r.flags)),
        "response_text": clean_optional_text(r.response_text),
        "tool_calls": json_param([dict(c) for c in r.tool_calls]) if r.tool_calls else None,
    }
    for k in _USAGE_FIELDS:
        row[k] = clean_bigint(usage[k])
    for k in _BODY_FIELDS:
        body: Body | None = getattr(r, k)
        row[k] = None if body is None else json_param(body.to_dict())
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
        response_text=m["response_text"],
        tool_calls=tuple(m["tool_calls"] or ()),
    )

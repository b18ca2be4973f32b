from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker

from intelligence.export import CSV_COLUMNS, export_requests
from intelligence.records import Body, Usage
from intelligence.store.repositories import ExchangeRepository

from .conftest import MigratedDb
from .factories import make_record

T0 = datetime(2025, 2, 1, 8, 0, tzinfo=UTC)


@pytest.fixture
async def stored(migrated_db: MigratedDb):
    records = [
        make_record(
            started_at=T0,
            status=200,
            streamed=True,
            request_client=Body(json={"model": "m", "messages": [{"role": "user", "content": "hi"}]}, size=50),
            response_client=Body(text='data: {"x": 1}\n\ndata: [DONE]\n\n', size=30),
            usage=Usage(input_tokens=3, output_tokens=4, total_tokens=7, cached_tokens=1, reasoning_tokens=2),
        ),
        make_record(
            started_at=T0 + timedelta(hours=1),
            status=502,
            error="upstream reset",
            request_client=Body(text='not json, "quoted", commas', size=26),
            response_client=None,
            tool_names=(),
            tool_aliases={},
            flags={},
        ),
        make_record(started_at=T0 + timedelta(hours=2)),
    ]
    async with async_sessionmaker(migrated_db.engine).begin() as s:
        await ExchangeRepository(s).insert_batch(list(reversed(records)))
    return records


async def test_jsonl_has_one_complete_object_per_exchange_oldest_first(migrated_db: MigratedDb, stored) -> None:
    out = io.StringIO()
    assert await export_requests(migrated_db.engine, out, since=None, fmt="jsonl") == 3
    docs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [d["request_id"] for d in docs] == [r.request_id for r in stored]

    first, second = docs[0], docs[1]
    assert set(first) >= {
        "request_id",
        "session_id",
        "client_key_fp",
        "client_addr",
        "started_at",
        "finished_at",
        "method",
        "path",
        "provider",
        "model",
        "api",
        "route",
        "status",
        "streamed",
        "latency_ms",
        "ttft_ms",
        "upstream_ms",
        "usage",
        "request",
        "request_forwarded",
        "response_upstream",
        "response",
        "tool_names",
        "tool_aliases",
        "finish_reason",
        "error",
        "flags",
    }
    assert first["started_at"] == T0.isoformat()
    assert first["streamed"] is True
    assert first["usage"] == {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7, "cached_tokens": 1, "reasoning_tokens": 2}
    assert first["request"] == {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert first["response"] == 'data: {"x": 1}\n\ndata: [DONE]\n\n'
    assert first["response_upstream"]["choices"][0]["finish_reason"] == "stop"
    assert first["tool_names"] == ["get_weather"] and first["tool_aliases"] == {"t_1": "get_weather"}
    assert second["request"] == 'not json, "quoted", commas'
    assert second["response"] is None
    assert (second["status"], second["error"]) == (502, "upstream reset")


async def test_since_limits_the_export(migrated_db: MigratedDb, stored) -> None:
    out = io.StringIO()
    n = await export_requests(migrated_db.engine, out, since=T0 + timedelta(minutes=30), fmt="jsonl")
    assert n == 2
    assert [json.loads(x)["request_id"] for x in out.getvalue().splitlines()] == [r.request_id for r in stored[1:]]


async def test_csv_has_scalar_columns_and_json_bodies(migrated_db: MigratedDb, stored) -> None:
    out = io.StringIO()
    assert await export_requests(migrated_db.engine, out, since=None, fmt="csv") == 3
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert list(rows[0]) == list(CSV_COLUMNS)
    first, second = rows[0], rows[1]
    assert first["request_id"] == stored[0].request_id
    assert (first["status"], first["streamed"], first["input_tokens"], first["reasoning_tokens"]) == ("200", "true", "3", "2")
    assert first["latency_ms"] == "850.0"
    assert json.loads(first["request"]) == {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert json.loads(first["tool_names"]) == ["get_weather"]
    assert json.loads(second["request"]) == 'not json, "quoted", commas'
    assert second["response"] == ""  # no body at all
    assert second["error"] == "upstream reset"
    assert rows[2]["streamed"] == "false"


async def test_empty_log_exports_nothing(migrated_db: MigratedDb) -> None:
    out = io.StringIO()
    assert await export_requests(migrated_db.engine, out, since=None, fmt="csv") == 0
    assert out.getvalue().strip() == ",".join(CSV_COLUMNS)
    out = io.StringIO()
    assert await export_requests(migrated_db.engine, out, since=None, fmt="jsonl") == 0
    assert out.getvalue() == ""


async def test_unknown_format_is_refused(migrated_db: MigratedDb) -> None:
    with pytest.raises(ValueError, match="jsonl"):
        await export_requests(migrated_db.engine, io.StringIO(), since=None, fmt="xml")  # type: ignore[arg-type]

"""Export the request log as JSON Lines or CSV (for audits, offline analysis, eval sets).

Exports leave the gateway, so they are sanitised on the way out: credentials in URLs (the ``path``
column, a legacy ``/?target_url=``, URLs in error messages and flags) are redacted with
:func:`intelligence.store.sanitize.redact_url`, and every CSV cell that a spreadsheet would read as a
formula (a leading ``=``, ``+``, ``-``, ``@``, tab or carriage return) gets a leading apostrophe
(OWASP, CSV injection). Bodies are exported as recorded (the policy already redacted secrets there).
"""

from __future__ import annotations

import csv
import json
from datetime import datetime
from typing import Any, Literal, TextIO

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from intelligence.records import Body, ExchangeRecord
from intelligence.store.repositories import ExchangeRepository
from intelligence.store.sanitize import csv_safe, redact_url, redact_urls_in_text

ExportFormat = Literal["jsonl", "csv"]
FORMATS: tuple[str, ...] = ("jsonl", "csv")

# CSV: the scalar columns as they are, then the structured ones as JSON text.
CSV_SCALAR_COLUMNS = (
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
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "tool_args_invalid",
    "finish_reason",
    "error",
)
CSV_JSON_COLUMNS = (
    "tool_names",
    "tool_aliases",
    "flags",
    "request",
    "request_forwarded",
    "response_upstream",
    "response",
)
CSV_COLUMNS = CSV_SCALAR_COLUMNS + CSV_JSON_COLUMNS


async def export_requests(engine: AsyncEngine, out: TextIO, *, since: datetime | None = None, fmt: ExportFormat = "jsonl") -> int:
    """Write every exchange started at or after ``since`` (all if None), oldest first; returns the count."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    # CRLF rows (RFC 4180): with "\n" the writer would leave a cell holding a bare "\r" unquoted,
    # and a reader would split the row there
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\r\n") if fmt == "csv" else None
    if writer is not None:
        writer.writeheader()
    count = 0
    async with AsyncSession(engine) as session:
        async for record in ExchangeRepository(session).iter_since(since):
            doc = export_document(record)
            if writer is not None:
                writer.writerow(csv_row(doc))
            else:
                out.write(json.dumps(doc, ensure_ascii=False) + "\n")
            count += 1
    return count


def export_document(r: ExchangeRecord) -> dict[str, Any]:
    """One exchange as an export object: bodies reduced to their content (JSON document, else text)."""
    return {
        "request_id": r.request_id,
        "session_id": r.session_id,
        "client_key_fp": r.client_key_fp,
        "client_addr": r.client_addr,
        "started_at": r.started_at.isoformat(),
        "finished_at": r.finished_at.isoformat(),
        "method": r.method,
        "path": redact_url(r.path),
        "provider": r.provider,
        "model": r.model,
        "api": r.api,
        "route": r.route,
        "status": r.status,
        "streamed": r.streamed,
        "latency_ms": r.latency_ms,
        "ttft_ms": r.ttft_ms,
        "upstream_ms": r.upstream_ms,
        "usage": r.usage.to_dict(),
        "request": body_content(r.request_client),
        "request_forwarded": body_content(r.request_forwarded),
        "response_upstream": body_content(r.response_upstream),
        "response": body_content(r.response_client),
        "tool_names": list(r.tool_names),
        "tool_aliases": r.tool_aliases,
        "tool_args_invalid": r.tool_args_invalid,
        "finish_reason": r.finish_reason,
        "error": redact_urls_in_text(r.error) if r.error else r.error,
        "flags": _redact_urls_in(r.flags),
    }


def _redact_urls_in(value: Any, depth: int = 0) -> Any:
    """A copy of a JSON-like value (flags) with URLs in its strings redacted (bounded depth)."""
    if isinstance(value, str):
        return redact_url(value) if value.startswith(("/", "http://", "https://")) else redact_urls_in_text(value)
    if depth >= 20:
        return value
    if isinstance(value, dict):
        return {k: _redact_urls_in(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_urls_in(v, depth + 1) for v in value]
    return value


def body_content(body: Body | None) -> Any:
    if body is None:
        return None
    return body.json if body.json is not None else body.text


def csv_row(doc: dict[str, Any]) -> dict[str, str]:
    """One CSV row; every cell is formula-neutralised (:func:`csv_safe`), numbers we wrote excepted."""
    row = {k: _csv_scalar(doc[k]) for k in CSV_SCALAR_COLUMNS if k in doc}
    for k in ("input_tokens", "output_tokens", "total_tokens", "cached_tokens", "reasoning_tokens"):
        row[k] = _csv_scalar(doc["usage"][k])
    for k in CSV_JSON_COLUMNS:
        row[k] = "" if doc[k] is None else csv_safe(json.dumps(doc[k], ensure_ascii=False))
    return row


def _csv_scalar(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)  # ours, not a client's: a negative number stays a number
    return csv_safe(str(value))

"""One exchange as the live view shows it: the wire format of the feed (and of the page's first snapshot).

Only what the table shows travels, never a body; every string a client or provider controls goes through
:func:`ui.redact.mask_secrets` like everything else the dashboard shows. The browser inserts these
values as text (``textContent``), never as HTML.
"""

from __future__ import annotations

import math
from typing import Any

from intelligence.analytics import ExchangeRow
from intelligence.pricing import PriceTable
from ui.redact import mask_secrets

PROMPT_PREVIEW = 160  # characters of the last user turn (a tooltip)
TEXT_MAX = 200  # characters of any other string a client chose (a model name can be 100 KB): a table cell
_ORDINARY_FINISH = ("stop", "end_turn", "tool_calls", "tool_use", "completed")


def flags_of(row: ExchangeRow) -> str:
    """Short tags for what is notable about an exchange."""
    tags = []
    if row.error:
        tags.append("error")
    if row.streamed:
        tags.append("stream")
    if row.tool_names:
        tags.append(f"tools:{len(row.tool_names)}")
    if row.tool_args_invalid:
        tags.append("bad-tool-args")
    if row.finish_reason and row.finish_reason not in _ORDINARY_FINISH:
        tags.append(row.finish_reason)
    tags += sorted(str(k) for k, v in row.flags.items() if v)
    return " · ".join(tags)


def _num(v: Any) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _text(v: Any) -> str | None:
    return None if v is None else mask_secrets(str(v))[:TEXT_MAX]


def row_payload(row: ExchangeRow, table: PriceTable) -> dict[str, Any]:
    """The JSON object the live table renders for one exchange."""
    cost = table.cost(
        row.model,
        row.api,
        input_tokens=row.input_tokens,
        output_tokens=row.output_tokens,
        cached_tokens=row.cached_tokens,
        reasoning_tokens=row.reasoning_tokens,
        on=row.started_at,
    )
    return {
        "id": row.request_id,
        "t": row.started_at.timestamp() * 1000.0,  # epoch ms: the table's order
        "client": _text(row.client_key_fp or row.client_addr),
        "provider": _text(row.provider),
        "model": _text(row.model),
        "status": row.status,
        "latency_ms": _num(row.latency_ms),
        "ttft_ms": _num(row.ttft_ms),
        "tokens_in": _num(row.input_tokens),
        "tokens_out": _num(row.output_tokens),
        "cost_usd": _num(cost),
        "flags": mask_secrets(flags_of(row))[:TEXT_MAX],
        "failed": bool(row.error) or (row.status is not None and row.status >= 400),
        "prompt": mask_secrets((row.prompt_preview or "")[:PROMPT_PREVIEW]),
    }


def alert_payload(event: dict[str, Any]) -> dict[str, Any]:
    """A warning/critical event as a toast."""
    at = event.get("at")
    return {
        "id": int(event["id"]),
        "at": at.timestamp() * 1000.0 if at is not None else None,
        "severity": str(event.get("severity") or ""),
        "kind": _text(event.get("kind")),
        "title": mask_secrets(str(event.get("title") or "")),
    }

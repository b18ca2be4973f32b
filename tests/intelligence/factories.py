"""Builders of realistic exchange records for the request-log tests."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from intelligence.records import Body, ExchangeRecord, Usage

_BASE = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
_seq = itertools.count()


def make_record(**overrides: Any) -> ExchangeRecord:
    """A chat-completions exchange; every call gets a fresh request_id and a later start time."""
    n = next(_seq)
    started = overrides.pop("started_at", _BASE + timedelta(seconds=n))
    request = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"question {n}"}]}
    response = {
        "id": f"chatcmpl-{n}",
        "choices": [{"message": {"role": "assistant", "content": "answer"}, "finish_reason": "stop"}],
    }
    fields: dict[str, Any] = dict(
        request_id=f"req-{uuid.uuid4().hex}",
        started_at=started,
        finished_at=started + timedelta(milliseconds=850),
        method="POST",
        path="/openai/v1/chat/completions",
        session_id=f"sess-{uuid.uuid4().hex[:8]}",
        client_key_fp="fp-abc123",
        client_addr="127.0.0.1",
        provider="openai",
        model="gpt-4o-mini",
        api="chat",
        route="prefix",
        status=200,
        streamed=False,
        latency_ms=850.0,
        ttft_ms=120.5,
        upstream_ms=800.25,
        usage=Usage(input_tokens=12, output_tokens=5, total_tokens=17, cached_tokens=0, reasoning_tokens=None),
        request_client=Body(json=request, size=120),
        request_forwarded=Body(json=request, size=120),
        response_upstream=Body(json=response, size=200),
        response_client=Body(json=response, size=200),
        tool_names=("get_weather",),
        prompt_user=f"question {n}",
        tool_aliases={"t_1": "get_weather"},
        finish_reason="stop",
        request_headers={"content-type": "application/json"},
        flags={"pii": False},
    )
    fields.update(overrides)
    return ExchangeRecord(**fields)

"""Outcome signals an exchange carries by itself (HTTP status, provider error, finish reason, tool args).

Only failures are stored for these kinds: a success is the absence of a failure, so storing
"status 200 ok" for every exchange would double the table and explain nothing. Retry and
feedback signals are added elsewhere (worker, add_feedback).
"""

from __future__ import annotations

from intelligence.memory.repository import PendingExchange, Signal

# Stop reasons that mean the caller did not get a complete, usable answer: truncation (OpenAI
# "length", Anthropic "max_tokens", Responses "max_output_tokens", Gemini "MAX_TOKENS") and
# refusals or safety stops (OpenAI "content_filter", Anthropic "refusal", Gemini "SAFETY" ...).
FAILING_FINISH_REASONS = frozenset(
    {
        "length",
        "max_tokens",
        "max_output_tokens",
        "model_length",
        "model_context_window_exceeded",
        "content_filter",
        "refusal",
        "safety",
        "recitation",
        "blocklist",
        "prohibited_content",
        "spii",
    }
)


def exchange_signals(x: PendingExchange) -> list[Signal]:
    signals: list[Signal] = []
    if (x.status is not None and x.status >= 400) or x.error:
        value = str(x.status) if x.status is not None else None
        signals.append(Signal(x.request_id, "status", False, value=value, detail=x.error))
    if x.finish_reason and x.finish_reason.strip().lower() in FAILING_FINISH_REASONS:
        signals.append(Signal(x.request_id, "finish", False, value=x.finish_reason))
    if x.tool_args_invalid > 0:
        signals.append(
            Signal(
                x.request_id,
                "tool_args",
                False,
                value=str(x.tool_args_invalid),
                detail="tool-call arguments not valid JSON for the declared schema",
            )
        )
    return signals

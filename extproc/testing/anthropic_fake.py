"""Anthropic Messages API (/v1/messages), JSON and SSE with the real event types."""

from __future__ import annotations

from typing import Any

from .conversation import Answer, Prompt, answer, asks_for_tool, count_words, split_in, text_of, tool_names, word_pieces
from .wire import SSE_TYPE, Exchange, Reply, json_reply, sse_event

DEFAULT_MODEL = "claude-3-5-haiku-latest"
INPUT_JSON_DELTAS = 4
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "content_filter": "refusal", "tool_calls": "tool_use"}


def _block_texts(content: Any, *, with_tool_results: bool) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts: list[str] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif with_tool_results and block.get("type") == "tool_result":
            texts.append(text_of(block.get("content")))
    return " ".join(texts)


def messages_prompt(doc: dict[str, Any]) -> Prompt:
    messages = [m for m in doc.get("messages") or [] if isinstance(m, dict)]
    echo = ""
    trigger = False
    for position, message in enumerate(reversed(messages)):
        if message.get("role") == "user":
            content = message.get("content")
            # A user turn holding only tool results is echoed, but never re-triggers a tool call.
            echo = _block_texts(content, with_tool_results=False) or _block_texts(content, with_tool_results=True)
            trigger = position == 0 and asks_for_tool(_block_texts(content, with_tool_results=False))
            break
    words = sum(count_words(_block_texts(m.get("content"), with_tool_results=True)) for m in messages)
    words += count_words(_block_texts(doc.get("system"), with_tool_results=False))
    return Prompt(echo_text=echo, asks_for_tool=trigger, tool_names=tool_names(doc.get("tools")), words=words)


def message(exchange: Exchange) -> Reply:
    doc = exchange.doc
    seq = exchange.seq
    result = answer(messages_prompt(doc), exchange.switches, call_id_prefix=f"toolu_fake{seq}")
    head = {
        "id": f"msg_fake{seq:06d}",
        "type": "message",
        "role": "assistant",
        "model": doc.get("model") or DEFAULT_MODEL,
    }
    stop_reason = _STOP_REASONS[result.finish]
    if doc.get("stream"):
        return _message_stream(head, result, stop_reason)
    return json_reply(
        {
            **head,
            "content": _content_blocks(result),
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": _usage(result.prompt_words, result.completion_words),
        }
    )


def _usage(input_tokens: int, output_tokens: int) -> dict[str, int]:
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def _content_blocks(result: Answer) -> list[dict[str, Any]]:
    if result.tool_calls:
        return [{"type": "tool_use", "id": call.call_id, "name": call.name, "input": call.input} for call in result.tool_calls]
    return [{"type": "text", "text": result.text}]


def _message_stream(head: dict[str, Any], result: Answer, stop_reason: str) -> Reply:
    start = {**head, "content": [], "stop_reason": None, "stop_sequence": None, "usage": _usage(result.prompt_words, 1)}
    events: list[dict[str, Any]] = [{"type": "message_start", "message": start}]
    if result.tool_calls:
        for index, call in enumerate(result.tool_calls):
            block = {"type": "tool_use", "id": call.call_id, "name": call.name, "input": {}}
            events.append({"type": "content_block_start", "index": index, "content_block": block})
            if index == 0:
                events.append({"type": "ping"})
            # The real API opens every tool_use block with an empty partial_json.
            for part in ["", *split_in(call.arguments, INPUT_JSON_DELTAS)]:
                events.append(
                    {"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": part}}
                )
            events.append({"type": "content_block_stop", "index": index})
    else:
        events.append({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
        events.append({"type": "ping"})
        for text in word_pieces(result.text):
            events.append({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}})
        events.append({"type": "content_block_stop", "index": 0})
    events.append(
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": result.completion_words},
        }
    )
    events.append({"type": "message_stop"})
    return Reply(pieces=[sse_event(event) for event in events], content_type=SSE_TYPE, streamed=True)

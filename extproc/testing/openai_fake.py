"""OpenAI-compatible endpoints: chat completions, Responses API, embeddings, models."""

from __future__ import annotations

import time
from typing import Any

from .conversation import (
    Answer,
    Prompt,
    answer,
    asks_for_tool,
    count_words,
    embedding_base64,
    embedding_vector,
    split_in,
    text_of,
    tool_names,
    word_pieces,
)
from .wire import SSE_TYPE, Exchange, Reply, json_reply, sse_data, sse_event

DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_EMBEDDING_MODEL = "text-embedding-3-small"
DEFAULT_DIMENSIONS = 8
ARGUMENT_DELTAS = 4
MODELS = ("gpt-4o-mini", "gpt-4o", "text-embedding-3-small", "o3-mini")


# --- chat completions ------------------------------------------------------------


def chat_prompt(doc: dict[str, Any]) -> Prompt:
    messages = [m for m in doc.get("messages") or [] if isinstance(m, dict)]
    echo = ""
    for message in reversed(messages):
        if message.get("role") == "user":
            echo = text_of(message.get("content"))
            break
    ends_with_user = bool(messages) and messages[-1].get("role") == "user"
    return Prompt(
        echo_text=echo,
        asks_for_tool=ends_with_user and asks_for_tool(echo),
        tool_names=tool_names(doc.get("tools")),
        words=sum(count_words(text_of(m.get("content"))) for m in messages),
    )


def chat_completion(exchange: Exchange) -> Reply:
    doc = exchange.doc
    result = answer(chat_prompt(doc), exchange.switches, call_id_prefix=f"call_fake{exchange.seq}")
    head = {
        "id": f"chatcmpl-fake{exchange.seq:06d}",
        "created": int(time.time()),
        "model": doc.get("model") or DEFAULT_MODEL,
        "system_fingerprint": "fp_fake",
    }
    if doc.get("stream"):
        options = doc.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        return _chat_stream(head, result, include_usage)
    message: dict[str, Any] = {"role": "assistant", "content": result.text or None, "refusal": None}
    if result.tool_calls:
        message["tool_calls"] = [
            {"id": call.call_id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
            for call in result.tool_calls
        ]
    return json_reply(
        {
            **head,
            "object": "chat.completion",
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": result.finish}],
            "usage": _chat_usage(result),
        }
    )


def _chat_usage(result: Answer) -> dict[str, int]:
    return {
        "prompt_tokens": result.prompt_words,
        "completion_tokens": result.completion_words,
        "total_tokens": result.prompt_words + result.completion_words,
    }


def _chat_stream(head: dict[str, Any], result: Answer, include_usage: bool) -> Reply:
    head = {**head, "object": "chat.completion.chunk"}
    if include_usage:
        # As the real API: every chunk says "usage": null, then one extra chunk carries it.
        head["usage"] = None

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return sse_data({**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]})

    pieces = [chunk({"role": "assistant", "content": None if result.tool_calls else "", "refusal": None})]
    for text in word_pieces(result.text):
        pieces.append(chunk({"content": text}))
    for index, call in enumerate(result.tool_calls):
        start = {"index": index, "id": call.call_id, "type": "function", "function": {"name": call.name, "arguments": ""}}
        pieces.append(chunk({"tool_calls": [start]}))
        for part in split_in(call.arguments, ARGUMENT_DELTAS):
            pieces.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": part}}]}))
    pieces.append(chunk({}, result.finish))
    if include_usage:
        pieces.append(sse_data({**head, "choices": [], "usage": _chat_usage(result)}))
    pieces.append(b"data: [DONE]\n\n")
    return Reply(pieces=pieces, content_type=SSE_TYPE, streamed=True)


# --- Responses API ------------------------------------------------------------------


def responses_prompt(doc: dict[str, Any]) -> Prompt:
    raw = doc.get("input")
    items: list[dict[str, Any]] = (
        [{"role": "user", "content": raw}] if isinstance(raw, str) else [i for i in raw or [] if isinstance(i, dict)]
    )
    echo = ""
    for item in reversed(items):
        if item.get("role") == "user":
            echo = text_of(item.get("content"))
            break
    ends_with_user = bool(items) and items[-1].get("role") == "user"
    instructions = doc.get("instructions")
    words = sum(count_words(text_of(i.get("content"))) for i in items)
    if isinstance(instructions, str):
        words += count_words(instructions)
    return Prompt(
        echo_text=echo,
        asks_for_tool=ends_with_user and asks_for_tool(echo),
        tool_names=tool_names(doc.get("tools")),
        words=words,
    )


_INCOMPLETE_REASON = {"length": "max_output_tokens", "content_filter": "content_filter"}


def response(exchange: Exchange) -> Reply:
    doc = exchange.doc
    seq = exchange.seq
    result = answer(responses_prompt(doc), exchange.switches, call_id_prefix=f"call_fake{seq}")
    items = _response_items(result, seq)
    incomplete = _INCOMPLETE_REASON.get(result.finish)
    final = {
        **_response_shell(doc, seq),
        "status": "incomplete" if incomplete else "completed",
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "output": items,
        "usage": {
            "input_tokens": result.prompt_words,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": result.completion_words,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": result.prompt_words + result.completion_words,
        },
    }
    if not doc.get("stream"):
        return json_reply(final)
    return _response_stream(final, result)


def _response_shell(doc: dict[str, Any], seq: int) -> dict[str, Any]:
    return {
        "id": f"resp_fake{seq:06d}",
        "object": "response",
        "created_at": int(time.time()),
        "status": "in_progress",
        "error": None,
        "incomplete_details": None,
        "instructions": doc.get("instructions"),
        "max_output_tokens": doc.get("max_output_tokens"),
        "model": doc.get("model") or DEFAULT_MODEL,
        "output": [],
        "parallel_tool_calls": doc.get("parallel_tool_calls", True),
        "previous_response_id": doc.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "store": doc.get("store", True),
        "temperature": doc.get("temperature", 1.0),
        "text": {"format": {"type": "text"}},
        "tool_choice": doc.get("tool_choice", "auto"),
        "tools": doc.get("tools") or [],
        "top_p": doc.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": None,
        "user": None,
        "metadata": doc.get("metadata") or {},
    }


def _response_items(result: Answer, seq: int) -> list[dict[str, Any]]:
    if result.tool_calls:
        return [
            {
                "type": "function_call",
                "id": f"fc_fake{seq}_{index}",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
                "status": "completed",
            }
            for index, call in enumerate(result.tool_calls)
        ]
    return [
        {
            "type": "message",
            "id": f"msg_fake{seq}",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": result.text, "annotations": []}],
        }
    ]


def _response_stream(final: dict[str, Any], result: Answer) -> Reply:
    events: list[dict[str, Any]] = []
    shell = {**final, "status": "in_progress", "incomplete_details": None, "output": [], "usage": None}
    events.append({"type": "response.created", "response": shell})
    events.append({"type": "response.in_progress", "response": shell})
    for index, item in enumerate(final["output"]):
        if item["type"] == "function_call":
            events.extend(_function_call_events(index, item))
        else:
            events.extend(_message_events(index, item, result.text))
    events.append({"type": "response.incomplete" if final["status"] == "incomplete" else "response.completed", "response": final})
    pieces = [sse_event({**event, "sequence_number": number}) for number, event in enumerate(events)]
    return Reply(pieces=pieces, content_type=SSE_TYPE, streamed=True)


def _message_events(index: int, item: dict[str, Any], text: str) -> list[dict[str, Any]]:
    where = {"item_id": item["id"], "output_index": index, "content_index": 0}
    part = item["content"][0]
    events: list[dict[str, Any]] = [
        {"type": "response.output_item.added", "output_index": index, "item": {**item, "status": "in_progress", "content": []}},
        {"type": "response.content_part.added", **where, "part": {**part, "text": ""}},
    ]
    for delta in word_pieces(text):
        events.append({"type": "response.output_text.delta", **where, "delta": delta, "logprobs": []})
    events += [
        {"type": "response.output_text.done", **where, "text": text, "logprobs": []},
        {"type": "response.content_part.done", **where, "part": part},
        {"type": "response.output_item.done", "output_index": index, "item": item},
    ]
    return events


def _function_call_events(index: int, item: dict[str, Any]) -> list[dict[str, Any]]:
    where = {"item_id": item["id"], "output_index": index}
    events: list[dict[str, Any]] = [
        {"type": "response.output_item.added", "output_index": index, "item": {**item, "arguments": "", "status": "in_progress"}},
    ]
    for delta in split_in(item["arguments"], ARGUMENT_DELTAS):
        events.append({"type": "response.function_call_arguments.delta", **where, "delta": delta})
    events += [
        {"type": "response.function_call_arguments.done", **where, "name": item["name"], "arguments": item["arguments"]},
        {"type": "response.output_item.done", "output_index": index, "item": item},
    ]
    return events


# --- embeddings and models ------------------------------------------------------------


def embeddings(exchange: Exchange) -> Reply:
    doc = exchange.doc
    raw = doc.get("input")
    inputs: list[Any] = raw if isinstance(raw, list) and raw and not isinstance(raw[0], int) else [raw]
    texts = [item if isinstance(item, str) else " ".join(map(str, item or [])) for item in inputs]
    dimensions = doc.get("dimensions")
    if not isinstance(dimensions, int) or dimensions <= 0:
        dimensions = DEFAULT_DIMENSIONS
    as_base64 = doc.get("encoding_format") == "base64"
    data = []
    for index, text in enumerate(texts):
        vector = embedding_vector(text, dimensions)
        data.append({"object": "embedding", "index": index, "embedding": embedding_base64(vector) if as_base64 else vector})
    words = sum(count_words(t) for t in texts)
    return json_reply(
        {
            "object": "list",
            "data": data,
            "model": doc.get("model") or DEFAULT_EMBEDDING_MODEL,
            "usage": {"prompt_tokens": words, "total_tokens": words},
        }
    )


def models(exchange: Exchange) -> Reply:
    return json_reply(
        {
            "object": "list",
            "data": [{"id": name, "object": "model", "created": 1700000000, "owned_by": "fake"} for name in MODELS],
        }
    )

"""Ollama native API: /api/chat and /api/generate (NDJSON streaming by default), /api/tags."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from .conversation import Answer, Prompt, answer, asks_for_tool, count_words, text_of, tool_names, word_pieces
from .wire import NDJSON_TYPE, Exchange, Reply, json_reply, ndjson_line

DEFAULT_MODEL = "llama3.2"
MODELS = ("llama3.2:latest", "qwen2.5:0.5b")
# Ollama has no content-filter stop; it reports "length" or "stop".
_DONE_REASONS = {"length": "length", "tool_calls": "stop", "content_filter": "stop", "stop": "stop"}


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


def generate_prompt(doc: dict[str, Any]) -> Prompt:
    prompt = doc.get("prompt") if isinstance(doc.get("prompt"), str) else ""
    system = doc.get("system") if isinstance(doc.get("system"), str) else ""
    return Prompt(echo_text=prompt, asks_for_tool=False, tool_names=(), words=count_words(prompt) + count_words(system))


def chat(exchange: Exchange) -> Reply:
    result = answer(chat_prompt(exchange.doc), exchange.switches, call_id_prefix=f"call_fake{exchange.seq}")
    tool_calls = [{"function": {"name": call.name, "arguments": call.input}} for call in result.tool_calls]
    return _reply(exchange.doc, result, lambda content: {"message": {"role": "assistant", "content": content}}, tool_calls)


def generate(exchange: Exchange) -> Reply:
    result = answer(generate_prompt(exchange.doc), exchange.switches, call_id_prefix=f"call_fake{exchange.seq}")
    return _reply(exchange.doc, result, lambda content: {"response": content}, [])


def tags(exchange: Exchange) -> Reply:
    now = _timestamp()
    return json_reply(
        {"models": [{"name": name, "model": name, "modified_at": now, "size": 1, "digest": "fake"} for name in MODELS]}
    )


def _timestamp() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _reply(
    doc: dict[str, Any],
    result: Answer,
    body: Callable[[str], dict[str, Any]],
    tool_calls: list[dict[str, Any]],
) -> Reply:
    head = {"model": doc.get("model") or DEFAULT_MODEL, "created_at": _timestamp()}
    final_head = {**head, "done_reason": _DONE_REASONS[result.finish], "done": True}
    counts = {
        "total_duration": 0,
        "load_duration": 0,
        "prompt_eval_count": result.prompt_words,
        "prompt_eval_duration": 0,
        "eval_count": result.completion_words,
        "eval_duration": 0,
    }
    # Streaming is Ollama's default: only an explicit "stream": false gives one JSON document.
    if doc.get("stream", True) is False:
        final = {**final_head, **body(result.text), **counts}
        if tool_calls:
            final["message"]["tool_calls"] = tool_calls
        return json_reply(final)
    lines = [ndjson_line({**head, **body(piece), "done": False}) for piece in word_pieces(result.text)]
    if tool_calls:
        calls = body("")
        calls["message"]["tool_calls"] = tool_calls
        lines.append(ndjson_line({**head, **calls, "done": False}))
    lines.append(ndjson_line({**final_head, **body(""), **counts}))
    return Reply(pieces=lines, content_type=NDJSON_TYPE, streamed=True)

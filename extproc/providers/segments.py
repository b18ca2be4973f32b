"""The texts of a request, by where they came from, for the security detectors.

``segments`` says who wrote each text (system, user, tool result, assistant), which matters for
indirect prompt injection. ``rewrite_texts`` lets a redaction change every free-text string of a
request in place while leaving its structure (model, roles, ids, tool schemas) alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .jsonshape import as_dict, as_list

# Keys whose string values are structure, not content: never scanned or rewritten.
_STRUCTURAL = frozenset(
    {
        "model",
        "role",
        "type",
        "name",
        "id",
        "tool_call_id",
        "call_id",
        "object",
        "encoding_format",
        "service_tier",
        "tool_choice",
        "format",
        "media_type",
        "detail",
        "status",
        "stop",
        "reasoning_effort",
        "cache_control",
    }
)
_SKIP_SUBTREES = frozenset({"tools", "functions", "response_format", "text_format", "metadata", "stream_options"})
_ROLE_SOURCE = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "tool": "tool",
    "function": "tool",
    "assistant": "assistant",
}
MAX_TEXT = 200_000  # per segment: detectors cap their own work too


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    out: list[str] = []
    for part in as_list(content):
        part = as_dict(part)
        kind = part.get("type")
        if kind in ("text", "input_text", "output_text") and isinstance(part.get("text"), str):
            out.append(part["text"])
        elif kind == "tool_result":
            out.extend(_texts(part.get("content")))
    return out


def segments(api: str | None, body: dict) -> list[tuple[str, str]]:
    """(source, text) pairs in conversation order: source is system | user | tool | assistant."""
    out: list[tuple[str, str]] = []
    if api == "messages":
        out += [("system", t) for t in _texts(body.get("system"))]
        for m in as_list(body.get("messages")):
            m = as_dict(m)
            role = m.get("role")
            for part in as_list(m.get("content")) if not isinstance(m.get("content"), str) else [m["content"]]:
                if isinstance(part, str):
                    out.append((_ROLE_SOURCE.get(role, "user"), part))
                    continue
                part = as_dict(part)
                if part.get("type") == "tool_result":
                    out += [("tool", t) for t in _texts(part.get("content"))]
                elif isinstance(part.get("text"), str):
                    out.append((_ROLE_SOURCE.get(role, "user"), part["text"]))
    elif api == "responses":
        out += [("system", t) for t in _texts(body.get("instructions"))]
        raw = body.get("input")
        if isinstance(raw, str):
            out.append(("user", raw))
        for item in as_list(raw):
            item = as_dict(item)
            if item.get("type") == "function_call_output":
                out += [("tool", t) for t in _texts(item.get("output"))]
            elif "role" in item:
                out += [(_ROLE_SOURCE.get(item.get("role"), "user"), t) for t in _texts(item.get("content"))]
    elif api in ("chat", "ollama_chat"):
        for m in as_list(body.get("messages")):
            m = as_dict(m)
            out += [(_ROLE_SOURCE.get(m.get("role"), "user"), t) for t in _texts(m.get("content"))]
    else:  # completions, embeddings, ollama_generate: the prompt/input
        for key in ("prompt", "input", "system"):
            value = body.get(key)
            texts = [value] if isinstance(value, str) else [v for v in as_list(value) if isinstance(v, str)]
            out += [("system" if key == "system" else "user", t) for t in texts]
    return [(s, t[:MAX_TEXT]) for s, t in out if t]


def rewrite_texts(body: Any, fn: Callable[[str], str]) -> int:
    """Apply ``fn`` to every free-text string in ``body`` (in place); returns how many changed."""
    changed = 0

    def walk(node: Any) -> Any:
        nonlocal changed
        if isinstance(node, dict):
            for k, v in node.items():
                if k in _SKIP_SUBTREES or (k in _STRUCTURAL and isinstance(v, str)):
                    continue
                node[k] = walk(v)
            return node
        if isinstance(node, list):
            for i, v in enumerate(node):
                node[i] = walk(v)
            return node
        if isinstance(node, str):
            new = fn(node)
            if new != node:
                changed += 1
            return new
        return node

    walk(body)
    return changed

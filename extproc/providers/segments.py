"""The texts of a request, by where they came from, for the security detectors.

``segments`` says who wrote each text (system, user, assistant, tool result, tool definition, tool
call arguments, document), which matters for indirect prompt injection and for which calibration the
detector applies. ``rewrite_texts`` lets a redaction change every free-text string of a
request in place while leaving its structure (model, roles, ids, tool schemas) alone.
"""

from __future__ import annotations

import json
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
# Source kinds (intelligence.detectors.injection.SOURCE_ALIASES): who wrote a text decides how the
# detector reads it and which calibration applies.
SYSTEM, USER, ASSISTANT = "system", "user", "assistant"
TOOL_RESULT, TOOL_DEFINITION, TOOL_CALL_ARGUMENTS, DOCUMENT = "tool_result", "tool_definition", "tool_call_arguments", "document"
_ROLE_SOURCE = {
    "system": SYSTEM,
    "developer": SYSTEM,
    "user": USER,
    "tool": TOOL_RESULT,
    "function": TOOL_RESULT,
    "ipython": TOOL_RESULT,
    "assistant": ASSISTANT,
}
# Every text is returned whole: the detector windows it and keeps to its own time budget, reporting
# what it could not reach (``InjectionVerdict.incomplete``). Only the body limit bounds this.
MAX_TEXT: int | None = None
_SCHEMA_TEXT_KEYS = ("title", "description")


def _strings(node: Any, depth: int = 0) -> list[str]:
    """Every string value in a JSON value (tool-call arguments), in order."""
    if depth > 32:
        return []
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v, depth + 1)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v, depth + 1)]
    return []


def _arguments(raw: Any) -> str:
    """Tool-call arguments (a JSON string or an object) as the text a model would read."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return raw
    return "\n".join(s for s in _strings(raw) if s.strip())


def _schema_texts(node: Any, depth: int = 0) -> list[str]:
    """Descriptions and titles anywhere in a JSON schema (parameters, nested properties, enums of
    strings): what a tool definition tells the model."""
    if depth > 32:
        return []
    out: list[str] = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k in _SCHEMA_TEXT_KEYS and isinstance(v, str):
                out.append(v)
            elif k == "enum" and isinstance(v, list):
                out.extend(x for x in v if isinstance(x, str))
            elif k == "properties" and isinstance(v, dict):
                out.extend(str(name) for name in v)  # parameter names can carry words too
                out.extend(t for x in v.values() for t in _schema_texts(x, depth + 1))
            elif isinstance(v, dict | list):
                out.extend(_schema_texts(v, depth + 1))
    elif isinstance(node, list):
        out.extend(t for x in node for t in _schema_texts(x, depth + 1))
    return out


def _tool_definitions(tools: Any) -> list[tuple[str, str]]:
    """One segment per tool: name, description and every description in its parameters."""
    out: list[tuple[str, str]] = []
    for tool in as_list(tools):
        tool = as_dict(tool)
        fn = as_dict(tool.get("function")) or tool  # chat: {"type": "function", "function": {...}}; others flat
        parts = [x for x in (fn.get("name"), fn.get("description")) if isinstance(x, str)]
        for key in ("parameters", "input_schema"):
            parts += _schema_texts(fn.get(key))
        text = "\n".join(p for p in parts if p.strip())
        if text:
            out.append((TOOL_DEFINITION, text))
    return out


def _document(part: dict) -> list[str]:
    """An Anthropic ``document`` block: plain-text data, or content blocks; title and context."""
    out = [x for x in (part.get("title"), part.get("context")) if isinstance(x, str)]
    source = as_dict(part.get("source"))
    if source.get("type") == "text" and isinstance(source.get("data"), str):
        out.append(source["data"])
    elif source.get("type") == "content":
        out.extend(_texts(source.get("content")))
    return out


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    out: list[str] = []
    for part in as_list(content):
        if isinstance(part, str):
            out.append(part)
            continue
        part = as_dict(part)
        kind = part.get("type")
        if kind in ("text", "input_text", "output_text") and isinstance(part.get("text"), str):
            out.append(part["text"])
        elif kind == "tool_result":
            out.extend(_texts(part.get("content")))
    return out


def _anthropic_parts(role: Any, content: Any) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    source = _ROLE_SOURCE.get(str(role), USER)
    for part in [content] if isinstance(content, str) else as_list(content):
        if isinstance(part, str):
            out.append((source, part))
            continue
        part = as_dict(part)
        kind = part.get("type")
        if kind == "tool_result":
            for inner in [part.get("content")] if isinstance(part.get("content"), str) else as_list(part.get("content")):
                inner_d = as_dict(inner)
                if isinstance(inner, str):
                    out.append((TOOL_RESULT, inner))
                elif inner_d.get("type") == "document":
                    out += [(TOOL_RESULT, t) for t in _document(inner_d)]
                elif isinstance(inner_d.get("text"), str):
                    out.append((TOOL_RESULT, inner_d["text"]))
        elif kind == "document":
            out += [(DOCUMENT, t) for t in _document(part)]
        elif kind in ("tool_use", "server_tool_use"):
            out.append((TOOL_CALL_ARGUMENTS, _arguments(part.get("input"))))
        elif isinstance(part.get("text"), str):
            out.append((source, part["text"]))
    return out


def _chat_message(m: dict) -> list[tuple[str, str]]:
    source = _ROLE_SOURCE.get(str(m.get("role")), USER)
    out = [(source, t) for t in _texts(m.get("content"))]
    for call in as_list(m.get("tool_calls")):
        fn = as_dict(as_dict(call).get("function"))
        out.append((TOOL_CALL_ARGUMENTS, _arguments(fn.get("arguments"))))
    legacy = as_dict(m.get("function_call"))
    if legacy:
        out.append((TOOL_CALL_ARGUMENTS, _arguments(legacy.get("arguments"))))
    return out


def segments(api: str | None, body: dict) -> list[tuple[str, str]]:
    """(source, text) pairs in conversation order, tool definitions first.

    source is one of system | user | assistant | tool_result | tool_definition |
    tool_call_arguments | document."""
    out: list[tuple[str, str]] = []
    if api == "messages":
        out += _tool_definitions(body.get("tools"))
        out += [(SYSTEM, t) for t in _texts(body.get("system"))]
        for m in as_list(body.get("messages")):
            m = as_dict(m)
            out += _anthropic_parts(m.get("role"), m.get("content"))
    elif api == "responses":
        out += _tool_definitions(body.get("tools"))
        out += [(SYSTEM, t) for t in _texts(body.get("instructions"))]
        raw = body.get("input")
        if isinstance(raw, str):
            out.append((USER, raw))
        for item in as_list(raw):
            if isinstance(item, str):
                out.append((USER, item))
                continue
            item = as_dict(item)
            kind = item.get("type")
            if kind == "function_call_output":
                out += [(TOOL_RESULT, t) for t in _texts(item.get("output"))]
            elif kind in ("function_call", "custom_tool_call"):
                out.append((TOOL_CALL_ARGUMENTS, _arguments(item.get("arguments", item.get("input")))))
            elif kind == "custom_tool_call_output":
                out += [(TOOL_RESULT, t) for t in _texts(item.get("output"))]
            elif "role" in item:
                out += [(_ROLE_SOURCE.get(str(item.get("role")), USER), t) for t in _texts(item.get("content"))]
    elif api in ("chat", "ollama_chat"):
        out += _tool_definitions(body.get("tools"))
        out += _tool_definitions(body.get("functions"))
        for m in as_list(body.get("messages")):
            out += _chat_message(as_dict(m))
    else:  # completions, embeddings, ollama_generate: the prompt/input
        for key in ("prompt", "input", "system"):
            value = body.get(key)
            texts = [value] if isinstance(value, str) else [v for v in as_list(value) if isinstance(v, str)]
            out += [(SYSTEM if key == "system" else USER, t) for t in texts]
    return [(s, t if MAX_TEXT is None else t[:MAX_TEXT]) for s, t in out if t]


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

"""Defensive readers for loosely-typed provider JSON.

Clients send odd but valid JSON (content as a list of parts, numbers where strings are
expected, missing fields); these helpers return what they can and never raise.
"""

from __future__ import annotations

import json
from typing import Any

# A tuple, not a set: membership must not hash values that may be lists or dicts.
_TEXT_PART_TYPES = ("text", "input_text", "output_text")


def as_dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else []


def as_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def as_int(value: Any) -> int | None:
    # bool is an int subclass; a JSON true is never a token count.
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def text_of(content: Any) -> str | None:
    """Text of a message content: a string, or the text parts of a part list joined."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return None
    texts: list[str] = []
    for part in content:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict) and part.get("type", "text") in _TEXT_PART_TYPES:
            text = part.get("text")
            if isinstance(text, str):
                texts.append(text)
    return "\n".join(texts) if texts else None


def join_texts(texts: list[str | None]) -> str | None:
    present = [t for t in texts if t]
    return "\n".join(present) if present else None


def error_message(body: dict) -> str | None:
    """Message of a provider error object (OpenAI, Anthropic, Ollama shapes)."""
    err = body.get("error")
    if isinstance(err, str):
        return err
    if isinstance(err, dict):
        message = err.get("message")
        if isinstance(message, str):
            return message
        return dumps(err)
    return None


def dumps(value: Any) -> str:
    """Compact JSON as providers emit it on the wire."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def loads_object(text: str | bytes) -> dict | None:
    """Parse a JSON object; anything else (malformed, non-object) is None."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def clone(value: Any) -> Any:
    """Deep copy of parsed JSON (dicts, lists, scalars); much cheaper than copy.deepcopy."""
    if isinstance(value, dict):
        return {key: clone(item) for key, item in value.items()}
    if isinstance(value, list):
        return [clone(item) for item in value]
    return value

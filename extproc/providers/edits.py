"""Provider-aware request edits the policy engine makes (prompt decorators, max-tokens caps, model
changes, fields by JSON pointer).

One function per edit, dispatching on the API name the adapters use (``chat``, ``responses``,
``messages``, ``completions``, ``ollama_chat``, ``ollama_generate``, ``embeddings``). Besides the
adapters this is the only module that knows provider JSON. Each function edits ``doc`` in place and
returns a short description of the change for the exchange record, ``None`` when nothing needed to
change, or raises :class:`EditNotSupported` when the API has no such concept (a system message on
``/v1/embeddings``).
"""

from __future__ import annotations

from typing import Any, Literal

from extproc.providers.jsonshape import clone
from intelligence.errors import InvalidInput
from intelligence.policy import pointer as jp

Role = Literal["system", "user"]
Position = Literal["prepend", "append"]

_SYSTEM_ROLES = ("system", "developer")
_JOIN = "\n\n"
# where each API keeps its output-token limit; chat is special-cased (two names)
_MAX_TOKENS_PATH: dict[str, tuple[str, ...]] = {
    "responses": ("max_output_tokens",),
    "messages": ("max_tokens",),
    "completions": ("max_tokens",),
    "ollama_chat": ("options", "num_predict"),
    "ollama_generate": ("options", "num_predict"),
}
_CHAT_LIKE = ("chat", "ollama_chat")


class EditNotSupported(InvalidInput):
    pass


# ---------------------------------------------------------------------------------------- messages
def prepend_message(api: str | None, doc: dict, role: Role, text: str) -> str | None:
    """Put ``text`` before the system prompt (role system) or before the last user turn (role user)."""
    return _decorate(api, doc, role, text, "prepend")


def append_message(api: str | None, doc: dict, role: Role, text: str) -> str | None:
    """Put ``text`` after the system prompt (role system) or after the last user turn (role user)."""
    return _decorate(api, doc, role, text, "append")


def _decorate(api: str | None, doc: dict, role: Role, text: str, position: Position) -> str | None:
    if not text:
        return None
    what = f"{position} {role} text ({len(text)} chars)"
    if api in _CHAT_LIKE:
        _chat(doc, role, text, position, parts=api == "chat")
    elif api == "responses":
        _responses(doc, role, text, position)
    elif api == "messages":
        _anthropic(doc, role, text, position)
    elif api == "ollama_generate":
        _join_field(doc, "system" if role == "system" else "prompt", text, position)
    elif api == "completions" and role == "user":
        if not isinstance(doc.get("prompt"), (str, type(None))):
            raise EditNotSupported("completions: only a single string prompt can be decorated")
        _join_field(doc, "prompt", text, position)
    else:
        raise EditNotSupported(f"{api or 'this endpoint'} has no {role} prompt to {position} to")
    return what


def _joined(existing: Any, text: str, position: Position) -> str:
    if not isinstance(existing, str) or not existing:
        return text
    return text + _JOIN + existing if position == "prepend" else existing + _JOIN + text


def _join_field(doc: dict, key: str, text: str, position: Position) -> None:
    doc[key] = _joined(doc.get(key), text, position)


def _decorate_content(
    content: Any, text: str, position: Position, part_type: str | None, skip_leading: tuple[str, ...] = ()
) -> Any:
    """A message's content with ``text`` added: joined to a string, or as a new part of a part list."""
    if isinstance(content, list) and part_type is not None:
        part = {"type": part_type, "text": text}
        if position == "append":
            return [*content, part]
        at = 0
        while at < len(content) and isinstance(content[at], dict) and content[at].get("type") in skip_leading:
            at += 1
        return [*content[:at], part, *content[at:]]
    return _joined(content, text, position)


def _last_user(messages: list, *, user_types: tuple[str | None, ...] = (None,)) -> dict | None:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user" and message.get("type") in user_types:
            return message
    return None


def _messages_list(doc: dict, key: str = "messages") -> list:
    messages = doc.get(key)
    if not isinstance(messages, list):
        messages = doc[key] = []
    return messages


def _chat(doc: dict, role: Role, text: str, position: Position, *, parts: bool) -> None:
    messages = _messages_list(doc)
    if role == "system":
        if position == "prepend":
            messages.insert(0, {"role": "system", "content": text})
            return
        at = 0
        while at < len(messages) and isinstance(messages[at], dict) and messages[at].get("role") in _SYSTEM_ROLES:
            at += 1
        messages.insert(at, {"role": "system", "content": text})
        return
    target = _last_user(messages)
    if target is None:
        messages.append({"role": "user", "content": text})
        return
    target["content"] = _decorate_content(target.get("content"), text, position, "text" if parts else None)


def _responses(doc: dict, role: Role, text: str, position: Position) -> None:
    if role == "system":
        _join_field(doc, "instructions", text, position)
        return
    items = doc.get("input")
    if isinstance(items, str) or items is None:
        _join_field(doc, "input", text, position)
        return
    if not isinstance(items, list):
        raise EditNotSupported("responses: `input` is neither a string nor a list")
    target = _last_user(items, user_types=(None, "message"))
    if target is None:
        items.append({"role": "user", "content": text})
        return
    target["content"] = _decorate_content(target.get("content"), text, position, "input_text")


def _anthropic(doc: dict, role: Role, text: str, position: Position) -> None:
    if role == "system":
        system = doc.get("system")
        doc["system"] = _decorate_content(system, text, position, "text")
        return
    messages = _messages_list(doc)
    target = _last_user(messages)
    if target is None:
        messages.append({"role": "user", "content": text})
        return
    # Anthropic wants tool_result blocks first in a user turn: a prepended note goes after them.
    target["content"] = _decorate_content(target.get("content"), text, position, "text", skip_leading=("tool_result",))


# ---------------------------------------------------------------------------------------- max tokens
def cap_max_tokens(api: str | None, doc: dict, cap: int, *, provider: str | None = None) -> str | None:
    """Lower the output-token limit to ``cap`` (set it when the client sent none)."""
    if api == "chat":
        present = [k for k in ("max_completion_tokens", "max_tokens") if k in doc]
        if not present:
            # OpenAI's reasoning models refuse max_tokens; other chat speakers may not know the new name
            present = ["max_completion_tokens" if (provider or "").lower() == "openai" else "max_tokens"]
        changes = [c for c in (_cap_at(doc, (key,), cap) for key in present) if c]
        return "; ".join(changes) or None
    path = _MAX_TOKENS_PATH.get(api or "")
    if path is None:
        raise EditNotSupported(f"{api or 'this endpoint'} has no output-token limit")
    return _cap_at(doc, path, cap)


def _cap_at(doc: dict, path: tuple[str, ...], cap: int) -> str | None:
    current = jp.get(doc, path)
    is_int = isinstance(current, int) and not isinstance(current, bool)
    # ollama: negative num_predict means "no limit"
    if is_int and 0 <= current <= cap:
        return None
    if not jp.set_value(doc, path, cap):
        raise EditNotSupported(f"cannot set {'.'.join(path)}: a parent is not an object")
    return f"{'.'.join(path)} {current if current is not None else 'unset'} -> {cap}"


# ---------------------------------------------------------------------------------------- model
def set_model(api: str | None, doc: dict, model: str) -> str | None:
    if api == "embeddings" or api in _CHAT_LIKE or api in _MAX_TOKENS_PATH:
        current = doc.get("model")
        if current == model:
            return None
        doc["model"] = model
        return f"model {current!r} -> {model!r}"
    raise EditNotSupported(f"{api or 'this endpoint'}: unknown request format, model not changed")


# ---------------------------------------------------------------------------------------- pointers
def set_field(doc: dict, pointer: str, value: Any) -> str | None:
    """Create or override the field at ``pointer`` (RFC 6901)."""
    tokens = jp.parse_pointer(pointer)
    if jp.exists(doc, tokens) and jp.get(doc, tokens) == value:
        return None
    if not jp.set_value(doc, tokens, clone(value)):
        raise EditNotSupported(f"cannot set {pointer}: the path runs through a value that is not an object or list")
    return f"set {pointer}"


def default_field(doc: dict, pointer: str, value: Any) -> str | None:
    """Set the field at ``pointer`` only when the client did not send it."""
    tokens = jp.parse_pointer(pointer)
    if jp.exists(doc, tokens):
        return None
    if not jp.set_value(doc, tokens, clone(value)):
        raise EditNotSupported(f"cannot set {pointer}: the path runs through a value that is not an object or list")
    return f"default {pointer}"


def remove_field(doc: dict, pointer: str) -> str | None:
    return f"remove {pointer}" if jp.remove(doc, jp.parse_pointer(pointer)) else None

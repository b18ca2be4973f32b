"""Response-side text filters: put the request's placeholders back, mask what the model produced.

Two per-request jobs on the text a provider sends back (docs/security.md, "Responses"):

* :class:`PlaceholderRestorer` replaces ``<EMAIL_1>``-style placeholders that the request's
  reversible redaction made by the real values. Streamed, it holds back only a trailing ``<...``
  that is still the prefix of one of *this request's* placeholders, so ordinary ``<`` (HTML, code)
  passes through at once.
* :class:`MaskingFilter` masks PII/secrets found in the model's own output (``<EMAIL>``: never
  numbered, so a masked response value can never be mistaken for a request placeholder and
  "restored"), streaming-safe through :class:`~.redact.StreamRedactor`.

Both are :class:`extproc.providers.textstream.TextFilter` s. ``json_text=True`` marks text that is
itself JSON (tool-call arguments): what is inserted there is JSON-escaped.
:func:`rewrite_response_texts` applies a text function to every content string of a buffered JSON
response, leaving structure (ids, roles, model, usage) and signed thinking blocks alone.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from .redact import MAX_PLACEHOLDER_CHARS, PLACEHOLDER, Redaction, StreamRedactor
from .spans import SpanFinder


def _escape(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)[1:-1]


class PlaceholderRestorer:
    """Streams text with this request's placeholders replaced by their values."""

    def __init__(self, mapping: Mapping[str, str], *, json_text: bool = False) -> None:
        self._values = {p: (_escape(v) if json_text else v) for p, v in mapping.items()}
        self._longest = min(MAX_PLACEHOLDER_CHARS, max((len(p) for p in mapping), default=0))
        self._held = ""
        self.restored = 0

    def restore(self, text: str) -> str:
        if "<" not in text or not self._values:
            return text

        def put_back(m: re.Match[str]) -> str:
            value = self._values.get(m.group(0))
            if value is None:
                return m.group(0)
            self.restored += 1
            return value

        return PLACEHOLDER.sub(put_back, text)

    @property
    def holding(self) -> bool:
        return bool(self._held)

    def _could_start(self, tail: str) -> bool:
        return len(tail) < self._longest and any(p.startswith(tail) for p in self._values)

    def feed(self, text: str) -> str:
        if self._held:
            text, self._held = self._held + text, ""
        elif "<" not in text:
            return text  # the common case: nothing to restore, nothing to hold
        lt = text.rfind("<", max(0, len(text) - self._longest))
        if lt >= 0 and self._could_start(text[lt:]):
            text, self._held = text[:lt], text[lt:]
        return self.restore(text)

    def flush(self) -> str:
        text, self._held = self._held, ""
        return self.restore(text)


class MaskingFilter:
    """Streams text with what ``find`` reports replaced by generic labels (``<EMAIL>``)."""

    def __init__(self, find: SpanFinder, *, max_hold: int = 128) -> None:
        self._redactor = StreamRedactor(find, Redaction(mode="mask"), max_hold=max_hold)

    @property
    def found(self) -> list[Any]:
        return self._redactor.spans

    def feed(self, text: str) -> str:
        return self._redactor.feed(text)

    def flush(self) -> str:
        return self._redactor.flush()


def mask_text(find: SpanFinder, text: str) -> tuple[str, list[Any]]:
    """Whole-text masking (buffered responses); returns the text and the spans masked."""
    spans = find(text)
    return (Redaction(mode="mask").redact(text, spans), spans) if spans else (text, [])


# Keys whose string values are structure, never content; subtrees that hold no model text.
_STRUCTURAL = frozenset(
    {
        "id",
        "object",
        "model",
        "role",
        "type",
        "name",
        "finish_reason",
        "stop_reason",
        "stop_sequence",
        "system_fingerprint",
        "service_tier",
        "tool_call_id",
        "call_id",
        "status",
        "index",
    }
)
_SKIP = frozenset({"usage", "logprobs", "metadata"})
_JSON_TEXT = frozenset({"arguments", "partial_json"})


def rewrite_response_texts(doc: Any, fn: Callable[[str, bool], str]) -> int:
    """Apply ``fn(text, json_text)`` to every content string of a response document in place;
    returns how many strings changed. Dicts carrying a ``signature`` (thinking blocks) are skipped."""
    changed = 0

    def walk(node: Any, key: str | None) -> Any:
        nonlocal changed
        if isinstance(node, dict):
            if "signature" in node:
                return node
            for k, v in node.items():
                if k in _SKIP or (k in _STRUCTURAL and not isinstance(v, (dict, list))):
                    continue
                node[k] = walk(v, k)
            return node
        if isinstance(node, list):
            for i, v in enumerate(node):
                node[i] = walk(v, key)
            return node
        if isinstance(node, str) and node:
            new = fn(node, key in _JSON_TEXT)
            if new != node:
                changed += 1
            return new
        return node

    walk(doc, None)
    return changed
